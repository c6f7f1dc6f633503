//! The stdin commands: parsing one line into a `Command`, and the help text.

use crate::ledger::NodeId;

/// A command that the protocol core carries out.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    Transfer {
        debit: NodeId,
        credit: NodeId,
        amount: u64,
    },
    PrintBlockchain,
    PrintBalance,
    PrintBalances,
    PrintQueue,
    Status,
    Crash,
    Sever(NodeId),
    Restore(NodeId),
}

/// What one line of input means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    Command(Command),
    Help,
    /// A blank line.
    Nothing,
    /// A bare command whose arguments must be asked for, one prompt per argument.
    Ask(Bare),
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
            Bare::Transfer => &["Enter debit node", "Enter credit node", "Enter amount"],
            Bare::Sever | Bare::Restore => &["Enter node to cut off"],
        }
    }
}

pub const HELP: &str = "\
commands:
  moneyTransfer DEBIT CREDIT AMOUNT   queue a transfer from this node's account
  printBlockchain                     every block: depth, hash, previous hash, proposer, transfers
  printBalance                        this node's account
  printBalances                       every account as this node knows it
  printQueue                          transfers queued here, not yet committed
  status                              depth, head, ballot, leader and links
  severLink ID / restoreLink ID       stop / resume exchanging messages with node ID
  crashNode                           exit at once, as a crash; restart resumes from disk
  help                                this list";

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
    let Some((&name, args)) = words.split_first() else {
        return Ok(Parsed::Nothing);
    };
    let command = match (name, args.len()) {
        ("moneyTransfer", 0) => return Ok(Parsed::Ask(Bare::Transfer)),
        ("severLink", 0) => return Ok(Parsed::Ask(Bare::Sever)),
        ("restoreLink", 0) => return Ok(Parsed::Ask(Bare::Restore)),
        ("help", 0) => return Ok(Parsed::Help),
        ("moneyTransfer", _) | ("severLink", _) | ("restoreLink", _) => with_args(name, args)?,
        ("printBlockchain", 0) => Command::PrintBlockchain,
        ("printBalance", 0) => Command::PrintBalance,
        ("printBalances", 0) => Command::PrintBalances,
        ("printQueue", 0) => Command::PrintQueue,
        ("status", 0) => Command::Status,
        ("crashNode", 0) => Command::Crash,
        (
            "printBlockchain" | "printBalance" | "printBalances" | "printQueue" | "status"
            | "crashNode" | "help",
            _,
        ) => return Err(format!("{name} takes no arguments")),
        _ => return Err(format!("unknown command {} (type help)", shorten(name))),
    };
    Ok(Parsed::Command(command))
}

/// Builds a command from a bare name and the answers to its prompts.
pub fn with_args(name: &str, args: &[&str]) -> Result<Command, String> {
    match name {
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
        "severLink" | "restoreLink" => {
            let [peer] = args else {
                return Err(format!("usage: {name} ID"));
            };
            let peer = node_id(peer)?;
            Ok(if name == "severLink" {
                Command::Sever(peer)
            } else {
                Command::Restore(peer)
            })
        }
        _ => Err(format!("unknown command {}", shorten(name))),
    }
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
        assert_eq!(cmd("printBlockchain"), Command::PrintBlockchain);
        assert_eq!(cmd("printBalance"), Command::PrintBalance);
        assert_eq!(cmd("printBalances"), Command::PrintBalances);
        assert_eq!(cmd("printQueue"), Command::PrintQueue);
        assert_eq!(cmd("status"), Command::Status);
        assert_eq!(cmd("crashNode"), Command::Crash);
        assert_eq!(cmd("severLink 3"), Command::Sever(3));
        assert_eq!(cmd("restoreLink 3"), Command::Restore(3));
        assert_eq!(parse("help"), Ok(Parsed::Help));
        assert_eq!(parse("   "), Ok(Parsed::Nothing));
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
            ("status now", "no arguments"),
            ("launchMissiles", "unknown command"),
        ] {
            let err = parse(line).expect_err(line);
            assert!(err.contains(want), "{line:?}: {err}");
            assert!(!err.contains('\n'));
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

    const NAMES: &[&str] = &[
        "moneyTransfer",
        "printBlockchain",
        "printBalance",
        "printBalances",
        "printQueue",
        "status",
        "crashNode",
        "severLink",
        "restoreLink",
        "help",
    ];

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
            Ok(Parsed::Help) => assert_eq!(line.split_whitespace().next(), Some("help")),
            Ok(Parsed::Ask(bare)) => {
                assert_eq!(line.split_whitespace().collect::<Vec<_>>(), [bare.name()]);
            }
            Ok(Parsed::Command(c)) => {
                let first = line.split_whitespace().next().unwrap_or_default();
                assert!(NAMES.contains(&first), "{line:?} gave {c:?}");
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
