//! Hostile stdin: 10,000 random lines fed to a real `benmo node` in big writes. Every line
//! gets at most one `error:` line (exactly as many as a model of the node's reader predicts),
//! the node never panics, its state (balances, depth, head, queue) is unchanged and it still
//! answers `status` afterwards.

use benmo::commands::{self, Command, Parsed};
use benmo::node::LineReader;
use benmo::testing::cluster::{LocalCluster, Status};
use crossbeam_channel::Receiver;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command as ProcCommand, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_benmo");
const NODES: usize = 3;
const LINES: usize = 10_000;
const SEED: u64 = 0xB3E0_5EED;
const WAIT: Duration = Duration::from_secs(30);

/// One random line (without its newline) from a mix of hostile kinds.
fn hostile_line(rng: &mut StdRng) -> Vec<u8> {
    let words = [
        "moneyTransfer",
        "severLink",
        "restoreLink",
        "printBalance",
        "status",
        "help",
        "crashNode",
    ];
    match rng.gen_range(0..100) {
        // Binary garbage, newlines excluded (the line ends where we say).
        0..=19 => {
            let n = rng.gen_range(0..300);
            (0..n)
                .map(|_| rng.gen::<u8>())
                .filter(|&b| b != b'\n')
                .collect()
        }
        // Invalid UTF-8 around something that looks like a command.
        20..=27 => {
            let mut l = b"moneyTransfer 0 1 ".to_vec();
            l.extend_from_slice(&[0xff, 0xfe, 0xc0, 0x80]);
            l.insert(rng.gen_range(0..l.len()), 0xed);
            l
        }
        // Huge numbers in every position.
        28..=37 => {
            let big = |rng: &mut StdRng| match rng.gen_range(0..4) {
                0 => u64::MAX.to_string(),
                1 => "9".repeat(rng.gen_range(20..400)),
                2 => format!("-{}", rng.gen::<u64>()),
                _ => format!("{}e{}", rng.gen::<u32>(), rng.gen::<u8>()),
            };
            let (a, b, c) = (big(rng), big(rng), big(rng));
            format!("moneyTransfer {a} {b} {c}").into_bytes()
        }
        // Lines of about 100 kB (only 1% of lines, to keep the run fast).
        38 => vec![b"xA7 "[rng.gen_range(0..4)]; 100_000 + rng.gen_range(0..1000)],
        // Lines just around the limit.
        39..=41 => {
            let n = commands::MAX_LINE - 2 + rng.gen_range(0..5);
            let mut l = b"status".to_vec();
            l.resize(n, b' ');
            l
        }
        // A bare command followed by bogus answers (the reader takes them as answers).
        42..=56 => {
            let bare = ["moneyTransfer", "severLink", "restoreLink"][rng.gen_range(0..3)];
            bare.as_bytes().to_vec()
        }
        // Valid-looking transfers that the node must refuse (never a valid one).
        57..=79 => invalid_transfer(rng).into_bytes(),
        // Commands with extra or bad arguments, and links to nobody.
        80..=89 => {
            let w = words[rng.gen_range(0..words.len())];
            match rng.gen_range(0..3) {
                0 => format!("{w} {} extra words", rng.gen::<u16>()),
                1 => format!("severLink {}", [0, 3, 99, usize::MAX][rng.gen_range(0..4)]),
                _ => format!("restoreLink {}", [0, 7][rng.gen_range(0..2)]),
            }
            .into_bytes()
        }
        // Control characters, escapes, CRs and odd whitespace.
        90..=95 => {
            let parts = [
                "\u{1b}[2J",
                "\r",
                "\t",
                "\u{0}",
                "\u{7f}",
                "\u{202e}",
                " ",
                "é",
            ];
            let mut s = String::new();
            for _ in 0..rng.gen_range(1..10) {
                s.push_str(parts[rng.gen_range(0..parts.len())]);
                if rng.gen_bool(0.3) {
                    // Not crashNode: on its own it is a valid command that exits.
                    s.push_str(words[rng.gen_range(0..words.len() - 1)]);
                }
            }
            s.into_bytes()
        }
        // Blank lines and read-only commands (no error, no state change).
        _ => ["", "   ", "printBalance", "printQueue", "status"][rng.gen_range(0..5)]
            .as_bytes()
            .to_vec(),
    }
}

