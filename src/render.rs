//! The one place where the core's outcomes become text: `reply` and `narration` write every
//! line a node prints for the protocol, and `parse` reads back the lines that tools
//! (`benmo bench`, the test harness) take from a node's stdout. Each format is written
//! here once, its parser beside it, and the tests below pin the wording.

use crate::ledger::{NodeId, Transfer, TxId};
use crate::paxos::{
    AcceptedList, Asked, Ballot, Fatal, LinkState, Proposal, Refusal, Reply, RoleName, RoleView,
    StateView, Status, Step, StepDown,
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
            format!("recovered: promised {promised}, promising again above depth {floor}")
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
            format!("link {peer} {} {heard}", link_state(*peer, *state))
        }
        Reply::State(v) => state(v),
        Reply::LinkUnchanged {
            peer,
            severed,
            by_peer,
        } => {
            let was = match severed {
                true => "already severed",
                false => "not severed",
            };
            let by = match by_peer {
                true => format!("; node {peer} severed it at its end"),
                false => String::new(),
            };
            format!("link {peer} was {was} here{by}")
        }
        Reply::SeveredBy {
            peer,
            severed: true,
        } => format!("link {peer} severed by node {peer}: it ignores this node"),
        Reply::SeveredBy {
            peer,
            severed: false,
        } => format!("link {peer} works again: node {peer} restored it or restarted"),
        Reply::RolledBack {
            node,
            from,
            seen,
            disk,
        } => format!(
            "note: node {node}'s state is older than what node {from} has seen from it (sync {seen}, disk holds {disk}): recovering it from its peers"
        ),
        Reply::LinkSet { peer, severed } => {
            format!(
                "link {peer} {}",
                if *severed { "severed" } else { "restored" }
            )
        }
    }
}

