//! Real `benmo node` processes on free loopback ports, in temp dirs, driven through stdin.

use benmo::testing::cluster::LocalCluster;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_benmo");
const SETTLE: Duration = Duration::from_secs(30);

fn cluster(nodes: usize) -> (tempfile::TempDir, LocalCluster) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCluster::init(Path::new(EXE), dir.path(), nodes, 100).unwrap();
    c.start_all().unwrap();
    (dir, c)
}

fn soon() -> Instant {
    Instant::now() + SETTLE
}

/// Sends a transfer and returns the reply line (`queued ...` or `error: ...`).
fn transfer(c: &mut LocalCluster, from: usize, to: usize, amount: u64) -> String {
    let node = c.node(from);
    node.send(&format!("moneyTransfer {from} {to} {amount}"));
    node.wait_for(soon(), |l| {
        l.starts_with("queued ") || l.starts_with("error: ")
    })
    .expect("a reply")
}

fn committed(c: &mut LocalCluster, id: usize, txid: &str) -> String {
    let prefix = format!("committed {txid} ");
    if let Some(l) = c.node(id).seen.iter().find(|l| l.starts_with(&prefix)) {
        return l.clone();
    }
    c.node(id)
        .wait_for(soon(), |l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("{txid} did not commit"))
}

fn txid(reply: &str) -> String {
    assert!(reply.starts_with("queued "), "expected queued, got {reply}");
    reply.split_whitespace().nth(1).unwrap().to_string()
}

fn balances(c: &mut LocalCluster, id: usize) -> Vec<String> {
    let n = c.nodes.len();
    let node = c.node(id);
    node.send("printBalances");
    (0..n)
        .map(|_| {
            node.wait_for(soon(), |l| l.starts_with("balance "))
                .unwrap()
        })
        .collect()
}

fn chain(c: &mut LocalCluster, id: usize) -> Vec<String> {
    let node = c.node(id);
    node.send("printBlockchain");
    let mut lines = Vec::new();
    let end = node.wait_for(soon(), |l| {
        if l.starts_with("block ") || l.starts_with("  transfer ") {
            lines.push(l.to_string());
        }
        l.starts_with("chain depth ")
    });
    assert!(end.is_some(), "printBlockchain did not finish");
    lines
}

fn agree(c: &mut LocalCluster, expect_all: &[usize]) {
    let status = c.converge(SETTLE).expect("convergence");
    let reference = chain(c, expect_all[0]);
    let reference_balances = balances(c, expect_all[0]);
    for &i in &expect_all[1..] {
        assert_eq!(chain(c, i), reference, "node {i}'s chain differs");
        assert_eq!(
            balances(c, i),
            reference_balances,
            "node {i}'s balances differ"
        );
    }
    assert!(status.depth > 0);
    let audit = c.audit().expect("audit passes");
    assert!(audit.contains("audit ok"), "{audit}");
}

fn transfers_converge(nodes: usize) {
    let (_dir, mut c) = cluster(nodes);
    let mut ids = Vec::new();
    for from in 0..nodes {
        for k in 0..3 {
            ids.push((
                from,
                txid(&transfer(
                    &mut c,
                    from,
                    (from + 1 + k % (nodes - 1)) % nodes,
                    5,
                )),
            ));
        }
    }
    for (from, id) in &ids {
        let line = committed(&mut c, *from, id);
        assert!(line.contains(" depth "), "{line}");
    }
    let all: Vec<usize> = (0..nodes).collect();
    agree(&mut c, &all);
    let total: u64 = balances(&mut c, 0)
        .iter()
        .map(|l| l.split_whitespace().nth(2).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 100 * nodes as u64);
}

#[test]
fn five_nodes_agree_on_transfers_from_several_nodes() {
    transfers_converge(5);
}

#[test]
fn three_nodes_agree_on_transfers_from_several_nodes() {
    transfers_converge(3);
}

#[test]
fn overdraft_and_foreign_debits_are_rejected() {
    let (_dir, mut c) = cluster(3);
    assert!(transfer(&mut c, 0, 1, 101).starts_with("error: insufficient funds"));
    let ok = transfer(&mut c, 0, 1, 60);
    // 60 queued leaves 40 available, even before it commits.
    assert!(transfer(&mut c, 0, 2, 41).starts_with("error: insufficient funds"));
    let node = c.node(1);
    node.send("moneyTransfer 0 2 1");
    assert!(node
        .wait_for(soon(), |l| l.starts_with("error:"))
        .unwrap()
        .contains("own account"));
    committed(&mut c, 0, &txid(&ok));
    c.converge(SETTLE).unwrap(); // node 2 may learn of the commit a moment later
    assert_eq!(
        balances(&mut c, 2),
        vec!["balance 0 40", "balance 1 160", "balance 2 100"]
    );
}

