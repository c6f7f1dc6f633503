//! The whole protocol, as a pure state machine: `Core::handle` takes an event (a command,
//! a message, a link change, the passing of time) and pushes actions (send, persist, reply, narrate).
//! There are no sockets, threads, clocks, randomness or files in here; the shell in
//! `node.rs` and the simulator in `sim.rs` supply all of those.
//!
//! Each depth of the chain is one instance of Paxos. The value chosen for a depth is a batch
//! of transfers; every node seals the decided batch onto its chain the same way (see
//! `Ledger::seal`), so a value never has to name the block below it.
//!
//! Multi-Paxos: a node that wins phase 1 (prepare/promise) with ballot b holds it for every
//! depth above its chain and then runs only phase 2 (accept/accepted), several depths at
//! once, until a higher ballot appears. Other nodes forward their queued transfers to it.
//! When it falls silent they run for leader themselves after a random delay, as in the seed.

use crate::ledger::{Block, Ledger, NodeId, Transfer, TxId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

mod acceptor;
mod amnesia;
mod client;
mod command;
mod follower;
mod leader;
mod leadership;
mod learner;
mod outcome;
mod roles;
mod startcheck;

use amnesia::Amnesia;
pub use amnesia::ProbeReply;
pub use command::{check_transfer, Command, Judge, Request};
use leadership::{Candidacy, Leadership};
pub use outcome::{
    Asked, Fatal, LinkState, Refusal, Reply, RoleName, RoleView, StateView, Status, Step, StepDown,
};
use startcheck::StartCheck;

/// A proposal number: (round, node). Ordered by round first, so any node can outbid any other.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Ballot {
    pub round: u64,
    pub node: NodeId,
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.round, self.node)
    }
}

/// The value Paxos chooses for one depth: a batch of transfers offered by `proposer`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Proposal {
    pub proposer: NodeId,
    pub transfers: Vec<Transfer>,
}

/// What nodes say to each other.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Message {
    /// "Here I am": sent when a link comes up, so the peer learns our depth.
    Hello,
    /// Phase 1a: promise me every depth from `depth` up.
    Prepare { ballot: Ballot, depth: u64 },
    /// Phase 1b, with every value this acceptor accepted above its chain.
    Promise {
        ballot: Ballot,
        accepted: AcceptedList,
    },
    /// A refusal: the acceptor promised `promised`, which is higher than `ballot`.
    Reject { ballot: Ballot, promised: Ballot },
    /// Phase 2a.
    Accept {
        ballot: Ballot,
        depth: u64,
        value: Proposal,
    },
    /// Phase 2b.
    Accepted { ballot: Ballot, depth: u64 },
    /// The value accepted at (ballot, depth) is chosen. It names the value, not re-sends it.
    Decide { ballot: Ballot, depth: u64 },
    /// The leader is alive.
    Heartbeat { ballot: Ballot },
    /// An origin hands its own queued transfers to the leader.
    Forward { transfers: Vec<Transfer> },
    /// Send me committed blocks from depth `from` on.
    CatchUp { from: u64 },
    /// Committed blocks, in order.
    Blocks { blocks: Vec<Block> },
    /// From a node recovering lost records: what do you know? (see `Amnesia`) `nonce` ties
    /// the answers to this probe of this incarnation. A recovered node below its vote floor
    /// sends its floor with nonce 0 (no answer wanted), asking a leader to carry the chain past it.
    Probe { floor: u64, nonce: u64 },
    /// The answer to a probe.
    ProbeReply(ProbeReply),
    /// From a starting node: the highest sync sequence you have seen from me? (see `StartCheck`)
    StartCheck { nonce: u64 },
    /// The answer: `seen` is the highest sequence stamped on the sender's messages, the
    /// start check's own (`yours`) included.
    StartSeen { nonce: u64, seen: u64, yours: u64 },
    /// "I have severed our link (`severLink`): I ignore you until I restore it." Only shown
    /// in `status`; the sender's silence is what cuts the link.
    Severed,
}

/// A message plus the sender's chain depth, which lets any peer notice that it is behind.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Envelope {
    pub depth: u64,
    /// Pairs a sending with its receipts in the nodes' traces. The core leaves it 0; the
    /// shell stamps each envelope it sends (see `trace::TraceWriter::next_id`).
    #[serde(default)]
    pub id: u64,
    /// The sender's durable sync sequence when it sent this (see `StartCheck`). The core
    /// leaves it 0; the shell stamps the sequence of its last completed sync.
    #[serde(default)]
    pub seq: u64,
    pub msg: Message,
}

