//! `benmo node --classroom`: one full Paxos round per block, with real node processes (free
//! loopback ports, temp dirs, killed by PID when the test ends) and a short random delay.

use benmo::testing::cluster::LocalCluster;
use std::path::Path;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_benmo");

fn classroom(dir: &Path, extra: &[&str]) -> LocalCluster {
    let mut c = LocalCluster::init(Path::new(EXE), dir, 3, 100).unwrap();
    c.node_args = ["--classroom", "--delay", "300ms..600ms", "--verbose"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    c.start_all().unwrap();
    c
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

/// Queues a transfer at `from` and returns its id.
fn queue(c: &mut LocalCluster, from: usize, to: usize) -> String {
    let node = c.node(from);
    node.send(&format!("moneyTransfer {from} {to} 5"));
    let line = node
        .wait_for(deadline(), |l| l.starts_with("queued "))
        .expect("queued");
    line.split_whitespace().nth(1).unwrap().to_string()
}

fn committed_at(c: &mut LocalCluster, from: usize, id: &str) -> u64 {
    let line = c
        .node(from)
        .wait_for(deadline(), |l| l.starts_with(&format!("committed {id} ")))
        .unwrap_or_else(|| panic!("{id} was not committed"));
    line.split_whitespace().last().unwrap().parse().unwrap()
}

/// The verbose line in which `node` starts a round for `depth`.
fn prepares(lines: &[String], depth: u64) -> usize {
    let want = format!("depth {depth}: running for leader: prepare");
    lines.iter().filter(|l| l.contains(&want)).count()
}

#[test]
fn each_block_is_decided_by_its_own_round_from_prepare() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = classroom(dir.path(), &[]);
    let first = queue(&mut c, 0, 1);
    let d1 = committed_at(&mut c, 0, &first);
    let second = queue(&mut c, 1, 2);
    let d2 = committed_at(&mut c, 1, &second);
    assert_eq!((d1, d2), (1, 2), "one block per round");
    c.converge(Duration::from_secs(30)).unwrap();
    let seen: Vec<String> = (0..3).flat_map(|i| c.node(i).seen.clone()).collect();
    assert!(prepares(&seen, 1) >= 1, "a prepare for depth 1");
    assert!(prepares(&seen, 2) >= 1, "a separate prepare for depth 2");
    for line in seen.iter().filter(|l| l.contains("[paxos]")) {
        let time = line.split_whitespace().next().unwrap();
        assert_eq!(time.len(), "HH:MM:SS.mmm".len(), "timed: {line}");
    }
    assert!(
        seen.iter().any(|l| l.contains("round over")),
        "the leader lets its ballot go"
    );
    c.audit().unwrap();
}

#[test]
fn a_proposer_crashed_after_prepare_commits_its_transfer_exactly_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    // The phase delay holds the accept phase, so the crash lands between the phases.
    let mut c = classroom(dir.path(), &["--phase-delay", "2s"]);
    let id = queue(&mut c, 0, 2);
    c.node(0)
        .wait_for(deadline(), |l| l.contains("running for leader: prepare"))
        .expect("node 0 runs for leader");
    c.kill(0);
    // Another node's round (node 1's transfer) goes ahead meanwhile.
    let other = queue(&mut c, 1, 2);
    committed_at(&mut c, 1, &other);
    c.start(0).unwrap();
    committed_at(&mut c, 0, &id);
    let status = c.converge(Duration::from_secs(30)).unwrap();
    assert_eq!(status.transfers, 2, "each transfer once: {status:?}");
    c.audit().unwrap();
}

/// Sends `line` to `node` and returns the reply line that satisfies `want`.
fn ask(c: &mut LocalCluster, node: usize, line: &str, want: impl FnMut(&str) -> bool) -> String {
    let n = c.node(node);
    n.send(line);
    n.wait_for(deadline(), want)
        .unwrap_or_else(|| panic!("node {node}: no reply to {line}"))
}

/// Runs `state` on `node` and returns its lines.
fn state(c: &mut LocalCluster, node: usize) -> Vec<String> {
    let mut lines = Vec::new();
    ask(c, node, "state", |l| {
        lines.push(l.to_string());
        l.starts_with("  role ")
    });
    let first = lines.iter().position(|l| l.starts_with("state of node "));
    lines.split_off(first.expect("a state heading"))
}

#[test]
fn a_held_prepare_stepped_dropped_and_crashed_still_commits_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCluster::init(Path::new(EXE), dir.path(), 3, 100).unwrap();
    c.node_args = ["--classroom", "--delay", "300ms..600ms", "--verbose"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    c.start(1).unwrap();
    c.start(2).unwrap();
    let held = ["--hold".to_string(), "prepare".to_string()];
    c.node_args.extend(held.iter().cloned());
    c.start(0).unwrap();
    let id = queue(&mut c, 0, 2);
    let paused = |l: &str| l.starts_with("paused (--hold) before prepare ");
    c.node(0)
        .wait_for(deadline(), paused)
        .expect("held at prepare");
    let st = state(&mut c, 0);
    assert!(st.iter().any(|l| l.contains("role candidate")), "{st:?}");
    assert!(st.iter().all(|l| l.len() <= 80), "{st:?}");
    // Crash the proposer while its prepare is held: nobody ever saw it.
    c.kill(0);
    c.start(0).unwrap();
    c.node(0).wait_for(deadline(), paused).expect("held again");
    // Node 1 must be connected to the new node 0 (it says hello when it is), or its promise
    // could go down its stale connection; while paused, nothing would time out and retry.
    let up = Instant::now() + Duration::from_secs(30);
    while ask(&mut c, 0, "status", |l| l.starts_with("link 1 ")).contains("never heard") {
        assert!(Instant::now() < up, "node 1 does not reconnect to node 0");
        std::thread::sleep(Duration::from_millis(100));
    }
    // One prepare goes to node 1: with node 0's own vote, a majority of 3.
    let step = ask(&mut c, 0, "step", |l| l.starts_with("step: "));
    assert!(
        step.contains("prepare") && step.contains("to node 1"),
        "{step}"
    );
    let accept = c
        .node(0)
        .wait_for(deadline(), |l| l.starts_with("held accept "));
    c.node(1).drain();
    let seen = c.node(0).seen.join("\n") + "\n----\n" + &c.node(1).seen.join("\n");
    assert!(
        accept.is_some(),
        "the accept is held too (still paused):\n{seen}"
    );
    let will = ask(&mut c, 0, "drop accept 2", |l| l.starts_with("will drop"));
    assert!(will.contains("next accept message to node 2"), "{will}");
    ask(&mut c, 0, "go", |l| l.starts_with("go: "));
    c.node(0)
        .wait_for(deadline(), |l| {
            l.starts_with("dropped accept ") && l.ends_with("to node 2")
        })
        .expect("the accept to node 2 was dropped");
    assert_eq!(committed_at(&mut c, 0, &id), 1);
    let status = c.converge(Duration::from_secs(30)).unwrap();
    assert_eq!(status.transfers, 1, "committed exactly once: {status:?}");
    c.audit().unwrap();
    // The banner, status, state and gate lines fit 80 columns (narration has its own test).
    ask(&mut c, 0, "status", |l| l.starts_with("link 2 "));
    // `status full` (which `converge` asks for) may be wider: it has the whole head hash.
    let full = |l: &str| l.starts_with("node ") && l.contains(" role ");
    for line in c
        .node(0)
        .seen
        .iter()
        .filter(|l| !l.contains("[paxos]") && !full(l))
    {
        assert!(line.chars().count() <= 80, "wider than 80 columns: {line}");
    }
}
