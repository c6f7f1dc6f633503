//! The ledger: transfers, hash-linked blocks and the rules that make a chain valid.
//!
//! Everything here is pure. A `Ledger` is the state that the committed chain implies:
//! balances, the next expected sequence number of every origin, the depth and the head hash.

use crate::paxos::{check_transfer, Judge, Refusal, Request};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// A node's index in the configuration, 0-based.
pub type NodeId = usize;

/// A SHA-256 digest, written as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The `prev` of the first block.
    pub const ZERO: Hash = Hash([0; 32]);

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(s: &str) -> Option<Hash> {
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let pair = std::str::from_utf8(chunk).ok()?;
            out[i] = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(Hash(out))
    }

    /// The first 12 hex digits, enough to tell heads apart on a screen.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Hash::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// A transfer's unique id: the node that queued it and that node's sequence number (from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId {
    pub node: NodeId,
    pub seq: u64,
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.node, self.seq)
    }
}

/// Money moved from `id.node`'s account (a node only ever debits its own) to `credit`.
/// On the wire and on disk it is the compact array `[node, seq, credit, amount]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(
    from = "(NodeId, u64, NodeId, u64)",
    into = "(NodeId, u64, NodeId, u64)"
)]
pub struct Transfer {
    pub id: TxId,
    pub credit: NodeId,
    pub amount: u64,
}

impl Transfer {
    pub fn debit(&self) -> NodeId {
        self.id.node
    }
}

impl From<(NodeId, u64, NodeId, u64)> for Transfer {
    fn from((node, seq, credit, amount): (NodeId, u64, NodeId, u64)) -> Self {
        Transfer {
            id: TxId { node, seq },
            credit,
            amount,
        }
    }
}

impl From<Transfer> for (NodeId, u64, NodeId, u64) {
    fn from(t: Transfer) -> Self {
        (t.id.node, t.id.seq, t.credit, t.amount)
    }
}

impl fmt::Display for Transfer {
    /// `TXID DEBIT CREDIT AMOUNT`, the form that `queued` and `committed` lines use.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.id,
            self.debit(),
            self.credit,
            self.amount
        )
    }
}

/// One link of the chain. `hash` covers every other field, `prev` is the hash of the block below.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Block {
    pub depth: u64,
    pub prev: Hash,
    pub proposer: NodeId,
    pub transfers: Vec<Transfer>,
    pub hash: Hash,
}

impl Block {
    /// SHA-256 over a fixed binary encoding, so the hash never depends on JSON formatting.
    pub fn compute_hash(depth: u64, prev: &Hash, proposer: NodeId, transfers: &[Transfer]) -> Hash {
        let mut h = Sha256::new();
        h.update(b"benmo-block-v1");
        h.update(depth.to_le_bytes());
        h.update(prev.0);
        h.update((proposer as u64).to_le_bytes());
        h.update((transfers.len() as u64).to_le_bytes());
        for t in transfers {
            h.update((t.id.node as u64).to_le_bytes());
            h.update(t.id.seq.to_le_bytes());
            h.update((t.credit as u64).to_le_bytes());
            h.update(t.amount.to_le_bytes());
        }
        Hash(h.finalize().into())
    }

    pub fn hash_is_valid(&self) -> bool {
        self.hash == Block::compute_hash(self.depth, &self.prev, self.proposer, &self.transfers)
    }
}

/// Why a block or transfer does not fit the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LedgerError {
    WrongDepth {
        expected: u64,
        got: u64,
    },
    BrokenLink {
        depth: u64,
    },
    BadHash {
        depth: u64,
    },
    UnknownNode(NodeId),
    SelfTransfer(TxId),
    ZeroAmount(TxId),
    /// The sequence number is not the origin's next one: a duplicate or a gap.
    OutOfSequence {
        id: TxId,
        expected: u64,
    },
    Overdraft {
        id: TxId,
        balance: u64,
    },
    /// Crediting would take the account past `u64::MAX`. `benmo init` and `Config` keep the
    /// total supply within a u64, so only a forged or damaged block can get here.
    CreditOverflow {
        id: TxId,
        credit: NodeId,
        balance: u64,
    },
    /// The origin has used every sequence number.
    SequenceOverflow(TxId),
}

impl fmt::Display for LedgerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerError::WrongDepth { expected, got } => {
                write!(f, "block has depth {got}, expected {expected}")
            }
            LedgerError::BrokenLink { depth } => {
                write!(f, "block {depth} does not link to the block below it")
            }
            LedgerError::BadHash { depth } => write!(f, "block {depth} fails its hash"),
            LedgerError::UnknownNode(n) => write!(f, "unknown node {n}"),
            LedgerError::SelfTransfer(id) => {
                write!(f, "transfer {id} credits its own debit account")
            }
            LedgerError::ZeroAmount(id) => write!(f, "transfer {id} has amount 0"),
            LedgerError::OutOfSequence { id, expected } => {
                write!(
                    f,
                    "transfer {id} is out of sequence (expected {}.{expected})",
                    id.node
                )
            }
            LedgerError::Overdraft { id, balance } => {
                write!(
                    f,
                    "transfer {id} overdraws account {} (balance {balance})",
                    id.node
                )
            }
            LedgerError::CreditOverflow {
                id,
                credit,
                balance,
            } => write!(
                f,
                "transfer {id} would overflow account {credit} (balance {balance})"
            ),
            LedgerError::SequenceOverflow(id) => {
                write!(
                    f,
                    "transfer {id} exhausts node {}'s sequence numbers",
                    id.node
                )
            }
        }
    }
}

