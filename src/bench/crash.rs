//! `benmo bench --crash-loop R`: R rounds of closed-loop load, each ended by a kill -9 of
//! every node at once (one `kill` command for all the PIDs) at a random moment, then a
//! restart. Every `committed` line any node printed is kept with the depth it named; at the
//! end every queue is drained and every chain must hold each of those transfers at that
//! depth. A kill -9 keeps the page cache, so this tests the processes' protocol, not power
//! loss (the simulator and the model cover that).

use super::closed::{placement, Stop};
use super::{Bench, Options, BALANCE, PATIENCE, POLL};
use crate::config;
use crate::ledger::TxId;
use crate::storage::Store;
use crate::testing::cluster::{free_ports, LocalCluster};
use crossbeam_channel::RecvTimeoutError;
use rand::Rng;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long the load runs before the kill, drawn per round (milliseconds).
const LOAD_MS: std::ops::Range<u64> = 300..1500;

pub(super) fn crash_loop(opts: &Options, exe: &Path, data: &Path) -> Result<(), String> {
    let port = opts.base_port.unwrap_or_else(|| free_ports(opts.nodes));
    let mut cluster = LocalCluster::init_on_port(exe, data, opts.nodes, BALANCE, port)?;
    let clients = opts.clients[0];
    println!(
        "benmo bench --crash-loop {}: {} nodes, fsync on, {clients} clients closed loop, then kill -9 of every node at once",
        opts.crash_loop, opts.nodes
    );
    let mut committed = Committed::default();
    for round in 1..=opts.crash_loop {
        cluster.start_all()?;
        let mut bench = attach(&mut cluster);
        bench.settle()?;
        let leader = bench.leader()?;
        let load = Duration::from_millis(rand::thread_rng().gen_range(LOAD_MS));
        let at = placement(opts.nodes, leader, clients);
        let run = bench.closed_loop(&at, load, Stop::Abandon)?;
        kill_all_at_once(&mut cluster, &bench.pids)?;
        let new = committed.add(bench.drain_after_kill()?)?;
        println!(
            "round {round:>2}: leader {leader}, killed after {} ms of load, {} in flight; {new} more committed, {} in all",
            load.as_millis(),
            run.in_flight,
            committed.depths.len()
        );
    }
    cluster.start_all()?;
    let mut bench = attach(&mut cluster);
    bench.settle()?;
    bench.quiesce()?;
    kill_all_at_once(&mut cluster, &bench.pids)?;
    committed.add(bench.drain_after_kill()?)?;
    for id in 0..opts.nodes {
        committed.check_chain(data, id, opts.nodes)?;
    }
    println!(
        "every one of the {} transfers that printed committed is on all {} chains, at the depth its line named",
        committed.depths.len(),
        opts.nodes
    );
    let audit = cluster.audit().map_err(|e| format!("audit failed:\n{e}"))?;
    println!("audit: {audit}");
    Ok(())
}

fn attach(cluster: &mut LocalCluster) -> Bench {
    let mut bench = Bench::attach(cluster);
    bench.commit_log = Some(Vec::new());
    bench
}

/// SIGKILL to every node in one `kill` command, then reaps them.
fn kill_all_at_once(cluster: &mut LocalCluster, pids: &[u32]) -> Result<(), String> {
    let status = Command::new("kill")
        .arg("-9")
        .args(pids.iter().map(u32::to_string))
        .status()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    (0..pids.len()).for_each(|i| cluster.kill(i));
    match status.success() {
        true => Ok(()),
        false => Err(format!("kill -9 {pids:?} failed")),
    }
}

/// Every transfer that printed `committed`, with the depth its line named.
#[derive(Default)]
struct Committed {
    depths: BTreeMap<TxId, u64>,
}

