//! From merged traces to the picture of one round: which messages belong to the round that
//! decided a depth, how sends pair with receipts, and a causal order of it all.

use super::read::Traces;
use super::record::{Ev, Kind, Msg, Rec, Value};
use crate::ledger::NodeId;
use crate::paxos::Ballot;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};

/// What became of one message to one recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Delivered,
    /// Sent, and the recipient's trace covers the time, but it never arrived.
    Lost,
    /// Sent to a node whose trace does not cover the round: we cannot tell.
    Unknown,
}

/// Something that happened on one lifeline rather than between two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Started,
    Restarted,
    /// A start with no clean stop before it.
    Crashed,
    Stopped,
    Committed,
}

/// One line of the picture, top to bottom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Row {
    Arrow {
        from: NodeId,
        to: NodeId,
        /// The message id the sender stamped on it.
        id: u64,
        kind: Kind,
        label: String,
        fate: Fate,
    },
    Mark {
        node: NodeId,
        mark: Mark,
        label: String,
    },
}

/// The round that decided `depth`, ready to draw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagram {
    pub depth: u64,
    pub nodes: usize,
    pub rows: Vec<Row>,
    /// The chosen value, as `0.3 2.1` or `empty`, when the traces show it.
    pub chosen: Option<String>,
    /// One line per gap in what the traces cover.
    pub notes: Vec<String>,
}

/// The highest depth any trace shows decided (a commit or a decide).
pub fn last_decided(traces: &Traces) -> Option<u64> {
    all_recs(traces)
        .filter_map(|r| match &r.ev {
            Ev::Commit { depth, .. } => Some(*depth),
            Ev::Send { msg, .. } | Ev::Recv { msg, .. } if msg.kind == Kind::Decide => msg.depth,
            _ => None,
        })
        .max()
}

fn all_recs(traces: &Traces) -> impl Iterator<Item = &Rec> {
    traces.nodes.iter().flatten().flatten()
}

fn msg_of(rec: &Rec) -> Option<&Msg> {
    match &rec.ev {
        Ev::Send { msg, .. } | Ev::Recv { msg, .. } => Some(msg),
        _ => None,
    }
}

/// Which messages belong to the round at `depth`.
struct Selection {
    depth: u64,
    /// Ballots that sent Accept at `depth`, or prepared exactly `depth`.
    ballots: HashSet<Ballot>,
}

impl Selection {
    fn new(traces: &Traces, depth: u64) -> Selection {
        let mut accepting = HashSet::new();
        let mut ballots = HashSet::new();
        for m in all_recs(traces).filter_map(msg_of) {
            let Some(b) = m.ballot else { continue };
            match m.kind {
                Kind::Accept if m.depth == Some(depth) => accepting.insert(b),
                Kind::Prepare if m.depth == Some(depth) => ballots.insert(b),
                _ => false,
            };
        }
        ballots.extend(accepting);
        Selection { depth, ballots }
    }

    fn wants(&self, rec: &Rec) -> bool {
        let Some(m) = msg_of(rec) else {
            return matches!(rec.ev, Ev::Commit { depth, .. } if depth == self.depth);
        };
        let ours = m.ballot.is_some_and(|b| self.ballots.contains(&b));
        let at_depth = m.depth == Some(self.depth);
        match m.kind {
            Kind::Prepare => at_depth || (ours && m.depth.is_some_and(|d| d <= self.depth)),
            Kind::Promise | Kind::Reject => ours,
            Kind::Accept | Kind::Accepted | Kind::Decide => at_depth,
            _ => false,
        }
    }
}

/// One selected record, with its place in its node's own order.
struct Event<'a> {
    node: NodeId,
    local: usize,
    rec: &'a Rec,
}

/// Draws the round that decided `depth`, or says there is none.
pub fn build(traces: &Traces, depth: u64) -> Result<Diagram, String> {
    let sel = Selection::new(traces, depth);
    let events = select(traces, &sel);
    if !events.iter().any(|e| msg_of(e.rec).is_some()) {
        return Err(format!("no round at depth {depth} in the traces"));
    }
    let pairs = Pairs::new(&events);
    let order = causal_order(&events, &pairs);
    let gaps = gaps(traces, &events, &pairs);
    let rows = order
        .iter()
        .flat_map(|&i| rows_for(traces, &events, i, &pairs, &gaps.missing))
        .collect();
    Ok(Diagram {
        depth,
        nodes: traces.nodes.len(),
        rows,
        chosen: chosen(&events, depth),
        notes: gaps.notes,
    })
}

