//! Command-line flags for `benmo init`, `benmo node`, `benmo audit`, `benmo bench` and
//! `benmo trace`, their help texts, and `benmo init` itself.
//!
//! Conventions: `-h`/`--help` prints help to stdout and exits 0; a usage error is one line
//! plus a hint on stderr and exit 2; a runtime error is `error: ...` on stderr and exit 1.

use crate::config::{self, Config};
use crate::human;
use crate::storage::Store;
use std::fs;
use std::path::{Path, PathBuf};

pub const USAGE: &str = "\
usage: benmo COMMAND [FLAGS]

A public transaction ledger kept consistent with Paxos.

commands:
  init      write a fresh cluster's configuration, key and empty node states
  node      run one node; type commands into its stdin (help lists them)
  audit     check every node's stored chain in a data dir
  bench     measure throughput and latency of a local cluster
  trace     draw the Paxos round that decided a depth, from the nodes' traces

  benmo COMMAND --help    flags of one command, with defaults and an example
  benmo --version         the version

The data dir is ./data, or $BENMO_DATA when set, unless --data DIR is given.
Exit status: 0 success, 1 runtime error, 2 usage error.";

pub const INIT_HELP: &str = "\
benmo init: write a fresh cluster's configuration, key and empty node states

usage: benmo init [--nodes N] [--balance B] [--data DIR] [--host H] [--base-port P] [--force]

flags:
  --nodes N        number of nodes, odd (default 5)
  --balance B      every account's opening balance (default 100)
  --data DIR       where to write (default ./data, or $BENMO_DATA)
  --host H         host written for every node (default 127.0.0.1)
  --base-port P    node i listens on P+i (default 7100)
  --force          wipe a data dir that already holds committed blocks (default off)
  -h, --help       this text

init never wipes a data dir while a node of it runs (with or without --force): it
refuses if a node holds the lock on its node dir, or if an address in the existing
cluster.conf is in use on this machine.

example:
  benmo init --nodes 3 --data /tmp/benmo";

pub const NODE_HELP: &str = "\
benmo node: run one node of a cluster written by benmo init

usage: benmo node [ID] [--data DIR] [--delay MIN..MAX] [--verbose] [--recover]
                  [--classroom [--phase-delay DURATION] [--hold PHASES]]

With no ID it asks for one. Type commands into its stdin (help lists them);
quit, exit or Ctrl-C stop it cleanly.

flags:
  --data DIR             the data dir (default ./data, or $BENMO_DATA)
  --delay MIN..MAX       random wait before running for leader
                         (default 20ms..100ms, or 20s..60s with --classroom)
  --verbose              print every Paxos phase, in 80 columns (default off)
  --verbose=full         the same, every line in full however wide
  --recover              move damaged state aside and rebuild from peers
                         (default off)
  --classroom            the seed's classroom pace, slow enough to follow by
                         hand (default off)
  --phase-delay DURATION pause between Paxos phases, e.g. 2s or 500ms; only
                         with --classroom (default none)
  --hold PHASES          pause outgoing messages before each of these phases
                         (prepare,promise,reject,accept,accepted,decide) until
                         step or go; only with --classroom (default none)
  -h, --help             this text

example:
  benmo node 0 --data /tmp/benmo --verbose";

pub const AUDIT_HELP: &str = "\
benmo audit: check every node's stored chain in a data dir

Checks that each hash chain is intact, that all chains agree on their common prefix,
that no transfer id appears twice and that money is conserved. Prints a one-line
summary; exits 1, naming each violation, if a check fails.

usage: benmo audit [--data DIR]

flags:
  --data DIR       the data dir (default ./data, or $BENMO_DATA)
  -h, --help       this text

example:
  benmo audit --data /tmp/benmo";

pub const BENCH_HELP: &str = "\
benmo bench: measure throughput and latency of a local cluster

