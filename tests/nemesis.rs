//! Jepsen's bank test against real `benmo node` processes on loopback.
//!
//! Clients submit random transfers at every node through stdin while a seeded nemesis kills
//! nodes (SIGKILL and `crashNode`), restarts them, and severs and restores links (single
//! pairs and majority/minority splits). At most a minority is ever down; partitions are
//! arbitrary. Afterwards everything is healed and the histories are checked:
//!
//! - every acknowledged transfer (`queued TXID ...`) is in every chain exactly once;
//! - every other transfer in the chain is one whose reply was lost to a kill (indeterminate),
//!   matched in submission order, so a rejected transfer never commits;
//! - each origin's sequence numbers are 1, 2, 3, ... with no gap or repeat;
//! - balances are the opening balances plus the committed transfers, none negative;
//! - every chain is identical and `benmo audit` passes.
//!
//! `BENMO_NEMESIS_SECS` (default 50) sets the length of the faulty period and
//! `BENMO_NEMESIS_SEED` replays a run; the seed is printed first. Run with `--nocapture` to see
//! the timeline and the summary. A failed run keeps its data dir and prints where it is.

use benmo::testing::cluster::LocalCluster;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_benmo");
const NODES: usize = 5;
const BALANCE: u64 = 100;
/// At most this many nodes down at once: a minority.
const MAX_DOWN: usize = (NODES - 1) / 2;
/// Generous bound on convergence after the heal (a noisy 2-core machine).
const HEAL_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// Sent; no reply yet.
    Pending,
    /// `queued TXID ...`
    Acked(String),
    /// `error: ...`
    Rejected(String),
    /// The node was killed before replying: may commit, at most once.
    Indeterminate,
}

#[derive(Clone, Debug)]
struct Op {
    node: usize,
    credit: usize,
    amount: u64,
    outcome: Outcome,
}

/// A transfer as a chain shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Tx {
    txid: String,
    debit: usize,
    credit: usize,
    amount: u64,
}

impl Tx {
    /// Parses `TXID DEBIT CREDIT AMOUNT` (the tail of `queued` and `  transfer` lines).
    fn parse(words: &[&str]) -> Option<Tx> {
        let [txid, debit, credit, amount, ..] = words else {
            return None;
        };
        Some(Tx {
            txid: txid.to_string(),
            debit: debit.parse().ok()?,
            credit: credit.parse().ok()?,
            amount: amount.parse().ok()?,
        })
    }

    fn seq(&self) -> u64 {
        self.txid
            .split_once('.')
            .and_then(|(_, s)| s.parse().ok())
            .unwrap_or_else(|| panic!("bad txid {}", self.txid))
    }
}

#[derive(Default, Debug)]
struct Faults {
    kills: usize,
    crashes: usize,
    restarts: usize,
    severs: usize,
    splits: usize,
    restores: usize,
    heals: usize,
}

