//! Holding and dropping a node's outgoing messages, for the classroom (`pause`, `step`, `go`,
//! `drop`, `--hold`). This sits in the shell, on the way from the core to the transport: a
//! held message is a delayed message and a dropped one a lost message, both of which Paxos
//! survives, so nothing here can break safety. The core never knows.

use crate::human;
use crate::ledger::NodeId;
use crate::paxos::{Envelope, Message};
use std::collections::{BTreeSet, HashSet, VecDeque};

/// A kind of message, as typed in `drop KIND PEER` and `--hold KIND,...` and as the trace
/// writes it (the lowercase name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Hello,
    Prepare,
    Promise,
    Reject,
    Accept,
    Accepted,
    Decide,
    Heartbeat,
    Forward,
    CatchUp,
    Blocks,
    Probe,
    ProbeReply,
    StartCheck,
    StartSeen,
    Severed,
}

/// Every kind, by the name a person types (the trace's names).
const NAMES: &[(&str, Kind)] = &[
    ("hello", Kind::Hello),
    ("prepare", Kind::Prepare),
    ("promise", Kind::Promise),
    ("reject", Kind::Reject),
    ("accept", Kind::Accept),
    ("accepted", Kind::Accepted),
    ("decide", Kind::Decide),
    ("heartbeat", Kind::Heartbeat),
    ("forward", Kind::Forward),
    ("catchup", Kind::CatchUp),
    ("blocks", Kind::Blocks),
    ("probe", Kind::Probe),
    ("probereply", Kind::ProbeReply),
    ("startcheck", Kind::StartCheck),
    ("startseen", Kind::StartSeen),
    ("severed", Kind::Severed),
];

/// The phases of a round: the kinds that `pause` holds and `--hold` may name.
pub const PHASES: &[Kind] = &[
    Kind::Prepare,
    Kind::Promise,
    Kind::Reject,
    Kind::Accept,
    Kind::Accepted,
    Kind::Decide,
];

impl Kind {
    pub fn of(msg: &Message) -> Kind {
        match msg {
            Message::Hello => Kind::Hello,
            Message::Prepare { .. } => Kind::Prepare,
            Message::Promise { .. } => Kind::Promise,
            Message::Reject { .. } => Kind::Reject,
            Message::Accept { .. } => Kind::Accept,
            Message::Accepted { .. } => Kind::Accepted,
            Message::Decide { .. } => Kind::Decide,
            Message::Heartbeat { .. } => Kind::Heartbeat,
            Message::Forward { .. } => Kind::Forward,
            Message::CatchUp { .. } => Kind::CatchUp,
            Message::Blocks { .. } => Kind::Blocks,
            Message::Probe { .. } => Kind::Probe,
            Message::ProbeReply(_) => Kind::ProbeReply,
            Message::StartCheck { .. } => Kind::StartCheck,
            Message::StartSeen { .. } => Kind::StartSeen,
            Message::Severed => Kind::Severed,
        }
    }

    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, k)| *k == self)
            .expect("every kind is named")
            .0
    }

    /// A kind by name, in any case. Errors are the text after `error: `.
    pub fn parse(word: &str) -> Result<Kind, String> {
        if let Some((_, k)) = NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(word)) {
            return Ok(*k);
        }
        let names: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
        let hint = human::did_you_mean(word, &names).map_or_else(
            || format!(" (kinds: {})", names.join(" ")),
            |c| format!(" (did you mean {c}?)"),
        );
        let shown: String = word.chars().filter(|c| !c.is_control()).take(20).collect();
        Err(format!("unknown message kind '{shown}'{hint}"))
    }

    fn is_phase(self) -> bool {
        PHASES.contains(&self)
    }
}

/// `--hold prepare,accept`: the phases at which the node pauses by itself.
pub fn parse_phases(list: &str) -> Result<BTreeSet<Kind>, String> {
    let mut kinds = BTreeSet::new();
    for word in list.split(',').map(str::trim) {
        let kind = Kind::parse(word)?;
        if !kind.is_phase() {
            let phases: Vec<&str> = PHASES.iter().map(|k| k.name()).collect();
            return Err(format!(
                "{} is not a phase (phases: {})",
                kind.name(),
                phases.join(",")
            ));
        }
        kinds.insert(kind);
    }
    Ok(kinds)
}