/// The round's messages on every node, plus the starts and stops among them.
fn select<'a>(traces: &'a Traces, sel: &Selection) -> Vec<Event<'a>> {
    let picked: Vec<Vec<usize>> = traces
        .nodes
        .iter()
        .map(|t| t.iter().flatten().enumerate())
        .map(|recs| recs.filter(|(_, r)| sel.wants(r)).map(|(i, _)| i).collect())
        .collect();
    let times = picked.iter().zip(&traces.nodes).flat_map(|(p, t)| {
        let recs = t.as_deref().unwrap_or(&[]);
        p.iter().map(move |&i| recs[i].t)
    });
    let (t0, t1) = times.fold((u64::MAX, 0), |(lo, hi), t| (lo.min(t), hi.max(t)));
    let mut events = Vec::new();
    for (node, (recs, p)) in traces.nodes.iter().zip(&picked).enumerate() {
        let recs = recs.as_deref().unwrap_or(&[]);
        let (first, last) = (p.first().copied(), p.last().copied());
        for (local, rec) in recs.iter().enumerate() {
            let in_span = first.is_some_and(|f| local > f) && last.is_some_and(|l| local < l);
            let life = matches!(rec.ev, Ev::Start { .. } | Ev::Stop)
                && (in_span || (t0..=t1).contains(&rec.t));
            if life || p.binary_search(&local).is_ok() {
                events.push(Event { node, local, rec });
            }
        }
    }
    events
}

/// Sends by (sender, id), and which (send, recipient) pairs some receipt matched.
struct Pairs {
    /// For each event that is a receipt, the event index of its send, when traced.
    send_of: HashMap<usize, usize>,
    delivered: HashSet<(usize, NodeId)>,
}

impl Pairs {
    fn new(events: &[Event]) -> Pairs {
        let mut sends = HashMap::new();
        for (i, e) in events.iter().enumerate() {
            if let Ev::Send { id, .. } = e.rec.ev {
                sends.insert((e.node, id), i);
            }
        }
        let mut pairs = Pairs {
            send_of: HashMap::new(),
            delivered: HashSet::new(),
        };
        for (i, e) in events.iter().enumerate() {
            if let Ev::Recv { from, id, .. } = e.rec.ev {
                if let Some(&s) = sends.get(&(from, id)) {
                    pairs.send_of.insert(i, s);
                    pairs.delivered.insert((s, e.node));
                }
            }
        }
        pairs
    }
}

/// A topological order that keeps each node's own order and puts every send before its
/// receipts; wall time only breaks ties, since different hosts' clocks differ.
fn causal_order(events: &[Event], pairs: &Pairs) -> Vec<usize> {
    let mut succs: Vec<Vec<usize>> = vec![Vec::new(); events.len()];
    let mut preds = vec![0usize; events.len()];
    let mut last_on: HashMap<NodeId, usize> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if let Some(prev) = last_on.insert(e.node, i) {
            succs[prev].push(i);
            preds[i] += 1;
        }
    }
    for (&recv, &send) in &pairs.send_of {
        succs[send].push(recv);
        preds[recv] += 1;
    }
    let key = |i: usize| Reverse((events[i].rec.t, events[i].node, events[i].local, i));
    let mut ready: BinaryHeap<_> = (0..events.len())
        .filter(|&i| preds[i] == 0)
        .map(key)
        .collect();
    let mut order = Vec::with_capacity(events.len());
    while let Some(Reverse((.., i))) = ready.pop() {
        order.push(i);
        for &s in &succs[i] {
            preds[s] -= 1;
            if preds[s] == 0 {
                ready.push(key(s));
            }
        }
    }
    order
}

/// Nodes whose part of the round is missing, and the notes that say so.
struct Gaps {
    missing: BTreeSet<NodeId>,
    notes: Vec<String>,
}

