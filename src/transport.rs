//! Moving envelopes between nodes over TCP, authenticated with the cluster key.
//!
//! # Threads
//!
//! One listener thread accepts connections and gives each one a reader thread (at most
//! `peers + Config::spare_readers` at once). One writer thread per peer owns the outbound
//! connection to that peer for the life of the transport. Readers and writers only move bytes
//! and events; the node's state lives in the single event-loop thread that drains `events`.
//!
//! # Connections
//!
//! Each ordered pair of nodes has its own connection: A's writer for B dials B's listener and
//! only sends; B's reader for it only reads. So A→B and B→A traffic never share a socket, and
//! "link up" means "my writer to that peer is connected and authenticated".
//!
//! # Handshake (all integers little-endian)
//!
//! ```text
//! server → client   "BENMO1" (6 bytes) ‖ nonce (32 fresh random bytes)
//! client → server   client_id (u32) ‖ HMAC(key, "benmo-hello" ‖ nonce ‖ client_id u32 ‖ server_id u32)
//! ```
//!
//! The server checks that `client_id` names a peer (not itself) and that the tag is right.
//! Only a holder of the 32-byte cluster key can compute the tag, and the fresh nonce means a
//! recorded hello is useless on a later connection. The server sends no reply; a rejected
//! client just sees the connection close.
//!
//! # Frames (client → server only)
//!
//! ```text
//! length (u32) ‖ MAC (32 bytes) ‖ payload (`length` bytes, serde_json of an `Envelope`)
//! MAC = HMAC(key, "benmo-frame" ‖ nonce ‖ counter u64 ‖ payload)
//! ```
//!
//! `counter` starts at 0 on each connection and grows by one per frame, so a replayed,
//! reordered, dropped-then-resumed or altered frame fails its MAC, and so does a frame from an
//! old connection (different nonce). An empty payload is a keepalive, sent after a second of
//! silence so the reader's idle timeout only fires on dead links. The sender of a delivered
//! message is the id authenticated in the handshake, never anything inside the payload.
//!
//! Not provided: secrecy (payloads are plaintext) and protection against key holders. Any
//! fault in what a connection sends drops that connection with one `warning:` line on stderr.

use crate::ledger::NodeId;
use crate::paxos::{Envelope, Event};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use hmac::digest::CtOutput;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::Sha256;
use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::ToSocketAddrs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The largest payload a frame may carry. Checked before any buffer is allocated.
pub const MAX_FRAME: usize = 16 << 20;

/// The first bytes a server sends on every connection.
pub const MAGIC: &[u8; 6] = b"BENMO1";
pub const NONCE_LEN: usize = 32;
/// Length of an HMAC-SHA256 tag (hello tags and frame MACs).
pub const TAG_LEN: usize = 32;
/// The server's greeting: `MAGIC` then the connection's nonce.
pub const GREETING_LEN: usize = MAGIC.len() + NONCE_LEN;
const HELLO_LEN: usize = 4 + TAG_LEN;
const HEADER_LEN: usize = 4 + TAG_LEN;

type HmacSha256 = Hmac<Sha256>;
type Nonce = [u8; NONCE_LEN];
/// An encoded envelope, shared by every peer queue it is sent to.
type Payload = Arc<[u8]>;

/// Timeouts and sizes. The defaults are the production values; tests shrink them.
#[derive(Clone, Debug)]
pub struct Config {
    /// Whole handshake, from accept (or connect) to a verified hello.
    pub handshake_timeout: Duration,
    /// A frame, once its first byte arrived, must be complete within this.
    pub frame_timeout: Duration,
    /// An authenticated connection silent this long is presumed dead.
    pub idle_timeout: Duration,
    /// A writer with nothing to send for this long sends an empty frame.
    pub keepalive: Duration,
    /// Reconnect delay: starts at `backoff_min`, doubles up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Frames queued per peer before `send` starts dropping.
    pub queue_frames: usize,
    /// Reader threads allowed beyond one per peer (stale or hostile connections).
    pub spare_readers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            handshake_timeout: Duration::from_secs(5),
            frame_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(15),
            keepalive: Duration::from_secs(1),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            queue_frames: 8192,
            spare_readers: 64,
        }
    }
}

/// State every transport thread shares.
struct Shared {
    id: NodeId,
    nodes: usize,
    cfg: Config,
    /// The cluster key.
    key: [u8; 32],
    events: Sender<Event>,
    shutdown: AtomicBool,
    /// Live inbound connections, so the reader count is bounded and `Drop` can close them.
    readers: Mutex<HashMap<u64, TcpStream>>,
    next_reader: AtomicU64,
    #[cfg(test)]
    log: Mutex<Vec<String>>,
}

