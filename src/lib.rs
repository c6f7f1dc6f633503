//! Benmo: a public transaction ledger that its nodes keep consistent with Paxos.
//!
//! - `ledger`: transfers, hash-linked blocks and the rules of a valid chain (pure).
//! - `paxos`: the whole protocol as a deterministic state machine (pure).
//! - `commands`: parsing the stdin commands.
//! - `transport`: authenticated TCP framing of envelopes between nodes (threads).

pub mod commands;
pub mod ledger;
pub mod paxos;
pub mod transport;
