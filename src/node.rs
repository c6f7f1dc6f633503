//! `benmo node`: the thin shell around the protocol core.
//!
//! Threads: the transport's listener, reader and writer threads and a stdin thread only move
//! bytes and events. This thread, the event loop, owns the `Core` and the `Store`. Each turn
//! it drains a batch of events, feeds them and one `Tick` to the core, writes and fsyncs
//! everything the batch persisted (group commit), and only then sends and prints.

use crate::cli::{self, Args};
use crate::commands::{self, Command, Parsed};
use crate::config::{self, Config};
use crate::human;
use crate::ledger::{Hash, NodeId};
use crate::lock;
use crate::paxos::{Action, Core, Durable, Envelope, Event, Message, Params, Record, Timing, Turn};
use crate::storage::{Store, StoreError};
use crate::trace::{self, TraceWriter};
use crate::transport::Transport;
use crossbeam_channel::{select, Receiver, Sender};
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Most events handled before one group commit.
const BATCH: usize = 4096;
/// How often time advances when nothing happens.
const TICK: Duration = Duration::from_millis(5);
/// Catch-up chunk size.
const CHUNK_BYTES: usize = 1 << 20;
/// The write-ahead log is compacted when it grows past this, or past twice its size just
/// after the last compaction, so a large live set is not rewritten on every turn.
const COMPACT_BYTES: u64 = 8 << 20;
/// Commands waiting for the event loop; a full channel holds back the stdin thread, so a
/// flood of input waits in the pipe instead of in memory.
const STDIN_BACKLOG: usize = 8192;

/// The flags of `benmo node` (see `cli::NODE_HELP`).
pub struct NodeOptions {
    pub id: Option<NodeId>,
    pub data: PathBuf,
    pub delay: (u64, u64),
    pub verbose: bool,
    pub recover: bool,
    /// `--classroom`: the seed's slow pace, for following Paxos by hand.
    pub classroom: bool,
    /// `--phase-delay`: pause between Paxos phases in classroom mode; 0 is none.
    pub phase_delay_ms: u64,
}

impl NodeOptions {
    /// Errors are usage errors.
    pub fn parse(mut args: Args) -> Result<NodeOptions, String> {
        let data = args.data()?;
        let classroom = args.switch("--classroom");
        // Classroom pace gives time to crash a would-be leader by hand.
        let default_delay = if classroom {
            (20_000, 60_000)
        } else {
            (20, 100)
        };
        let delay = args
            .value("--delay")?
            .map_or(Ok(default_delay), |d| cli::parse_delay(&d))?;
        let phase_delay_ms = match args.value("--phase-delay")? {
            None => 0,
            Some(_) if !classroom => return Err("--phase-delay needs --classroom".into()),
            Some(d) => cli::parse_duration(&d).ok_or_else(|| {
                format!("--phase-delay: expected a duration such as 2s or 500ms, not '{d}'")
            })?,
        };
        let verbose = args.switch("--verbose");
        let recover = args.switch("--recover");
        let rest = args.rest(1)?;
        let id = match rest.first() {
            Some(w) => Some(w.parse().map_err(|_| format!("bad node id '{w}'"))?),
            None => None,
        };
        Ok(NodeOptions {
            id,
            data,
            delay,
            verbose,
            recover,
            classroom,
            phase_delay_ms,
        })
    }
}

/// What the stdin thread and the Ctrl-C handler tell the event loop.
enum Local {
    Event(Event),
    Print(String),
    /// Show the `node3> ` prompt once this turn's output is out.
    Prompt,
    Stop,
}

/// What the stdin thread needs to know to talk to a person.
#[derive(Clone, Copy)]
struct Console {
    interactive: bool,
    id: NodeId,
    nodes: usize,
}

