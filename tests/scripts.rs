//! `scripts/cluster.sh` as a student meets it at a bash prompt: a wrong argument changes
//! nothing (not even a data dir whose nodes are all stopped), usage errors are one line and
//! exit 2, `ask` gives back the node's own reply at once, and `wait` does not flood the logs.
//! Each test runs its own cluster on free ports in a temp dir; `stop` ends exactly its PIDs.

use benmo::testing::cluster::free_ports;
use benmo::trace::read;
use benmo::trace::record::Ev;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_benmo");

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A cluster run by `scripts/cluster.sh`; stopped on drop.
struct Script {
    dir: tempfile::TempDir,
    port: u16,
}

impl Script {
    fn start(n: usize) -> Script {
        let s = Script {
            dir: tempfile::tempdir().unwrap(),
            port: free_ports(n),
        };
        let out = s.run(&["start", &n.to_string()]);
        assert!(out.status.success(), "start: {}", text(&out.stderr));
        s
    }

    fn run(&self, args: &[&str]) -> Output {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh");
        Command::new("bash")
            .arg(script)
            .arg("--data")
            .arg(self.dir.path())
            .args(["--base-port", &self.port.to_string()])
            .args(args)
            .env("BENMO_BIN", EXE)
            .output()
            .unwrap()
    }

    /// Runs `args` and checks the exit code, saying what the script printed if it differs.
    fn expect(&self, args: &[&str], code: i32) -> Output {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: stdout {:?} stderr {:?}",
            text(&out.stdout),
            text(&out.stderr)
        );
        out
    }

    fn log(&self, id: usize) -> String {
        fs::read_to_string(self.dir.path().join(format!("node{id}.log"))).unwrap_or_default()
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.run(&["stop"]);
    }
}

/// Every file of the data dir with its contents, except the nodes' logs and traces.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if !path.to_string_lossy().contains("trace.log") {
                files.insert(path.clone(), fs::read(&path).unwrap_or_default());
            }
        }
    }
    files
}

fn audit(dir: &Path) -> String {
    let out = Command::new(EXE)
        .args(["audit", "--data"])
        .arg(dir)
        .output()
        .unwrap();
    text(&out.stdout)
}

/// A usage error is exactly one line and the pointer to --help, on stderr only.
fn assert_usage_error(out: &Output, what: &str) {
    assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out.stderr));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{what}: {err}");
    assert!(lines[0].starts_with("cluster.sh: error: "), "{what}: {err}");
    assert_eq!(lines[1], "try 'scripts/cluster.sh --help'", "{what}");
    assert!(out.stdout.is_empty(), "{what}: {}", text(&out.stdout));
}

#[test]
fn a_bad_argument_never_touches_a_stopped_cluster_with_committed_blocks() {
    let s = Script::start(3);
    s.expect(&["ask", "0", "moneyTransfer", "0", "1", "5"], 0);
    s.expect(&["wait", "30"], 0);
    s.expect(&["stop"], 0);
    let before_audit = audit(s.dir.path());
    assert!(before_audit.contains("depth 1..1"), "{before_audit}");
    let before = snapshot(s.dir.path());
    let bad: &[&[&str]] = &[
        // A node flag that needs --classroom: this one wiped the data, then failed.
        &["--phase-delay", "2s", "start", "3"],
        &["--delay", "5s", "start", "3"],
        &["--delay", "5s..1s", "start"],
        &["--delay", "20ms..25ms", "start"],
        &["--classroom", "--phase-delay", "soon", "start", "3"],
        &["--delya", "20s..60s", "start"],
        &["start", "4"],
        &["start", "3", "3"],
        &["start", "three"],
        &["--base-port", "70000", "start"],
        &["strat", "3"],
        &["--keep", "--bogus", "start"],
        &["start", "--delay"],
    ];
    for args in bad {
        let out = s.run(args);
        assert_usage_error(&out, &format!("{args:?}"));
        assert_eq!(
            snapshot(s.dir.path()),
            before,
            "{args:?} changed the data dir"
        );
    }
    // scripts/terminals.sh --fresh wipes too, with init --force: the same holds.
    let terminals = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/terminals.sh");
    for flags in [
        &["--phase-delay", "2s"][..],
        &["--delay", "5s"],
        &["--nodes", "4"],
    ] {
        let out = Command::new("bash")
            .arg(&terminals)
            .args([
                "--fresh",
                "--no-attach",
                "--session",
                "benmo-test-never",
                "--data",
            ])
            .arg(s.dir.path())
            .args(flags)
            .env("BENMO_BIN", EXE)
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.starts_with("terminals.sh: error: "), "{flags:?}: {err}");
        assert_eq!(err.lines().count(), 2, "{flags:?}: {err}");
        assert_eq!(
            snapshot(s.dir.path()),
            before,
            "{flags:?} changed the data dir"
        );
    }
    assert_eq!(audit(s.dir.path()), before_audit);
    // The suggestion names the flag meant.
    let out = s.run(&["--delya", "20s..60s", "start"]);
    assert!(text(&out.stderr).contains("did you mean --delay?"));
}

