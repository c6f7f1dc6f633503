//! Hostile disk: damaged `chain.log` and `wal.log` files under a real `benmo node`.
//!
//! Damage to acknowledged data (a flipped bit, bytes cut out of the middle, a zeroed header,
//! a damaged length, a tampered block with a recomputed checksum) makes the node refuse to
//! start with one `error:` line naming the file and offset, and a non-zero exit; `benmo audit`
//! names the same file and offset; the files are left exactly as they were. A torn tail (an
//! unfinished last append, never synced) is cut off on start with a logged note, and the node
//! then runs. A synced tail that vanished is refused, naming `--recover`, which then repairs.

use benmo::testing::cluster::LocalCluster;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_benmo");
const WAIT: Duration = Duration::from_secs(30);
const HEADER: usize = 12;

/// A stopped 3-node cluster whose chain holds several blocks, and node 0's pristine files.
struct Fixture {
    _tmp: tempfile::TempDir,
    c: LocalCluster,
    chain: PathBuf,
    wal: PathBuf,
    pristine: (Vec<u8>, Vec<u8>),
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = LocalCluster::init(Path::new(EXE), tmp.path(), 3, 100).unwrap();
        c.start_all().unwrap();
        for (i, (from, to, amount)) in [(0, 1, 5), (1, 2, 7), (2, 0, 3), (0, 2, 1)]
            .into_iter()
            .enumerate()
        {
            let node = c.node(from);
            node.send(&format!("moneyTransfer {from} {to} {amount}"));
            node.wait_for(Instant::now() + WAIT, |l| l.starts_with("committed "))
                .unwrap_or_else(|| panic!("transfer {i} did not commit"));
        }
        let depth = c.converge(WAIT).unwrap().depth;
        assert!(depth >= 3, "want several blocks, got {depth}");
        for i in 0..3 {
            c.kill(i);
        }
        let dir = c.data.join("node0");
        let (chain, wal) = (dir.join("chain.log"), dir.join("wal.log"));
        let pristine = (fs::read(&chain).unwrap(), fs::read(&wal).unwrap());
        assert!(!records(&pristine.1).is_empty(), "empty WAL");
        Fixture {
            _tmp: tmp,
            c,
            chain,
            wal,
            pristine,
        }
    }

    /// Restores node 0's files, then writes `chain` and `wal` (None: pristine).
    fn damage(&self, chain: Option<Vec<u8>>, wal: Option<Vec<u8>>) -> (Vec<u8>, Vec<u8>) {
        let chain = chain.unwrap_or_else(|| self.pristine.0.clone());
        let wal = wal.unwrap_or_else(|| self.pristine.1.clone());
        fs::write(&self.chain, &chain).unwrap();
        fs::write(&self.wal, &wal).unwrap();
        (chain, wal)
    }

    fn files(&self) -> (Vec<u8>, Vec<u8>) {
        (fs::read(&self.chain).unwrap(), fs::read(&self.wal).unwrap())
    }

    fn node_dir_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.chain.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        names
    }

    /// Runs `benmo node 0` on damaged state and checks that it refuses with exactly one line
    /// naming `file` and `offset`, that audit names the same, and that nothing changed.
    fn refuses(&self, file: &Path, offset: usize, why: &str) {
        let before = self.files();
        let entries = self.node_dir_entries();
        let (code, out) = run_bounded(
            Command::new(EXE)
                .args(["node", "0", "--data"])
                .arg(&self.c.data),
        );
        assert_ne!(code, Some(0), "node started on damaged state: {out}");
        let prefix = format!(
            "error: corrupt state file {} at offset {offset}: ",
            file.display()
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "want one line, got {out:?}");
        assert!(
            lines[0].starts_with(&prefix),
            "{out:?} should start {prefix:?}"
        );
        assert!(lines[0].contains(why), "{out:?} should say {why:?}");
        assert_eq!(self.files(), before, "the node modified damaged state");
        assert_eq!(
            self.node_dir_entries(),
            entries,
            "files appeared or vanished"
        );

        let reason = &lines[0]["error: ".len()..];
        let audit = self.c.audit().expect_err("audit passed damaged state");
        let want = format!("error: node 0: {reason}");
        assert!(
            audit.lines().any(|l| l == want),
            "audit should say {want:?}:\n{audit}"
        );
        assert_eq!(self.files(), before, "audit modified damaged state");
    }
}

