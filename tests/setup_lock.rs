//! The edges of setting up and stopping, in real processes: one owner per node dir (a second
//! `benmo node`, `benmo init` and `scripts/cluster.sh start` refuse while a node runs, naming
//! its PID, and change nothing, even with the `lock` files deleted or a node dir moved away),
//! a total supply beyond u64 refused, and SIGTERM stopping a node as cleanly as Ctrl-C. Every
//! process runs on free loopback ports in a temp dir and is killed by PID when the test ends.

use benmo::testing::cluster::{free_ports, LocalCluster};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_benmo");
const WAIT: Duration = Duration::from_secs(30);

fn cluster(nodes: usize, start: &[usize]) -> (tempfile::TempDir, LocalCluster) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCluster::init(Path::new(EXE), dir.path(), nodes, 100).unwrap();
    for &i in start {
        c.start(i).unwrap();
    }
    (dir, c)
}

/// What running nodes keep writing on their own: their stderr logs and message traces.
fn is_log(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    name.ends_with(".stderr") || name.starts_with("trace.log")
}

/// A snapshot once the files stop changing: an idle node brings its superblock up to its
/// last sync (`Store::settle`) once, a tick after it.
fn settled_snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut before = snapshot(dir);
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let now = snapshot(dir);
        if now == before {
            break;
        }
        before = now;
    }
    before
}

/// Every file and dir under `dir` with its mode and bytes, except the logs above.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            let meta = e.metadata().unwrap();
            let mode = meta.permissions().mode();
            if meta.is_dir() {
                out.insert(path.clone(), (mode, Vec::new()));
                todo.push(path);
            } else if !is_log(&path) {
                out.insert(path.clone(), (mode, fs::read(&path).unwrap()));
            }
        }
    }
    out
}

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs a command that must end by itself within WAIT; kills it by PID (and fails) if not.
fn run(cmd: &mut Command) -> Ran {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || drop(tx.send(child.wait_with_output())));
    match rx.recv_timeout(WAIT) {
        Ok(out) => {
            let out = out.unwrap();
            Ran {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into(),
                stderr: String::from_utf8_lossy(&out.stderr).into(),
            }
        }
        Err(_) => {
            Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .ok();
            panic!("{cmd:?} did not end within {WAIT:?}");
        }
    }
}

/// A refusal: non-zero exit, nothing on stdout, exactly one `error:` line on stderr (a usage
/// error adds a `try 'benmo ... --help'` hint). Returns the error line.
fn refused(ran: &Ran, what: &str) -> String {
    assert_ne!(ran.code, Some(0), "{what} was not refused: {}", ran.stdout);
    assert_eq!(ran.stdout, "", "{what} printed to stdout");
    let lines: Vec<&str> = ran
        .stderr
        .lines()
        .filter(|l| !l.starts_with("try 'benmo "))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: want one line, got {:?}",
        ran.stderr
    );
    assert!(lines[0].starts_with("error: "), "{what}: {:?}", lines[0]);
    lines[0].to_string()
}

fn benmo(args: &[&str], data: &Path) -> Command {
    let mut c = Command::new(EXE);
    c.args(args).arg("--data").arg(data);
    c
}

/// A transfer from `from` commits, as seen at `from`.
fn commits(c: &mut LocalCluster, from: usize, to: usize, amount: u64) {
    let node = c.node(from);
    node.send(&format!("moneyTransfer {from} {to} {amount}"));
    let line = node
        .wait_for(Instant::now() + WAIT, |l| {
            l.starts_with("committed ") || l.starts_with("error: ")
        })
        .expect("an answer to moneyTransfer");
    assert!(line.starts_with("committed "), "{line}");
}

