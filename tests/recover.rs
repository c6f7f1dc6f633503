//! `benmo node --recover`: damaged state is moved aside and rebuilt from a majority.

use benmo::testing::cluster::LocalCluster;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_benmo");

fn commit_some(c: &mut LocalCluster, from: usize, count: usize) {
    let n = c.nodes.len();
    for k in 0..count {
        let node = c.node(from);
        node.send(&format!(
            "moneyTransfer {from} {} 1",
            (from + 1 + k % (n - 1)) % n
        ));
        let deadline = Instant::now() + Duration::from_secs(30);
        let queued = node
            .wait_for(deadline, |l| l.starts_with("queued "))
            .expect("queued");
        let id = queued.split_whitespace().nth(1).unwrap().to_string();
        node.wait_for(deadline, |l| l.starts_with(&format!("committed {id} ")))
            .expect("committed");
    }
}

/// Flips one byte in the middle of the file's first record payload.
fn damage(path: &Path) -> u64 {
    let mut bytes = fs::read(path).unwrap();
    assert!(
        bytes.len() > 20,
        "{} is too short to damage",
        path.display()
    );
    bytes[14] ^= 0x04;
    fs::write(path, bytes).unwrap();
    0
}

fn start_fails(data: &Path, id: usize) -> String {
    let out = Command::new(EXE)
        .args(["node", &id.to_string(), "--data"])
        .arg(data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

fn recover_after_damage(file: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCluster::init(Path::new(EXE), dir.path(), 3, 100).unwrap();
    c.start_all().unwrap();
    commit_some(&mut c, 0, 3);
    c.converge(Duration::from_secs(30)).unwrap();
    c.kill(2);
    let path = dir.path().join("node2").join(file);
    let offset = damage(&path);
    let err = start_fails(dir.path(), 2);
    assert!(
        err.starts_with("error: ")
            && err.contains(file)
            && err.contains(&format!("offset {offset}")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let audit = c.audit().unwrap_err();
    assert!(
        audit.contains(file) && audit.contains(&format!("offset {offset}")),
        "{audit}"
    );
    c.node_args = vec!["--recover".into()];
    c.start(2).unwrap();
    c.node_args.clear();
    let stderr = fs::read_to_string(dir.path().join("node2.stderr")).unwrap();
    assert!(stderr.contains("moved damaged"), "{stderr}");
    commit_some(&mut c, 1, 2);
    // Either file may have held records of its votes: it votes and transfers again only
    // once its peers have answered.
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = c
        .node(2)
        .wait_for(deadline, |l| l.starts_with("recovered: "));
    assert!(line.is_some_and(|l| l.contains("voting again above depth")));
    // A leader carries the chain past its vote floor, with empty blocks if need be.
    let line = c
        .node(2)
        .wait_for(deadline, |l| l.starts_with("caught up: "));
    assert!(line.is_some_and(|l| l.contains("transfers resume")));
    commit_some(&mut c, 2, 1);
    let status = c.converge(Duration::from_secs(30)).unwrap();
    assert_eq!(status.transfers, 6);
    assert!(c.audit().unwrap().contains("audit ok"));
    let aside = fs::read_dir(dir.path().join("node2"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains(".damaged-"));
    assert!(aside, "the damaged file is kept");
}

#[test]
fn a_damaged_chain_is_refused_then_rebuilt_from_peers() {
    recover_after_damage("chain.log");
}

#[test]
fn a_damaged_wal_is_refused_then_recovered_safely() {
    recover_after_damage("wal.log");
}

/// Keeps `path` (a chain.log) up to and including its first block (and the format marker
/// before it, if any), as a disk that lost the later synced blocks leaves it.
fn cut_to_one_block(path: &Path) {
    let bytes = fs::read(path).unwrap();
    let mut at = 0;
    loop {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let payload = &bytes[at + 12..at + 12 + len];
        at += 12 + len;
        if !payload.starts_with(br#"{"benmo""#) {
            break; // that was block 1
        }
    }
    assert!(at < bytes.len(), "want more than one block");
    fs::write(path, &bytes[..at]).unwrap();
}

/// Starts node `id` with stdin closed and returns its stderr, if it exits by itself within
/// a while; a node that keeps running is killed by PID and gives `None`.
fn start_bounded(data: &Path, id: usize) -> Option<String> {
    let mut child = Command::new(EXE)
        .args(["node", &id.to_string(), "--data"])
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    Some(String::from_utf8_lossy(&out.stderr).trim().to_string())
}

/// Issue 18, bug 2: a node dir whose chain.log lost its synced blocks used to start after
/// `rm superblock`, taken for a dir made by an older version, its lost blocks unseen. The
/// logs carry a format marker now, so a missing superblock is damage: refused, then repaired
/// by `--recover`, which rebuilds the node from its peers.
#[test]
fn a_deleted_superblock_is_refused_then_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCluster::init(Path::new(EXE), dir.path(), 3, 100).unwrap();
    c.start_all().unwrap();
    commit_some(&mut c, 0, 3);
    let depth = c.converge(Duration::from_secs(30)).unwrap().depth;
    c.kill(2);
    let node2 = dir.path().join("node2");
    cut_to_one_block(&node2.join("chain.log"));
    let rm = Command::new("rm")
        .arg(node2.join("superblock"))
        .status()
        .unwrap();
    assert!(rm.success());
    let files = |d: &Path| {
        let read = |name: &str| fs::read(d.join(name)).unwrap();
        (read("chain.log"), read("wal.log"))
    };
    let before = files(&node2);

    let err = start_bounded(dir.path(), 2).expect("node 2 started without its superblock");
    let want = format!(
        "error: missing {}: this node dir's logs are of a format that always has one",
        node2.join("superblock").display()
    );
    assert!(err.starts_with(&want), "{err}");
    assert!(err.contains("--recover"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let audit = c.audit().unwrap_err();
    assert!(
        audit.contains(&format!("error: node 2: {}", &want["error: ".len()..])),
        "{audit}"
    );
    assert!(files(&node2) == before, "the refusal changed the logs");
    assert!(!node2.join("superblock").exists(), "the refusal wrote one");

    c.node_args = vec!["--recover".into()];
    c.start(2).unwrap();
    c.node_args.clear();
    let stderr = fs::read_to_string(dir.path().join("node2.stderr")).unwrap();
    assert!(stderr.contains("wrote a new superblock"), "{stderr}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = c
        .node(2)
        .wait_for(deadline, |l| l.starts_with("recovered: "));
    assert!(line.is_some(), "node 2 did not recover");
    commit_some(&mut c, 1, 1);
    let status = c.converge(Duration::from_secs(30)).unwrap();
    assert!(status.depth > depth);
    assert_eq!(
        status.transfers, 4,
        "every acknowledged transfer, on every chain"
    );
    for i in 0..3 {
        c.kill(i);
    }
    let audit = c.audit().unwrap();
    let want = format!("3 nodes, depth {0}..{0}, 4 transfers", status.depth);
    assert!(audit.contains(&want), "{audit}");
}
