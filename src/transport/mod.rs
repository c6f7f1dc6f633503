//! Moving envelopes between nodes over TCP, authenticated with the cluster key.
//!
//! # Threads
//!
//! One listener thread accepts connections and gives each one a reader thread (at most
//! `peers + Limits::spare_readers` at once). One writer thread per peer owns the outbound
//! connection to that peer for the life of the transport. Readers and writers only move bytes
//! and events; the node's state lives in the single event-loop thread that drains `events`.
//!
//! # Connections
//!
//! Each ordered pair of nodes has its own connection: A's writer for B dials B's listener and
//! only sends; B's reader for it only reads. So A→B and B→A traffic never share a socket, and
//! "link up" means "my writer to that peer is connected and authenticated".
//!
//! # Wire format
//!
//! Each connection opens with a handshake: the server greets with a fresh nonce, the client
//! answers with its id and a tag only a holder of the cluster key can compute. Then the client
//! sends frames, each MAC'd over the nonce and a per-connection counter; an empty frame is a
//! keepalive, sent after a second of silence so the reader's idle timeout only fires on dead
//! links. The bytes are laid out, and the tags computed, in `wire`; this module only moves
//! them. The sender of a delivered message is the id authenticated in the handshake.
//!
//! Not provided: secrecy (payloads are plaintext) and protection against key holders. Any
//! fault in what a connection sends drops that connection with one `warning:` line on stderr.

use crate::ledger::NodeId;
use crate::paxos::{Envelope, Event};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::ToSocketAddrs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

mod wire;

pub use wire::{frame_mac, hello_tag, GREETING_LEN, MAGIC, MAX_FRAME, NONCE_LEN, TAG_LEN};
use wire::{Nonce, HEADER_LEN, HELLO_LEN};

/// An encoded envelope, shared by every peer queue it is sent to.
type Payload = Arc<[u8]>;

/// Timeouts and sizes. The defaults are the production values; tests shrink them.
#[derive(Clone, Debug)]
pub struct Limits {
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

impl Default for Limits {
    fn default() -> Self {
        Limits {
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
    cfg: Limits,
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
        Self::start_with(id, addrs, key, events, Limits::default())
    }

    /// `start` with explicit timeouts and sizes.
    pub fn start_with(
        id: NodeId,
        addrs: &[String],
        key: [u8; 32],
        events: Sender<Event>,
        cfg: Limits,
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
        let payload: Payload = match wire::encode(env) {
            Ok(bytes) => bytes.into(),
            Err(why) => return self.shared.warn(why),
        };
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
        cfg: Limits,
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
        let nonce = wire::greeting_nonce(&greeting)
            .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, "not a benmo node"))?;
        let (me, peer) = (self.shared.id as u32, self.peer as u32);
        stream.write_all(&wire::hello(&self.shared.key, &nonce, me, peer))?;
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
            wire::write_frame(&mut out, key, nonce, &mut counter, &first)?;
            for payload in self.rx.try_iter().take(cfg.queue_frames) {
                wire::write_frame(&mut out, key, nonce, &mut counter, &payload)?;
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
            wire::check_frame(&self.shared.key, &nonce, &mut counter, &tag, &payload)?;
            if payload.is_empty() {
                continue; // keepalive
            }
            let env = wire::decode(&payload, self.shared.nodes, counter - 1)?;
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
        let stream = self.reader.get_mut();
        stream
            .set_write_timeout(Some(limit))
            .and_then(|()| stream.write_all(&wire::greeting(&nonce)))
            .map_err(|e| format!("cannot send greeting: {}", crate::human::explain(&e)))?;
        let mut hello = [0u8; HELLO_LEN];
        self.read_by(&mut hello, deadline)
            .map_err(|short| match short {
                Short::Eof => "closed during handshake".to_string(),
                Short::Timeout => format!("no handshake within {limit:?}"),
                Short::Io(e) => format!("handshake: {}", crate::human::explain(&e)),
            })?;
        let client = wire::hello_client(&hello);
        let from = client as usize;
        if from == self.shared.id {
            return Err(format!("hello claims our own id {client}"));
        }
        if from >= self.shared.nodes {
            return Err(format!("hello from unknown node id {client}"));
        }
        let server = self.shared.id as u32;
        if !wire::hello_verifies(&self.shared.key, &nonce, &hello, server) {
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
        let (len, tag) = wire::parse_header(&header)?;
        let mut payload = vec![0u8; len];
        self.read_by(&mut payload, deadline).map_err(partial)?;
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
mod tests;