impl Shared {
    /// One line on stderr, prefixed `warning: `.
    fn warn(&self, msg: String) {
        let line = msg.replace(['\n', '\r'], " ");
        eprintln!("warning: {line}");
        #[cfg(test)]
        self.log.lock().push(line);
    }

    fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }
}

/// The sending side of one peer, as seen by `Transport::send`.
struct Peer {
    tx: Sender<Payload>,
    /// Set by the writer while it holds an authenticated connection.
    up: Arc<AtomicBool>,
    /// Whether we already warned about this queue overflowing (one line per episode).
    overflowing: AtomicBool,
}

/// The network side of a node. Dropping it stops the listener, closes inbound connections
/// and lets the writer threads exit.
pub struct Transport {
    shared: Arc<Shared>,
    local: SocketAddr,
    /// Indexed by node id; `None` for ourselves.
    peers: Vec<Option<Peer>>,
    listener: Option<JoinHandle<()>>,
}

impl Transport {
    /// Binds `addrs[id]`, starts the listener thread and one writer thread per peer.
    /// Inbound messages arrive as `Event::Message`; outbound links going up or down as
    /// `Event::Link`.
    pub fn start(
        id: NodeId,
        addrs: &[String],
        key: [u8; 32],
        events: Sender<Event>,
    ) -> Result<Transport, String> {
        Self::start_with(id, addrs, key, events, Config::default())
    }

    /// `start` with explicit timeouts and sizes.
    pub fn start_with(
        id: NodeId,
        addrs: &[String],
        key: [u8; 32],
        events: Sender<Event>,
        cfg: Config,
    ) -> Result<Transport, String> {
        let addr = addrs
            .get(id)
            .ok_or_else(|| format!("node {id} has no address ({} nodes)", addrs.len()))?;
        let listener = TcpListener::bind(addr.as_str())
            .map_err(|e| format!("cannot listen on {addr}: {}", bind_error(&e)))?;
        Self::launch(id, listener, addrs, key, events, cfg)
    }

    /// The address the listener is bound to (useful when `addrs[id]` has port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Encodes `env` once and queues it for each peer in `to`. Never blocks: a frame for a
    /// peer that is down or whose queue is full is dropped (the protocol retransmits).
    pub fn send(&self, to: &[NodeId], env: &Envelope) {
        let payload: Payload = match serde_json::to_vec(env) {
            Ok(bytes) => bytes.into(),
            Err(e) => return self.shared.warn(format!("cannot encode envelope: {e}")),
        };
        if payload.len() > MAX_FRAME {
            let len = payload.len();
            return self.shared.warn(format!(
                "not sending envelope of {len} bytes: exceeds frame limit"
            ));
        }
        for &node in to {
            if let Some(Some(peer)) = self.peers.get(node) {
                self.enqueue(node, peer, &payload);
            }
        }
    }

