//! A node dir restored from a copy (`cp -a` while it ran) is older than what its peers saw
//! from it: the node refuses to start, saying so, and `--recover` brings it back safely.

use benmo::testing::cluster::LocalCluster;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_benmo");
const WAIT: Duration = Duration::from_secs(30);

fn soon() -> Instant {
    Instant::now() + WAIT
}

/// Commits `count` transfers from node `from`; returns their ids (acknowledged: `committed`).
fn commit(c: &mut LocalCluster, from: usize, count: usize) -> Vec<String> {
    let n = c.nodes.len();
    (0..count)
        .map(|k| {
            let node = c.node(from);
            node.send(&format!(
                "moneyTransfer {from} {} 1",
                (from + 1 + k % (n - 1)) % n
            ));
            let queued = node.wait_for(soon(), |l| {
                l.starts_with("queued ") || l.starts_with("error: ")
            });
            let queued = queued.expect("a reply to the transfer");
            assert!(queued.starts_with("queued "), "{queued}");
            let id = queued.split_whitespace().nth(1).unwrap().to_string();
            let done = node.wait_for(soon(), |l| l.starts_with(&format!("committed {id} ")));
            assert!(done.is_some(), "{id} did not commit");
            id
        })
        .collect()
}

/// The ids of the transfers on node `id`'s chain.
fn chain_ids(c: &mut LocalCluster, id: usize) -> BTreeSet<String> {
    let node = c.node(id);
    node.send("printBlockchain");
    let mut ids = BTreeSet::new();
    while let Some(l) = node.wait_for(soon(), |l| {
        l.starts_with("  transfer ") || l.starts_with("chain depth ")
    }) {
        if l.starts_with("chain depth ") {
            return ids;
        }
        ids.insert(l.split_whitespace().nth(1).unwrap().to_string());
    }
    panic!("node {id} did not print its chain");
}

/// Every acknowledged transfer is on every running node's chain, once (audit).
fn all_on_every_chain(c: &mut LocalCluster, acked: &[String]) {
    c.converge(WAIT).unwrap();
    let running: Vec<usize> = (0..c.nodes.len())
        .filter(|&i| c.nodes[i].is_some())
        .collect();
    for id in running {
        let ids = chain_ids(c, id);
        let missing: Vec<&String> = acked.iter().filter(|t| !ids.contains(*t)).collect();
        assert!(missing.is_empty(), "node {id} lacks {missing:?}");
    }
    let audit = c.audit().unwrap();
    assert!(audit.contains("audit ok"), "{audit}");
}

fn cp_a(from: &Path, to: &Path) {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "cp -a {} {} failed (coreutils' cp is needed)",
        from.display(),
        to.display()
    );
}

/// Waits for node `id` to exit; its exit code, or None if it still runs at the deadline.
fn exit_code(c: &mut LocalCluster, id: usize) -> Option<i32> {
    let deadline = soon();
    while Instant::now() < deadline {
        if let Some(code) = c.node(id).exited() {
            return Some(code.unwrap_or(-1));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn a_restored_copy_of_a_node_dir_is_refused_then_recovered_from_peers() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCluster::init(Path::new(EXE), dir.path(), 3, 100).unwrap();
    c.start_all().unwrap();
    let mut acked = commit(&mut c, 2, 2);
    acked.extend(commit(&mut c, 0, 1));
    c.converge(WAIT).unwrap();

    // A consistent copy of node 2's dir while it runs (idle: nothing is being written).
    let node2 = dir.path().join("node2");
    let copy = dir.path().join("node2.copy");
    cp_a(&node2, &copy);
    // More commits, node 2's own among them: it has promised, voted and reported since.
    acked.extend(commit(&mut c, 2, 3));
    acked.extend(commit(&mut c, 1, 2));
    c.converge(WAIT).unwrap();

    // Stop node 2 and restore the copy over its dir.
    c.kill(2);
    fs::remove_dir_all(&node2).unwrap();
    cp_a(&copy, &node2);

    // It refuses, in one line, having voted on and reported nothing.
    c.start(2).unwrap();
    let code = exit_code(&mut c, 2);
    c.node(2).drain();
    let stdout = c.node(2).seen.clone();
    assert!(
        code.is_some_and(|code| code != 0),
        "the restored node started (exit {code:?}); it printed {stdout:?}"
    );
    let stderr = fs::read_to_string(dir.path().join("node2.stderr")).unwrap();
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("node 2's state is older than what node")
            && errors[0].contains("restored from a copy")
            && errors[0].contains("start with --recover"),
        "{}",
        errors[0]
    );
    let again: Vec<&String> = stdout
        .iter()
        .filter(|l| l.starts_with("committed "))
        .collect();
    assert!(again.is_empty(), "reported again: {again:?}");
    c.kill(2);
    acked.extend(commit(&mut c, 0, 1));
    all_on_every_chain(&mut c, &acked);

    // `--recover` makes it amnesic; it learns what it forgot from its peers.
    c.node_args = vec!["--recover".into()];
    c.start(2).unwrap();
    c.node_args.clear();
    let line = c
        .node(2)
        .wait_for(soon(), |l| l.starts_with("note: node 2's state is older"));
    assert!(line.is_some_and(|l| l.ends_with("recovering it from its peers")));
    let line = c.node(2).wait_for(soon(), |l| l.starts_with("caught up: "));
    assert!(line.is_some(), "node 2 did not catch up");
    acked.extend(commit(&mut c, 2, 1));
    all_on_every_chain(&mut c, &acked);

    // Its peers forgot what they had seen from it when it declared its loss: a plain
    // restart now is no rollback.
    c.kill(2);
    c.start(2).unwrap();
    acked.extend(commit(&mut c, 2, 1));
    assert_eq!(c.node(2).exited(), None);
    all_on_every_chain(&mut c, &acked);

    // A whole cluster restarting at once comes up: every node answers while it checks.
    (0..3).for_each(|i| c.kill(i));
    c.start_all().unwrap();
    acked.extend(commit(&mut c, 1, 1));
    all_on_every_chain(&mut c, &acked);
}
