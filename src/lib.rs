//! Benmo: a public transaction ledger that its nodes keep consistent with Paxos.
//!
//! The protocol is pure and lives in two files; everything else is a thin shell:
//! - `ledger`: transfers, hash-linked blocks and the rules of a valid chain (pure).
//! - `paxos`: the whole protocol as a deterministic state machine: events in, actions out (pure).
//! - `commands`: parsing the stdin commands.
//! - `human`: "did you mean" suggestions and OS errors in words.
//! - `config`: the cluster configuration, the cluster key and the data directory layout.
//! - `storage`: the append-only chain and write-ahead log on disk, with checksums.
//! - `transport`: authenticated, framed TCP between nodes, one thread per peer.
//! - `node`: the event loop that joins them: one thread owns the state.
//! - `cli`, `audit`, `bench`: the `benmo` subcommands; `cluster`: real node processes for
//!   the benchmark and the integration tests.
//! - `sim`: a seeded deterministic simulation of a whole cluster, for testing the protocol.

pub mod audit;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod human;
pub mod ledger;
pub mod node;
pub mod paxos;
pub mod sim;
pub mod storage;
pub mod transport;