/// Why a node stops, without the `error: ` prefix.
pub fn fatal(why: &Fatal) -> String {
    match why {
        Fatal::RolledBack {
            node,
            from,
            seen,
            disk,
        } => format!(
            "node {node}'s state is older than what node {from} has seen from it (sync {seen}, disk holds {disk}): it was restored from a copy or lost writes; start with --recover to rebuild it from its peers"
        ),
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

/// `status`: in 80 columns, the chain and queue, then the role and ballot on a line of
/// their own; `full` puts them on one line with the whole head hash.
fn status(s: &Status) -> String {
    let leader = s.leader.map_or("none".to_string(), |l| l.to_string());
    let role = match s.role {
        RoleName::Follower => "follower",
        RoleName::Candidate => "candidate",
        RoleName::Leader => "leader",
    };
    let (id, depth, promised, queue, transfers) =
        (s.node, s.depth, s.promised, s.queue, s.transfers);
    match s.full {
        true => format!(
            "node {id} depth {depth} head {} ballot {promised} leader {leader} role {role} \
             queue {queue} transfers {transfers}",
            s.head
        ),
        false => format!(
            "node {id} depth {depth} head {} leader {leader} queue {queue} transfers {transfers}\n\
             role {role} ballot {promised}",
            s.head.short()
        ),
    }
}

/// `state`: a few lines of at most 80 columns.
fn state(v: &StateView) -> String {
    let clip = |value: &Proposal| describe(value, 40);
    let promised = match v.promised == Ballot::default() {
        true => "nothing yet".to_string(),
        false => format!("ballot {}", v.promised),
    };
    let accepted = match &v.accepted {
        Some((b, value)) => format!("  accepted ballot {b} value {}", clip(value)),
        None => "  accepted nothing at this depth".to_string(),
    };
    let chosen = match &v.chosen {
        Some(value) => format!("  chosen: {} (known, not yet applied)", clip(value)),
        None => "  chosen: not known to this node yet".to_string(),
    };
    let of = |who: &[NodeId]| {
        let ids: Vec<String> = who.iter().map(|p| p.to_string()).collect();
        let (have, n, q) = (who.len(), v.nodes, v.quorum);
        format!("{{{}}}, {have} of {n} (majority {q})", ids.join(","))
    };
    let role = match &v.role {
        RoleView::Follower { leader: Some(l) } => format!("follower of leader {l}"),
        RoleView::Follower { leader: None } => "follower; no leader known".to_string(),
        RoleView::Candidate {
            ballot,
            promised_by,
        } => format!(
            "candidate, ballot {ballot}: promises from {}",
            of(promised_by)
        ),
        RoleView::Leader {
            ballot,
            accepted_by: Some(who),
        } => format!("leader, ballot {ballot}: accepted by {}", of(who)),
        RoleView::Leader {
            ballot,
            accepted_by: None,
        } => format!("leader, ballot {ballot}: nothing proposed here yet"),
    };
    [
        format!(
            "state of node {} at depth {} (chain depth {}):",
            v.node,
            v.depth,
            v.depth - 1
        ),
        format!("  promised {promised}"),
        accepted,
        chosen,
        format!("  role {role}"),
    ]
    .join("\n")
}

fn link_state(peer: NodeId, state: LinkState) -> String {
    match state {
        LinkState::Up => "up".to_string(),
        LinkState::Down => "down".to_string(),
        LinkState::SeveredHere => "severed here".to_string(),
        LinkState::SeveredBy => format!("severed by node {peer}"),
    }
}

/// The width that a node's lines fit in, the timestamp and prefix included.
pub const WIDTH: usize = 80;

/// A `[paxos]` line of node `node` after the timestamp `clock`. It fits `WIDTH` columns
/// (values elided, shorter wording) unless `full`, which says everything in full.
pub fn narration(clock: &str, node: NodeId, s: &Step, full: bool) -> String {
    let prefix = format!("{clock} [paxos] node {node}: ");
    let room = match full {
        true => usize::MAX,
        false => WIDTH.saturating_sub(prefix.chars().count()),
    };
    format!("{prefix}{}", step(s, room))
}

/// The text of one protocol step within `room` columns: the first of its wordings (longest
/// first) that fits, values elided to fit, and cut short only as a last resort.
pub fn step(s: &Step, room: usize) -> String {
    let words = wordings(s);
    let value = value_of(s);
    let fitted = words.iter().find_map(|w| {
        let line = with_value(w, value, room);
        (line.chars().count() <= room).then_some(line)
    });
    fitted.unwrap_or_else(|| cut(&with_value(&words[words.len() - 1], value, room), room))
}

/// The value a step shows, if any: it stands for `{V}` in the wordings.
fn value_of(s: &Step) -> Option<&Proposal> {
    match s {
        Step::Voted { value, .. }
        | Step::Propose { value, .. }
        | Step::Decide { value, .. }
        | Step::Learned { value, .. } => Some(value),
        _ => None,
    }
}

/// `wording` with `{V}` replaced by the value, elided to what `room` leaves.
fn with_value(wording: &str, value: Option<&Proposal>, room: usize) -> String {
    match value {
        Some(v) => {
            let rest = wording.chars().count() - "{V}".len();
            let room = match room {
                usize::MAX => usize::MAX, // in full
                _ => room.saturating_sub(rest),
            };
            wording.replace("{V}", &describe(v, room))
        }
        None => wording.to_string(),
    }
}

/// At most `room` characters, ending in `...` when cut.
fn cut(line: &str, room: usize) -> String {
    if line.chars().count() <= room {
        return line.to_string();
    }
    let kept: String = line.chars().take(room.saturating_sub(3)).collect();
    format!("{kept}...")
}

/// "promises 2 of 5 (majority 3)", or "... majority reached" once it is.
fn count(have: usize, nodes: usize, quorum: usize) -> String {
    match have >= quorum {
        true => format!("{have} of {nodes}, majority reached"),
        false => format!("{have} of {nodes} (majority {quorum})"),
    }
}

/// The same count, shorter.
fn count_short(have: usize, nodes: usize, quorum: usize) -> String {
    match have >= quorum {
        true => format!("{have} of {nodes}, a majority"),
        false => format!("{have} of {nodes} (majority {quorum})"),
    }
}

/// A step's wordings, the full one first, then shorter ones for 80 columns.
fn wordings(s: &Step) -> Vec<String> {
    let at = |ballot, depth| format!("ballot {ballot} depth {depth}");
    match s {
        Step::NoPromiseAmnesic { ballot, depth } => {
            let at = at(ballot, depth);
            vec![
                format!("{at}: not promising: this node lost state and cannot say what it accepted there"),
                format!("{at}: no promise: it lost its votes"),
            ]
        }
        Step::Promised { ballot, depth, to, carried } => {
            let at = at(ballot, depth);
            let had = match carried {
                0 => "none".to_string(),
                1 => "1 value".to_string(),
                n => format!("{n} values"),
            };
            vec![
                format!("{at}: promise to node {to}, it had accepted {had} there; no lower ballot counts here from now on"),
                format!("{at}: promise to node {to}, had {had}"),
                format!("{at}: promise to node {to}"),
            ]
        }
        Step::NoVoteRecovering { ballot, depth } => {
            vec![format!("{}: no vote: recovering lost state", at(ballot, depth))]
        }
        Step::Voted { ballot, depth, from, .. } => {
            let at = at(ballot, depth);
            vec![
                format!("{at}: accept {{V}} from node {from}: accepted"),
                format!("{at}: accepted {{V}} from node {from}"),
            ]
        }
        Step::Refused { ballot, asked, to, promised } => {
            let what = match asked {
                Asked::Promise => "promise",
                Asked::Accept => "accept",
                Asked::Heartbeat => "heartbeat",
            };
            vec![
                format!("ballot {ballot}: {what} refused to node {to}: already promised {promised}"),
                format!("ballot {ballot}: refuses {what} to node {to}: promised {promised}"),
                format!("ballot {ballot}: {what} refused, promised {promised}"),
            ]
        }
        Step::Probing => vec!["recovering lost state: asking peers what they know".to_string()],
        Step::CatchingUp { peer, from } => {
            vec![format!("behind node {peer}: asking for blocks from depth {from}")]
        }
        Step::SteppingDown(why) => step_down(why)
            .into_iter()
            .map(|why| format!("stepping down: {why}"))
            .collect(),
        Step::Following { ballot } => {
            vec![format!("following leader {} (ballot {ballot})", ballot.node)]
        }
        Step::ElectionIn { delay } => vec![
            format!("no leader; running for leader in {delay} ms (random delay)"),
            format!("no leader; runs for leader in {delay} ms (random delay)"),
            format!("no leader; runs for leader in {delay} ms"),
        ],
        Step::ElectionTimedOut { ballot } => vec![
            format!("ballot {ballot}: election timed out without a majority of promises; retrying after a random delay"),
            format!("ballot {ballot}: too few promises in time; will retry"),
            format!("ballot {ballot}: timed out; will retry"),
        ],
        Step::Forwarding { count, leader } => {
            vec![format!("forward {count} transfers to leader {leader}")]
        }
        Step::Prepare { ballot, depth } => {
            let at = at(ballot, depth);
            vec![
                format!("{at}: running for leader: prepare (promise me depth {depth} on, ballots below {ballot} no longer count)"),
                format!("{at}: running for leader: prepare"),
            ]
        }
        Step::PromiseFrom { ballot, from, have, nodes, quorum, carried } => {
            let (long, short) = (count(*have, *nodes, *quorum), count_short(*have, *nodes, *quorum));
            let had = match carried.len() {
                0 => String::new(),
                n => format!(", had {n} accepted"),
            };
            vec![
                format!("ballot {ballot}: promise from node {from}, promises {long} ({})", describe_accepted(carried)),
                format!("ballot {ballot}: promises {long}: node {from}{had}"),
                format!("ballot {ballot}: promises {short}: node {from}{had}"),
                format!("ballot {ballot}: promises {short}: node {from}"),
            ]
        }
        Step::RefusedBy { ballot, from, promised } => vec![
            format!("ballot {ballot}: refused by node {from}, which already promised {promised}; this ballot cannot win"),
            format!("ballot {ballot}: refused by node {from}, which promised {promised}"),
            format!("ballot {ballot} refused by node {from}: it promised {promised}"),
        ],
        Step::Behind { ahead, depth } => vec![
            format!("node {ahead} is ahead (depth {depth}); catching up before leading"),
            format!("node {ahead} is at depth {depth}: catching up before leading"),
            format!("node {ahead} is ahead: catching up first"),
        ],
        Step::Adopt { ballot, depth, from, accepted } => {
            let at = at(ballot, depth);
            vec![
                format!("{at}: node {from} had accepted ballot {accepted}'s value at depth {depth}; the new leader must propose that value, not its own"),
                format!("{at}: node {from} had {accepted}'s value; must re-propose it"),
                format!("{at}: must re-propose node {from}'s value"),
                format!("{at}: re-proposes node {from}'s value"),
            ]
        }
        Step::Elected { ballot, depth, have, nodes, quorum } => {
            let at = at(ballot, depth);
            vec![
                format!("{at}: elected leader with {have} of {nodes} promises (majority {quorum})"),
                format!("{at}: elected leader, {have} of {nodes} promised"),
                format!("{at}: elected leader"),
            ]
        }
        Step::AcceptIn { ballot, hold } => vec![
            format!("ballot {ballot}: accept phase in {hold} ms (phase delay)"),
            format!("ballot {ballot}: accept phase in {hold} ms"),
        ],
        Step::Propose { ballot, depth, .. } => {
            vec![format!("{}: propose {{V}}: accept", at(ballot, depth))]
        }
        Step::AcceptedFrom { ballot, depth, from, have, nodes, quorum } => {
            let at = at(ballot, depth);
            let (long, short) = (count(*have, *nodes, *quorum), count_short(*have, *nodes, *quorum));
            vec![
                format!("{at}: accepted by node {from}, {long}"),
                format!("{at}: accepted {long}"),
                format!("{at}: accepted {short}"),
            ]
        }
        Step::ChosenHeld { ballot, depth, hold } => {
            let at = at(ballot, depth);
            vec![
                format!("{at}: chosen by a majority; decide in {hold} ms (phase delay)"),
                format!("{at}: chosen; decide in {hold} ms (phase delay)"),
                format!("{at}: chosen; decide in {hold} ms"),
            ]
        }
        Step::Decide { ballot, depth, held, .. } => {
            let at = at(ballot, depth);
            match held {
                // `ChosenHeld` said it was chosen: say it once a round.
                true => vec![format!("{at}: decide {{V}}")],
                false => vec![
                    format!("{at}: chosen by a majority ({{V}}): decide"),
                    format!("{at}: chosen {{V}}: decide"),
                ],
            }
        }
        Step::RoundOver { ballot, depth } => {
            let at = at(ballot, depth);
            vec![
                format!("{at}: round over; the next depth needs a new round, from prepare"),
                format!("{at}: round over; next from prepare"),
                format!("{at}: round over"),
            ]
        }
        Step::Learned { ballot, depth, from, .. } => {
            let at = at(ballot, depth);
            vec![
                format!("{at}: decided {{V}}: learned from node {from}"),
                format!("{at}: decided {{V}} (from node {from})"),
            ]
        }
        Step::IgnoredBlocks { depth, from } => vec![format!(
            "ignored blocks from depth {depth} from node {from}"
        )],
        Step::RolledBackRecovering { from, seen, disk } => vec![
            format!("its state is older than what node {from} has seen from it (sync {seen}, disk holds {disk}); already recovering lost state"),
            format!("disk older than node {from} saw ({disk} < {seen}); recovering"),
        ],
        Step::StartChecked { answered } => vec![
            format!("start check: {answered} peers have seen nothing newer than its disk; voting"),
            format!("start check: {answered} peers saw nothing newer; voting"),
        ],
        Step::CommittedBlock { depth, head, transfers } => {
            let n = match transfers {
                1 => "1 transfer".to_string(),
                n => format!("{n} transfers"),
            };
            vec![
                format!("committed block {depth} head {} ({n})", head.short()),
                format!("committed block {depth} ({n})"),
            ]
        }
    }
}

/// Why a leader stepped down, the full wording first.
fn step_down(why: &StepDown) -> Vec<String> {
    match why {
        StepDown::HigherBallot(b) => vec![format!("ballot {b} is higher")],
        StepDown::OutsidePlan { depth } => vec![
            format!("depth {depth} was decided outside its plan"),
            format!("depth {depth} decided outside its plan"),
        ],
        StepDown::BlocksWithout => vec![
            "blocks past its depth were decided without it".to_string(),
            "blocks were decided without it".to_string(),
        ],
        StepDown::RolledBack => vec!["its state was rolled back".to_string()],
        StepDown::NoMajority { heard, nodes, ms } => vec![
            format!("heard from {heard} of {nodes} nodes in {ms} ms, not a majority"),
            format!("heard {heard} of {nodes} in {ms} ms, no majority"),
            format!("heard {heard} of {nodes}, no majority"),
        ],
    }
}

/// A value as a class reads it, in at most `room` characters where it can: its transfer
/// ids (as many as fit, then how many more), or `empty`.
fn describe(value: &Proposal, room: usize) -> String {
    const SHOWN: usize = 8;
    let ids: Vec<String> = value.transfers.iter().map(|t| t.id.to_string()).collect();
    if ids.is_empty() {
        return "empty".to_string();
    }
    let mut shown = ids.len().min(SHOWN);
    loop {
        let text = match ids.len() - shown {
            0 => format!("[{}]", ids[..shown].join(" ")),
            more if room == usize::MAX => format!("[{} +{more} more]", ids[..shown].join(" ")),
            more => format!("[{} +{more}]", ids[..shown].join(" ")),
        };
        if text.chars().count() <= room || shown == 1 {
            return text;
        }
        shown -= 1;
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
                .map(|(d, b, v)| format!("depth {d} ballot {b} {}", describe(v, usize::MAX)))
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

/// The first line of `status` as read back: every field here is on it in both forms (the
/// head is whatever form, short or full, was printed).
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
