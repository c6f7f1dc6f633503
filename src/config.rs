//! The cluster configuration (`cluster.conf`), the cluster key (`cluster.key`) and the layout
//! of a data directory:
//!
//! ```text
//! data/cluster.conf     balance and one `node ID HOST:PORT` line per node (edit freely)
//! data/cluster.key      the shared HMAC key, 64 hex digits, readable by its owner only
//! data/node0/           node 0's chain.log, wal.log and superblock (see storage/)
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "cluster.conf";
pub const KEY_FILE: &str = "cluster.key";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Every account's opening balance.
    pub balance: u64,
    /// `addrs[i]` is node i's `host:port`.
    pub addrs: Vec<String>,
}

/// Where `benmo` looks without `--data`: `$BENMO_DATA`, else `./data` in the working
/// directory. Made absolute so that messages name the directory actually used.
pub fn default_data_dir() -> PathBuf {
    let dir = std::env::var_os("BENMO_DATA")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("data"), PathBuf::from);
    std::path::absolute(&dir).unwrap_or(dir)
}

pub fn node_dir(data: &Path, id: usize) -> PathBuf {
    data.join(format!("node{id}"))
}

impl Config {
    pub fn nodes(&self) -> usize {
        self.addrs.len()
    }

    /// Parses the text form; errors name the line.
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut balance = None;
        let mut addrs = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = |what: &str| format!("line {}: {what}", i + 1);
            match words.as_slice() {
                [] => {}
                ["balance", b] => {
                    balance = Some(
                        b.parse::<u64>()
                            .map_err(|_| at("balance must be a whole number"))?,
                    )
                }
                ["node", id, addr] => {
                    let id: usize = id.parse().map_err(|_| at("node id must be a number"))?;
                    if id != addrs.len() {
                        return Err(at(&format!(
                            "expected node {}, found node {id}",
                            addrs.len()
                        )));
                    }
                    check_addr(addr).map_err(|e| at(&e))?;
                    addrs.push(addr.to_string());
                }
                _ => {
                    return Err(at(&format!(
                        "cannot read '{}'",
                        line.chars().take(40).collect::<String>()
                    )))
                }
            }
        }
        let balance = balance.ok_or("no 'balance' line")?;
        if addrs.len().is_multiple_of(2) {
            return Err(format!(
                "{} nodes listed; a cluster needs an odd number",
                addrs.len()
            ));
        }
        check_supply(addrs.len(), balance)?;
        Ok(Config { balance, addrs })
    }

    pub fn render(&self) -> String {
        let mut s =
            String::from("# Benmo cluster configuration, written by `benmo init`. Safe to edit.\n");
        s += "# Every account's opening balance:\n";
        s += &format!("balance {}\n", self.balance);
        s += "# One line per node: node ID HOST:PORT. Ids run from 0; the count must be odd.\n";
        for (i, a) in self.addrs.iter().enumerate() {
            s += &format!("node {i} {a}\n");
        }
        s
    }

    pub fn load(data: &Path) -> Result<Config, String> {
        let path = data.join(CONFIG_FILE);
        let text = fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!(
                    "{} is not initialised (no {CONFIG_FILE}); run `benmo init`",
                    data.display()
                )
            }
            _ => format!("cannot read {}: {e}", path.display()),
        })?;
        Config::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// All the money there is, `nodes` × `balance`, must fit in a u64, the type of every
/// balance and amount; then no account can ever overflow.
pub fn check_supply(nodes: usize, balance: u64) -> Result<u64, String> {
    u64::try_from(nodes)
        .ok()
        .and_then(|n| n.checked_mul(balance))
        .ok_or_else(|| {
            format!(
                "{nodes} nodes × balance {balance} is more money than a 64-bit balance holds \
                 (at most {} in all)",
                u64::MAX
            )
        })
}

fn check_addr(addr: &str) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or(format!("'{addr}' is not HOST:PORT"))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("'{addr}' is not HOST:PORT"));
    }
    Ok(())
}

/// Writes a fresh random key that only the owner may read.
pub fn write_key(data: &Path) -> Result<(), String> {
    let key: [u8; 32] = rand::random();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let path = data.join(KEY_FILE);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    writeln!(file, "{hex}")
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub fn load_key(data: &Path) -> Result<[u8; 32], String> {
    let path = data.join(KEY_FILE);
    let text =
        fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = text.trim();
    let bad = || format!("{} does not hold 64 hex digits", path.display());
    if text.len() != 64 || !text.is_ascii() {
        return Err(bad());
    }
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_parse_round_trip() {
        let c = Config {
            balance: 100,
            addrs: (0..5).map(|i| format!("127.0.0.1:{}", 7100 + i)).collect(),
        };
        assert_eq!(Config::parse(&c.render()), Ok(c));
    }

    #[test]
    fn hand_edits_with_comments_and_other_hosts() {
        let c = Config::parse("balance 7 # each\n\nnode 0 10.0.0.1:9000\nnode 1 b.example:9000 # far\nnode 2 [::1]:9\n").unwrap();
        assert_eq!(c.nodes(), 3);
        assert_eq!(c.addrs[2], "[::1]:9");
    }

    #[test]
    fn refuses_bad_configs_naming_the_line() {
        for (text, want) in [
            ("node 0 h:1\n", "no 'balance'"),
            ("balance 1\nnode 0 h:1\nnode 1 h:2\n", "odd"),
            ("balance 1\nnode 1 h:1\n", "line 2: expected node 0"),
            ("balance x\n", "line 1"),
            ("balance 1\nnode 0 nohost\n", "line 2"),
            ("balance 1\nnode 0 h:99999\n", "line 2"),
            ("balance 1\nnodes 0 h:1\n", "line 2"),
            (
                "balance 9223372036854775808\nnode 0 h:1\nnode 1 h:2\nnode 2 h:3\n",
                "more money than a 64-bit balance holds",
            ),
        ] {
            let err = Config::parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn the_total_supply_must_fit_in_a_u64() {
        let max = u64::MAX;
        assert_eq!(check_supply(3, max / 3), Ok(max / 3 * 3));
        assert_eq!(check_supply(1, max), Ok(max));
        assert!(check_supply(3, max / 3 + 1).is_err());
        assert!(check_supply(3, 18446744073709551605).is_err());
        let dir = tempfile::tempdir().unwrap();
        let text = format!("balance {max}\nnode 0 h:1\nnode 1 h:2\nnode 2 h:3\n");
        fs::write(dir.path().join(CONFIG_FILE), text).unwrap();
        let err = Config::load(dir.path()).unwrap_err();
        assert!(err.contains("cluster.conf: 3 nodes × balance"), "{err}");
    }

    #[test]
    fn key_round_trip_and_private() {
        let dir = tempfile::tempdir().unwrap();
        write_key(dir.path()).unwrap();
        let key = load_key(dir.path()).unwrap();
        assert_ne!(key, [0; 32]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "key must not be readable by others");
        }
        fs::write(dir.path().join(KEY_FILE), "zz").unwrap();
        assert!(load_key(dir.path()).unwrap_err().contains("64 hex"));
    }

    #[test]
    fn missing_config_says_run_init() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Config::load(dir.path()).unwrap_err().contains("benmo init"));
    }
}
