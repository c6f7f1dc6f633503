//! Recovery after lost state: an amnesic node asks its peers before it votes again.

use super::*;

/// A node that lost records (WAL records, or blocks, which record its votes once the WAL is
/// compacted) may have promised a ballot or accepted a value it no longer remembers, and
/// voting as if it had not could break Paxos. So it stays silent, waits out any election
/// that might have counted its forgotten promise (one leader timeout: a candidacy lasts no
/// longer), and asks its peers. Any majority of the others overlaps every quorum it took part
/// in, so their answers bound what it could have done: it then promises at least the highest
/// ballot they report, and never promises (phase 1) at or below the highest depth they know
/// plus `inflight_depths_max`, the furthest a leader proposes past what it has decided (its
/// vote floor). A promise there would report an incomplete list of accepted values.
///
/// Accepting (phase 2) below the floor is safe once the floor is known: every leader picks
/// its value from promises, and ours are never incomplete; a forgotten accept at a lower
/// ballot is covered by the majority of others that any later leader's promises come from.
/// That keeps a cluster live while one node is below its floor.
///
/// Only answers from peers that are not recovering themselves count: a recovering peer's
/// knowledge below its own floor is incomplete. So recoveries overlap safely only while the
/// nodes that are not recovering still form a majority; until then the node waits, and
/// says so.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Amnesia {
    /// When this node (re)started: the first time it saw the clock.
    pub(super) since: Option<u64>,
    pub(super) asked_at: Option<u64>,
    /// Drawn afresh by each incarnation; a reply must carry it to count.
    pub(super) nonce: u64,
    pub(super) replies: BTreeMap<NodeId, ProbeReply>,
    /// Whether it has said that it waits for a recovering peer.
    pub(super) said_waiting: bool,
}

/// A peer's answer to a `Probe`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProbeReply {
    /// The nonce of the probe this answers.
    pub nonce: u64,
    /// The peer's promise.
    pub promised: Ballot,
    /// The highest depth the peer knows of: its chain, what it accepted or proposed.
    pub top: u64,
    /// The highest sequence number of the prober's own transfers that the peer has committed.
    pub seq: u64,
    /// The peer is itself recovering (amnesic, or below its vote floor).
    pub recovering: bool,
}

impl Amnesia {
    pub(super) fn new(rng: &mut u64) -> Amnesia {
        Amnesia {
            since: None,
            asked_at: None,
            nonce: rand_next(rng) | 1, // never 0, the nonce of a floor reminder
            replies: BTreeMap::new(),
            said_waiting: false,
        }
    }
}

impl Core {
    /// Answers a probe, unless we lost state ourselves (we would answer with what we lost) or
    /// it is a floor reminder, which wants no answer.
    pub(super) fn on_probe(&mut self, from: NodeId, floor: u64, nonce: u64, out: &mut Vec<Action>) {
        if let Role::Leader(l) = &mut self.role {
            l.fill_up_to(floor);
        }
        if self.amnesia.is_some() || nonce == 0 {
            return;
        }
        let mut top = self
            .ledger
            .depth
            .max(self.accepted.keys().next_back().copied().unwrap_or(0));
        if let Role::Leader(l) = &self.role {
            top = top.max(l.top_proposed());
        }
        let reply = ProbeReply {
            nonce,
            promised: self.promised,
            top,
            // Committed numbers only: numbering past one that never commits would leave a
            // gap that blocks the whole queue. One that does commit later is reported then.
            seq: self.ledger.next_seq[from] - 1,
            recovering: self.recovering(),
        };
        self.send(vec![from], Message::ProbeReply(reply), out);
    }

    /// Counts a reply to our current probe; ends the amnesia once a majority of peers that
    /// are not recovering themselves have answered.
    pub(super) fn on_probe_reply(
        &mut self,
        from: NodeId,
        reply: ProbeReply,
        out: &mut Vec<Action>,
    ) {
        let quorum = self.quorum();
        let Some(a) = &mut self.amnesia else { return };
        if a.asked_at.is_none() || reply.nonce != a.nonce {
            return; // not an answer to a probe this incarnation sent after its wait
        }
        a.replies.insert(from, reply);
        let sound = a.replies.values().filter(|r| !r.recovering).count();
        if sound >= quorum {
            return self.end_amnesia(out);
        }
        let peers: Vec<NodeId> = a
            .replies
            .iter()
            .filter(|(_, r)| r.recovering)
            .map(|(&p, _)| p)
            .collect();
        if !peers.is_empty() && !a.said_waiting {
            a.said_waiting = true;
            out.push(Action::Reply(Reply::Waiting { peers }));
        }
    }

    /// Asks the peers, once a leader timeout has passed since start (so that any election
    /// that counted a forgotten promise is over), and again every resend interval. Enforced
    /// where replies are handled: `on_probe_reply` counts none before `asked_at` is set; the
    /// other side, that no candidacy counts a promise after a leader timeout, is enforced in
    /// `on_promise` and `try_win` (`candidacy_expired`).
    pub(super) fn probe(&mut self, out: &mut Vec<Action>) {
        let Some(a) = &mut self.amnesia else { return };
        let since = *a.since.get_or_insert(self.now);
        let due = a
            .asked_at
            .is_none_or(|at| self.now >= at + self.timing.resend_ms);
        if self.now < since + self.timing.leader_timeout_ms || !due {
            return;
        }
        a.asked_at = Some(self.now);
        let nonce = a.nonce;
        if self.n == 1 {
            return self.end_amnesia(out); // no one else could have counted on us
        }
        self.narrate(out, || Step::Probing);
        self.broadcast(Message::Probe { floor: 0, nonce }, out);
    }

    pub(super) fn end_amnesia(&mut self, out: &mut Vec<Action>) {
        let Some(a) = self.amnesia.take() else { return };
        let sound: Vec<&ProbeReply> = a.replies.values().filter(|r| !r.recovering).collect();
        let promised = sound.iter().map(|r| r.promised).max().unwrap_or_default();
        let top = sound.iter().map(|r| r.top).max().unwrap_or(0);
        let seq = sound.iter().map(|r| r.seq).max().unwrap_or(0);
        assert!(
            self.n == 1 || sound.len() >= self.quorum(),
            "a majority answered"
        );
        self.promised = self.promised.max(promised);
        self.highest_seen = self.highest_seen.max(self.promised);
        if !sound.is_empty() {
            // A lone node (n = 1) needs no floor: no one else could have counted on it.
            self.vote_floor = self
                .vote_floor
                .max(top + self.timing.inflight_depths_max as u64);
        }
        self.next_own_seq = self.next_own_seq.max(seq.saturating_add(1));
        out.push(Action::Persist(Record::Promise(self.promised)));
        out.push(Action::Persist(Record::VoteFloor(self.vote_floor)));
        out.push(Action::Reply(Reply::Recovered {
            promised: self.promised,
            floor: self.vote_floor,
        }));
        if self.ledger.depth >= self.vote_floor {
            Self::caught_up(self.ledger.depth, out);
        }
    }

    pub(super) fn caught_up(depth: u64, out: &mut Vec<Action>) {
        out.push(Action::Reply(Reply::CaughtUp { depth }));
    }
}
