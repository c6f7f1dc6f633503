//! Trace pairing: for simulated runs with drops, crashes and severed links, the traces every
//! node writes (as the node shell writes them) pair up, and `benmo trace` draws them truly.
//!
//! For each of a few seeds that dropped messages, crashed nodes and severed links:
//! - every `recv` record matches exactly one `send` record: the same sender, the same id,
//!   the receiver among its recipients, and not later in simulated time;
//! - for every decided depth, `round::build` draws the round, and in it every message a
//!   recipient received is a solid (`Delivered`) arrow, once per receipt, and every message
//!   sent to a recipient that never received it is `Lost` (every node's trace covers the whole
//!   run, so nothing is `Unknown`), and both pictures render;
//! - across the seeds, some arrow is `Lost`, so the check is not vacuous.

use benmo::ledger::NodeId;
use benmo::testing::sim::{run, SimConfig, Stats};
use benmo::trace::read::{self, Traces};
use benmo::trace::record::Ev;
use benmo::trace::round::{self, Fate, Row};
use benmo::trace::{svg, text};
use std::collections::HashMap;

/// Seeds to traced-run; found by scanning from 0, at most `SCAN` seeds.
const SEEDS: usize = 3;
const SCAN: u64 = 200;

fn faulty(s: &Stats) -> bool {
    s.dropped > 0 && s.crashes > 0 && s.severs > 0
}

#[test]
fn every_receipt_has_one_send_and_every_unmatched_send_is_drawn_lost() {
    let seeds: Vec<u64> = (0..SCAN)
        .filter(|&seed| faulty(&run(seed, &SimConfig::for_seed(seed)).unwrap()))
        .take(SEEDS)
        .collect();
    assert_eq!(seeds.len(), SEEDS, "too few faulty seeds below {SCAN}");
    let mut lost = 0;
    for seed in seeds {
        lost += check_seed(seed);
    }
    assert!(
        lost > 0,
        "no lost arrow in any round: the test proves nothing"
    );
}

/// Runs `seed` with traces and checks them; returns how many `Lost` arrows its rounds drew.
fn check_seed(seed: u64) -> usize {
    let dir = tempfile::TempDir::new().unwrap();
    let cfg = SimConfig {
        trace_dir: Some(dir.path().to_path_buf()),
        ..SimConfig::for_seed(seed)
    };
    let stats = run(seed, &cfg).unwrap_or_else(|e| panic!("{e}"));
    let untraced = run(seed, &SimConfig::for_seed(seed)).unwrap();
    assert_eq!(
        format!("{stats:?}"),
        format!("{untraced:?}"),
        "seed {seed}: tracing changed the run"
    );
    let traces = read::load(dir.path()).unwrap();
    assert_eq!(
        traces.nodes.len(),
        cfg.nodes,
        "seed {seed}: a node dir is missing"
    );
    assert!(traces.notes.is_empty(), "seed {seed}: {:?}", traces.notes);
    assert!(traces.nodes.iter().all(Option::is_some));
    let index = Index::new(&traces, seed);
    assert!(stats.depth > 0, "seed {seed} decided nothing");
    assert_eq!(
        round::last_decided(&traces),
        Some(stats.depth),
        "seed {seed}"
    );
    let mut lost = 0;
    for depth in 1..=stats.depth {
        lost += check_round(&traces, &index, seed, depth);
    }
    eprintln!("seed {seed}: {stats:?}; {lost} lost arrows");
    lost
}

/// A send: its time and recipients.
struct Send {
    t: u64,
    to: Vec<NodeId>,
}

/// Every send by (sender, id), and how many times each (sender, id, recipient) was received.
struct Index {
    sends: HashMap<(NodeId, u64), Send>,
    receipts: HashMap<(NodeId, u64, NodeId), usize>,
}