#[test]
fn usage_errors_exit_2_refusals_exit_1_and_help_exits_0() {
    let s = Script::start(3);
    let help = s.expect(&["--help"], 0);
    assert!(text(&help.stdout).starts_with("usage: scripts/cluster.sh"));
    for args in [
        &[][..],
        &["bogus"],
        &["crash", "7"],
        &["crash", "x"],
        &["sever", "0", "0"],
        &["sever", "0"],
        &["wait", "soon"],
        &["logs", "-x"],
        &["ask", "0"],
    ] {
        assert_usage_error(&s.run(args), &format!("{args:?}"));
    }
    // Refused: exit 1 with the reason.
    let out = s.expect(&["restart", "0"], 1);
    assert!(text(&out.stderr).contains("node 0 is running"));
    let out = s.expect(&["ask", "0", "moneyTransfer", "1", "0", "5"], 1);
    assert!(text(&out.stdout).starts_with("error: "), "{out:?}");
}

#[test]
fn ask_returns_the_nodes_own_reply_at_once() {
    let s = Script::start(3);
    let quick = Duration::from_secs(8); // `ask` gives up after 10 s
                                        // Bare, these would make the node read ask's `status` marker as an argument.
    for bare in ["moneyTransfer", "severLink", "restoreLink", "SEVERLINK"] {
        let t = Instant::now();
        let out = s.run(&["ask", "0", bare]);
        assert_usage_error(&out, bare);
        assert!(text(&out.stderr).contains("needs its arguments"));
        assert!(t.elapsed() < quick);
    }
    // The node's own error, with exit 1, as soon as it gives it.
    for (args, want) in [
        (
            &["ask", "0", "moneyTransfer", "0", "1"][..],
            "error: usage: moneyTransfer DEBIT CREDIT AMOUNT\n",
        ),
        (&["ask", "0", "severLink", "9"], "error: "),
        (&["ask", "0", "bogus"], "error: unknown command"),
    ] {
        let t = Instant::now();
        let out = s.expect(args, 1);
        assert!(text(&out.stdout).starts_with(want), "{args:?}: {out:?}");
        assert!(t.elapsed() < quick, "{args:?} took {:?}", t.elapsed());
    }
    // A bare command sent earlier (by `send`) eats ask's own status marker: ask still
    // returns the node's reply instead of "did not answer".
    s.expect(&["send", "0", "moneyTransfer"], 0);
    let t = Instant::now();
    let out = s.expect(&["ask", "0", "0"], 1);
    assert!(text(&out.stdout).contains("error: "), "{out:?}");
    assert!(!text(&out.stderr).contains("did not answer"), "{out:?}");
    assert!(t.elapsed() < quick, "took {:?}", t.elapsed());
    let out = s.expect(&["ask", "0", "printBalance"], 0);
    assert_eq!(text(&out.stdout), "balance 0 100\n");
}

