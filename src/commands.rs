//! The stdin commands: parsing one line into a `Command`, and the help text. Command names
//! match case-insensitively; an unknown one gets a "did you mean" when one is close.

use crate::hold::Kind;
use crate::human;
use crate::ledger::NodeId;
pub use crate::paxos::Command;
use crate::paxos::{check_transfer, Judge, Request};
use crate::render;

/// A command for the shell's outgoing gate (see `hold`), which the core never sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    Pause,
    Step,
    Go,
    Drop {
        kind: Kind,
        peer: NodeId,
        count: u64,
    },
}

/// What one line of input means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    Command(Command),
    Help,
    /// `quit` or `exit`: stop cleanly, as Ctrl-C does.
    Quit,
    /// A blank line.
    Nothing,
    /// A bare command whose arguments must be asked for, one prompt per argument.
    Ask(Bare),
    Gate(Gate),
}

/// Commands that may be typed bare, with their arguments asked for afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bare {
    Transfer,
    Sever,
    Restore,
}

impl Bare {
    pub fn name(self) -> &'static str {
        match self {
            Bare::Transfer => "moneyTransfer",
            Bare::Sever => "severLink",
            Bare::Restore => "restoreLink",
        }
    }

    /// The prompts, one per argument, in order.
    pub fn prompts(self) -> &'static [&'static str] {
        match self {
            Bare::Transfer => &[
                "Enter debit node (this node)",
                "Enter credit node",
                "Enter amount",
            ],
            Bare::Sever => &["Enter node to cut off"],
            Bare::Restore => &["Enter node to reconnect"],
        }
    }

    /// Checks the answer to prompt `i` at once, so that a bad answer is reported before the
    /// next prompt. `me` is this node and `nodes` the cluster size; the core checks again.
    pub fn check_answer(
        self,
        i: usize,
        answer: &str,
        me: NodeId,
        nodes: usize,
    ) -> Result<(), String> {
        if (self, i) == (Bare::Transfer, 2) {
            return amount_of(answer).map(drop);
        }
        let id = node_id(answer)?;
        let judge = Judge {
            nodes,
            me: Some(me),
            ..Judge::default()
        };
        // A link's peer is judged as a credit: a node that exists.
        let asked = match (self, i) {
            (Bare::Transfer, 0) => Request {
                debit: Some(id),
                ..Request::default()
            },
            _ => Request {
                credit: Some(id),
                ..Request::default()
            },
        };
        check_transfer(&judge, &asked).map_err(|why| render::refusal(&why))
    }
}

pub const HELP: &str = "\
commands (names in any case):
  moneyTransfer DEBIT CREDIT AMOUNT  queue a transfer from this node's account
  printBlockchain [full]    every block (short hashes unless full)
  printBalance              this node's account
  printBalances             every account as this node knows it
  printQueue                transfers queued here, not yet committed
  status [full]             chain, leader, queue, role, ballot; each link
  severLink ID              stop exchanging messages with node ID
  restoreLink ID            exchange messages with node ID again
  crashNode                 exit at once, as a crash; restart resumes from disk
  state                     this node's Paxos state at the depth in play
  pause / step / go         hold outgoing Paxos messages / send the next / all
  drop KIND PEER [N]        lose the next N (1) KIND messages to PEER
  quit, exit, Ctrl-C        stop this node cleanly
  help                      this list
moneyTransfer, severLink and restoreLink typed alone ask for their values.";

/// Every command name, as the help spells it.
const NAMES: &[&str] = &[
    "moneyTransfer",
    "printBlockchain",
    "printBalance",
    "printBalances",
    "printQueue",
    "status",
    "severLink",
    "restoreLink",
    "crashNode",
    "state",
    "pause",
    "step",
    "go",
    "drop",
    "help",
    "quit",
    "exit",
];

/// Longest line we look at; anything longer is refused without being parsed.
pub const MAX_LINE: usize = 1024;