/// Starts a node and runs it until Ctrl-C. Errors are one line, for `error: ...`.
pub fn run(opts: NodeOptions) -> Result<(), String> {
    let config = Config::load(&opts.data)?;
    let key = config::load_key(&opts.data)?;
    let mut stdin = LineReader::new(io::stdin());
    let id = match opts.id {
        Some(id) => id,
        None => ask_id(&mut stdin)?,
    };
    if id >= config.nodes() {
        return Err(format!(
            "node id {id} is out of range: this cluster has nodes 0..{}",
            config.nodes() - 1
        ));
    }
    let params = params(&opts, &config, id)?;
    let dir = config::node_dir(&opts.data, id);
    // Held until the process ends: nothing below touches the dir without it.
    let _owner = own_dir(&dir, id)?;
    let votes_lost = opts.recover && recover(&dir, &config, id)?;
    let mut opened =
        Store::open(&dir, config.nodes(), config.balance, Some(id)).map_err(|e| store_error(&e))?;
    if votes_lost {
        // Durable before anything runs, so a crash during recovery cannot forget it.
        let synced = opened
            .store
            .append(&Record::Amnesia)
            .and_then(|()| opened.store.sync());
        synced.map_err(|e| store_error(&e))?;
        opened.records.push(Record::Amnesia);
    }
    opened.repairs.iter().for_each(|r| eprintln!("note: {r}"));
    let (net_tx, net_rx) = crossbeam_channel::unbounded();
    let transport = Transport::start(id, &config.addrs, key, net_tx)?;
    let mut core = Core::recover(params, opened.ledger, opened.records);
    let trace = open_trace(&dir, id)?;
    let mut store = opened.store;
    compact(&mut store, &core);
    // Peers vouch that this disk is not older than what they saw from it (a restored copy).
    core.check_start(opts.recover);
    let console = Console {
        interactive: io::stdin().is_terminal(),
        id,
        nodes: config.nodes(),
    };
    let local_rx = spawn_local_inputs(stdin, console)?;
    banner(&core, &config, &opts.data, console.interactive);
    EventLoop {
        compact_at: COMPACT_BYTES.max(2 * store.wal_bytes()),
        core,
        store,
        transport,
        trace,
        start: Instant::now(),
        prompt: false,
        own: Vec::new(),
    }
    .run(net_rx, local_rx);
    Ok(())
}

/// Opens the node's trace for this incarnation (each start counts one more).
fn open_trace(dir: &std::path::Path, id: NodeId) -> Result<Option<TraceWriter>, String> {
    if std::env::var("BENMO_TRACE").is_ok_and(|v| v == "off") {
        return Ok(None);
    }
    let opened = trace::next_incarnation(dir).and_then(|inc| TraceWriter::open(dir, id, inc));
    let explain = |e: io::Error| {
        let why = human::explain(&e);
        format!("cannot open the trace in {}: {why}", dir.display())
    };
    opened.map(Some).map_err(explain)
}

/// The wall-clock time of day, UTC, as `HH:MM:SS.mmm`: five terminals' verbose lines line up.
fn wall_clock() -> String {
    let ms = trace::now_ms() % 86_400_000;
    let (h, m, s) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
    format!("{h:02}:{m:02}:{s:02}.{:03}", ms % 1000)
}

fn params(opts: &NodeOptions, config: &Config, id: NodeId) -> Result<Params, String> {
    let params = Params {
        id,
        nodes: config.nodes(),
        timing: Timing {
            delay_min_ms: opts.delay.0,
            delay_max_ms: opts.delay.1,
            phase_delay_ms: opts.phase_delay_ms,
            ..Timing::default()
        },
        verbose: opts.verbose,
        classroom: opts.classroom,
        seed: rand::random(),
    };
    params.timing.validate()?;
    Ok(params)
}