/// A message in a few words: `prepare 3.0 depth 1`, `accept 3.0 depth 2 (2 transfers)`.
pub fn describe(msg: &Message) -> String {
    let name = Kind::of(msg).name();
    match msg {
        Message::Prepare { ballot, depth }
        | Message::Accepted { ballot, depth }
        | Message::Decide { ballot, depth } => format!("{name} {ballot} depth {depth}"),
        Message::Promise { ballot, accepted } => {
            format!("{name} {ballot} ({} accepted values)", accepted.len())
        }
        Message::Reject { ballot, promised } => format!("{name} {ballot} (promised {promised})"),
        Message::Accept {
            ballot,
            depth,
            value,
        } => format!(
            "{name} {ballot} depth {depth} ({})",
            transfers(value.transfers.len())
        ),
        Message::Heartbeat { ballot } => format!("{name} {ballot}"),
        Message::Forward { transfers: t } => format!("{name} ({})", transfers(t.len())),
        Message::CatchUp { from } => format!("{name} from depth {from}"),
        Message::Blocks { blocks } => format!("{name} ({})", blocks.len()),
        Message::Hello
        | Message::Probe { .. }
        | Message::ProbeReply(_)
        | Message::StartCheck { .. }
        | Message::StartSeen { .. }
        | Message::Severed => name.to_string(),
    }
}

fn transfers(n: usize) -> String {
    match n {
        1 => "1 transfer".to_string(),
        n => format!("{n} transfers"),
    }
}

/// What the shell does with an outgoing message, now.
#[derive(Debug, PartialEq, Eq)]
pub enum Release {
    Send(Vec<NodeId>, Envelope),
    /// Lost on purpose (`drop`); `left` more of that kind to that peer will be.
    Dropped {
        to: NodeId,
        env: Envelope,
        left: u64,
    },
}

/// A held message and the one peer it is for.
#[derive(Debug)]
struct Held {
    to: NodeId,
    env: Envelope,
}

/// The outgoing gate of one node.
#[derive(Debug, Default)]
pub struct Gate {
    paused: bool,
    /// `--hold`: a message of these kinds pauses the node when it first goes out.
    hold_at: BTreeSet<Kind>,
    held: VecDeque<Held>,
    /// (kind, peer) -> how many more to drop.
    drops: Vec<(Kind, NodeId, u64)>,
    /// Phases (kind, ballot text, depth) already let through, so that a retransmission does
    /// not pause the node again.
    passed: HashSet<(Kind, String)>,
}

impl Gate {
    pub fn new(hold_at: BTreeSet<Kind>) -> Gate {
        Gate {
            hold_at,
            ..Gate::default()
        }
    }

    /// Whether outgoing phase messages are being held.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Whether anything can be held or dropped: when not, `offer` sends as it came.
    fn idle(&self) -> bool {
        !self.paused && self.hold_at.is_empty() && self.drops.is_empty()
    }

    /// A message the core wants sent to `to`. Returns what to do now; `say` gets lines for
    /// the person at the terminal.
    pub fn offer(&mut self, to: &[NodeId], env: Envelope, say: &mut Vec<String>) -> Vec<Release> {
        if self.idle() {
            return vec![Release::Send(to.to_vec(), env)];
        }
        let kind = Kind::of(&env.msg);
        let key = (kind, phase_key(&env.msg));
        let trigger = self.hold_at.contains(&kind) && !self.passed.contains(&key);
        if !self.paused && trigger {
            self.paused = true;
            // At most 74 columns: a 40-column description at most.
            say.push(format!(
                "paused (--hold) before {}: step or go",
                describe(&env.msg)
            ));
        }
        if self.paused && kind.is_phase() {
            let before = self.held.len();
            for &peer in to {
                let dup = self
                    .held
                    .iter()
                    .any(|h| h.to == peer && h.env.msg == env.msg);
                if !dup {
                    self.held.push_back(Held {
                        to: peer,
                        env: env.clone(),
                    });
                }
            }
            if self.held.len() > before {
                say.push(format!("held {} to {}", describe(&env.msg), peers(to)));
            }
            return Vec::new();
        }
        self.let_through(to, env)
    }

