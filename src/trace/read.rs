//! Reading every node's trace (the rotated file first, then the current one) from a data dir.

use super::record::Rec;
use super::writer::{ROTATED_FILE, TRACE_FILE};
use crate::config::{self, Config};
use crate::ledger::NodeId;
use std::fs;
use std::path::Path;

/// Every node's records, each in the node's own order.
#[derive(Debug, Default)]
pub struct Traces {
    /// `nodes[i]` is node i's trace, or `None` when it has no trace file at all.
    pub nodes: Vec<Option<Vec<Rec>>>,
    /// Lines that could not be read, said once per file.
    pub notes: Vec<String>,
}

/// Loads the traces under `data`; an error when there are none.
pub fn load(data: &Path) -> Result<Traces, String> {
    let count = node_count(data);
    let mut traces = Traces::default();
    for id in 0..count {
        let dir = config::node_dir(data, id);
        let trace = load_node(&dir, id, &mut traces.notes);
        traces.nodes.push(trace);
    }
    if traces.nodes.iter().all(Option::is_none) {
        return Err(format!("no traces found in {}", data.display()));
    }
    Ok(traces)
}

/// From `cluster.conf` when it is readable, else from the `node<ID>` dirs present.
fn node_count(data: &Path) -> usize {
    if let Ok(conf) = Config::load(data) {
        return conf.nodes();
    }
    let Ok(entries) = fs::read_dir(data) else {
        return 0;
    };
    entries
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix("node")?
                .parse()
                .ok()
        })
        .map(|id: NodeId| id + 1)
        .max()
        .unwrap_or(0)
}

fn load_node(dir: &Path, id: NodeId, notes: &mut Vec<String>) -> Option<Vec<Rec>> {
    let mut recs = Vec::new();
    let mut found = false;
    for name in [ROTATED_FILE, TRACE_FILE] {
        let path = dir.join(name);
        let Ok(bytes) = fs::read(&path) else { continue };
        found = true;
        let text = String::from_utf8_lossy(&bytes);
        let label = format!("node{id}/{name}");
        parse_into(&text, &label, &mut recs, notes);
    }
    super::record::mark_kills(&mut recs);
    found.then_some(recs)
}

/// Parses `text` line by line, skipping (and noting) lines that are not records.
pub fn parse_into(text: &str, label: &str, recs: &mut Vec<Rec>, notes: &mut Vec<String>) {
    let mut bad = 0;
    let mut first_bad = 0;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match Rec::parse(line) {
            Some(r) => recs.push(r),
            None => {
                bad += 1;
                if first_bad == 0 {
                    first_bad = i + 1;
                }
            }
        }
    }
    if bad > 0 {
        notes.push(format!(
            "note: skipped {bad} unreadable line(s) in {label}, the first at line {first_bad}"
        ));
    }
}
