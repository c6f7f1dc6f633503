//! The `[paxos]` narration as a class sees it on a projector: five real nodes in classroom
//! mode with `--verbose`, a severed link, a dropped accept and a proposer crashed mid-round.
//! Every line a node prints, timestamp and prefix included, fits 80 columns, but for the
//! full-width `status full` the test harness itself asks for (free loopback ports, a temp
//! dir, nodes killed by PID when the test ends).

use benmo::testing::cluster::LocalCluster;
use std::path::Path;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_benmo");

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

fn wait(c: &mut LocalCluster, node: usize, want: &str) -> String {
    c.node(node)
        .wait_for(deadline(), |l| l.contains(want))
        .unwrap_or_else(|| panic!("node {node} never said {want:?}"))
}

#[test]
fn a_five_node_classroom_round_with_a_crash_a_sever_and_a_drop_fits_80_columns() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCluster::init(Path::new(EXE), dir.path(), 5, 100).unwrap();
    c.node_args = ["--classroom", "--delay", "300ms..600ms", "--verbose"]
        .map(String::from)
        .to_vec();
    c.start_all().unwrap();
    c.node(1).send("severLink 2");
    wait(&mut c, 1, "link 2 severed");
    // Node 0 crashes once its prepare is out: mid-round.
    c.node(0).send("moneyTransfer 0 1 5");
    wait(&mut c, 0, "running for leader: prepare");
    c.node(0).send("crashNode");
    wait(&mut c, 0, "crashing");
    let mut seen = c.node(0).seen.clone();
    // Another round goes ahead meanwhile, one of its accepts dropped; then node 0 restarts
    // and its transfer commits.
    c.node(2).send("drop accept 3");
    wait(&mut c, 2, "will drop the next");
    c.node(2).send("moneyTransfer 2 3 5");
    wait(&mut c, 2, "dropped accept");
    wait(&mut c, 2, "committed 2.1 ");
    c.start(0).unwrap();
    wait(&mut c, 0, "committed 0.1 ");
    c.node(1).send("restoreLink 2");
    wait(&mut c, 1, "link 2 restored");
    let status = c.converge(Duration::from_secs(30)).unwrap();
    assert_eq!(status.transfers, 2, "each transfer once: {status:?}");
    for i in 0..5 {
        c.node(i).drain();
        seen.extend(c.node(i).seen.clone());
    }
    let narrated: Vec<&String> = seen.iter().filter(|l| l.contains("[paxos]")).collect();
    assert!(narrated.len() >= 20, "rounds are narrated: {narrated:#?}");
    assert!(
        narrated.iter().any(|l| l.contains(" of 5")),
        "counts say of how many: {narrated:#?}"
    );
    let status_full =
        |l: &str| l.starts_with("node ") && l.contains(" ballot ") && l.contains(" role ");
    let wide: Vec<&String> = seen
        .iter()
        .filter(|l| l.chars().count() > 80 && !status_full(l))
        .collect();
    assert!(wide.is_empty(), "lines wider than 80 columns: {wide:#?}");
    c.audit().unwrap();
}
