//! The one place where the core's outcomes become text: `reply` and `narration` write every
//! line a node prints for the protocol, and `parse` reads back the lines that tools
//! (`benmo bench`, the test harness) take from a node's stdout. Each format is written
//! here once, its parser beside it, and the tests below pin the wording.

use crate::ledger::{NodeId, Transfer, TxId};
use crate::paxos::{
    AcceptedList, Asked, LinkState, Proposal, Refusal, Reply, RoleName, Status, Step, StepDown,
};

/// The text of one reply, as a client reads it.
pub fn reply(r: &Reply) -> String {
    match r {
        Reply::Queued(t) => format!("queued {t}"),
        Reply::Refused(why) => format!("error: {}", refusal(why)),
        Reply::Committed { transfer, depth } => format!("committed {transfer} depth {depth}"),
        Reply::LostId { queued, by } => {
            format!("error: queued transfer {queued} lost its id to {by}; queue it again")
        }
        Reply::BadBlock { depth, from, error } => {
            format!("error: rejected block {depth} from node {from}: {error}")
        }
        Reply::Recovered { promised, floor } => {
            format!("recovered: promised {promised}, voting again above depth {floor}")
        }
        Reply::CaughtUp { depth } => format!("caught up: transfers resume at depth {depth}"),
        Reply::Waiting { peers } => {
            let peers: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
            format!(
                "waiting: node {} still recovering; this node recovers once a majority has caught up",
                peers.join(", node ")
            )
        }
        Reply::Balance { node, balance } => format!("balance {node} {balance}"),
        Reply::QueueEmpty => "queue empty".to_string(),
        Reply::QueueEntry(t) => format!("queue {t}"),
        Reply::Status(s) => status(s),
        Reply::Link {
            peer,
            state,
            heard_ago,
        } => {
            let heard = match heard_ago {
                None => "never heard from".to_string(),
                Some(ms) => format!("heard {} ago", human_ms(*ms)),
            };
            format!("link {peer} {} {heard}", link_state(*state))
        }
        Reply::LinkSet { peer, severed } => {
            format!(
                "link {peer} {}",
                if *severed { "severed" } else { "restored" }
            )
        }
    }
}

/// Why a command was refused, without the `error: ` prefix.
pub fn refusal(why: &Refusal) -> String {
    match why {
        Refusal::Recovering => {
            "recovering lost state: transfers resume once this node has caught up".to_string()
        }
        Refusal::UnknownNode { node, nodes } => {
            format!(
                "unknown node {node} (nodes are 0..{})",
                nodes.saturating_sub(1)
            )
        }
        Refusal::NotOwnAccount { node } => {
            format!("node {node} can only transfer from its own account {node}")
        }
        Refusal::SameAccount => "debit and credit are the same account".to_string(),
        Refusal::ZeroAmount => "amount must be a positive integer".to_string(),
        Refusal::Overdraft {
            requested,
            available,
        } => format!("insufficient funds: {requested} requested, {available} available"),
        Refusal::NoLink { from, to } => format!("no link from node {from} to node {to}"),
    }
}

fn status(s: &Status) -> String {
    let head = match s.full {
        true => s.head.to_string(),
        false => s.head.short(),
    };
    let leader = s.leader.map_or("none".to_string(), |l| l.to_string());
    let role = match s.role {
        RoleName::Follower => "follower",
        RoleName::Candidate => "candidate",
        RoleName::Leader => "leader",
    };
    format!(
        "node {} depth {} head {head} ballot {} leader {leader} role {role} queue {} transfers {}",
        s.node, s.depth, s.promised, s.queue, s.transfers
    )
}

fn link_state(state: LinkState) -> &'static str {
    match state {
        LinkState::Up => "up",
        LinkState::Down => "down",
        LinkState::Severed => "severed",
    }
}

/// A `[paxos]` line of node `node`, without the timestamp.
pub fn narration(node: NodeId, s: &Step) -> String {
    format!("[paxos] node {node}: {}", step(s))
}

