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

/// File offset of each block in a chain.log holding `blocks`.
fn offsets(blocks: &[Block]) -> Vec<u64> {
    let mut at = 0;
    blocks
        .iter()
        .map(|b| {
            let here = at;
            at += frame(b).len() as u64;
            here
        })
        .collect()
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
fn truncated_last_records_are_cut_off_and_noted() {
    let blocks = chain(5);
    let (_tmp, dir) = fresh(&blocks, &records());
    let (chain_len, wal_len) = {
        let (c, w) = read(&dir);
        (c.len() as u64, w.len() as u64)
    };
    let last_block = offsets(&blocks)[4];
    let last_record = wal_len - frame(&records()[3]).len() as u64;
    File::options()
        .write(true)
        .open(dir.join(CHAIN))
        .unwrap()
        .set_len(chain_len - 7)
        .unwrap();
    File::options()
        .write(true)
        .open(dir.join(WAL))
        .unwrap()
        .set_len(last_record + 5) // inside the header
        .unwrap();

    let opened = open(&dir).unwrap();
    assert_eq!(opened.store.depth(), 4);
    assert_eq!(opened.records, records()[..3]);
    assert_eq!(
        opened.repairs,
        vec![
            format!(
                "repaired torn tail of {} at offset {last_block} ({} bytes dropped)",
                dir.join(CHAIN).display(),
                chain_len - 7 - last_block
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
    let (_tmp, dir) = fresh(&blocks, &[]);
    let mut c = read(&dir).0;
    let n = c.len();
    c[n - 10..].fill(0);
    fs::write(dir.join(CHAIN), &c).unwrap();
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
    let at = frame(&records()[0]).len() as u64;
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
    assert!(matches!(open(&dir), Err(StoreError::NotInitialised(p)) if p == dir.join(WAL)));
    let verified = Store::verify(&dir, NODES, BALANCE, None, |_| ());
    assert!(matches!(verified, Err(StoreError::NotInitialised(_))));
}

#[test]
fn verify_checks_everything_but_never_modifies() {
    let blocks = chain(4);
    let (_tmp, dir) = fresh(&blocks, &records());
    let mut c = read(&dir).0;
    c.truncate(c.len() - 3);
    fs::write(dir.join(CHAIN), &c).unwrap();
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