#[test]
fn a_second_node_on_the_same_dir_is_refused_naming_the_holder() {
    let (_tmp, mut c) = cluster(3, &[0]);
    let pid = c.node(0).pid();
    // Point node 0 at another free port: the lock, not the port, must stop the second one.
    let conf = c.data.join("cluster.conf");
    let text = fs::read_to_string(&conf).unwrap();
    let old = text.lines().find(|l| l.starts_with("node 0 ")).unwrap();
    let new = format!("node 0 127.0.0.1:{}", free_ports(1));
    fs::write(&conf, text.replace(old, &new)).unwrap();
    let before = snapshot(&c.data);

    let line = refused(&run(&mut benmo(&["node", "0"], &c.data)), "second node 0");
    assert!(
        line.contains(&format!("node 0 is already running (pid {pid}")),
        "{line}"
    );
    let dir = c.data.join("node0");
    assert!(
        line.contains(&format!("holds the lock on {})", dir.display())),
        "{line}"
    );
    assert_eq!(
        snapshot(&c.data),
        before,
        "the refused node changed the data dir"
    );

    // init refuses too, even on a dir with no blocks yet, and with or without --force.
    for force in [false, true] {
        let mut args = vec!["init", "--nodes", "3"];
        args.extend(force.then_some("--force"));
        let line = refused(&run(&mut benmo(&args, &c.data)), "init");
        assert!(line.contains("node 0 is running on "), "{line}");
        assert!(line.contains(&format!("(pid {pid})")), "{line}");
        assert_eq!(
            snapshot(&c.data),
            before,
            "a refused init changed the data dir"
        );
    }
    assert!(c.node(0).exited().is_none(), "the first node 0 died");
    assert!(
        c.status(0, WAIT).is_some(),
        "the first node 0 stopped answering"
    );
}

#[test]
fn init_refuses_while_a_node_runs_and_the_cluster_goes_on() {
    let (_tmp, mut c) = cluster(3, &[0, 1, 2]);
    commits(&mut c, 0, 1, 5);
    c.converge(WAIT).unwrap();
    let pids: Vec<u32> = (0..3).map(|i| c.node(i).pid()).collect();
    let before = settled_snapshot(&c.data);
    let key = fs::read(c.data.join("cluster.key")).unwrap();

    for args in [
        &["init"][..],
        &["init", "--force"],
        &["init", "--force", "--nodes", "5", "--balance", "7"],
    ] {
        let line = refused(&run(&mut benmo(args, &c.data)), &format!("{args:?}"));
        // The first node dir is named, with its holder.
        assert!(
            line.contains(&format!(
                "node 0 is running on {}",
                c.data.join("node0").display()
            )),
            "{line}"
        );
        assert!(line.contains(&format!("(pid {})", pids[0])), "{line}");
        assert_eq!(snapshot(&c.data), before, "{args:?} changed the data dir");
        assert_eq!(fs::read(c.data.join("cluster.key")).unwrap(), key);
    }
    // Only node 2 running: init names node 2.
    c.kill(0);
    c.kill(1);
    let line = refused(&run(&mut benmo(&["init", "--force"], &c.data)), "init");
    assert!(line.contains("node 2 is running on "), "{line}");
    assert!(line.contains(&format!("(pid {})", pids[2])), "{line}");
    // The running cluster never noticed.
    c.start(0).unwrap();
    c.start(1).unwrap();
    commits(&mut c, 1, 2, 7);
    let status = c.converge(WAIT).unwrap();
    assert_eq!(status.transfers, 2);
    assert!(c.audit().unwrap().contains("audit ok"));
}