/// Parses one line. Errors are the text after `error: `.
pub fn parse(line: &str) -> Result<Parsed, String> {
    if line.len() > MAX_LINE {
        return Err(format!(
            "line too long ({} bytes; at most {MAX_LINE})",
            line.len()
        ));
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((&typed, args)) = words.split_first() else {
        return Ok(Parsed::Nothing);
    };
    let Some(name) = canonical(typed) else {
        let hint = human::did_you_mean(typed, NAMES).map_or(" (type help)".to_string(), |c| {
            format!(" (did you mean {c}?)")
        });
        return Err(format!("unknown command {}{hint}", shorten(typed)));
    };
    let command = match (name, args) {
        ("moneyTransfer", []) => return Ok(Parsed::Ask(Bare::Transfer)),
        ("severLink", []) => return Ok(Parsed::Ask(Bare::Sever)),
        ("restoreLink", []) => return Ok(Parsed::Ask(Bare::Restore)),
        ("moneyTransfer" | "severLink" | "restoreLink", _) => with_args(name, args)?,
        ("printBlockchain", []) => Command::PrintBlockchain { full: false },
        ("printBlockchain", [word]) if word.eq_ignore_ascii_case("full") => {
            Command::PrintBlockchain { full: true }
        }
        ("printBlockchain", _) => return Err("usage: printBlockchain [full]".to_string()),
        ("status", []) => Command::Status { full: false },
        ("status", [word]) if word.eq_ignore_ascii_case("full") => Command::Status { full: true },
        ("status", _) => return Err("usage: status [full]".to_string()),
        ("help", []) => return Ok(Parsed::Help),
        ("quit" | "exit", []) => return Ok(Parsed::Quit),
        ("printBalance", []) => Command::PrintBalance,
        ("printBalances", []) => Command::PrintBalances,
        ("printQueue", []) => Command::PrintQueue,
        ("crashNode", []) => Command::Crash,
        ("state", []) => Command::State,
        ("pause", []) => return Ok(Parsed::Gate(Gate::Pause)),
        ("step", []) => return Ok(Parsed::Gate(Gate::Step)),
        ("go", []) => return Ok(Parsed::Gate(Gate::Go)),
        ("drop", _) => return drop_args(args).map(Parsed::Gate),
        _ => return Err(format!("{name} takes no arguments")),
    };
    Ok(Parsed::Command(command))
}

/// The command name `typed` stands for, in any case.
fn canonical(typed: &str) -> Option<&'static str> {
    NAMES
        .iter()
        .copied()
        .find(|n| n.eq_ignore_ascii_case(typed))
}

/// Builds a command from a bare name and the answers to its prompts.
pub fn with_args(name: &str, args: &[&str]) -> Result<Command, String> {
    match canonical(name).unwrap_or_default() {
        "moneyTransfer" => {
            let [debit, credit, amount] = args else {
                return Err("usage: moneyTransfer DEBIT CREDIT AMOUNT".to_string());
            };
            Ok(Command::Transfer {
                debit: node_id(debit)?,
                credit: node_id(credit)?,
                amount: amount_of(amount)?,
            })
        }
        verb @ ("severLink" | "restoreLink") => {
            let [peer] = args else {
                return Err(format!("usage: {verb} ID"));
            };
            let peer = node_id(peer)?;
            Ok(if verb == "severLink" {
                Command::Sever(peer)
            } else {
                Command::Restore(peer)
            })
        }
        _ => Err(format!("unknown command {}", shorten(name))),
    }
}

/// `drop KIND PEER [N]`.
fn drop_args(args: &[&str]) -> Result<Gate, String> {
    let (kind, peer, count) = match args {
        [kind, peer] => (kind, peer, "1"),
        [kind, peer, count] => (kind, peer, *count),
        _ => return Err("usage: drop KIND PEER [N], e.g. drop accept 3".to_string()),
    };
    let count = match count.parse::<u64>() {
        Ok(n) if n > 0 => n,
        _ => {
            return Err(format!(
                "drop: N must be a positive integer, not {}",
                shorten(count)
            ))
        }
    };
    Ok(Gate::Drop {
        kind: Kind::parse(kind)?,
        peer: node_id(peer)?,
        count,
    })
}

fn node_id(word: &str) -> Result<NodeId, String> {
    word.parse::<NodeId>()
        .map_err(|_| format!("bad node id {}", shorten(word)))
}

