//! The whole protocol, as a pure state machine: `Core::handle` takes an event (a command,
//! a message, a link change, the passing of time) and pushes actions (send, persist, print).
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

use crate::commands::Command;
use crate::ledger::{Block, Ledger, NodeId, Transfer, TxId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub proposer: NodeId,
    pub transfers: Vec<Transfer>,
}

/// What nodes say to each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// From a node recovering lost records: what do you know? (see `Amnesia`) Once it knows
    /// its vote floor it sends that too, asking a leader to carry the chain past it.
    Probe { floor: u64 },
    /// The answer: our promise, the highest depth we know of (chain, accepted or proposed),
    /// and the highest sequence number of the prober's own transfers that we have seen.
    ProbeReply {
        promised: Ballot,
        top: u64,
        seq: u64,
    },
}

/// A message plus the sender's chain depth, which lets any peer notice that it is behind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub depth: u64,
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
            Message::Hello | Message::CatchUp { .. } | Message::Probe { .. } => {}
            Message::Prepare { ballot, .. }
            | Message::Accepted { ballot, .. }
            | Message::Decide { ballot, .. }
            | Message::Heartbeat { ballot }
            | Message::ProbeReply {
                promised: ballot, ..
            } => ids.push(ballot.node),
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The answers came: never vote at this depth or below. Ends an `Amnesia`.
    VoteFloor(u64),
}

/// Everything that can happen to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

/// What the shell must do. It writes every `Persist` and `Commit` of a batch to disk (fsync)
/// before it performs any `Send` or `Print` of that batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Send {
        to: Vec<NodeId>,
        env: Envelope,
    },
    Persist(Record),
    /// Append a decided block to the chain.
    Commit(Block),
    /// A line for stdout.
    Print(String),
    /// Send `to` the committed blocks from depth `from` on, read from the chain on disk.
    ServeBlocks {
        to: NodeId,
        from: u64,
    },
    /// Print every block of the chain.
    PrintChain,
    /// Exit at once, without cleanup (crashNode).
    Crash,
}

/// Timers and sizes, in milliseconds and counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Random wait before running for leader.
    pub delay_min: u64,
    pub delay_max: u64,
    pub heartbeat: u64,
    /// Silence after which followers presume the leader gone.
    pub leader_timeout: u64,
    /// Retransmission interval for accepts, forwards and catch-up requests.
    pub resend: u64,
    /// Depths a leader may have in flight at once.
    pub window: usize,
    /// Transfers per block at most.
    pub max_batch: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            delay_min: 20,
            delay_max: 100,
            heartbeat: 100,
            leader_timeout: 1000,
            resend: 250,
            window: 8,
            max_batch: 4096,
        }
    }
}

/// Who this node is and how it behaves.
#[derive(Clone, Debug)]
pub struct Params {
    pub id: NodeId,
    pub nodes: usize,
    pub timing: Timing,
    pub verbose: bool,
    /// Seeds the node's private random number generator (election delays).
    pub seed: u64,
}

/// Values an acceptor reports in a promise: (depth, ballot, value).
pub type AcceptedList = Vec<(u64, Ballot, Proposal)>;

/// A node that lost records (WAL records, or blocks, which record its votes once the WAL is
/// compacted) may have promised a ballot or accepted a value it no longer remembers, and
/// voting as if it had not could break Paxos. So it stays silent, waits out any election
/// that might have counted its forgotten promise (one leader timeout: a candidacy lasts no
/// longer), and asks its peers. Any majority of the others overlaps every quorum it took part
/// in, so their answers bound what it could have done: it then promises at least the highest
/// ballot they report, and never votes at or below the highest depth they know plus the
/// window, the furthest a leader could have proposed. Those depths are decided without it,
/// which needs the others to be a majority: at most a minority may recover at once.
#[derive(Clone, Debug)]
struct Amnesia {
    /// When this node (re)started: the first time it saw the clock.
    since: Option<u64>,
    asked_at: Option<u64>,
    replies: BTreeMap<NodeId, (Ballot, u64, u64)>,
}

/// A leader's view of one depth in flight.
#[derive(Clone, Debug)]
struct Slot {
    value: Proposal,
    acks: Vec<bool>,
    sent_at: u64,
}

#[derive(Clone, Debug)]
struct Leadership {
    ballot: Ballot,
    next_depth: u64,
    inflight: BTreeMap<u64, Slot>,
    /// The ledger as it will be once every depth in flight is decided.
    projected: Ledger,
    /// Transfers offered by each origin, by sequence number, not yet proposed.
    intake: Vec<BTreeMap<u64, Transfer>>,
    last_heartbeat: u64,
    /// Propose empty blocks, if nothing else, up to this depth: the vote floor of a
    /// recovering node, which takes no transfers until the chain has passed it.
    fill_to: u64,
}

#[derive(Clone, Debug)]
struct Candidacy {
    ballot: Ballot,
    /// For each node that promised: its chain depth and the values it had accepted.
    promises: BTreeMap<NodeId, (u64, AcceptedList)>,
    started: u64,
}

#[derive(Clone, Debug)]
enum Role {
    Follower,
    Candidate(Candidacy),
    Leader(Leadership),
}

