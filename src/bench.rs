//! `benmo bench`: placeholder until the benchmark lands.
use crate::cli::Args;

pub fn main(_args: Args) -> Result<(), String> {
    Err("the benchmark is not built yet".to_string())
}