fn gaps(traces: &Traces, events: &[Event], pairs: &Pairs) -> Gaps {
    let t0 = events.iter().map(|e| e.rec.t).min().unwrap_or(0);
    let mut g = Gaps {
        missing: BTreeSet::new(),
        notes: Vec::new(),
    };
    for (node, trace) in traces.nodes.iter().enumerate() {
        let Some(recs) = trace else {
            g.missing.insert(node);
            g.notes.push(format!(
                "note: node {node} has no trace; its part is missing"
            ));
            continue;
        };
        let rotated = recs
            .first()
            .is_none_or(|r| !matches!(r.ev, Ev::Start { .. }) && r.t > t0);
        let unsent = events.iter().enumerate().any(|(i, e)| {
            matches!(e.rec.ev, Ev::Recv { from, .. } if from == node)
                && !pairs.send_of.contains_key(&i)
        });
        if rotated || unsent {
            g.missing.insert(node);
            g.notes.push(format!(
                "note: node {node}'s trace starts after this round began; its part is missing"
            ));
        }
    }
    g
}

/// The rows one event contributes: a receipt draws its arrow; a send draws only the
/// arrows no receipt matched.
fn rows_for(
    traces: &Traces,
    events: &[Event],
    i: usize,
    pairs: &Pairs,
    missing: &BTreeSet<NodeId>,
) -> Vec<Row> {
    let e = &events[i];
    match &e.rec.ev {
        Ev::Recv { from, id, msg } if *from != e.node => {
            vec![arrow(*from, e.node, *id, msg, Fate::Delivered)]
        }
        Ev::Send { id, to, msg } => to
            .iter()
            .filter(|&&r| r != e.node && !pairs.delivered.contains(&(i, r)))
            .map(|&r| {
                let fate = if missing.contains(&r) {
                    Fate::Unknown
                } else {
                    Fate::Lost
                };
                arrow(e.node, r, *id, msg, fate)
            })
            .collect(),
        _ => mark(traces, e).into_iter().collect(),
    }
}

fn arrow(from: NodeId, to: NodeId, id: u64, msg: &Msg, fate: Fate) -> Row {
    Row::Arrow {
        from,
        to,
        id,
        kind: msg.kind,
        label: label(msg),
        fate,
    }
}

/// `prepare 4.0 from depth 7`, `promise 4.0 (1 accepted)`, `accept 4.0 depth 7: 0.3 2.1`...
pub fn label(m: &Msg) -> String {
    let b = m.ballot.map_or("?".to_string(), |b| b.to_string());
    let d = m.depth.unwrap_or(0);
    match m.kind {
        Kind::Prepare => format!("prepare {b} from depth {d}"),
        Kind::Promise => match m.accepted.unwrap_or(0) {
            0 => format!("promise {b} (none accepted)"),
            n => format!("promise {b} ({n} accepted)"),
        },
        Kind::Reject => match m.promised {
            Some(p) => format!("reject {b}: promised {p}"),
            None => format!("reject {b}"),
        },
        Kind::Accept => format!("accept {b} depth {d}: {}", m.value().unwrap_or_default()),
        Kind::Accepted => format!("accepted {b} depth {d}"),
        Kind::Decide => format!("decide {b} depth {d}"),
        other => format!("{other:?} {b}").to_lowercase(),
    }
}

fn mark(traces: &Traces, e: &Event) -> Option<Row> {
    let node = e.node;
    let (mark, label) = match &e.rec.ev {
        Ev::Start { inc } => {
            let recs = traces.nodes[node].as_deref().unwrap_or(&[]);
            match e.local.checked_sub(1).map(|p| &recs[p].ev) {
                None => (
                    Mark::Started,
                    format!("node {node} started (incarnation {inc})"),
                ),
                Some(Ev::Stop) => (Mark::Restarted, format!("node {node} restarted ({inc})")),
                Some(_) => (
                    Mark::Crashed,
                    format!("node {node} crashed, restarted ({inc})"),
                ),
            }
        }
        Ev::Stop => (Mark::Stopped, format!("node {node} stopped")),
        Ev::Commit { depth, .. } => (Mark::Committed, format!("node {node} committed {depth}")),
        _ => return None,
    };
    Some(Row::Mark { node, mark, label })
}

/// The chosen value: from a commit record, else the Accept that a Decide names.
fn chosen(events: &[Event], depth: u64) -> Option<String> {
    let committed = events.iter().find_map(|e| match &e.rec.ev {
        Ev::Commit { value, .. } => Some(value.clone()),
        _ => None,
    });
    let value: Option<Value> = committed.or_else(|| {
        let msgs = || events.iter().filter_map(|e| msg_of(e.rec));
        let decided = msgs().find(|m| m.kind == Kind::Decide)?.ballot;
        msgs()
            .find(|m| m.kind == Kind::Accept && m.ballot == decided && m.depth == Some(depth))?
            .value()
    });
    value.map(|v| v.to_string())
}
