//! Bounded fuzzing with proptest (a few hundred cases each, so it runs in CI):
//!
//! - the transport's handshake and frame decoder, through a live `Transport` on loopback:
//!   random and mutated byte strings never deliver a message that was not MAC'd with the
//!   key, never wedge the listener, and a good peer's messages keep arriving;
//! - `serde_json::from_slice::<Envelope>` on mutated valid envelopes, and the protocol core
//!   fed whatever decodes (a key holder's worst);
//! - the storage loader: `Store::verify` and `Store::open` on mutated and truncated files
//!   return Ok or Err, never panic, and never modify a file when returning Err (nor, for
//!   verify, ever).

mod common;

use benmo::ledger::Ledger;
use benmo::paxos::{Ballot, Core, Envelope, Event, Message, Params, Proposal, Record, Timing};
use benmo::storage::Store;
use benmo::transport::{self, Transport};
use common::{chain, tx, Raw, BALANCE, NODES};
use crossbeam_channel::Receiver;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use sha2::Sha256;
use std::fs;
use std::io::Write;
use std::net::{Shutdown, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

const KEY: [u8; 32] = [0x5a; 32];
const WAIT: Duration = Duration::from_secs(10);

// ----- samples -----

/// One valid envelope of every kind.
fn envelopes() -> Vec<Envelope> {
    let ballot = Ballot { round: 3, node: 1 };
    let value = Proposal {
        proposer: 1,
        transfers: vec![tx(1, 1, 2, 5), tx(2, 1, 0, 9)],
    };
    [
        Message::Hello,
        Message::Prepare { ballot, depth: 1 },
        Message::Promise {
            ballot,
            accepted: vec![(1, ballot, value.clone())],
        },
        Message::Reject {
            ballot,
            promised: Ballot { round: 4, node: 2 },
        },
        Message::Accept {
            ballot,
            depth: 1,
            value: value.clone(),
        },
        Message::Accepted { ballot, depth: 1 },
        Message::Decide { ballot, depth: 1 },
        Message::Heartbeat { ballot },
        Message::Forward {
            transfers: value.transfers.clone(),
        },
        Message::CatchUp { from: 1 },
        Message::Blocks { blocks: chain(3) },
        Message::StartCheck { nonce: 7 },
        Message::StartSeen {
            nonce: 7,
            seen: 9,
            yours: 4,
        },
    ]
    .into_iter()
    .map(|msg| Envelope {
        depth: 1,
        id: 0,
        seq: 0,
        msg,
    })
    .collect()
}

/// A byte-level mutation.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Overwrite(usize, Vec<u8>),
    /// Replaces a digit run with a (possibly huge or negative) number.
    Number(usize, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, m)| Mutation::Flip(i, m)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..40).prop_map(|(i, n)| Mutation::Remove(i, n)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Overwrite(i, b)),
        (
            any::<usize>(),
            prop_oneof![
                Just(u64::MAX.to_string()),
                Just("18446744073709551616".to_string()),
                Just("-1".to_string()),
                Just("1e400".to_string()),
                any::<u64>().prop_map(|n| n.to_string()),
            ]
        )
            .prop_map(|(i, s)| Mutation::Number(i, s)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    let at = |i: usize| if len == 0 { 0 } else { i % (len + 1) };
    match m {
        Mutation::Flip(i, mask) if len > 0 => bytes[i % len] ^= mask,
        Mutation::Flip(..) => {}
        Mutation::Truncate(i) => bytes.truncate(at(*i)),
        Mutation::Insert(i, b) => {
            let i = at(*i);
            bytes.splice(i..i, b.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let i = at(*i);
            bytes.drain(i..(i + n).min(len));
        }
        Mutation::Overwrite(i, b) => {
            let i = at(*i);
            for (k, &v) in b.iter().enumerate() {
                if let Some(x) = bytes.get_mut(i + k) {
                    *x = v;
                }
            }
        }
        Mutation::Number(i, s) => {
            let Some(start) = (at(*i)..len).find(|&k| bytes[k].is_ascii_digit()) else {
                return;
            };
            let end = (start..len)
                .find(|&k| !bytes[k].is_ascii_digit())
                .unwrap_or(len);
            bytes.splice(start..end, s.bytes());
        }
    }
}

// ----- transport -----

impl Raw {
    /// Sends, half-closes, and waits until the transport closes its end.
    fn send_and_wait_closed(mut self, bytes: &[u8]) {
        self.put(bytes);
        let _ = self.s.shutdown(Shutdown::Write);
        self.dropped_within(WAIT);
    }
}

/// Waits for `want` from node 1; any other message on the way must be in `allowed`.
fn expect_message(rx: &Receiver<Event>, want: &Envelope, allowed: &[Envelope]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Event::Message { from, env }) => {
                // Node 2 is the attacker's id: a mutation that left its frames intact
                // gets them delivered, MAC and all, which is right.
                assert!(
                    from == 1 || from == 2,
                    "a message from an id we never authenticated"
                );
                if from == 1 && env == *want {
                    return;
                }
                assert!(
                    allowed.contains(&env),
                    "an unauthenticated message: {env:?}"
                );
            }
            Ok(_) => {}
            Err(_) => panic!("the good peer's message never arrived"),
        }
    }
}

