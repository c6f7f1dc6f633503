//! Benmo: a public transaction ledger that its nodes keep consistent with Paxos.
//!
//! - `ledger`: transfers, hash-linked blocks and the rules of a valid chain (pure).
//! - `paxos`: the whole protocol as a deterministic state machine (pure).
//! - `commands`: parsing the stdin commands.
//! - `sim`: a seeded deterministic simulation of a whole cluster, for testing the protocol.

pub mod commands;
pub mod ledger;
pub mod paxos;
pub mod sim;