/// The text of one protocol step.
pub fn step(s: &Step) -> String {
    match s {
        Step::NoPromiseAmnesic { ballot, depth } => format!("ballot {ballot} depth {depth}: not promising: this node lost state and cannot say what it accepted there"),
        Step::Promised { ballot, depth, to, carried } => {
            let had = match carried {
                0 => "nothing accepted there".to_string(),
                n => format!("with the {n} values it accepted there"),
            };
            format!("ballot {ballot} depth {depth}: promise to node {to}, {had}; no lower ballot counts here from now on")
        }
        Step::NoVoteRecovering { ballot, depth } => {
            format!("ballot {ballot} depth {depth}: not voting: recovering lost state")
        }
        Step::Voted { ballot, depth, from, value } => format!(
            "ballot {ballot} depth {depth}: accept {} from node {from}: accepted",
            describe(value)
        ),
        Step::Refused { ballot, asked, to, promised } => {
            let what = match asked {
                Asked::Promise => "promise",
                Asked::Accept => "accept",
                Asked::Heartbeat => "heartbeat",
            };
            format!("ballot {ballot}: {what} refused to node {to}: already promised {promised}")
        }
        Step::Probing => "recovering lost state: asking peers what they know".to_string(),
        Step::CatchingUp { peer, from } => {
            format!("behind node {peer}: asking for blocks from depth {from}")
        }
        Step::SteppingDown(why) => format!("stepping down: {}", step_down(why)),
        Step::Following { ballot } => {
            format!("following leader {} (ballot {ballot})", ballot.node)
        }
        Step::ElectionIn { delay } => {
            format!("no leader; running for leader in {delay} ms (random delay)")
        }
        Step::ElectionTimedOut { .. } => "election timed out".to_string(),
        Step::Forwarding { count, leader } => {
            format!("forward {count} transfers to leader {leader}")
        }
        Step::Prepare { ballot, depth } => format!("ballot {ballot} depth {depth}: running for leader: prepare (promise me depth {depth} on, ballots below {ballot} no longer count)"),
        Step::PromiseFrom { ballot, from, have, quorum, carried, .. } => format!(
            "ballot {ballot}: promise {have}/{quorum} from node {from} ({})",
            describe_accepted(carried)
        ),
        Step::RefusedBy { ballot, from, promised } => format!("ballot {ballot}: refused by node {from}, which already promised {promised}; this ballot cannot win"),
        Step::Behind { ahead, depth } => {
            format!("node {ahead} is ahead (depth {depth}); catching up before leading")
        }
        Step::Adopt { ballot, depth, from, accepted } => format!("ballot {ballot} depth {depth}: node {from} had accepted ballot {accepted}'s value at depth {depth}; the new leader must propose that value, not its own"),
        Step::Elected { ballot, depth, have, quorum, .. } => {
            format!("ballot {ballot} depth {depth}: elected leader with {have}/{quorum} promises")
        }
        Step::AcceptIn { ballot, hold } => {
            format!("ballot {ballot}: accept phase in {hold} ms (phase delay)")
        }
        Step::Propose { ballot, depth, value } => {
            format!("ballot {ballot} depth {depth}: propose {}: accept", describe(value))
        }
        Step::AcceptedFrom { ballot, depth, from, have, quorum, .. } => {
            format!("ballot {ballot} depth {depth}: accepted {have}/{quorum} from node {from}")
        }
        Step::ChosenHeld { ballot, depth, hold } => format!("ballot {ballot} depth {depth}: chosen by a majority; decide in {hold} ms (phase delay)"),
        Step::Decide { ballot, depth, value, .. } => format!(
            "ballot {ballot} depth {depth}: chosen by a majority ({}): decide",
            describe(value)
        ),
        Step::RoundOver { ballot, depth } => format!("ballot {ballot} depth {depth}: round over; the next depth needs a new round, from prepare"),
        Step::Learned { ballot, depth, value, from } => format!(
            "ballot {ballot} depth {depth}: decided {}: learned from node {from}",
            describe(value)
        ),
        Step::CommittedBlock { depth, head, transfers } => format!(
            "committed block {depth} head {} ({transfers} transfers)",
            head.short()
        ),
    }
}