#[test]
fn crashed_node_restarts_and_catches_up_without_new_traffic() {
    let (_dir, mut c) = cluster(5);
    c.node(4).send("crashNode");
    let deadline = Instant::now() + SETTLE;
    while c.node(4).exited().is_none() {
        assert!(Instant::now() < deadline, "crashNode did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    c.kill(4);
    let mut ids = Vec::new();
    for from in 0..4 {
        ids.push((from, txid(&transfer(&mut c, from, 4, 7))));
    }
    for (from, id) in &ids {
        committed(&mut c, *from, id);
    }
    c.start(4).unwrap();
    // No new transfers: node 4 must fetch what it missed by itself.
    agree(&mut c, &[0, 1, 2, 3, 4]);
    assert_eq!(balances(&mut c, 4)[4], "balance 4 128");
}

fn sever_both(c: &mut LocalCluster, a: usize, b: usize, cmd: &str) {
    c.node(a).send(&format!("{cmd} {b}"));
    c.node(b).send(&format!("{cmd} {a}"));
}

#[test]
fn severed_minority_cannot_commit_and_converges_after_restore() {
    let (_dir, mut c) = cluster(5);
    for a in [3, 4] {
        for b in [0, 1, 2] {
            sever_both(&mut c, a, b, "severLink");
        }
    }
    let minority = txid(&transfer(&mut c, 3, 4, 9));
    let majority = txid(&transfer(&mut c, 0, 1, 9));
    committed(&mut c, 0, &majority);
    // Give the minority ample time to (wrongly) commit.
    let early = c
        .node(3)
        .wait_for(Instant::now() + Duration::from_secs(2), |l| {
            l.starts_with("committed ")
        });
    assert_eq!(early, None, "a minority committed");
    let s = c.status(3, SETTLE).unwrap();
    assert_eq!((s.depth, s.queue), (0, 1));
    for a in [3, 4] {
        for b in [0, 1, 2] {
            sever_both(&mut c, a, b, "restoreLink");
        }
    }
    committed(&mut c, 3, &minority);
    agree(&mut c, &[0, 1, 2, 3, 4]);
    let copies = chain(&mut c, 0)
        .iter()
        .filter(|l| l.starts_with(&format!("  transfer {minority} ")))
        .count();
    assert_eq!(copies, 1);
}

#[test]
fn transfer_acknowledged_just_before_a_kill_commits_exactly_once() {
    let (_dir, mut c) = cluster(5);
    let id = txid(&transfer(&mut c, 2, 0, 11));
    c.kill(2); // SIGKILL right after `queued`
    c.start(2).unwrap();
    committed(&mut c, 2, &id);
    agree(&mut c, &[0, 1, 2, 3, 4]);
    let copies = chain(&mut c, 1)
        .iter()
        .filter(|l| l.starts_with(&format!("  transfer {id} ")))
        .count();
    assert_eq!(copies, 1);
    assert_eq!(balances(&mut c, 3)[2], "balance 2 89");
}

#[test]
fn node_keeps_serving_after_stdin_ends() {
    let (_dir, mut c) = cluster(3);
    c.node(2).close_stdin();
    c.kill(1); // node 0 now needs node 2's votes to commit anything
    let id = txid(&transfer(&mut c, 0, 2, 3));
    committed(&mut c, 0, &id);
    assert!(c.node(2).exited().is_none(), "node 2 exited at EOF");
}

fn benmo(args: &[&str], data: &Path) -> (bool, String) {
    let out = Command::new(EXE)
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn node_refuses_to_start_with_one_line_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = benmo(&["node", "0"], dir.path());
    assert!(!ok && text.contains("not initialised"), "{text}");
    let mut c = LocalCluster::init(Path::new(EXE), dir.path(), 3, 100).unwrap();
    let (ok, text) = benmo(&["node", "3"], dir.path());
    assert!(!ok && text.contains("out of range"), "{text}");
    c.start(0).unwrap();
    // Its node dir is taken (tests/setup_lock.rs has more).
    let (ok, text) = benmo(&["node", "0"], dir.path());
    assert!(!ok && text.contains("already running"), "{text}");
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    // Its port is taken.
    let conf = std::fs::read_to_string(dir.path().join("cluster.conf")).unwrap();
    let addr = conf
        .lines()
        .find_map(|l| l.strip_prefix("node 1 "))
        .unwrap();
    let _squatter = std::net::TcpListener::bind(addr.trim()).unwrap();
    let (ok, text) = benmo(&["node", "1"], dir.path());
    assert!(!ok && text.contains("cannot listen"), "{text}");
    assert_eq!(text.trim().lines().count(), 1, "{text}");
}

#[test]
fn init_refuses_to_wipe_committed_blocks_without_force() {
    let (dir, mut c) = cluster(3);
    let id = txid(&transfer(&mut c, 0, 1, 1));
    committed(&mut c, 0, &id);
    for i in 0..3 {
        c.kill(i);
    }
    let (ok, text) = benmo(&["init", "--nodes", "3"], dir.path());
    assert!(!ok && text.contains("--force"), "{text}");
    assert!(c.audit().unwrap().contains("depth 1..1") || c.audit().unwrap().contains("audit ok"));
    let (ok, text) = benmo(&["init", "--nodes", "3", "--force"], dir.path());
    assert!(ok, "{text}");
}

/// Runs `benmo node 0` with `input` piped to its stdin; returns its stdout and exit code.
/// A node that does not stop within `SETTLE` is killed (by its PID) and the test fails.
fn piped_node(data: &Path, input: &str) -> (String, Option<i32>) {
    use std::io::{Read, Write};
    use std::process::Stdio;
    let mut child = Command::new(EXE)
        .args(["node", "0", "--data"])
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).ok();
        text
    });
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let deadline = soon();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("node 0 did not stop after quit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (reader.join().unwrap(), code)
}

