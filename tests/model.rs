//! Exhaustive, bounded model checking of the real protocol core (issue 12), with stateright.
//!
//! The model is N real `paxos::Core`s and everything around them that the shell and the world
//! decide: at every step the environment may deliver a message (FIFO per ordered pair), lose
//! or duplicate it, deliver two messages in one turn, give a node an idle turn, let time
//! pass (a resend interval or a leader timeout), crash a node, restart it from exactly what
//! it persisted, restart it from a cut log as `--recover` does (amnesia), compact its log to
//! `live_records`, sever or restore a link, and hand a node one of a fixed set of transfers.
//!
//! A turn is the node's turn, built by the same `Core::open_turn` as `node.rs` and the
//! simulator: its messages at the time now, then one tick, then writes before effects. Time
//! is one clock for all, as real time is; a node that takes no turn while time passes has
//! stalled, and its next turn handles its messages at the later time before its tick (issue
//! 18, bug 1). Recovery's wait relies on a leader timeout passing for every node alike, so
//! separate clocks would report schedules no real cluster can run. The budgets of faults and
//! waits are part of the state, so deduplication stays sound.
//!
//! Early effects (`Turn::early`) go out before the turn's writes. While a crash is left in
//! the budget, a turn with both early effects and writes takes two steps: its early effects
//! go out, and later (`Sync`) its writes become durable and its other effects go out; a
//! crash in between loses those writes, as a power loss during the fsync does. A leader's
//! own vote comes back to it in its inbox (`Event::Loopback`), so it is counted in its next
//! turn, after the vote is durable.
//!
//! - `cargo test --release --test model` checks the CI configurations.
//! - `cargo test --release --test model explore -- --ignored --nocapture` checks bounds taken
//!   from `BENMO_MODEL_*` variables (see `Config::from_env`).

use benmo::commands::Command;
use benmo::ledger::{Block, Hash, Ledger, NodeId, TxId};
use benmo::paxos::{
    Action, Ballot, Core, Durable, Envelope, Event, Message, Params, Proposal, Record, Reply,
    Timing, Turn,
};
use stateright::{Checker, HasDiscoveries, Model, Property};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every account's opening balance.
const BALANCE: u64 = 100;

/// The transfers the environment may hand out, in this order: (debit, credit, amount). The
/// third takes exactly what the first leaves of account 0.
const TRANSFERS: [(NodeId, NodeId, u64); 3] = [(0, 1, 60), (1, 2, 70), (0, 2, 40)];

/// Timer unit: the resend interval. Elections start one unit after a node finds no leader.
const UNIT: u64 = 10;

/// How much of each fault and timer the environment may still spend.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Budget {
    crashes: u8,
    losses: u8,
    dups: u8,
    /// Times a resend interval passes.
    resends: u8,
    /// Times a leader timeout passes.
    timeouts: u8,
    /// Ballots started (by any node): a turn that would start one more is not explored.
    elections: u8,
    compactions: u8,
    severs: u8,
    restores: u8,
    /// Restarts from a cut log (amnesia).
    recovers: u8,
    /// Turns that take two messages before their `Tick`.
    batches: u8,
}

/// One configuration of the model.
#[derive(Clone, Debug)]
struct Config {
    name: String,
    nodes: usize,
    transfers: usize,
    window: usize,
    budget: Budget,
    /// A node that starts as `benmo node --recover` leaves it: amnesic (its disk intact).
    amnesic: Option<NodeId>,
    /// Every node runs the classroom policy (a full round per depth).
    classroom: bool,
    /// A delivery takes everything queued on one channel in one turn, as a node reads all
    /// that a connection has buffered; fewer interleavings, for bigger clusters.
    whole_channels: bool,
    /// Give up (and fail) past this many generated states.
    max_states: usize,
    /// `sometimes` properties this configuration must show an example of.
    expect: Vec<&'static str>,
    /// Steps taken before the check starts, from the initial state (a setting that the
    /// bounded exploration starts from; each must be possible).
    prefix: Vec<Step>,
    /// The exact number of unique states (0: not pinned). A change that explores less (or
    /// more) fails loudly; update a pin only with a one-line reason in the commit message.
    states: usize,
}

/// One machine: the process (if up) and its disk.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Node {
    core: Option<Core>,
    chain: Vec<Block>,
    records: Vec<Record>,
    /// Link events and its own votes (`Loopback`), taken at the start of its next turn.
    inbox: Vec<Event>,
    /// The highest round of this node's own ballots (to count elections).
    own_round: u64,
    restarted: bool,
    /// Restarted from a cut log and not yet `recovered:`.
    amnesic: bool,
    /// Printed `recovered:` at some point.
    recovered: bool,
    /// The highest ballot its durable records ever promised (since its last cut log).
    promised: Ballot,
    /// A turn whose early effects went out: its writes and its other effects, until `Sync`.
    /// The node takes no other step meanwhile but a crash, which loses them.
    pending: Option<(Vec<Durable>, Vec<Action>)>,
}

/// Who voted for one value at one (depth, ballot): a bit per node.
type Votes = Vec<(Proposal, u32)>;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    /// The time, one for all (milliseconds).
    now: u64,
    /// Shared until changed: most steps change one node.
    nodes: Vec<Arc<Node>>,
    /// FIFO channel per ordered pair, `from * n + to`.
    net: Vec<VecDeque<Envelope>>,
    left: Budget,
    handed: Vec<bool>,
    /// Links severed by a command, (node, peer); a restart forgets the node's.
    severed: BTreeSet<(NodeId, NodeId)>,
    /// Every durable `Record::Accept`, by (depth, ballot). More than one value is a violation.
    votes: Arc<BTreeMap<(u64, Ballot), Votes>>,
    /// The node recovering from a cut log, and the depth every chain must reach before
    /// another may be cut (as in sim.rs: at most a minority amnesic at a time).
    damaged: Option<(NodeId, u64)>,
    restarted_committed: bool,
    amnesic_voted: bool,
    /// A panic in the core, or an `error:` line from a protocol event.
    fault: Option<String>,
    /// An acceptor voted below a ballot it had durably promised.
    broken_promise: Option<String>,
}

