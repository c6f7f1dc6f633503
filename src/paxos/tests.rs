//! Tests of the protocol core on its own.
