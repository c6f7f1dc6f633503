//! Unit tests of the transport: links, reconnects, and hostile or broken connections.

use super::wire::write_frame;
use super::*;
use crate::paxos::Message;
use crossbeam_channel::unbounded;

const KEY: [u8; 32] = [7; 32];
/// Upper bound on any wait; tests normally finish far sooner.
const WAIT: Duration = Duration::from_secs(5);

fn fast() -> Limits {
    Limits {
        handshake_timeout: Duration::from_secs(2),
        frame_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(3),
        keepalive: Duration::from_millis(50),
        backoff_min: Duration::from_millis(5),
        backoff_max: Duration::from_millis(100),
        ..Limits::default()
    }
}

fn env(depth: u64) -> Envelope {
    Envelope {
        id: 0,
        seq: 0,
        depth,
        msg: Message::CatchUp { from: depth },
    }
}

/// Listeners on free loopback ports, bound before any node starts (no port races).
fn listeners(n: usize) -> (Vec<TcpListener>, Vec<String>) {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs = ls
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    (ls, addrs)
}

struct Node {
    t: Transport,
    rx: Receiver<Event>,
}

fn node(id: NodeId, l: TcpListener, addrs: &[String], key: [u8; 32], cfg: Limits) -> Node {
    let (tx, rx) = unbounded();
    let t = Transport::launch(id, l, addrs, key, tx, cfg).unwrap();
    Node { t, rx }
}

/// Receives until `pred` holds; returns the events skipped on the way.
fn wait_for(rx: &Receiver<Event>, what: &str, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + WAIT;
    let mut skipped = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) if pred(&e) => return skipped,
            Ok(e) => skipped.push(e),
            Err(_) => panic!("timed out waiting for {what}; saw {skipped:?}"),
        }
    }
}

fn wait_link(n: &Node, peer: NodeId, up: bool) {
    let want = Event::Link { peer, up };
    wait_for(&n.rx, &format!("{want:?}"), |e| *e == want);
}

/// Waits for `env(depth)` from `from`, asserting no other message came first.
fn wait_msg(n: &Node, from: NodeId, depth: u64) {
    let want = Event::Message {
        from,
        env: env(depth),
    };
    let skipped = wait_for(&n.rx, &format!("{want:?}"), |e| *e == want);
    let stray: Vec<_> = skipped
        .iter()
        .filter(|e| matches!(e, Event::Message { .. }))
        .collect();
    assert!(stray.is_empty(), "unexpected messages {stray:?}");
}

fn noise() -> Vec<u8> {
    let mut bytes = vec![0u8; 64];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
    bytes
}

fn last_warning(t: &Transport) -> String {
    t.warnings().last().cloned().unwrap_or_default()
}

/// A hand-driven client: a test plays attacker (or a key holder) with it.
struct Raw {
    s: TcpStream,
    nonce: Nonce,
    counter: u64,
    key: [u8; 32],
}

impl Raw {
    /// Connects and reads the greeting, sending nothing.
    fn open(addr: &str, key: [u8; 32]) -> Raw {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut greeting = [0u8; GREETING_LEN];
        s.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting[..MAGIC.len()], MAGIC);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&greeting[MAGIC.len()..]);
        Raw {
            s,
            nonce,
            counter: 0,
            key,
        }
    }

    /// Connects and sends a correct hello as `client` to `server`.
    fn login(addr: &str, key: [u8; 32], client: u32, server: u32) -> Raw {
        let mut raw = Raw::open(addr, key);
        let hello = raw.hello(client, server);
        raw.s.write_all(&hello).unwrap();
        raw
    }

    fn hello(&self, client: u32, server: u32) -> Vec<u8> {
        let tag = hello_tag(&self.key, &self.nonce, client, server);
        [client.to_le_bytes().as_slice(), &tag].concat()
    }

    /// The bytes of the next correctly MAC'd frame.
    fn frame(&mut self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, &self.key, &self.nonce, &mut self.counter, payload).unwrap();
        out
    }

    fn env_frame(&mut self, depth: u64) -> Vec<u8> {
        self.frame(&serde_json::to_vec(&env(depth)).unwrap())
    }

    /// Writes, ignoring errors: the server may already have hung up.
    fn put(&mut self, bytes: &[u8]) {
        let _ = self.s.write_all(bytes);
    }

    /// Asserts the server closes the connection (EOF or reset) within WAIT.
    fn expect_dropped(&mut self) {
        let mut buf = [0u8; 64];
        loop {
            match self.s.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => panic!("server sent data after the greeting"),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if is_retry(&e) => panic!("connection still open"),
                Err(_) => return, // reset: closed with our bytes unread
            }
        }
    }
}

#[test]
fn exchange_both_ways_in_order() {
    let (ls, addrs) = listeners(2);
    let mut ls = ls.into_iter();
    let a = node(0, ls.next().unwrap(), &addrs, KEY, fast());
    let b = node(1, ls.next().unwrap(), &addrs, KEY, fast());
    wait_link(&a, 1, true);
    wait_link(&b, 0, true);
    for depth in 0..1000 {
        a.t.send(&[1], &env(depth));
    }
    for depth in 0..1000 {
        wait_msg(&b, 0, depth);
    }
    b.t.send(&[0, 1, 5], &env(42)); // self and unknown ids are ignored
    wait_msg(&a, 1, 42);
    assert!(a.t.warnings().is_empty(), "{:?}", a.t.warnings());
}

