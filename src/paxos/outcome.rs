//! What the core tells its caller, as data: `Reply` answers a command or reports news about
//! one (a commit, a recovery), `Step` narrates a protocol step in verbose mode. Only the
//! shell turns them into text (`crate::render`), so a check on them never reads wording.

use super::*;
use crate::ledger::{Hash, LedgerError};

/// An answer to a command, or news a client waits for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reply {
    /// The transfer is durable in this node's queue.
    Queued(Transfer),
    /// The command broke a rule; nothing changed.
    Refused(Refusal),
    /// One of this node's own transfers is on the chain at `depth`.
    Committed {
        transfer: Transfer,
        depth: u64,
    },
    /// Only after lost records: an older transfer with the id of `queued` committed first.
    LostId {
        queued: Transfer,
        by: Transfer,
    },
    /// A peer's block did not fit the chain; nothing of it was applied.
    BadBlock {
        depth: u64,
        from: NodeId,
        error: LedgerError,
    },
    /// Lost state is recovered: the node promised `promised` and votes again above `floor`.
    Recovered {
        promised: Ballot,
        floor: u64,
    },
    /// The chain has passed the vote floor: transfers are taken again.
    CaughtUp {
        depth: u64,
    },
    /// Recovery waits for these peers, which are recovering themselves.
    Waiting {
        peers: Vec<NodeId>,
    },
    Balance {
        node: NodeId,
        balance: u64,
    },
    QueueEmpty,
    QueueEntry(Transfer),
    Status(Status),
    /// One line of `status` per link.
    Link {
        peer: NodeId,
        state: LinkState,
        /// How long ago the peer was last heard from; `None`: never.
        heard_ago: Option<u64>,
    },
    /// `state`: this node's view of the depth in play.
    State(StateView),
    /// A `severLink` or `restoreLink` that changed nothing; `by_peer`: the peer severed it.
    LinkUnchanged {
        peer: NodeId,
        severed: bool,
        by_peer: bool,
    },
    /// The peer told us it severed its link to us (`severed`), or talks to us again.
    SeveredBy {
        peer: NodeId,
        severed: bool,
    },
    /// A `severLink` or `restoreLink` took effect.
    LinkSet {
        peer: NodeId,
        severed: bool,
    },
    /// The start check found this node's disk older than what peer `from` has seen from it
    /// (sync numbers `seen` and `disk`): with `--recover`, it rebuilds from its peers.
    RolledBack {
        node: NodeId,
        from: NodeId,
        seen: u64,
        disk: u64,
    },
}

impl Reply {
    /// Whether this reply says that something went wrong (an `error:` line).
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            Reply::Refused(_) | Reply::LostId { .. } | Reply::BadBlock { .. }
        )
    }
}

/// Why a node must stop at once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Fatal {
    /// Peer `from` has seen sync `seen` from this node, whose disk holds only `disk`: it
    /// was restored from a copy or lost writes, and it was not started with `--recover`.
    RolledBack {
        node: NodeId,
        from: NodeId,
        seen: u64,
        disk: u64,
    },
}

/// Why a command was refused: one variant per rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Lost records may have held debits that commit up to the vote floor.
    Recovering,
    /// `node` is not one of `0..nodes`.
    UnknownNode {
        node: NodeId,
        nodes: usize,
    },
    /// A node spends from its own account only.
    NotOwnAccount {
        node: NodeId,
    },
    SameAccount,
    ZeroAmount,
    /// More than the balance less what is queued already.
    Overdraft {
        requested: u64,
        available: u64,
    },
    /// A link to itself, or to a node that does not exist.
    NoLink {
        from: NodeId,
        to: NodeId,
    },
}

/// A node's summary, as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Status {
    pub node: NodeId,
    pub depth: u64,
    pub head: Hash,
    /// Show the whole head hash, not its short form.
    pub full: bool,
    pub promised: Ballot,
    pub leader: Option<NodeId>,
    pub role: RoleName,
    pub queue: usize,
    pub transfers: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RoleName {
    Follower,
    Candidate,
    Leader,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkState {
    Up,
    Down,
    /// Severed at this end (`severLink`).
    SeveredHere,
    /// The peer said it severed its end.
    SeveredBy,
}

/// What `state` shows: the Paxos instance at `depth` (the one in play) as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StateView {
    pub node: NodeId,
    pub depth: u64,
    pub promised: Ballot,
    pub accepted: Option<(Ballot, Proposal)>,
    /// Known to be chosen, not yet applied.
    pub chosen: Option<Proposal>,
    pub role: RoleView,
    pub nodes: usize,
    pub quorum: usize,
}

/// A role at the depth in play, with who has answered a candidate or leader.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RoleView {
    Follower {
        leader: Option<NodeId>,
    },
    Candidate {
        ballot: Ballot,
        promised_by: Vec<NodeId>,
    },
    Leader {
        ballot: Ballot,
        /// `None`: nothing proposed at this depth yet.
        accepted_by: Option<Vec<NodeId>>,
    },
}

