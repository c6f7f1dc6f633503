//! The `benmo` command: `init`, `node`, `audit`, `bench` and `trace`.
//!
//! Exit status: 0 success, 1 runtime error (`error: ...` on stderr), 2 usage error (one line
//! and a hint on stderr). Stdout carries only results and help.

use benmo::cli::{self, Args, Fail, InitOptions};
use benmo::node::{self, NodeOptions};
use std::process::ExitCode;

const COMMANDS: &[&str] = &["init", "node", "audit", "bench", "trace", "help"];

fn main() -> ExitCode {
    let words: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(words) {
        Ok(code) => code,
        Err(Fail::Usage(reason, command)) => {
            eprintln!("error: {reason}");
            eprintln!("try '{}'", help_command(command));
            ExitCode::from(2)
        }
        Err(Fail::Run(reason)) => {
            eprintln!("error: {reason}");
            ExitCode::FAILURE
        }
    }
}

fn help_command(command: &str) -> String {
    if command.is_empty() {
        "benmo --help".to_string()
    } else {
        format!("benmo {command} --help")
    }
}

fn dispatch(mut words: Vec<String>) -> Result<ExitCode, Fail> {
    if words.is_empty() {
        eprintln!("{}", cli::USAGE);
        return Ok(ExitCode::from(2));
    }
    let command = words.remove(0);
    let args = Args::new(words);
    let help = match command.as_str() {
        "init" => cli::INIT_HELP,
        "node" => cli::NODE_HELP,
        "audit" => cli::AUDIT_HELP,
        "bench" => cli::BENCH_HELP,
        "trace" => cli::TRACE_HELP,
        "help" | "-h" | "--help" => cli::USAGE,
        "-V" | "--version" => return version(),
        other => return Err(unknown_command(other)),
    };
    if args.help() || help == cli::USAGE {
        say(help);
        return Ok(ExitCode::SUCCESS);
    }
    run(&command, args)
}

fn run(command: &str, args: Args) -> Result<ExitCode, Fail> {
    match command {
        "init" => {
            let opts = InitOptions::parse(args).map_err(Fail::usage("init"))?;
            say(&cli::init(&opts).map_err(Fail::Run)?);
        }
        "node" => {
            let opts = NodeOptions::parse(args).map_err(Fail::usage("node"))?;
            node::run(opts).map_err(Fail::Run)?;
        }
        "audit" => return audit(args),
        "trace" => {
            let opts = benmo::trace::Options::parse(args).map_err(Fail::usage("trace"))?;
            benmo::trace::run(&opts).map_err(Fail::Run)?;
        }
        _ => {
            let opts = benmo::bench::Options::parse(args).map_err(Fail::usage("bench"))?;
            benmo::bench::run(&opts).map_err(Fail::Run)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn version() -> Result<ExitCode, Fail> {
    say(&format!("benmo {}", env!("CARGO_PKG_VERSION")));
    Ok(ExitCode::SUCCESS)
}

/// One result on stdout. A reader that stopped early (`benmo node --help | head -1`) is not
/// an error worth a panic, so a failed write is ignored (`println!` would panic).
fn say(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{text}");
}

fn unknown_command(word: &str) -> Fail {
    let hint = benmo::human::suggestion(word, COMMANDS);
    let what = match word.starts_with('-') {
        true => format!("unknown flag {word}"),
        false => format!("unknown command '{word}'"),
    };
    Fail::Usage(format!("{what}{hint}"), "")
}

fn audit(mut args: Args) -> Result<ExitCode, Fail> {
    let data = args.data().map_err(Fail::usage("audit"))?;
    args.rest(0).map_err(Fail::usage("audit"))?;
    // A data dir that is not there is a runtime error, not an audit finding.
    benmo::config::Config::load(&data).map_err(Fail::Run)?;
    Ok(ExitCode::from(benmo::audit::main(&data) as u8))
}
