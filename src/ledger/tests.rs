//! Unit tests of the ledger: hashes, sealing, the validity rules and the JSON forms.

use super::*;

fn tx(node: NodeId, seq: u64, credit: NodeId, amount: u64) -> Transfer {
    Transfer {
        id: TxId { node, seq },
        credit,
        amount,
    }
}

#[test]
fn hash_hex_round_trips() {
    let h = Block::compute_hash(1, &Hash::ZERO, 0, &[]);
    assert_eq!(Hash::from_hex(&h.to_hex()), Some(h));
    assert_eq!(Hash::from_hex("zz"), None);
    assert_eq!(Hash::from_hex(&"g".repeat(64)), None);
}

#[test]
fn transfer_serializes_compactly() {
    let t = tx(3, 17, 1, 25);
    let json = serde_json::to_string(&t).unwrap();
    assert_eq!(json, "[3,17,1,25]");
    assert_eq!(serde_json::from_str::<Transfer>(&json).unwrap(), t);
    assert_eq!(t.to_string(), "3.17 3 1 25");
}

#[test]
fn seal_then_apply_moves_money() {
    let mut l = Ledger::new(3, 100);
    let b = l.seal(0, &[tx(0, 1, 1, 30), tx(1, 1, 2, 131)]);
    assert_eq!(b.transfers.len(), 1, "the overdraft is left out");
    l.apply(&b).unwrap();
    assert_eq!(l.balances, vec![70, 130, 100]);
    assert_eq!(l.total(), 300);
    assert_eq!(l.depth, 1);
    assert_eq!(l.head, b.hash);
    assert_eq!(l.next_seq, vec![2, 1, 1]);
}

#[test]
fn seal_leaves_out_duplicates_and_gaps() {
    let mut l = Ledger::new(3, 100);
    l.apply(&l.seal(0, &[tx(0, 1, 1, 1)])).unwrap();
    let b = l.seal(1, &[tx(0, 1, 1, 1), tx(0, 3, 1, 1), tx(0, 2, 2, 1)]);
    assert_eq!(b.transfers, vec![tx(0, 2, 2, 1)]);
}

#[test]
fn apply_rejects_bad_blocks_and_changes_nothing() {
    let mut l = Ledger::new(3, 100);
    let good = l.seal(0, &[tx(0, 1, 1, 10)]);
    let mut tampered = good.clone();
    tampered.transfers[0].amount = 90;
    assert_eq!(l.apply(&tampered), Err(LedgerError::BadHash { depth: 1 }));
    let mut relinked = good.clone();
    relinked.prev = good.hash;
    assert_eq!(
        l.apply(&relinked),
        Err(LedgerError::BrokenLink { depth: 1 })
    );
    let mut deep = good.clone();
    deep.depth = 2;
    assert!(matches!(
        l.apply(&deep),
        Err(LedgerError::WrongDepth { .. })
    ));
    let over = tx(0, 1, 1, 101);
    let hash = Block::compute_hash(1, &Hash::ZERO, 0, &[over]);
    let forged = Block {
        depth: 1,
        prev: Hash::ZERO,
        proposer: 0,
        transfers: vec![over],
        hash,
    };
    assert!(matches!(
        l.apply(&forged),
        Err(LedgerError::Overdraft { .. })
    ));
    assert_eq!(l, Ledger::new(3, 100));
    l.apply(&good).unwrap();
    assert_eq!(
        l.apply(&good),
        Err(LedgerError::WrongDepth {
            expected: 2,
            got: 1
        })
    );
}

/// A block whose credit would take a balance past u64::MAX, hashed correctly.
fn forged(l: &Ledger, transfers: &[Transfer]) -> Block {
    let hash = Block::compute_hash(l.depth + 1, &l.head, 0, transfers);
    Block {
        depth: l.depth + 1,
        prev: l.head,
        proposer: 0,
        transfers: transfers.to_vec(),
        hash,
    }
}

#[test]
fn a_block_whose_credit_would_overflow_is_rejected_and_changes_nothing() {
    // A supply of 3 × u64::MAX cannot come from `benmo init`, but a ledger must not
    // wrap even if handed one.
    let mut l = Ledger::new(3, u64::MAX);
    let before = l.clone();
    let over = tx(0, 1, 1, 1);
    assert_eq!(
        l.check(&over),
        Err(LedgerError::CreditOverflow {
            id: over.id,
            credit: 1,
            balance: u64::MAX
        })
    );
    let block = forged(&l, &[over]);
    let err = l.apply(&block).unwrap_err();
    assert!(
        err.to_string().contains("would overflow account 1"),
        "{err}"
    );
    assert_eq!(l, before, "a rejected block changes nothing");
    // Also when the overflow comes after a transfer that is fine on its own.
    let mut l = Ledger::new(3, u64::MAX - 5);
    let before = l.clone();
    let block = forged(&l, &[tx(0, 1, 1, 5), tx(2, 1, 1, 1)]);
    assert!(matches!(
        l.apply(&block),
        Err(LedgerError::CreditOverflow { .. })
    ));
    assert_eq!(l, before);
    // Sealing leaves the overflowing transfer out, the same on every node.
    let sealed = l.seal(0, &[tx(0, 1, 1, 5), tx(2, 1, 1, 1)]);
    assert_eq!(sealed.transfers, vec![tx(0, 1, 1, 5)]);
    l.apply(&sealed).unwrap();
    assert_eq!(l.balances, vec![u64::MAX - 10, u64::MAX, u64::MAX - 5]);
    assert_eq!(
        l.total(),
        3 * (u64::MAX as u128) - 15,
        "summed without wrapping"
    );
}

#[test]
fn exhausted_sequence_numbers_are_rejected() {
    let mut l = Ledger::new(3, 100);
    l.next_seq[0] = u64::MAX;
    let last = tx(0, u64::MAX, 1, 1);
    assert_eq!(l.check(&last), Err(LedgerError::SequenceOverflow(last.id)));
    let before = l.clone();
    assert!(l.apply(&forged(&l, &[last])).is_err());
    assert_eq!(l, before);
}

#[test]
fn check_names_each_rule() {
    let l = Ledger::new(3, 100);
    assert_eq!(l.check(&tx(0, 1, 5, 1)), Err(LedgerError::UnknownNode(5)));
    assert!(matches!(
        l.check(&tx(0, 1, 0, 1)),
        Err(LedgerError::SelfTransfer(_))
    ));
    assert!(matches!(
        l.check(&tx(0, 1, 1, 0)),
        Err(LedgerError::ZeroAmount(_))
    ));
    assert!(matches!(
        l.check(&tx(0, 2, 1, 1)),
        Err(LedgerError::OutOfSequence { .. })
    ));
    assert!(l.check(&tx(0, 1, 1, 100)).is_ok());
}

#[test]
fn block_json_round_trips() {
    let l = Ledger::new(2, 100);
    let b = l.seal(1, &[tx(1, 1, 0, 5)]);
    let json = serde_json::to_string(&b).unwrap();
    let back: Block = serde_json::from_str(&json).unwrap();
    assert_eq!(back, b);
    assert!(back.hash_is_valid());
}