Starts N real nodes on loopback, runs C closed-loop clients for each C in --clients
(each keeps one transfer outstanding; followers first), then times unloaded and
saturated transfers. Beside each closed-loop row it prints the floor measured in the
same run (4 KiB append+fdatasync p50 in the data dir, loopback TCP round trip p50).
Fails if the audit does or a transfer is lost or duplicated.
--append measures storage alone instead; --crash-loop R kills every node at once
under load R times and checks that no transfer that printed committed is lost.

usage: benmo bench [--nodes N] [--clients C,C,..] [--duration D] [--transfers T]
                   [--unloaded U] [--data DIR] [--base-port P]
       benmo bench --crash-loop R [--clients C] [--nodes N] [--data DIR] [--base-port P]
       benmo bench --append

flags:
  --nodes N        nodes, odd, at least 3 (default 5)
  --clients C,..   closed-loop client counts (default 1,16,64; 16 with --crash-loop)
  --duration D     how long each closed-loop count runs, e.g. 5s or 500ms (default 5s)
  --transfers T    saturated transfers (default 1000000)
  --unloaded U     unloaded transfers, one at a time (default 500)
  --crash-loop R   R rounds of load, kill -9 of every node at once, restart (default off)
  --data DIR       an empty dir to run in, kept afterwards (default a temp dir)
  --base-port P    node i listens on P+i (default free ports)
  --append         measure appending and reopening the chain only (default off)
  -h, --help       this text

example:
  benmo bench --clients 1,16,64
  benmo bench --nodes 3 --transfers 100000
  benmo bench --crash-loop 20";

pub const TRACE_HELP: &str = "\
benmo trace: draw the Paxos round that decided a depth, from the nodes' traces

Reads DIR/node<ID>/trace.log* and draws the round as a text ladder (80 columns)
or an SVG sequence diagram: every message, what the students did (severs,
crashes, drops), step-downs and timeouts, and the moment the value was chosen.

usage: benmo trace [--data DIR] [--depth D] [--format svg|text] [--out FILE]

flags:
  --data DIR       the data dir (default ./data, or $BENMO_DATA)
  --depth D        the depth whose round to draw (default the last decided one)
  --format F       text or svg (default text, or svg when FILE ends in .svg)
  --out FILE       write the picture to FILE and print its path (default stdout)
  -h, --help       this text

example:
  benmo trace --data /tmp/benmo --depth 3 --out round.svg";

