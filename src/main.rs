//! The `benmo` command: `init`, `node`, `audit` and `bench`.

use benmo::cli::{self, Args, InitOptions};
use benmo::node::{self, NodeOptions};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut words: Vec<String> = std::env::args().skip(1).collect();
    if words.is_empty() {
        eprintln!("{}", cli::USAGE);
        return ExitCode::from(2);
    }
    let command = words.remove(0);
    if command == "trace" {
        return benmo::trace::main(words);
    }
    let args = Args::new(words);
    let result = match command.as_str() {
        "init" => InitOptions::parse(args)
            .and_then(|o| cli::init(&o))
            .map(|msg| println!("{msg}")),
        "node" => NodeOptions::parse(args).and_then(node::run),
        "audit" => return audit(args),
        "bench" => benmo::bench::main(args),
        "help" | "-h" | "--help" => {
            println!("{}", cli::USAGE);
            Ok(())
        }
        other => Err(format!("unknown command '{other}'\n{}", cli::USAGE)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn audit(mut args: Args) -> ExitCode {
    let data = match args.data().and_then(|d| args.rest(0).map(|_| d)) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    ExitCode::from(benmo::audit::main(&data) as u8)
}