#[test]
fn wait_does_not_flood_the_logs_with_status_polls() {
    let s = Script::start(3);
    // Node 0, cut off from both peers, holds a transfer it cannot commit.
    s.expect(&["ask", "0", "severLink", "1"], 0);
    s.expect(&["ask", "0", "severLink", "2"], 0);
    s.expect(&["ask", "0", "moneyTransfer", "0", "1", "5"], 0);
    let polls = |s: &Script| s.log(0).matches("\nnode 0 depth ").count();
    let before = polls(&s);
    let out = s.expect(&["wait", "3", "0"], 1);
    assert!(text(&out.stderr).contains("node 0 has 1 queued transfer(s)"));
    // One poll, and one more only after a commit or 5 s: not one every 0.2 s.
    let during = polls(&s) - before;
    assert!(during <= 2, "wait wrote {during} status lines in 3 s");
}

/// The events of node `id`'s trace, as `benmo trace` reads them.
fn trace_events(dir: &Path, id: usize) -> Vec<Ev> {
    let traces = read::load(dir).unwrap();
    let recs = traces.nodes[id].clone().unwrap_or_default();
    recs.into_iter().map(|r| r.ev).collect()
}

/// Waits (bounded) until node `id`'s trace holds an event that `want` picks.
fn await_event(s: &Script, id: usize, what: &str, want: impl Fn(&Ev) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !trace_events(s.dir.path(), id).iter().any(&want) {
        assert!(Instant::now() < deadline, "node {id} traced no {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn real_nodes_trace_severs_crashes_kills_step_downs_and_timeouts() {
    let s = Script::start(3);
    s.expect(&["ask", "0", "moneyTransfer", "0", "1", "5"], 0);
    s.expect(&["wait", "30"], 0);
    let status = text(&s.expect(&["ask", "0", "status"], 0).stdout);
    let leader: usize = status
        .split_whitespace()
        .skip_while(|w| *w != "leader")
        .nth(1)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no leader in {status}"));
    let (a, b) = ((leader + 1) % 3, (leader + 2) % 3);
    let (l, a_, b_) = (leader.to_string(), a.to_string(), b.to_string());
    // The leader, cut off from both peers with a transfer to offer, stops leading (it hears
    // no majority), runs for leader again and its election times out.
    s.expect(&["sever", &l, &a_], 0);
    s.expect(&["sever", &l, &b_], 0);
    s.expect(&["ask", &l, "moneyTransfer", &l, &a_, "1"], 0);
    let down = |e: &Ev| matches!(e, Ev::StepDown { leading: true, .. });
    await_event(&s, leader, "step-down", down);
    await_event(&s, leader, "election timeout", |e| {
        matches!(e, Ev::Timeout { .. })
    });
    let severed = |peer| move |e: &Ev| *e == Ev::Sever { peer };
    assert!(trace_events(s.dir.path(), leader).iter().any(severed(a)));
    assert!(trace_events(s.dir.path(), a).iter().any(severed(leader)));
    s.expect(&["restore", &l, &a_], 0);
    // crashNode is recorded as it happens; a kill -9 is inferred at the restart.
    s.expect(&["crash", &a_], 0);
    s.expect(&["kill", &b_], 0);
    s.expect(&["restart", &b_], 0);
    let crash = |killed| move |e: &Ev| *e == Ev::Crash { killed };
    assert!(trace_events(s.dir.path(), a).iter().any(crash(false)));
    let evs = trace_events(s.dir.path(), b);
    let killed = evs.iter().position(crash(true)).expect("an inferred crash");
    assert!(matches!(evs[killed + 1], Ev::Start { inc: 2 }), "{evs:?}");
    // The first round's ladder marks the moment its value was chosen.
    let out = Command::new(EXE)
        .args(["trace", "--depth=1", "--data"])
        .arg(s.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ladder = text(&out.stdout);
    assert!(ladder.contains("chosen: 2 of 3 nodes accepted"), "{ladder}");
    assert!(ladder.lines().all(|l| l.len() <= 80), "{ladder}");
}