impl Committed {
    /// Adds one incarnation's lines; returns how many TXIDs are new. A TXID printed again
    /// (a restarted origin commits its recovered queue) must name the same depth.
    fn add(&mut self, log: Vec<(TxId, u64)>) -> Result<usize, String> {
        let before = self.depths.len();
        for (id, depth) in log {
            match self.depths.insert(id, depth) {
                Some(old) if old != depth => {
                    return Err(format!(
                        "{id} committed at depth {old} and again at {depth}"
                    ))
                }
                _ => {}
            }
        }
        Ok(self.depths.len() - before)
    }

    /// Node `id`'s chain holds every committed transfer at its depth.
    fn check_chain(&self, data: &Path, id: usize, nodes: usize) -> Result<(), String> {
        let mut found = HashMap::new();
        Store::verify(&config::node_dir(data, id), nodes, BALANCE, None, |b| {
            found.extend(b.transfers.iter().map(|t| (t.id, b.depth)));
        })
        .map_err(|e| format!("node {id}: {e}"))?;
        let missing: Vec<String> = self
            .depths
            .iter()
            .filter(|(t, d)| found.get(t) != Some(d))
            .map(|(t, d)| {
                format!(
                    "{t} (committed at depth {d}, on the chain at {:?})",
                    found.get(t)
                )
            })
            .collect();
        match missing.is_empty() {
            true => Ok(()),
            false => Err(format!(
                "node {id} lost {} committed transfers: {}",
                missing.len(),
                missing
                    .iter()
                    .take(10)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

impl Bench {
    /// One transfer at every node, all committed: a leader is elected and links are up.
    fn settle(&mut self) -> Result<(), String> {
        let every = placement(self.n(), 0, self.n());
        self.closed_loop(&every, Duration::ZERO, Stop::Drain)
            .map(drop)
    }

    /// Polls until every node has the same head and an empty queue.
    fn quiesce(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let all = self.statuses()?;
            if all.iter().all(|s| s.head == all[0].head && s.queue == 0) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("the nodes did not drain their queues: {all:?}"));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Every line the killed nodes had printed; returns the `committed` ones.
    fn drain_after_kill(&mut self) -> Result<Vec<(TxId, u64)>, String> {
        loop {
            match self.notes.recv_timeout(PATIENCE) {
                Ok(note) => self.record(note)?,
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    return Err("a killed node's stdout stayed open".to_string())
                }
            }
        }
        Ok(self.commit_log.take().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::super::ChainWriter;
    use super::*;

    fn tx(node: usize, seq: u64) -> TxId {
        TxId { node, seq }
    }

    #[test]
    fn a_committed_transfer_missing_or_moved_is_reported() {
        let data = tempfile::tempdir().unwrap();
        let dir = config::node_dir(data.path(), 0);
        std::fs::create_dir_all(&dir).unwrap();
        Store::create(&dir).unwrap();
        let mut w = ChainWriter::open(&dir).unwrap();
        w.fill(3, 3).unwrap(); // depth d holds d.(node) for every node: seqs 1, 2, 3
        drop(w);
        let mut c = Committed::default();
        assert_eq!(
            c.add(vec![(tx(0, 1), 1), (tx(1, 2), 2), (tx(0, 1), 1)]),
            Ok(2)
        );
        assert_eq!(c.check_chain(data.path(), 0, 3), Ok(()));
        assert!(c.add(vec![(tx(0, 1), 2)]).unwrap_err().contains("again"));

        let mut moved = Committed::default();
        moved.add(vec![(tx(2, 3), 2)]).unwrap();
        let err = moved.check_chain(data.path(), 0, 3).unwrap_err();
        assert!(
            err.contains("lost 1") && err.contains("on the chain at Some(3)"),
            "{err}"
        );

        let mut missing = Committed::default();
        missing.add(vec![(tx(1, 9), 3)]).unwrap();
        let err = missing.check_chain(data.path(), 0, 3).unwrap_err();
        assert!(
            err.contains("1.9 (committed at depth 3, on the chain at None)"),
            "{err}"
        );
    }
}