    /// Applies the drop rules to a message that goes out now.
    fn let_through(&mut self, to: &[NodeId], env: Envelope) -> Vec<Release> {
        let kind = Kind::of(&env.msg);
        if kind.is_phase() {
            self.passed.insert((kind, phase_key(&env.msg)));
            if self.passed.len() > 4096 {
                self.passed.clear(); // old rounds; at worst one more pause
            }
        }
        let mut out = Vec::new();
        let mut send = Vec::new();
        for &peer in to {
            match self.take_drop(kind, peer) {
                Some(left) => out.push(Release::Dropped {
                    to: peer,
                    env: env.clone(),
                    left,
                }),
                None => send.push(peer),
            }
        }
        if !send.is_empty() {
            out.push(Release::Send(send, env));
        }
        out
    }

    /// Uses up one drop of `kind` to `peer`, if one is set; returns how many are left.
    fn take_drop(&mut self, kind: Kind, peer: NodeId) -> Option<u64> {
        let i = self
            .drops
            .iter()
            .position(|&(k, p, _)| k == kind && p == peer)?;
        self.drops[i].2 -= 1;
        let left = self.drops[i].2;
        if left == 0 {
            self.drops.remove(i);
        }
        Some(left)
    }

    /// `pause`: hold every phase message from now on.
    pub fn pause(&mut self) -> String {
        if self.paused {
            return format!("already paused; {} held", self.held.len());
        }
        self.paused = true;
        "paused: Paxos messages from this node wait for step or go; its timers stand still"
            .to_string()
    }

    /// `step`: the next held message goes out.
    pub fn step(&mut self, say: &mut Vec<String>) -> Vec<Release> {
        let Some(h) = self.held.pop_front() else {
            let state = if self.paused { "paused" } else { "not paused" };
            say.push(format!("nothing is held ({state})"));
            return Vec::new();
        };
        let left = self.held.len();
        say.push(format!(
            "step: {} to node {}; {left} still held",
            describe(&h.env.msg),
            h.to
        ));
        self.let_through(&[h.to], h.env)
    }

    /// `go`: everything held goes out, in order, and the node runs on.
    pub fn go(&mut self, say: &mut Vec<String>) -> Vec<Release> {
        let was = self.paused;
        self.paused = false;
        let held: Vec<Held> = self.held.drain(..).collect();
        say.push(match (was, held.len()) {
            (false, 0) => "not paused; nothing held".to_string(),
            (true, 0) => "go: nothing was held; running".to_string(),
            (_, 1) => "go: 1 held message sent; running".to_string(),
            (_, n) => format!("go: {n} held messages sent; running"),
        });
        held.into_iter()
            .flat_map(|h| self.let_through(&[h.to], h.env))
            .collect()
    }

    /// `drop KIND PEER N`: the next `n` messages of `kind` to `peer` are lost.
    pub fn drop_next(&mut self, kind: Kind, peer: NodeId, n: u64) -> String {
        assert!(n > 0, "commands refuses a count of 0");
        match self
            .drops
            .iter_mut()
            .find(|(k, p, _)| *k == kind && *p == peer)
        {
            Some(rule) => rule.2 = rule.2.saturating_add(n),
            None => self.drops.push((kind, peer, n)),
        }
        let total = self
            .drops
            .iter()
            .find(|(k, p, _)| *k == kind && *p == peer)
            .map_or(0, |r| r.2);
        let (count, plural) = match total {
            1 => (String::new(), ""),
            n => (format!("{n} "), "s"),
        };
        format!(
            "will drop the next {count}{} message{plural} to node {peer}",
            kind.name()
        )
    }

    /// One line for `state`: what is held and what will be dropped.
    pub fn summary(&self) -> Option<String> {
        if self.idle() && self.held.is_empty() {
            return None;
        }
        let mut parts = Vec::new();
        if self.paused {
            parts.push(format!("paused, {} held", self.held.len()));
        }
        if !self.hold_at.is_empty() {
            let kinds: Vec<&str> = self.hold_at.iter().map(|k| k.name()).collect();
            parts.push(format!("--hold {}", kinds.join(",")));
        }
        for (k, p, n) in &self.drops {
            parts.push(format!("drop {} {p} {n}", k.name()));
        }
        Some(format!("outgoing: {}", parts.join("; ")))
    }
}

/// What identifies a phase of a round across retransmissions.
fn phase_key(msg: &Message) -> String {
    match msg {
        Message::Prepare { ballot, depth }
        | Message::Accepted { ballot, depth }
        | Message::Decide { ballot, depth }
        | Message::Accept { ballot, depth, .. } => format!("{ballot}@{depth}"),
        Message::Promise { ballot, .. } | Message::Reject { ballot, .. } => ballot.to_string(),
        _ => String::new(),
    }
}

