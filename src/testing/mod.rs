//! Test machinery, kept apart from the product (as TigerBeetle keeps its simulator):
//! - `sim`: a seeded, deterministic simulation of a whole cluster of real `Core`s;
//! - `cluster`: real `benmo node` processes on loopback, for the benchmark and the tests.

pub mod cluster;
pub mod sim;