impl Index {
    /// Builds the index, checking that each receipt pairs with exactly one send.
    fn new(traces: &Traces, seed: u64) -> Index {
        let mut sends = HashMap::new();
        let mut twice = HashMap::<(NodeId, u64), usize>::new();
        for (node, recs) in traces.nodes.iter().enumerate() {
            for r in recs.iter().flatten() {
                assert_eq!(r.node, node, "seed {seed}: a record in the wrong trace");
                if let Ev::Send { id, to, .. } = &r.ev {
                    *twice.entry((node, *id)).or_default() += 1;
                    let send = Send {
                        t: r.t,
                        to: to.clone(),
                    };
                    sends.insert((node, *id), send);
                }
            }
        }
        let reused: Vec<_> = twice.iter().filter(|(_, &n)| n > 1).collect();
        assert!(reused.is_empty(), "seed {seed}: ids sent twice: {reused:?}");
        let mut receipts = HashMap::new();
        let mut count = 0;
        for (node, recs) in traces.nodes.iter().enumerate() {
            for r in recs.iter().flatten() {
                let Ev::Recv { from, id, msg } = &r.ev else {
                    continue;
                };
                count += 1;
                let send = sends.get(&(*from, *id)).unwrap_or_else(|| {
                    panic!("seed {seed}: node {node} received {msg:?} (id {id}) that node {from} never sent")
                });
                assert!(
                    send.to.contains(&node),
                    "seed {seed}: node {node} received id {id}, which node {from} sent to {:?}",
                    send.to
                );
                assert!(
                    send.t <= r.t,
                    "seed {seed}: id {id} received before it was sent"
                );
                *receipts.entry((*from, *id, node)).or_default() += 1;
            }
        }
        assert!(count > 0, "seed {seed}: no receipts traced");
        Index { sends, receipts }
    }
}

/// Checks the picture of the round at `depth`; returns its `Lost` arrows.
fn check_round(traces: &Traces, index: &Index, seed: u64, depth: u64) -> usize {
    let at = format!("seed {seed}, depth {depth}");
    let diagram = round::build(traces, depth).unwrap_or_else(|e| panic!("{at}: {e}"));
    assert!(diagram.notes.is_empty(), "{at}: {:?}", diagram.notes);
    // Per (sender, id, recipient) drawn: delivered arrows, lost arrows.
    let mut drawn = HashMap::<(NodeId, u64, NodeId), (usize, usize)>::new();
    for row in &diagram.rows {
        let Row::Arrow {
            from, to, id, fate, ..
        } = row
        else {
            continue;
        };
        let entry = drawn.entry((*from, *id, *to)).or_default();
        match fate {
            Fate::Delivered => entry.0 += 1,
            Fate::Lost => entry.1 += 1,
            Fate::Unknown => panic!("{at}: {row:?} is unknown, yet every trace covers the run"),
            Fate::Dropped => {
                panic!("{at}: {row:?} is dropped, yet the simulator drops nothing on purpose")
            }
        }
    }
    let mut lost = 0;
    let mut sends_drawn: Vec<(NodeId, u64)> = drawn.keys().map(|&(f, id, _)| (f, id)).collect();
    sends_drawn.sort_unstable();
    sends_drawn.dedup();
    for (from, id) in sends_drawn {
        let send = index
            .sends
            .get(&(from, id))
            .expect("every arrow has a send");
        for &to in send.to.iter().filter(|&&to| to != from) {
            let received = index.receipts.get(&(from, id, to)).copied().unwrap_or(0);
            let (delivered, lost_here) = drawn.get(&(from, id, to)).copied().unwrap_or((0, 0));
            let expected = if received > 0 { (received, 0) } else { (0, 1) };
            assert_eq!(
                (delivered, lost_here),
                expected,
                "{at}: node {from}'s message {id} to node {to}, received {received} times, \
                 drawn (delivered, lost) wrongly"
            );
            lost += lost_here;
        }
    }
    assert!(!text::render(&diagram).is_empty(), "{at}: empty text");
    let picture = svg::render(&diagram);
    roxmltree::Document::parse(&picture).unwrap_or_else(|e| panic!("{at}: bad SVG: {e}"));
    lost
}