#[test]
fn start_reports_taken_port() {
    let (ls, addrs) = listeners(1);
    let (tx, _rx) = unbounded();
    let err = Transport::start(0, &addrs, KEY, tx.clone()).err().unwrap();
    assert_eq!(
        err,
        format!("cannot listen on {}: address in use", addrs[0])
    );
    drop(ls);
    let bad = vec!["not an address".to_string()];
    let err = Transport::start(0, &bad, KEY, tx).err().unwrap();
    assert!(
        err.starts_with("cannot listen on not an address: "),
        "{err}"
    );
}

#[test]
fn writer_reconnects_after_peer_restarts() {
    let (ls, addrs) = listeners(2);
    let mut ls = ls.into_iter();
    let a = node(0, ls.next().unwrap(), &addrs, KEY, fast());
    let b = node(1, ls.next().unwrap(), &addrs, KEY, fast());
    wait_link(&a, 1, true);
    drop(b);
    wait_link(&a, 1, false);
    let (tx, rx) = unbounded();
    let t = Transport::start_with(1, &addrs, KEY, tx, fast()).unwrap();
    let b = Node { t, rx };
    wait_link(&a, 1, true);
    wait_link(&b, 0, true);
    a.t.send(&[1], &env(7));
    wait_msg(&b, 0, 7);
    b.t.send(&[0], &env(8));
    wait_msg(&a, 1, 8);
}

#[test]
fn wrong_key_delivers_nothing() {
    let (ls, addrs) = listeners(3);
    let mut ls = ls.into_iter();
    let a = node(0, ls.next().unwrap(), &addrs, KEY, fast());
    let intruder = node(1, ls.next().unwrap(), &addrs, [9; 32], fast());
    // The intruder cannot tell it was refused until writes fail, so it does send.
    wait_link(&intruder, 0, true);
    intruder.t.send(&[0], &env(66));
    let deadline = Instant::now() + WAIT;
    while !a.t.warnings().iter().any(|w| w.contains("bad hello tag")) {
        assert!(
            Instant::now() < deadline,
            "no warning: {:?}",
            a.t.warnings()
        );
        thread::sleep(Duration::from_millis(5));
    }
    let good = node(2, ls.next().unwrap(), &addrs, KEY, fast());
    wait_link(&good, 0, true);
    good.t.send(&[0], &env(1));
    wait_msg(&a, 2, 1); // fails if anything from the intruder got through
}

#[test]
fn tampered_and_replayed_frames_are_rejected() {
    let (ls, addrs) = listeners(2);
    let a = node(0, ls.into_iter().next().unwrap(), &addrs, KEY, fast());
    let addr = &addrs[0];

    // A genuine session, recorded.
    let mut first = Raw::login(addr, KEY, 1, 0);
    let hello = first.hello(1, 0);
    let (f0, f1) = (first.env_frame(1), first.env_frame(2));
    first.put(&[f0.clone(), f1.clone()].concat());
    wait_msg(&a, 1, 1);
    wait_msg(&a, 1, 2);

    // The same frame again on the same connection: the counter has moved on.
    first.put(&f0);
    first.expect_dropped();
    assert!(last_warning(&a.t).contains("bad MAC on frame 2"));

    // The whole recording replayed by someone without the key: new nonce, bad hello.
    let mut replay = Raw::open(addr, [0; 32]);
    replay.put(&[hello, f0].concat());
    replay.expect_dropped();
    assert!(last_warning(&a.t).contains("bad hello tag for node 1"));

    // Even a key holder cannot carry an old frame into a new connection.
    let mut fresh = Raw::login(addr, KEY, 1, 0);
    fresh.put(&f1);
    fresh.expect_dropped();
    assert!(last_warning(&a.t).contains("bad MAC on frame 0"));

    // A flipped payload byte.
    let mut tamper = Raw::login(addr, KEY, 1, 0);
    let mut frame = tamper.env_frame(3);
    let last = frame.len() - 2;
    frame[last] ^= 1;
    tamper.put(&frame);
    tamper.expect_dropped();
    assert!(last_warning(&a.t).contains("bad MAC"));

    let mut honest = Raw::login(addr, KEY, 1, 0);
    let frame = honest.env_frame(9);
    honest.put(&frame);
    wait_msg(&a, 1, 9);
}

/// Runs `attack` against node 0, checks it was dropped with a warning containing `why`,
/// then checks node 1 (a real peer) still gets through.
fn survives(a: &Node, b: &Node, depth: u64, why: &str, attack: impl FnOnce(&str) -> Raw) {
    let before = a.t.warnings().len();
    let mut raw = attack(&a.t.local_addr().to_string());
    raw.expect_dropped();
    let warnings = a.t.warnings();
    assert!(warnings.len() > before, "no warning for {why}");
    assert!(last_warning(&a.t).contains(why), "{why}: {warnings:?}");
    b.t.send(&[0], &env(depth));
    wait_msg(a, 1, depth);
}

