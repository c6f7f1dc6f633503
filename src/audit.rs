//! `benmo audit`: checks every node's persisted chain in a data directory, independently of
//! any running node: hash chains intact, chains agree on their common prefix, no transfer id
//! twice, no negative balance, and money conserved.

use crate::config::{self, Config};
use crate::ledger::{Hash, TxId};
use crate::storage::Store;
use std::collections::HashSet;
use std::path::Path;

/// What a clean audit found.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    pub nodes: usize,
    pub min_depth: u64,
    pub max_depth: u64,
    pub transfers: u64,
    pub total: u128,
}

/// Returns the summary, or every violation found (one line each).
pub fn audit(data: &Path) -> Result<(Summary, Vec<String>), Vec<String>> {
    let config = Config::load(data).map_err(|e| vec![e])?;
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut canonical: Vec<Hash> = Vec::new();
    let (mut min_depth, mut max_depth, mut transfers) = (u64::MAX, 0, 0);
    for id in 0..config.nodes() {
        match audit_node(data, &config, id, &mut canonical) {
            Ok(node) => {
                min_depth = min_depth.min(node.depth);
                max_depth = max_depth.max(node.depth);
                transfers = transfers.max(node.transfers);
                problems.extend(node.problems);
                notes.extend(node.note);
            }
            Err(e) => problems.push(format!("node {id}: {e}")),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let total = config.balance as u128 * config.nodes() as u128;
    Ok((
        Summary {
            nodes: config.nodes(),
            min_depth,
            max_depth,
            transfers,
            total,
        },
        notes,
    ))
}

struct NodeAudit {
    depth: u64,
    transfers: u64,
    problems: Vec<String>,
    note: Option<String>,
}

fn audit_node(
    data: &Path,
    config: &Config,
    id: usize,
    canonical: &mut Vec<Hash>,
) -> Result<NodeAudit, String> {
    let dir = config::node_dir(data, id);
    let mut problems = Vec::new();
    let mut seen: HashSet<TxId> = HashSet::new();
    let (ledger, note) = Store::verify(&dir, config.nodes(), config.balance, Some(id), |block| {
        let i = block.depth as usize - 1;
        match canonical.get(i) {
            Some(h) if *h != block.hash => problems.push(format!(
                "node {id}: block {} is {} where another node has {}",
                block.depth,
                block.hash.short(),
                h.short()
            )),
            Some(_) => {}
            None => canonical.push(block.hash),
        }
        for t in &block.transfers {
            if !seen.insert(t.id) {
                problems.push(format!(
                    "node {id}: transfer {} appears twice (again at depth {})",
                    t.id, block.depth
                ));
            }
        }
    })
    .map_err(|e| e.to_string())?;
    let total = config.balance as u128 * config.nodes() as u128;
    if ledger.total() != total {
        problems.push(format!(
            "node {id}: balances add up to {}, not {total}",
            ledger.total()
        ));
    }
    // Balances are unsigned and every transfer was applied in checked arithmetic, so none
    // can be negative or have wrapped; say so explicitly rather than trust it. Sums are u128,
    // so adding up even u64::MAX-sized balances cannot overflow.
    for (account, &b) in ledger.balances.iter().enumerate() {
        if b as u128 > total {
            problems.push(format!(
                "node {id}: account {account} holds {b}, more than all the money there is ({total})"
            ));
        }
    }
    Ok(NodeAudit {
        depth: ledger.depth,
        transfers: ledger.transfers,
        problems,
        note: note.map(|n| format!("node {id}: {n}")),
    })
}

/// Runs the audit and prints the result; returns the exit code.
pub fn main(data: &Path) -> i32 {
    match audit(data) {
        Ok((s, notes)) => {
            notes.iter().for_each(|n| println!("note: {n}"));
            println!(
                "audit ok: {} nodes, depth {}..{}, {} transfers, total {}",
                s.nodes, s.min_depth, s.max_depth, s.transfers, s.total
            );
            0
        }
        Err(problems) => {
            for p in &problems {
                println!("error: {p}");
            }
            println!("audit FAILED: {} problem(s)", problems.len());
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Ledger, Transfer};

    /// A data dir whose every node holds the same chain: `moves` of (debit, credit, amount).
    fn data_dir(nodes: usize, balance: u64, moves: &[(usize, usize, u64)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            balance,
            addrs: (0..nodes)
                .map(|i| format!("127.0.0.1:{}", 9000 + i))
                .collect(),
        };
        std::fs::write(dir.path().join(config::CONFIG_FILE), config.render()).unwrap();
        let mut ledger = Ledger::new(nodes, balance);
        let blocks: Vec<_> = moves
            .iter()
            .map(|&(from, to, amount)| {
                let id = TxId {
                    node: from,
                    seq: ledger.next_seq[from],
                };
                let t = Transfer {
                    id,
                    credit: to,
                    amount,
                };
                let b = ledger.seal(from, &[t]);
                assert_eq!(b.transfers.len(), 1, "{t} must fit");
                ledger.apply(&b).unwrap();
                b
            })
            .collect();
        for id in 0..nodes {
            let node = config::node_dir(dir.path(), id);
            Store::create(&node).unwrap();
            let mut store = Store::open(&node, nodes, balance, Some(id)).unwrap().store;
            blocks.iter().for_each(|b| store.commit(b).unwrap());
            store.sync().unwrap();
        }
        dir
    }

    #[test]
    fn large_balances_are_summed_without_overflow() {
        // The largest supply init allows, almost all of it in one account at the end.
        let b = u64::MAX / 3;
        let dir = data_dir(3, b, &[(0, 1, b), (2, 1, b - 1)]);
        let (s, notes) = audit(dir.path()).unwrap();
        assert!(notes.is_empty());
        assert_eq!(s.total, 3 * b as u128);
        assert_eq!(s.total, u64::MAX as u128, "u64::MAX is divisible by 3");
        assert_eq!(
            (s.nodes, s.min_depth, s.max_depth, s.transfers),
            (3, 2, 2, 2)
        );
    }

    #[test]
    fn a_config_whose_supply_overflows_is_refused() {
        let dir = data_dir(3, 1, &[]);
        let conf = dir.path().join(config::CONFIG_FILE);
        let text = std::fs::read_to_string(&conf).unwrap();
        std::fs::write(
            &conf,
            text.replace("balance 1\n", "balance 9223372036854775808\n"),
        )
        .unwrap();
        let problems = audit(dir.path()).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("more money than a 64-bit balance holds"));
    }
}
