//! Unit tests of the store: reopen, torn tails, damage, compaction and recovery.

use super::*;
use crate::ledger::{Transfer, TxId};
use crate::paxos::{Ballot, Proposal};
use tempfile::TempDir;

const NODES: usize = 3;
const BALANCE: u64 = 100;

fn tx(node: usize, seq: u64, credit: usize, amount: u64) -> Transfer {
    Transfer {
        id: TxId { node, seq },
        credit,
        amount,
    }
}

/// `n` valid blocks, each moving 1 from node d % 3 to the next node.
fn chain(n: usize) -> Vec<Block> {
    let mut ledger = Ledger::new(NODES, BALANCE);
    (0..n)
        .map(|_| {
            let node = ledger.depth as usize % NODES;
            let t = tx(node, ledger.next_seq[node], (node + 1) % NODES, 1);
            let block = ledger.seal(node, &[t]);
            ledger.apply(&block).unwrap();
            block
        })
        .collect()
}

fn records() -> Vec<Record> {
    let ballot = Ballot { round: 3, node: 1 };
    vec![
        Record::Promise(ballot),
        Record::Queue(tx(0, 1, 2, 5)),
        Record::Accept {
            depth: 4,
            ballot,
            value: Proposal {
                proposer: 1,
                transfers: vec![tx(1, 1, 0, 7)],
            },
        },
        Record::Promise(Ballot { round: 4, node: 2 }),
    ]
}

fn open(dir: &Path) -> Result<Opened, StoreError> {
    Store::open(dir, NODES, BALANCE, None)
}

/// A synced store holding `blocks` and `recs`; returns the temp dir and the state dir.
fn fresh(blocks: &[Block], recs: &[Record]) -> (TempDir, PathBuf) {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("node0");
    Store::create(&dir).unwrap();
    let mut store = open(&dir).unwrap().store;
    blocks.iter().for_each(|b| store.commit(b).unwrap());
    recs.iter().for_each(|r| store.append(r).unwrap());
    store.sync().unwrap();
    (tmp, dir)
}

fn frame(value: &impl Serialize) -> Vec<u8> {
    let mut buf = Vec::new();
    encode(&mut buf, value).unwrap();
    buf
}

/// File offset of each block in a chain.log holding `blocks` (after the format marker).
fn offsets(blocks: &[Block]) -> Vec<u64> {
    let mut at = Store::empty_chain_len();
    blocks
        .iter()
        .map(|b| {
            let here = at;
            at += frame(b).len() as u64;
            here
        })
        .collect()
}

/// Appends `bytes` to `path` as a crash in the middle of an append leaves them: written,
/// never synced, so the superblock does not count them.
fn unsynced(path: &Path, bytes: &[u8]) {
    let mut file = File::options().append(true).open(path).unwrap();
    file.write_all(bytes).unwrap();
}

fn set_len(path: &Path, len: u64) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

fn read(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    (
        fs::read(dir.join(CHAIN)).unwrap(),
        fs::read(dir.join(WAL)).unwrap(),
    )
}

fn flip(path: &Path, at: u64, mask: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize] ^= mask;
    fs::write(path, bytes).unwrap();
}

