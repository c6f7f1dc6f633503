//! Hostile network: garbage, oversized and truncated frames, wrongly shaped JSON, unknown
//! ids, forged, replayed and altered frames, a flood of silent connections and slow senders,
//! all against node 0 of a real 3-node cluster on loopback.
//!
//! For each attack: node 0 drops the connection and logs exactly one line for it on stderr
//! (matched by our socket's port), keeps serving its peers, stays alive, and its thread count
//! stays bounded. What key holders send that the protocol refuses is logged on stdout.

mod common;

use benmo::config::{self, Config};
use benmo::ledger::{Block, Hash, Transfer};
use benmo::paxos::{Ballot, Envelope, Message};
use benmo::testing::cluster::{LocalCluster, Status};
use common::{tx, Raw, BALANCE, NODES};
use rand::RngCore;
use std::fs;
use std::io::{ErrorKind, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_benmo");
const WAIT: Duration = Duration::from_secs(30);
/// The production timeouts in transport.rs (`Config::default`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Slack on top of a timeout before we call a connection "not dropped".
const SLACK: Duration = Duration::from_secs(3);

fn cluster() -> (tempfile::TempDir, LocalCluster) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCluster::init(Path::new(EXE), dir.path(), NODES, BALANCE).unwrap();
    c.start_all().unwrap();
    (dir, c)
}

fn addr(c: &LocalCluster, id: usize) -> String {
    Config::load(&c.data).unwrap().addrs[id].clone()
}

fn key(c: &LocalCluster) -> [u8; 32] {
    config::load_key(&c.data).unwrap()
}

fn stderr(c: &LocalCluster, id: usize) -> String {
    fs::read_to_string(c.data.join(format!("node{id}.stderr"))).unwrap_or_default()
}

/// Lines of node `id`'s stderr about the connection from local port `port`.
fn lines_for(log: &str, port: u16) -> Vec<String> {
    let (a, b) = (format!("127.0.0.1:{port}:"), format!("127.0.0.1:{port} ("));
    log.lines()
        .filter(|l| l.contains(&a) || l.contains(&b))
        .map(str::to_string)
        .collect()
}

/// Waits for the one stderr line about `port`, and checks there is exactly one.
fn one_line_for(c: &LocalCluster, port: u16) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let lines = lines_for(&stderr(c, 0), port);
        match lines.len() {
            0 if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            1 => return lines[0].clone(),
            _ => panic!("want one line for port {port}, got {lines:?}"),
        }
    }
}

/// Transfers `amount` from `from` to `to` and waits until `from` prints it committed.
fn commit(c: &mut LocalCluster, from: usize, to: usize, amount: u64) {
    let node = c.node(from);
    node.send(&format!("moneyTransfer {from} {to} {amount}"));
    let queued = node
        .wait_for(Instant::now() + WAIT, |l| {
            l.starts_with("queued ") || l.starts_with("error: ")
        })
        .expect("a reply");
    assert!(queued.starts_with("queued "), "{queued}");
    let id = queued.split_whitespace().nth(1).unwrap().to_string();
    node.wait_for(Instant::now() + WAIT, |l| {
        l.starts_with(&format!("committed {id} "))
    })
    .unwrap_or_else(|| panic!("{id} did not commit"));
}

fn healthy(c: &mut LocalCluster) {
    let node = c.node(0);
    assert!(node.exited().is_none(), "node 0 exited");
    let log = stderr(c, 0);
    assert!(!log.contains("panicked"), "{log}");
    c.node(0).send("status");
    let mut links = Vec::new();
    c.node(0)
        .wait_for(Instant::now() + WAIT, |l| {
            if l.starts_with("link ") {
                // "link 1 up heard 2 ms ago": the state, without the time.
                links.push(l.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
            }
            links.len() == 2
        })
        .expect("status");
    assert_eq!(links, ["link 1 up", "link 2 up"]);
}

fn threads(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).unwrap().count()
}

