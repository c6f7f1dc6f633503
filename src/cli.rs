//! Command-line flags for `benmo init`, `benmo node` and `benmo audit`, and `benmo init` itself.

use crate::config::{self, Config};
use crate::storage::Store;
use std::fs;
use std::path::{Path, PathBuf};

pub const USAGE: &str = "\
usage:
  benmo init [--nodes N] [--balance B] [--data DIR] [--host H] [--base-port P] [--force]
  benmo node [ID] [--data DIR] [--delay MIN..MAX] [--verbose] [--recover]
  benmo audit [--data DIR]
  benmo bench [--nodes N] [--transfers T] [--unloaded U] [--data DIR] [--base-port P]
  benmo bench --append";

/// Splits `--flag value` pairs and plain words, refusing unknown flags.
pub struct Args {
    words: Vec<String>,
}

impl Args {
    pub fn new(words: Vec<String>) -> Args {
        Args { words }
    }

    /// Removes `flag` and returns its value, if given.
    pub fn value(&mut self, flag: &str) -> Result<Option<String>, String> {
        let Some(i) = self.words.iter().position(|w| w == flag) else {
            return Ok(None);
        };
        if i + 1 >= self.words.len() {
            return Err(format!("{flag} needs a value"));
        }
        self.words.remove(i);
        Ok(Some(self.words.remove(i)))
    }

    pub fn parsed<T: std::str::FromStr>(&mut self, flag: &str, default: T) -> Result<T, String> {
        match self.value(flag)? {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("{flag}: cannot read '{v}'")),
        }
    }

    /// Removes a bare `flag` and says whether it was there.
    pub fn switch(&mut self, flag: &str) -> bool {
        let before = self.words.len();
        self.words.retain(|w| w != flag);
        self.words.len() != before
    }

    pub fn data(&mut self) -> Result<PathBuf, String> {
        Ok(self
            .value("--data")?
            .map_or_else(config::default_data_dir, PathBuf::from))
    }

    /// What is left must be at most `max` plain words.
    pub fn rest(self, max: usize) -> Result<Vec<String>, String> {
        if let Some(flag) = self.words.iter().find(|w| w.starts_with("--")) {
            return Err(format!("unknown flag {flag}"));
        }
        if self.words.len() > max {
            return Err(format!("unexpected argument '{}'", self.words[max]));
        }
        Ok(self.words)
    }
}

/// The narrowest `--delay` range accepted.
pub const MIN_DELAY_SPREAD: u64 = 10;

/// Parses `20ms..100ms`, `20s..60s` or `20..100` (milliseconds).
pub fn parse_delay(text: &str) -> Result<(u64, u64), String> {
    let bad =
        || format!("--delay: expected MIN..MAX such as 20ms..100ms or 20s..60s, not '{text}'");
    let (lo, hi) = text.split_once("..").ok_or_else(bad)?;
    let ms = |s: &str| -> Option<u64> {
        if let Some(n) = s.strip_suffix("ms") {
            n.parse().ok()
        } else if let Some(n) = s.strip_suffix('s') {
            n.parse::<u64>().ok()?.checked_mul(1000)
        } else {
            s.parse().ok()
        }
    };
    let (lo, hi) = (ms(lo).ok_or_else(bad)?, ms(hi).ok_or_else(bad)?);
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
        if size == 0 {
            continue;
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
            Ok(held) => locks.extend(held),
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
}