/// A transfer line that parses but that node 0 (balance 100, nothing queued) refuses.
fn invalid_transfer(rng: &mut StdRng) -> String {
    let (debit, credit, amount): (u64, u64, u64) = match rng.gen_range(0..5) {
        0 => (
            rng.gen_range(1..3),
            rng.gen_range(0..3),
            rng.gen_range(1..50),
        ), // not ours
        1 => (0, 0, rng.gen_range(1..50)), // to itself
        2 => (0, rng.gen_range(3..1000), rng.gen_range(1..50)), // nobody
        3 => (0, rng.gen_range(1..3), rng.gen_range(101..u64::MAX)), // overdraft
        _ => (0, rng.gen_range(1..3), 0),  // zero
    };
    format!("moneyTransfer {debit} {credit} {amount}")
}

/// How many `error:` lines node 0 must print for `input`, modelling `node::read_commands`
/// with the node's own line reader and parser. Also checks nothing in `input` would change
/// state, and returns whether the input ends between commands (not inside a prompt).
fn expected_errors(input: &[u8]) -> (usize, bool) {
    let mut reader = LineReader::new(std::io::Cursor::new(input.to_vec()));
    let mut errors = 0;
    let refused = |c: &Command| match c {
        Command::Transfer {
            debit,
            credit,
            amount,
        } => {
            let valid = *debit == 0 && (1..NODES).contains(credit) && (1..=100).contains(amount);
            assert!(!valid, "generated a valid transfer: {c:?}");
            1
        }
        Command::Sever(p) | Command::Restore(p) => {
            assert!(
                *p == 0 || *p >= NODES,
                "generated a real link change: {c:?}"
            );
            1
        }
        Command::Crash => panic!("generated crashNode"),
        _ => 0,
    };
    while let Some(line) = reader.next_line() {
        let parsed = line.and_then(|l| commands::parse(&l));
        errors += match parsed {
            Err(_) => 1,
            Ok(Parsed::Command(c)) => refused(&c),
            Ok(Parsed::Help | Parsed::Nothing) => 0,
            // A drop to no peer is refused; the rest only hold or release messages.
            Ok(Parsed::Gate(commands::Gate::Drop { peer, .. })) => {
                usize::from(peer == 0 || peer >= NODES)
            }
            Ok(Parsed::Gate(_)) => 0,
            Ok(Parsed::Quit) => panic!("generated quit"),
            Ok(Parsed::Ask(bare)) => {
                // Each answer is checked before the next is asked for; the first bad one
                // ends the command and the lines after it are commands again.
                let mut answers = Vec::new();
                for i in 0..bare.prompts().len() {
                    match reader.next_line() {
                        Some(Ok(a)) if bare.check_answer(i, a.trim(), 0, NODES).is_ok() => {
                            answers.push(a.trim().to_string())
                        }
                        Some(_) => break,
                        None => return (errors, false),
                    }
                }
                let words: Vec<&str> = answers.iter().map(String::as_str).collect();
                if answers.len() < bare.prompts().len() {
                    1 // an unreadable or refused answer
                } else {
                    match commands::with_args(bare.name(), &words) {
                        Ok(c) => refused(&c),
                        Err(_) => 1,
                    }
                }
            }
        };
    }
    (errors, true)
}

/// Node 0, started by hand so that raw (non-UTF-8) bytes can be written to its stdin.
struct RawNode {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<Vec<u8>>,
}

impl RawNode {
    fn start(c: &LocalCluster, id: usize) -> RawNode {
        let log = fs::File::create(c.data.join(format!("node{id}.stderr"))).unwrap();
        let mut child = ProcCommand::new(EXE)
            .args(["node", &id.to_string(), "--data"])
            .arg(&c.data)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = crossbeam_channel::unbounded();
        std::thread::spawn(move || loop {
            let mut line = Vec::new();
            match stdout.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
        });
        let stdin = child.stdin.take().unwrap();
        let mut node = RawNode {
            child,
            stdin,
            lines,
        };
        node.until(|l| l.contains("listening on"));
        node
    }