/// Waits until process `pid` has no more than `before` threads again.
fn threads_back_to(pid: u32, before: usize) {
    let deadline = Instant::now() + WAIT;
    while threads(pid) > before {
        assert!(
            Instant::now() < deadline,
            "{} > {before} threads",
            threads(pid)
        );
        thread::sleep(Duration::from_millis(10));
    }
}

impl Raw {
    /// Asserts the drop, and exactly one stderr line for it that says `why`.
    fn expect_dropped(mut self, c: &LocalCluster, why: &str) -> String {
        self.dropped_within(WAIT);
        let line = one_line_for(c, self.port());
        assert!(
            line.starts_with("warning: dropped connection from "),
            "{line}"
        );
        assert!(line.contains(why), "{line:?} should say {why:?}");
        line
    }
}

fn noise(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

#[test]
fn bad_input_is_dropped_and_logged_once_and_peers_keep_working() {
    let (_dir, mut c) = cluster();
    commit(&mut c, 0, 1, 1);
    let (a, k) = (addr(&c, 0), key(&c));
    let pid = c.node(0).pid();
    let before = threads(pid);

    // Without the key: random bytes, short and long, are a bad hello.
    for n in [1, 36, 37, 4096, 1 << 20] {
        let mut raw = Raw::open(&a, [0; 32]);
        raw.put(&noise(n));
        if n < 36 {
            let _ = raw.s.shutdown(Shutdown::Write);
        }
        raw.expect_dropped(&c, "");
    }
    // Without the key, JSON in place of a hello: `{"de` is not a node id.
    let mut raw = Raw::open(&a, [0; 32]);
    raw.put(br#"{"depth":1,"msg":"Hello"}"#.repeat(4).as_slice());
    raw.expect_dropped(&c, "hello from unknown node id 1701061243");
    // A hello with the wrong key.
    let raw = Raw::login(&a, [9; 32], 1);
    raw.expect_dropped(&c, "bad hello tag for node 1 (wrong key or replay)");
    // Ids not in the configuration, and our own, even with a correct tag.
    for (id, why) in [
        (3, "unknown node id 3"),
        (7, "unknown node id 7"),
        (u32::MAX, "unknown node id 4294967295"),
        (0, "our own id 0"),
    ] {
        Raw::login(&a, k, id).expect_dropped(&c, why);
    }
    // Closed half-way through the hello.
    let mut raw = Raw::open(&a, k);
    raw.put(&[1, 0, 0, 0, 9, 9]);
    raw.s.shutdown(Shutdown::Write).unwrap();
    raw.expect_dropped(&c, "closed during handshake");

    // With the key (past authentication, exercising the frame decoder):
    // a header announcing gigabytes,
    for len in [u32::MAX, 1 << 30, (16 << 20) + 1] {
        let mut raw = Raw::login(&a, k, 1);
        raw.put(&len.to_le_bytes());
        raw.put(&[0; 32]);
        raw.expect_dropped(&c, &format!("frame of {len} bytes exceeds limit"));
    }
    // truncated frames (in the header, in the payload),
    for cut in [2, 20, 37, 50] {
        let mut raw = Raw::login(&a, k, 2);
        let env = Envelope {
            id: 0,
            seq: 0,
            depth: 0,
            msg: Message::CatchUp { from: 1 },
        };
        let frame = raw.env_frame(&env);
        raw.put(&frame[..cut.min(frame.len() - 1)]);
        raw.s.shutdown(Shutdown::Write).unwrap();
        raw.expect_dropped(&c, "truncated frame");
    }
    // valid JSON of the wrong shape, correctly MAC'd,
    for json in [
        &br#"{"foo":1}"#[..],
        br#"[1,2,3]"#,
        br#"{"depth":-1,"msg":"Hello"}"#,
        br#"{"depth":1,"msg":{"Nope":{}}}"#,
        br#"{"depth":1,"msg":{"Blocks":{"blocks":[{"depth":1}]}}}"#,
        br#"{"depth":1,"msg":{"Forward":{"transfers":[[1,2,3]]}}}"#,
        br#"{"depth":1,"msg":"Hello"} trailing"#,
        b"null",
        b"\xff\xfe",
    ] {
        let mut raw = Raw::login(&a, k, 1);
        let frames = [raw.frame(b""), raw.frame(json)].concat();
        raw.put(&frames);
        raw.expect_dropped(&c, "undecodable envelope in frame 1");
    }
    // well-formed envelopes naming nodes that do not exist (these used to kill the node),
    for json in [
        r#"{"depth":1,"msg":{"Accept":{"ballot":{"round":9,"node":18446744073709551615},"depth":2,"value":{"proposer":1,"transfers":[]}}}}"#,
        r#"{"depth":1,"msg":{"Heartbeat":{"ballot":{"round":9,"node":3}}}}"#,
        r#"{"depth":1,"msg":{"Forward":{"transfers":[[1,1,7,5]]}}}"#,
    ] {
        let mut raw = Raw::login(&a, k, 1);
        let frame = raw.frame(json.as_bytes());
        raw.put(&frame);
        raw.expect_dropped(&c, "envelope in frame 0 names unknown node");
    }
    // and garbage where the next frame should be.
    let mut raw = Raw::login(&a, k, 2);
    raw.put(&noise(100));
    raw.expect_dropped(&c, "");

    // Node 0 still serves its peers: a transfer from node 0 needs node 0's inbound links.
    commit(&mut c, 0, 2, 3);
    commit(&mut c, 1, 0, 2);
    healthy(&mut c);
    // Every attack's reader thread is gone again.
    threads_back_to(pid, before);
    c.converge(WAIT).unwrap();
    assert!(c.audit().unwrap().contains("audit ok"));
}

fn status_all(c: &mut LocalCluster) -> Vec<Status> {
    (0..3).map(|i| c.status(i, WAIT).unwrap()).collect()
}

fn balances(c: &mut LocalCluster, id: usize) -> Vec<String> {
    let node = c.node(id);
    node.send("printBalances");
    (0..3)
        .map(|_| {
            node.wait_for(Instant::now() + WAIT, |l| l.starts_with("balance "))
                .unwrap()
        })
        .collect()
}

#[test]
fn forged_replayed_and_altered_frames_change_nothing() {
    let (_dir, mut c) = cluster();
    commit(&mut c, 0, 1, 10);
    commit(&mut c, 2, 0, 4);
    let settled = c.converge(WAIT).unwrap();
    let before = status_all(&mut c);
    let money = balances(&mut c, 0);
    let (a, k) = (addr(&c, 0), key(&c));

    // A key holder posing as node 1 forges blocks at the next depth: one with a wrong hash
    // and one, correctly hashed, that overdraws node 1. The protocol refuses both, on stdout.
    let next = |transfers: Vec<Transfer>, fix_hash: bool| {
        let depth = settled.depth + 1;
        let prev = Hash::from_hex(&settled.head).unwrap();
        let hash = if fix_hash {
            Block::compute_hash(depth, &prev, 1, &transfers)
        } else {
            Hash([0xab; 32])
        };
        Envelope {
            id: 0,
            seq: 0,
            depth,
            msg: Message::Blocks {
                blocks: vec![Block {
                    depth,
                    prev,
                    proposer: 1,
                    transfers,
                    hash,
                }],
            },
        }
    };
    let steal = tx(1, 1, 0, 50);
    let overdraw = Transfer {
        amount: 1_000_000,
        ..steal
    };
    let forged_hash = next(vec![steal], false);
    let forged_overdraft = next(vec![overdraw], true);
    let stale_decide = Envelope {
        id: 0,
        seq: 0,
        depth: settled.depth,
        msg: Message::Decide {
            ballot: Ballot { round: 0, node: 1 },
            depth: 1,
        },
    };

    let mut genuine = Raw::login(&a, k, 1);
    let hello = genuine.hello(1);
    let frames = [
        genuine.env_frame(&forged_hash),
        genuine.env_frame(&forged_overdraft),
        genuine.env_frame(&stale_decide),
    ];
    genuine.put(&frames.concat());
    let node = c.node(0);
    let rejected = [
        format!(
            "error: rejected block {} from node 1: block {} fails its hash",
            settled.depth + 1,
            settled.depth + 1
        ),
        format!(
            "error: rejected block {} from node 1: transfer 1.1 overdraws account 1",
            settled.depth + 1
        ),
    ];
    for want in &rejected {
        node.wait_for(Instant::now() + WAIT, |l| l.starts_with(want.as_str()))
            .unwrap_or_else(|| panic!("no {want:?} on stdout"));
    }

    // The same frame again on the same connection: the counter has moved on.
    genuine.put(&frames[0]);
    genuine.expect_dropped(&c, "bad MAC on frame 3");

    // The whole recording replayed on a new connection: new nonce, so the hello fails.
    let mut replay = Raw::open(&a, [0; 32]);
    replay.put(
        &[hello.clone()]
            .into_iter()
            .chain(frames.clone())
            .collect::<Vec<_>>()
            .concat(),
    );
    replay.expect_dropped(&c, "bad hello tag for node 1 (wrong key or replay)");

    // Even a key holder cannot carry a recorded frame into a new connection.
    let mut carried = Raw::login(&a, k, 1);
    carried.put(&frames[1]);
    carried.expect_dropped(&c, "bad MAC on frame 0");

    // Altered frames: a payload byte, a MAC byte, the length.
    for (what, at) in [("payload", 40usize), ("mac", 10), ("length", 0)] {
        let mut raw = Raw::login(&a, k, 2);
        let mut frame = raw.env_frame(&forged_hash);
        frame[at] ^= 0x01;
        raw.put(&frame);
        let _ = raw.s.shutdown(Shutdown::Write);
        let line = raw.expect_dropped(&c, "");
        assert!(
            line.contains("bad MAC on frame 0") || line.contains("truncated frame"),
            "{what}: {line}"
        );
    }

    // Frames forged with the wrong key after a wrong-key hello never get that far.
    let mut wrong = Raw::login(&a, [7; 32], 2);
    let frame = wrong.env_frame(&forged_hash);
    wrong.put(&frame);
    wrong.expect_dropped(&c, "bad hello tag for node 2");

    // Nothing changed anywhere, no other rejection was printed, and the audit passes.
    let node = c.node(0);
    node.drain();
    let errors: Vec<&String> = node
        .seen
        .iter()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    let after = status_all(&mut c);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            (b.depth, &b.head, b.transfers),
            (a.depth, &a.head, a.transfers)
        );
    }
    assert_eq!(balances(&mut c, 0), money);
    assert_eq!(balances(&mut c, 1), money);
    assert!(c.audit().unwrap().contains("audit ok"));
    healthy(&mut c);
    commit(&mut c, 0, 1, 1);
}

