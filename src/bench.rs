//! `benmo bench`: end-to-end figures from real node processes, and storage figures.
//!
//! The default mode starts a cluster of `benmo node` processes on loopback (fsync on, as in
//! production) and drives them through their stdin, exactly as a user or script would:
//!
//! - *closed loop* (`--clients`, `closed.rs`): C clients each keeping one transfer
//!   outstanding, dealt over the followers first, with this machine's floor (fsync and
//!   loopback round trip) measured beside each row;
//! - *unloaded*: one transfer at a time at a node that is not the leader, after warm-up,
//!   so the figure is the latency of one full round (forward, accept, decide, commit);
//! - *saturated*: every node submits its share as fast as its stdin takes it.
//!
//! Throughput is transfers divided by the time until every node holds every transfer (all
//! report the same head and transfer count); in a closed loop, until the last commit. Latency runs from the moment a line is handed
//! to the node's stdin to the `committed` line at that node. At the end it checks that each
//! submitted txid committed exactly once at its origin, that every node counts them all,
//! and runs `benmo audit`; any failure makes the command fail.
//!
//! `--crash-loop R` (`crash.rs`) kills every node at once under closed-loop load R times and
//! checks that every transfer that printed `committed` is on every chain at its depth.
//!
//! `--append` measures storage alone: appending a block at depth ~10 and ~100,000, and
//! reopening a chain of 1,000,000 transfers (in-process `Store::open` and a full node start).
//!
//! The table format is meant to stay stable so that figures can be compared across commits.

use crate::cli::{self, Args};
use crate::config;
use crate::ledger::{Block, Ledger, Transfer, TxId};
use crate::render::{self, Heard};
use crate::storage::Store;
use crate::testing::cluster::{LocalCluster, Status};
use crossbeam_channel::{Receiver, Sender};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ChildStdin;
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod closed;
mod crash;

use closed::{Floor, Stop};

/// Every account's opening balance: large enough that funds never limit a run.
const BALANCE: u64 = 1_000_000_000;
/// Lines per write in the saturated scenario: big enough to keep syscalls rare, small
/// enough that one submission time stands for a short stretch of transfers.
const CHUNK_LINES: usize = 256;
/// How long the nodes may stay silent, or fail to converge, before the benchmark gives up.
const PATIENCE: Duration = Duration::from_secs(60);
/// Status polling interval while waiting for convergence; bounds the throughput error.
const POLL: Duration = Duration::from_millis(10);

/// The flags of `benmo bench` (see `cli::BENCH_HELP`).
#[derive(Debug, PartialEq)]
pub struct Options {
    nodes: usize,
    transfers: u64,
    unloaded: u64,
    /// The closed-loop concurrencies, each run for `duration`.
    clients: Vec<usize>,
    duration: Duration,
    /// Rounds of kill -9 of every node at once under closed-loop load (0: off).
    crash_loop: u32,
    data: Option<PathBuf>,
    base_port: Option<u16>,
    append: bool,
}

/// The default closed-loop concurrencies, and the one the crash loop uses.
const DEFAULT_CLIENTS: [usize; 3] = [1, 16, 64];
const CRASH_CLIENTS: usize = 16;

impl Options {
    /// Errors are usage errors.
    pub fn parse(mut args: Args) -> Result<Options, String> {
        let crash_loop = args.parsed("--crash-loop", 0)?;
        let clients = match args.value("--clients")? {
            Some(list) => parse_clients(&list)?,
            None if crash_loop > 0 => vec![CRASH_CLIENTS],
            None => DEFAULT_CLIENTS.to_vec(),
        };
        let duration = match args.value("--duration")? {
            // A unit is required: a bare `3` would be 3 ms, surely not what was meant.
            Some(d) => cli::parse_duration(&d)
                .filter(|&ms| ms > 0 && d.ends_with('s'))
                .ok_or(format!(
                    "--duration: expected a time with its unit, such as 5s or 500ms, not '{d}'"
                ))?,
            None => 5_000,
        };
        let opts = Options {
            nodes: args.parsed("--nodes", 5)?,
            transfers: args.parsed("--transfers", 1_000_000)?,
            unloaded: args.parsed("--unloaded", 500)?,
            clients,
            duration: Duration::from_millis(duration),
            crash_loop,
            data: args.value("--data")?.map(PathBuf::from),
            base_port: args
                .value("--base-port")?
                .map(|p| p.parse())
                .transpose()
                .map_err(|_| "--base-port: expected a port number".to_string())?,
            append: args.switch("--append"),
        };
        args.rest(0)?;
        if opts.nodes < 3 || opts.nodes.is_multiple_of(2) {
            return Err("--nodes must be odd and at least 3 (transfers need two accounts and a quorum worth measuring)".to_string());
        }
        if opts.crash_loop > 0 && opts.clients.len() != 1 {
            return Err(
                "--crash-loop runs one concurrency: give --clients C with one number".to_string(),
            );
        }
        Ok(opts)
    }
}