/// Starts the stdin thread and the Ctrl-C handler, which feed the event loop.
fn spawn_local_inputs(stdin: LineReader, console: Console) -> Result<Receiver<Local>, String> {
    let (tx, rx) = crossbeam_channel::bounded(STDIN_BACKLOG);
    let stop = tx.clone();
    ctrlc::set_handler(move || drop(stop.send(Local::Stop)))
        .map_err(|e| format!("cannot handle Ctrl-C: {e}"))?;
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || read_commands(stdin, tx, console))
        .map_err(|e| format!("cannot start the stdin thread: {e}"))?;
    Ok(rx)
}

/// One process per node dir: locks the dir (see `lock`), or says which process has it.
/// A dir that does not exist is left for `Store::open` to report as not initialised.
fn own_dir(dir: &std::path::Path, id: NodeId) -> Result<Option<lock::DirLock>, String> {
    if !dir.is_dir() {
        return Ok(None);
    }
    lock::acquire(dir).map(Some).map_err(|e| match &e {
        lock::LockError::Busy { path, .. } => format!(
            "node {id} is already running ({}, which holds the lock on {}); stop it first",
            e.holder(),
            path.display()
        ),
        _ => e.to_string(),
    })
}

/// `--recover`: moves damaged files aside, keeping their good records. Returns whether
/// records of its votes were lost, in which case it must not vote until that is safe.
fn recover(dir: &std::path::Path, config: &Config, id: NodeId) -> Result<bool, String> {
    let done =
        Store::recover(dir, config.nodes(), config.balance, id).map_err(|e| store_error(&e))?;
    if done.notes.is_empty() {
        eprintln!("note: {} is intact; nothing to recover", dir.display());
    }
    done.notes.iter().for_each(|n| eprintln!("note: {n}"));
    Ok(done.votes_lost)
}

fn banner(core: &Core, config: &Config, data: &Path, interactive: bool) {
    let l = core.ledger();
    let mut out = io::stdout().lock();
    // Written, not println!: a closed stdout must not panic the node.
    let _ = writeln!(
        out,
        "node {} of {} listening on {}: depth {}, head {}, balance {}, data {}",
        core.id(),
        config.nodes(),
        config.addrs[core.id()],
        l.depth,
        l.head.short(),
        l.balances[core.id()],
        data.display()
    );
    if interactive {
        let _ = writeln!(out, "{}", commands::HELP);
    }
}

fn ask_id(stdin: &mut LineReader) -> Result<NodeId, String> {
    if io::stdin().is_terminal() {
        print!("Enter process ID: ");
        io::stdout().flush().ok();
    }
    match stdin.next_line() {
        Some(Ok(line)) => line
            .trim()
            .parse()
            .map_err(|_| format!("bad node id '{}'", line.trim())),
        Some(Err(e)) => Err(e),
        None => Err("no node id given".to_string()),
    }
}

struct EventLoop {
    core: Core,
    store: Store,
    transport: Transport,
    /// The bounded message trace that `benmo trace` draws rounds from (`None` only with
    /// `BENMO_TRACE=off`, which exists to measure what tracing costs).
    trace: Option<TraceWriter>,
    start: Instant,
    compact_at: u64,
    /// Whether to show the prompt after this turn's output.
    prompt: bool,
    /// `Loopback` envelopes, fed to the core at the start of the next turn.
    own: Vec<Envelope>,
}