/// The soft limit on open files, so the flood fits in it.
fn fd_limit() -> usize {
    fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(1024)
}

#[test]
fn flood_and_slow_senders_are_bounded_while_the_cluster_commits() {
    const FLOOD: usize = 1000;
    let (_dir, mut c) = cluster();
    commit(&mut c, 0, 1, 1);
    let (a, k) = (addr(&c, 0), key(&c));
    let pid = c.node(0).pid();
    let before = threads(pid);

    // Slow senders, one byte a second, started first so they hold reader slots: one in the
    // handshake, one (a key holder) inside a frame. Both must be cut off by the timeouts.
    let trickle = |raw: Raw, bytes: Vec<u8>, limit: Duration| {
        thread::spawn(move || {
            let mut raw = raw;
            let port = raw.port();
            let start = Instant::now();
            for b in bytes {
                if raw.s.write_all(&[b]).is_err() {
                    break;
                }
                // Stop as soon as the node hangs up (a zero-byte peek would block).
                raw.s.set_nonblocking(true).unwrap();
                let mut buf = [0u8; 1];
                let closed = matches!(raw.s.peek(&mut buf), Ok(0))
                    || matches!(raw.s.peek(&mut buf), Err(e) if e.kind() != ErrorKind::WouldBlock);
                raw.s.set_nonblocking(false).unwrap();
                if closed || start.elapsed() > limit + SLACK {
                    break;
                }
                thread::sleep(Duration::from_secs(1));
            }
            raw.dropped_within(SLACK);
            (port, start.elapsed())
        })
    };
    let slow_hello = Raw::open(&a, k);
    let hello = slow_hello.hello(1);
    let slow_hello = trickle(slow_hello, hello, HANDSHAKE_TIMEOUT);
    let mut slow_frame = Raw::login(&a, k, 2);
    let frame = slow_frame.frame(&[b' '; 100]);
    let slow_frame = trickle(slow_frame, frame, FRAME_TIMEOUT);

    // A thousand connections that send nothing, held open at once (as many as fit).
    let at_once = FLOOD.min(fd_limit().saturating_sub(200)).max(100);
    let mut ports = Vec::new();
    let mut peak = 0;
    while ports.len() < FLOOD {
        let batch: Vec<TcpStream> = (0..at_once.min(FLOOD - ports.len()))
            .map(|_| {
                let s = TcpStream::connect_timeout(&a.parse().unwrap(), WAIT).unwrap();
                ports.push(s.local_addr().unwrap().port());
                s
            })
            .collect();
        peak = peak.max(threads(pid));
        // While the flood is held: the cluster still commits, from node 0 and to it.
        if ports.len() == batch.len() {
            commit(&mut c, 0, 2, 5);
            commit(&mut c, 1, 0, 3);
            peak = peak.max(threads(pid));
        }
        drop(batch);
    }
    // One reader per peer plus `spare_readers` (64) at most, beyond the usual threads.
    eprintln!("flood of {FLOOD} ({at_once} at once): {before} threads before, {peak} at peak");
    assert!(peak <= before + 64 + 2, "{peak} threads (was {before})");

    // Each connection was logged exactly once: refused at once, or dropped when closed.
    let deadline = Instant::now() + WAIT;
    loop {
        let log = stderr(&c, 0);
        let counts: Vec<usize> = ports.iter().map(|&p| lines_for(&log, p).len()).collect();
        if counts.iter().all(|&n| n == 1) {
            break;
        }
        let bad: Vec<(u16, usize)> = ports
            .iter()
            .copied()
            .zip(counts)
            .filter(|&(_, n)| n != 1)
            .take(5)
            .collect();
        assert!(
            Instant::now() < deadline && bad.iter().all(|&(_, n)| n == 0),
            "connections without exactly one line: {bad:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }

    // The slow senders were cut off by the timeouts, each with one line.
    let (port, took) = slow_hello.join().unwrap();
    assert!(
        took <= HANDSHAKE_TIMEOUT + SLACK,
        "hello trickle lasted {took:?}"
    );
    assert!(one_line_for(&c, port).contains("no handshake within 5s"));
    let (port, took) = slow_frame.join().unwrap();
    assert!(
        took <= FRAME_TIMEOUT + SLACK,
        "frame trickle lasted {took:?}"
    );
    assert!(one_line_for(&c, port).contains("frame not completed within 10s"));

    // Threads back to where they were; node 0 healthy and its peers still linked.
    threads_back_to(pid, before);
    healthy(&mut c);
    commit(&mut c, 0, 1, 1);
    c.converge(WAIT).unwrap();
    assert!(c.audit().unwrap().contains("audit ok"));
}