/// One node's protocol state.
#[derive(Clone, Debug)]
pub struct Core {
    id: NodeId,
    n: usize,
    timing: Timing,
    verbose: bool,
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
    forwarded_at: Option<u64>,
    // Links and catch-up.
    severed: Vec<bool>,
    link_up: Vec<bool>,
    peer_depth: Vec<u64>,
    catch_up: Option<(NodeId, u64)>,
    // Recovery from lost WAL records.
    amnesia: Option<Amnesia>,
    vote_floor: u64,
    reminded_at: u64,
    hello_at: u64,
}

fn rand_next(state: &mut u64) -> u64 {
    // splitmix64: tiny, fast and deterministic for a given seed.
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Core {
    /// Rebuilds a node from its committed chain (as a `Ledger`) and its persisted records.
    pub fn recover(
        params: Params,
        ledger: Ledger,
        records: impl IntoIterator<Item = Record>,
    ) -> Core {
        assert!(params.id < params.nodes && params.nodes == ledger.balances.len());
        let id = params.id;
        let mut core = Core {
            id,
            n: params.nodes,
            timing: params.timing,
            verbose: params.verbose,
            rng: params.seed,
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
            forwarded_at: None,
            severed: vec![false; params.nodes],
            link_up: vec![false; params.nodes],
            peer_depth: vec![0; params.nodes],
            catch_up: None,
            amnesia: None,
            reminded_at: 0,
            hello_at: 0,
            vote_floor: 0,
            ledger,
        };
        for record in records {
            core.replay(record);
        }
        core.highest_seen = core.promised;
        core.queued_total = core.queue.values().map(|t| t.amount).sum();
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
            Record::Amnesia => {
                self.amnesia = Some(Amnesia {
                    since: None,
                    asked_at: None,
                    replies: BTreeMap::new(),
                })
            }
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

    /// Feeds one event to the node at time `now` (milliseconds, never decreasing).
    pub fn handle(&mut self, now: u64, event: Event, out: &mut Vec<Action>) {
        self.now = self.now.max(now);
        match event {
            Event::Command(cmd) => self.on_command(cmd, out),
            Event::Message { from, env } => self.on_envelope(from, env, out),
            Event::Link { peer, up } => self.on_link(peer, up, out),
            Event::Tick => self.on_tick(out),
        }
    }

    // ----- helpers -----

    fn quorum(&self) -> usize {
        self.n / 2 + 1
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
                    depth: self.ledger.depth,
                    msg,
                },
            });
        }
    }

    fn broadcast(&self, msg: Message, out: &mut Vec<Action>) {
        self.send(self.others(), msg, out);
    }

    fn log(&self, out: &mut Vec<Action>, text: impl FnOnce() -> String) {
        if self.verbose {
            out.push(Action::Print(format!("[paxos] {}", text())));
        }
    }

    fn random_delay(&mut self) -> u64 {
        let span = self.timing.delay_max.saturating_sub(self.timing.delay_min) + 1;
        self.timing.delay_min + rand_next(&mut self.rng) % span
    }

    fn leader_alive(&self) -> bool {
        match self.leader {
            Some(b) if b.node == self.id => self.is_leader(),
            Some(_) => self.now < self.heard_leader_at + self.timing.leader_timeout,
            None => false,
        }
    }

    fn role_ballot(&self) -> Option<Ballot> {
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

    // ----- commands -----

    fn on_command(&mut self, cmd: Command, out: &mut Vec<Action>) {
        match cmd {
            Command::Transfer {
                debit,
                credit,
                amount,
            } => self.on_transfer(debit, credit, amount, out),
            Command::PrintBlockchain => out.push(Action::PrintChain),
            Command::PrintBalance => self.print_balance(self.id, out),
            Command::PrintBalances => (0..self.n).for_each(|p| self.print_balance(p, out)),
            Command::PrintQueue => self.print_queue(out),
            Command::Status => self.print_status(out),
            Command::Crash => out.push(Action::Crash),
            Command::Sever(peer) => self.set_severed(peer, true, out),
            Command::Restore(peer) => self.set_severed(peer, false, out),
        }
    }

    fn error(out: &mut Vec<Action>, text: String) {
        out.push(Action::Print(format!("error: {text}")));
    }

    fn on_transfer(&mut self, debit: NodeId, credit: NodeId, amount: u64, out: &mut Vec<Action>) {
        if let Err(problem) = self.check_transfer(debit, credit, amount) {
            return Self::error(out, problem);
        }
        let t = Transfer {
            id: TxId {
                node: self.id,
                seq: self.next_own_seq,
            },
            credit,
            amount,
        };
        self.next_own_seq += 1;
        self.queue.insert(t.id.seq, t);
        self.queued_total += t.amount;
        out.push(Action::Persist(Record::Queue(t)));
        out.push(Action::Print(format!("queued {t}")));
    }

    /// Why this node may not queue the transfer, if it may not.
    fn check_transfer(&self, debit: NodeId, credit: NodeId, amount: u64) -> Result<(), String> {
        let available = self.ledger.balances[self.id].saturating_sub(self.queued_total);
        if self.recovering() {
            // Lost records may have held debits of ours that commit up to the vote floor:
            // only a chain past it shows what this account can still afford.
            return Err(
                "recovering lost state: transfers resume once this node has caught up".into(),
            );
        }
        if debit >= self.n || credit >= self.n {
            let last = self.n - 1;
            return Err(format!(
                "unknown node {} (nodes are 0..{last})",
                debit.max(credit)
            ));
        }
        if debit != self.id {
            let me = self.id;
            return Err(format!(
                "node {me} can only transfer from its own account {me}"
            ));
        }
        if debit == credit {
            return Err("debit and credit are the same account".into());
        }
        if amount == 0 {
            return Err("amount must be a positive integer".into());
        }
        if amount > available {
            return Err(format!(
                "insufficient funds: {amount} requested, {available} available"
            ));
        }
        Ok(())
    }

    fn print_balance(&self, node: NodeId, out: &mut Vec<Action>) {
        out.push(Action::Print(format!(
            "balance {} {}",
            node, self.ledger.balances[node]
        )));
    }

    fn print_queue(&self, out: &mut Vec<Action>) {
        if self.queue.is_empty() {
            out.push(Action::Print("queue empty".to_string()));
        }
        for t in self.queue.values() {
            out.push(Action::Print(format!("queue {t}")));
        }
    }

    fn print_status(&self, out: &mut Vec<Action>) {
        let role = match self.role {
            Role::Follower => "follower",
            Role::Candidate(_) => "candidate",
            Role::Leader(_) => "leader",
        };
        let leader = self
            .known_leader()
            .map_or("none".to_string(), |l| l.to_string());
        out.push(Action::Print(format!(
            "node {} depth {} head {} ballot {} leader {} role {} queue {} transfers {}",
            self.id,
            self.ledger.depth,
            self.ledger.head,
            self.promised,
            leader,
            role,
            self.queue.len(),
            self.ledger.transfers
        )));
        for p in (0..self.n).filter(|&p| p != self.id) {
            let state = match (self.severed[p], self.link_up[p]) {
                (true, _) => "severed",
                (false, true) => "up",
                (false, false) => "down",
            };
            out.push(Action::Print(format!("link {p} {state}")));
        }
    }

    fn set_severed(&mut self, peer: NodeId, severed: bool, out: &mut Vec<Action>) {
        if peer >= self.n || peer == self.id {
            return Self::error(out, format!("no link from node {} to node {peer}", self.id));
        }
        self.severed[peer] = severed;
        let word = if severed { "severed" } else { "restored" };
        out.push(Action::Print(format!("link {peer} {word}")));
        if !severed {
            self.send(vec![peer], Message::Hello, out);
        }
    }

    // ----- links and messages -----

    fn on_link(&mut self, peer: NodeId, up: bool, out: &mut Vec<Action>) {
        if peer >= self.n || peer == self.id {
            return;
        }
        self.link_up[peer] = up;
        if up {
            self.send(vec![peer], Message::Hello, out);
        }
    }

    fn on_envelope(&mut self, from: NodeId, env: Envelope, out: &mut Vec<Action>) {
        if from >= self.n || from == self.id || self.severed[from] {
            return;
        }
        self.peer_depth[from] = self.peer_depth[from].max(env.depth);
        match env.msg {
            Message::Hello => {}
            Message::Prepare { ballot, depth } => self.on_prepare(from, ballot, depth, out),
            Message::Promise { ballot, accepted } => {
                self.on_promise(from, ballot, env.depth, accepted, out)
            }
            Message::Reject { ballot, promised } => self.on_reject(ballot, promised, out),
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
            Message::Probe { floor } => self.on_probe(from, floor, out),
            Message::ProbeReply { promised, top, seq } => {
                self.on_probe_reply(from, (promised, top, seq), out)
            }
        }
        self.maybe_catch_up(from, out);
    }

    /// Asks `peer` for the blocks we miss, unless a request is already out.
    fn maybe_catch_up(&mut self, peer: NodeId, out: &mut Vec<Action>) {
        let waiting = self
            .catch_up
            .is_some_and(|(_, deadline)| self.now < deadline);
        if self.peer_depth[peer] > self.ledger.depth && !waiting {
            self.catch_up = Some((peer, self.now + self.timing.resend));
            let from = self.ledger.depth + 1;
            self.log(out, || {
                format!("behind node {peer}: asking for blocks from depth {from}")
            });
            self.send(vec![peer], Message::CatchUp { from }, out);
        }
    }

    /// Asks a random peer known to be ahead, if no request is out. Without this, a request
    /// lost with its peer was never repeated unless that same peer spoke again, and an idle
    /// cluster says nothing: the node stayed behind for good.
    fn retry_catch_up(&mut self, out: &mut Vec<Action>) {
        let ahead: Vec<NodeId> = (0..self.n)
            .filter(|&p| p != self.id && !self.severed[p] && self.peer_depth[p] > self.ledger.depth)
            .collect();
        if self.catch_up.is_none() && !ahead.is_empty() {
            let peer = ahead[(rand_next(&mut self.rng) % ahead.len() as u64) as usize];
            self.maybe_catch_up(peer, out);
        }
    }

    /// Notes a higher ballot. If it beats our own candidacy or leadership, we step down.
    fn see_ballot(&mut self, ballot: Ballot, out: &mut Vec<Action>) {
        self.highest_seen = self.highest_seen.max(ballot);
        if self.role_ballot().is_some_and(|mine| ballot > mine) {
            self.step_down(ballot, out);
        }
    }

    fn step_down(&mut self, winner: Ballot, out: &mut Vec<Action>) {
        self.log(out, || format!("stepping down: ballot {winner} is higher"));
        self.role = Role::Follower;
        if self.leader.is_some_and(|b| b.node == self.id) {
            self.leader = None;
        }
        self.forwarded_at = None;
    }

    /// Accept, Decide and Heartbeat with a ballot we honour all say who leads.
    fn follow(&mut self, ballot: Ballot, out: &mut Vec<Action>) {
        self.see_ballot(ballot, out);
        if ballot.node == self.id {
            return;
        }
        if self.leader != Some(ballot) {
            self.log(out, || {
                format!("following leader {} (ballot {ballot})", ballot.node)
            });
            self.forwarded_at = None; // hand the whole queue to the new leader
        }
        self.leader = Some(ballot);
        self.heard_leader_at = self.now;
        self.election_at = None;
    }

    // ----- acceptor -----

    /// Whether this acceptor may vote at `depth` (see `Amnesia`).
    fn may_vote(&self, depth: u64) -> bool {
        self.amnesia.is_none() && depth > self.vote_floor
    }

    fn on_prepare(&mut self, from: NodeId, ballot: Ballot, depth: u64, out: &mut Vec<Action>) {
        self.see_ballot(ballot, out);
        if !self.may_vote(depth) {
            return self.log(out, || {
                format!("not voting on ballot {ballot}: recovering lost state")
            });
        }
        if ballot < self.promised {
            let promised = self.promised;
            return self.send(vec![from], Message::Reject { ballot, promised }, out);
        }
        if ballot > self.promised {
            self.promised = ballot;
            out.push(Action::Persist(Record::Promise(ballot)));
        }
        if self.leader.is_some_and(|b| b < ballot) {
            self.leader = None;
        }
        let accepted: AcceptedList = self
            .accepted
            .range(depth..)
            .map(|(&d, (b, v))| (d, *b, v.clone()))
            .collect();
        self.log(out, || {
            format!(
                "promise ballot {ballot} to node {from} ({} accepted values)",
                accepted.len()
            )
        });
        self.send(vec![from], Message::Promise { ballot, accepted }, out);
    }

    fn on_accept(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        depth: u64,
        value: Proposal,
        out: &mut Vec<Action>,
    ) {
        if ballot < self.promised {
            let promised = self.promised;
            return self.send(vec![from], Message::Reject { ballot, promised }, out);
        }
        if depth <= self.ledger.depth {
            // Decided here already. Voting again could count for a stale ballot with another
            // value (we may never have promised the ballot that decided it): say our depth
            // instead, and the sender fetches the block.
            return self.send(vec![from], Message::Hello, out);
        }
        if !self.may_vote(depth) {
            return self.log(out, || {
                format!("not voting at depth {depth}: recovering lost state")
            });
        }
        self.follow(ballot, out);
        self.promised = ballot;
        self.log(out, || {
            format!(
                "accept depth {depth} ballot {ballot} ({} transfers)",
                value.transfers.len()
            )
        });
        let record = Record::Accept {
            depth,
            ballot,
            value: value.clone(),
        };
        self.accepted.insert(depth, (ballot, value));
        out.push(Action::Persist(record));
        self.send(vec![from], Message::Accepted { ballot, depth }, out);
    }

    fn on_heartbeat(&mut self, from: NodeId, ballot: Ballot, out: &mut Vec<Action>) {
        if ballot < self.promised {
            let promised = self.promised;
            return self.send(vec![from], Message::Reject { ballot, promised }, out);
        }
        self.follow(ballot, out);
    }

    // ----- learner -----

    fn on_decide(&mut self, from: NodeId, ballot: Ballot, depth: u64, out: &mut Vec<Action>) {
        if ballot >= self.promised {
            self.follow(ballot, out);
        }
        if depth <= self.ledger.depth || self.decided.contains_key(&depth) {
            return;
        }
        // The decider holds this depth or soon will: if we cannot apply it (we lack the value,
        // or a depth below it), it is where to fetch the blocks from.
        self.peer_depth[from] = self.peer_depth[from].max(depth);
        match self.accepted.get(&depth) {
            Some((b, value)) if *b == ballot => {
                self.log(out, || {
                    format!("learned depth {depth} is decided (ballot {ballot})")
                });
                self.decided.insert(depth, value.clone());
                self.apply_decided(out);
            }
            _ => {} // we never accepted that value: catch-up fetches the block
        }
    }

    /// Seals and commits every decided value that now sits directly on the chain.
    fn apply_decided(&mut self, out: &mut Vec<Action>) {
        while let Some(value) = self.decided.remove(&(self.ledger.depth + 1)) {
            self.settle_slot(self.ledger.depth + 1, &value, out);
            let block = self.ledger.seal(value.proposer, &value.transfers);
            let applied = self.ledger.apply(&block);
            assert!(
                applied.is_ok(),
                "a block sealed on our own ledger must apply: {applied:?}"
            );
            self.after_commit(block, out);
        }
    }

    /// A leader may learn a depth it has in flight from someone else's decision (one it
    /// re-proposed on election). The slot is done; if the value differs, so is its plan.
    fn settle_slot(&mut self, depth: u64, value: &Proposal, out: &mut Vec<Action>) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let differs = l
            .inflight
            .remove(&depth)
            .is_some_and(|slot| slot.value != *value);
        if differs {
            self.step_down(self.highest_seen, out);
        }
    }

    /// Takes our own committed transfers off the queue; returns the lines to print.
    fn settle_own(&mut self, block: &Block) -> Vec<String> {
        let (me, depth) = (self.id, block.depth);
        let mut lines = Vec::new();
        for t in block.transfers.iter().filter(|t| t.debit() == me) {
            if let Some(q) = self.queue.get(&t.id.seq).filter(|q| *q != t) {
                // Only after lost records: an older transfer with this id got there first.
                lines.push(format!(
                    "error: queued transfer {q} lost its id to {t}; queue it again"
                ));
            }
            self.unqueue(t.id.seq);
            // After lost records our numbering may lag what others committed for us.
            self.next_own_seq = self.next_own_seq.max(t.id.seq + 1);
            lines.push(format!("committed {t} depth {depth}"));
        }
        lines
    }

    /// Bookkeeping once `block` is the new head of `self.ledger`.
    fn after_commit(&mut self, block: Block, out: &mut Vec<Action>) {
        let depth = block.depth;
        self.accepted = self.accepted.split_off(&(depth + 1));
        self.decided = self.decided.split_off(&(depth + 1));
        let lines = self.settle_own(&block);
        let committed_own = !lines.is_empty();
        if let Role::Leader(l) = &mut self.role {
            for t in &block.transfers {
                l.intake[t.debit()].remove(&t.id.seq);
            }
        }
        self.log(out, || {
            format!(
                "committed block {depth} head {} ({} transfers)",
                block.hash.short(),
                block.transfers.len()
            )
        });
        out.push(Action::Commit(block));
        out.extend(lines.into_iter().map(Action::Print));
        if self.vote_floor > 0 && depth == self.vote_floor {
            Self::caught_up(depth, out);
        }
        if self.queue.is_empty() {
            self.election_at = None;
        } else if committed_own && self.forwarded_at.is_some() {
            self.forwarded_at = Some(self.now); // the leader is serving us: no need to resend yet
        }
    }

    fn on_blocks(&mut self, from: NodeId, blocks: Vec<Block>, out: &mut Vec<Action>) {
        if blocks.iter().any(|b| b.depth > self.ledger.depth) {
            self.catch_up = None; // progress: the next chunk may be asked for at once
        }
        for block in blocks {
            if block.depth <= self.ledger.depth {
                continue;
            }
            if self.is_leader() {
                // Someone decided past us: our leadership is stale.
                self.step_down(self.highest_seen, out);
            }
            if let Err(e) = self.ledger.apply(&block) {
                out.push(Action::Print(format!(
                    "error: rejected block {} from node {from}: {e}",
                    block.depth
                )));
                return;
            }
            self.after_commit(block, out);
        }
        self.apply_decided(out);
    }

    // ----- proposer -----

    fn start_election(&mut self, out: &mut Vec<Action>) {
        let round = self
            .promised
            .round
            .max(self.highest_seen.round)
            .saturating_add(1);
        let ballot = Ballot {
            round,
            node: self.id,
        };
        self.promised = ballot;
        self.highest_seen = ballot;
        self.leader = None;
        self.election_at = None;
        out.push(Action::Persist(Record::Promise(ballot)));
        let mine: AcceptedList = self
            .accepted
            .iter()
            .map(|(&d, (b, v))| (d, *b, v.clone()))
            .collect();
        let mut promises = BTreeMap::new();
        if self.may_vote(self.ledger.depth + 1) {
            promises.insert(self.id, (self.ledger.depth, mine)); // else the others must suffice
        }
        self.role = Role::Candidate(Candidacy {
            ballot,
            promises,
            started: self.now,
        });
        let depth = self.ledger.depth + 1;
        self.log(out, || {
            format!("running for leader: prepare ballot {ballot} from depth {depth}")
        });
        self.broadcast(Message::Prepare { ballot, depth }, out);
        self.try_win(out);
    }

    fn on_promise(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        depth: u64,
        accepted: AcceptedList,
        out: &mut Vec<Action>,
    ) {
        if let Role::Candidate(c) = &mut self.role {
            if c.ballot == ballot {
                c.promises.insert(from, (depth, accepted));
                self.log(out, || {
                    format!("promise from node {from} for ballot {ballot}")
                });
                self.try_win(out);
            }
        }
    }

    fn on_reject(&mut self, ballot: Ballot, promised: Ballot, out: &mut Vec<Action>) {
        if self.role_ballot() == Some(ballot) {
            self.log(out, || {
                format!("ballot {ballot} rejected: a node promised {promised}")
            });
        }
        self.see_ballot(promised, out);
    }

    /// With promises from a majority, become leader: re-propose the values they accepted.
    fn try_win(&mut self, out: &mut Vec<Action>) {
        let Role::Candidate(c) = &self.role else {
            return;
        };
        if c.promises.len() < self.quorum() {
            return;
        }
        let ballot = c.ballot;
        let (ahead, ahead_depth) = c
            .promises
            .iter()
            .map(|(&p, (d, _))| (p, *d))
            .max_by_key(|&(_, d)| d)
            .unwrap();
        let mut adopted: BTreeMap<u64, (Ballot, Proposal)> = BTreeMap::new();
        for (depth, b, value) in c.promises.values().flat_map(|(_, acc)| acc.iter()) {
            if *depth > self.ledger.depth && adopted.get(depth).is_none_or(|(ab, _)| ab < b) {
                adopted.insert(*depth, (*b, value.clone()));
            }
        }
        if ahead_depth > self.ledger.depth {
            // Depths we do not have are decided; their values may be pruned. Catch up first.
            self.log(out, || {
                format!("node {ahead} is ahead (depth {ahead_depth}); catching up before leading")
            });
            self.role = Role::Follower;
            self.election_at = Some(self.now + self.timing.resend);
            self.catch_up = None;
            self.peer_depth[ahead] = ahead_depth;
            return self.maybe_catch_up(ahead, out);
        }
        self.become_leader(ballot, adopted, out);
    }

    fn become_leader(
        &mut self,
        ballot: Ballot,
        adopted: BTreeMap<u64, (Ballot, Proposal)>,
        out: &mut Vec<Action>,
    ) {
        self.log(out, || {
            format!(
                "elected leader with ballot {ballot} at depth {}",
                self.ledger.depth + 1
            )
        });
        let intake = vec![BTreeMap::new(); self.n];
        self.offered_upto = 0; // offer our own queue afresh, as to any leader
        self.role = Role::Leader(Leadership {
            ballot,
            next_depth: self.ledger.depth + 1,
            inflight: BTreeMap::new(),
            projected: self.ledger.clone(),
            intake,
            last_heartbeat: self.now,
            fill_to: self.vote_floor,
        });
        self.leader = Some(ballot);
        self.election_at = None;
        let top = adopted
            .keys()
            .next_back()
            .copied()
            .unwrap_or(self.ledger.depth);
        for depth in self.ledger.depth + 1..=top {
            // A hole nobody in our quorum accepted cannot have been chosen: fill it with nothing.
            let value = adopted.get(&depth).map_or(
                Proposal {
                    proposer: self.id,
                    transfers: vec![],
                },
                |(_, v)| v.clone(),
            );
            self.propose(value, out);
        }
        self.broadcast(Message::Heartbeat { ballot }, out);
    }

    /// Phase 2 for the leader's next depth: accept the value ourselves, then ask everyone.
    fn propose(&mut self, value: Proposal, out: &mut Vec<Action>) {
        let Role::Leader(l) = &self.role else {
            return;
        };
        let votes = self.may_vote(l.next_depth);
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let depth = l.next_depth;
        let ballot = l.ballot;
        let block = l.projected.seal(value.proposer, &value.transfers);
        assert!(
            l.projected.apply(&block).is_ok(),
            "a sealed block applies to the ledger it was sealed on"
        );
        l.next_depth += 1;
        let mut acks = vec![false; self.n];
        acks[self.id] = votes; // below its vote floor a leader still leads but does not vote
        l.inflight.insert(
            depth,
            Slot {
                value: value.clone(),
                acks,
                sent_at: self.now,
            },
        );
        assert!(
            self.promised == ballot,
            "a leader has promised its own ballot"
        );
        self.accepted.insert(depth, (ballot, value.clone()));
        out.push(Action::Persist(Record::Accept {
            depth,
            ballot,
            value: value.clone(),
        }));
        self.log(out, || {
            format!(
                "propose depth {depth} ballot {ballot} ({} transfers)",
                value.transfers.len()
            )
        });
        self.broadcast(
            Message::Accept {
                ballot,
                depth,
                value,
            },
            out,
        );
        self.check_chosen(depth, out);
    }

    fn on_accepted(&mut self, from: NodeId, ballot: Ballot, depth: u64, out: &mut Vec<Action>) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        if l.ballot != ballot {
            return;
        }
        if let Some(slot) = l.inflight.get_mut(&depth) {
            slot.acks[from] = true;
            self.check_chosen(depth, out);
        }
    }

    fn check_chosen(&mut self, depth: u64, out: &mut Vec<Action>) {
        let quorum = self.quorum();
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let chosen = l
            .inflight
            .get(&depth)
            .is_some_and(|s| s.acks.iter().filter(|&&a| a).count() >= quorum);
        if !chosen {
            return;
        }
        let ballot = l.ballot;
        let slot = l.inflight.remove(&depth).expect("slot exists");
        self.log(out, || {
            format!("depth {depth} chosen by a majority: decide")
        });
        self.decided.insert(depth, slot.value);
        self.broadcast(Message::Decide { ballot, depth }, out);
        self.apply_decided(out);
    }

    fn on_forward(&mut self, from: NodeId, transfers: Vec<Transfer>) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        // An offer that starts at the origin's next number is its whole window: it replaces
        // anything older, such as transfers the origin lost with a damaged log.
        if transfers
            .first()
            .is_some_and(|t| t.id.seq == l.projected.next_seq[from])
        {
            l.intake[from].clear();
        }
        // A node may only offer transfers from its own account.
        for t in transfers.into_iter().filter(|t| t.debit() == from) {
            if t.id.seq >= l.projected.next_seq[from] {
                l.intake[from].insert(t.id.seq, t);
            }
        }
    }

    /// Takes the next batch from the intake: from each origin in turn, a share of the run of
    /// transfers that continues its sequence on the projected ledger, so that one busy origin
    /// cannot fill every block.
    fn next_batch(l: &mut Leadership, max: usize) -> Vec<Transfer> {
        let mut next = l.projected.next_seq.clone();
        for (origin, offered) in l.intake.iter_mut().enumerate() {
            *offered = offered.split_off(&next[origin]); // already proposed or committed
        }
        let share = (max / l.intake.len()).max(1);
        let mut batch = Vec::new();
        loop {
            let before = batch.len();
            for (origin, offered) in l.intake.iter_mut().enumerate() {
                for _ in 0..share.min(max - batch.len()) {
                    let Some(t) = offered.remove(&next[origin]) else {
                        break;
                    };
                    batch.push(t);
                    next[origin] += 1;
                }
            }
            if batch.len() == before || batch.len() >= max {
                return batch;
            }
        }
    }

    /// Asks the leader, now and then, to carry the chain past our vote floor.
    fn remind_leader(&mut self, out: &mut Vec<Action>) {
        let Some(leader) = self.leader.map(|b| b.node) else {
            return;
        };
        if self.now >= self.reminded_at + self.timing.resend {
            self.reminded_at = self.now;
            let floor = self.vote_floor;
            self.send(vec![leader], Message::Probe { floor }, out);
        }
    }

    /// Every leader timeout, a node that is not leading tells its peers its depth. With no
    /// leader there is no other traffic, and a lagging node must still learn it is behind.
    fn say_hello(&mut self, out: &mut Vec<Action>) {
        if self.now >= self.hello_at {
            self.hello_at = self.now + self.timing.leader_timeout;
            if !self.is_leader() {
                self.broadcast(Message::Hello, out);
            }
        }
    }

    // ----- recovery from lost WAL records -----

    fn on_probe(&mut self, from: NodeId, floor: u64, out: &mut Vec<Action>) {
        let mut top = self
            .ledger
            .depth
            .max(self.accepted.keys().next_back().copied().unwrap_or(0));
        // Committed numbers only: numbering past one that never commits would leave a gap
        // that blocks the whole queue. One that does commit later is reported then.
        let seq = self.ledger.next_seq[from] - 1;
        if let Role::Leader(l) = &mut self.role {
            top = top.max(l.next_depth - 1);
            l.fill_to = l.fill_to.max(floor);
        }
        let promised = self.promised;
        self.send(vec![from], Message::ProbeReply { promised, top, seq }, out);
    }

    fn on_probe_reply(&mut self, from: NodeId, reply: (Ballot, u64, u64), out: &mut Vec<Action>) {
        let Some(a) = &mut self.amnesia else { return };
        a.replies.insert(from, reply);
        if a.replies.len() >= self.quorum() {
            self.end_amnesia(out);
        }
    }

    /// Asks the peers, once a leader timeout has passed since start (so that any election
    /// that counted a forgotten promise is over), and again every resend interval.
    fn probe(&mut self, out: &mut Vec<Action>) {
        let Some(a) = &mut self.amnesia else { return };
        let since = *a.since.get_or_insert(self.now);
        let due = a
            .asked_at
            .is_none_or(|at| self.now >= at + self.timing.resend);
        if self.now < since + self.timing.leader_timeout || !due {
            return;
        }
        a.asked_at = Some(self.now);
        if self.n == 1 {
            return self.end_amnesia(out); // no one else could have counted on us
        }
        self.log(out, || {
            "recovering lost state: asking peers what they know".to_string()
        });
        self.broadcast(Message::Probe { floor: 0 }, out);
    }

    fn end_amnesia(&mut self, out: &mut Vec<Action>) {
        let Some(a) = self.amnesia.take() else { return };
        let promised = a.replies.values().map(|r| r.0).max().unwrap_or_default();
        let top = a.replies.values().map(|r| r.1).max().unwrap_or(0);
        let seq = a.replies.values().map(|r| r.2).max().unwrap_or(0);
        self.promised = self.promised.max(promised);
        self.highest_seen = self.highest_seen.max(self.promised);
        if !a.replies.is_empty() {
            // A lone node (n = 1) needs no floor: no one else could have counted on it.
            self.vote_floor = self.vote_floor.max(top + self.timing.window as u64);
        }
        self.next_own_seq = self.next_own_seq.max(seq.saturating_add(1));
        out.push(Action::Persist(Record::Promise(self.promised)));
        out.push(Action::Persist(Record::VoteFloor(self.vote_floor)));
        out.push(Action::Print(format!(
            "recovered: promised {}, voting again above depth {}",
            self.promised, self.vote_floor
        )));
        if self.ledger.depth >= self.vote_floor {
            Self::caught_up(self.ledger.depth, out);
        }
    }

    fn caught_up(depth: u64, out: &mut Vec<Action>) {
        let line = format!("caught up: transfers resume at depth {depth}");
        out.push(Action::Print(line));
    }

    // ----- time -----

    fn on_tick(&mut self, out: &mut Vec<Action>) {
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
            Role::Candidate(ref c) => {
                let expired = self.now >= c.started + self.timing.leader_timeout;
                if expired {
                    self.log(out, || "election timed out".to_string());
                    self.role = Role::Follower;
                    self.election_at = Some(self.now + self.random_delay());
                }
            }
            Role::Follower => self.follow_tick(out),
        }
    }

    /// A leader's tick: propose what has arrived, retransmit, and show it is alive.
    fn lead(&mut self, out: &mut Vec<Action>) {
        self.propose_intake(out);
        self.resend_accepts(out);
        self.heartbeat(out);
    }

    /// Proposes batches from the intake while fewer than `window` depths are in flight.
    fn propose_intake(&mut self, out: &mut Vec<Action>) {
        let own = self.next_offer();
        let (window, max_batch) = (self.timing.window, self.timing.max_batch);
        if let Role::Leader(l) = &mut self.role {
            l.intake[self.id].extend(own.into_iter().map(|t| (t.id.seq, t)));
        }
        loop {
            let Role::Leader(l) = &mut self.role else {
                return;
            };
            if l.inflight.len() >= window {
                return;
            }
            let transfers = Self::next_batch(l, max_batch);
            if transfers.is_empty() && l.next_depth > l.fill_to {
                return;
            }
            self.propose(
                Proposal {
                    proposer: self.id,
                    transfers,
                },
                out,
            );
        }
    }

    /// Sends an accept again to the peers that have not answered it within `resend`.
    fn resend_accepts(&mut self, out: &mut Vec<Action>) {
        let (others, now, resend) = (self.others(), self.now, self.timing.resend);
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let ballot = l.ballot;
        let mut resends = Vec::new();
        for (&depth, slot) in l
            .inflight
            .iter_mut()
            .filter(|(_, s)| now >= s.sent_at + resend)
        {
            slot.sent_at = now;
            let missing: Vec<NodeId> = others.iter().copied().filter(|&p| !slot.acks[p]).collect();
            let value = slot.value.clone();
            resends.push((
                missing,
                Message::Accept {
                    ballot,
                    depth,
                    value,
                },
            ));
        }
        for (to, msg) in resends {
            self.send(to, msg, out);
        }
    }

    fn heartbeat(&mut self, out: &mut Vec<Action>) {
        let (now, every) = (self.now, self.timing.heartbeat);
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        if now >= l.last_heartbeat + every {
            l.last_heartbeat = now;
            let ballot = l.ballot;
            self.broadcast(Message::Heartbeat { ballot }, out);
        }
    }

    fn follow_tick(&mut self, out: &mut Vec<Action>) {
        // Below its vote floor a node needs the chain to grow, transfers or not.
        let below_floor = self.amnesia.is_none() && self.ledger.depth < self.vote_floor;
        if self.queue.is_empty() && !below_floor {
            self.election_at = None;
            return;
        }
        if self.leader_alive() {
            if below_floor {
                self.remind_leader(out);
            }
            return self.forward(out);
        }
        if self.amnesia.is_some() {
            return; // it must learn its peers' ballots before it picks one of its own
        }
        match self.election_at {
            None => {
                // A node that may not vote on its next depth can lead only with two others'
                // votes: it lets the nodes that can vote try first.
                let defer = match self.may_vote(self.ledger.depth + 1) {
                    true => 0,
                    false => self.timing.leader_timeout,
                };
                let delay = self.random_delay() + defer;
                self.election_at = Some(self.now + delay);
                self.log(out, || {
                    format!("no leader; running for leader in {delay} ms")
                });
            }
            Some(at) if self.now >= at => self.start_election(out),
            Some(_) => {}
        }
    }

    /// Hands new transfers to the leader at once, and the whole window again now and then,
    /// since a forward can be lost with a leader. The queue stays ours until it commits.
    fn forward(&mut self, out: &mut Vec<Action>) {
        let Some(leader) = self.leader.map(|b| b.node) else {
            return;
        };
        let due = self
            .forwarded_at
            .is_none_or(|at| self.now >= at + self.timing.resend);
        if due {
            self.forwarded_at = Some(self.now);
            self.offered_upto = 0;
        }
        let transfers = self.next_offer();
        if !transfers.is_empty() {
            self.log(out, || {
                format!("forward {} transfers to leader {leader}", transfers.len())
            });
            self.send(vec![leader], Message::Forward { transfers }, out);
        }
    }

    /// The next run of our own queue to offer the leader: what we have not offered yet, at
    /// most a window ahead of what has committed. This is flow control: a leader holds at
    /// most a window of each origin's queue, however long the queue grows.
    fn next_offer(&mut self) -> Vec<Transfer> {
        let committed = self.ledger.next_seq[self.id] - 1;
        let from = self.offered_upto.max(committed) + 1;
        let to = committed + 4 * self.timing.max_batch as u64;
        if from > to {
            return Vec::new();
        }
        let offer: Vec<Transfer> = self.queue.range(from..=to).map(|(_, t)| *t).collect();
        if let Some(t) = offer.last() {
            self.offered_upto = t.id.seq;
        }
        offer
    }
}

#[cfg(test)]
mod tests;