/// Why a command did not succeed; it decides the exit status.
#[derive(Debug, PartialEq, Eq)]
pub enum Fail {
    /// The command line is wrong (exit 2): the reason and the command whose help to try.
    Usage(String, &'static str),
    /// The command ran and failed (exit 1).
    Run(String),
}

impl Fail {
    /// A usage error of `benmo <command>`.
    pub fn usage(command: &'static str) -> impl Fn(String) -> Fail {
        move |reason| Fail::Usage(reason, command)
    }
}

/// The flags and plain words of one subcommand. `--flag=value` is the same as `--flag value`.
pub struct Args {
    words: Vec<String>,
    /// Every flag asked about so far, for "did you mean".
    known: Vec<&'static str>,
}

impl Args {
    pub fn new(words: Vec<String>) -> Args {
        let mut split = Vec::with_capacity(words.len());
        for word in words {
            match word.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    split.push(flag.to_string());
                    split.push(value.to_string());
                }
                _ => split.push(word),
            }
        }
        Args {
            words: split,
            known: Vec::new(),
        }
    }

    /// Whether `-h` or `--help` was given.
    pub fn help(&self) -> bool {
        self.words.iter().any(|w| w == "-h" || w == "--help")
    }

    /// Removes `flag` and returns its value, if given.
    pub fn value(&mut self, flag: &'static str) -> Result<Option<String>, String> {
        self.known.push(flag);
        let Some(i) = self.words.iter().position(|w| w == flag) else {
            return Ok(None);
        };
        if i + 1 >= self.words.len() {
            return Err(format!("{flag} needs a value"));
        }
        self.words.remove(i);
        Ok(Some(self.words.remove(i)))
    }

    pub fn parsed<T: std::str::FromStr>(
        &mut self,
        flag: &'static str,
        default: T,
    ) -> Result<T, String> {
        match self.value(flag)? {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("{flag}: cannot read '{v}'")),
        }
    }

    /// Removes a bare `flag` and says whether it was there.
    pub fn switch(&mut self, flag: &'static str) -> bool {
        self.known.push(flag);
        let before = self.words.len();
        self.words.retain(|w| w != flag);
        self.words.len() != before
    }

    /// A switch that may name one `mode` (`--verbose` or `--verbose=full`): `None` if
    /// absent, else whether the mode was named.
    pub fn switch_mode(&mut self, flag: &'static str, mode: &str) -> Option<bool> {
        self.known.push(flag);
        let mut found = None;
        while let Some(i) = self.words.iter().position(|w| w == flag) {
            self.words.remove(i);
            let named = self.words.get(i).is_some_and(|w| w == mode);
            if named {
                self.words.remove(i);
            }
            found = Some(found.unwrap_or(false) || named);
        }
        found
    }

    /// `--data DIR`, else the default data dir.
    pub fn data(&mut self) -> Result<PathBuf, String> {
        Ok(self
            .value("--data")?
            .map_or_else(config::default_data_dir, PathBuf::from))
    }

    /// What is left must be at most `max` plain words.
    pub fn rest(self, max: usize) -> Result<Vec<String>, String> {
        let is_flag = |w: &&String| w.starts_with('-') && w.len() > 1;
        if let Some(flag) = self.words.iter().find(is_flag) {
            let hint = human::suggestion(flag, &self.known);
            return Err(format!("unknown flag {flag}{hint}"));
        }
        if self.words.len() > max {
            return Err(format!("unexpected argument '{}'", self.words[max]));
        }
        Ok(self.words)
    }
}

/// The narrowest `--delay` range accepted.
pub const MIN_DELAY_SPREAD: u64 = 10;

/// Milliseconds in `500ms`, `2s` or `20` (milliseconds).
pub fn parse_duration(s: &str) -> Option<u64> {
    if let Some(n) = s.strip_suffix("ms") {
        n.parse().ok()
    } else if let Some(n) = s.strip_suffix('s') {
        n.parse::<u64>().ok()?.checked_mul(1000)
    } else {
        s.parse().ok()
    }
}

/// Parses `20ms..100ms`, `20s..60s` or `20..100` (milliseconds).
pub fn parse_delay(text: &str) -> Result<(u64, u64), String> {
    let bad =
        || format!("--delay: expected MIN..MAX such as 20ms..100ms or 20s..60s, not '{text}'");
    let (lo, hi) = text.split_once("..").ok_or_else(bad)?;
    let (lo, hi) = (
        parse_duration(lo).ok_or_else(bad)?,
        parse_duration(hi).ok_or_else(bad)?,
    );
    if lo > hi {
        return Err(bad());
    }
    if hi - lo < MIN_DELAY_SPREAD {
        // Without a spread, competing candidates keep pre-empting each other.
        return Err(format!("--delay: MAX must exceed MIN by at least {MIN_DELAY_SPREAD}ms, so that competing candidates back off"));
    }
    Ok((lo, hi))
}

#[derive(Debug)]
pub struct InitOptions {
    pub nodes: usize,
    pub balance: u64,
    pub data: PathBuf,
    pub host: String,
    pub base_port: u16,
    pub force: bool,
}