/// Issue 18, bug 4: with three nodes running, `rm data/node*/lock` then `benmo init --force`
/// used to exit 0, write a new key and wipe every chain, while the nodes went on printing
/// `committed`. The lock is held on each node dir itself now.
#[test]
fn init_refuses_a_live_cluster_whose_lock_files_were_deleted() {
    let (_tmp, mut c) = cluster(3, &[0, 1, 2]);
    commits(&mut c, 0, 1, 5);
    c.converge(WAIT).unwrap();
    let pids: Vec<u32> = (0..3).map(|i| c.node(i).pid()).collect();
    let locks: Vec<PathBuf> = (0..3)
        .map(|i| c.data.join(format!("node{i}")).join("lock"))
        .collect();
    let rm = Command::new("rm").args(&locks).status().unwrap();
    assert!(rm.success(), "rm failed");
    let before = settled_snapshot(&c.data);
    let key = fs::read(c.data.join("cluster.key")).unwrap();

    for args in [
        &["init", "--force"][..],
        &["init", "--force", "--nodes", "5", "--balance", "7"],
        &["init"],
    ] {
        let line = refused(&run(&mut benmo(args, &c.data)), &format!("{args:?}"));
        let node0 = c.data.join("node0");
        let want = format!("node 0 is running on {} (pid {})", node0.display(), pids[0]);
        assert!(line.contains(&want), "{args:?}: {line}");
        assert_eq!(snapshot(&c.data), before, "{args:?} changed the data dir");
        assert_eq!(fs::read(c.data.join("cluster.key")).unwrap(), key);
    }
    for (i, lock) in locks.iter().enumerate() {
        assert!(!lock.exists(), "{} came back", lock.display());
        assert!(c.node(i).exited().is_none(), "node {i} died");
    }
    // The cluster goes on, and the new transfer is on every chain.
    commits(&mut c, 1, 2, 7);
    let status = c.converge(WAIT).unwrap();
    assert_eq!(status.transfers, 2);
    for i in 0..3 {
        c.kill(i);
    }
    let audit = c.audit().unwrap();
    let want = format!("3 nodes, depth {0}..{0}, 2 transfers", status.depth);
    assert!(audit.contains(&want), "{audit}");
}

/// A node whose dir was moved away holds no lock that init can find in the data dir, but it
/// still holds its port: init reads the ports from the existing cluster.conf and refuses.
#[test]
fn init_refuses_while_a_port_of_the_existing_cluster_is_in_use() {
    let (_tmp, mut c) = cluster(3, &[1]);
    let conf = fs::read_to_string(c.data.join("cluster.conf")).unwrap();
    let addr = conf
        .lines()
        .find_map(|l| l.strip_prefix("node 1 "))
        .unwrap()
        .trim()
        .to_string();
    let (node1, moved) = (c.data.join("node1"), c.data.join("elsewhere"));
    fs::rename(&node1, &moved).unwrap();
    let before = snapshot(&c.data);
    let key = fs::read(c.data.join("cluster.key")).unwrap();
    for args in [&["init", "--force"][..], &["init", "--nodes", "3"]] {
        let line = refused(&run(&mut benmo(args, &c.data)), &format!("{args:?}"));
        let want = format!(
            "node 1 of {} may be running: its address {addr} is in use",
            c.data.display()
        );
        assert!(line.contains(&want), "{args:?}: {line}");
        assert_eq!(snapshot(&c.data), before, "{args:?} changed the data dir");
        assert_eq!(fs::read(c.data.join("cluster.key")).unwrap(), key);
    }
    fs::rename(&moved, &node1).unwrap();
    assert!(c.node(1).exited().is_none(), "node 1 died");
    // Once it is stopped, init goes ahead.
    c.kill(1);
    let ran = run(&mut benmo(&["init", "--force", "--nodes", "3"], &c.data));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
}

