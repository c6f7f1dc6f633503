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
    /// Held back on purpose by the sender (`drop`).
    Dropped,
}

/// Something that happened on one lifeline rather than between two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Started,
    Restarted,
    /// A crash: recorded by `crashNode`, or inferred after the last record before a start
    /// with no clean stop.
    Crashed,
    Stopped,
    /// The node learned the value and appended it to its chain.
    Committed,
    /// The value was chosen: this node's accept made a majority for one ballot.
    Chosen,
    Severed,
    Restored,
    SteppedDown,
    TimedOut,
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
    /// How things stood when the round began: severed links, nodes down.
    pub context: Vec<String>,
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
        Ev::Send { msg, .. } | Ev::Recv { msg, .. } | Ev::Drop { msg, .. } => Some(msg),
        _ => None,
    }
}

/// Whether a record is something that happened on one lifeline (a start, a crash, a
/// sever...), drawn when it falls within the round.
fn is_life(ev: &Ev) -> bool {
    !matches!(
        ev,
        Ev::Send { .. } | Ev::Recv { .. } | Ev::Drop { .. } | Ev::Commit { .. }
    )
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
    let mut votes = Votes::new(traces.nodes.len(), depth);
    let mut rows = Vec::new();
    for &i in &order {
        rows.extend(rows_for(traces, &events, i, &pairs, &gaps.missing));
        if let Some(mark) = votes.count(&events[i]) {
            rows.push(mark);
        }
    }
    Ok(Diagram {
        depth,
        nodes: traces.nodes.len(),
        rows,
        chosen: chosen(&events, depth),
        context: context(traces, &events),
        notes: gaps.notes,
    })
}

/// Counts the accepts of each ballot at the round's depth, in causal order, to find the
/// moment the value was chosen: when one ballot's accepts first reach a majority. The
/// leader accepts its own value as it sends Accept; an acceptor, as it sends Accepted (or,
/// if its trace lacks that, when the leader receives it).
struct Votes {
    nodes: usize,
    depth: u64,
    by_ballot: HashMap<Ballot, BTreeSet<NodeId>>,
    done: bool,
}

impl Votes {
    fn new(nodes: usize, depth: u64) -> Votes {
        Votes {
            nodes,
            depth,
            by_ballot: HashMap::new(),
            done: false,
        }
    }

    /// The `Chosen` mark, on the node whose accept made the majority, the first time.
    fn count(&mut self, e: &Event) -> Option<Row> {
        let (voter, msg) = match &e.rec.ev {
            Ev::Send { msg, .. } if matches!(msg.kind, Kind::Accept | Kind::Accepted) => {
                (e.node, msg)
            }
            Ev::Recv { from, msg, .. } if msg.kind == Kind::Accepted => (*from, msg),
            _ => return None,
        };
        let ballot = msg.ballot?;
        if self.done || msg.depth != Some(self.depth) {
            return None;
        }
        let voters = self.by_ballot.entry(ballot).or_default();
        voters.insert(voter);
        let majority = self.nodes / 2 + 1;
        if voters.len() < majority {
            return None;
        }
        self.done = true;
        let label = format!(
            "chosen: {} of {} nodes accepted {ballot} (majority {majority})",
            voters.len(),
            self.nodes
        );
        Some(Row::Mark {
            node: voter,
            mark: Mark::Chosen,
            label,
        })
    }
}

