//! The stdin commands: parsing one line into a `Command`, and the help text.

use crate::ledger::NodeId;

/// A command that the protocol core carries out.
#[derive(Clone, Debug, PartialEq, Eq)]
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