struct Bank {
    c: LocalCluster,
    rng: StdRng,
    start: Instant,
    ops: Vec<Op>,
    /// Per node: indices of ops sent and not yet answered, oldest first.
    pending: Vec<VecDeque<usize>>,
    /// Per node: how much of the current process's `seen` has been looked at.
    cursor: Vec<usize>,
    severed: BTreeSet<(usize, usize)>,
    /// Balances if every acknowledged transfer commits: only steers the workload.
    estimate: Vec<i128>,
    faults: Faults,
    /// Distinct TXIDs that some origin reported `committed`.
    committed: BTreeSet<String>,
    last_commit: Instant,
    /// Longest time with no commit anywhere, and when (seconds into the run) it began.
    longest_stall: (Duration, f64),
    /// Since when a majority of running nodes has been fully connected, if it is now.
    healthy_since: Option<Instant>,
    /// Longest time with no commit while a majority was up and fully connected.
    longest_healthy_stall: (Duration, f64),
    timeline: Vec<String>,
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Bank {
    fn new(data: &Path, seed: u64) -> Bank {
        let mut c = LocalCluster::init(Path::new(EXE), data, NODES, BALANCE).expect("init");
        c.start_all().expect("start all nodes");
        Bank {
            c,
            rng: StdRng::seed_from_u64(seed),
            start: Instant::now(),
            ops: Vec::new(),
            pending: vec![VecDeque::new(); NODES],
            cursor: vec![0; NODES],
            severed: BTreeSet::new(),
            estimate: vec![BALANCE as i128; NODES],
            faults: Faults::default(),
            committed: BTreeSet::new(),
            last_commit: Instant::now(),
            longest_stall: (Duration::ZERO, 0.0),
            healthy_since: None,
            longest_healthy_stall: (Duration::ZERO, 0.0),
            timeline: Vec::new(),
        }
    }

    fn log(&mut self, what: String) {
        let line = format!("{:7.2}s {what}", self.start.elapsed().as_secs_f64());
        println!("{line}");
        self.timeline.push(line);
    }

    fn running(&self) -> Vec<usize> {
        (0..NODES).filter(|&i| self.c.nodes[i].is_some()).collect()
    }

    fn down(&self) -> Vec<usize> {
        (0..NODES).filter(|&i| self.c.nodes[i].is_none()).collect()
    }

    /// Reads what every running node has printed and classifies replies.
    fn pump(&mut self) {
        for id in self.running() {
            self.c.node(id).drain();
            self.absorb(id);
        }
    }

    /// Looks at node `id`'s new stdout lines.
    fn absorb(&mut self, id: usize) {
        let Some(node) = self.c.nodes[id].as_ref() else {
            return;
        };
        let new: Vec<String> = node.seen[self.cursor[id]..].to_vec();
        self.cursor[id] = node.seen.len();
        for line in new {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.first() {
                Some(&"queued") => {
                    let op = self.pending[id]
                        .pop_front()
                        .unwrap_or_else(|| panic!("node {id}: unexpected reply {line}"));
                    let tx = Tx::parse(&words[1..]).expect("queued line");
                    let o = &self.ops[op];
                    assert_eq!(
                        (tx.debit, tx.credit, tx.amount),
                        (o.node, o.credit, o.amount),
                        "node {id}: reply {line} does not match op {o:?}"
                    );
                    self.estimate[tx.debit] -= tx.amount as i128;
                    self.estimate[tx.credit] += tx.amount as i128;
                    self.ops[op].outcome = Outcome::Acked(tx.txid);
                }
                Some(&"error:") => {
                    let op = self.pending[id]
                        .pop_front()
                        .unwrap_or_else(|| panic!("node {id}: unexpected reply {line}"));
                    self.ops[op].outcome = Outcome::Rejected(line.clone());
                }
                Some(&"committed") if self.committed.insert(words[1].to_string()) => {
                    self.note_stalls();
                    self.last_commit = Instant::now();
                }
                _ => {}
            }
        }
    }

    /// Whether some majority of nodes is running with every link among them up: then the
    /// cluster ought to commit (a liveness expectation, reported but not asserted).
    fn majority_connected(&self) -> bool {
        let up = self.running();
        let connected = |a: usize, b: usize| !self.severed.contains(&pair(a, b));
        (0..1u32 << NODES)
            .filter(|m| m.count_ones() as usize > NODES / 2)
            .any(|m| {
                let set: Vec<usize> = (0..NODES).filter(|i| m & (1 << i) != 0).collect();
                set.iter().all(|i| up.contains(i))
                    && set
                        .iter()
                        .all(|&a| set.iter().all(|&b| a == b || connected(a, b)))
            })
    }

    /// Updates the longest stalls so far, as of now.
    fn note_stalls(&mut self) {
        let now = Instant::now();
        let at = |t: Instant| (t - self.start).as_secs_f64();
        let gap = now - self.last_commit;
        if gap > self.longest_stall.0 {
            self.longest_stall = (gap, at(self.last_commit));
        }
        if let Some(since) = self.healthy_since {
            let from = since.max(self.last_commit);
            if now - from > self.longest_healthy_stall.0 {
                self.longest_healthy_stall = (now - from, at(from));
            }
        }
    }

    /// Call after every change of the fault state.
    fn track_health(&mut self) {
        self.note_stalls();
        match (self.majority_connected(), self.healthy_since) {
            (true, None) => self.healthy_since = Some(Instant::now()),
            (false, Some(_)) => self.healthy_since = None,
            _ => {}
        }
    }

    /// Submits one random transfer at a random running node.
    fn submit(&mut self) {
        let running = self.running();
        let node = running[self.rng.gen_range(0..running.len())];
        self.submit_at(node);
    }

    /// Submits one random transfer at `node`: small amounts, sometimes an overdraft.
    fn submit_at(&mut self, node: usize) {
        // Half the time pay the poorest account (as acknowledged so far), so that money keeps
        // circulating instead of most transfers failing for want of funds.
        let credit = if self.rng.gen_bool(0.5) {
            (0..NODES)
                .filter(|&i| i != node)
                .min_by_key(|&i| self.estimate[i])
                .unwrap()
        } else {
            (node + self.rng.gen_range(1..NODES)) % NODES
        };
        let amount = if self.rng.gen_bool(0.05) {
            self.rng.gen_range(BALANCE..BALANCE * 5) // usually an overdraft
        } else {
            self.rng.gen_range(1..=5)
        };
        let line = format!("moneyTransfer {node} {credit} {amount}");
        if self.c.node(node).send(&line) {
            self.pending[node].push_back(self.ops.len());
            self.ops.push(Op {
                node,
                credit,
                amount,
                outcome: Outcome::Pending,
            });
        }
    }

    /// After node `id` died: reads its last lines, marks unanswered ops indeterminate.
    fn reap(&mut self, id: usize) {
        if let Some(node) = self.c.nodes[id].as_mut() {
            node.kill();
            // Lines already in the pipe still count; the reader ends at EOF.
            node.wait_for(Instant::now() + Duration::from_secs(5), |_| false);
        }
        self.absorb(id);
        for op in self.pending[id].drain(..) {
            self.ops[op].outcome = Outcome::Indeterminate;
        }
        self.c.kill(id);
        self.cursor[id] = 0;
    }

    fn kill9(&mut self, id: usize) {
        self.faults.kills += 1;
        // A burst of transfers right before the kill: some replies will be lost.
        let burst = self.rng.gen_range(1..=6);
        for _ in 0..burst {
            self.submit_at(id);
        }
        self.log(format!("kill -9 node {id} ({burst} transfers just sent)"));
        self.reap(id);
    }

    fn crash(&mut self, id: usize) {
        self.faults.crashes += 1;
        // Transfers just before `crashNode` must be answered (stdin is handled in order and
        // the node flushes before it exits); those just after are never read.
        let (before, after) = (self.rng.gen_range(0..=3), self.rng.gen_range(0..=3));
        self.log(format!(
            "crashNode at node {id} ({before} transfers before it, {after} after)"
        ));
        for _ in 0..before {
            self.submit_at(id);
        }
        self.c.node(id).send("crashNode");
        for _ in 0..after {
            self.submit_at(id);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.c.node(id).exited().is_none() {
            if Instant::now() > deadline {
                self.log(format!("node {id} ignored crashNode for 10 s; killing it"));
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.reap(id);
    }

    fn restart(&mut self, id: usize) {
        self.faults.restarts += 1;
        self.log(format!("restart node {id}"));
        self.c
            .start(id)
            .unwrap_or_else(|e| panic!("restart node {id}: {e}"));
        // A restarted node forgets its severed links: cut them again.
        let peers: Vec<usize> = self
            .severed
            .iter()
            .filter_map(|&(a, b)| (a == id).then_some(b).or((b == id).then_some(a)))
            .collect();
        for p in peers {
            self.c.node(id).send(&format!("severLink {p}"));
        }
    }

    fn link(&mut self, a: usize, b: usize, cut: bool) {
        let cmd = if cut { "severLink" } else { "restoreLink" };
        for (x, y) in [(a, b), (b, a)] {
            if let Some(n) = self.c.nodes[x].as_mut() {
                n.send(&format!("{cmd} {y}"));
            }
        }
        if cut {
            self.severed.insert(pair(a, b));
        } else {
            self.severed.remove(&pair(a, b));
        }
    }

    /// One random fault (or repair).
    fn nemesis(&mut self) {
        let down = self.down();
        let running = self.running();
        let choice = self.rng.gen_range(0..100);
        match choice {
            0..=14 if down.len() < MAX_DOWN => {
                let id = running[self.rng.gen_range(0..running.len())];
                self.kill9(id);
            }
            15..=27 if down.len() < MAX_DOWN => {
                let id = running[self.rng.gen_range(0..running.len())];
                self.crash(id);
            }
            0..=44 if !down.is_empty() => {
                let id = down[self.rng.gen_range(0..down.len())];
                self.restart(id);
            }
            0..=64 => {
                let a = self.rng.gen_range(0..NODES);
                let b = (a + self.rng.gen_range(1..NODES)) % NODES;
                self.faults.severs += 1;
                self.log(format!("sever {a} <-> {b}"));
                self.link(a, b, true);
            }
            65..=77 => {
                let mut ids: Vec<usize> = (0..NODES).collect();
                for i in (1..NODES).rev() {
                    ids.swap(i, self.rng.gen_range(0..=i));
                }
                let size = self.rng.gen_range(1..=MAX_DOWN);
                let (minority, majority) = ids.split_at(size);
                let (minority, majority) = (minority.to_vec(), majority.to_vec());
                self.faults.splits += 1;
                self.log(format!("partition {minority:?} | {majority:?}"));
                for &a in &minority {
                    for &b in &majority {
                        self.link(a, b, true);
                    }
                }
            }
            78..=89 if !self.severed.is_empty() => {
                let all: Vec<(usize, usize)> = self.severed.iter().copied().collect();
                let (a, b) = all[self.rng.gen_range(0..all.len())];
                self.faults.restores += 1;
                self.log(format!("restore {a} <-> {b}"));
                self.link(a, b, false);
            }
            _ if !self.severed.is_empty() => self.heal_links(),
            _ => {}
        }
    }

    fn heal_links(&mut self) {
        self.faults.heals += 1;
        self.log("heal all links".to_string());
        for a in 0..NODES {
            for b in a + 1..NODES {
                self.link(a, b, false);
            }
        }
    }

    /// Runs clients and the nemesis for `secs`.
    fn run(&mut self, secs: u64) {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut next_fault = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end {
            self.pump();
            if self.rng.gen_bool(0.6) {
                self.submit();
            }
            self.track_health();
            if Instant::now() >= next_fault {
                self.nemesis();
                self.track_health();
                next_fault = Instant::now() + Duration::from_millis(self.rng.gen_range(300..2500));
            }
            std::thread::sleep(Duration::from_millis(15));
        }
    }

    /// Restarts every node, restores every link, waits for every reply; returns the time
    /// from the heal until all nodes agree with empty queues.
    fn heal(&mut self) -> Duration {
        self.log("final heal: restart all, restore all links".to_string());
        let healed_at = Instant::now();
        for id in self.down() {
            self.restart(id);
        }
        self.heal_links();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.pending.iter().any(|p| !p.is_empty()) {
            assert!(
                Instant::now() < deadline,
                "replies missing 30 s after the heal: {:?}",
                self.pending
            );
            self.pump();
            std::thread::sleep(Duration::from_millis(10));
        }
        let status = self
            .c
            .converge(HEAL_DEADLINE)
            .unwrap_or_else(|e| panic!("after the heal: {e}"));
        let took = healed_at.elapsed();
        self.pump();
        self.log(format!(
            "converged in {took:.2?}: depth {} head {} transfers {}",
            status.depth, status.head, status.transfers
        ));
        took
    }

    /// `printBlockchain` at node `id`: its block and transfer lines.
    fn chain(&mut self, id: usize) -> Vec<String> {
        let node = self.c.node(id);
        node.drain();
        let from = node.seen.len();
        node.send("printBlockchain");
        node.wait_for(Instant::now() + Duration::from_secs(30), |l| {
            l.starts_with("chain depth ")
        })
        .unwrap_or_else(|| panic!("node {id}: printBlockchain did not finish"));
        node.seen[from..]
            .iter()
            .filter(|l| l.starts_with("block ") || l.starts_with("  transfer "))
            .cloned()
            .collect()
    }

    fn balances(&mut self, id: usize) -> Vec<i128> {
        let node = self.c.node(id);
        node.send("printBalances");
        (0..NODES)
            .map(|i| {
                let l = node
                    .wait_for(Instant::now() + Duration::from_secs(30), |l| {
                        l.starts_with("balance ")
                    })
                    .expect("balance line");
                let w: Vec<&str> = l.split_whitespace().collect();
                assert_eq!(w[1], i.to_string(), "{l}");
                w[2].parse().unwrap()
            })
            .collect()
    }

    /// The checks; returns the number of committed transfers.
    fn check(&mut self) -> usize {
        let reference = self.chain(0);
        for id in 1..NODES {
            let other = self.chain(id);
            assert!(
                other == reference,
                "node {id}'s chain differs from node 0's"
            );
        }
        let txs: Vec<Tx> = reference
            .iter()
            .filter_map(|l| l.strip_prefix("  transfer "))
            .map(|l| Tx::parse(&l.split_whitespace().collect::<Vec<_>>()).expect("transfer line"))
            .collect();
        let mut copies: HashMap<&str, usize> = HashMap::new();
        for t in &txs {
            *copies.entry(&t.txid).or_default() += 1;
        }
        let dups: Vec<_> = copies.iter().filter(|(_, &n)| n > 1).collect();
        assert!(dups.is_empty(), "transfers committed twice: {dups:?}");
        let by_id: HashMap<&str, &Tx> = txs.iter().map(|t| (t.txid.as_str(), t)).collect();

        // Every acknowledged transfer committed, once, as submitted; no TXID acknowledged twice.
        let mut acked: HashMap<&str, usize> = HashMap::new();
        for (i, op) in self.ops.iter().enumerate() {
            if let Outcome::Acked(txid) = &op.outcome {
                if let Some(prev) = acked.insert(txid, i) {
                    panic!("{txid} acknowledged twice: {:?} and {op:?}", self.ops[prev]);
                }
                let t = by_id
                    .get(txid.as_str())
                    .unwrap_or_else(|| panic!("acknowledged {txid} ({op:?}) never committed"));
                assert_eq!(
                    (t.debit, t.credit, t.amount),
                    (op.node, op.credit, op.amount),
                    "{txid} committed differently from how it was acknowledged"
                );
            }
        }

        // Per origin: sequence numbers 1..k, and the unacknowledged ones are indeterminate ops,
        // in order (a subsequence of them), so no rejected transfer slipped in.
        for origin in 0..NODES {
            let mut mine: Vec<&Tx> = txs.iter().filter(|t| t.debit == origin).collect();
            mine.sort_by_key(|t| t.seq());
            let seqs: Vec<u64> = mine.iter().map(|t| t.seq()).collect();
            let want: Vec<u64> = (1..=mine.len() as u64).collect();
            assert_eq!(seqs, want, "node {origin}'s committed sequence numbers");
            let mut maybe = self
                .ops
                .iter()
                .filter(|o| o.node == origin && o.outcome == Outcome::Indeterminate);
            for t in mine.iter().filter(|t| !acked.contains_key(t.txid.as_str())) {
                let matched = maybe.any(|o| (o.credit, o.amount) == (t.credit, t.amount));
                assert!(
                    matched,
                    "{t:?} committed but was neither acknowledged nor indeterminate"
                );
            }
        }

        // Balances: the opening ones plus the committed transfers, at every node.
        let mut want = vec![BALANCE as i128; NODES];
        for t in &txs {
            want[t.debit] -= t.amount as i128;
            want[t.credit] += t.amount as i128;
        }
        assert!(want.iter().all(|&b| b >= 0), "negative balance: {want:?}");
        for id in 0..NODES {
            assert_eq!(self.balances(id), want, "node {id}'s balances");
        }
        txs.len()
    }
}

/// Keeps the data dir of a failed run for the post-mortem.
struct KeepOnPanic(Option<tempfile::TempDir>);

impl Drop for KeepOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.0.take() {
                eprintln!(
                    "kept the data dir (node logs, chains): {}",
                    dir.keep().display()
                );
            }
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn bank_survives_kills_crashes_and_partitions() {
    let seed = env_u64("BENMO_NEMESIS_SEED").unwrap_or_else(rand::random);
    let secs = env_u64("BENMO_NEMESIS_SECS").unwrap_or(50);
    println!("nemesis: seed {seed}, {secs} s (replay with BENMO_NEMESIS_SEED={seed})");
    let dir = KeepOnPanic(Some(tempfile::tempdir().unwrap()));
    let data = dir.0.as_ref().unwrap().path().to_path_buf();
    let mut bank = Bank::new(&data, seed);
    bank.run(secs);
    let heal_time = bank.heal();
    let committed = bank.check();
    for id in 0..NODES {
        bank.c.kill(id);
    }
    let audit = bank
        .c
        .audit()
        .unwrap_or_else(|e| panic!("audit failed:\n{e}"));
    assert!(audit.contains("audit ok"), "{audit}");

    let count = |f: fn(&Outcome) -> bool| bank.ops.iter().filter(|o| f(&o.outcome)).count();
    let acked = count(|o| matches!(o, Outcome::Acked(_)));
    let rejected = count(|o| matches!(o, Outcome::Rejected(_)));
    let maybe = count(|o| matches!(o, Outcome::Indeterminate));
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for o in &bank.ops {
        if let Outcome::Rejected(l) = &o.outcome {
            let r = l.split(':').nth(1).unwrap_or("").trim().to_string();
            *reasons.entry(r).or_default() += 1;
        }
    }
    let f = &bank.faults;
    println!("nemesis summary (seed {seed}, {secs} s):");
    println!(
        "  operations: {} submitted: {acked} acknowledged, {rejected} rejected {reasons:?}, \
         {maybe} indeterminate ({} of those committed)",
        bank.ops.len(),
        committed - acked
    );
    println!(
        "  faults: {} kill -9, {} crashNode, {} restarts, {} pair severs, {} partitions, \
         {} pair restores, {} full link heals",
        f.kills, f.crashes, f.restarts, f.severs, f.splits, f.restores, f.heals
    );
    let (stall, at) = bank.longest_stall;
    let (healthy, hat) = bank.longest_healthy_stall;
    println!(
        "  commits: {committed} transfers in the chain; longest time without a commit: \
         {stall:.2?} (from {at:.2}s); with a fully connected majority up: {healthy:.2?} \
         (from {hat:.2}s)"
    );
    println!("  convergence after the final heal: {heal_time:.2?}");
    println!("  {audit}");
    assert!(acked > 0, "nothing was acknowledged");
}