#[test]
fn piped_commands_before_quit_are_all_answered_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    LocalCluster::init(Path::new(EXE), dir.path(), 3, 100).unwrap();
    let (out, code) = piped_node(dir.path(), "moneyTransfer 0 1 5\nstatus\nquit\n");
    assert_eq!(code, Some(0), "{out}");
    let queued = out.lines().find(|l| l.starts_with("queued 0.1 "));
    assert!(queued.is_some(), "no reply to moneyTransfer: {out}");
    assert!(out.contains("node 0 depth 0 "), "no reply to status: {out}");
    assert!(out.trim_end().ends_with("node 0 stopped"), "{out}");
    // The queued transfer survived the stop: the next start still holds it.
    let (out, code) = piped_node(dir.path(), "printQueue\nquit\n");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("queue 0.1 0 1 5"), "{out}");
}

#[test]
fn a_severed_link_shows_at_both_ends_and_says_how_it_heals() {
    let (_dir, mut c) = cluster(3);
    // The first line of the reply to `cmd` that starts with `want`.
    let ask = |c: &mut LocalCluster, id: usize, cmd: &str, want: &str| {
        c.node(id).send(cmd);
        c.node(id)
            .wait_for(soon(), |l| l.starts_with(want))
            .unwrap()
    };
    let reply = |c: &mut LocalCluster, id: usize, cmd: &str| ask(c, id, cmd, "link ");
    assert_eq!(
        reply(&mut c, 0, "restoreLink 1"),
        "link 1 was not severed here"
    );
    assert_eq!(reply(&mut c, 0, "severLink 1"), "link 1 severed");
    let told = c
        .node(1)
        .wait_for(soon(), |l| l.starts_with("link 0 severed by node 0"));
    assert!(told.is_some(), "node 1 was not told");
    let line = ask(&mut c, 1, "status", "link 0 ");
    c.node(1).wait_for(soon(), |l| l.starts_with("link 2 "));
    assert!(line.starts_with("link 0 severed by node 0 "), "{line}");
    // Node 1 severs its end too; node 0 restarts and forgets its own sever, but not node 1's.
    assert_eq!(reply(&mut c, 1, "severLink 0"), "link 0 severed");
    c.kill(0);
    c.start(0).unwrap();
    let told = c
        .node(0)
        .wait_for(soon(), |l| l.starts_with("link 1 severed by node 1"));
    assert!(told.is_some(), "the restarted node 0 was not told");
    let healed = c
        .node(1)
        .wait_for(soon(), |l| l.starts_with("link 0 works again"));
    assert!(healed.is_some(), "node 1 did not say node 0 talks again");
    assert_eq!(reply(&mut c, 1, "restoreLink 0"), "link 0 restored");
    let healed = c
        .node(0)
        .wait_for(soon(), |l| l.starts_with("link 1 works again"));
    assert!(healed.is_some(), "node 0 did not see the restore");
}