/// The state that a committed chain implies.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ledger {
    pub balances: Vec<u64>,
    /// `next_seq[n]` is the sequence number that node n's next committed transfer must carry.
    /// This is what makes every transfer commit at most once: a duplicate is out of sequence.
    pub next_seq: Vec<u64>,
    pub depth: u64,
    pub head: Hash,
    pub transfers: u64,
}

impl Ledger {
    pub fn new(nodes: usize, balance: u64) -> Ledger {
        Ledger {
            balances: vec![balance; nodes],
            next_seq: vec![1; nodes],
            depth: 0,
            head: Hash::ZERO,
            transfers: 0,
        }
    }

    pub fn total(&self) -> u128 {
        self.balances.iter().map(|&b| b as u128).sum()
    }

    /// Checks one transfer against the current state.
    pub fn check(&self, t: &Transfer) -> Result<(), LedgerError> {
        self.rules(t)?;
        self.settle(t).map(|_| ())
    }

    /// Every rule but the arithmetic (see `settle`).
    fn rules(&self, t: &Transfer) -> Result<(), LedgerError> {
        let judge = Judge {
            nodes: self.balances.len(),
            ..Judge::default()
        };
        match check_transfer(&judge, &Request::transfer(t.debit(), t.credit, t.amount)) {
            Ok(()) => {}
            Err(Refusal::UnknownNode { node, .. }) => return Err(LedgerError::UnknownNode(node)),
            Err(Refusal::SameAccount) => return Err(LedgerError::SelfTransfer(t.id)),
            Err(Refusal::ZeroAmount) => return Err(LedgerError::ZeroAmount(t.id)),
            Err(other) => unreachable!("judged without an account: {other:?}"),
        }
        let expected = self.next_seq[t.debit()];
        if t.id.seq != expected {
            return Err(LedgerError::OutOfSequence { id: t.id, expected });
        }
        Ok(())
    }

    /// The debit's new balance, the credit's and the origin's next sequence number, all in
    /// checked arithmetic: money never wraps.
    fn settle(&self, t: &Transfer) -> Result<(u64, u64, u64), LedgerError> {
        let balance = self.balances[t.debit()];
        let debit = balance
            .checked_sub(t.amount)
            .ok_or(LedgerError::Overdraft { id: t.id, balance })?;
        let balance = self.balances[t.credit];
        let credit = balance
            .checked_add(t.amount)
            .ok_or(LedgerError::CreditOverflow {
                id: t.id,
                credit: t.credit,
                balance,
            })?;
        let next = t.id.seq.checked_add(1);
        Ok((
            debit,
            credit,
            next.ok_or(LedgerError::SequenceOverflow(t.id))?,
        ))
    }

    /// Checks and applies one transfer; on error nothing changes.
    fn apply_transfer(&mut self, t: &Transfer) -> Result<(), LedgerError> {
        self.rules(t)?;
        let (debit, credit, next) = self.settle(t)?;
        self.balances[t.debit()] = debit;
        self.balances[t.credit] = credit;
        self.next_seq[t.debit()] = next;
        // A statistic that no rule depends on: it saturates rather than wraps.
        self.transfers = self.transfers.saturating_add(1);
        Ok(())
    }

    /// Turns a decided batch into the next block. Transfers that no longer fit (a duplicate
    /// of one already committed, a gap in an origin's sequence, an overdraft or a credit past
    /// `u64::MAX`) are left out; every node seals the same batch on the same state, so every
    /// node leaves out the same ones.
    /// Their origins still hold them in their queues and will offer them again.
    pub fn seal(&self, proposer: NodeId, batch: &[Transfer]) -> Block {
        let mut scratch = self.clone();
        let transfers: Vec<Transfer> = batch
            .iter()
            .filter(|t| scratch.apply_transfer(t).is_ok())
            .copied()
            .collect();
        let depth = self.depth + 1;
        let hash = Block::compute_hash(depth, &self.head, proposer, &transfers);
        Block {
            depth,
            prev: self.head,
            proposer,
            transfers,
            hash,
        }
    }

    /// Appends a block, checking depth, link, hash and every transfer. On error nothing changes.
    pub fn apply(&mut self, block: &Block) -> Result<(), LedgerError> {
        let expected = self.depth + 1;
        if block.depth != expected {
            return Err(LedgerError::WrongDepth {
                expected,
                got: block.depth,
            });
        }
        if block.prev != self.head {
            return Err(LedgerError::BrokenLink { depth: block.depth });
        }
        if !block.hash_is_valid() {
            return Err(LedgerError::BadHash { depth: block.depth });
        }
        let mut next = self.clone();
        for t in &block.transfers {
            next.apply_transfer(t)?;
        }
        next.depth = block.depth;
        next.head = block.hash;
        *self = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