impl InitOptions {
    pub fn parse(mut args: Args) -> Result<InitOptions, String> {
        let opts = InitOptions {
            nodes: args.parsed("--nodes", 5)?,
            balance: args.parsed("--balance", 100)?,
            data: args.data()?,
            host: args
                .value("--host")?
                .unwrap_or_else(|| "127.0.0.1".to_string()),
            base_port: args.parsed("--base-port", 7100)?,
            force: args.switch("--force"),
        };
        args.rest(0)?;
        if opts.nodes == 0 || opts.nodes.is_multiple_of(2) {
            return Err(format!(
                "--nodes must be odd and at least 1, not {}",
                opts.nodes
            ));
        }
        if opts.base_port as usize + opts.nodes > 65536 {
            return Err("--base-port leaves no room for every node's port".to_string());
        }
        config::check_supply(opts.nodes, opts.balance)?;
        Ok(opts)
    }
}

/// `benmo init`: writes the configuration, a key and every node's fresh state.
pub fn init(opts: &InitOptions) -> Result<String, String> {
    let data = &opts.data;
    // Held until init is done, so no node can start on a dir while it is wiped.
    let _locks = lock_nodes(data)?;
    // A node whose dir lock cannot be seen (its dir moved or deleted) still holds its port.
    check_ports(data)?;
    if let Some(depth) = committed_depth(data) {
        if !opts.force {
            return Err(format!(
                "{} already holds committed blocks (depth {depth}); use --force to wipe it",
                data.display()
            ));
        }
    }
    fs::create_dir_all(data).map_err(|e| format!("cannot create {}: {e}", data.display()))?;
    wipe_nodes(data)?;
    let addrs = (0..opts.nodes)
        .map(|i| format!("{}:{}", opts.host, opts.base_port as usize + i))
        .collect();
    let config = Config {
        balance: opts.balance,
        addrs,
    };
    let path = data.join(config::CONFIG_FILE);
    fs::write(&path, config.render())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    config::write_key(data)?;
    for id in 0..opts.nodes {
        Store::create(&config::node_dir(data, id)).map_err(|e| e.to_string())?;
    }
    Ok(format!(
        "initialised {} nodes with balance {} each in {} (ports {}..{})",
        opts.nodes,
        opts.balance,
        data.display(),
        opts.base_port,
        opts.base_port as usize + opts.nodes - 1
    ))
}

/// The deepest chain among the nodes already in `data`, if any holds a block.
fn committed_depth(data: &Path) -> Option<u64> {
    let config = Config::load(data).ok();
    let nodes = config.as_ref().map_or(0, Config::nodes);
    let balance = config.as_ref().map_or(0, |c| c.balance);
    let mut deepest = None;
    for entry in fs::read_dir(data).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.starts_with("node") || !entry.path().is_dir() {
            continue;
        }
        let chain = entry.path().join("chain.log");
        let size = fs::metadata(&chain).map(|m| m.len()).unwrap_or(0);
        if size <= Store::empty_chain_len() {
            continue; // no block: empty, or just its format marker
        }
        // A chain we cannot read still counts as data worth keeping.
        let depth = Store::verify(&entry.path(), nodes, balance, None, |_| {})
            .map_or(1, |(l, _)| l.depth.max(1));
        deepest = deepest.max(Some(depth));
    }
    deepest
}