impl EventLoop {
    fn run(mut self, net: Receiver<Event>, local: Receiver<Local>) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let wait = match self.own.is_empty() {
                true => TICK,
                false => Duration::ZERO, // our own vote is waiting to be counted
            };
            let first = select! {
                recv(net) -> e => e.ok().map(Local::Event),
                recv(local) -> l => Some(l.unwrap_or(Local::Stop)),
                default(wait) => None,
            };
            let more = std::iter::from_fn(|| {
                local
                    .try_recv()
                    .ok()
                    .or_else(|| net.try_recv().ok().map(Local::Event))
            });
            for item in first.into_iter().chain(more).take(BATCH) {
                match item {
                    Local::Stop => return self.stop(),
                    item => batch.push(item),
                }
            }
            let idle = batch.is_empty() && wait == TICK;
            self.turn(&mut batch);
            if idle {
                // Nothing waits: bring the superblock up to the last sync (see `Store::settle`).
                self.store
                    .settle()
                    .unwrap_or_else(|e| fatal(&store_error(&e)));
            }
        }
    }

    /// One group commit: feed the batch, persist, then send and print, in order.
    fn turn(&mut self, batch: &mut Vec<Local>) {
        let now = self.start.elapsed().as_millis() as u64;
        let mut actions = Vec::new();
        let (id, own) = (self.core.id(), std::mem::take(&mut self.own));
        for env in own {
            self.core
                .handle(now, Event::Message { from: id, env }, &mut actions);
        }
        for item in batch.drain(..) {
            match item {
                Local::Event(e) => {
                    if let (Event::Message { from, env }, Some(trace)) = (&e, &mut self.trace) {
                        trace.received(trace::now_ms(), *from, env.id, &env.msg);
                    }
                    self.core.handle(now, e, &mut actions)
                }
                Local::Print(line) => actions.push(Action::Print(line)),
                Local::Prompt => self.prompt = true,
                Local::Stop => unreachable!("handled by run"),
            }
        }
        self.core.handle(now, Event::Tick, &mut actions);
        let turn = Turn::split(actions);
        let stdout = io::stdout();
        let mut out = io::BufWriter::with_capacity(1 << 16, stdout.lock());
        for action in turn.early {
            self.perform(action, &mut out);
        }
        out.flush().ok();
        self.persist(&turn.writes);
        for action in turn.effects {
            self.perform(action, &mut out);
        }
        if std::mem::take(&mut self.prompt) {
            write!(out, "node{}> ", self.core.id()).ok();
        }
        out.flush().ok();
        drop(out);
        if let Some(trace) = &mut self.trace {
            trace.flush().ok(); // a diagnostic: losing it must not stop the node
        }
        if self.store.wal_bytes() > self.compact_at {
            compact(&mut self.store, &self.core);
            self.compact_at = COMPACT_BYTES.max(2 * self.store.wal_bytes());
        }
    }

    /// Durability first: nothing of this batch leaves the process before this returns.
    fn persist(&mut self, writes: &[Durable]) {
        for write in writes {
            let written = match write {
                Durable::Record(r) => self.store.append(r),
                Durable::Block(b) => {
                    if let Some(trace) = &mut self.trace {
                        trace.committed(trace::now_ms(), b);
                    }
                    self.store.commit(b)
                }
            };
            written.unwrap_or_else(|e| fatal(&store_error(&e)));
        }
        self.store
            .sync()
            .unwrap_or_else(|e| fatal(&store_error(&e)));
    }

    fn perform(&mut self, action: Action, out: &mut impl Write) {
        match action {
            Action::Send { to, env } => self.send(&to, env),
            Action::Print(line) if line.starts_with("[paxos]") => {
                drop(writeln!(out, "{} {line}", wall_clock()))
            }
            Action::Print(line) => drop(writeln!(out, "{line}")),
            Action::ServeBlocks { to, from } => self.serve_blocks(to, from),
            Action::PrintChain { full } => self.print_chain(out, full),
            Action::Crash => {
                writeln!(out, "node {} crashing", self.core.id()).ok();
                out.flush().ok();
                std::process::exit(1);
            }
            Action::Fatal(line) => {
                out.flush().ok();
                eprintln!("error: {line}");
                std::process::exit(1);
            }
            Action::Loopback(env) => self.own.push(env),
            Action::Persist(_) | Action::Commit(_) | Action::Early(_) => {
                unreachable!("a write or an early effect, split off by `Turn::split`")
            }
        }
    }

    fn serve_blocks(&mut self, to: NodeId, from: u64) {
        match self.store.blocks(from, CHUNK_BYTES) {
            Ok(blocks) if !blocks.is_empty() => {
                let env = Envelope {
                    id: 0,
                    seq: 0,
                    depth: self.store.depth(),
                    msg: Message::Blocks { blocks },
                };
                self.send(&[to], env);
            }
            Ok(_) => {}
            Err(e) => eprintln!(
                "warning: cannot serve blocks to node {to}: {}",
                store_error(&e)
            ),
        }
    }

    /// Every block; short hashes keep a line within 80 columns unless `full`.
    fn print_chain(&mut self, out: &mut impl Write, full: bool) {
        let hash = |h: &Hash| if full { h.to_string() } else { h.short() };
        let mut from = 1;
        while from <= self.store.depth() {
            let blocks = match self.store.blocks(from, CHUNK_BYTES) {
                Ok(b) if !b.is_empty() => b,
                Ok(_) => break,
                Err(e) => return drop(writeln!(out, "error: {}", store_error(&e))),
            };
            for b in &blocks {
                writeln!(
                    out,
                    "block {} hash {} prev {} proposer {} transfers {}",
                    b.depth,
                    hash(&b.hash),
                    hash(&b.prev),
                    b.proposer,
                    b.transfers.len()
                )
                .ok();
                for t in &b.transfers {
                    writeln!(out, "  transfer {t}").ok();
                }
            }
            from += blocks.len() as u64;
        }
        writeln!(out, "chain depth {}", self.store.depth()).ok();
    }

    /// Stamps the envelope with a fresh id and the last completed sync, notes it in the
    /// trace, and sends it.
    fn send(&mut self, to: &[NodeId], mut env: Envelope) {
        env.seq = self.store.seq();
        if let Some(trace) = &mut self.trace {
            env.id = trace.next_id();
            trace.sent(trace::now_ms(), env.id, to, &env.msg);
        }
        self.transport.send(to, &env);
    }

    fn stop(mut self) {
        self.store.sync().ok();
        if let Some(trace) = &mut self.trace {
            trace.stopped(trace::now_ms()).ok();
        }
        let _ = writeln!(io::stdout(), "node {} stopped", self.core.id());
        std::process::exit(0);
    }
}