fn amount_of(word: &str) -> Result<u64, String> {
    match word.parse::<u64>() {
        Ok(a) if a > 0 => Ok(a),
        _ => Err(format!(
            "amount must be a positive integer, not {}",
            shorten(word)
        )),
    }
}

/// Quotes user input in an error without echoing a huge or unprintable word.
fn shorten(word: &str) -> String {
    let clean: String = word
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(32)
        .collect();
    if clean.chars().count() < word.chars().count() {
        format!("'{clean}...'")
    } else {
        format!("'{clean}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> Command {
        match parse(line) {
            Ok(Parsed::Command(c)) => c,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(
            cmd("moneyTransfer 0 1 5"),
            Command::Transfer {
                debit: 0,
                credit: 1,
                amount: 5
            }
        );
        assert_eq!(
            cmd("  moneyTransfer\t2 3 40 "),
            Command::Transfer {
                debit: 2,
                credit: 3,
                amount: 40
            }
        );
        assert_eq!(cmd("printBalance"), Command::PrintBalance);
        assert_eq!(cmd("printBalances"), Command::PrintBalances);
        assert_eq!(cmd("printQueue"), Command::PrintQueue);
        assert_eq!(cmd("status"), Command::Status { full: false });
        assert_eq!(cmd("crashNode"), Command::Crash);
        assert_eq!(cmd("severLink 3"), Command::Sever(3));
        assert_eq!(cmd("restoreLink 3"), Command::Restore(3));
        assert_eq!(parse("help"), Ok(Parsed::Help));
        assert_eq!(parse("   "), Ok(Parsed::Nothing));
        assert_eq!(
            parse("printBlockchain"),
            Ok(Parsed::Command(Command::PrintBlockchain { full: false }))
        );
        assert_eq!(
            parse("printBlockchain FULL"),
            Ok(Parsed::Command(Command::PrintBlockchain { full: true }))
        );
        assert_eq!(parse("quit"), Ok(Parsed::Quit));
        assert_eq!(parse("exit"), Ok(Parsed::Quit));
    }

    #[test]
    fn names_match_in_any_case() {
        assert_eq!(
            cmd("MONEYTRANSFER 0 1 5"),
            Command::Transfer {
                debit: 0,
                credit: 1,
                amount: 5
            }
        );
        assert_eq!(cmd("printbalances"), Command::PrintBalances);
        assert_eq!(parse("moneytransfer"), Ok(Parsed::Ask(Bare::Transfer)));
        assert_eq!(parse("QUIT"), Ok(Parsed::Quit));
    }

    #[test]
    fn unknown_commands_get_a_suggestion() {
        let err = parse("moneyTransfr 0 1 5").unwrap_err();
        assert!(err.contains("did you mean moneyTransfer?"), "{err}");
        let err = parse("stats").unwrap_err();
        assert!(err.contains("did you mean status?"), "{err}");
        let err = parse("launchMissiles").unwrap_err();
        assert!(err.contains("type help"), "{err}");
    }

    #[test]
    fn bare_answers_are_checked_one_at_a_time() {
        let t = Bare::Transfer;
        assert_eq!(t.check_answer(0, "2", 2, 5), Ok(()));
        for (i, answer, why) in [
            (0, "1", "own account"),
            (1, "x", "bad node id"),
            (1, "7", "unknown node 7"),
            (2, "0", "positive"),
        ] {
            let err = t.check_answer(i, answer, 2, 5).unwrap_err();
            assert!(err.contains(why), "answer {i} {answer:?}: {err}");
        }
        assert_eq!(Bare::Restore.check_answer(0, "4", 2, 5), Ok(()));
        assert!(Bare::Restore.prompts()[0].contains("reconnect"));
    }

    #[test]
    fn bare_forms_ask() {
        assert_eq!(parse("moneyTransfer"), Ok(Parsed::Ask(Bare::Transfer)));
        assert_eq!(parse("severLink"), Ok(Parsed::Ask(Bare::Sever)));
        assert_eq!(parse("restoreLink"), Ok(Parsed::Ask(Bare::Restore)));
        assert_eq!(Bare::Transfer.prompts().len(), 3);
        assert_eq!(
            with_args("moneyTransfer", &["1", "2", "3"]),
            Ok(Command::Transfer {
                debit: 1,
                credit: 2,
                amount: 3
            })
        );
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        for (line, want) in [
            ("moneyTransfer 0 1", "usage"),
            ("moneyTransfer 0 1 0", "positive integer"),
            ("moneyTransfer 0 1 -5", "positive integer"),
            ("moneyTransfer 0 1 1.5", "positive integer"),
            (
                "moneyTransfer 0 1 99999999999999999999999",
                "positive integer",
            ),
            ("moneyTransfer x 1 5", "bad node id"),
            ("moneyTransfer 0 -1 5", "bad node id"),
            ("severLink a", "bad node id"),
            ("severLink 1 2", "usage"),
            ("status now", "usage: status [full]"),
            ("quit now", "no arguments"),
            ("printBlockchain all", "usage"),
            ("launchMissiles", "unknown command"),
        ] {
            let err = parse(line).expect_err(line);
            assert!(err.contains(want), "{line:?}: {err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn gate_commands_and_state_parse_and_refuse_with_reasons() {
        assert_eq!(cmd("state"), Command::State);
        assert_eq!(parse("PAUSE"), Ok(Parsed::Gate(Gate::Pause)));
        assert_eq!(parse("step"), Ok(Parsed::Gate(Gate::Step)));
        assert_eq!(parse("go"), Ok(Parsed::Gate(Gate::Go)));
        let drop = |kind, peer, count| Ok(Parsed::Gate(Gate::Drop { kind, peer, count }));
        assert_eq!(parse("drop accept 3"), drop(Kind::Accept, 3, 1));
        assert_eq!(parse("drop Prepare 1 4"), drop(Kind::Prepare, 1, 4));
        for (line, want) in [
            ("drop", "usage: drop KIND PEER [N]"),
            ("drop accept", "usage"),
            ("drop acept 3", "did you mean accept?"),
            ("drop accept x", "bad node id"),
            ("drop accept 3 0", "positive integer"),
            ("drop accept 3 1 2", "usage"),
            ("step 2", "no arguments"),
            ("state now", "no arguments"),
            ("stat", "did you mean"),
        ] {
            let err = parse(line).expect_err(line);
            assert!(err.contains(want), "{line:?}: {err}");
        }
    }

    #[test]
    fn help_fits_80_columns_and_names_every_command() {
        assert!(HELP.lines().all(|l| l.chars().count() <= 80), "{HELP}");
        for name in NAMES {
            assert!(HELP.contains(name), "{name} is not in the help");
        }
    }

    #[test]
    fn long_and_strange_input_is_refused_briefly() {
        let err = parse(&"x".repeat(100_000)).unwrap_err();
        assert!(err.len() < 100);
        let err = parse("\u{1b}[2Jboom").unwrap_err();
        assert!(!err.contains('\u{1b}'));
        let err = parse(&"y".repeat(500)).unwrap_err();
        assert!(err.len() < 100, "{err}");
    }
}

/// Hostile input: whatever a line holds, `parse` (and `with_args` for the answers to a bare
/// command) returns exactly one outcome, never panics, and an error is one short printable
/// line that cannot smuggle terminal control sequences or a second `error:` line.
#[cfg(test)]
mod hostile {
    use super::*;
    use proptest::prelude::*;

    fn is_name(word: &str) -> bool {
        NAMES.iter().any(|n| n.eq_ignore_ascii_case(word))
    }

    fn check_error(input: &str, err: &str) {
        assert!(!err.is_empty(), "{input:?}: empty error");
        assert!(
            !err.chars().any(char::is_control),
            "{input:?}: control character in {err:?}"
        );
        // Words are quoted at most 32 characters (of at most 4 bytes) each.
        assert!(err.len() <= 256, "{input:?}: error of {} bytes", err.len());
        assert!(
            !err.contains("error:"),
            "{input:?}: nested error in {err:?}"
        );
    }

    fn check(line: &str) {
        match parse(line) {
            Err(e) => check_error(line, &e),
            Ok(Parsed::Nothing) => assert!(line.trim().is_empty(), "{line:?}"),
            Ok(Parsed::Help | Parsed::Quit) => {
                assert_eq!(line.split_whitespace().count(), 1, "{line:?}");
            }
            Ok(Parsed::Ask(bare)) => {
                let words: Vec<_> = line.split_whitespace().collect();
                assert!(words.len() == 1 && words[0].eq_ignore_ascii_case(bare.name()));
            }
            Ok(Parsed::Gate(g)) => {
                let first = line.split_whitespace().next().unwrap_or_default();
                assert!(is_name(first), "{line:?} gave {g:?}");
            }
            Ok(Parsed::Command(c)) => {
                let first = line.split_whitespace().next().unwrap_or_default();
                assert!(is_name(first), "{line:?} gave {c:?}");
                assert!(line.len() <= MAX_LINE);
            }
        }
    }

    /// Words that look like arguments: numbers of every size and sign, and junk.
    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            any::<i128>().prop_map(|n| n.to_string()),
            (0u8..8).prop_map(|n| n.to_string()),
            "[0-9]{15,60}",
            "[+-]?[0-9]{0,4}(\\.[0-9]{0,3})?(e[0-9]{1,3})?",
            "\\PC{0,40}",
            any::<String>(),
            Just(String::new()),
        ]
    }

    fn command_line() -> impl Strategy<Value = String> {
        (
            prop::sample::select(NAMES),
            prop::collection::vec(word(), 0..5),
            "[ \t\u{b}\u{c}\r\u{85}\u{a0}\u{3000}]{1,3}",
        )
            .prop_map(|(name, args, sep)| {
                std::iter::once(name.to_string())
                    .chain(args)
                    .collect::<Vec<_>>()
                    .join(&sep)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_string_parses_to_one_outcome(line in any::<String>()) {
            check(&line);
        }

        #[test]
        fn command_like_lines_parse_to_one_outcome(line in command_line()) {
            check(&line);
        }

        #[test]
        fn long_lines_are_refused_without_echo(fill in "\\PC{1,8}", times in 100usize..2000) {
            let line = format!("moneyTransfer 0 1 {}", fill.repeat(times));
            check(&line);
            if line.len() > MAX_LINE {
                let err = parse(&line).unwrap_err();
                prop_assert!(err.starts_with("line too long"), "{}", err);
            }
        }

        #[test]
        fn answers_to_bare_commands_give_one_outcome(
            name in prop::sample::select(&["moneyTransfer", "severLink", "restoreLink", "bogus"][..]),
            answers in prop::collection::vec(word(), 0..4),
        ) {
            let words: Vec<&str> = answers.iter().map(String::as_str).collect();
            match with_args(name, &words) {
                Err(e) => check_error(&answers.join(" "), &e),
                Ok(Command::Transfer { amount, .. }) => {
                    prop_assert_eq!((name, words.len()), ("moneyTransfer", 3));
                    prop_assert!(amount > 0);
                }
                Ok(Command::Sever(_) | Command::Restore(_)) => {
                    prop_assert_eq!(words.len(), 1);
                    prop_assert_ne!(name, "moneyTransfer");
                }
                Ok(other) => prop_assert!(false, "{:?} from {:?}", other, answers),
            }
        }
    }

    #[test]
    fn strange_but_tricky_lines() {
        for line in [
            "\u{feff}status",
            "status\u{0}",
            "moneyTransfer\u{0}0 1 5",
            "moneyTransfer 0 1 +5",
            "moneyTransfer 0 1 05",
            "moneyTransfer 0 1 18446744073709551616",
            "moneyTransfer 18446744073709551616 1 5",
            "moneyTransfer ０ １ ５",
            "severLink \u{1b}[31m",
            "\u{202e}sutats",
            &"\u{1b}".repeat(MAX_LINE),
            &"é".repeat(MAX_LINE / 2 + 1),
            &format!("{} status", " ".repeat(MAX_LINE - 7)),
        ] {
            check(line);
        }
        // A leading plus sign is how Rust parses integers; it is a valid amount.
        assert_eq!(
            parse("moneyTransfer 0 1 +5"),
            Ok(Parsed::Command(Command::Transfer {
                debit: 0,
                credit: 1,
                amount: 5
            }))
        );
    }
}