fn assert_corrupt(result: Result<Opened, StoreError>, file: &Path, at: u64, why: &str) {
    match result {
        Err(StoreError::Corrupt {
            file: f,
            offset,
            reason,
        }) => {
            assert_eq!((f.as_path(), offset), (file, at), "{reason}");
            assert!(reason.contains(why), "{reason:?} should mention {why:?}");
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, got a store"),
    }
}

#[test]
fn blocks_and_records_survive_reopen() {
    let blocks = chain(20);
    let (_tmp, dir) = fresh(&blocks[..10], &records()[..2]);
    let mut store = open(&dir).unwrap().store;
    blocks[10..].iter().for_each(|b| store.commit(b).unwrap());
    records()[2..].iter().for_each(|r| store.append(r).unwrap());
    store.sync().unwrap();
    drop(store);

    let opened = open(&dir).unwrap();
    let mut expected = Ledger::new(NODES, BALANCE);
    blocks.iter().for_each(|b| expected.apply(b).unwrap());
    assert_eq!(opened.ledger, expected);
    assert_eq!(opened.records, records());
    assert!(opened.repairs.is_empty());
    assert_eq!(opened.store.depth(), 20);
    let wal_len = fs::metadata(dir.join(WAL)).unwrap().len();
    assert_eq!(opened.store.wal_bytes(), wal_len);
}

#[test]
fn unsynced_writes_count_but_are_not_served_or_kept() {
    let blocks = chain(3);
    let (_tmp, dir) = fresh(&blocks[..1], &[]);
    let mut store = open(&dir).unwrap().store;
    store.commit(&blocks[1]).unwrap();
    store.append(&records()[0]).unwrap();
    assert_eq!(store.depth(), 2);
    assert!(store.wal_bytes() > 0);
    assert_eq!(store.blocks(1, usize::MAX).unwrap(), blocks[..1]);
    drop(store);
    let opened = open(&dir).unwrap();
    assert_eq!((opened.store.depth(), opened.records.len()), (1, 0));
}

#[test]
fn blocks_reads_by_offset_within_the_byte_budget() {
    let blocks = chain(10);
    let (_tmp, dir) = fresh(&blocks, &[]);
    let mut store = open(&dir).unwrap().store;
    assert_eq!(store.blocks(0, usize::MAX).unwrap(), blocks);
    assert_eq!(store.blocks(4, usize::MAX).unwrap(), blocks[3..]);
    let one = serde_json::to_vec(&blocks[3]).unwrap().len();
    assert_eq!(store.blocks(4, 1).unwrap(), blocks[3..4], "at least one");
    assert_eq!(store.blocks(4, 2 * one + 1).unwrap(), blocks[3..5]);
    assert_eq!(store.blocks(10, usize::MAX).unwrap(), blocks[9..]);
    assert!(store.blocks(11, usize::MAX).unwrap().is_empty());
    assert!(store.blocks(u64::MAX, usize::MAX).unwrap().is_empty());
}

#[test]
fn blocks_notices_rot_after_open() {
    let blocks = chain(3);
    let (_tmp, dir) = fresh(&blocks, &[]);
    let mut store = open(&dir).unwrap().store;
    let at = offsets(&blocks)[1];
    flip(&dir.join(CHAIN), at + HEADER as u64 + 3, 0x01);
    assert!(store.blocks(1, 1).is_ok());
    match store.blocks(2, usize::MAX) {
        Err(StoreError::Corrupt { offset, .. }) => assert_eq!(offset, at),
        other => panic!("expected Corrupt, got {:?}", other.map(|b| b.len())),
    }
}

#[test]
fn compaction_keeps_exactly_the_live_records() {
    let blocks = chain(4);
    let (_tmp, dir) = fresh(&blocks[..2], &records());
    let mut store = open(&dir).unwrap().store;
    let before = store.wal_bytes();
    store.commit(&blocks[2]).unwrap();
    store.append(&records()[0]).unwrap(); // buffered: superseded by `live`
    let live = &records()[3..];
    store.compact(live).unwrap();
    assert!(store.wal_bytes() < before);
    assert_eq!(store.depth(), 3);
    store.append(&records()[1]).unwrap();
    store.commit(&blocks[3]).unwrap();
    store.sync().unwrap();
    drop(store);

    let opened = open(&dir).unwrap();
    assert_eq!(
        opened.records,
        vec![records()[3].clone(), records()[1].clone()]
    );
    assert_eq!(
        opened.store.depth(),
        4,
        "pending blocks were synced by compact"
    );
    assert!(!dir.join(WAL_TMP).exists());
}

#[test]
fn leftover_compaction_file_is_ignored_and_removed() {
    let (_tmp, dir) = fresh(&chain(1), &records());
    fs::write(dir.join(WAL_TMP), b"half written").unwrap();
    let opened = open(&dir).unwrap();
    assert_eq!(opened.records, records());
    assert!(!dir.join(WAL_TMP).exists());
}

#[test]
fn unsynced_torn_last_records_are_cut_off_and_noted() {
    let blocks = chain(5);
    let (_tmp, dir) = fresh(&blocks[..4], &records()[..3]);
    let (last_block, last_record) = (len(&dir.join(CHAIN)), len(&dir.join(WAL)));
    let torn_block = frame(&blocks[4]);
    unsynced(&dir.join(CHAIN), &torn_block[..torn_block.len() - 7]);
    unsynced(&dir.join(WAL), &frame(&records()[3])[..5]); // inside the header

    let opened = open(&dir).unwrap();
    assert_eq!(opened.store.depth(), 4);
    assert_eq!(opened.records, records()[..3]);
    assert_eq!(
        opened.repairs,
        vec![
            format!(
                "repaired torn tail of {} at offset {last_block} ({} bytes dropped)",
                dir.join(CHAIN).display(),
                torn_block.len() - 7
            ),
            format!(
                "repaired torn tail of {} at offset {last_record} (5 bytes dropped)",
                dir.join(WAL).display()
            ),
        ]
    );
    let (c, w) = read(&dir);
    assert_eq!((c.len() as u64, w.len() as u64), (last_block, last_record));
    drop(opened);
    assert!(open(&dir).unwrap().repairs.is_empty());
}

#[test]
fn trailing_zeros_are_cut_off_and_noted() {
    let blocks = chain(3);
    let (_tmp, dir) = fresh(&blocks, &records());
    let (mut c, mut w) = read(&dir);
    let (chain_len, wal_len) = (c.len() as u64, w.len() as u64);
    c.extend_from_slice(&[0; 4096]);
    w.extend_from_slice(&[0; 5]);
    fs::write(dir.join(CHAIN), &c).unwrap();
    fs::write(dir.join(WAL), &w).unwrap();

    let opened = open(&dir).unwrap();
    assert_eq!((opened.store.depth(), opened.records.len()), (3, 4));
    assert_eq!(opened.repairs.len(), 2);
    assert!(opened.repairs[0].contains("4096 bytes dropped"));
    assert_eq!(
        read(&dir),
        (
            c[..chain_len as usize].to_vec(),
            w[..wal_len as usize].to_vec()
        )
    );
}

#[test]
fn a_record_whose_end_was_never_written_is_cut_off() {
    // The file system grew the file but the last page stayed zeros.
    let blocks = chain(3);
    let (_tmp, dir) = fresh(&blocks[..2], &[]);
    let mut last = frame(&blocks[2]);
    let n = last.len();
    last[n - 10..].fill(0);
    unsynced(&dir.join(CHAIN), &last);
    let opened = open(&dir).unwrap();
    assert_eq!(opened.store.depth(), 2);
    assert_eq!(opened.repairs.len(), 1);
}

#[test]
fn a_bit_flip_in_the_chain_is_refused_and_nothing_changes() {
    let blocks = chain(6);
    let (_tmp, dir) = fresh(&blocks, &records());
    // A torn WAL tail must not be repaired either while the chain is refused.
    let mut w = read(&dir).1;
    w.extend_from_slice(&[0; 9]);
    fs::write(dir.join(WAL), &w).unwrap();
    let at = offsets(&blocks)[3];
    flip(&dir.join(CHAIN), at + HEADER as u64 + 20, 0x04);
    let before = read(&dir);

    let err = open(&dir);
    assert_corrupt(err, &dir.join(CHAIN), at, "checksum mismatch");
    assert_eq!(read(&dir), before);
}

#[test]
fn a_bit_flip_in_the_wal_is_refused_and_nothing_changes() {
    let (_tmp, dir) = fresh(&chain(2), &records());
    let mut c = read(&dir).0;
    c.extend_from_slice(&[0; 30]);
    fs::write(dir.join(CHAIN), &c).unwrap();
    let at = marker_record(WAL).len() as u64 + frame(&records()[0]).len() as u64;
    flip(&dir.join(WAL), at + HEADER as u64 + 2, 0x10);
    let before = read(&dir);

    assert_corrupt(open(&dir), &dir.join(WAL), at, "checksum mismatch");
    assert_eq!(read(&dir), before);
}

#[test]
fn a_damaged_length_is_not_mistaken_for_a_torn_tail() {
    let blocks = chain(4);
    let (_tmp, dir) = fresh(&blocks, &[]);
    let at = offsets(&blocks)[1];
    flip(&dir.join(CHAIN), at + 2, 0x02); // now longer than the rest of the file
    let before = read(&dir);
    assert_corrupt(open(&dir), &dir.join(CHAIN), at, "runs past end of file");
    assert_eq!(read(&dir), before);

    let (_tmp, dir) = fresh(&blocks, &[]);
    let at = offsets(&blocks)[3];
    flip(&dir.join(CHAIN), at + 1, 0x01); // the last record, intact but for its length
    assert_corrupt(open(&dir), &dir.join(CHAIN), at, "length field damaged");
}

#[test]
fn a_tampered_block_with_a_fresh_checksum_is_refused() {
    let blocks = chain(3);
    let (_tmp, dir) = fresh(&[], &[]);
    let mut tampered = blocks[1].clone();
    tampered.transfers[0].amount = 50;
    let bytes = [frame(&blocks[0]), frame(&tampered), frame(&blocks[2])].concat();
    fs::write(dir.join(CHAIN), &bytes).unwrap();

    let at = frame(&blocks[0]).len() as u64;
    assert_corrupt(open(&dir), &dir.join(CHAIN), at, "block 2 fails its hash");
    assert_eq!(read(&dir).0, bytes);
}

#[test]
fn a_block_at_the_wrong_depth_is_refused() {
    let blocks = chain(3);
    let (_tmp, dir) = fresh(&[], &[]);
    let bytes = [frame(&blocks[0]), frame(&blocks[2])].concat();
    fs::write(dir.join(CHAIN), &bytes).unwrap();
    let at = frame(&blocks[0]).len() as u64;
    assert_corrupt(open(&dir), &dir.join(CHAIN), at, "depth 3, expected 2");
}

#[test]
fn undecodable_payloads_are_refused() {
    let (_tmp, dir) = fresh(&[], &[]);
    fs::write(dir.join(WAL), frame(&"not a record")).unwrap();
    assert_corrupt(open(&dir), &dir.join(WAL), 0, "undecodable record");
}

#[test]
fn corrupt_error_is_one_line_naming_file_and_offset() {
    let err = StoreError::Corrupt {
        file: PathBuf::from("data/node3/chain.log"),
        offset: 1234,
        reason: "checksum mismatch".into(),
    };
    assert_eq!(
        err.to_string(),
        "corrupt state file data/node3/chain.log at offset 1234: checksum mismatch"
    );
}

#[test]
fn missing_state_is_not_initialised() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("nope");
    assert!(matches!(open(&dir), Err(StoreError::NotInitialised(p)) if p == dir));
    Store::create(&dir).unwrap();
    assert!(matches!(Store::create(&dir), Err(StoreError::Io { .. })));
    fs::remove_file(dir.join(WAL)).unwrap();
    fs::remove_file(dir.join(superblock::NAME)).unwrap();
    assert!(matches!(open(&dir), Err(StoreError::NotInitialised(p)) if p == dir.join(WAL)));
    let verified = Store::verify(&dir, NODES, BALANCE, None, |_| ());
    assert!(matches!(verified, Err(StoreError::NotInitialised(_))));
}