fn step_down(why: &StepDown) -> String {
    match why {
        StepDown::HigherBallot(b) => format!("ballot {b} is higher"),
        StepDown::OutsidePlan { depth } => format!("depth {depth} was decided outside its plan"),
        StepDown::BlocksWithout => "blocks past its depth were decided without it".to_string(),
        StepDown::NoMajority { heard, nodes, ms } => {
            format!("heard from {heard} of {nodes} nodes in {ms} ms, not a majority")
        }
    }
}

/// A value as a class reads it: its transfer ids, or `empty`.
fn describe(value: &Proposal) -> String {
    const SHOWN: usize = 8;
    if value.transfers.is_empty() {
        return "empty".to_string();
    }
    let ids: Vec<String> = value
        .transfers
        .iter()
        .take(SHOWN)
        .map(|t| t.id.to_string())
        .collect();
    match value.transfers.len().saturating_sub(SHOWN) {
        0 => format!("[{}]", ids.join(" ")),
        more => format!("[{} +{more} more]", ids.join(" ")),
    }
}

/// What a promise carried: the values its sender had accepted.
fn describe_accepted(accepted: &AcceptedList) -> String {
    match accepted.as_slice() {
        [] => "it had accepted nothing there".to_string(),
        list => {
            let each: Vec<String> = list
                .iter()
                .take(4)
                .map(|(d, b, v)| format!("depth {d} ballot {b} {}", describe(v)))
                .collect();
            format!("it had accepted {}", each.join(", "))
        }
    }
}

/// A duration for a person: `40 ms`, `3.2 s`, `5 min`.
fn human_ms(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{}.{} s", ms / 1000, ms % 1000 / 100),
        _ => format!("{} min", ms / 60_000),
    }
}

/// A line of a node's stdout that a tool acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Heard {
    Queued(Transfer),
    Committed {
        transfer: Transfer,
        depth: u64,
    },
    /// Any `error:` line, the core's or the shell's, with its text after the prefix.
    Error(String),
    Status(StatusLine),
}

/// A `status` line as read back: the head is whatever form (short or full) was printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusLine {
    pub depth: u64,
    pub head: String,
    pub leader: Option<usize>,
    pub queue: usize,
    pub transfers: u64,
}

/// Reads back a line that `reply` (or the shell's `error:`) wrote; `None` for other lines.
pub fn parse(line: &str) -> Option<Heard> {
    if let Some(rest) = line.strip_prefix("queued ") {
        return parse_transfer(rest).map(Heard::Queued);
    }
    if let Some(rest) = line.strip_prefix("committed ") {
        let (t, depth) = rest.rsplit_once(" depth ")?;
        return Some(Heard::Committed {
            transfer: parse_transfer(t)?,
            depth: depth.parse().ok()?,
        });
    }
    if let Some(rest) = line.strip_prefix("error:") {
        return Some(Heard::Error(rest.trim_start().to_string()));
    }
    parse_status(line).map(Heard::Status)
}

/// `TXID DEBIT CREDIT AMOUNT`, as `Transfer`'s `Display` writes it.
fn parse_transfer(text: &str) -> Option<Transfer> {
    let w: Vec<&str> = text.split_whitespace().collect();
    let [id, debit, credit, amount] = w.as_slice() else {
        return None;
    };
    let (node, seq) = id.split_once('.')?;
    let id = TxId {
        node: node.parse().ok()?,
        seq: seq.parse().ok()?,
    };
    let t = Transfer {
        id,
        credit: credit.parse().ok()?,
        amount: amount.parse().ok()?,
    };
    (debit.parse::<NodeId>().ok()? == t.debit()).then_some(t)
}

impl StatusLine {
    /// Reads a `status` line; `None` for any other line.
    pub fn parse(line: &str) -> Option<StatusLine> {
        parse_status(line)
    }
}

fn parse_status(line: &str) -> Option<StatusLine> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let field = |name: &str| {
        w.iter()
            .position(|x| *x == name)
            .and_then(|i| w.get(i + 1))
            .copied()
    };
    if w.first() != Some(&"node") {
        return None;
    }
    Some(StatusLine {
        depth: field("depth")?.parse().ok()?,
        head: field("head")?.to_string(),
        leader: field("leader")?.parse().ok(),
        queue: field("queue")?.parse().ok()?,
        transfers: field("transfers")?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests;