/// Node 0 of 3 on loopback. Nodes 1 and 2 have addresses nobody listens on (node 0's
/// writers just retry quietly); tests play them by hand.
fn live_transport() -> (Transport, Receiver<Event>) {
    let free = |_| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let addrs = vec!["127.0.0.1:0".to_string(), free(1), free(2)];
    let (tx, rx) = crossbeam_channel::unbounded();
    let cfg = transport::Limits {
        handshake_timeout: Duration::from_secs(2),
        frame_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(60),
        ..transport::Limits::default()
    };
    (Transport::start_with(0, &addrs, KEY, tx, cfg).unwrap(), rx)
}

#[derive(Clone, Debug)]
enum Attack {
    /// Raw bytes, no hello.
    Garbage(Vec<u8>),
    /// A valid hello, then raw bytes.
    AfterHello(Vec<u8>),
    /// A valid hello and valid frames, mutated anywhere.
    Mutated(usize, Vec<Mutation>),
}

fn attack() -> impl Strategy<Value = Attack> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200).prop_map(Attack::Garbage),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(Attack::AfterHello),
        (any::<usize>(), prop::collection::vec(mutation(), 1..4))
            .prop_map(|(i, m)| Attack::Mutated(i, m)),
    ]
}

#[test]
fn transport_decoder_survives_random_and_mutated_bytes() {
    let (t, rx) = live_transport();
    let addr = t.local_addr().to_string();
    let samples = envelopes();

    // The good peer: one long connection as node 1, sending a marker after each case.
    let mut good = Raw::open(&addr, KEY);
    let hello = good.hello(1);
    good.s.write_all(&hello).unwrap();
    let good = std::cell::RefCell::new((good, 0u64));

    let mut runner = TestRunner::new(RunnerConfig::with_cases(300));
    runner
        .run(&attack(), |attack| {
            let mut raw = Raw::open(&addr, KEY);
            let bytes = match &attack {
                Attack::Garbage(b) => b.clone(),
                Attack::AfterHello(b) => [raw.hello(2), b.clone()].concat(),
                Attack::Mutated(i, ms) => {
                    let env = &samples[i % samples.len()];
                    let payload = serde_json::to_vec(env).unwrap();
                    let mut bytes = [raw.hello(2), raw.frame(b""), raw.frame(&payload)].concat();
                    ms.iter().for_each(|m| apply(&mut bytes, m));
                    bytes
                }
            };
            raw.send_and_wait_closed(&bytes);
            // Whatever got through was MAC'd by us: one of the samples, never anything else.
            let (good, marker) = &mut *good.borrow_mut();
            *marker += 1;
            let marker = *marker;
            let want = Envelope {
                id: 0,
                seq: 0,
                depth: marker,
                msg: Message::CatchUp { from: marker },
            };
            let frame = good.frame(&serde_json::to_vec(&want).unwrap());
            good.s.write_all(&frame).unwrap();
            expect_message(&rx, &want, &samples);
            Ok(())
        })
        .unwrap();
}

// ----- envelopes and the core -----

fn core() -> Core {
    let params = Params {
        id: 0,
        nodes: NODES,
        timing: Timing::default(),
        verbose: true,
        classroom: false,
        rng_seed: 7,
    };
    let mut ledger = Ledger::new(NODES, BALANCE);
    ledger.apply(&chain(1)[0]).unwrap();
    Core::restore(params, ledger, [Record::Queue(tx(0, 2, 1, 1))])
}

