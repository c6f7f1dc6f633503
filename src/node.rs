//! `benmo node`: the thin shell around the protocol core.
//!
//! Threads: the transport's listener, reader and writer threads and a stdin thread only move
//! bytes and events. This thread, the event loop, owns the `Core` and the `Store`. Each turn
//! it drains a batch of events, feeds them and one `Tick` to the core, writes and fsyncs
//! everything the batch persisted (group commit), and only then sends and prints.

use crate::cli::{self, Args};
use crate::commands::{self, Command, Parsed};
use crate::config::{self, Config};
use crate::console::{self, Prompt, Screen};
use crate::hold::{self, Gate, Release};
use crate::human;
use crate::ledger::{Hash, NodeId};
use crate::lock;
use crate::paxos::{
    Action, Core, Durable, Envelope, Event, Message, OpenTurn, Params, Record, Timing,
};
use crate::render;
use crate::storage::{Store, StoreError};
use crate::trace::{self, TraceWriter};
use crate::transport::Transport;
use crossbeam_channel::{select, Receiver, Sender};
use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::PathBuf;
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
    /// `--verbose=full`: narration in full, not fitted to 80 columns.
    pub verbose_full: bool,
    pub recover: bool,
    /// `--classroom`: the seed's slow pace, for following Paxos by hand.
    pub classroom: bool,
    /// `--phase-delay`: pause between Paxos phases in classroom mode; 0 is none.
    pub phase_delay_ms: u64,
    /// `--hold`: phases at which the node pauses its outgoing messages (classroom only).
    pub hold: BTreeSet<hold::Kind>,
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
        let hold = match args.value("--hold")? {
            None => BTreeSet::new(),
            Some(_) if !classroom => return Err("--hold needs --classroom".into()),
            Some(list) => hold::parse_phases(&list).map_err(|e| format!("--hold: {e}"))?,
        };
        // `--verbose=full` says every step in full, whatever the width of the lines.
        let mode = args.switch_mode("--verbose", "full");
        let (verbose, verbose_full) = (mode.is_some(), mode == Some(true));
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
            verbose_full,
            recover,
            classroom,
            phase_delay_ms,
            hold,
        })
    }
}

/// What the stdin thread and the Ctrl-C handler tell the event loop.
enum Local {
    Event(Event),
    Print(String),
    /// Show the `node3> ` prompt once this turn's output is out.
    Prompt,
    /// `pause`, `step`, `go`, `drop`: for the outgoing gate, not the core.
    Gate(commands::Gate),
    Stop,
}