impl Envelope {
    /// The first node id named in this envelope outside `0..nodes`, if any. The core indexes
    /// its per-node state by these ids, so the transport refuses such an envelope.
    pub fn unknown_node(&self, nodes: usize) -> Option<NodeId> {
        let mut ids = Vec::new();
        let add = |ids: &mut Vec<NodeId>, ts: &[Transfer]| {
            ids.extend(ts.iter().flat_map(|t| [t.debit(), t.credit]))
        };
        match &self.msg {
            Message::Hello
            | Message::CatchUp { .. }
            | Message::Probe { .. }
            | Message::StartCheck { .. }
            | Message::StartSeen { .. }
            | Message::Severed => {}
            Message::Prepare { ballot, .. }
            | Message::Accepted { ballot, .. }
            | Message::Decide { ballot, .. }
            | Message::Heartbeat { ballot }
            | Message::ProbeReply(ProbeReply {
                promised: ballot, ..
            }) => ids.push(ballot.node),
            Message::Reject { ballot, promised } => ids.extend([ballot.node, promised.node]),
            Message::Promise { ballot, accepted } => {
                ids.push(ballot.node);
                for (_, b, v) in accepted {
                    ids.extend([b.node, v.proposer]);
                    add(&mut ids, &v.transfers);
                }
            }
            Message::Accept { ballot, value, .. } => {
                ids.extend([ballot.node, value.proposer]);
                add(&mut ids, &value.transfers);
            }
            Message::Forward { transfers } => add(&mut ids, transfers),
            Message::Blocks { blocks } => {
                for b in blocks {
                    ids.push(b.proposer);
                    add(&mut ids, &b.transfers);
                }
            }
        }
        ids.into_iter().find(|&id| id >= nodes)
    }
}

/// What must survive a crash, besides the chain itself. Storage appends these to a log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Record {
    /// The highest ballot this node promised (or used itself).
    Promise(Ballot),
    /// A value this node accepted.
    Accept {
        depth: u64,
        ballot: Ballot,
        value: Proposal,
    },
    /// A transfer this node queued from its own account.
    Queue(Transfer),
    /// Records of votes were lost (`benmo node --recover`): do not vote until peers have
    /// answered (see `Amnesia`). Written before the node starts, so a crash meanwhile keeps it.
    Amnesia,
    /// The answers came: never promise (phase 1) at this depth or below; accepting (phase 2)
    /// is allowed at any depth (see `Amnesia` for why). Ends an `Amnesia`. The name is the
    /// record's on disk, kept: "vote" here means a promise.
    VoteFloor(u64),
}

/// Everything that can happen to a node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    Command(Command),
    Message {
        from: NodeId,
        env: Envelope,
    },
    Link {
        peer: NodeId,
        up: bool,
    },
    /// Time has passed (or a batch of events ended): run timers and propose.
    Tick,
    /// An `Action::Loopback` envelope handed back by the shell once the turn that made it is
    /// durable. Only the shell makes one: a network message never claims to be from us.
    Loopback(Envelope),
}

/// What the shell must do. It writes every `Persist` and `Commit` of a batch to disk (fsync)
/// before it performs any `Send` or `Reply` of that batch, except those marked `Early`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Send {
        to: Vec<NodeId>,
        env: Envelope,
    },
    Persist(Record),
    /// Append a decided block to the chain.
    Commit(Block),
    /// An answer to a command, or news a client waits for.
    Reply(Reply),
    /// A protocol step, in verbose mode only.
    Narrate(Step),
    /// A line of the shell's own (a parse error, a prompt's question), put in the turn by
    /// `OpenTurn::print` so that it prints in order. The core never makes one.
    Shell(String),
    /// Send `to` the committed blocks from depth `from` on, read from the chain on disk.
    ServeBlocks {
        to: NodeId,
        from: u64,
    },
    /// Print every block of the chain (read from disk, so the shell's to do).
    PrintChain {
        full: bool,
    },
    /// Exit at once, without cleanup (crashNode).
    Crash,
    /// Stop, saying why: going on could break a promise (see `StartCheck`).
    Fatal(Fatal),
    /// Hand this envelope back to this node once the turn's writes are durable, as
    /// `Event::Loopback`: a leader's own vote, which it counts only when its record is on disk.
    Loopback(Envelope),
    /// Carry this effect out at once, before the turn's writes are durable: it depends on
    /// none of them (a leader's accept, a decide, a `committed` reply for a chosen block).
    Early(Box<Action>),
}