/// How things stood when the round began, from what each node did before it: the links
/// still severed and the nodes down, in a few short lines.
fn context(traces: &Traces, events: &[Event]) -> Vec<String> {
    let t0 = events.iter().map(|e| e.rec.t).min().unwrap_or(0);
    let n = traces.nodes.len();
    let mut cut = vec![vec![false; n]; n];
    let mut down: Vec<Option<&str>> = vec![None; n];
    for (node, recs) in traces.nodes.iter().enumerate() {
        for r in recs.iter().flatten().take_while(|r| r.t < t0) {
            match r.ev {
                Ev::Sever { peer } if peer < n => cut[node][peer] = true,
                Ev::Restore { peer } if peer < n => cut[node][peer] = false,
                Ev::Crash { .. } => down[node] = Some("crashed"),
                Ev::Stop => down[node] = Some("stopped"),
                Ev::Start { .. } => {
                    // A restarted node has forgotten its severed links.
                    down[node] = None;
                    cut[node].iter_mut().for_each(|c| *c = false);
                }
                _ => {}
            }
        }
    }
    let pairs = (0..n).flat_map(|a| (0..n).map(move |b| (a, b)));
    let words: Vec<String> = pairs
        .filter_map(|(a, b)| match (cut[a][b], cut[b][a]) {
            (true, true) if a < b => Some(format!("{a}-{b}")),
            (true, false) => Some(format!("{a}-{b} (at {a} only)")),
            _ => None,
        })
        .collect();
    let mut lines = Vec::new();
    if !words.is_empty() {
        lines.extend(wrap("links severed when it began:", &words));
    }
    let down: Vec<String> = (0..n)
        .filter_map(|i| down[i].map(|how| format!("node {i} ({how})")))
        .collect();
    if !down.is_empty() {
        lines.extend(wrap("down when it began:", &down));
    }
    lines
}

/// `head` and the words, in lines of at most 78 columns.
fn wrap(head: &str, words: &[String]) -> Vec<String> {
    let mut lines = vec![head.to_string()];
    for w in words {
        let last = lines.last_mut().expect("one line at least");
        if last.len() + 1 + w.len() > 78 {
            lines.push(format!("  {w}"));
        } else {
            last.push(' ');
            last.push_str(w);
        }
    }
    lines
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
            let life = is_life(&rec.ev) && (in_span || (t0..=t1).contains(&rec.t));
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
    /// (sender, id, recipient) of every message held back on purpose.
    dropped: HashSet<(NodeId, u64, NodeId)>,
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
            dropped: HashSet::new(),
        };
        for (i, e) in events.iter().enumerate() {
            if let Ev::Drop { id, to, .. } = e.rec.ev {
                pairs.dropped.insert((e.node, id, to));
            }
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
        Ev::Drop { id, to, msg } => vec![arrow(e.node, *to, *id, msg, Fate::Dropped)],
        Ev::Send { id, to, msg } => to
            .iter()
            .filter(|&&r| r != e.node && !pairs.delivered.contains(&(i, r)))
            .filter(|&&r| !pairs.dropped.contains(&(e.node, *id, r)))
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
                Some(Ev::Stop | Ev::Crash { .. }) => {
                    (Mark::Restarted, format!("node {node} restarted ({inc})"))
                }
                Some(_) => (
                    Mark::Crashed,
                    format!("node {node} crashed, restarted ({inc})"),
                ),
            }
        }
        Ev::Stop => (Mark::Stopped, format!("node {node} stopped")),
        Ev::Crash { killed: false } => (Mark::Crashed, format!("node {node} crashed (crashNode)")),
        Ev::Crash { killed: true } => (
            Mark::Crashed,
            format!("node {node} crashed (killed; its last record)"),
        ),
        Ev::Commit { depth, .. } => (
            Mark::Committed,
            format!("node {node} learns it: commits depth {depth}"),
        ),
        Ev::Sever { peer } => (
            Mark::Severed,
            format!("node {node} severs its link to {peer}"),
        ),
        Ev::Restore { peer } => (
            Mark::Restored,
            format!("node {node} restores its link to {peer}"),
        ),
        Ev::StepDown {
            ballot,
            leading: true,
        } => (
            Mark::SteppedDown,
            format!("node {node} steps down: stops leading {ballot}"),
        ),
        Ev::StepDown { ballot, .. } => (
            Mark::SteppedDown,
            format!("node {node} steps down: gives up ballot {ballot}"),
        ),
        Ev::Timeout { ballot } => (
            Mark::TimedOut,
            format!("node {node}: election {ballot} timed out"),
        ),
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
        let sent_or_received = |e: &&Event| matches!(e.rec.ev, Ev::Send { .. } | Ev::Recv { .. });
        let msgs = || {
            events
                .iter()
                .filter(sent_or_received)
                .filter_map(|e| msg_of(e.rec))
        };
        let decided = msgs().find(|m| m.kind == Kind::Decide)?.ballot;
        msgs()
            .find(|m| m.kind == Kind::Accept && m.ballot == decided && m.depth == Some(depth))?
            .value()
    });
    value.map(|v| v.to_string())
}
