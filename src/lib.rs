//! Benmo: a public transaction ledger that its nodes keep consistent with Paxos.
//!
//! The protocol is pure; everything else is a thin shell around it:
//! - `ledger`: transfers, hash-linked blocks and the rules of a valid chain (pure).
//! - `paxos`: the whole protocol as a deterministic state machine: events in, actions out
//!   (pure), one file per role (see `paxos/mod.rs` for the reading order).
//! - `commands`: parsing the stdin commands.
//! - `human`: "did you mean" suggestions and OS errors in words.
//! - `config`: the cluster configuration, the cluster key and the data directory layout.
//! - `storage`: the append-only chain and write-ahead log on disk, with checksums.
//! - `transport`: authenticated, framed TCP between nodes, one thread per peer.
//! - `node`: the event loop that joins them: one thread owns the state.
//! - `render`: the core's replies and narration as text, and the parser of those lines.
//! - `lock`: one running node per node dir (a locked `node<ID>/lock` file).
//! - `cli`, `audit`, `bench`, `trace`: the `benmo` subcommands (`trace` also writes each
//!   node's bounded message trace and draws a round as a sequence diagram).
//! - `testing`: the seeded simulator and the real-process cluster harness (test machinery).

pub mod audit;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod console;
pub mod hold;
pub mod human;
pub mod ledger;
pub mod lock;
pub mod node;
pub mod paxos;
pub mod render;
pub mod storage;
pub mod testing;
pub mod trace;
pub mod transport;