    fn write(&mut self, bytes: &[u8]) {
        self.stdin.write_all(bytes).unwrap();
        self.stdin.flush().unwrap();
    }

    /// Every line up to and including the first one that satisfies `last`. Each must be
    /// valid UTF-8: the node never echoes raw input.
    fn until(&mut self, mut last: impl FnMut(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let bytes = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("timed out; last lines {:?}", out.last()));
            let line = String::from_utf8(bytes).expect("node printed invalid UTF-8");
            let done = last(&line);
            out.push(line);
            if done {
                return out;
            }
        }
    }

    /// Status, balances and queue, compared before and after.
    fn snapshot(&mut self) -> (Status, Vec<String>) {
        self.write(b"status\nprintBalances\nprintQueue\n");
        let lines = self.until(|l| l == "queue empty" || l.starts_with("queue "));
        let status = lines.iter().find_map(|l| Status::parse(l)).expect("status");
        let state = lines
            .into_iter()
            .filter(|l| l.starts_with("balance ") || l.starts_with("queue "))
            .collect();
        (status, state)
    }
}

impl Drop for RawNode {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Lines a node may print for input that changes nothing.
fn harmless(line: &str) -> bool {
    let help = commands::HELP.lines().any(|h| h == line);
    ["error: ", "balance ", "queue ", "node ", "role ", "link "]
        .iter()
        .any(|p| line.starts_with(p))
        || line == "queue empty"
        || help
}

#[test]
fn ten_thousand_hostile_lines_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCluster::init(Path::new(EXE), dir.path(), NODES, 100).unwrap();
    c.start(1).unwrap();
    c.start(2).unwrap();
    let mut node = RawNode::start(&c, 0);
    let before = node.snapshot();
    assert_eq!(before.1.len(), NODES + 1, "{:?}", before.1);

    let mut rng = StdRng::seed_from_u64(SEED);
    let mut input = Vec::new();
    for _ in 0..LINES {
        input.extend(hostile_line(&mut rng));
        input.push(b'\n');
    }
    // Close any prompt still open with answers of its own, so the marker is a command.
    if !expected_errors(&input).1 {
        input.extend_from_slice(b"\n\n\n");
    }
    let (want, between) = expected_errors(&input);
    assert!(between);
    assert!(want > LINES / 2, "the mix should be mostly errors: {want}");

    let started = Instant::now();
    for chunk in input.chunks(1 << 20) {
        node.write(chunk);
    }
    node.write(b"endOfHostileInput\n");
    let out = node.until(|l| l.contains("'endOfHostileInput'"));
    let errors = out.iter().filter(|l| l.starts_with("error: ")).count() - 1;
    assert_eq!(errors, want, "error lines printed vs predicted");
    let odd: Vec<&String> = out.iter().filter(|l| !harmless(l)).take(5).collect();
    assert!(odd.is_empty(), "unexpected output {odd:?}");
    assert!(
        out.iter().all(|l| l.len() < 300),
        "an error line echoed too much"
    );
    eprintln!(
        "{} bytes, {LINES} lines, {errors} errors in {:?}",
        input.len(),
        started.elapsed()
    );

    let after = node.snapshot();
    assert_eq!(after.0.depth, before.0.depth);
    assert_eq!(after.0.head, before.0.head);
    assert_eq!(after.0.queue, before.0.queue);
    assert_eq!(after.0.transfers, before.0.transfers);
    assert_eq!(after.1, before.1, "balances or queue changed");
    assert!(node.child.try_wait().unwrap().is_none(), "node 0 exited");
    let stderr = fs::read_to_string(c.data.join("node0.stderr")).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Still a working member of the cluster: a real transfer commits.
    node.write(b"moneyTransfer 0 1 5\n");
    node.until(|l| l.starts_with("committed 0.1 0 1 5 depth 1"));
}