    fn enqueue(&self, node: NodeId, peer: &Peer, payload: &Payload) {
        if !peer.up.load(Ordering::Acquire) {
            return;
        }
        match peer.tx.try_send(payload.clone()) {
            Ok(()) => peer.overflowing.store(false, Ordering::Relaxed),
            Err(TrySendError::Full(_)) => {
                if !peer.overflowing.swap(true, Ordering::Relaxed) {
                    let msg = format!("send queue for node {node} is full: dropping frames");
                    self.shared.warn(msg);
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Starts everything on an already bound listener.
    fn launch(
        id: NodeId,
        listener: TcpListener,
        addrs: &[String],
        key: [u8; 32],
        events: Sender<Event>,
        cfg: Config,
    ) -> Result<Transport, String> {
        if id >= addrs.len() || u32::try_from(addrs.len()).is_err() {
            return Err(format!("node {id} is not one of {} nodes", addrs.len()));
        }
        let local = listener
            .local_addr()
            .map_err(|e| format!("cannot read listener address: {e}"))?;
        let shared = Arc::new(Shared {
            id,
            nodes: addrs.len(),
            cfg,
            key,
            events,
            shutdown: AtomicBool::new(false),
            readers: Mutex::new(HashMap::new()),
            next_reader: AtomicU64::new(0),
            #[cfg(test)]
            log: Mutex::new(Vec::new()),
        });
        // Built up step by step so that an early `?` drops it and `Drop` cleans up.
        let mut transport = Transport {
            shared: shared.clone(),
            local,
            peers: Vec::with_capacity(addrs.len()),
            listener: None,
        };
        for (node, addr) in addrs.iter().enumerate() {
            let peer = (node != id)
                .then(|| spawn_writer(&shared, node, addr))
                .transpose()?;
            transport.peers.push(peer);
        }
        let handle = thread::Builder::new()
            .name("benmo-listen".into())
            .spawn(move || listen(shared, listener))
            .map_err(|e| format!("cannot start listener thread: {e}"))?;
        transport.listener = Some(handle);
        Ok(transport)
    }

    #[cfg(test)]
    fn warnings(&self) -> Vec<String> {
        self.shared.log.lock().clone()
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        // Dropping the senders disconnects the writers' channels; they exit on their own.
        self.peers.clear();
        if let Some(handle) = self.listener.take() {
            // accept() has no timeout, so wake it with a connection of our own. Joining
            // guarantees the port is free again when drop returns.
            let wake = TcpStream::connect_timeout(&wake_addr(self.local), Duration::from_secs(1));
            if wake.is_ok() {
                let _ = handle.join();
            }
        }
        for (_, stream) in self.shared.readers.lock().drain() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Where to connect to reach a listener bound to `local` (which may be a wildcard).
fn wake_addr(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}

fn bind_error(e: &io::Error) -> String {
    match e.kind() {
        ErrorKind::AddrInUse => "address in use".into(),
        ErrorKind::AddrNotAvailable => "address not available on this host".into(),
        _ => e.to_string(),
    }
}

// ----- authentication -----

/// The tag in the hello of `client` to `server` on the connection with `nonce`:
/// HMAC(key, "benmo-hello" ‖ nonce ‖ client u32 ‖ server u32).
pub fn hello_tag(key: &[u8; 32], nonce: &Nonce, client: u32, server: u32) -> [u8; TAG_LEN] {
    hmac(
        key,
        &[
            b"benmo-hello",
            nonce,
            &client.to_le_bytes(),
            &server.to_le_bytes(),
        ],
    )
}

/// The MAC of frame number `counter` on the connection with `nonce`:
/// HMAC(key, "benmo-frame" ‖ nonce ‖ counter u64 ‖ payload).
pub fn frame_mac(key: &[u8; 32], nonce: &Nonce, counter: u64, payload: &[u8]) -> [u8; TAG_LEN] {
    hmac(
        key,
        &[b"benmo-frame", nonce, &counter.to_le_bytes(), payload],
    )
}

/// HMAC-SHA256 of the concatenation of `parts`.
fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; TAG_LEN] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    parts.iter().for_each(|part| mac.update(part));
    mac.finalize().into_bytes().into()
}

/// Compares a received tag with the expected one in constant time, so how fast a forgery
/// is refused says nothing about how close it was.
fn tag_matches(expected: [u8; TAG_LEN], received: &[u8]) -> bool {
    let Ok(received) = <[u8; TAG_LEN]>::try_from(received) else {
        return false;
    };
    CtOutput::<HmacSha256>::new(expected.into()) == CtOutput::new(received.into())
}

/// Writes one frame (header and payload) and advances the counter.
fn write_frame(
    out: &mut impl Write,
    key: &[u8; 32],
    nonce: &Nonce,
    counter: &mut u64,
    payload: &[u8],
) -> io::Result<()> {
    let tag = frame_mac(key, nonce, *counter, payload);
    *counter += 1;
    // `send` refuses payloads over MAX_FRAME, so the length fits in a u32.
    out.write_all(&(payload.len() as u32).to_le_bytes())?;
    out.write_all(&tag)?;
    out.write_all(payload)
}

fn u32_at(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

// ----- outbound: one writer thread per peer -----

fn spawn_writer(shared: &Arc<Shared>, peer: NodeId, addr: &str) -> Result<Peer, String> {
    let (tx, rx) = bounded(shared.cfg.queue_frames);
    let up = Arc::new(AtomicBool::new(false));
    let writer = Writer {
        shared: shared.clone(),
        peer,
        addr: addr.to_string(),
        rx,
        up: up.clone(),
    };
    thread::Builder::new()
        .name(format!("benmo-send-{peer}"))
        .spawn(move || writer.run())
        .map_err(|e| format!("cannot start writer thread: {e}"))?;
    Ok(Peer {
        tx,
        up,
        overflowing: AtomicBool::new(false),
    })
}

struct Writer {
    shared: Arc<Shared>,
    peer: NodeId,
    addr: String,
    rx: Receiver<Payload>,
    up: Arc<AtomicBool>,
}

impl Writer {
    /// Connects, pumps frames until the connection fails, waits, and starts again, until the
    /// transport is dropped.
    fn run(self) {
        let cfg = &self.shared.cfg;
        let mut backoff = cfg.backoff_min;
        let mut warned = false; // one connect warning per outage
        loop {
            match self.connect() {
                Ok((stream, nonce)) => {
                    warned = false;
                    let since = Instant::now();
                    if !self.session(stream, &nonce) {
                        return;
                    }
                    // Only a connection that lasted counts as success: a peer that accepts
                    // and then rejects us (wrong key) must not be redialled in a tight loop.
                    if since.elapsed() >= cfg.backoff_max {
                        backoff = cfg.backoff_min;
                    }
                }
                Err(_) if self.shared.stopping() => return,
                Err(e) => {
                    // Refused is the normal state of a peer that is down: stay quiet.
                    if !warned && e.kind() != ErrorKind::ConnectionRefused {
                        let (peer, addr) = (self.peer, &self.addr);
                        let why = crate::human::explain(&e);
                        let msg = format!("cannot connect to node {peer} at {addr}: {why}");
                        self.shared.warn(msg);
                        warned = true;
                    }
                }
            }
            if !self.pause(backoff) {
                return;
            }
            backoff = (backoff * 2).min(cfg.backoff_max);
        }
    }

    /// Dials the peer and authenticates; returns the connection and its nonce.
    fn connect(&self) -> io::Result<(TcpStream, Nonce)> {
        let cfg = &self.shared.cfg;
        let mut stream = self.dial()?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(cfg.handshake_timeout))?;
        // A peer that stops reading must not wedge this thread forever.
        stream.set_write_timeout(Some(cfg.frame_timeout))?;
        let mut greeting = [0u8; GREETING_LEN];
        stream
            .read_exact(&mut greeting)
            .map_err(|e| match e.kind() {
                ErrorKind::UnexpectedEof => io::Error::new(e.kind(), "closed before greeting"),
                _ => e,
            })?;
        if greeting[..MAGIC.len()] != MAGIC[..] {
            return Err(io::Error::new(ErrorKind::InvalidData, "not a benmo node"));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&greeting[MAGIC.len()..]);
        let (me, peer) = (self.shared.id as u32, self.peer as u32);
        let mut hello = [0u8; HELLO_LEN];
        hello[..4].copy_from_slice(&me.to_le_bytes());
        hello[4..].copy_from_slice(&hello_tag(&self.shared.key, &nonce, me, peer));
        stream.write_all(&hello)?;
        Ok((stream, nonce))
    }

    fn dial(&self) -> io::Result<TcpStream> {
        let mut last = io::Error::new(ErrorKind::InvalidInput, "address resolves to nothing");
        for addr in self.addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, self.shared.cfg.handshake_timeout) {
                Ok(stream) => return Ok(stream),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Reports the link up, pumps frames, reports it down. False when the transport is gone.
    fn session(&self, stream: TcpStream, nonce: &Nonce) -> bool {
        let peer = self.peer;
        // Up before the event, so the Hello the node sends in reply is not dropped.
        self.up.store(true, Ordering::Release);
        if self
            .shared
            .events
            .send(Event::Link { peer, up: true })
            .is_err()
        {
            return false;
        }
        let result = self.pump(stream, nonce);
        self.up.store(false, Ordering::Release);
        while self.rx.try_recv().is_ok() {} // frames for the dead connection
        match result {
            Ok(()) => false,
            Err(_) if self.shared.stopping() => false,
            Err(e) => {
                let why = crate::human::explain(&e);
                let msg = format!("lost connection to node {peer} at {}: {why}", self.addr);
                self.shared.warn(msg);
                self.shared
                    .events
                    .send(Event::Link { peer, up: false })
                    .is_ok()
            }
        }
    }

    /// Writes queued frames in batches (one flush each), or a keepalive when idle.
    /// Ok means the transport was dropped; Err is a broken connection.
    fn pump(&self, stream: TcpStream, nonce: &Nonce) -> io::Result<()> {
        let cfg = &self.shared.cfg;
        let key = &self.shared.key;
        let mut out = BufWriter::with_capacity(64 << 10, stream);
        let mut counter = 0;
        let keepalive: Payload = Arc::new([]);
        loop {
            let first = match self.rx.recv_timeout(cfg.keepalive) {
                Ok(payload) => payload,
                Err(RecvTimeoutError::Timeout) => keepalive.clone(),
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            write_frame(&mut out, key, nonce, &mut counter, &first)?;
            for payload in self.rx.try_iter().take(cfg.queue_frames) {
                write_frame(&mut out, key, nonce, &mut counter, &payload)?;
            }
            out.flush()?;
        }
    }

    /// Waits `wait`, discarding anything queued meanwhile. False when the transport is gone.
    fn pause(&self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => return true,
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }
}

// ----- inbound: listener and one reader thread per connection -----

fn listen(shared: Arc<Shared>, listener: TcpListener) {
    for conn in listener.incoming() {
        if shared.stopping() {
            return;
        }
        match conn {
            Ok(stream) => admit(&shared, stream),
            Err(e) => {
                shared.warn(format!("accept failed: {}", crate::human::explain(&e)));
                // Out of file descriptors and the like: don't spin.
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Starts a reader for `stream`, unless too many are alive already.
fn admit(shared: &Arc<Shared>, stream: TcpStream) {
    let who = match stream.peer_addr() {
        Ok(addr) => addr.to_string(),
        Err(_) => "unknown address".into(),
    };
    let limit = shared.nodes - 1 + shared.cfg.spare_readers;
    let mut readers = shared.readers.lock();
    if readers.len() >= limit {
        drop(readers);
        return shared.warn(format!(
            "refused connection from {who}: {limit} connections already open"
        ));
    }
    let Ok(clone) = stream.try_clone() else {
        return shared.warn(format!(
            "refused connection from {who}: cannot clone socket"
        ));
    };
    let key = shared.next_reader.fetch_add(1, Ordering::Relaxed);
    readers.insert(key, clone);
    drop(readers);
    let inbound = Inbound {
        shared: shared.clone(),
        key,
        who,
        reader: BufReader::with_capacity(64 << 10, stream),
    };
    let spawned = thread::Builder::new()
        .name("benmo-recv".into())
        .spawn(move || inbound.run());
    if let Err(e) = spawned {
        // The closure (and the socket in it) is gone; forget the registry's clone too.
        if let Some(s) = shared.readers.lock().remove(&key) {
            let _ = s.shutdown(Shutdown::Both);
        }
        shared.warn(format!(
            "refused connection: cannot start reader thread: {e}"
        ));
    }
}

/// Why a deadline read stopped short.
enum Short {
    Eof,
    Timeout,
    Io(io::Error),
}

/// A received frame: its MAC and payload, not yet verified.
type Frame = ([u8; TAG_LEN], Vec<u8>);

/// One inbound connection.
struct Inbound {
    shared: Arc<Shared>,
    key: u64,
    who: String,
    reader: BufReader<TcpStream>,
}

impl Drop for Inbound {
    fn drop(&mut self) {
        // Runs after any warning, so a peer that sees the close can rely on it being logged.
        let _ = self.reader.get_ref().shutdown(Shutdown::Both);
        self.shared.readers.lock().remove(&self.key);
    }
}

impl Inbound {
    fn run(mut self) {
        if let Err(reason) = self.serve() {
            if !self.shared.stopping() {
                let who = &self.who;
                self.shared
                    .warn(format!("dropped connection from {who}: {reason}"));
            }
        }
    }

    /// Authenticates, then delivers frames. Ok is a clean end; Err says what was wrong.
    fn serve(&mut self) -> Result<(), String> {
        let (from, nonce) = self.handshake()?;
        self.who = format!("{} (node {from})", self.who);
        let mut counter = 0u64;
        while let Some((tag, payload)) = self.next_frame()? {
            let expected = frame_mac(&self.shared.key, &nonce, counter, &payload);
            if !tag_matches(expected, &tag) {
                return Err(format!("bad MAC on frame {counter}"));
            }
            counter += 1;
            if payload.is_empty() {
                continue; // keepalive
            }
            let env: Envelope = serde_json::from_slice(&payload)
                .map_err(|e| format!("undecodable envelope in frame {}: {e}", counter - 1))?;
            if let Some(node) = env.unknown_node(self.shared.nodes) {
                let frame = counter - 1;
                return Err(format!(
                    "envelope in frame {frame} names unknown node {node}"
                ));
            }
            if self
                .shared
                .events
                .send(Event::Message { from, env })
                .is_err()
            {
                return Ok(()); // the node is shutting down
            }
        }
        Ok(())
    }

    /// Sends the greeting and checks the hello. Returns the peer's id and the nonce.
    fn handshake(&mut self) -> Result<(NodeId, Nonce), String> {
        let limit = self.shared.cfg.handshake_timeout;
        let deadline = Instant::now() + limit;
        let nonce: Nonce = rand::random();
        let mut greeting = [0u8; GREETING_LEN];
        greeting[..MAGIC.len()].copy_from_slice(MAGIC);
        greeting[MAGIC.len()..].copy_from_slice(&nonce);
        let stream = self.reader.get_mut();
        stream
            .set_write_timeout(Some(limit))
            .and_then(|()| stream.write_all(&greeting))
            .map_err(|e| format!("cannot send greeting: {}", crate::human::explain(&e)))?;
        let mut hello = [0u8; HELLO_LEN];
        self.read_by(&mut hello, deadline)
            .map_err(|short| match short {
                Short::Eof => "closed during handshake".to_string(),
                Short::Timeout => format!("no handshake within {limit:?}"),
                Short::Io(e) => format!("handshake: {}", crate::human::explain(&e)),
            })?;
        let client = u32_at(&hello);
        let from = client as usize;
        if from == self.shared.id {
            return Err(format!("hello claims our own id {client}"));
        }
        if from >= self.shared.nodes {
            return Err(format!("hello from unknown node id {client}"));
        }
        let expected = hello_tag(&self.shared.key, &nonce, client, self.shared.id as u32);
        if !tag_matches(expected, &hello[4..]) {
            return Err(format!(
                "bad hello tag for node {client} (wrong key or replay)"
            ));
        }
        Ok((from, nonce))
    }

    /// Reads the next frame as (MAC, payload); None on a clean close between frames.
    fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        let cfg = &self.shared.cfg;
        let (idle, slow) = (cfg.idle_timeout, cfg.frame_timeout);
        let mut header = [0u8; HEADER_LEN];
        match self.read_by(&mut header[..1], Instant::now() + idle) {
            Ok(()) => {}
            Err(Short::Eof) => return Ok(None),
            Err(Short::Timeout) => return Err(format!("silent for {idle:?}")),
            Err(Short::Io(e)) => return Err(e.to_string()),
        }
        // From the first byte on, the whole frame must arrive within `slow`.
        let deadline = Instant::now() + slow;
        let partial = |short| match short {
            Short::Eof => "truncated frame".to_string(),
            Short::Timeout => format!("frame not completed within {slow:?}"),
            Short::Io(e) => e.to_string(),
        };
        self.read_by(&mut header[1..], deadline).map_err(partial)?;
        let len = u32_at(&header) as usize;
        if len > MAX_FRAME {
            return Err(format!("frame of {len} bytes exceeds limit"));
        }
        let mut payload = vec![0u8; len];
        self.read_by(&mut payload, deadline).map_err(partial)?;
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&header[4..]);
        Ok(Some((tag, payload)))
    }

    /// Fills `buf` or fails once `deadline` passes, however slowly the bytes trickle in.
    fn read_by(&mut self, buf: &mut [u8], deadline: Instant) -> Result<(), Short> {
        let mut filled = 0;
        while filled < buf.len() {
            // Only touch the socket timeout when the read will actually hit the socket.
            if self.reader.buffer().is_empty() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Short::Timeout);
                }
                let socket = self.reader.get_ref();
                socket.set_read_timeout(Some(left)).map_err(Short::Io)?;
            }
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) => return Err(Short::Eof),
                Ok(n) => filled += n,
                Err(e) if is_retry(&e) => {}
                Err(e) => return Err(Short::Io(e)),
            }
        }
        Ok(())
    }
}

/// A read that timed out or was interrupted; the deadline decides what happens next.
fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::Message;
    use crossbeam_channel::unbounded;

    const KEY: [u8; 32] = [7; 32];
    /// Upper bound on any wait; tests normally finish far sooner.
    const WAIT: Duration = Duration::from_secs(5);

    fn fast() -> Config {
        Config {
            handshake_timeout: Duration::from_secs(2),
            frame_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(3),
            keepalive: Duration::from_millis(50),
            backoff_min: Duration::from_millis(5),
            backoff_max: Duration::from_millis(100),
            ..Config::default()
        }
    }

    fn env(depth: u64) -> Envelope {
        Envelope {
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

    fn node(id: NodeId, l: TcpListener, addrs: &[String], key: [u8; 32], cfg: Config) -> Node {
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
        let short = Config {
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
        let cfg = Config {
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
}