/// `1,16,64`: positive client counts, each at most `MAX_CLIENTS`.
fn parse_clients(list: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("--clients: expected counts such as 1,16,64, not '{list}'");
    let counts: Vec<usize> = list
        .split(',')
        .map(|c| c.trim().parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if counts.iter().any(|&c| c == 0 || c > MAX_CLIENTS) {
        return Err(format!("--clients: each count must be 1 to {MAX_CLIENTS}"));
    }
    Ok(counts)
}

/// More clients than this only queue behind one another in five stdin pipes.
const MAX_CLIENTS: usize = 4096;

pub fn run(opts: &Options) -> Result<(), String> {
    let scratch = Scratch::new(opts.data.clone())?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find benmo itself: {e}"))?;
    if opts.append {
        return storage_bench(&exe, scratch.path());
    }
    if opts.crash_loop > 0 {
        return crash::crash_loop(opts, &exe, scratch.path());
    }
    cluster_bench(opts, &exe, scratch.path())
}

// ----- the data directory -----

/// The benchmark's data dir: a fresh temp dir removed on drop, or the user's `--data`
/// (which must be empty or absent, since the benchmark initialises it) kept for inspection.
struct Scratch {
    path: PathBuf,
    remove: bool,
}

impl Scratch {
    fn new(given: Option<PathBuf>) -> Result<Scratch, String> {
        if let Some(path) = given {
            let used = fs::read_dir(&path).is_ok_and(|mut d| d.next().is_some());
            if used {
                return Err(format!(
                    "--data {} is not empty; the benchmark needs a fresh dir",
                    path.display()
                ));
            }
            return Ok(Scratch {
                path,
                remove: false,
            });
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("benmo-bench-{}-{nanos}", std::process::id());
        Ok(Scratch {
            path: std::env::temp_dir().join(name),
            remove: true,
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.remove {
            fs::remove_dir_all(&self.path).ok();
        }
    }
}

// ----- the cluster benchmark -----

fn cluster_bench(opts: &Options, exe: &Path, data: &Path) -> Result<(), String> {
    let port = opts
        .base_port
        .unwrap_or_else(|| crate::testing::cluster::free_ports(opts.nodes));
    let mut cluster = LocalCluster::init_on_port(exe, data, opts.nodes, BALANCE, port)?;
    cluster.start_all()?;
    println!(
        "benmo bench: {} nodes, fsync on, {} transfers",
        opts.nodes, opts.transfers
    );
    let mut bench = Bench::attach(&mut cluster);
    bench.warm_up()?;
    bench.closed_loops(&opts.clients, opts.duration, data)?;
    println!("{HEADER}");
    let leader = bench.leader()?;
    let origin = (leader + 1) % opts.nodes;
    print_row(&bench.unloaded(origin, opts.unloaded)?);
    print_row(&bench.saturated(opts.transfers)?);
    let rss = bench.pids.iter().map(|&p| rss_kib(p)).max().flatten();
    bench.check_exactly_once()?;
    drop(bench);
    (0..opts.nodes).for_each(|i| cluster.kill(i));
    let changes = proposer_changes(data, opts.nodes)?;
    let rss = rss.map_or("unknown".to_string(), |k| {
        format!("{:.1}", k as f64 / 1024.0)
    });
    println!("unloaded at node {origin}, leader {leader}; proposer changes {changes}; max node RSS {rss} MB");
    let audit = cluster.audit().map_err(|e| format!("audit failed:\n{e}"))?;
    println!("audit: {audit}");
    Ok(())
}

/// How often the proposer changes along node 0's chain: each change is a new leader, and
/// under load a change means a leader was too busy to send heartbeats in time.
fn proposer_changes(data: &Path, nodes: usize) -> Result<u64, String> {
    let (mut changes, mut last) = (0, None);
    Store::verify(&config::node_dir(data, 0), nodes, BALANCE, None, |b| {
        changes += u64::from(last.is_some_and(|p| p != b.proposer));
        last = Some(b.proposer);
    })
    .map_err(|e| e.to_string())?;
    Ok(changes)
}

/// One row of the table.
struct Row {
    name: &'static str,
    transfers: u64,
    seconds: f64,
    /// Submission-to-commit latencies, sorted.
    latencies: Vec<Duration>,
}

const HEADER: &str = "scenario     transfers  seconds  transfers/s   p50 ms   p99 ms   max ms";

fn print_row(r: &Row) {
    let ms = |p: f64| percentile(&r.latencies, p).as_secs_f64() * 1e3;
    println!(
        "{:<10} {:>11} {:>8.2} {:>12.0} {:>8.2} {:>8.2} {:>8.2}",
        r.name,
        r.transfers,
        r.seconds,
        r.transfers as f64 / r.seconds,
        ms(50.0),
        ms(99.0),
        ms(100.0)
    );
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Resident memory of a process in KiB, from /proc (Linux only).
fn rss_kib(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What a reader thread saw on a node's stdout, with the time it saw it.
enum Seen {
    Queued(u64),
    /// The seq, and the depth the line names.
    Committed(u64, u64),
    Status(Status),
    Error(String),
}

struct Note {
    node: usize,
    at: Instant,
    seen: Seen,
}

/// Everything the nodes have said so far, per node.
#[derive(Default)]
struct Tally {
    queued: Vec<u64>,
    /// `committed[seq]`: when that txid's `committed` line arrived. Seqs are dense from 1,
    /// so a vector beats a hash map (the benchmark shares two cores with the nodes).
    committed: Vec<Option<Instant>>,
    /// How many entries of `committed` are set.
    commits: u64,
    duplicates: Vec<u64>,
    errors: Vec<String>,
    status: Option<Status>,
}

impl Tally {
    fn commit(&mut self, seq: u64, at: Instant) {
        let i = seq as usize;
        if self.committed.len() <= i {
            self.committed.resize(i + 1, None);
        }
        match self.committed[i] {
            Some(_) => self.duplicates.push(seq),
            None => {
                self.committed[i] = Some(at);
                self.commits += 1;
            }
        }
    }

    fn committed_at(&self, seq: u64) -> Option<Instant> {
        self.committed.get(seq as usize).copied().flatten()
    }
}

/// The driver: a locked stdin and a tally per node, fed by one reader thread per node.
struct Bench {
    stdins: Vec<Arc<Mutex<ChildStdin>>>,
    pids: Vec<u32>,
    notes: Receiver<Note>,
    tally: Vec<Tally>,
    /// Transfers submitted so far at each node; the k-th gets seq k.
    submitted: Vec<u64>,
    /// Every `committed` line as (TXID, depth), when asked for (the crash loop).
    commit_log: Option<Vec<(TxId, u64)>>,
}

impl Bench {
    /// Takes over every node's stdin and stdout.
    fn attach(cluster: &mut LocalCluster) -> Bench {
        let (tx, notes) = crossbeam_channel::unbounded();
        let n = cluster.nodes.len();
        let mut stdins = Vec::with_capacity(n);
        let mut pids = Vec::with_capacity(n);
        for id in 0..n {
            let node = cluster.node(id);
            pids.push(node.pid());
            let stdin = node.take_stdin().expect("a freshly started node has stdin");
            stdins.push(Arc::new(Mutex::new(stdin)));
            spawn_reader(id, node.line_stream(), tx.clone());
        }
        Bench {
            stdins,
            pids,
            notes,
            tally: (0..n).map(|_| Tally::default()).collect(),
            submitted: vec![0; n],
            commit_log: None,
        }
    }

    fn n(&self) -> usize {
        self.stdins.len()
    }

    fn write(&self, node: usize, text: &str) -> Result<(), String> {
        let mut stdin = self.stdins[node].lock().expect("no writer panics");
        stdin
            .write_all(text.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("node {node} stopped reading stdin: {e}"))
    }

    fn transfer_line(&self, node: usize, k: u64) -> String {
        // Spread credits over the other accounts; amount 1 so funds never run out.
        let credit = (node + 1 + (k as usize % (self.n() - 1))) % self.n();
        format!("moneyTransfer {node} {credit} 1\n")
    }

    /// Records one note; fails on any `error:` line, since the benchmark sends none that
    /// should be refused.
    fn record(&mut self, note: Note) -> Result<(), String> {
        let t = &mut self.tally[note.node];
        match note.seen {
            Seen::Queued(seq) => t.queued.push(seq),
            Seen::Committed(seq, depth) => {
                t.commit(seq, note.at);
                if let Some(log) = &mut self.commit_log {
                    log.push((
                        TxId {
                            node: note.node,
                            seq,
                        },
                        depth,
                    ));
                }
            }
            Seen::Status(s) => t.status = Some(s),
            Seen::Error(e) => {
                t.errors.push(e.clone());
                return Err(format!("node {} said: {e}", note.node));
            }
        }
        Ok(())
    }

    /// Handles notes until `done` holds; fails when the nodes say nothing for `PATIENCE`
    /// (an idle limit, not a total one, so a long run is never cut short while it moves).
    fn wait(&mut self, mut done: impl FnMut(&Bench) -> bool, what: &str) -> Result<(), String> {
        while !done(self) {
            if let Some(note) = self.next_note(PATIENCE, what)? {
                self.record(note)?;
            }
        }
        Ok(())
    }

    /// The next note, or None if `wait` passes first and is shorter than `PATIENCE`.
    fn next_note(&mut self, wait: Duration, what: &str) -> Result<Option<Note>, String> {
        match self.notes.recv_timeout(wait.min(PATIENCE)) {
            Ok(note) => Ok(Some(note)),
            Err(_) if wait < PATIENCE => Ok(None),
            Err(_) => {
                let progress: Vec<String> = (0..self.n())
                    .map(|i| format!("node {i} {}/{}", self.tally[i].commits, self.submitted[i]))
                    .collect();
                Err(format!(
                    "no progress for {PATIENCE:?} waiting for {what}; committed/submitted: {}",
                    progress.join(", ")
                ))
            }
        }
    }

    fn all_committed(&self) -> bool {
        (0..self.n()).all(|i| self.tally[i].commits >= self.submitted[i])
    }

    /// One `status` round: every node's first status line, freshly asked.
    fn statuses(&mut self) -> Result<Vec<Status>, String> {
        for i in 0..self.n() {
            self.tally[i].status = None;
            self.write(i, "status\n")?;
        }
        self.wait(|b| b.tally.iter().all(|t| t.status.is_some()), "status")?;
        Ok(self.tally.iter().filter_map(|t| t.status.clone()).collect())
    }

    /// Polls until every node holds every submitted transfer with the same head.
    fn converge(&mut self) -> Result<Instant, String> {
        let total: u64 = self.submitted.iter().sum();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let all = self.statuses()?;
            let head = &all[0].head;
            if all.iter().all(|s| s.transfers == total && &s.head == head) {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nodes did not converge on {total} transfers: {all:?}"
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// One transfer at every node, all committed: elects a leader and brings every link up.
    fn warm_up(&mut self) -> Result<(), String> {
        for i in 0..self.n() {
            self.submitted[i] += 1;
            self.write(i, &self.transfer_line(i, 0))?;
        }
        self.wait(Bench::all_committed, "the warm-up transfers")?;
        self.converge().map(drop)
    }

    /// The leader every node agrees on.
    fn leader(&mut self) -> Result<usize, String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let all = self.statuses()?;
            if let Some(l) = all[0]
                .leader
                .filter(|&l| all.iter().all(|s| s.leader == Some(l)))
            {
                return Ok(l);
            }
            if Instant::now() > deadline {
                return Err(format!("the nodes do not agree on a leader: {all:?}"));
            }
            std::thread::sleep(POLL);
        }
    }

    /// One closed loop per entry of `counts`, each `length` long, printed as a table with the
    /// floor measured just before it; every node holds every transfer between rows.
    fn closed_loops(
        &mut self,
        counts: &[usize],
        length: Duration,
        dir: &Path,
    ) -> Result<(), String> {
        let mut leaders = Vec::new();
        let mut rows = Vec::new();
        for &c in counts {
            let leader = self.leader()?;
            let floor = Floor::measure(dir)?;
            let at = closed::placement(self.n(), leader, c);
            let run = self.closed_loop(&at, length, Stop::Drain)?;
            rows.push(closed::closed_row(c, &run, &floor));
            leaders.push(leader.to_string());
            self.converge()?;
        }
        leaders.dedup();
        println!(
            "closed loop, {:.1} s each: C clients in all, one transfer outstanding each, at the followers first (leader {})",
            length.as_secs_f64(),
            leaders.join(", then ")
        );
        println!("{}", closed::CLOSED_HEADER);
        rows.iter().for_each(|r| println!("{r}"));
        println!("{}", closed::FLOOR_NOTE);
        Ok(())
    }

    /// `count` transfers at `node`, each submitted once the previous one committed.
    fn unloaded(&mut self, node: usize, count: u64) -> Result<Row, String> {
        let start = Instant::now();
        let mut latencies = Vec::with_capacity(count as usize);
        for _ in 0..count {
            self.submitted[node] += 1;
            let seq = self.submitted[node];
            let sent = Instant::now();
            self.write(node, &self.transfer_line(node, seq))?;
            self.wait(
                |b| b.tally[node].committed_at(seq).is_some(),
                "an unloaded commit",
            )?;
            latencies.push(self.tally[node].committed_at(seq).expect("waited") - sent);
        }
        let end = self.converge()?;
        latencies.sort();
        Ok(Row {
            name: "unloaded",
            transfers: count,
            seconds: (end - start).as_secs_f64(),
            latencies,
        })
    }

    /// `total` transfers split over every node, each written as fast as stdin takes it.
    fn saturated(&mut self, total: u64) -> Result<Row, String> {
        let n = self.n() as u64;
        let first: Vec<u64> = self.submitted.iter().map(|s| s + 1).collect();
        let go = Arc::new(Barrier::new(self.n() + 1));
        let mut writers = Vec::new();
        for (i, &from) in first.iter().enumerate() {
            let count = total / n + u64::from((i as u64) < total % n);
            let text: Vec<String> = (0..count)
                .map(|k| self.transfer_line(i, from + k))
                .collect();
            self.submitted[i] += count;
            writers.push(spawn_writer(self.stdins[i].clone(), text, go.clone()));
        }
        go.wait();
        let start = Instant::now();
        self.wait(Bench::all_committed, "the saturated commits")?;
        let end = self.converge()?;
        let mut latencies = Vec::with_capacity(total as usize);
        for (i, w) in writers.into_iter().enumerate() {
            let chunks = w.join().map_err(|_| "a writer thread panicked")??;
            let tally = &self.tally[i];
            for seq in first[i]..=self.submitted[i] {
                let chunk = ((seq - first[i]) as usize) / CHUNK_LINES;
                let at = tally.committed_at(seq).ok_or("a commit went missing")?;
                latencies.push(at - chunks[chunk]);
            }
        }
        latencies.sort();
        Ok(Row {
            name: "saturated",
            transfers: total,
            seconds: (end - start).as_secs_f64(),
            latencies,
        })
    }

    /// Every submitted txid was queued and committed exactly once at its origin, and every
    /// node counts exactly the submitted total.
    fn check_exactly_once(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        for (i, t) in self.tally.iter().enumerate() {
            let want = self.submitted[i];
            let queued_in_order = t.queued.iter().copied().eq(1..=want);
            let all_in_range = t.committed.len() as u64 <= want + 1;
            if !queued_in_order || !all_in_range || t.commits != want {
                problems.push(format!(
                    "node {i}: submitted {want}, queued {}, committed {}",
                    t.queued.len(),
                    t.commits
                ));
            }
            if !t.duplicates.is_empty() {
                problems.push(format!("node {i}: committed twice: {:?}", t.duplicates));
            }
        }
        let total: u64 = self.submitted.iter().sum();
        for s in self.statuses()? {
            if s.transfers != total {
                problems.push(format!("a node holds {} of {total} transfers", s.transfers));
            }
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(format!(
                "lost or duplicated transfers:\n{}",
                problems.join("\n")
            )),
        }
    }
}

/// Timestamps and parses every line of one node's stdout.
fn spawn_reader(node: usize, lines: Receiver<String>, notes: Sender<Note>) {
    std::thread::spawn(move || {
        for line in lines {
            let at = Instant::now();
            if let Some(seen) = parse_line(&line) {
                if notes.send(Note { node, at, seen }).is_err() {
                    return;
                }
            }
        }
    });
}

/// What the benchmark acts on in a node's line, read through `render::parse`.
fn parse_line(line: &str) -> Option<Seen> {
    Some(match render::parse(line)? {
        Heard::Queued(t) => Seen::Queued(t.id.seq),
        Heard::Committed { transfer, depth } => Seen::Committed(transfer.id.seq, depth),
        Heard::Error(_) => Seen::Error(line.to_string()),
        Heard::Status(s) => Seen::Status(s),
    })
}

/// Writes `lines` in chunks once `go` opens, returning when each chunk's write began.
fn spawn_writer(
    stdin: Arc<Mutex<ChildStdin>>,
    lines: Vec<String>,
    go: Arc<Barrier>,
) -> JoinHandle<Result<Vec<Instant>, String>> {
    std::thread::spawn(move || {
        let chunks: Vec<String> = lines.chunks(CHUNK_LINES).map(|c| c.concat()).collect();
        go.wait();
        let mut began = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            began.push(Instant::now());
            let mut pipe = stdin.lock().expect("no writer panics");
            pipe.write_all(chunk.as_bytes())
                .and_then(|()| pipe.flush())
                .map_err(|e| format!("a node stopped reading stdin: {e}"))?;
        }
        Ok(began)
    })
}

// ----- the storage benchmark -----

/// Accounts in the storage benchmark's cluster (only one node ever runs at a time).
const STORE_NODES: usize = 3;
/// Appends timed at each depth.
const APPENDS: usize = 300;
/// Transfers in each timed block.
const APPEND_TRANSFERS: usize = 100;
/// Repetitions of each restart measurement.
const RESTARTS: usize = 3;

/// The chains, each in its own node dir: (node, blocks, transfers per block).
const SHALLOW: (usize, u64, usize) = (2, 10, 10);
const DEEP: (usize, u64, usize) = (0, 100_000, 10);
const WIDE: (usize, u64, usize) = (1, 1_000, 1_000);

fn storage_bench(exe: &Path, data: &Path) -> Result<(), String> {
    let mut cluster = LocalCluster::init(exe, data, STORE_NODES, BALANCE)?;
    let open = |(id, blocks, size): (usize, u64, usize)| -> Result<ChainWriter, String> {
        let mut w = ChainWriter::open(&config::node_dir(data, id))?;
        w.fill(blocks, size)?;
        Ok(w)
    };
    let (mut shallow, mut deep) = (open(SHALLOW)?, open(DEEP)?);
    drop(open(WIDE)?);
    let (at_10, at_100k) = timed_appends(&mut shallow, &mut deep)?;
    drop((shallow, deep));
    println!("benmo bench --append: storage alone, fsync on");
    println!("measure                                        median ms   p99 ms   RSS MB");
    let append = format!("append {APPEND_TRANSFERS}-transfer block");
    print_ms(&format!("{append} at depth ~10"), &at_10, None);
    print_ms(&format!("{append} at depth ~100000"), &at_100k, None);
    for (id, shape) in [
        (DEEP.0, "100300 blocks, 1.03M"),
        (WIDE.0, "1000 blocks, 1M"),
    ] {
        let opens = repeat(|| time_open(&config::node_dir(data, id)))?;
        print_ms(&format!("Store::open, {shape}"), &opens, None);
        let mut rss = None;
        let starts = repeat(|| time_start(&mut cluster, id, &mut rss))?;
        print_ms(&format!("node start to banner, {shape}"), &starts, rss);
    }
    Ok(())
}

/// `APPENDS` appends to each chain, alternating, so that the disk's mood (it is shared and
/// its fsync time is bimodal here) weighs on both figures alike.
fn timed_appends(
    shallow: &mut ChainWriter,
    deep: &mut ChainWriter,
) -> Result<(Vec<Duration>, Vec<Duration>), String> {
    let (mut a, mut b) = (Vec::with_capacity(APPENDS), Vec::with_capacity(APPENDS));
    for _ in 0..APPENDS {
        a.push(shallow.timed_append()?);
        b.push(deep.timed_append()?);
    }
    Ok((sorted(a), sorted(b)))
}

fn repeat(mut f: impl FnMut() -> Result<Duration, String>) -> Result<Vec<Duration>, String> {
    (0..RESTARTS)
        .map(|_| f())
        .collect::<Result<_, _>>()
        .map(sorted)
}

fn sorted(mut v: Vec<Duration>) -> Vec<Duration> {
    v.sort();
    v
}

fn print_ms(what: &str, sorted: &[Duration], rss: Option<u64>) {
    let ms = |p| percentile(sorted, p).as_secs_f64() * 1e3;
    let rss = rss.map_or(String::new(), |k| format!("{:>8.1}", k as f64 / 1024.0));
    println!("{what:<46} {:>9.2} {:>8.2} {rss}", ms(50.0), ms(99.0));
}

/// In-process `Store::open` (page cache warm: the chain was just written or read).
fn time_open(dir: &Path) -> Result<Duration, String> {
    let started = Instant::now();
    let opened = Store::open(dir, STORE_NODES, BALANCE, None).map_err(|e| e.to_string())?;
    let took = started.elapsed();
    if opened.ledger.transfers < 1_000_000 {
        return Err(format!(
            "{} holds only {} transfers",
            dir.display(),
            opened.ledger.transfers
        ));
    }
    Ok(took)
}

/// A full `benmo node` start until its banner; notes the largest RSS seen just after.
fn time_start(
    cluster: &mut LocalCluster,
    id: usize,
    rss: &mut Option<u64>,
) -> Result<Duration, String> {
    let started = Instant::now();
    cluster.start(id)?;
    let took = started.elapsed();
    *rss = (*rss).max(rss_kib(cluster.node(id).pid()));
    cluster.kill(id);
    Ok(took)
}

/// Writes a chain straight into a node's store, bypassing consensus.
struct ChainWriter {
    store: Store,
    ledger: Ledger,
}

impl ChainWriter {
    fn open(dir: &Path) -> Result<ChainWriter, String> {
        let opened = Store::open(dir, STORE_NODES, BALANCE, None).map_err(|e| e.to_string())?;
        Ok(ChainWriter {
            store: opened.store,
            ledger: opened.ledger,
        })
    }

    /// The next block: `size` transfers of 1, round-robin over the accounts.
    fn next_block(&self, size: usize) -> Block {
        let mut next_seq = self.ledger.next_seq.clone();
        let transfers: Vec<Transfer> = (0..size)
            .map(|j| {
                let node = j % STORE_NODES;
                next_seq[node] += 1;
                Transfer {
                    id: TxId {
                        node,
                        seq: next_seq[node] - 1,
                    },
                    credit: (node + 1) % STORE_NODES,
                    amount: 1,
                }
            })
            .collect();
        self.ledger.seal(0, &transfers)
    }

    fn append(&mut self, block: &Block) -> Result<(), String> {
        self.ledger.apply(block).map_err(|e| e.to_string())?;
        self.store.commit(block).map_err(|e| e.to_string())
    }

    fn sync(&mut self) -> Result<(), String> {
        self.store.sync().map_err(|e| e.to_string())
    }

    /// Appends blocks of `size` up to `depth`, syncing every 1000 blocks (fast to build).
    fn fill(&mut self, depth: u64, size: usize) -> Result<(), String> {
        while self.ledger.depth < depth {
            let block = self.next_block(size);
            self.append(&block)?;
            if self.ledger.depth.is_multiple_of(1000) {
                self.sync()?;
            }
        }
        self.sync()
    }

    /// One block appended and synced, as a node commits it; times only the store's part.
    fn timed_append(&mut self) -> Result<Duration, String> {
        let block = self.next_block(APPEND_TRANSFERS);
        self.ledger.apply(&block).map_err(|e| e.to_string())?;
        let started = Instant::now();
        self.store.commit(&block).map_err(|e| e.to_string())?;
        self.sync()?;
        Ok(started.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&v[..1], 99.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    fn parse(words: &[&str]) -> Result<Options, String> {
        Options::parse(Args::new(words.iter().map(|w| w.to_string()).collect()))
    }

    #[test]
    fn clients_and_duration_are_parsed() {
        let default = parse(&[]).unwrap();
        assert_eq!(default.clients, [1, 16, 64]);
        assert_eq!(default.duration, Duration::from_secs(5));
        assert_eq!(default.crash_loop, 0);
        let o = parse(&["--clients", "1, 16,64", "--duration=500ms"]).unwrap();
        assert_eq!(
            (o.clients, o.duration),
            (vec![1, 16, 64], Duration::from_millis(500))
        );
        assert_eq!(parse(&["--clients=8"]).unwrap().clients, [8]);
        let crash = parse(&["--crash-loop", "20"]).unwrap();
        assert_eq!((crash.crash_loop, crash.clients), (20, vec![16]));
        assert_eq!(
            parse(&["--crash-loop", "3", "--clients", "4"])
                .unwrap()
                .clients,
            [4]
        );
    }

    #[test]
    fn bad_clients_and_durations_are_usage_errors() {
        for (words, says) in [
            (
                &["--clients", "1,,64"][..],
                "expected counts such as 1,16,64",
            ),
            (&["--clients", "0"], "each count must be 1 to"),
            (&["--clients", "5000"], "each count must be 1 to"),
            (&["--clients", "-3"], "expected counts"),
            (&["--clients"], "needs a value"),
            (&["--duration", "0s"], "--duration: expected a time"),
            (&["--duration", "soon"], "--duration: expected a time"),
            (
                &["--duration", "3"],
                "--duration: expected a time with its unit",
            ),
            (
                &["--crash-loop", "2", "--clients", "1,16"],
                "one concurrency",
            ),
            (&["--crash-loop", "many"], "--crash-loop: cannot read"),
            (&["--client", "3"], "unknown flag --client"),
        ] {
            let err = parse(words).unwrap_err();
            assert!(err.contains(says), "{words:?}: {err}");
        }
    }

    #[test]
    fn node_lines_are_recognised() {
        assert!(matches!(
            parse_line("queued 2.17 2 0 1"),
            Some(Seen::Queued(17))
        ));
        assert!(matches!(
            parse_line("committed 2.17 2 0 1 depth 9"),
            Some(Seen::Committed(17, 9))
        ));
        assert!(matches!(
            parse_line("error: insufficient funds"),
            Some(Seen::Error(_))
        ));
        assert!(parse_line("link 1 up").is_none());
        let status = "node 1 depth 3 head ab ballot 1.0 leader 0 role follower queue 0 transfers 9";
        assert!(matches!(parse_line(status), Some(Seen::Status(s)) if s.transfers == 9));
    }

    #[test]
    fn built_chains_verify() {
        let dir = tempfile::tempdir().unwrap();
        Store::create(dir.path()).unwrap();
        let mut w = ChainWriter::open(dir.path()).unwrap();
        w.fill(5, 7).unwrap();
        drop(w);
        let opened = Store::open(dir.path(), STORE_NODES, BALANCE, None).unwrap();
        assert_eq!((opened.ledger.depth, opened.ledger.transfers), (5, 35));
    }
}