/// Refuses, naming the node and its PID, if a node is running on any node dir in `data`
/// (`--force` or not); otherwise locks every node dir that has a lock file.
fn lock_nodes(data: &Path) -> Result<Vec<crate::lock::DirLock>, String> {
    let Ok(entries) = fs::read_dir(data) else {
        return Ok(Vec::new()); // no data dir yet, or unreadable: creating it will say
    };
    let mut dirs: Vec<(usize, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let id = e.file_name().to_str()?.strip_prefix("node")?.parse().ok()?;
            e.path().is_dir().then(|| (id, e.path()))
        })
        .collect();
    dirs.sort();
    let mut locks = Vec::new();
    for (id, dir) in dirs {
        match crate::lock::check(&dir) {
            Ok(held) => locks.push(held),
            Err(e @ crate::lock::LockError::Busy { .. }) => {
                return Err(format!(
                    "node {id} is running on {} ({}); stop it before init, which would wipe it",
                    dir.display(),
                    e.holder()
                ))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(locks)
}

/// Refuses, naming the node and its port, if a port of the cluster already in `data` (its
/// `cluster.conf`) is in use on this machine: its node may still be running.
fn check_ports(data: &Path) -> Result<(), String> {
    let Ok(config) = Config::load(data) else {
        return Ok(()); // no cluster there yet, or no readable one: no ports to check
    };
    for (id, addr) in config.addrs.iter().enumerate() {
        if port_in_use(addr) {
            return Err(format!(
                "node {id} of {} may be running: its address {addr} is in use; stop it \
                 before init, which would wipe it",
                data.display()
            ));
        }
    }
    Ok(())
}

/// Whether binding `addr` here fails because something listens on it. Addresses of other
/// machines cannot be bound and are not checked.
fn port_in_use(addr: &str) -> bool {
    let Ok(addrs) = std::net::ToSocketAddrs::to_socket_addrs(addr) else {
        return false;
    };
    addrs.into_iter().any(|a| {
        matches!(std::net::TcpListener::bind(a), Err(e) if e.kind() == std::io::ErrorKind::AddrInUse)
    })
}

fn wipe_nodes(data: &Path) -> Result<(), String> {
    let entries = fs::read_dir(data).map_err(|e| format!("cannot read {}: {e}", data.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let is_node = name
            .strip_prefix("node")
            .is_some_and(|n| n.parse::<usize>().is_ok());
        if is_node && entry.path().is_dir() {
            fs::remove_dir_all(entry.path())
                .map_err(|e| format!("cannot remove {}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Args {
        Args::new(s.split_whitespace().map(String::from).collect())
    }

    #[test]
    fn delays() {
        assert_eq!(parse_delay("20s..60s"), Ok((20_000, 60_000)));
        assert_eq!(parse_delay("5ms..40ms"), Ok((5, 40)));
        assert_eq!(parse_delay("0..10"), Ok((0, 10)));
        assert!(parse_delay("50ms..55ms").unwrap_err().contains("back off"));
        assert!(parse_delay("60s..20s").is_err());
        assert!(parse_delay("fast").is_err());
    }

    #[test]
    fn init_flags() {
        let o = InitOptions::parse(args(
            "--nodes 3 --balance 7 --base-port 9000 --force --host 127.0.0.2",
        ))
        .unwrap();
        assert_eq!(
            (o.nodes, o.balance, o.base_port, o.force, o.host.as_str()),
            (3, 7, 9000, true, "127.0.0.2")
        );
        assert!(InitOptions::parse(args("--nodes 4"))
            .unwrap_err()
            .contains("odd"));
        assert!(InitOptions::parse(args("--nodes"))
            .unwrap_err()
            .contains("needs a value"));
        assert!(InitOptions::parse(args("--bogus 1"))
            .unwrap_err()
            .contains("unknown flag"));
        assert!(InitOptions::parse(args("--base-port 65535")).is_err());
        assert!(
            InitOptions::parse(args("--nodes 3 --balance 18446744073709551605"))
                .unwrap_err()
                .contains("more money than a 64-bit balance holds")
        );
        assert!(InitOptions::parse(args("--nodes 3 --balance 6148914691236517205")).is_ok());
    }

    #[test]
    fn equals_form_help_and_suggestions() {
        let o = InitOptions::parse(args("--nodes=3 --data=/tmp/x=y")).unwrap();
        assert_eq!((o.nodes, o.data), (3, PathBuf::from("/tmp/x=y")));
        assert!(args("--nodes 3 -h").help());
        let err = InitOptions::parse(args("--node 3")).unwrap_err();
        assert!(err.contains("did you mean --nodes?"), "{err}");
        let err = InitOptions::parse(args("-x")).unwrap_err();
        assert!(err.contains("unknown flag -x"), "{err}");
        assert_eq!(parse_duration("2s"), Some(2000));
        assert_eq!(parse_duration("500ms"), Some(500));
        assert_eq!(parse_duration("soon"), None);
    }
}
