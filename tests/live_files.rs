//! Files deleted or replaced under a running node (issue 18, bug 4): a node that went on
//! writing into an unlinked `wal.log` printed `committed` for blocks that were in no file.
//! Now the node checks at every sync that its files are still the ones at their paths, and
//! stops with one `error:` line and exit 2, having printed and sent nothing of the batch.
//! Real processes, a real `rm`, `mv` and `cp -a`; every process is killed by PID at the end.

use benmo::testing::cluster::LocalCluster;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_benmo");
const WAIT: Duration = Duration::from_secs(30);

/// Runs a shell command line in `dir` (paths in it are relative to `dir`).
fn sh(dir: &Path, line: &str) {
    let ok = Command::new("sh")
        .args(["-c", line])
        .current_dir(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "`{line}` failed");
}

/// A transfer from `from` commits, as seen at `from`.
fn commits(c: &mut LocalCluster, from: usize, to: usize) {
    let node = c.node(from);
    node.send(&format!("moneyTransfer {from} {to} 1"));
    let line = node
        .wait_for(Instant::now() + WAIT, |l| {
            l.starts_with("committed ") || l.starts_with("error: ")
        })
        .expect("an answer to moneyTransfer");
    assert!(line.starts_with("committed "), "{line}");
}

/// After `tamper`, a transfer typed into node 0 makes it stop: exit 2, one new `error:`
/// line on stderr that says `what`, and neither `queued` nor `committed` printed.
fn stops_after(c: &mut LocalCluster, tamper: &str, what: &str) {
    let log = c.data.join("node0.stderr");
    let before = fs::read_to_string(&log).unwrap_or_default().len();
    sh(&c.data, tamper);
    let node = c.node(0);
    node.send("moneyTransfer 0 2 1");
    let answer = node.wait_for(Instant::now() + WAIT, |l| {
        l.starts_with("queued ") || l.starts_with("committed ")
    });
    assert_eq!(answer, None, "node 0 acknowledged after `{tamper}`");
    let deadline = Instant::now() + WAIT;
    let code = loop {
        if let Some(code) = node.exited() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "node 0 still runs after `{tamper}`"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(2), "after `{tamper}`");
    let text = fs::read_to_string(&log).unwrap();
    let new: Vec<&str> = text[before..].lines().collect();
    assert_eq!(new.len(), 1, "want one line, got {new:?}");
    assert!(
        new[0].starts_with("error: stopped: cannot save state (") && new[0].contains(what),
        "{:?} should say {what:?}",
        new[0]
    );
    c.kill(0);
}

#[test]
fn a_node_whose_files_are_replaced_or_deleted_stops_before_acknowledging() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = LocalCluster::init(Path::new(EXE), tmp.path(), 3, 100).unwrap();
    c.start_all().unwrap();
    commits(&mut c, 0, 1);
    c.converge(WAIT).unwrap();

    // wal.log replaced by a copy of itself: another file at that path.
    stops_after(
        &mut c,
        "cp node0/wal.log node0/wal.new && mv node0/wal.new node0/wal.log",
        "node0/wal.log was replaced by another file while the node ran",
    );
    // The copy holds everything it acknowledged: it starts, and the cluster goes on.
    c.start(0).unwrap();
    commits(&mut c, 0, 1);
    c.converge(WAIT).unwrap();

    // The whole node dir moved away and a copy put in its place.
    stops_after(
        &mut c,
        "mv node0 node0.old && cp -a node0.old node0",
        "node0/chain.log was replaced by another file while the node ran",
    );
    c.start(0).unwrap();
    commits(&mut c, 0, 2);
    c.converge(WAIT).unwrap();

    // wal.log deleted.
    stops_after(
        &mut c,
        "rm node0/wal.log",
        "node0/wal.log was deleted while the node ran",
    );
    // The others go on.
    commits(&mut c, 1, 2);
    // Node 0 lost synced records with the file: it refuses to start, naming --recover,
    // which starts it amnesic; it catches up, and every acknowledged transfer is on every
    // chain.
    let out = Command::new(EXE)
        .args(["node", "0", "--data"])
        .arg(&c.data)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "error: lost synced data at the end of {}: expected ",
        c.data.join("node0").join("wal.log").display()
    );
    assert!(
        err.starts_with(&want) && err.contains("found no file"),
        "{err}"
    );
    assert!(
        err.contains("--recover") && err.lines().count() == 1,
        "{err}"
    );
    c.node_args = vec!["--recover".into()];
    c.start(0).unwrap();
    c.node_args.clear();
    let line = c
        .node(0)
        .wait_for(Instant::now() + WAIT, |l| l.starts_with("recovered: "));
    assert!(line.is_some(), "node 0 did not recover");
    commits(&mut c, 2, 0);
    let status = c.converge(WAIT).unwrap();
    assert_eq!(status.transfers, 5);
    for i in 0..3 {
        c.kill(i);
    }
    let audit = c.audit().unwrap();
    let want = format!("3 nodes, depth {0}..{0}, 5 transfers", status.depth);
    assert!(audit.contains(&want), "{audit}");
}
