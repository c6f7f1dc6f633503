//! The command line as people and scripts meet it: `benmo` run from a temp working dir
//! (help, version, exit codes, the data dir), a real node's stdin, and `scripts/cluster.sh`.
//! Every process is started here and killed by PID when its test ends.

use benmo::testing::cluster::{free_ports, LocalCluster};
use crossbeam_channel::RecvTimeoutError;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_benmo");
const WAIT: Duration = Duration::from_secs(30);

/// Runs `benmo ARGS` in `dir` with no `$BENMO_DATA`.
fn benmo(dir: &Path, args: &[&str]) -> Output {
    Command::new(EXE)
        .args(args)
        .current_dir(dir)
        .env_remove("BENMO_DATA")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn soon() -> Instant {
    Instant::now() + WAIT
}

// ----- the benmo command -----

#[test]
fn help_and_version_go_to_stdout_and_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["init", "node", "audit", "bench", "trace"] {
        for flag in ["--help", "-h"] {
            let out = benmo(dir.path(), &[sub, flag]);
            let help = text(&out.stdout);
            assert_eq!(out.status.code(), Some(0), "{sub} {flag}");
            assert!(out.stderr.is_empty(), "{sub} {flag}: {}", text(&out.stderr));
            for word in ["usage: benmo", "default", "example:"] {
                assert!(help.contains(word), "{sub} {flag} lacks {word:?}:\n{help}");
            }
        }
    }
    let out = benmo(dir.path(), &["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("commands:"));
    for flag in ["--version", "-V"] {
        let out = benmo(dir.path(), &[flag]);
        assert_eq!(out.status.code(), Some(0));
        let want = format!("benmo {}\n", env!("CARGO_PKG_VERSION"));
        assert_eq!(text(&out.stdout), want);
    }
}

#[test]
fn usage_errors_are_one_line_and_a_hint_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for (args, want) in [
        (&["nod"][..], "did you mean node?"),
        (&["init", "--node", "3"], "did you mean --nodes?"),
        (&["init", "--nodes", "4"], "odd"),
        (&["node", "--bogus"], "unknown flag --bogus"),
        (&["node", "-x"], "unknown flag -x"),
        (&["node", "--phase-delay", "2s"], "needs --classroom"),
        (&["node", "--hold", "prepare"], "needs --classroom"),
        (
            &["node", "--classroom", "--hold", "heartbeat"],
            "not a phase",
        ),
        (
            &["node", "--classroom", "--hold=acept"],
            "did you mean accept?",
        ),
        (&["node", "0", "1"], "unexpected argument"),
        (&["audit", "extra"], "unexpected argument"),
        (&["bench", "--nodes"], "needs a value"),
        (&["--frob"], "unknown flag"),
        (&["trace", "--fromat", "svg"], "did you mean --format?"),
        (&["trace", "--format=png"], "expected svg or text"),
        (&["trace", "--depth", "last"], "not a depth"),
        (&["trace", "extra"], "unexpected argument"),
    ] {
        let out = benmo(dir.path(), args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            out.stdout.is_empty(),
            "{args:?}: stdout {}",
            text(&out.stdout)
        );
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{args:?}: {err}");
        assert!(lines[0].contains(want), "{args:?}: {err}");
        assert!(lines[1].starts_with("try 'benmo "), "{args:?}: {err}");
    }
    assert!(
        !dir.path().join("data").exists(),
        "a usage error wrote data"
    );
}

#[test]
fn runtime_errors_go_to_stderr_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = benmo(dir.path(), &["audit", "--data", "missing"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).starts_with("error: "),
        "{}",
        text(&out.stderr)
    );
    let out = benmo(dir.path(), &["node", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("benmo init"));
    let out = benmo(dir.path(), &["trace", "--format=svg", "--data", "missing"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("error: no traces found in "));
}

#[test]
fn data_dir_is_cwd_data_or_benmo_data_and_flags_take_equals() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(3).to_string();
    let out = benmo(
        dir.path(),
        &["init", "--nodes=3", &format!("--base-port={port}")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let data = dir.path().join("data");
    let conf = std::fs::read_to_string(data.join("cluster.conf")).unwrap();
    assert_eq!(conf.lines().filter(|l| l.starts_with("node ")).count(), 3);
    assert!(text(&out.stdout).contains(&data.display().to_string()));
    assert_eq!(benmo(dir.path(), &["audit"]).status.code(), Some(0));

    let elsewhere = dir.path().join("elsewhere");
    let with_env = |args: &[&str]| {
        Command::new(EXE)
            .args(args)
            .current_dir(dir.path())
            .env("BENMO_DATA", &elsewhere)
            .output()
            .unwrap()
    };
    let out = with_env(&["init", "--nodes", "1", "--base-port", &port]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(elsewhere.join("cluster.conf").exists());
    assert!(text(&out.stdout).contains(&elsewhere.display().to_string()));
    let audit = text(&with_env(&["audit"]).stdout);
    assert!(audit.contains("audit ok: 1 nodes"), "{audit}");
}

// ----- a node's stdin -----

/// A cluster of `n` nodes in a temp dir; none started.
fn cluster(n: usize) -> (tempfile::TempDir, LocalCluster) {
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCluster::init(Path::new(EXE), dir.path(), n, 100).unwrap();
    (dir, c)
}

/// Waits up to 10 s for node `id` to exit; its exit code.
fn exit_code(c: &mut LocalCluster, id: usize) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(code) = c.node(id).exited() {
            return code;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("node {id} did not exit");
}

#[test]
fn quit_and_exit_stop_a_node_cleanly() {
    let (dir, mut c) = cluster(3);
    c.start(0).unwrap();
    c.start(1).unwrap();
    let banner = c.node(0).seen[0].clone();
    assert!(
        banner.contains(&format!("data {}", dir.path().display())),
        "{banner}"
    );
    for (id, word) in [(0, "quit"), (1, "EXIT")] {
        c.node(id).send(word);
        let stopped = format!("node {id} stopped");
        assert!(c.node(id).wait_for(soon(), |l| l == stopped).is_some());
        assert_eq!(exit_code(&mut c, id), Some(0));
    }
}

#[test]
fn command_names_in_any_case_and_suggestions() {
    let (_dir, mut c) = cluster(3);
    c.start(0).unwrap();
    let node = c.node(0);
    node.send("MONEYTRANSFER 0 1 5");
    let reply = node.wait_for(soon(), |l| {
        l.starts_with("queued ") || l.starts_with("error:")
    });
    assert!(reply.unwrap().starts_with("queued "));
    node.send("moneytransfr 0 1 5");
    let reply = node.wait_for(soon(), |l| l.starts_with("error:")).unwrap();
    assert!(reply.contains("did you mean moneyTransfer?"), "{reply}");
    node.send("help");
    let help = node.wait_for(soon(), |l| l.contains("Ctrl-C")).unwrap();
    assert!(help.contains("quit"), "{help}");
}

#[test]
fn bare_transfer_reports_a_bad_credit_before_asking_the_amount() {
    let (_dir, mut c) = cluster(3);
    c.start(0).unwrap();
    let node = c.node(0);
    node.send("moneyTransfer");
    node.send("0");
    node.send("9");
    // No amount sent: the error must come from the credit answer alone.
    let reply = node.wait_for(soon(), |l| l.starts_with("error:")).unwrap();
    assert!(reply.contains("unknown node 9"), "{reply}");
    node.send("printBalance");
    let reply = node.wait_for(soon(), |l| {
        l.starts_with("balance ") || l.starts_with("error:")
    });
    assert_eq!(
        reply.as_deref(),
        Some("balance 0 100"),
        "the next line is a command"
    );
}

#[test]
fn crash_node_says_so_before_it_exits() {
    let (_dir, mut c) = cluster(3);
    c.start(2).unwrap();
    c.node(2).send("crashNode");
    assert!(c
        .node(2)
        .wait_for(soon(), |l| l == "node 2 crashing")
        .is_some());
    assert_eq!(exit_code(&mut c, 2), Some(1));
}

#[test]
fn print_blockchain_fits_80_columns_unless_full() {
    let (_dir, mut c) = cluster(3);
    c.start_all().unwrap();
    let node = c.node(0);
    node.send("moneyTransfer 0 1 99");
    assert!(node
        .wait_for(soon(), |l| l.starts_with("committed "))
        .is_some());
    let chain = |node: &mut benmo::testing::cluster::NodeProc, command: &str| {
        node.send(command);
        let mut lines = Vec::new();
        let end = node.wait_for(soon(), |l| {
            lines.push(l.to_string());
            l.starts_with("chain depth ")
        });
        assert!(end.is_some(), "{command} did not finish");
        lines.retain(|l| {
            l.starts_with("block ") || l.starts_with("  transfer ") || l.starts_with("chain ")
        });
        lines
    };
    let short = chain(node, "printBlockchain");
    assert!(
        short.iter().any(|l| l.starts_with("  transfer ")),
        "{short:?}"
    );
    for line in &short {
        assert!(line.chars().count() <= 80, "{} columns: {line}", line.len());
    }
    let full = chain(node, "printBlockchain full");
    let block = full.iter().find(|l| l.starts_with("block ")).unwrap();
    let hash = block.split_whitespace().nth(3).unwrap();
    assert_eq!(hash.len(), 64, "{block}");
}

// ----- scripts/cluster.sh -----

/// A cluster run by `scripts/cluster.sh` on free ports in a temp dir; stopped on drop.
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

    fn command(&self, args: &[&str]) -> Command {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh");
        let mut c = Command::new(script);
        c.arg("--data")
            .arg(self.dir.path())
            .args(["--base-port", &self.port.to_string()])
            .args(args)
            .env("BENMO_BIN", EXE);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.run(&["stop"]);
    }
}

/// Ends a child by PID with SIGTERM (so its traps run), then reaps it.
struct Terminated(Child);

impl Drop for Terminated {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.0.wait();
    }
}

#[test]
fn cluster_sh_ask_fails_on_errors_and_links_say_what_changed() {
    let s = Script::start(3);
    let out = s.run(&["ask", "0", "bogus"]);
    assert!(!out.status.success(), "ask succeeded on an error reply");
    assert!(text(&out.stdout).contains("error: unknown command"));
    let out = s.run(&["ask", "0", "printBalance"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("balance 0 100\n"));
    let out = s.run(&["sever", "1", "0"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "severed 1-0\n");
    let out = s.run(&["restore", "1", "0"]);
    assert_eq!(text(&out.stdout), "restored 1-0\n");
}

#[test]
fn cluster_sh_logs_follow_merges_every_node_with_a_prefix() {
    let s = Script::start(3);
    let mut follow = Terminated(
        s.command(&["logs", "-f"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = follow.0.stdout.take().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let out = s.run(&["send", "2", "printBalance"]);
    assert!(out.status.success());
    let mut seen = [false; 3];
    let deadline = soon();
    while !seen.iter().all(|&s| s) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("logs -f went quiet");
        let (name, _) = line.split_once(" | ").expect("a prefixed line");
        let id: usize = name.trim().strip_prefix("node").unwrap().parse().unwrap();
        seen[id] = true;
    }
    drop(follow);
    // Its stdout closes: the loop that prefixed the lines ended with it.
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        match rx.recv_deadline(end) {
            Ok(_) => {}
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => panic!("logs -f left a process writing"),
        }
    }
}