/// Runs a command that must exit by itself; kills it (and fails) after WAIT.
fn run_bounded(cmd: &mut Command) -> (Option<i32>, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("{cmd:?} did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// (offset, payload length) of every record in a chain.log or wal.log.
fn records(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + HEADER <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        out.push((at, len));
        at += HEADER + len;
    }
    assert_eq!(at, bytes.len(), "fixture files end on a record boundary");
    out
}

/// The records after a log's format marker (its first record, checked here).
fn after_marker(bytes: &[u8]) -> Vec<(usize, usize)> {
    let all = records(bytes);
    let (at, len) = all[0];
    assert!(bytes[at + HEADER..at + HEADER + len].starts_with(br#"{"benmo":"#));
    all[1..].to_vec()
}

fn flip(bytes: &[u8], at: usize, mask: u8) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= mask;
    b
}

/// Every damage case runs on one fixture, in sequence (each restores the files first).
#[test]
fn damaged_state_is_refused_named_and_left_alone() {
    let f = Fixture::new();
    let (chain, wal) = f.pristine.clone();
    let blocks = after_marker(&chain);
    let recs = after_marker(&wal);
    let (b2, b2_len) = blocks[1];

    // 1. A bit flipped in a block's payload: checksum mismatch at that block.
    f.damage(Some(flip(&chain, b2 + HEADER + b2_len / 2, 0x08)), None);
    f.refuses(&f.chain, b2, "checksum mismatch");

    // 2. A bit flipped in the checksum itself.
    f.damage(Some(flip(&chain, b2 + 6, 0x80)), None);
    f.refuses(&f.chain, b2, "checksum mismatch");

    // 3. A bit flipped in a WAL record.
    let (r, r_len) = recs[recs.len() - 1];
    f.damage(None, Some(flip(&wal, r + HEADER + r_len / 2, 0x02)));
    f.refuses(&f.wal, r, "checksum mismatch");

    // 4. Bytes cut out of the middle of chain.log (truncated record, not at the end).
    let mut cut = chain.clone();
    cut.drain(b2 + HEADER + 5..b2 + HEADER + 15);
    f.damage(Some(cut), None);
    f.refuses(&f.chain, b2, "checksum mismatch");

    // 5. A whole block cut out of the middle: the next one is at the wrong depth.
    let mut gap = chain.clone();
    gap.drain(b2..b2 + HEADER + b2_len);
    f.damage(Some(gap), None);
    f.refuses(&f.chain, b2, "block has depth 3, expected 2");

    // 6. A torn page in the middle: a zeroed header followed by live records.
    let mut torn = chain.clone();
    torn[b2..b2 + HEADER].fill(0);
    f.damage(Some(torn), None);
    f.refuses(&f.chain, b2, "empty record");

    // 7. The length of the last block damaged: not mistaken for a torn tail.
    let (last, _) = *blocks.last().unwrap();
    f.damage(Some(flip(&chain, last, 0x01)), None);
    f.refuses(&f.chain, last, "length");

    // 8. One bit flipped inside a block with its record checksum fixed up: only the block
    //    hash can catch it.
    let payload = &chain[b2 + HEADER..b2 + HEADER + b2_len];
    let field = b"\"proposer\":";
    let at = payload
        .windows(field.len())
        .position(|w| w == field)
        .expect("proposer field")
        + field.len();
    let mut forged = flip(&chain, b2 + HEADER + at, 0x01); // '0' <-> '1', '2' <-> '3'
    let sum = Sha256::digest(&forged[b2 + HEADER..b2 + HEADER + b2_len]);
    forged[b2 + 4..b2 + HEADER].copy_from_slice(&sum[..8]);
    f.damage(Some(forged), None);
    f.refuses(&f.chain, b2, "block 2 fails its hash");

    // 9. A whole WAL record replaced with well-framed garbage of the same length.
    let mut junk = wal.clone();
    let (r0, r0_len) = recs[0];
    junk[r0 + HEADER..r0 + HEADER + r0_len].fill(b'x');
    let sum = Sha256::digest(&junk[r0 + HEADER..r0 + HEADER + r0_len]);
    junk[r0 + 4..r0 + HEADER].copy_from_slice(&sum[..8]);
    f.damage(None, Some(junk));
    f.refuses(&f.wal, r0, "undecodable record");

    // 10. A well-framed WAL record that no run of node 0 could have written: a queued
    //     transfer from another node's account.
    let forged = br#"{"Queue":[1,1,2,5]}"#;
    let mut foreign = wal.clone();
    let at = foreign.len();
    foreign.extend_from_slice(&(forged.len() as u32).to_le_bytes());
    foreign.extend_from_slice(&Sha256::digest(forged)[..8]);
    foreign.extend_from_slice(forged);
    f.damage(None, Some(foreign));
    f.refuses(
        &f.wal,
        at,
        "queued transfer 1.1 is not from node 0's account",
    );

    // 11. The format marker itself damaged: it cannot be flipped away unseen.
    f.damage(Some(flip(&chain, HEADER + 3, 0x01)), None);
    f.refuses(&f.chain, 0, "checksum mismatch");
}

#[test]
fn torn_tails_are_repaired_on_start_and_the_node_runs() {
    let mut f = Fixture::new();
    let (chain, wal) = f.pristine.clone();
    let blocks = after_marker(&chain);
    let (b, b_len) = *blocks.last().unwrap();
    let (r, _) = *records(&wal).last().unwrap();

    // A crash in the middle of appending (never synced): a block half written after the
    // last one, and a WAL record cut inside its header.
    let (last, dropped) = (chain.len(), HEADER + b_len / 2);
    let torn_chain = [&chain[..], &chain[b..b + dropped]].concat();
    let torn_wal = [&wal[..], &wal[r..r + 5]].concat();
    f.damage(Some(torn_chain.clone()), Some(torn_wal.clone()));

    // audit sees the torn tails, calls them repairable, passes, and changes nothing.
    let audit = f.c.audit().expect("a torn tail is not a failure");
    let note = format!(
        "note: node 0: torn tail of {} at offset {last} ({dropped} bytes, repairable)",
        f.chain.display(),
    );
    assert!(audit.contains(&note), "{audit}\nshould contain {note}");
    assert_eq!(f.files(), (torn_chain.clone(), torn_wal.clone()));

    f.c.start(0).unwrap();
    let log = fs::read_to_string(f.c.data.join("node0.stderr")).unwrap();
    let want = [
        format!(
            "note: repaired torn tail of {} at offset {last} ({dropped} bytes dropped)",
            f.chain.display(),
        ),
        format!(
            "note: repaired torn tail of {} at offset {} (5 bytes dropped)",
            f.wal.display(),
            wal.len()
        ),
    ];
    for line in &want {
        assert!(log.lines().any(|l| l == line), "{log}\nshould have {line}");
    }
    assert_eq!(f.files().0, chain, "the torn block was cut off");

    // The node runs and commits new work.
    f.c.start(1).unwrap();
    f.c.start(2).unwrap();
    let node = f.c.node(0);
    node.send("moneyTransfer 0 1 2");
    node.wait_for(Instant::now() + WAIT, |l| l.starts_with("committed "))
        .expect("node 0 commits after repair");
    let status = f.c.converge(WAIT).unwrap();
    assert_eq!(status.depth as usize, blocks.len() + 1);
    for i in 0..3 {
        f.c.kill(i);
    }
    let audit = f.c.audit().expect("audit passes after repair");
    assert!(audit.contains("audit ok"), "{audit}");
    assert!(!audit.contains("torn"), "{audit}");
}

/// A node dir whose wal.log lost synced records (cut at a record boundary, as a disk that
/// dropped a write or a copy taken while the node ran leaves it) is refused, naming
/// `--recover`; audit reports it; `--recover` then starts it without voting on what it
/// forgot.
#[test]
fn a_lost_synced_tail_is_refused_then_recovered() {
    let mut f = Fixture::new();
    let wal = f.pristine.1.clone();
    // Keep only the first record: far behind anything the superblock says was synced.
    let recs = after_marker(&wal);
    let keep = recs.get(1).map_or(0, |&(at, _)| at);
    let (_, cut) = f.damage(None, Some(wal[..keep].to_vec()));

    let (code, out) = run_bounded(
        Command::new(EXE)
            .args(["node", "0", "--data"])
            .arg(&f.c.data),
    );
    assert_ne!(code, Some(0), "node started on a lost tail: {out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "want one line, got {out:?}");
    let prefix = format!(
        "error: lost synced data at the end of {}: expected {} bytes synced",
        f.wal.display(),
        wal.len()
    );
    assert!(
        lines[0].starts_with(&prefix),
        "{out:?} should start {prefix:?}"
    );
    assert!(lines[0].contains("--recover"), "{out:?}");
    assert_eq!(f.files().1, cut, "the node modified the WAL");

    let audit = f.c.audit().expect_err("audit passed a lost tail");
    let want = format!("error: node 0: {}", &lines[0]["error: ".len()..]);
    assert!(
        audit.lines().any(|l| l == want),
        "{audit}\nshould have {want}"
    );

    f.c.node_args = vec!["--recover".into()];
    f.c.start(0).unwrap();
    f.c.node_args.clear();
    let log = fs::read_to_string(f.c.data.join("node0.stderr")).unwrap();
    assert!(
        log.contains("moved damaged") && log.contains("lost synced data"),
        "{log}"
    );
    f.c.start(1).unwrap();
    f.c.start(2).unwrap();
    let line =
        f.c.node(0)
            .wait_for(Instant::now() + WAIT, |l| l.starts_with("recovered: "));
    assert!(line.is_some(), "node 0 did not recover its promise");
    let node = f.c.node(1);
    node.send("moneyTransfer 1 0 2");
    node.wait_for(Instant::now() + WAIT, |l| l.starts_with("committed "))
        .expect("the cluster commits after recovery");
    f.c.converge(WAIT).unwrap();
    for i in 0..3 {
        f.c.kill(i);
    }
    let audit = f.c.audit().expect("audit passes after recovery");
    assert!(audit.contains("audit ok"), "{audit}");
}