#[test]
fn bad_input_drops_only_that_connection() {
    let (ls, addrs) = listeners(3);
    let mut ls = ls.into_iter();
    let a = node(0, ls.next().unwrap(), &addrs, KEY, fast());
    let b = node(1, ls.next().unwrap(), &addrs, KEY, fast());
    wait_link(&b, 0, true);

    survives(
        &a,
        &b,
        1,
        "frame of 4294967295 bytes exceeds limit",
        |addr| {
            let mut raw = Raw::login(addr, KEY, 2, 0);
            raw.put(&[[0xff; 4].as_slice(), &[0; TAG_LEN]].concat());
            raw
        },
    );
    survives(&a, &b, 2, "hello", |addr| {
        let mut raw = Raw::open(addr, KEY);
        raw.put(&noise());
        raw
    });
    survives(&a, &b, 3, "", |addr| {
        let mut raw = Raw::login(addr, KEY, 2, 0);
        raw.put(&noise());
        let _ = raw.s.shutdown(Shutdown::Write);
        raw
    });
    survives(&a, &b, 4, "truncated frame", |addr| {
        let mut raw = Raw::login(addr, KEY, 2, 0);
        let frame = raw.env_frame(0);
        raw.put(&frame[..frame.len() - 1]);
        raw.s.shutdown(Shutdown::Write).unwrap();
        raw
    });
    survives(&a, &b, 5, "undecodable envelope in frame 1", |addr| {
        let mut raw = Raw::login(addr, KEY, 2, 0);
        let frames = [raw.frame(b""), raw.frame(br#"{"foo":1}"#)].concat();
        raw.put(&frames);
        raw
    });
    survives(&a, &b, 6, "undecodable envelope", |addr| {
        let mut raw = Raw::login(addr, KEY, 2, 0);
        let frame = raw.frame(b"\xff\x00 not json");
        raw.put(&frame);
        raw
    });
    survives(&a, &b, 7, "unknown node id 7", |addr| {
        Raw::login(addr, KEY, 7, 0)
    });
    survives(&a, &b, 8, "our own id 0", |addr| {
        Raw::login(addr, KEY, 0, 0)
    });
    survives(&a, &b, 9, "closed during handshake", |addr| {
        let mut raw = Raw::open(addr, KEY);
        raw.put(&[1, 0, 0]);
        raw.s.shutdown(Shutdown::Write).unwrap();
        raw
    });
    assert_eq!(b.t.warnings(), Vec::<String>::new());
}

#[test]
fn slow_silent_and_stalled_connections_time_out() {
    let (ls, addrs) = listeners(2);
    let mut ls = ls.into_iter();
    let short = Limits {
        handshake_timeout: Duration::from_millis(300),
        frame_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(400),
        ..fast()
    };
    let a = node(0, ls.next().unwrap(), &addrs, KEY, short);
    let b = node(1, ls.next().unwrap(), &addrs, KEY, fast());
    wait_link(&b, 0, true);
    let addr = &addrs[0];

    let mut mute = Raw::open(addr, KEY);
    mute.expect_dropped();
    assert!(last_warning(&a.t).contains("no handshake within 300ms"));

    let mut idle = Raw::login(addr, KEY, 1, 0);
    idle.expect_dropped();
    assert!(last_warning(&a.t).contains("silent for 400ms"));

    // One byte every 20 ms: the 60-odd byte frame would take over a second.
    let mut slow = Raw::login(addr, KEY, 1, 0);
    let frame = slow.env_frame(1);
    for byte in frame {
        if slow.s.write_all(&[byte]).is_err() {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    slow.expect_dropped();
    assert!(last_warning(&a.t).contains("frame not completed within 300ms"));

    // Meanwhile b's keepalives held its idle link open well past the idle timeout.
    let gone = Event::Link { peer: 0, up: false };
    assert!(!b.rx.try_iter().any(|e| e == gone));
    b.t.send(&[0], &env(2));
    wait_msg(&a, 1, 2);
}

#[test]
fn reader_threads_are_bounded() {
    let (ls, addrs) = listeners(2);
    let cfg = Limits {
        spare_readers: 1,
        ..fast()
    };
    // Node 1 never runs, so only our raw connections occupy node 0's readers.
    let a = node(0, ls.into_iter().next().unwrap(), &addrs, KEY, cfg);
    let addr = &addrs[0];
    let first = Raw::open(addr, KEY);
    let _second = Raw::open(addr, KEY);
    let mut third = TcpStream::connect(addr).unwrap();
    third.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 1];
    assert!(matches!(third.read(&mut buf), Ok(0) | Err(_)));
    assert!(last_warning(&a.t).contains("2 connections already open"));

    // Closing one frees its slot once its reader notices.
    drop(first);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        if s.read(&mut buf).is_ok_and(|n| n == 1) {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        thread::sleep(Duration::from_millis(5));
    }
}