fn feed_core(from: usize, env: Envelope) {
    let mut c = core();
    let mut out = Vec::new();
    c.handle(
        10,
        Event::Message {
            from: from.min(NODES - 1),
            env,
        },
        &mut out,
    );
    c.handle(20, Event::Tick, &mut out);
    c.handle(5000, Event::Tick, &mut out);
}

/// Crasher found by the envelope fuzzer: an `Accept` whose ballot names node
/// 18446744073709551615 made the core index its per-node state out of bounds (paxos.rs,
/// `send` to `ballot.node`), killing the node. The transport now refuses any envelope that
/// names an unknown node, so the core never sees one.
#[test]
fn regression_envelope_naming_an_unknown_node_is_refused() {
    let huge = Ballot {
        round: 9,
        node: usize::MAX,
    };
    let accept = Envelope {
        id: 0,
        seq: 0,
        depth: 1,
        msg: Message::Accept {
            ballot: huge,
            depth: 2,
            value: Proposal {
                proposer: 1,
                transfers: vec![],
            },
        },
    };
    assert_eq!(accept.unknown_node(NODES), Some(usize::MAX));
    for env in envelopes() {
        assert_eq!(env.unknown_node(NODES), None, "{env:?}");
    }
    // Over the wire: the frame is dropped with a warning, and a good message still arrives.
    let (t, rx) = live_transport();
    let addr = t.local_addr().to_string();
    let mut raw = Raw::open(&addr, KEY);
    let hello = raw.hello(1);
    let frame = raw.frame(&serde_json::to_vec(&accept).unwrap());
    raw.send_and_wait_closed(&[hello, frame].concat());
    let mut good = Raw::open(&addr, KEY);
    let want = envelopes().remove(0);
    let bytes = [
        good.hello(1),
        good.frame(&serde_json::to_vec(&want).unwrap()),
    ]
    .concat();
    good.s.write_all(&bytes).unwrap();
    expect_message(&rx, &want, &[]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn mutated_envelopes_decode_or_fail_and_the_core_survives_them(
        i in any::<usize>(),
        ms in prop::collection::vec(mutation(), 1..5),
        from in 0usize..4,
    ) {
        let samples = envelopes();
        let mut bytes = serde_json::to_vec(&samples[i % samples.len()]).unwrap();
        ms.iter().for_each(|m| apply(&mut bytes, m));
        if let Ok(env) = serde_json::from_slice::<Envelope>(&bytes) {
            let again = serde_json::to_vec(&env).unwrap();
            prop_assert_eq!(serde_json::from_slice::<Envelope>(&again).unwrap(), env.clone());
            // Only a key holder can deliver this, and only past the transport's checks; the
            // core must then not panic.
            if env.unknown_node(NODES).is_none() {
                feed_core(from, env);
            }
        }
    }
}

#[test]
fn deeply_nested_json_is_refused_not_a_stack_overflow() {
    for depth in [200, 10_000, 1_000_000] {
        let json = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(serde_json::from_slice::<Envelope>(json.as_bytes()).is_err());
        let json = format!(
            r#"{{"depth":1,"msg":{{"Blocks":{{"blocks":{}{}}}}}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        assert!(serde_json::from_slice::<Envelope>(json.as_bytes()).is_err());
    }
}

// ----- storage -----

/// A valid node directory's chain.log and wal.log, built through the Store itself.
fn pristine() -> (Vec<u8>, Vec<u8>) {
    PRISTINE.0.clone()
}

/// The pristine files and the superblock that goes with them (a directory of this format
/// without its superblock is refused whatever its logs hold).
static PRISTINE: std::sync::LazyLock<(Logs, Vec<u8>)> = std::sync::LazyLock::new(build_pristine);

/// chain.log and wal.log.
type Logs = (Vec<u8>, Vec<u8>);

fn build_pristine() -> (Logs, Vec<u8>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node0");
    Store::create(&dir).unwrap();
    let mut store = Store::open(&dir, NODES, BALANCE, None).unwrap().store;
    chain(6).iter().for_each(|b| store.commit(b).unwrap());
    let ballot = Ballot { round: 2, node: 1 };
    for r in [
        Record::Promise(ballot),
        Record::Accept {
            depth: 7,
            ballot,
            value: Proposal {
                proposer: 1,
                transfers: vec![tx(1, 3, 0, 2)],
            },
        },
        Record::Queue(tx(0, 3, 2, 4)),
        Record::Promise(Ballot { round: 3, node: 2 }),
    ] {
        store.append(&r).unwrap();
    }
    store.sync().unwrap();
    drop(store);
    (read(&dir), fs::read(dir.join("superblock")).unwrap())
}

fn read(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    (
        fs::read(dir.join("chain.log")).unwrap(),
        fs::read(dir.join("wal.log")).unwrap(),
    )
}

/// Checks the loader's contract on one damaged directory.
fn check_store(chain: &[u8], wal: &[u8]) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node0");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("chain.log"), chain).unwrap();
    fs::write(dir.join("wal.log"), wal).unwrap();
    fs::write(dir.join("superblock"), &PRISTINE.1).unwrap();
    let damaged = read(&dir);

    let verified = Store::verify(&dir, NODES, BALANCE, Some(0), |b| {
        assert!(b.hash_is_valid());
    });
    prop_assert_eq!(&read(&dir), &damaged, "verify modified the files");

    match Store::open(&dir, NODES, BALANCE, Some(0)) {
        Err(e) => {
            prop_assert!(verified.is_err(), "open refused what verify passed: {}", e);
            prop_assert_eq!(&read(&dir), &damaged, "open modified files it refused");
            prop_assert!(!e.to_string().contains('\n'));
        }
        Ok(opened) => {
            let (ledger, note) = verified.expect("verify refused what open accepted");
            prop_assert_eq!(&opened.ledger, &ledger);
            prop_assert_eq!(note.is_some(), !opened.repairs.is_empty());
            // A repair only ever cuts a tail off.
            let now = read(&dir);
            prop_assert!(damaged.0.starts_with(&now.0) && damaged.1.starts_with(&now.1));
            drop(opened);
            let again = Store::open(&dir, NODES, BALANCE, Some(0)).expect("reopen");
            prop_assert!(again.repairs.is_empty(), "{:?}", again.repairs);
            prop_assert_eq!(again.ledger, ledger);
            prop_assert_eq!(read(&dir), now);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn damaged_state_files_are_loaded_or_refused_never_changed(
        chain_ms in prop::collection::vec(mutation(), 0..3),
        wal_ms in prop::collection::vec(mutation(), 0..3),
        zeros in prop_oneof![Just(0usize), 1usize..5000],
    ) {
        let (mut chain, mut wal) = pristine();
        chain_ms.iter().for_each(|m| apply(&mut chain, m));
        wal_ms.iter().for_each(|m| apply(&mut wal, m));
        chain.resize(chain.len() + zeros, 0); // a file system that grew the file
        check_store(&chain, &wal)?;
    }

    /// Record-aware damage: a record's payload changed and its checksum fixed up, so the
    /// loader's decoding and ledger checks are what stand between it and the core.
    #[test]
    fn rechecksummed_records_are_loaded_or_refused(
        which in any::<usize>(),
        in_wal in any::<bool>(),
        ms in prop::collection::vec(mutation(), 1..3),
    ) {
        let (mut chain, mut wal) = pristine();
        let file = if in_wal { &mut wal } else { &mut chain };
        let mut offsets = Vec::new();
        let mut at = 0;
        while at + 12 <= file.len() {
            offsets.push(at);
            at += 12 + u32::from_le_bytes(file[at..at + 4].try_into().unwrap()) as usize;
        }
        let start = offsets[which % offsets.len()];
        let len = u32::from_le_bytes(file[start..start + 4].try_into().unwrap()) as usize;
        let mut payload = file[start + 12..start + 12 + len].to_vec();
        ms.iter().for_each(|m| apply(&mut payload, m));
        let mut record = (payload.len() as u32).to_le_bytes().to_vec();
        record.extend_from_slice(&<Sha256 as sha2::Digest>::digest(&payload)[..8]);
        record.extend_from_slice(&payload);
        file.splice(start..start + 12 + len, record);
        check_store(&chain, &wal)?;
    }
}

#[test]
fn pristine_state_loads() {
    let (chain, wal) = pristine();
    check_store(&chain, &wal).unwrap();
}