#[test]
fn cluster_sh_start_refuses_a_live_data_dir_and_changes_nothing() {
    let (_tmp, mut c) = cluster(3, &[0, 1, 2]);
    commits(&mut c, 2, 0, 3);
    c.converge(WAIT).unwrap();
    let pid = c.node(0).pid();
    let conf = fs::read_to_string(c.data.join("cluster.conf")).unwrap();
    let node0 = conf.lines().find(|l| l.starts_with("node 0 ")).unwrap();
    let port = node0.rsplit(':').next().unwrap().to_string();
    let before = settled_snapshot(&c.data);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh");
    let cluster_sh = |data: &Path, args: &[&str]| {
        run(Command::new("bash")
            .arg(&script)
            .arg("--data")
            .arg(data)
            .args(args)
            .env("BENMO_BIN", EXE))
    };
    let other = free_ports(3).to_string();
    for args in [
        &["--base-port", &port, "start", "3"][..],
        // Free ports, but the node dirs are locked by the live nodes.
        &["--base-port", &other, "start", "3"],
        &["--keep", "start"],
    ] {
        let ran = cluster_sh(&c.data, args);
        assert_ne!(ran.code, Some(0), "{args:?} started: {}", ran.stdout);
        let want = format!("node 0 of {} is running (pid {pid})", c.data.display());
        assert!(ran.stderr.contains(&want), "{args:?}: {}", ran.stderr);
        assert_eq!(snapshot(&c.data), before, "{args:?} changed the data dir");
    }
    // Another, stopped cluster's data dir on the live cluster's ports: the ports are checked
    // before init --force could wipe it.
    let spare = tempfile::tempdir().unwrap();
    LocalCluster::init(Path::new(EXE), spare.path(), 3, 100).unwrap();
    let spare_before = snapshot(spare.path());
    let ran = cluster_sh(spare.path(), &["--base-port", &port, "start", "3"]);
    assert_ne!(ran.code, Some(0), "started on taken ports: {}", ran.stdout);
    assert!(
        ran.stderr
            .contains(&format!("port {port} (node 0) is already in use")),
        "{}",
        ran.stderr
    );
    assert_eq!(
        snapshot(spare.path()),
        spare_before,
        "the stopped cluster was wiped"
    );
    for i in 0..3 {
        assert!(c.node(i).exited().is_none(), "node {i} died");
    }
    commits(&mut c, 0, 1, 1);
    assert_eq!(c.converge(WAIT).unwrap().transfers, 2);
}

#[test]
fn init_refuses_a_total_supply_beyond_u64() {
    let tmp = tempfile::tempdir().unwrap();
    let fresh = tmp.path().join("fresh");
    let args = ["init", "--nodes", "3", "--balance", "18446744073709551605"];
    let line = refused(&run(&mut benmo(&args, &fresh)), "init");
    assert!(
        line.contains("more money than a 64-bit balance holds"),
        "{line}"
    );
    assert!(
        !fresh.exists(),
        "a refused init created {}",
        fresh.display()
    );
    // Over an existing cluster, with --force: still refused, nothing changed.
    let (_tmp, c) = cluster(3, &[]);
    let before = snapshot(&c.data);
    let mut args = args.to_vec();
    args.push("--force");
    refused(&run(&mut benmo(&args, &c.data)), "init --force");
    assert_eq!(snapshot(&c.data), before);
    // The largest supply that fits is accepted.
    let ok = run(&mut benmo(
        &["init", "--nodes", "3", "--balance", "6148914691236517205"],
        &fresh,
    ));
    assert_eq!(ok.code, Some(0), "{}", ok.stderr);
}

#[test]
fn sigterm_stops_a_node_cleanly() {
    let (_tmp, mut c) = cluster(3, &[0, 1]);
    commits(&mut c, 0, 1, 4);
    let pid = c.node(0).pid();
    let sent = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let line = c
        .node(0)
        .wait_for(Instant::now() + WAIT, |l| l.starts_with("node 0 stopped"));
    assert_eq!(line.as_deref(), Some("node 0 stopped"));
    let deadline = Instant::now() + WAIT;
    let code = loop {
        if let Some(code) = c.node(0).exited() {
            break code;
        }
        assert!(Instant::now() < deadline, "node 0 still runs after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0), "SIGTERM should exit 0");
    // Its lock went with it: it starts again at once, with its transfer.
    c.kill(0);
    c.start(0).unwrap();
    assert_eq!(c.converge(WAIT).unwrap().transfers, 1);
}