/// A write the shell makes durable before any effect of the same turn.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Durable {
    Record(Record),
    Block(Block),
}

/// One turn's actions split by the rule that lets Paxos survive a crash: every write of the
/// turn is on disk (fsync) before any of its effects (send, print, serve, crash) happens,
/// except the early ones, which depend on no write of the turn and so leave first.
/// The node, the simulator and the core tests all carry out a turn through this one split:
/// `early`, then `writes` (a crash may stop the turn there and lose them), then `effects`.
#[derive(Debug, Default)]
pub struct Turn {
    /// `Early` effects, unwrapped, in order: carried out before the writes.
    pub early: Vec<Action>,
    /// `Persist` and `Commit`, in order.
    pub writes: Vec<Durable>,
    /// Everything else, in order, once the writes are durable.
    pub effects: Vec<Action>,
}

impl Turn {
    pub fn split(actions: Vec<Action>) -> Turn {
        let mut turn = Turn::default();
        for action in actions {
            match action {
                Action::Persist(r) => turn.writes.push(Durable::Record(r)),
                Action::Commit(b) => turn.writes.push(Durable::Block(b)),
                Action::Early(effect) => {
                    assert!(
                        matches!(
                            *effect,
                            Action::Send { .. } | Action::Reply(_) | Action::Narrate(_)
                        ),
                        "only a send, a reply or a narrated step leaves early: {effect:?}"
                    );
                    turn.early.push(*effect)
                }
                effect => turn.effects.push(effect),
            }
        }
        turn
    }
}

/// A turn under way: events handled at one time, and the actions so far (`Core::open_turn`).
#[must_use = "a turn ends with `close`, which ticks"]
pub struct OpenTurn<'a> {
    core: &'a mut Core,
    now: u64,
    out: Vec<Action>,
}

impl OpenTurn<'_> {
    /// Handles one event at the turn's time. The turn's one `Tick` comes in `close`.
    pub fn handle(&mut self, event: Event) {
        assert!(event != Event::Tick, "a turn ticks once, last, in close");
        self.core.handle(self.now, event, &mut self.out);
    }

    /// A line from the shell, printed in order with the turn's other output.
    pub fn print(&mut self, line: String) {
        self.out.push(Action::Shell(line));
    }

    /// The actions so far.
    /// The node as this turn has left it so far (the shell's trace reads its role).
    pub fn core(&self) -> &Core {
        self.core
    }

    pub fn actions(&self) -> &[Action] {
        &self.out
    }

    /// Runs the turn's `Tick`, last, and splits its actions (writes before effects).
    pub fn close(mut self) -> Turn {
        self.core.handle(self.now, Event::Tick, &mut self.out);
        Turn::split(self.out)
    }
}

/// Timers and sizes, in milliseconds and counts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Timing {
    /// Random wait before running for leader.
    pub delay_min_ms: u64,
    pub delay_max_ms: u64,
    pub heartbeat_ms: u64,
    /// Silence after which followers presume the leader gone.
    pub leader_timeout_ms: u64,
    /// Retransmission interval for accepts, forwards and catch-up requests.
    pub resend_ms: u64,
    /// Undecided depths a leader has proposed, at most (its window): it proposes the next
    /// depth only while fewer are undecided, adopted values after an election included. So a
    /// leader never proposes more than this far past the highest depth a majority knows,
    /// which is what a recovering node's vote floor relies on (see `Amnesia`).
    pub inflight_depths_max: usize,
    /// Transfers per block at most. A "batch" of transfers (here and in the leader's
    /// `next_batch`) is one block's value; a batch of events (node.rs, the simulator) is
    /// what one turn handles, whose writes one group commit makes durable.
    pub batch_transfers_max: usize,
    /// Classroom only: how long a leader holds each phase (accept, decide) before its
    /// messages go out, so that a person can act between phases. 0: no pause.
    pub phase_delay_ms: u64,
}