/// What the stdin thread needs to know to talk to a person.
#[derive(Clone)]
struct Console {
    interactive: bool,
    id: NodeId,
    nodes: usize,
    prompt: Prompt,
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
    let mut core = Core::restore(params, opened.ledger, opened.records);
    let trace = open_trace(&dir, id)?;
    let mut store = opened.store;
    compact(&mut store, &core);
    // Peers vouch that this disk is not older than what they saw from it (a restored copy).
    core.check_start(opts.recover);
    let console = Console {
        interactive: io::stdin().is_terminal(),
        id,
        nodes: config.nodes(),
        prompt: Prompt::default(),
    };
    let prompt = console.prompt.clone();
    banner(&core, &config, &opts, console.interactive);
    let local_rx = spawn_local_inputs(stdin, console)?;
    EventLoop {
        compact_at: COMPACT_BYTES.max(2 * store.wal_bytes()),
        core,
        store,
        transport,
        trace,
        clock: Clock::new(),
        prompt: false,
        full: opts.verbose_full,
        shown: prompt,
        gate: Gate::new(opts.hold.clone()),
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
        rng_seed: rand::random(),
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

/// Who, where and in which mode, in lines of at most 80 columns.
fn banner(core: &Core, config: &Config, opts: &NodeOptions, interactive: bool) {
    let l = core.ledger();
    let (id, nodes) = (core.id(), config.nodes());
    let head = format!("node {id} of {nodes} listening on {}", config.addrs[id]);
    let data = opts.data.display().to_string();
    // Long paths are elided in the middle: both ends say the most about a path.
    let room = 80usize
        .saturating_sub(head.chars().count() + ", data ".len())
        .max(20);
    let lines = [
        console::elide(&format!("{head}, data {}", console::elide(&data, room)), 80),
        format!(
            "depth {}, head {}, balance {}",
            l.depth,
            l.head.short(),
            l.balances[id]
        ),
        mode_line(opts),
    ];
    let mut out = io::stdout().lock();
    for line in lines {
        // Written, not println!: a closed stdout must not panic the node.
        let _ = writeln!(out, "{line}");
    }
    if interactive {
        let _ = writeln!(out, "{}", commands::HELP);
    }
}

/// `mode: classroom (a full round per block), phase delay 2 s, hold at prepare, verbose`.
fn mode_line(opts: &NodeOptions) -> String {
    let mut parts = vec![match opts.classroom {
        true => "classroom (a full round per block)".to_string(),
        false => "Multi-Paxos (a leader keeps its ballot)".to_string(),
    }];
    if opts.phase_delay_ms > 0 {
        parts.push(format!(
            "phase delay {}",
            human_duration(opts.phase_delay_ms)
        ));
    }
    if !opts.hold.is_empty() {
        let kinds: Vec<&str> = opts.hold.iter().map(|k| k.name()).collect();
        parts.push(format!("hold at {}", kinds.join(",")));
    }
    if opts.verbose {
        parts.push("verbose".to_string());
    }
    console::elide(&format!("mode: {}", parts.join(", ")), 80)
}

/// `500 ms`, `2 s`, `1.5 s`.
fn human_duration(ms: u64) -> String {
    match (ms < 1000, ms % 1000) {
        (true, _) => format!("{ms} ms"),
        (false, 0) => format!("{} s", ms / 1000),
        (false, rest) => format!(
            "{}.{} s",
            ms / 1000,
            format!("{rest:03}").trim_end_matches('0')
        ),
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
    clock: Clock,
    compact_at: u64,
    /// Whether to show the prompt after this turn's output.
    prompt: bool,
    /// Narrate in full rather than within 80 columns (`--verbose=full`).
    full: bool,
    /// The prompt on screen, shared with the stdin thread.
    shown: Prompt,
    /// Holds and drops outgoing messages on request (`pause`, `drop`, `--hold`).
    gate: Gate,
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
            let mut stop = false;
            for item in first.into_iter().chain(more).take(BATCH) {
                match item {
                    Local::Stop => {
                        // What came before the stop is answered (and durable) first.
                        stop = true;
                        break;
                    }
                    item => batch.push(item),
                }
            }
            let idle = batch.is_empty() && wait == TICK;
            self.turn(&mut batch);
            if stop {
                return self.stop();
            }
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
        let now = self.clock.now(self.gate.paused());
        let mut open = self.core.open_turn(now);
        // pause/step/go/drop act on the shell's gate, after the core's turn is closed.
        let mut gates = Vec::new();
        for env in std::mem::take(&mut self.own) {
            open.handle(Event::Loopback(env)); // our own vote, durable since the last turn
        }
        for item in batch.drain(..) {
            match item {
                Local::Event(e) => {
                    let state = e == Event::Command(Command::State);
                    Self::feed(&mut self.trace, &mut open, e);
                    if let Some(line) = self.gate.summary().filter(|_| state) {
                        open.print(format!("  {line}"));
                    }
                }
                Local::Print(line) => open.print(line),
                Local::Prompt => self.prompt = true,
                Local::Gate(cmd) => gates.push(cmd),
                Local::Stop => unreachable!("handled by run"),
            }
        }
        let before = open
            .core()
            .role_ballot()
            .map(|b| (b, open.core().is_leader()));
        let mut turn = open.close();
        if let Some(trace) = &mut self.trace {
            trace.role_change(trace::now_ms(), before, self.core.role_ballot(), true);
        }
        let mut say = Vec::new();
        gates
            .into_iter()
            .for_each(|cmd| self.gate_command(cmd, &mut say));
        turn.early.splice(0..0, say.into_iter().map(Action::Shell));
        let shown = self.shown.clone();
        let mut on_screen = shown.lock();
        let stdout = io::stdout();
        let buffered = io::BufWriter::with_capacity(1 << 16, stdout.lock());
        let mut out = Screen::new(buffered, &mut on_screen);
        for action in turn.early {
            self.perform(action, &mut out); // sends pass the gate like any other
        }
        out.flush().ok();
        self.persist(&turn.writes);
        for action in turn.effects {
            self.perform(action, &mut out);
        }
        let fresh = std::mem::take(&mut self.prompt).then(|| format!("node{}> ", self.core.id()));
        drop(out.finish(fresh));
        drop(on_screen);
        if let Some(trace) = &mut self.trace {
            trace.flush().ok(); // a diagnostic: losing it must not stop the node
        }
        if self.store.wal_bytes() > self.compact_at {
            compact(&mut self.store, &self.core);
            self.compact_at = COMPACT_BYTES.max(2 * self.store.wal_bytes());
        }
    }

    /// Feeds one event to the core. The trace notes receipts, severs and restores, and
    /// what became of this node's candidacy or leadership (step-downs, timeouts).
    /// Hands one event to the open turn, tracing receipts, severs and role changes.
    fn feed(trace: &mut Option<TraceWriter>, open: &mut OpenTurn, event: Event) {
        let Some(trace) = trace else {
            return open.handle(event);
        };
        let t = trace::now_ms();
        let core = open.core();
        let peer_ok = |p: &NodeId| *p != core.id() && *p < core.ledger().balances.len();
        match &event {
            Event::Message { from, env } => trace.received(t, *from, env.id, &env.msg),
            Event::Command(Command::Sever(p)) if peer_ok(p) => trace.link(t, *p, false),
            Event::Command(Command::Restore(p)) if peer_ok(p) => trace.link(t, *p, true),
            _ => {}
        }
        let before = core.role_ballot().map(|b| (b, core.is_leader()));
        open.handle(event);
        trace.role_change(t, before, open.core().role_ballot(), false);
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
            Action::Send { to, env } => self.send(&to, env, out),
            Action::Reply(reply) => drop(writeln!(out, "{}", render::reply(&reply))),
            Action::Shell(line) => drop(writeln!(out, "{line}")),
            Action::Narrate(step) => {
                let line = render::narration(&wall_clock(), self.core.id(), &step, self.full);
                drop(writeln!(out, "{line}"))
            }
            Action::ServeBlocks { to, from } => self.serve_blocks(to, from, out),
            Action::PrintChain { full } => self.print_chain(out, full),
            Action::Crash => {
                if let Some(trace) = &mut self.trace {
                    trace.crashed(trace::now_ms()).ok();
                }
                writeln!(out, "node {} crashing", self.core.id()).ok();
                out.flush().ok();
                std::process::exit(1);
            }
            Action::Fatal(why) => {
                out.flush().ok();
                eprintln!("error: {}", render::fatal(&why));
                std::process::exit(1);
            }
            Action::Loopback(env) => self.own.push(env),
            Action::Persist(_) | Action::Commit(_) | Action::Early(_) => {
                unreachable!("a write or an early effect, split off by `Turn::split`")
            }
        }
    }

    fn serve_blocks(&mut self, to: NodeId, from: u64, out: &mut impl Write) {
        match self.store.blocks(from, CHUNK_BYTES) {
            Ok(blocks) if !blocks.is_empty() => {
                let env = Envelope {
                    id: 0,
                    seq: 0,
                    depth: self.store.depth(),
                    msg: Message::Blocks { blocks },
                };
                self.send(&[to], env, out);
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

    /// Passes an envelope through the gate, which may hold or drop it; lines about that go
    /// to `out`.
    fn send(&mut self, to: &[NodeId], env: Envelope, out: &mut impl Write) {
        let mut say = Vec::new();
        let releases = self.gate.offer(to, env, &mut say);
        self.transmit(releases, &mut say);
        for line in say {
            writeln!(out, "{line}").ok();
        }
    }

    /// `pause`, `step`, `go`, `drop`. Held messages come from turns already on disk, so
    /// they may go out before this turn's writes.
    fn gate_command(&mut self, cmd: commands::Gate, say: &mut Vec<String>) {
        let releases = match cmd {
            commands::Gate::Pause => return say.push(self.gate.pause()),
            commands::Gate::Step => self.gate.step(say),
            commands::Gate::Go => self.gate.go(say),
            commands::Gate::Drop { kind, peer, count } => {
                let me = self.core.id();
                let nodes = self.transport_nodes();
                if peer == me || peer >= nodes {
                    return say.push(format!("error: no link from node {me} to node {peer}"));
                }
                return say.push(self.gate.drop_next(kind, peer, count));
            }
        };
        self.transmit(releases, say);
    }

    fn transport_nodes(&self) -> usize {
        self.core.ledger().balances.len()
    }

    /// Sends what the gate let through and records what it dropped.
    fn transmit(&mut self, releases: Vec<Release>, say: &mut Vec<String>) {
        for release in releases {
            match release {
                Release::Send(to, env) => self.send_now(&to, env),
                Release::Dropped { to, env, left } => {
                    if let Some(trace) = &mut self.trace {
                        let id = trace.next_id();
                        trace.dropped(trace::now_ms(), id, to, &env.msg);
                    }
                    let more = match left {
                        0 => String::new(),
                        n => format!(" ({n} more to drop)"),
                    };
                    say.push(format!(
                        "dropped {} to node {to}{more}",
                        hold::describe(&env.msg)
                    ));
                }
            }
        }
    }

    /// Stamps the envelope with a fresh id and the last completed sync, notes it in the
    /// trace, and sends it.
    fn send_now(&mut self, to: &[NodeId], mut env: Envelope) {
        env.seq = self.store.seq();
        if let Some(trace) = &mut self.trace {
            env.id = trace.next_id();
            trace.sent(trace::now_ms(), env.id, to, &env.msg);
        }
        self.transport.send(to, &env);
    }

    fn stop(mut self) {
        self.store.sync().ok();
        self.store.settle().ok(); // `exit` skips the store's drop, which would settle

        if let Some(trace) = &mut self.trace {
            trace.stopped(trace::now_ms()).ok();
        }
        let _ = writeln!(io::stdout(), "node {} stopped", self.core.id());
        std::process::exit(0);
    }
}

/// The core's time, in milliseconds. It stands still while the gate is paused: to the core a
/// pause is a slow network, so a candidate whose prepare is held does not time out while a
/// person steps through its round. Timers only ever affect liveness, never safety.
struct Clock {
    ms: u64,
    last: Instant,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            ms: 0,
            last: Instant::now(),
        }
    }

    fn now(&mut self, paused: bool) -> u64 {
        let at = Instant::now();
        if !paused {
            self.ms += at.duration_since(self.last).as_millis() as u64;
            // Keep the sub-millisecond rest for the next turn.
            let rest = at.duration_since(self.last).subsec_nanos() % 1_000_000;
            self.last = at - Duration::from_nanos(rest.into());
        } else {
            self.last = at;
        }
        self.ms
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
        console.prompt.answered();
        let parsed = line.and_then(|l| commands::parse(&l));
        let sent = match parsed {
            Ok(Parsed::Command(c)) => tx.send(Local::Event(Event::Command(c))).is_ok(),
            Ok(Parsed::Gate(g)) => tx.send(Local::Gate(g)).is_ok(),
            Ok(Parsed::Help) => say(commands::HELP.to_string()),
            Ok(Parsed::Quit) => {
                // Stops the node like Ctrl-C; nothing more to read.
                let _ = tx.send(Local::Stop);
                false
            }
            Ok(Parsed::Nothing) => true,
            Ok(Parsed::Ask(bare)) => match ask_args(&mut stdin, bare, &console) {
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
    console: &Console,
) -> Option<Result<Command, String>> {
    let mut answers = Vec::new();
    for (i, prompt) in bare.prompts().iter().enumerate() {
        if console.interactive {
            console.prompt.show(&format!("{prompt}: "));
        }
        let line = stdin.next_line();
        console.prompt.answered();
        let answer = match line? {
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
