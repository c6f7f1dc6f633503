//! Traces of the protocol messages each node sends and receives.
//!
//! - `writer`: the bounded, rotating `trace.log` every node keeps (the node calls it).
//! - `record`: the JSON-lines format, written without allocating and read back.

pub mod record;
pub mod writer;

pub use writer::{next_incarnation, now_ms, TraceWriter, ROTATED_FILE, TRACE_CAP, TRACE_FILE};
