//! One trace record per JSON line. The write side borrows the live `Message` and writes only
//! a summary of it; the read side parses those lines back for the renderer.
//!
//! ```text
//! {"t":1712000000123,"node":0,"ev":"start","inc":3}
//! {"t":...,"node":0,"ev":"send","id":12884901889,"to":[1,2],"msg":{"kind":"prepare","ballot":"4.0","depth":7}}
//! {"t":...,"node":1,"ev":"recv","from":0,"id":12884901889,"msg":{"kind":"prepare","ballot":"4.0","depth":7}}
//! {"t":...,"node":0,"ev":"send","id":...,"to":[1,2],"msg":{"kind":"accept","ballot":"4.0","depth":7,"value":["0.3","2.1"],"txs":2}}
//! {"t":...,"node":0,"ev":"commit","depth":7,"proposer":0,"value":["0.3","2.1"],"txs":2}
//! {"t":...,"node":0,"ev":"stop"}
//! ```
//!
//! What a student did, and what the node decided by itself, is recorded too:
//!
//! ```text
//! {"t":...,"node":0,"ev":"sever","peer":2}          severLink 2 (and "restore")
//! {"t":...,"node":0,"ev":"crash"}                   crashNode, just before exiting
//! {"t":...,"node":0,"ev":"drop","id":...,"to":[3],"msg":{...}}   a message held back
//! {"t":...,"node":1,"ev":"stepdown","ballot":"2.1","leading":true}
//! {"t":...,"node":1,"ev":"timeout","ballot":"2.1"}  its election timed out
//! ```
//!
//! A `kill -9` leaves no record: the reader puts an inferred `crash` after the last record
//! before the next `start` (`mark_kills`).

use crate::ledger::{NodeId, Transfer};
use crate::paxos::{Ballot, Message};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value names at most this many transfer ids; `txs` gives the full count. Keeps every
/// record small even for a 4,096-transfer block.
pub const VALUE_IDS: usize = 8;

/// A record as written: everything borrowed, nothing allocated.
#[derive(Serialize)]
pub(crate) struct Out<'a> {
    pub t: u64,
    pub node: NodeId,
    pub ev: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inc: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<NodeId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<&'a [NodeId]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg: Option<Summary<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposer: Option<NodeId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Ids<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub txs: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<NodeId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ballot: Option<Shown<'a, Ballot>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leading: Option<bool>,
}

impl<'a> Out<'a> {
    pub fn new(t: u64, node: NodeId, ev: &'static str) -> Out<'a> {
        Out {
            t,
            node,
            ev,
            inc: None,
            from: None,
            id: None,
            to: None,
            msg: None,
            depth: None,
            proposer: None,
            value: None,
            txs: None,
            peer: None,
            ballot: None,
            leading: None,
        }
    }
}

/// The first `VALUE_IDS` transfer ids, each written as `"NODE.SEQ"` straight into the output.
pub(crate) struct Ids<'a>(pub &'a [Transfer]);

impl Serialize for Ids<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let shown = &self.0[..self.0.len().min(VALUE_IDS)];
        let mut seq = s.serialize_seq(Some(shown.len()))?;
        for t in shown {
            seq.serialize_element(&Shown(&t.id))?;
        }
        seq.end()
    }
}

/// Serializes any `Display` as a string without building one first.
pub(crate) struct Shown<'a, T>(pub &'a T);

impl<T: std::fmt::Display> Serialize for Shown<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

/// What a message says, in a few fields: kind, ballot, depth, value ids, counts.
pub(crate) struct Summary<'a>(pub &'a Message);

impl Serialize for Summary<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("kind", Kind::of(self.0).name())?;
        match self.0 {
            Message::Hello | Message::Severed => {}
            Message::Prepare { ballot, depth }
            | Message::Accepted { ballot, depth }
            | Message::Decide { ballot, depth } => {
                m.serialize_entry("ballot", &Shown(ballot))?;
                m.serialize_entry("depth", depth)?;
            }
            Message::Promise { ballot, accepted } => {
                m.serialize_entry("ballot", &Shown(ballot))?;
                m.serialize_entry("accepted", &accepted.len())?;
            }
            Message::Reject { ballot, promised } => {
                m.serialize_entry("ballot", &Shown(ballot))?;
                m.serialize_entry("promised", &Shown(promised))?;
            }
            Message::Accept {
                ballot,
                depth,
                value,
            } => {
                m.serialize_entry("ballot", &Shown(ballot))?;
                m.serialize_entry("depth", depth)?;
                m.serialize_entry("value", &Ids(&value.transfers))?;
                m.serialize_entry("txs", &value.transfers.len())?;
            }
            Message::Heartbeat { ballot } => m.serialize_entry("ballot", &Shown(ballot))?,
            Message::Forward { transfers } => m.serialize_entry("count", &transfers.len())?,
            Message::CatchUp { from } => m.serialize_entry("depth", from)?,
            Message::Blocks { blocks } => m.serialize_entry("count", &blocks.len())?,
            Message::Probe { floor, .. } => m.serialize_entry("depth", floor)?,
            Message::ProbeReply(crate::paxos::ProbeReply { promised, top, .. }) => {
                m.serialize_entry("promised", &Shown(promised))?;
                m.serialize_entry("depth", top)?;
            }
            Message::StartCheck { .. } | Message::StartSeen { .. } => {}
        }
        m.end()
    }
}

/// A message kind, as written and read back: the one list of kinds, shared with `drop`
/// and `--hold` (see `hold::Kind`).
pub use crate::hold::Kind;