impl Timing {
    /// How far past its committed transfers an origin offers its queue to the leader, which
    /// is also the most of one origin's transfers a leader holds (flow control).
    pub fn offer_window(&self) -> u64 {
        Self::offer_window_for(self.batch_transfers_max)
    }

    /// The offer window for blocks of at most `batch_transfers_max` transfers: four blocks.
    pub fn offer_window_for(batch_transfers_max: usize) -> u64 {
        4 * batch_transfers_max as u64
    }

    /// Refuses timings with which the protocol could not make progress.
    pub fn validate(&self) -> Result<(), String> {
        let checks = [
            (
                self.delay_min_ms <= self.delay_max_ms,
                "delay_min_ms <= delay_max_ms",
            ),
            (self.heartbeat_ms > 0, "heartbeat_ms > 0"),
            (
                self.heartbeat_ms < self.leader_timeout_ms,
                "heartbeat_ms < leader_timeout_ms",
            ),
            (self.resend_ms > 0, "resend_ms > 0"),
            (self.inflight_depths_max > 0, "inflight_depths_max > 0"),
            (self.batch_transfers_max > 0, "batch_transfers_max > 0"),
            (
                self.batch_transfers_max <= 1 << 20,
                "batch_transfers_max <= 2^20",
            ),
            (
                self.leader_timeout_ms <= 3_600_000,
                "leader_timeout_ms <= 1 hour",
            ),
            (self.delay_max_ms <= 3_600_000, "delay_max_ms <= 1 hour"),
            (self.phase_delay_ms <= 3_600_000, "phase_delay_ms <= 1 hour"),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, rule)) => Err(format!("bad timing {self:?}: needs {rule}")),
            None => Ok(()),
        }
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            delay_min_ms: 20,
            delay_max_ms: 100,
            heartbeat_ms: 100,
            leader_timeout_ms: 1000,
            resend_ms: 250,
            inflight_depths_max: 8,
            batch_transfers_max: 4096,
            phase_delay_ms: 0,
        }
    }
}

/// Who this node is and how it behaves.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Params {
    pub id: NodeId,
    pub nodes: usize,
    pub timing: Timing,
    pub verbose: bool,
    /// Classroom policy: every depth is decided by its own full round (prepare, promise,
    /// accept, accepted, decide), with no leader kept across depths, as in the seed.
    pub classroom: bool,
    /// Seeds the node's private random number generator (election delays).
    pub rng_seed: u64,
}

/// Values an acceptor reports in a promise: (depth, ballot, value).
pub type AcceptedList = Vec<(u64, Ballot, Proposal)>;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Role {
    Follower,
    Candidate(Candidacy),
    Leader(Box<Leadership>),
}

/// One node's protocol state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Core {
    id: NodeId,
    n: usize,
    timing: Timing,
    verbose: bool,
    classroom: bool,
    rng: u64,
    now: u64,
    ledger: Ledger,
    // Acceptor.
    promised: Ballot,
    accepted: BTreeMap<u64, (Ballot, Proposal)>,
    // Learner: decided values waiting for the depths below them.
    decided: BTreeMap<u64, Proposal>,
    // Proposer.
    role: Role,
    highest_seen: Ballot,
    leader: Option<Ballot>,
    heard_leader_at: u64,
    election_at: Option<u64>,
    // This node's own queue: transfers from its account, not yet committed.
    queue: BTreeMap<u64, Transfer>,
    /// The sum of the queue's amounts, kept so that queueing costs the same at any length.
    queued_total: u64,
    next_own_seq: u64,
    /// The highest sequence number of our own queue offered to the leader so far.
    offered_upto: u64,
    /// The first of our own transfers queued since the last tick, in this turn: its `Queue`
    /// record is not durable yet, so an accept carrying it may not leave early.
    unsynced_from: Option<u64>,
    forwarded_at: Option<u64>,
    // Links and catch-up.
    severed: Vec<bool>,
    /// Peers that told us they severed their link to us (`Message::Severed`), for `status`.
    severed_by: Diagnostic<Vec<bool>>,
    link_up: Vec<bool>,
    peer_depth: Vec<u64>,
    /// When each peer was last heard from, for `status` only.
    heard_at: Diagnostic<Vec<u64>>,
    catch_up: Option<(NodeId, u64)>,
    // Recovery from lost WAL records.
    amnesia: Option<Amnesia>,
    vote_floor: u64,
    reminded_at: u64,
    hello_at: u64,
    // Detecting a rolled-back directory.
    start: StartCheck,
}