fn compact(store: &mut Store, core: &Core) {
    store
        .compact(&core.live_records())
        .unwrap_or_else(|e| fatal(&store_error(&e)));
}

/// A storage error with its OS error in words ("no space left on device").
fn store_error(e: &StoreError) -> String {
    match e {
        StoreError::Io { path, err } => {
            format!("I/O error on {}: {}", path.display(), human::explain(err))
        }
        other => other.to_string(),
    }
}

/// A node that cannot persist must not go on: it would acknowledge what it may forget.
/// It is called before anything of the failed batch is sent or printed, and says so in one
/// line. A record left half written (a full disk) is a torn tail, cut off on the next start.
fn fatal(reason: &str) -> ! {
    eprintln!(
        "error: stopped: cannot save state ({reason}); nothing unsaved was acknowledged. \
         Free space or fix the disk, then start the node again"
    );
    std::process::exit(2);
}

/// Reads stdin lines into commands. Errors are printed (through the event loop, in order);
/// bare commands prompt for their arguments.
fn read_commands(mut stdin: LineReader, tx: Sender<Local>, console: Console) {
    let say = |line: String| tx.send(Local::Print(line)).is_ok();
    let prompt = || !console.interactive || tx.send(Local::Prompt).is_ok();
    prompt();
    while let Some(line) = stdin.next_line() {
        let parsed = line.and_then(|l| commands::parse(&l));
        let sent = match parsed {
            Ok(Parsed::Command(c)) => tx.send(Local::Event(Event::Command(c))).is_ok(),
            Ok(Parsed::Help) => say(commands::HELP.to_string()),
            Ok(Parsed::Quit) => {
                // Stops the node like Ctrl-C; nothing more to read.
                let _ = tx.send(Local::Stop);
                false
            }
            Ok(Parsed::Nothing) => true,
            Ok(Parsed::Ask(bare)) => match ask_args(&mut stdin, bare, console) {
                Some(Ok(c)) => tx.send(Local::Event(Event::Command(c))).is_ok(),
                Some(Err(e)) => say(format!("error: {e}")),
                None => false,
            },
            Err(e) => say(format!("error: {e}")),
        };
        if !sent || !prompt() {
            return;
        }
    }
    // At EOF the node keeps running and serving its peers.
}