/// A value as read back: up to `VALUE_IDS` transfer ids and the full count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Value {
    pub ids: Vec<String>,
    pub txs: usize,
}

impl std::fmt::Display for Value {
    /// `empty`, `0.3 2.1`, or `0.3 2.1 ... (4096 transfers)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.txs == 0 {
            return f.write_str("empty");
        }
        f.write_str(&self.ids.join(" "))?;
        if self.txs > self.ids.len() {
            write!(f, " ... ({} transfers)", self.txs)?;
        }
        Ok(())
    }
}

/// A message summary as read back.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Msg {
    pub kind: Kind,
    #[serde(default, deserialize_with = "ballot")]
    pub ballot: Option<Ballot>,
    pub depth: Option<u64>,
    #[serde(default)]
    value: Option<Vec<String>>,
    #[serde(default)]
    txs: Option<usize>,
    pub accepted: Option<usize>,
    #[serde(default, deserialize_with = "ballot")]
    pub promised: Option<Ballot>,
    pub count: Option<usize>,
}

impl Msg {
    pub fn value(&self) -> Option<Value> {
        value_of(&self.value, self.txs)
    }
}

fn value_of(ids: &Option<Vec<String>>, txs: Option<usize>) -> Option<Value> {
    let ids = ids.clone()?;
    let txs = txs.unwrap_or(ids.len());
    Some(Value { ids, txs })
}

/// What happened, as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ev {
    Start {
        inc: u64,
    },
    Stop,
    Send {
        id: u64,
        to: Vec<NodeId>,
        msg: Msg,
    },
    Recv {
        from: NodeId,
        id: u64,
        msg: Msg,
    },
    Commit {
        depth: u64,
        value: Value,
    },
    /// `severLink peer`.
    Sever {
        peer: NodeId,
    },
    /// `restoreLink peer`.
    Restore {
        peer: NodeId,
    },
    /// A crash: `crashNode` (recorded as it exits), or inferred (`killed`) from a `start`
    /// with no clean stop before it.
    Crash {
        killed: bool,
    },
    /// A message to `to` held back on purpose (`drop`); `id` as for `Send`.
    Drop {
        id: u64,
        to: NodeId,
        msg: Msg,
    },
    /// It stopped running for leader, or stopped leading, with `ballot`.
    StepDown {
        ballot: Ballot,
        leading: bool,
    },
    /// Its election with `ballot` timed out without a majority of promises.
    Timeout {
        ballot: Ballot,
    },
}

/// One line of a trace, as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rec {
    pub t: u64,
    pub node: NodeId,
    pub ev: Ev,
}

#[derive(Deserialize)]
struct Line {
    t: u64,
    node: NodeId,
    ev: String,
    inc: Option<u64>,
    from: Option<NodeId>,
    id: Option<u64>,
    to: Option<Vec<NodeId>>,
    msg: Option<Msg>,
    depth: Option<u64>,
    value: Option<Vec<String>>,
    txs: Option<usize>,
    peer: Option<NodeId>,
    #[serde(default, deserialize_with = "ballot")]
    ballot: Option<Ballot>,
    leading: Option<bool>,
}

impl Rec {
    /// Parses one line; `None` if it is not a whole, known record.
    pub fn parse(line: &str) -> Option<Rec> {
        let l: Line = serde_json::from_str(line).ok()?;
        let ev = match l.ev.as_str() {
            "start" => Ev::Start { inc: l.inc? },
            "stop" => Ev::Stop,
            "send" => Ev::Send {
                id: l.id?,
                to: l.to?,
                msg: l.msg?,
            },
            "recv" => Ev::Recv {
                from: l.from?,
                id: l.id?,
                msg: l.msg?,
            },
            "commit" => Ev::Commit {
                depth: l.depth?,
                value: value_of(&l.value, l.txs)?,
            },
            "sever" => Ev::Sever { peer: l.peer? },
            "restore" => Ev::Restore { peer: l.peer? },
            "crash" => Ev::Crash { killed: false },
            "drop" => Ev::Drop {
                id: l.id?,
                to: *l.to?.first()?,
                msg: l.msg?,
            },
            "stepdown" => Ev::StepDown {
                ballot: l.ballot?,
                leading: l.leading.unwrap_or(false),
            },
            "timeout" => Ev::Timeout { ballot: l.ballot? },
            _ => return None,
        };
        Some(Rec {
            t: l.t,
            node: l.node,
            ev,
        })
    }
}

/// Reads `"R.N"`.
fn ballot<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ballot>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    parse_ballot(&text)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("bad ballot '{text}'")))
}

pub fn parse_ballot(text: &str) -> Option<Ballot> {
    let (round, node) = text.split_once('.')?;
    Some(Ballot {
        round: round.parse().ok()?,
        node: node.parse().ok()?,
    })
}

/// Puts an inferred crash after the last record before each `start` that has no clean
/// `stop` (or recorded crash) before it: a `kill -9`, or a power cut, happened there.
pub fn mark_kills(recs: &mut Vec<Rec>) {
    let mut out = Vec::with_capacity(recs.len());
    for rec in recs.drain(..) {
        let unclean = matches!(rec.ev, Ev::Start { .. })
            && out
                .last()
                .is_some_and(|p: &Rec| !matches!(p.ev, Ev::Stop | Ev::Crash { .. }));
        if unclean {
            let last: &Rec = out.last().expect("checked above");
            let crash = Rec {
                t: last.t,
                node: last.node,
                ev: Ev::Crash { killed: true },
            };
            out.push(crash);
        }
        out.push(rec);
    }
    *recs = out;
}