/// State that is only ever printed, never acted on: it takes no part in a core's identity
/// (`Eq`, `Hash`), so two cores that will behave the same compare equal. The model checker
/// relies on that to merge states that differ only in, say, when a peer was last heard.
#[derive(Clone, Debug, Default)]
pub(crate) struct Diagnostic<T>(pub(crate) T);

impl<T> PartialEq for Diagnostic<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Eq for Diagnostic<T> {}

impl<T> std::hash::Hash for Diagnostic<T> {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

/// The next number of the splitmix64 sequence in `state`: the core's and the simulator's
/// one deterministic generator.
pub fn rand_next(state: &mut u64) -> u64 {
    // splitmix64: tiny, fast and deterministic for a given seed.
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Core {
    /// Rebuilds a node from its committed chain (as a `Ledger`) and its persisted records.
    pub fn restore(
        params: Params,
        ledger: Ledger,
        records: impl IntoIterator<Item = Record>,
    ) -> Core {
        assert!(params.id < params.nodes, "the node is one of the cluster");
        assert!(
            params.nodes == ledger.balances.len(),
            "one account per node"
        );
        assert!(
            params.timing.validate().is_ok(),
            "timing is validated at start-up"
        );
        let id = params.id;
        let mut core = Core {
            id,
            n: params.nodes,
            timing: params.timing,
            verbose: params.verbose,
            classroom: params.classroom,
            rng: params.rng_seed,
            now: 0,
            promised: Ballot::default(),
            accepted: BTreeMap::new(),
            decided: BTreeMap::new(),
            role: Role::Follower,
            highest_seen: Ballot::default(),
            leader: None,
            heard_leader_at: 0,
            election_at: None,
            queue: BTreeMap::new(),
            queued_total: 0,
            next_own_seq: ledger.next_seq[id],
            offered_upto: 0,
            unsynced_from: None,
            forwarded_at: None,
            severed: vec![false; params.nodes],
            severed_by: Diagnostic(vec![false; params.nodes]),
            link_up: vec![false; params.nodes],
            peer_depth: vec![0; params.nodes],
            heard_at: Diagnostic(vec![0; params.nodes]),
            catch_up: None,
            amnesia: None,
            reminded_at: 0,
            hello_at: 0,
            vote_floor: 0,
            start: StartCheck::new(params.nodes),
            ledger,
        };
        for record in records {
            core.replay(record);
        }
        core.highest_seen = core.promised;
        core.queued_total = core.queue.values().map(|t| t.amount).sum();
        assert!(
            core.accepted.values().all(|(b, _)| *b <= core.promised),
            "a recovered promise is at least every ballot it accepted"
        );
        assert!(
            core.queue
                .keys()
                .next()
                .is_none_or(|&s| s >= core.ledger.next_seq[id]),
            "the queue holds only transfers the chain has not committed"
        );
        core
    }

    fn replay(&mut self, record: Record) {
        match record {
            Record::Promise(b) => self.promised = self.promised.max(b),
            Record::Accept {
                depth,
                ballot,
                value,
            } => {
                self.promised = self.promised.max(ballot);
                let newer = self.accepted.get(&depth).is_none_or(|(b, _)| *b <= ballot);
                if depth > self.ledger.depth && newer {
                    self.accepted.insert(depth, (ballot, value));
                }
            }
            Record::Queue(t) => {
                assert_eq!(t.debit(), self.id, "a node queues only its own transfers");
                self.next_own_seq = self.next_own_seq.max(t.id.seq.saturating_add(1));
                if t.id.seq >= self.ledger.next_seq[self.id] {
                    self.queue.insert(t.id.seq, t);
                }
            }
            Record::Amnesia => self.amnesia = Some(Amnesia::new(&mut self.rng)),
            Record::VoteFloor(depth) => {
                self.vote_floor = self.vote_floor.max(depth);
                self.amnesia = None;
            }
        }
    }

    /// The records that a compacted log must keep: everything not yet settled by the chain.
    pub fn live_records(&self) -> Vec<Record> {
        let mut out = vec![Record::Promise(self.promised)];
        for (&depth, (ballot, value)) in &self.accepted {
            out.push(Record::Accept {
                depth,
                ballot: *ballot,
                value: value.clone(),
            });
        }
        out.extend(self.queue.values().map(|t| Record::Queue(*t)));
        if self.vote_floor > self.ledger.depth {
            out.push(Record::VoteFloor(self.vote_floor));
        }
        if self.amnesia.is_some() {
            out.push(Record::Amnesia);
        }
        out
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn queue(&self) -> impl Iterator<Item = &Transfer> {
        self.queue.values()
    }

    pub fn promised(&self) -> Ballot {
        self.promised
    }

    /// Whether this node is still recovering lost records, and so refuses transfers.
    pub fn recovering(&self) -> bool {
        self.amnesia.is_some() || self.ledger.depth < self.vote_floor
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }

    /// The leader this node currently follows (or itself), if it has heard from one lately.
    pub fn known_leader(&self) -> Option<NodeId> {
        match &self.role {
            Role::Leader(_) => Some(self.id),
            _ if self.leader_alive() => self.leader.map(|b| b.node),
            _ => None,
        }
    }

    /// Starts a turn at time `now`. The node, the simulator and the model check all run a
    /// batch of events this one way: every event at the same `now`, then one `Tick`, last
    /// (`OpenTurn::close`). After a stall, a turn's messages are handled at a time past
    /// deadlines that only its tick would act on, so a deadline that safety relies on is
    /// checked where the message is handled (see `candidacy_expired`).
    pub fn open_turn(&mut self, now: u64) -> OpenTurn<'_> {
        OpenTurn {
            core: self,
            now,
            out: Vec::new(),
        }
    }

    /// One whole turn: `events` at time `now`, then a `Tick` (see `open_turn`).
    pub fn turn(&mut self, now: u64, events: impl IntoIterator<Item = Event>) -> Turn {
        let mut turn = self.open_turn(now);
        events.into_iter().for_each(|e| turn.handle(e));
        turn.close()
    }

    /// Feeds one event to the node at time `now` (milliseconds, never decreasing).
    pub fn handle(&mut self, now: u64, event: Event, out: &mut Vec<Action>) {
        self.now = self.now.max(now);
        match event {
            Event::Command(cmd) => self.on_command(cmd, out),
            Event::Message { from, env } => self.on_envelope(from, env, out),
            Event::Link { peer, up } => self.on_link(peer, up, out),
            Event::Loopback(env) => self.on_loopback(env, out),
            Event::Tick => {
                self.on_tick(out);
                self.unsynced_from = None; // a turn ends with its tick
            }
        }
    }

    fn quorum(&self) -> usize {
        let quorum = self.n / 2 + 1;
        assert!(
            2 * quorum > self.n && quorum <= self.n,
            "any two majorities share a node, and a majority exists"
        );
        quorum
    }

    fn others(&self) -> Vec<NodeId> {
        (0..self.n)
            .filter(|&p| p != self.id && !self.severed[p])
            .collect()
    }

    fn send(&self, to: Vec<NodeId>, msg: Message, out: &mut Vec<Action>) {
        let to: Vec<NodeId> = to
            .into_iter()
            .filter(|&p| p != self.id && !self.severed[p])
            .collect();
        if !to.is_empty() {
            out.push(Action::Send {
                to,
                env: Envelope {
                    id: 0,
                    seq: 0,
                    depth: self.ledger.depth,
                    msg,
                },
            });
        }
    }

    fn broadcast(&self, msg: Message, out: &mut Vec<Action>) {
        self.send(self.others(), msg, out);
    }

    /// Marks the actions pushed since `start` as early (see `Action::Early`).
    fn early_since(out: &mut Vec<Action>, start: usize) {
        let tail = out.split_off(start);
        out.extend(tail.into_iter().map(|a| Action::Early(Box::new(a))));
    }

    /// Hands `msg` back to this node once the turn's writes are durable.
    fn loopback(&self, msg: Message, out: &mut Vec<Action>) {
        let depth = self.ledger.depth;
        out.push(Action::Loopback(Envelope {
            depth,
            id: 0,
            seq: 0,
            msg,
        }));
    }

    /// Narrates a step in verbose mode; `step` is built only then.
    fn narrate(&self, out: &mut Vec<Action>, step: impl FnOnce() -> Step) {
        if self.verbose {
            out.push(Action::Narrate(step()));
        }
    }

    fn random_delay(&mut self) -> u64 {
        let span = self
            .timing
            .delay_max_ms
            .saturating_sub(self.timing.delay_min_ms)
            + 1;
        self.timing.delay_min_ms + rand_next(&mut self.rng) % span
    }

    /// Liveness only (when to forward, when to run): no safety rule relies on this lease, so
    /// it is checked on ticks, not where messages are handled.
    fn leader_alive(&self) -> bool {
        match self.leader {
            Some(b) if b.node == self.id => self.is_leader(),
            Some(_) => self.now < self.heard_leader_at + self.timing.leader_timeout_ms,
            None => false,
        }
    }

    /// The ballot this node is running for leader with or leading with, if any (the shell
    /// traces step-downs and election timeouts from it).
    pub fn role_ballot(&self) -> Option<Ballot> {
        match &self.role {
            Role::Follower => None,
            Role::Candidate(c) => Some(c.ballot),
            Role::Leader(l) => Some(l.ballot),
        }
    }

    fn unqueue(&mut self, seq: u64) {
        if let Some(t) = self.queue.remove(&seq) {
            self.queued_total -= t.amount;
        }
    }

    /// Our own vote, now durable (`Action::Loopback`): counted as anyone else's.
    fn on_loopback(&mut self, env: Envelope, out: &mut Vec<Action>) {
        let Message::Accepted { ballot, depth } = env.msg else {
            unreachable!("only a leader's own vote loops back: {env:?}");
        };
        self.on_accepted(self.id, ballot, depth, out);
    }

    fn on_envelope(&mut self, from: NodeId, env: Envelope, out: &mut Vec<Action>) {
        if from >= self.n || from == self.id {
            return;
        }
        // A sever notice changes only what `status` shows: no state, no "heard from".
        let notice = matches!(env.msg, Message::Severed);
        self.note_severed_by(from, notice, out);
        if notice || self.severed[from] {
            return;
        }
        self.peer_depth[from] = self.peer_depth[from].max(env.depth);
        self.heard_at.0[from] = self.now;
        if !self.note_seq(from, &env) {
            return; // checking this node's own state first
        }
        if let Role::Leader(l) = &mut self.role {
            l.heard_from(from);
        }
        match env.msg {
            Message::Hello => {}
            Message::Prepare { ballot, depth } => self.on_prepare(from, ballot, depth, out),
            Message::Promise { ballot, accepted } => {
                self.on_promise(from, ballot, env.depth, accepted, out)
            }
            Message::Reject { ballot, promised } => self.on_reject(from, ballot, promised, out),
            Message::Accept {
                ballot,
                depth,
                value,
            } => self.on_accept(from, ballot, depth, value, out),
            Message::Accepted { ballot, depth } => self.on_accepted(from, ballot, depth, out),
            Message::Decide { ballot, depth } => self.on_decide(from, ballot, depth, out),
            Message::Heartbeat { ballot } => self.on_heartbeat(from, ballot, out),
            Message::Forward { transfers } => self.on_forward(from, transfers),
            Message::CatchUp { from: depth } => out.push(Action::ServeBlocks {
                to: from,
                from: depth,
            }),
            Message::Blocks { blocks } => self.on_blocks(from, blocks, out),
            Message::Probe { floor, nonce } => self.on_probe(from, floor, nonce, out),
            Message::ProbeReply(reply) => self.on_probe_reply(from, reply, out),
            Message::StartCheck { nonce } => self.on_start_check(from, nonce, env.seq, out),
            Message::Severed => unreachable!("handled above"),
            Message::StartSeen { nonce, seen, yours } => {
                self.on_start_seen(from, nonce, seen, yours, out)
            }
        }
        if !self.checking() {
            self.maybe_catch_up(from, out);
        }
    }

    fn on_tick(&mut self, out: &mut Vec<Action>) {
        if !self.check_start_tick(out) {
            return; // nothing but the check until a majority has answered
        }
        self.probe(out);
        self.say_hello(out);
        if self
            .catch_up
            .is_some_and(|(_, deadline)| self.now >= deadline)
        {
            self.catch_up = None;
        }
        self.retry_catch_up(out);
        match self.role {
            Role::Leader(_) => self.lead(out),
            Role::Candidate(_) => {
                self.candidacy_expired(out);
            }
            Role::Follower => self.follow_tick(out),
        }
    }
}

#[cfg(test)]
mod tests;