/// `node 2` or `nodes 1, 2, 4`.
fn peers(to: &[NodeId]) -> String {
    match to {
        [one] => format!("node {one}"),
        many => {
            let ids: Vec<String> = many.iter().map(|p| p.to_string()).collect();
            format!("nodes {}", ids.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_from_the_name_the_trace_writes() {
        for &(name, kind) in NAMES {
            let read: Kind = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!((read, kind.name()), (kind, name));
        }
    }
    use crate::paxos::Ballot;

    fn env(msg: Message) -> Envelope {
        Envelope {
            depth: 0,
            id: 0,
            seq: 0,
            msg,
        }
    }

    fn prepare(round: u64) -> Envelope {
        env(Message::Prepare {
            ballot: Ballot { round, node: 0 },
            depth: 1,
        })
    }

    #[test]
    fn an_idle_gate_sends_everything_as_it_came() {
        let mut g = Gate::default();
        let mut say = Vec::new();
        let out = g.offer(&[1, 2], prepare(1), &mut say);
        assert_eq!(out, vec![Release::Send(vec![1, 2], prepare(1))]);
        assert!(say.is_empty());
    }

    #[test]
    fn pause_holds_phases_step_sends_one_go_sends_the_rest() {
        let mut g = Gate::default();
        let mut say = Vec::new();
        g.pause();
        assert!(g.offer(&[1, 2], prepare(1), &mut say).is_empty());
        // A retransmission is not held twice; a heartbeat is not held at all.
        assert!(g.offer(&[1, 2], prepare(1), &mut say).is_empty());
        let beat = env(Message::Heartbeat {
            ballot: Ballot::default(),
        });
        assert_eq!(g.offer(&[1], beat.clone(), &mut say).len(), 1);
        assert_eq!(g.step(&mut say), vec![Release::Send(vec![1], prepare(1))]);
        assert!(say.last().unwrap().contains("1 still held"), "{say:?}");
        assert_eq!(g.go(&mut say), vec![Release::Send(vec![2], prepare(1))]);
        assert_eq!(
            g.offer(&[1], prepare(2), &mut say).len(),
            1,
            "running again"
        );
        assert!(g.step(&mut say).is_empty());
    }

    #[test]
    fn hold_pauses_at_each_named_phase_once() {
        let mut g = Gate::new(parse_phases("prepare").unwrap());
        let mut say = Vec::new();
        assert!(g.offer(&[1], prepare(1), &mut say).is_empty());
        assert!(
            say[0].starts_with("paused (--hold) before prepare 1.0 depth 1"),
            "{say:?}"
        );
        assert_eq!(g.go(&mut say).len(), 1);
        // The same prepare again (a retransmission) goes; the next round's pauses again.
        assert_eq!(g.offer(&[1], prepare(1), &mut say).len(), 1);
        assert!(g.offer(&[1], prepare(2), &mut say).is_empty());
    }

    #[test]
    fn drop_loses_the_next_n_of_a_kind_to_a_peer() {
        let mut g = Gate::default();
        let mut say = Vec::new();
        assert!(g
            .drop_next(Kind::Prepare, 2, 2)
            .contains("next 2 prepare messages"));
        let out = g.offer(&[1, 2], prepare(1), &mut say);
        assert_eq!(out.len(), 2);
        assert!(matches!(out[0], Release::Dropped { to: 2, left: 1, .. }));
        assert_eq!(out[1], Release::Send(vec![1], prepare(1)));
        assert!(matches!(
            g.offer(&[2], prepare(2), &mut say)[..],
            [Release::Dropped { left: 0, .. }]
        ));
        assert_eq!(g.offer(&[2], prepare(3), &mut say).len(), 1);
        assert!(g.idle());
    }

    #[test]
    fn kinds_and_phases_parse_with_reasons() {
        assert_eq!(Kind::parse("ACCEPT"), Ok(Kind::Accept));
        assert!(Kind::parse("acept")
            .unwrap_err()
            .contains("did you mean accept?"));
        assert!(Kind::parse("zzzzzz").unwrap_err().contains("kinds: hello"));
        assert_eq!(parse_phases("prepare,accept").unwrap().len(), 2);
        assert!(parse_phases("heartbeat")
            .unwrap_err()
            .contains("not a phase"));
        assert!(parse_phases("").is_err());
        for (_, k) in NAMES {
            assert_eq!(Kind::parse(k.name()), Ok(*k));
        }
    }
}