impl State {
    fn node(&mut self, x: NodeId) -> &mut Node {
        Arc::make_mut(&mut self.nodes[x])
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Wait {
    Resend,
    Timeout,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Step {
    Deliver {
        from: NodeId,
        to: NodeId,
    },
    /// Two messages in one turn: the heads of two channels, or the first two of one.
    DeliverTwo {
        a: NodeId,
        b: NodeId,
        to: NodeId,
    },
    /// Everything queued from `from` to `to`, in one turn.
    DeliverChannel {
        from: NodeId,
        to: NodeId,
    },
    Duplicate {
        from: NodeId,
        to: NodeId,
    },
    Lose {
        from: NodeId,
        to: NodeId,
    },
    /// A turn with no message: only the tick.
    Tick(NodeId),
    /// Time passes; no node takes a turn.
    Wait(Wait),
    Transfer(usize),
    Crash(NodeId),
    /// The pending turn's writes become durable and its other effects go out.
    Sync(NodeId),
    Restart(NodeId),
    /// Restart from the first `records` WAL records and `blocks` blocks, as `--recover` does.
    Recover {
        node: NodeId,
        records: usize,
        blocks: usize,
    },
    Compact(NodeId),
    Sever {
        node: NodeId,
        peer: NodeId,
    },
    Restore {
        node: NodeId,
        peer: NodeId,
    },
}

struct Benmo {
    cfg: Config,
    timing: Timing,
}

impl Benmo {
    fn new(cfg: Config) -> Benmo {
        // A fixed election delay and a heartbeat as slow as the timeout keep timers few.
        let timing = Timing {
            delay_min_ms: UNIT,
            delay_max_ms: UNIT,
            // Just under the timeout (validate wants it shorter): fires on the same tick.
            heartbeat_ms: 3 * UNIT - 1,
            leader_timeout_ms: 3 * UNIT,
            resend_ms: UNIT,
            inflight_depths_max: cfg.window,
            batch_transfers_max: 2,
            phase_delay_ms: 0,
        };
        Benmo { cfg, timing }
    }

    fn n(&self) -> usize {
        self.cfg.nodes
    }

    fn params(&self, x: NodeId) -> Params {
        Params {
            id: x,
            nodes: self.n(),
            timing: self.timing.clone(),
            verbose: false,
            classroom: self.cfg.classroom,
            rng_seed: 0x5EED + x as u64,
        }
    }

    fn fresh_node(&self, x: NodeId) -> Node {
        let ledger = Ledger::new(self.n(), BALANCE);
        let amnesic = self.cfg.amnesic == Some(x);
        let records: Vec<Record> = amnesic.then_some(Record::Amnesia).into_iter().collect();
        let mut core = Core::restore(self.params(x), ledger, records.clone());
        // The first tick only says hello to peers at depth 0: nothing to deliver.
        let _ = core.turn(0, []);
        Node {
            core: Some(core),
            chain: Vec::new(),
            records,
            inbox: Vec::new(),
            own_round: 0,
            restarted: false,
            amnesic,
            recovered: false,
            promised: Ballot::default(),
            pending: None,
        }
    }

    fn live(&self, s: &State, x: NodeId) -> bool {
        s.nodes[x].core.is_some()
    }
}

// ----- carrying out turns as the shell does -----

impl Benmo {
    /// One turn of node `x` at the time now: its pending link events, then `events`, then
    /// the tick. Returns None if the turn exceeds the election budget (not explored).
    fn turn(&self, s: &mut State, x: NodeId, events: Vec<Event>) -> Option<()> {
        if s.nodes[x].pending.is_some() {
            return None; // still syncing its last turn
        }
        let mut core = s.node(x).core.take()?;
        let mut all = std::mem::take(&mut s.node(x).inbox);
        all.extend(events);
        let turn = self.run_turn(s, x, &mut core, all);
        s.node(x).core = Some(core);
        // The split matters only if a crash may fall between: without one, keep states few.
        let split = s.left.crashes > 0 && !turn.early.is_empty() && !turn.writes.is_empty();
        for effect in turn.early {
            assert!(self.effect(s, x, effect), "an early effect never crashes");
        }
        if split {
            s.node(x).pending = Some((turn.writes, turn.effects));
            return Some(());
        }
        self.finish(s, x, turn.writes, turn.effects)?;
        let own = |e: &Event| matches!(e, Event::Loopback(_));
        if s.left.crashes == 0 && s.nodes[x].inbox.iter().any(own) {
            // Its vote is durable now: count it at once (a schedule the shell may take), so
            // that without crashes the states stay as few as before the split.
            return self.turn(s, x, Vec::new());
        }
        Some(())
    }

    /// The rest of a turn once its writes are durable: the writes, then the other effects.
    fn finish(
        &self,
        s: &mut State,
        x: NodeId,
        writes: Vec<Durable>,
        effects: Vec<Action>,
    ) -> Option<()> {
        for write in writes {
            self.write(s, x, write)?;
        }
        for effect in effects {
            if !self.effect(s, x, effect) {
                break;
            }
        }
        self.check_damaged(s);
        Some(())
    }

    fn sync(&self, s: &mut State, x: NodeId) -> Option<()> {
        let (writes, effects) = s.node(x).pending.take()?;
        self.finish(s, x, writes, effects)
    }

    /// Runs the turn through `Core::open_turn`, as the node does; a panic or a protocol
    /// `error:` (one not printed for a command) becomes `s.fault` and an empty turn.
    fn run_turn(&self, s: &mut State, x: NodeId, core: &mut Core, events: Vec<Event>) -> Turn {
        let mut open = core.open_turn(s.now);
        for event in events {
            let shown = event.clone();
            let start = open.actions().len();
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| open.handle(event))) {
                s.fault = Some(format!("node {x} panicked on {shown:?}: {}", text(&panic)));
                return Turn::default();
            }
            let protocol = !matches!(shown, Event::Command(_));
            if let Some(reply) = open.actions()[start..]
                .iter()
                .find_map(failure)
                .filter(|_| protocol)
            {
                s.fault = Some(format!("node {x} answered {reply:?} on {shown:?}"));
                return Turn::default();
            }
        }
        // A tick sends no promise. Its replies come after every reply the events gave.
        self.check_promises(s, x, open.actions());
        let before = open.actions().iter().filter(|a| is_reply(a)).count();
        match catch_unwind(AssertUnwindSafe(|| open.close())) {
            Err(panic) => {
                s.fault = Some(format!("node {x} panicked on its tick: {}", text(&panic)));
                Turn::default()
            }
            Ok(turn) => {
                let replies = turn.effects.iter().filter(|a| is_reply(a));
                if let Some(reply) = replies.skip(before).find_map(failure) {
                    s.fault = Some(format!("node {x} answered {reply:?} on its tick"));
                    return Turn::default();
                }
                turn
            }
        }
    }

    fn write(&self, s: &mut State, x: NodeId, write: Durable) -> Option<()> {
        match write {
            Durable::Record(r) => {
                self.note_record(s, x, &r)?;
                s.node(x).records.push(r);
            }
            Durable::Block(b) => {
                s.restarted_committed |= s.nodes[x].restarted;
                s.node(x).chain.push(b);
            }
        }
        Some(())
    }

    /// Counts elections and votes, and checks votes against earlier promises.
    fn note_record(&self, s: &mut State, x: NodeId, r: &Record) -> Option<()> {
        let promised = s.nodes[x].promised;
        match r {
            Record::Promise(b) | Record::Accept { ballot: b, .. } if *b > promised => {
                s.node(x).promised = *b
            }
            Record::Accept { ballot, depth, .. } if *ballot < promised => {
                let text = format!(
                    "node {x} voted at depth {depth} for {ballot} after promising {promised}"
                );
                s.broken_promise.get_or_insert(text);
            }
            _ => {}
        }
        match r {
            Record::Promise(b) if b.node == x && b.round > s.nodes[x].own_round => {
                s.node(x).own_round = b.round;
                s.left.elections = s.left.elections.checked_sub(1)?;
            }
            Record::Accept {
                depth,
                ballot,
                value,
            } => {
                s.amnesic_voted |= s.nodes[x].recovered;
                let votes = Arc::make_mut(&mut s.votes)
                    .entry((*depth, *ballot))
                    .or_default();
                match votes.iter_mut().find(|(v, _)| v == value) {
                    Some((_, who)) => *who |= 1 << x,
                    None => votes.push((value.clone(), 1 << x)),
                }
            }
            _ => {}
        }
        Some(())
    }

    /// Performs one effect; false if the node crashed.
    fn effect(&self, s: &mut State, x: NodeId, effect: Action) -> bool {
        match effect {
            // Only `status` shows it (see `Core::note_severed_by`): not worth its states.
            Action::Send { env, .. } if env.msg == Message::Severed => {}
            Action::Send { to, env } => to.into_iter().for_each(|p| self.send(s, x, p, &env)),
            Action::ServeBlocks { to, from } => {
                let chain = &s.nodes[x].chain;
                let start = (from.max(1) as usize - 1).min(chain.len());
                let env = Envelope {
                    id: 0,
                    seq: 0,
                    depth: chain.len() as u64,
                    msg: Message::Blocks {
                        blocks: chain[start..].to_vec(),
                    },
                };
                self.send(s, x, to, &env);
            }
            Action::Reply(reply) => self.heard(s, x, &reply),
            Action::Narrate(_) | Action::Shell(_) => {}
            Action::Crash => {
                self.crash(s, x);
                return false;
            }
            Action::Loopback(env) => s.node(x).inbox.push(Event::Loopback(env)),
            Action::Fatal(why) => unreachable!("the model runs no start check: {why:?}"),
            Action::PrintChain { .. } => {}
            Action::Persist(_) | Action::Commit(_) | Action::Early(_) => {
                unreachable!("a write or an early effect, split off by `Turn::split`")
            }
        }
        true
    }

    /// Phase 1b for a ballot below one this node had durably promised when it answered
    /// breaks its promise. In the order the core made them: a turn may answer a prepare and
    /// then, on its tick, run for a higher ballot of its own; that promise was kept.
    fn check_promises(&self, s: &mut State, x: NodeId, actions: &[Action]) {
        let mut promised = s.nodes[x].promised;
        for action in actions {
            match action {
                Action::Persist(Record::Promise(b) | Record::Accept { ballot: b, .. }) => {
                    promised = promised.max(*b)
                }
                Action::Send { env, .. } => match &env.msg {
                    Message::Promise { ballot, .. } if *ballot < promised => {
                        let text = format!("node {x} promised {ballot} after promising {promised}");
                        s.broken_promise.get_or_insert(text);
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }

    /// A message to a node that is down is lost with the connection.
    fn send(&self, s: &mut State, from: NodeId, to: NodeId, env: &Envelope) {
        if to != from && to < self.n() && self.live(s, to) {
            s.net[from * self.n() + to].push_back(env.clone());
        }
    }

    fn heard(&self, s: &mut State, x: NodeId, reply: &Reply) {
        let Reply::Recovered { floor, .. } = *reply else {
            return;
        };
        let node = s.node(x);
        node.amnesic = false;
        node.recovered = true;
        if let Some((y, need)) = &mut s.damaged {
            if *y == x {
                *need = (*need).max(floor);
            }
        }
    }

    /// The damaged node has recovered and every chain has passed its floor.
    fn check_damaged(&self, s: &mut State) {
        if let Some((x, need)) = s.damaged {
            let everywhere = s.nodes.iter().map(|n| n.chain.len()).min().unwrap_or(0);
            if self.live(s, x) && !s.nodes[x].amnesic && everywhere as u64 >= need {
                s.damaged = None;
            }
        }
    }

    /// The process dies: its memory, inbox and connections go; its disk stays. Peers are
    /// not told the link went down: that only changes what `status` prints.
    fn crash(&self, s: &mut State, x: NodeId) {
        let n = self.n();
        let node = s.node(x);
        node.core = None;
        node.inbox.clear();
        node.pending = None; // power lost during the fsync: the writes never made it
        for p in 0..n {
            s.net[x * n + p].clear();
            s.net[p * n + x].clear();
        }
        s.severed.retain(|&(a, _)| a != x);
    }

    /// `Core::restore` from the durable chain and records, then the first turn.
    fn restart(&self, s: &mut State, x: NodeId) -> Option<()> {
        let mut ledger = Ledger::new(self.n(), BALANCE);
        for b in &s.nodes[x].chain {
            ledger.apply(b).ok()?; // an invalid chain fails `chains_valid` already
        }
        let records = s.nodes[x].records.clone();
        let amnesic = records.iter().rev().find_map(|r| match r {
            Record::Amnesia => Some(true),
            Record::VoteFloor(_) => Some(false),
            _ => None,
        });
        let params = self.params(x);
        let core = catch_unwind(AssertUnwindSafe(|| Core::restore(params, ledger, records)));
        let Ok(core) = core else {
            s.fault = Some(format!("node {x} panicked in Core::restore"));
            return Some(());
        };
        let node = s.node(x);
        node.core = Some(core);
        node.restarted = true;
        node.amnesic = amnesic == Some(true);
        let peers: Vec<NodeId> = (0..self.n())
            .filter(|&p| p != x && self.live(s, p))
            .collect();
        for p in peers {
            s.node(x).inbox.push(Event::Link { peer: p, up: true });
            s.node(p).inbox.push(Event::Link { peer: x, up: true });
        }
        self.turn(s, x, vec![])
    }
}

// ----- the environment's choices -----

impl Benmo {
    fn channel_steps(&self, s: &State, out: &mut Vec<Step>) {
        let n = self.n();
        for (i, q) in s.net.iter().enumerate().filter(|(_, q)| !q.is_empty()) {
            let (from, to) = (i / n, i % n);
            match self.cfg.whole_channels {
                true => out.push(Step::DeliverChannel { from, to }),
                false => out.push(Step::Deliver { from, to }),
            }
            if s.left.dups > 0 {
                out.push(Step::Duplicate { from, to });
            }
            if s.left.losses > 0 {
                out.push(Step::Lose { from, to });
            }
            if s.left.batches > 0 && q.len() >= 2 {
                out.push(Step::DeliverTwo {
                    a: from,
                    b: from,
                    to,
                });
            }
        }
        if s.left.batches == 0 {
            return;
        }
        for to in 0..n {
            let busy: Vec<NodeId> = (0..n).filter(|&f| !s.net[f * n + to].is_empty()).collect();
            for (i, &a) in busy.iter().enumerate() {
                for &b in &busy[i + 1..] {
                    out.push(Step::DeliverTwo { a, b, to });
                }
            }
        }
    }

    fn node_steps(&self, s: &State, x: NodeId, out: &mut Vec<Step>) {
        let l = &s.left;
        if !self.live(s, x) {
            out.push(Step::Restart(x));
            if l.recovers > 0 && s.damaged.is_none() {
                self.recover_steps(s, x, out);
            }
            return;
        }
        if s.nodes[x].pending.is_some() {
            out.push(Step::Sync(x));
            if l.crashes > 0 {
                out.push(Step::Crash(x));
            }
            return;
        }
        out.push(Step::Tick(x));
        if l.crashes > 0 {
            out.push(Step::Crash(x));
        }
        if l.compactions > 0 {
            out.push(Step::Compact(x));
        }
        for peer in (0..self.n()).filter(|&p| p != x) {
            if s.severed.contains(&(x, peer)) {
                if l.restores > 0 {
                    out.push(Step::Restore { node: x, peer });
                }
            } else if l.severs > 0 {
                out.push(Step::Sever { node: x, peer });
            }
        }
    }

    /// Every cut of the WAL, or of the chain (it records votes too), and none: `--recover`
    /// on an intact disk still makes the node amnesic, which must be safe as well.
    fn recover_steps(&self, s: &State, x: NodeId, out: &mut Vec<Step>) {
        let (records, blocks) = (s.nodes[x].records.len(), s.nodes[x].chain.len());
        for r in 0..=records {
            out.push(Step::Recover {
                node: x,
                records: r,
                blocks,
            });
        }
        for b in 0..blocks {
            out.push(Step::Recover {
                node: x,
                records,
                blocks: b,
            });
        }
    }

    fn deliver(&self, s: &mut State, pairs: &[(NodeId, NodeId)], keep: bool) -> Option<()> {
        let n = self.n();
        let mut events = Vec::new();
        for &(from, to) in pairs {
            let q = &mut s.net[from * n + to];
            let env = if keep {
                q.front().cloned()
            } else {
                q.pop_front()
            }?;
            events.push(Event::Message { from, env });
        }
        self.turn(s, pairs[0].1, events)
    }

    fn wait(&self, s: &mut State, wait: Wait) -> Option<()> {
        let l = &mut s.left;
        s.now += match wait {
            Wait::Resend => take(&mut l.resends).map(|_| self.timing.resend_ms)?,
            Wait::Timeout => take(&mut l.timeouts).map(|_| self.timing.leader_timeout_ms)?,
        };
        Some(())
    }

    fn command(&self, s: &mut State, x: NodeId, cmd: Command) -> Option<()> {
        self.turn(s, x, vec![Event::Command(cmd)])
    }

    fn transfer(&self, s: &mut State, i: usize) -> Option<()> {
        let (debit, credit, amount) = TRANSFERS[i];
        s.handed[i] = true;
        let cmd = Command::Transfer {
            debit,
            credit,
            amount,
        };
        self.command(s, debit, cmd)
    }

    fn recover(&self, s: &mut State, x: NodeId, records: usize, blocks: usize) -> Option<()> {
        take(&mut s.left.recovers)?;
        let node = s.node(x);
        let had = node.chain.len() as u64;
        node.records.truncate(records);
        node.chain.truncate(blocks);
        // As `benmo node --recover` does: durable before the node starts.
        node.records.push(Record::Amnesia);
        node.promised = Ballot::default(); // it may have forgotten promises: that is the point
        s.damaged = Some((x, had));
        self.restart(s, x)
    }

    fn compact(&self, s: &mut State, x: NodeId) -> Option<()> {
        s.nodes[x].pending.is_none().then_some(())?; // the shell compacts after its sync
        take(&mut s.left.compactions)?;
        let live = s.nodes[x].core.as_ref()?.live_records();
        (live != s.nodes[x].records).then_some(())?;
        s.node(x).records = live;
        Some(())
    }

    fn apply(&self, s: &mut State, step: Step) -> Option<()> {
        match step {
            Step::Deliver { from, to } => self.deliver(s, &[(from, to)], false),
            Step::DeliverChannel { from, to } => {
                let queued = s.net[from * self.n() + to].len();
                self.deliver(s, &vec![(from, to); queued], false)
            }
            Step::DeliverTwo { a, b, to } => {
                take(&mut s.left.batches)?;
                self.deliver(s, &[(a, to), (b, to)], false)
            }
            Step::Duplicate { from, to } => {
                take(&mut s.left.dups)?;
                self.deliver(s, &[(from, to)], true)
            }
            Step::Lose { from, to } => {
                take(&mut s.left.losses)?;
                s.net[from * self.n() + to].pop_front().map(|_| ())
            }
            Step::Tick(x) => self.turn(s, x, vec![]),
            Step::Wait(wait) => self.wait(s, wait),
            Step::Transfer(i) => self.transfer(s, i),
            Step::Crash(x) => {
                take(&mut s.left.crashes)?;
                self.crash(s, x);
                Some(())
            }
            Step::Sync(x) => self.sync(s, x),
            Step::Restart(x) => self.restart(s, x),
            Step::Recover {
                node,
                records,
                blocks,
            } => self.recover(s, node, records, blocks),
            Step::Compact(x) => self.compact(s, x),
            Step::Sever { node, peer } => {
                take(&mut s.left.severs)?;
                s.severed.insert((node, peer));
                self.command(s, node, Command::Sever(peer))
            }
            Step::Restore { node, peer } => {
                take(&mut s.left.restores)?;
                s.severed.remove(&(node, peer));
                self.command(s, node, Command::Restore(peer))
            }
        }
    }
}

/// Spends one unit of a budget; None if there is none left.
fn take(left: &mut u8) -> Option<()> {
    *left = left.checked_sub(1)?;
    Some(())
}

fn text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else {
        "(no message)".to_string()
    }
}

fn is_reply(action: &Action) -> bool {
    matches!(action, Action::Reply(_))
}

/// An error reply, except the one a transfer that lost its id to an older, lost one gets:
/// after lost WAL records that is an answer the rules allow (see sim.rs).
fn failure(action: &Action) -> Option<&Reply> {
    match action {
        Action::Reply(r) if r.is_error() && !matches!(r, Reply::LostId { .. }) => Some(r),
        _ => None,
    }
}

impl Model for Benmo {
    type State = State;
    type Action = Step;

    fn init_states(&self) -> Vec<State> {
        let n = self.n();
        let mut s = State {
            now: 0,
            nodes: (0..n).map(|x| Arc::new(self.fresh_node(x))).collect(),
            net: vec![VecDeque::new(); n * n],
            left: self.cfg.budget.clone(),
            handed: vec![false; self.cfg.transfers],
            severed: BTreeSet::new(),
            votes: Arc::default(),
            damaged: self.cfg.amnesic.map(|x| (x, 0)),
            restarted_committed: false,
            amnesic_voted: false,
            fault: None,
            broken_promise: None,
        };
        for step in &self.cfg.prefix {
            let next = self.next_state(&s, step.clone());
            s = next.unwrap_or_else(|| panic!("the prefix's {step:?} is possible"));
        }
        vec![s]
    }

    fn actions(&self, s: &State, out: &mut Vec<Step>) {
        if s.fault.is_some() || s.broken_promise.is_some() {
            return;
        }
        self.channel_steps(s, out);
        for x in 0..self.n() {
            self.node_steps(s, x, out);
        }
        if s.left.resends > 0 {
            out.push(Step::Wait(Wait::Resend));
        }
        if s.left.timeouts > 0 {
            out.push(Step::Wait(Wait::Timeout));
        }
        for (i, _) in s.handed.iter().enumerate().filter(|(_, h)| !**h) {
            if self.live(s, TRANSFERS[i].0) {
                out.push(Step::Transfer(i));
            }
        }
    }

    fn next_state(&self, last: &State, step: Step) -> Option<State> {
        let mut s = last.clone();
        self.apply(&mut s, step)?;
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("no panic and no protocol error", |_, s: &State| {
                s.fault.is_none()
            }),
            Property::always("one block per depth", |_, s: &State| one_block_per_depth(s)),
            Property::always(
                "chains valid: no overdraft, money conserved, no id twice",
                |m: &Benmo, s: &State| s.nodes.iter().all(|x| chain_valid(m.n(), &x.chain)),
            ),
            Property::always(
                "every block is a value a majority accepted",
                |m: &Benmo, s: &State| {
                    s.nodes
                        .iter()
                        .all(|x| chosen_rounds(m, s, &x.chain).is_some())
                },
            ),
            Property::always(
                "no vote or promise below a durable promise",
                |_, s: &State| s.broken_promise.is_none(),
            ),
            Property::always("one value per depth and ballot", |_, s: &State| {
                s.votes.values().all(|v| v.len() == 1)
            }),
            Property::always("one value chosen per depth", |m: &Benmo, s: &State| {
                one_chosen_per_depth(m, s)
            }),
            Property::sometimes(COMMITS, |_, s: &State| {
                s.nodes
                    .iter()
                    .any(|x| x.chain.iter().any(|b| !b.transfers.is_empty()))
            }),
            Property::sometimes(ALL_COMMIT, all_commit_everywhere),
            Property::sometimes(LATER_ROUND, |m: &Benmo, s: &State| {
                let longest = s.nodes.iter().max_by_key(|x| x.chain.len()).unwrap();
                chosen_rounds(m, s, &longest.chain).is_some_and(|r| r.iter().any(|&r| r > 1))
            }),
            Property::sometimes(TWO_VALUES, two_values_at_one_depth),
            Property::sometimes(RESTARTED_COMMITS, |_, s: &State| s.restarted_committed),
            Property::sometimes(AMNESIC_VOTES, |_, s: &State| s.amnesic_voted),
        ]
    }
}

const COMMITS: &str = "a transfer commits";
const ALL_COMMIT: &str = "all transfers commit everywhere";
const LATER_ROUND: &str = "a value is chosen in a later round";
const TWO_VALUES: &str = "two ballots vote different values at one depth";
const RESTARTED_COMMITS: &str = "a restarted node commits";
const AMNESIC_VOTES: &str = "a recovering node votes again";

// ----- the properties, by the test's own arithmetic -----

/// Paxos' own safety property, by the votes: at most one value per depth ever had a
/// majority of durable accepts at one ballot. (A node that forgot a vote still cast it.)
fn one_chosen_per_depth(m: &Benmo, s: &State) -> bool {
    let quorum = m.n() / 2 + 1;
    let mut chosen: BTreeMap<u64, &Proposal> = BTreeMap::new();
    s.votes.iter().all(|((depth, _), votes)| {
        let won = votes
            .iter()
            .filter(|(_, who)| who.count_ones() as usize >= quorum);
        won.into_iter()
            .all(|(v, _)| *chosen.entry(*depth).or_insert(v) == v)
    })
}

fn one_block_per_depth(s: &State) -> bool {
    let longest = s.nodes.iter().map(|x| &x.chain).max_by_key(|c| c.len());
    let longest = longest.expect("at least one node");
    s.nodes
        .iter()
        .all(|x| x.chain.iter().zip(longest).all(|(a, b)| a == b))
}

/// Balances and next sequence numbers, as the chain says, without `Ledger`.
#[derive(Clone)]
struct Books {
    balances: Vec<u64>,
    next_seq: Vec<u64>,
    seen: BTreeSet<TxId>,
}

impl Books {
    fn new(n: usize) -> Books {
        Books {
            balances: vec![BALANCE; n],
            next_seq: vec![1; n],
            seen: BTreeSet::new(),
        }
    }

    /// Applies the transfer if it is valid here; says whether it was.
    fn admit(&mut self, id: TxId, credit: NodeId, amount: u64) -> bool {
        let (d, n) = (id.node, self.balances.len());
        let ok = d < n
            && credit < n
            && d != credit
            && amount > 0
            && id.seq == self.next_seq[d]
            && amount <= self.balances[d]
            && !self.seen.contains(&id);
        if ok {
            self.balances[d] -= amount;
            self.balances[credit] += amount;
            self.next_seq[d] += 1;
            self.seen.insert(id);
        }
        ok
    }
}

fn chain_valid(n: usize, chain: &[Block]) -> bool {
    let mut books = Books::new(n);
    let mut head = Hash::ZERO;
    for (i, b) in chain.iter().enumerate() {
        let linked = b.depth == i as u64 + 1 && b.prev == head && b.hash_is_valid();
        if !linked
            || !b
                .transfers
                .iter()
                .all(|t| books.admit(t.id, t.credit, t.amount))
        {
            return false;
        }
        head = b.hash;
    }
    books.balances.iter().sum::<u64>() == BALANCE * n as u64
}

/// For each block of the chain, the round of a ballot in which a majority accepted a value
/// whose seal is that block; None if some block has no such ballot.
fn chosen_rounds(m: &Benmo, s: &State, chain: &[Block]) -> Option<Vec<u64>> {
    let quorum = m.n() / 2 + 1;
    let mut books = Books::new(m.n());
    let mut rounds = Vec::new();
    for b in chain {
        let low = (b.depth, Ballot::default());
        let high = (b.depth + 1, Ballot::default());
        let round = s.votes.range(low..high).find_map(|((_, ballot), votes)| {
            let (v, who) = votes.iter().find(|(v, _)| seals_to(&books, v, b))?;
            (v.proposer == b.proposer && who.count_ones() as usize >= quorum)
                .then_some(ballot.round)
        })?;
        rounds.push(round);
        for t in &b.transfers {
            books.admit(t.id, t.credit, t.amount);
        }
    }
    Some(rounds)
}

/// Whether sealing `value` on `books` leaves exactly the block's transfers.
fn seals_to(books: &Books, value: &Proposal, b: &Block) -> bool {
    let mut scratch = books.clone();
    let kept = value
        .transfers
        .iter()
        .filter(|t| scratch.admit(t.id, t.credit, t.amount));
    kept.eq(b.transfers.iter())
}

fn all_commit_everywhere(m: &Benmo, s: &State) -> bool {
    let want = m.cfg.transfers;
    s.handed.iter().all(|&h| h)
        && s.nodes.iter().all(|x| {
            let on_chain: usize = x.chain.iter().map(|b| b.transfers.len()).sum();
            on_chain == want
        })
}

fn two_values_at_one_depth(_: &Benmo, s: &State) -> bool {
    let mut first: BTreeMap<u64, &Proposal> = BTreeMap::new();
    s.votes.iter().any(|((depth, _), votes)| {
        let v = &votes[0].0;
        *first.entry(*depth).or_insert(v) != v
    })
}

// ----- running and reporting -----

/// One checker at a time: the configurations share two cores.
static SERIAL: Mutex<()> = Mutex::new(());

const LIMIT: Duration = Duration::from_secs(600);

fn check(cfg: Config, threads: usize) {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (name, max, expect, pin) = (
        cfg.name.clone(),
        cfg.max_states,
        cfg.expect.clone(),
        cfg.states,
    );
    let start = Instant::now();
    let checker = Benmo::new(cfg)
        .checker()
        .threads(threads)
        .finish_when(HasDiscoveries::AnyFailures)
        .target_state_count(max)
        .timeout(LIMIT)
        .spawn_bfs()
        .join();
    let secs = start.elapsed();
    let found = checker.discoveries();
    let failed = failures(&checker, &found);
    let complete = checker.state_count() < max && secs < LIMIT && failed.is_empty();
    let word = if complete { "complete" } else { "incomplete" };
    let states = checker.unique_state_count();
    println!(
        "model {name}: {states} states, depth {}, {word}, {:.1} s",
        checker.max_depth(),
        secs.as_secs_f64()
    );
    assert!(failed.is_empty(), "model {name}: violated {failed:?}");
    assert!(complete, "model {name}: not complete within {max} states");
    if std::env::var_os("BENMO_MODEL_SHOW").is_some() {
        let mut shown: Vec<&str> = found.keys().copied().collect();
        shown.sort();
        println!("examples: {shown:?}");
    }
    let missing: Vec<_> = expect.iter().filter(|p| !found.contains_key(*p)).collect();
    assert!(
        missing.is_empty(),
        "model {name}: no example of {missing:?}"
    );
    if pin != 0 {
        assert_eq!(states, pin, "model {name}: the pinned unique state count");
    }
}

type Found = std::collections::HashMap<&'static str, stateright::Path<State, Step>>;

/// The violated properties, each with its trace printed to stderr.
fn failures(checker: &impl Checker<Benmo>, found: &Found) -> Vec<&'static str> {
    let model = checker.model();
    let sometimes = [
        COMMITS,
        ALL_COMMIT,
        LATER_ROUND,
        TWO_VALUES,
        RESTARTED_COMMITS,
        AMNESIC_VOTES,
    ];
    let mut failed = Vec::new();
    for (name, path) in found.iter().filter(|(n, _)| !sometimes.contains(n)) {
        eprintln!("counterexample to {name:?}:");
        print_trace(model, path.clone());
        failed.push(*name);
    }
    failed
}

fn print_trace(model: &Benmo, path: stateright::Path<State, Step>) {
    for (i, (state, step)) in path.into_vec().into_iter().enumerate() {
        eprintln!("{i:>3} {}", summary(model, &state));
        if let Some(step) = step {
            eprintln!("    -> {step:?}");
        }
    }
}

/// One line per state: the time; each node's depth, promise, role; channel sizes; the fault.
fn summary(model: &Benmo, s: &State) -> String {
    let mut line = format!("t{} ", s.now);
    for (x, node) in s.nodes.iter().enumerate() {
        let what = match &node.core {
            None => "down".to_string(),
            Some(c) => format!(
                "d{} p{}{}{}",
                c.ledger().depth,
                c.promised(),
                if c.is_leader() { " L" } else { "" },
                if c.recovering() { " R" } else { "" },
            ),
        };
        line += &format!("n{x}[{what} chain {}] ", node.chain.len());
    }
    let n = model.n();
    let queued: Vec<String> = (0..n * n)
        .filter(|&i| !s.net[i].is_empty())
        .map(|i| format!("{}>{}:{}", i / n, i % n, s.net[i].len()))
        .collect();
    line += &format!("net {queued:?}");
    if let Some(fault) = s.fault.as_ref().or(s.broken_promise.as_ref()) {
        line += &format!(" FAULT {fault}");
    }
    line
}

// ----- configurations -----

impl Config {
    fn base(name: &str) -> Config {
        Config {
            name: name.to_string(),
            nodes: 3,
            transfers: 2,
            window: 2,
            budget: Budget::default(),
            amnesic: None,
            classroom: false,
            whole_channels: false,
            max_states: 8_000_000,
            expect: Vec::new(),
            prefix: Vec::new(),
            states: 0,
        }
    }

    /// Bounds from `BENMO_MODEL_*` variables, for longer runs by hand.
    fn from_env() -> Config {
        let get = |key: &str, default: usize| -> usize {
            let var = format!("BENMO_MODEL_{key}");
            std::env::var(&var).map_or(default, |v| v.parse().expect("a number"))
        };
        let small = |key: &str, default: usize| get(key, default) as u8;
        Config {
            name: "explore".to_string(),
            nodes: get("NODES", 3),
            transfers: get("TRANSFERS", 2).min(TRANSFERS.len()),
            window: get("WINDOW", 2),
            budget: Budget {
                crashes: small("CRASHES", 1),
                losses: small("LOSSES", 1),
                dups: small("DUPS", 1),
                resends: small("RESENDS", 3),
                timeouts: small("TIMEOUTS", 2),
                elections: small("ELECTIONS", 2),
                compactions: small("COMPACTIONS", 1),
                severs: small("SEVERS", 0),
                restores: small("RESTORES", 1),
                recovers: small("RECOVERS", 0),
                batches: small("BATCHES", 1),
            },
            amnesic: std::env::var("BENMO_MODEL_AMNESIC")
                .ok()
                .map(|v| v.parse().unwrap()),
            classroom: get("CLASSROOM", 0) == 1,
            whole_channels: get("WHOLE", 0) == 1,
            max_states: get("STATES", 100_000_000),
            expect: Vec::new(),
            prefix: Vec::new(),
            states: 0,
        }
    }
}

/// Two elections, so a second ballot can find and re-propose (or replace) the first's values.
#[test]
fn elections() {
    let cfg = Config {
        budget: Budget {
            resends: 1,
            elections: 2,
            ..Budget::default()
        },
        expect: vec![COMMITS, ALL_COMMIT, LATER_ROUND, TWO_VALUES],
        states: 357198,
        ..Config::base("elections")
    };
    check(cfg, 2);
}

/// A crash at any moment, a compaction to `live_records`, and a restart from exactly what
/// was persisted.
#[test]
fn crash_restart() {
    let cfg = Config {
        transfers: 1,
        budget: Budget {
            crashes: 1,
            resends: 1,
            elections: 2,
            compactions: 1,
            ..Budget::default()
        },
        // A later round after a crash needs another wait: past this bound (`elections` has one).
        expect: vec![COMMITS, ALL_COMMIT, RESTARTED_COMMITS],
        states: 232662,
        ..Config::base("crash_restart")
    };
    check(cfg, 2);
}

/// Node 2 starts as `--recover` leaves it: it must wait, probe, and only then vote again.
#[test]
fn amnesia() {
    let cfg = Config {
        transfers: 1,
        window: 1,
        amnesic: Some(2),
        budget: Budget {
            resends: 1,
            timeouts: 1,
            elections: 1,
            ..Budget::default()
        },
        whole_channels: true,
        expect: vec![COMMITS, ALL_COMMIT, AMNESIC_VOTES],
        states: 200538,
        ..Config::base("amnesia")
    };
    check(cfg, 2);
}

/// Messages lost and duplicated; the leader resends.
#[test]
fn loss() {
    let cfg = Config {
        transfers: 1,
        budget: Budget {
            losses: 1,
            dups: 1,
            resends: 2,
            elections: 1,
            ..Budget::default()
        },
        expect: vec![COMMITS, ALL_COMMIT],
        states: 79367,
        ..Config::base("loss")
    };
    check(cfg, 2);
}

/// Five nodes, a few events: one election, one transfer.
#[test]
fn five() {
    let cfg = Config {
        nodes: 5,
        transfers: 1,
        window: 1,
        budget: Budget {
            resends: 1,
            elections: 1,
            ..Budget::default()
        },
        expect: vec![COMMITS],
        states: 11883,
        ..Config::base("five")
    };
    check(cfg, 2);
}

/// A severed and restored link, a duplicated message, and a two-message turn.
#[test]
fn link_faults() {
    let cfg = Config {
        transfers: 1,
        budget: Budget {
            resends: 1,
            elections: 1,
            severs: 1,
            restores: 1,
            dups: 1,
            batches: 1,
            ..Budget::default()
        },
        expect: vec![COMMITS, ALL_COMMIT],
        states: 50484,
        ..Config::base("link_faults")
    };
    check(cfg, 2);
}

/// The classroom policy: every depth decided by its own round, from prepare.
#[test]
fn classroom() {
    let cfg = Config {
        transfers: 1,
        classroom: true,
        budget: Budget {
            resends: 1,
            timeouts: 1,
            elections: 2,
            ..Budget::default()
        },
        // Both transfers committing everywhere takes two full rounds: past this bound.
        expect: vec![COMMITS],
        states: 77744,
        ..Config::base("classroom")
    };
    check(cfg, 2);
}

/// Issue 18, bug 1, from its setting on: five nodes L=0, A=1, P=2, Q=3, V=4, A cut off
/// from L. A runs for ballot b and counts V's promise; L runs for a lower ballot, wins with
/// P and Q and proposes X; V crashes, its promise sent. From there everything is explored:
/// V restarts from every cut of its log (`--recover`), time passes, messages go in any order.
/// Losing V's promise to b, V recovers, helps choose X, and P's late promise must not make
/// A (whose candidacy is past its leader timeout by then) leader to choose another value.
#[test]
fn recover_five() {
    let deliver = |from, to| Step::Deliver { from, to };
    let sever = |node, peer| Step::Sever { node, peer };
    let whole = |from, to| Step::DeliverChannel { from, to };
    let prefix = vec![
        Step::Transfer(0),
        Step::Transfer(1),
        sever(1, 0),
        sever(0, 1),
        Step::Wait(Wait::Resend),
        Step::Tick(1), // A: prepare b
        deliver(1, 4),
        deliver(4, 1), // A counts V's promise: 2 of 3
        Step::Tick(0), // L: prepare c < b
        deliver(0, 2),
        deliver(0, 3),
        deliver(2, 0),
        deliver(3, 0), // L leads, proposes X: its accept leaves before its vote's write
        Step::Sync(0), // L's vote is durable
        Step::Crash(4),
        sever(1, 4), // A hears nothing more from V,
        sever(2, 0), // nor P from L (P never accepts X)
        sever(0, 2),
        // V forgets its promise to b: `--recover` on a log cut before it.
        Step::Recover {
            node: 4,
            records: 0,
            blocks: 0,
        },
        Step::Wait(Wait::Timeout),
        Step::Tick(4), // V asks L, P and Q
        whole(4, 0),
        whole(4, 2),
        whole(4, 3),
        whole(0, 4),
        whole(2, 4),
        whole(3, 4), // V recovered: promised c (it no longer knows b)
        Step::Wait(Wait::Resend),
        Step::Tick(0), // L sends X again
        whole(0, 4),
        whole(0, 3), // X is chosen by L, Q and V
    ];
    let cfg = Config {
        nodes: 5,
        window: 1,
        budget: Budget {
            crashes: 1,
            severs: 5,
            resends: 2,
            timeouts: 1,
            elections: 2,
            recovers: 1,
            ..Budget::default()
        },
        prefix,
        max_states: 1_000_000,
        whole_channels: true,
        expect: vec![AMNESIC_VOTES],
        states: 22284,
        ..Config::base("recover_five")
    };
    check(cfg, 2);
}

#[test]
#[ignore = "long: bounds from BENMO_MODEL_* variables"]
fn explore() {
    let threads = std::env::var("BENMO_MODEL_THREADS").map_or(2, |v| v.parse().unwrap());
    check(Config::from_env(), threads);
}