#[test]
fn a_log_missing_beside_its_superblock_is_a_lost_tail_that_recover_rebuilds() {
    let (_tmp, dir) = fresh(&chain(2), &records());
    let wal = dir.join(WAL);
    let synced = len(&wal);
    fs::remove_file(&wal).unwrap();
    let expected = format!("{synced} bytes");
    assert_lost(open(&dir), &wal, &expected, "no file");
    assert_lost(
        Store::verify(&dir, NODES, BALANCE, None, |_| ()),
        &wal,
        &expected,
        "no file",
    );
    assert!(!wal.exists(), "a refusal creates nothing");
    let done = Store::recover(&dir, NODES, BALANCE, 0).unwrap();
    assert!(done.votes_lost && done.moved.is_empty(), "{done:?}");
    assert!(
        done.notes[0].contains("recreated missing"),
        "{:?}",
        done.notes
    );
    let opened = open(&dir).unwrap();
    assert_eq!((opened.store.depth(), opened.records.len()), (2, 0));
}

#[test]
fn verify_checks_everything_but_never_modifies() {
    let blocks = chain(4);
    let (_tmp, dir) = fresh(&blocks[..3], &records());
    let last = frame(&blocks[3]);
    unsynced(&dir.join(CHAIN), &last[..last.len() - 3]);
    let before = read(&dir);

    let mut seen = Vec::new();
    let (ledger, note) =
        Store::verify(&dir, NODES, BALANCE, None, |b| seen.push(b.clone())).unwrap();
    assert_eq!(seen, blocks[..3]);
    assert_eq!(ledger.depth, 3);
    assert!(note.unwrap().contains("torn tail"));
    assert_eq!(read(&dir), before);

    flip(&dir.join(CHAIN), offsets(&blocks)[1] + 13, 0x01);
    let before = read(&dir);
    assert!(matches!(
        Store::verify(&dir, NODES, BALANCE, None, |_| ()),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(read(&dir), before);
}

#[test]
fn recover_moves_damage_aside_and_keeps_the_good_prefix() {
    let (_tmp, dir) = fresh(&chain(3), &records());
    let intact = Store::recover(&dir, NODES, BALANCE, 0).unwrap();
    assert!(intact.moved.is_empty() && !intact.votes_lost);
    let second = offsets(&chain(3))[1];
    flip(&dir.join(CHAIN), second + HEADER as u64 + 3, 0x01);
    let damaged = read(&dir).0;
    let done = Store::recover(&dir, NODES, BALANCE, 0).unwrap();
    assert_eq!(done.moved.len(), 1);
    assert!(done.votes_lost, "blocks record votes too");
    assert_eq!(
        fs::read(&done.moved[0]).unwrap(),
        damaged,
        "the damaged file is kept whole"
    );
    let opened = open(&dir).unwrap();
    assert_eq!(opened.store.depth(), 1, "blocks before the damage are kept");
    assert_eq!(opened.records, records());
}

// ----- lost tails: synced records that vanished -----

fn assert_lost<T>(result: Result<T, StoreError>, file: &Path, expected: &str, found: &str) {
    match result {
        Err(e @ StoreError::LostTail { .. }) => {
            let text = e.to_string();
            let want = format!(
                "lost synced data at the end of {}: expected {expected} synced, found {found}; \
                 start the node with --recover to rebuild it from its peers",
                file.display()
            );
            assert_eq!(text, want);
        }
        Err(e) => panic!("expected LostTail, got {e}"),
        Ok(_) => panic!("expected LostTail, got Ok"),
    }
}

/// A store whose last synced WAL record is a promise; returns where that record starts.
fn promised() -> (TempDir, PathBuf, u64) {
    let (tmp, dir) = fresh(&chain(2), &records()[..3]);
    let before = len(&dir.join(WAL));
    let mut store = open(&dir).unwrap().store;
    store
        .append(&Record::Promise(Ballot { round: 9, node: 2 }))
        .unwrap();
    store.sync().unwrap();
    (tmp, dir, before)
}

#[test]
fn a_synced_promise_cut_mid_record_is_refused_naming_recover() {
    let (_tmp, dir, at) = promised();
    let wal = dir.join(WAL);
    let synced = len(&wal);
    set_len(&wal, at + 20);
    let before = read(&dir);
    let expected = format!("{synced} bytes");
    assert_lost(open(&dir), &wal, &expected, &format!("{at} bytes"));
    assert_eq!(read(&dir), before, "nothing was cut off");
    let verified = Store::verify(&dir, NODES, BALANCE, None, |_| ());
    assert_lost(verified, &wal, &expected, &format!("{at} bytes"));
}

#[test]
fn a_synced_promise_cut_at_a_record_boundary_is_refused() {
    let (_tmp, dir, at) = promised();
    let wal = dir.join(WAL);
    let synced = len(&wal);
    set_len(&wal, at);
    assert_lost(
        open(&dir),
        &wal,
        &format!("{synced} bytes"),
        &format!("{at} bytes"),
    );
}

#[test]
fn a_synced_record_replaced_by_another_is_refused() {
    let (_tmp, dir, at) = promised();
    let wal = dir.join(WAL);
    let synced = len(&wal);
    set_len(&wal, at);
    unsynced(&wal, &frame(&Record::Promise(Ballot { round: 8, node: 2 })));
    assert_eq!(len(&wal), synced, "same length, other bytes");
    let found = format!("other bytes before offset {synced}");
    assert_lost(open(&dir), &wal, &format!("{synced} bytes"), &found);
}

#[test]
fn a_chain_that_lost_its_last_synced_block_is_refused() {
    let blocks = chain(4);
    let (_tmp, dir) = fresh(&blocks, &[]);
    let path = dir.join(CHAIN);
    let synced = len(&path);
    let last = offsets(&blocks)[3];
    set_len(&path, last);
    assert_lost(
        open(&dir),
        &path,
        &format!("4 blocks ({synced} bytes)"),
        &format!("3 blocks ({last} bytes)"),
    );
}

/// A power loss in the middle of a sync: the superblock write (which claims only what the
/// sync before made durable) landed, the data did not, or only in part. That is a torn tail,
/// cut off, not a lost one: every node of a cluster that lost power restarts on its own.
#[test]
fn a_superblock_written_beside_a_torn_sync_claims_only_the_sync_before() {
    let (_tmp, dir) = fresh(&chain(1), &records()[..1]);
    let wal = dir.join(WAL);
    let mut store = open(&dir).unwrap().store;
    store.append(&records()[1]).unwrap();
    store.sync().unwrap();
    let before = len(&wal);
    store.append(&records()[2]).unwrap();
    store.sync().unwrap();
    std::mem::forget(store); // the power went: no clean close records this sync
    set_len(&wal, before + 10);
    let opened = open(&dir).unwrap();
    assert_eq!(opened.records, records()[..2]);
    assert_eq!(opened.repairs.len(), 1, "{:?}", opened.repairs);
}

#[test]
fn a_whole_cluster_power_loss_is_a_plain_restart() {
    // Written and fsynced, but the crash came before the superblock said so.
    let blocks = chain(3);
    let (_tmp, dir) = fresh(&blocks[..2], &records()[..2]);
    unsynced(&dir.join(CHAIN), &frame(&blocks[2]));
    unsynced(&dir.join(WAL), &frame(&records()[2]));
    unsynced(&dir.join(WAL), &frame(&records()[3])[..30]);
    let opened = open(&dir).unwrap();
    assert_eq!(opened.store.depth(), 3);
    assert_eq!(opened.records, records()[..3]);
    assert_eq!(opened.repairs.len(), 1, "{:?}", opened.repairs);
}

#[test]
fn a_crash_before_the_compaction_rename_keeps_the_old_wal() {
    let (_tmp, dir) = fresh(&chain(2), &records());
    let mut store = open(&dir).unwrap().store;
    store.stage_wal(&records()[3..]).unwrap();
    drop(store); // crash: wal.log.tmp written, superblock updated, no rename
    let opened = open(&dir).unwrap();
    assert_eq!(opened.records, records());
    assert!(opened.repairs.is_empty());
    assert!(!dir.join(WAL_TMP).exists());
}

#[test]
fn a_crash_between_compaction_rename_and_superblock_update_opens() {
    let (_tmp, dir) = fresh(&chain(2), &records());
    let mut store = open(&dir).unwrap().store;
    store.stage_wal(&records()[3..]).unwrap();
    fs::rename(dir.join(WAL_TMP), dir.join(WAL)).unwrap();
    drop(store); // crash before `install_wal` updated the superblock
    let opened = open(&dir).unwrap();
    assert_eq!(opened.records, records()[3..]);
    assert!(opened.repairs.is_empty());
    // And the store goes on from there.
    let mut store = opened.store;
    store.append(&records()[0]).unwrap();
    store.sync().unwrap();
    drop(store);
    assert_eq!(open(&dir).unwrap().records.len(), 2);
}

#[test]
fn a_torn_superblock_slot_falls_back_to_the_other() {
    let (_tmp, dir, _) = promised();
    let path = dir.join("superblock");
    let pristine = fs::read(&path).unwrap();
    for slot in [0, 512] {
        let mut bytes = pristine.clone();
        bytes[slot + 20] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        assert!(open(&dir).is_ok(), "slot at {slot} torn");
    }
    let mut bytes = pristine;
    bytes[20] ^= 0x01;
    bytes[512 + 20] ^= 0x01;
    fs::write(&path, bytes).unwrap();
    let err = open(&dir).unwrap_err().to_string();
    assert!(err.contains("neither superblock slot is intact"), "{err}");
}

/// Makes `dir` look as an older version left it: no format markers, no superblock.
fn as_older_version(dir: &Path) {
    for name in [CHAIN, WAL] {
        let bytes = fs::read(dir.join(name)).unwrap();
        let marker = marker_record(name);
        assert!(bytes.starts_with(&marker), "{name} starts with its marker");
        fs::write(dir.join(name), &bytes[marker.len()..]).unwrap();
    }
    fs::remove_file(dir.join(superblock::NAME)).unwrap();
}

#[test]
fn an_older_directory_is_accepted_and_gets_a_superblock() {
    let (_tmp, dir) = fresh(&chain(2), &records());
    as_older_version(&dir);
    let (_, note) = Store::verify(&dir, NODES, BALANCE, None, |_| ()).unwrap();
    assert!(note.unwrap().contains("no superblock"));
    let opened = open(&dir).unwrap();
    assert_eq!(opened.records, records());
    assert_eq!(opened.store.depth(), 2);
    assert_eq!(opened.repairs.len(), 1);
    assert!(opened.repairs[0].contains("older version"));
    drop(opened);
    assert!(dir.join("superblock").exists());
    assert!(open(&dir).unwrap().repairs.is_empty());
    set_len(&dir.join(WAL), 3);
    assert!(matches!(open(&dir), Err(StoreError::LostTail { .. })));
}

#[test]
fn compaction_upgrades_an_older_wal_with_its_marker() {
    let (_tmp, dir) = fresh(&chain(1), &records());
    as_older_version(&dir);
    let mut store = open(&dir).unwrap().store;
    store.compact(&records()[..2]).unwrap();
    drop(store);
    assert!(read(&dir).1.starts_with(&marker_record(WAL)));
    assert_eq!(open(&dir).unwrap().records, records()[..2]);
    // From now on a missing superblock is damage.
    fs::remove_file(dir.join(superblock::NAME)).unwrap();
    assert!(matches!(open(&dir), Err(StoreError::NoSuperblock(_))));
}

#[test]
fn a_missing_superblock_in_a_marked_directory_is_refused() {
    let blocks = chain(3);
    let (_tmp, dir) = fresh(&blocks, &records());
    // The case that hid a lost tail: a chain cut back to one block, then `rm superblock`.
    set_len(&dir.join(CHAIN), offsets(&blocks)[1]);
    fs::remove_file(dir.join(superblock::NAME)).unwrap();
    let before = read(&dir);
    let err = open(&dir).unwrap_err();
    let want = format!(
        "missing {}: this node dir's logs are of a format that always has one, so synced \
         data may have been lost unseen; start the node with --recover to rebuild it from \
         its peers",
        dir.join("superblock").display()
    );
    assert_eq!(err.to_string(), want);
    let verified = Store::verify(&dir, NODES, BALANCE, None, |_| ()).unwrap_err();
    assert_eq!(verified.to_string(), want);
    assert_eq!(read(&dir), before, "nothing changed");
    assert!(!dir.join("superblock").exists());
    // Either marker is enough: an emptied chain.log leaves the WAL's.
    set_len(&dir.join(CHAIN), 0);
    assert!(matches!(open(&dir), Err(StoreError::NoSuperblock(_))));
    fs::write(dir.join(CHAIN), &before.0).unwrap();

    let done = Store::recover(&dir, NODES, BALANCE, 0).unwrap();
    assert!(done.votes_lost, "what was synced is unknown");
    assert!(done.moved.is_empty(), "nothing is known damaged");
    assert!(done.notes[0].contains("it was missing"), "{:?}", done.notes);
    assert_eq!(read(&dir), before, "the logs are kept as they are");
    let opened = open(&dir).unwrap();
    assert_eq!((opened.store.depth(), opened.records), (1, records()));
}

#[test]
fn the_marker_counts_only_at_the_start_of_its_own_file() {
    let (_tmp, dir) = fresh(&chain(1), &[]);
    // The WAL's marker in chain.log, after a block: damage, not a marker.
    unsynced(&dir.join(CHAIN), &marker_record(WAL));
    let at = offsets(&chain(2))[1];
    assert_corrupt(open(&dir), &dir.join(CHAIN), at, "undecodable block");
    // chain.log's marker at the start of wal.log is not a WAL record either.
    let (_tmp, dir) = fresh(&[], &[]);
    fs::write(dir.join(WAL), marker_record(CHAIN)).unwrap();
    assert_corrupt(open(&dir), &dir.join(WAL), 0, "undecodable record");
}

#[test]
fn recovering_a_lost_tail_keeps_the_superblock_sequence_rising() {
    let (_tmp, dir, at) = promised();
    let (before, _) = superblock::read(&dir).unwrap().unwrap();
    set_len(&dir.join(WAL), at);
    Store::recover(&dir, NODES, BALANCE, 0).unwrap();
    let (after, _) = superblock::read(&dir).unwrap().unwrap();
    assert!(after > before, "{after} > {before}");
}

// ----- files deleted or replaced under a running store -----

/// An open store with one unsynced record, to be synced after `tamper`.
fn sync_after(tamper: impl FnOnce(&Path)) -> (TempDir, PathBuf, StoreError) {
    let (tmp, dir) = fresh(&chain(1), &records()[..1]);
    let mut store = open(&dir).unwrap().store;
    store.sync().unwrap();
    tamper(&dir);
    store.append(&records()[1]).unwrap();
    let err = store.sync().unwrap_err();
    assert!(
        store.append(&records()[2]).is_err(),
        "the store is poisoned"
    );
    (tmp, dir, err)
}

#[test]
fn a_deleted_or_replaced_file_fails_the_next_sync() {
    let (_tmp, dir, err) = sync_after(|d| fs::remove_file(d.join(WAL)).unwrap());
    let wal = dir.join(WAL);
    assert!(matches!(&err, StoreError::Replaced { file, how: "deleted" } if *file == wal));
    assert_eq!(
        err.to_string(),
        format!(
            "{} was deleted while the node ran, so what it wrote since is not in that file",
            wal.display()
        )
    );
    let copy = |d: &Path, name: &str| {
        let tmp = d.join("copy");
        fs::copy(d.join(name), &tmp).unwrap();
        fs::rename(&tmp, d.join(name)).unwrap();
    };
    for name in [WAL, CHAIN, superblock::NAME] {
        let (_tmp, dir, err) = sync_after(|d| copy(d, name));
        let path = dir.join(name);
        assert!(
            matches!(&err, StoreError::Replaced { file, how: "replaced by another file" } if *file == path),
            "{name}: {err}"
        );
    }
    let (_tmp, dir, err) = sync_after(|d| {
        fs::rename(d, d.with_extension("moved")).unwrap();
        fs::create_dir(d).unwrap();
    });
    let chain = dir.join(CHAIN);
    assert!(
        matches!(&err, StoreError::Replaced { file, how: "moved away" } if *file == chain),
        "{err}"
    );
}

#[test]
fn recover_treats_a_lost_tail_as_lost_votes() {
    let (_tmp, dir, at) = promised();
    let wal = dir.join(WAL);
    set_len(&wal, at + 20);
    let cut = fs::read(&wal).unwrap();
    let done = Store::recover(&dir, NODES, BALANCE, 0).unwrap();
    assert!(done.votes_lost);
    assert_eq!(done.moved.len(), 1);
    assert_eq!(fs::read(&done.moved[0]).unwrap(), cut, "kept whole");
    assert!(
        done.notes[0].contains("lost synced data"),
        "{:?}",
        done.notes
    );
    let opened = open(&dir).unwrap();
    assert_eq!(opened.records, records()[..3]);
    assert!(opened.repairs.is_empty());
    assert!(Store::recover(&dir, NODES, BALANCE, 0)
        .unwrap()
        .moved
        .is_empty());
}

#[test]
fn recover_after_chain_damage_rewrites_a_matching_superblock() {
    let blocks = chain(4);
    let (_tmp, dir) = fresh(&blocks, &records());
    flip(
        &dir.join(CHAIN),
        offsets(&blocks)[2] + HEADER as u64 + 3,
        0x01,
    );
    let done = Store::recover(&dir, NODES, BALANCE, 0).unwrap();
    assert_eq!(done.moved.len(), 1, "moved once, not again as a lost tail");
    let opened = open(&dir).unwrap();
    assert_eq!(opened.store.depth(), 2);
}

#[test]
fn recover_replaces_an_unreadable_superblock() {
    let (_tmp, dir) = fresh(&chain(2), &records());
    fs::write(dir.join("superblock"), [0xee; 1024]).unwrap();
    assert!(open(&dir).is_err());
    let done = Store::recover(&dir, NODES, BALANCE, 0).unwrap();
    assert!(done.votes_lost, "what was synced is unknown");
    assert_eq!(done.moved.len(), 1);
    let opened = open(&dir).unwrap();
    assert_eq!(opened.records, records());
    assert!(opened.repairs.is_empty());
}