/// What an acceptor was asked when it refused a ballot below its promise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Asked {
    Promise,
    Accept,
    Heartbeat,
}

/// Why a candidate or leader stopped.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StepDown {
    /// A higher ballot was seen.
    HigherBallot(Ballot),
    /// A depth was decided with a value it had not planned.
    OutsidePlan { depth: u64 },
    /// Blocks past its chain were decided without it.
    BlocksWithout,
    /// Too few peers answered within a quorum period.
    NoMajority { heard: usize, nodes: usize, ms: u64 },
    /// Its state was rolled back (see `Reply::RolledBack`).
    RolledBack,
}

/// One step of the protocol, narrated in verbose mode (the `[paxos]` lines). `have` counts
/// votes including the node's own; `quorum` is the majority of `nodes`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Acceptor: after lost state it cannot say what it accepted at `depth`.
    NoPromiseAmnesic {
        ballot: Ballot,
        depth: u64,
    },
    /// Acceptor: phase 1b, reporting `carried` accepted values.
    Promised {
        ballot: Ballot,
        depth: u64,
        to: NodeId,
        carried: usize,
    },
    /// Acceptor: recovering lost state, so no vote.
    NoVoteRecovering {
        ballot: Ballot,
        depth: u64,
    },
    /// Acceptor: phase 2b.
    Voted {
        ballot: Ballot,
        depth: u64,
        from: NodeId,
        value: Proposal,
    },
    /// Acceptor: a ballot below its promise.
    Refused {
        ballot: Ballot,
        asked: Asked,
        to: NodeId,
        promised: Ballot,
    },
    /// Recovering node: asks its peers what they know.
    Probing,
    CatchingUp {
        peer: NodeId,
        from: u64,
    },
    SteppingDown(StepDown),
    Following {
        ballot: Ballot,
    },
    /// No leader: this node runs for leader after `delay` ms.
    ElectionIn {
        delay: u64,
    },
    /// The candidacy expired without a majority of promises.
    ElectionTimedOut {
        ballot: Ballot,
    },
    Forwarding {
        count: usize,
        leader: NodeId,
    },
    /// Candidate: phase 1a.
    Prepare {
        ballot: Ballot,
        depth: u64,
    },
    /// Candidate: a promise arrived.
    PromiseFrom {
        ballot: Ballot,
        from: NodeId,
        have: usize,
        nodes: usize,
        quorum: usize,
        carried: AcceptedList,
    },
    /// Candidate: a peer refused the ballot.
    RefusedBy {
        ballot: Ballot,
        from: NodeId,
        promised: Ballot,
    },
    /// Candidate: a promiser's chain is longer; it catches up before leading.
    Behind {
        ahead: NodeId,
        depth: u64,
    },
    /// New leader: a promise reported a value accepted at `depth`, so it proposes that one.
    Adopt {
        ballot: Ballot,
        depth: u64,
        from: NodeId,
        accepted: Ballot,
    },
    Elected {
        ballot: Ballot,
        depth: u64,
        have: usize,
        nodes: usize,
        quorum: usize,
    },
    /// Classroom: the accept phase starts in `hold` ms.
    AcceptIn {
        ballot: Ballot,
        hold: u64,
    },
    /// Leader: phase 2a.
    Propose {
        ballot: Ballot,
        depth: u64,
        value: Proposal,
    },
    /// Leader: a vote arrived.
    AcceptedFrom {
        ballot: Ballot,
        depth: u64,
        from: NodeId,
        have: usize,
        nodes: usize,
        quorum: usize,
    },
    /// Classroom: chosen; the decide goes out in `hold` ms.
    ChosenHeld {
        ballot: Ballot,
        depth: u64,
        hold: u64,
    },
    /// Leader: chosen, and the decision goes out.
    Decide {
        ballot: Ballot,
        depth: u64,
        value: Proposal,
        /// Whether `ChosenHeld` already said it was chosen.
        held: bool,
    },
    /// Classroom: the leader lets its ballot go.
    RoundOver {
        ballot: Ballot,
        depth: u64,
    },
    /// Learner: a decision for a value it accepted.
    Learned {
        ballot: Ballot,
        depth: u64,
        value: Proposal,
        from: NodeId,
    },
    CommittedBlock {
        depth: u64,
        head: Hash,
        transfers: usize,
    },
    /// Blocks that do not follow its chain (a reply to a request from before `--recover`).
    IgnoredBlocks {
        depth: u64,
        from: NodeId,
    },
    /// A rolled-back disk noticed while already recovering lost state.
    RolledBackRecovering {
        from: NodeId,
        seen: u64,
        disk: u64,
    },
    /// The start check is done: `answered` peers have seen nothing newer than its disk.
    StartChecked {
        answered: usize,
    },
}