/// Asks for a bare command's arguments one at a time, checking each answer before asking
/// the next. `None` at end of input.
fn ask_args(
    stdin: &mut LineReader,
    bare: commands::Bare,
    console: Console,
) -> Option<Result<Command, String>> {
    let mut answers = Vec::new();
    for (i, prompt) in bare.prompts().iter().enumerate() {
        if console.interactive {
            print!("{prompt}: ");
            io::stdout().flush().ok();
        }
        let answer = match stdin.next_line()? {
            Ok(line) => line.trim().to_string(),
            Err(e) => return Some(Err(e)),
        };
        if let Err(e) = bare.check_answer(i, &answer, console.id, console.nodes) {
            return Some(Err(e));
        }
        answers.push(answer);
    }
    let words: Vec<&str> = answers.iter().map(String::as_str).collect();
    Some(commands::with_args(bare.name(), &words))
}

/// Reads lines of at most `commands::MAX_LINE` bytes; longer lines and invalid UTF-8 are
/// consumed and reported as errors instead of filling memory.
pub struct LineReader {
    inner: BufReader<Box<dyn Read + Send>>,
}

impl LineReader {
    pub fn new(input: impl Read + Send + 'static) -> LineReader {
        LineReader {
            inner: BufReader::new(Box::new(input)),
        }
    }

    /// `None` at end of input.
    pub fn next_line(&mut self) -> Option<Result<String, String>> {
        let mut line = Vec::new();
        let mut total = 0usize;
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Some(Err(format!("cannot read stdin: {}", human::explain(&e)))),
            };
            if buf.is_empty() {
                return (total > 0).then(|| Self::finish(line, total));
            }
            let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], Some(i + 1)),
                None => (buf, None),
            };
            total += chunk.len() + done.map_or(0, |_| 1);
            if line.len() <= commands::MAX_LINE {
                line.extend_from_slice(
                    &chunk[..chunk.len().min(commands::MAX_LINE + 1 - line.len())],
                );
            }
            let used = done.unwrap_or(buf.len());
            self.inner.consume(used);
            if done.is_some() {
                return Some(Self::finish(line, total));
            }
        }
    }

    fn finish(mut line: Vec<u8>, total: usize) -> Result<String, String> {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.len() > commands::MAX_LINE {
            return Err(format!(
                "line too long ({total} bytes; at most {})",
                commands::MAX_LINE
            ));
        }
        String::from_utf8(line).map_err(|_| "line is not valid UTF-8".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<Result<String, String>> {
        let mut r = LineReader::new(io::Cursor::new(input.to_vec()));
        std::iter::from_fn(|| r.next_line()).collect()
    }

    #[test]
    fn reads_lines_of_every_kind() {
        assert_eq!(
            lines(b"status\r\nprintQueue\nlast"),
            vec![
                Ok("status".into()),
                Ok("printQueue".into()),
                Ok("last".into())
            ]
        );
        assert_eq!(lines(b""), vec![]);
        assert_eq!(lines(b"\n"), vec![Ok(String::new())]);
    }

    #[test]
    fn long_lines_and_bad_utf8_are_errors_one_each() {
        let mut input = vec![b'x'; 100_000];
        input.extend_from_slice(b"\n\xff\xfe\nstatus\n");
        let got = lines(&input);
        assert_eq!(got.len(), 3);
        assert!(got[0].as_ref().unwrap_err().contains("too long"));
        assert!(got[1].as_ref().unwrap_err().contains("UTF-8"));
        assert_eq!(got[2], Ok("status".into()));
    }
}
