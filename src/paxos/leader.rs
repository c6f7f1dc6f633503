//! Running for leader, winning, and proposing: windows, batching, retransmission.

use super::leadership::Slot;
use super::*;

impl Core {
    pub(super) fn start_election(&mut self, out: &mut Vec<Action>) {
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
        if self.may_promise(self.ledger.depth + 1) {
            assert!(
                self.ledger.depth + 1 > self.vote_floor,
                "a promise only above the floor"
            );
            promises.insert(self.id, (self.ledger.depth, mine)); // else the others must suffice
        }
        self.role = Role::Candidate(Candidacy {
            ballot,
            promises,
            started: self.now,
        });
        let depth = self.ledger.depth + 1;
        self.narrate(out, || Step::Prepare { ballot, depth });
        self.broadcast(Message::Prepare { ballot, depth }, out);
        self.try_win(out);
    }

    pub(super) fn on_promise(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        depth: u64,
        accepted: AcceptedList,
        out: &mut Vec<Action>,
    ) {
        if self.candidacy_expired(out) {
            return; // it counts no promise: the one that would make it win may be forgotten
        }
        if let Role::Candidate(c) = &mut self.role {
            if c.ballot == ballot {
                // Copied only when narrated: promises need no copies otherwise.
                let carried = match self.verbose {
                    true => accepted.clone(),
                    false => Vec::new(),
                };
                c.promises.insert(from, (depth, accepted));
                let (have, nodes, quorum) = (c.promises.len(), self.n, self.quorum());
                self.narrate(out, || Step::PromiseFrom {
                    ballot,
                    from,
                    have,
                    nodes,
                    quorum,
                    carried,
                });
                self.try_win(out);
            }
        }
    }

    pub(super) fn on_reject(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        promised: Ballot,
        out: &mut Vec<Action>,
    ) {
        if self.role_ballot() == Some(ballot) {
            self.narrate(out, || Step::RefusedBy {
                ballot,
                from,
                promised,
            });
        }
        self.see_ballot(promised, out);
    }

    /// Ends a candidacy that has lasted a leader timeout, and says whether it did. Recovery
    /// relies on this (see `Amnesia`): a node that forgot a promise waits a leader timeout
    /// before it votes again, so no candidacy may count a promise, or win, after that long.
    /// Checked where promises are handled, not only on a tick: a turn handles its messages
    /// before its tick, and after a stall a late promise would still count.
    pub(super) fn candidacy_expired(&mut self, out: &mut Vec<Action>) -> bool {
        let Role::Candidate(c) = &self.role else {
            return false;
        };
        if self.now < c.started + self.timing.leader_timeout_ms {
            return false;
        }
        let ballot = c.ballot;
        self.narrate(out, || Step::ElectionTimedOut { ballot });
        self.role = Role::Follower;
        self.election_at = Some(self.now + self.random_delay());
        true
    }

    /// With promises from a majority, become leader: re-propose the values they accepted.
    pub(super) fn try_win(&mut self, out: &mut Vec<Action>) {
        if self.candidacy_expired(out) {
            return;
        }
        let Role::Candidate(c) = &self.role else {
            return;
        };
        if c.promises.len() < self.quorum() {
            return;
        }
        assert!(
            c.promises.len() <= self.n,
            "promises come from distinct nodes of the cluster"
        );
        let ballot = c.ballot;
        let (ahead, ahead_depth) = c
            .promises
            .iter()
            .map(|(&p, (d, _))| (p, *d))
            .max_by_key(|&(_, d)| d)
            .unwrap();
        let mut adopted: BTreeMap<u64, (Ballot, Proposal)> = BTreeMap::new();
        let mut told: BTreeMap<u64, NodeId> = BTreeMap::new();
        for (&p, (_, acc)) in &c.promises {
            for (depth, b, value) in acc {
                if *depth > self.ledger.depth && adopted.get(depth).is_none_or(|(ab, _)| ab < b) {
                    adopted.insert(*depth, (*b, value.clone()));
                    told.insert(*depth, p);
                }
            }
        }
        if ahead_depth > self.ledger.depth {
            // Depths we do not have are decided; their values may be pruned. Catch up first.
            self.narrate(out, || Step::Behind {
                ahead,
                depth: ahead_depth,
            });
            self.role = Role::Follower;
            self.election_at = Some(self.now + self.timing.resend_ms);
            self.catch_up = None;
            self.peer_depth[ahead] = ahead_depth;
            return self.maybe_catch_up(ahead, out);
        }
        for (&depth, &(accepted, _)) in &adopted {
            let from = told[&depth];
            self.narrate(out, || Step::Adopt {
                ballot,
                depth,
                from,
                accepted,
            });
        }
        self.become_leader(ballot, adopted, out);
    }

    pub(super) fn become_leader(
        &mut self,
        ballot: Ballot,
        adopted: BTreeMap<u64, (Ballot, Proposal)>,
        out: &mut Vec<Action>,
    ) {
        let Role::Candidate(c) = &self.role else {
            unreachable!("only a candidate wins");
        };
        assert_eq!(
            self.promised, ballot,
            "a candidate still holds its own promise when it wins"
        );
        let (have, nodes, quorum) = (c.promises.len(), self.n, self.quorum());
        // The promisers were just heard from: they count in the first majority check.
        let heard: Vec<bool> = (0..self.n).map(|p| c.promises.contains_key(&p)).collect();
        let depth = self.ledger.depth + 1;
        self.narrate(out, || Step::Elected {
            ballot,
            depth,
            have,
            nodes,
            quorum,
        });
        let intake = vec![BTreeMap::new(); self.n];
        self.offered_upto = 0; // offer our own queue afresh, as to any leader
        let adopted_top = adopted
            .keys()
            .next_back()
            .copied()
            .unwrap_or(self.ledger.depth);
        self.role = Role::Leader(Box::new(Leadership {
            ballot,
            next_depth: self.ledger.depth + 1,
            inflight: BTreeMap::new(),
            projected: self.ledger.clone(),
            intake,
            last_heartbeat: self.now,
            quorum_period: self.now / (2 * self.timing.leader_timeout_ms),
            heard,
            adopted: adopted.into_iter().map(|(d, (_, v))| (d, v)).collect(),
            adopted_top,
            first_depth: self.ledger.depth + 1,
            accept_at: match self.phase_delay() {
                0 => 0,
                hold => self.now + hold,
            },
            decide_hold: None,
            fill_to: self.vote_floor,
        }));
        if self.phase_delay() > 0 {
            let hold = self.phase_delay();
            self.narrate(out, || Step::AcceptIn { ballot, hold });
        }
        self.leader = Some(ballot);
        self.election_at = None;
        // The adopted values go out on this turn's tick (`lead`), within the window.
        self.broadcast(Message::Heartbeat { ballot }, out);
    }

    /// Phase 2 for the leader's next depth: accept the value ourselves, then ask everyone.
    pub(super) fn propose(&mut self, value: Proposal, out: &mut Vec<Action>) {
        assert!(self.may_accept(), "an amnesic node never leads");
        let Role::Leader(l) = &mut self.role else {
            unreachable!("only a leader proposes");
        };
        let depth = l.next_depth;
        let ballot = l.ballot;
        let window = self.timing.inflight_depths_max;
        assert!(
            l.inflight.len() < window,
            "a leader proposes within its window"
        );
        assert!(
            depth > self.ledger.depth,
            "a leader proposes only above its chain"
        );
        let block = l.projected.seal(value.proposer, &value.transfers);
        assert!(
            l.projected.apply(&block).is_ok(),
            "a sealed block applies to the ledger it was sealed on"
        );
        l.next_depth += 1;
        // Our own vote counts once its record is durable (`Loopback`), as anyone else's.
        let acks = vec![false; self.n];
        let fresh = l.inflight.insert(
            depth,
            Slot {
                value: value.clone(),
                acks,
                sent_at: self.now,
            },
        );
        assert!(fresh.is_none(), "one proposal per depth and ballot");
        assert!(l.inflight.len() <= window, "the window holds");
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
        self.narrate(out, || Step::Propose {
            ballot,
            depth,
            value: value.clone(),
        });
        self.loopback(Message::Accepted { ballot, depth }, out);
        // The accept leaves while our own vote is still being written (Raft §10.2.1), unless
        // it carries a transfer of ours whose queue record is in this turn's writes too.
        let unsynced = self.unsynced_from.is_some_and(|from| {
            let me = self.id;
            value
                .transfers
                .iter()
                .any(|t| t.debit() == me && t.id.seq >= from)
        });
        let start = out.len();
        self.broadcast(
            Message::Accept {
                ballot,
                depth,
                value,
            },
            out,
        );
        assert!(
            super::acceptor::persisted_before_send(
                out,
                |r| matches!(r, Record::Accept { depth: d, ballot: b, .. } if (*d, *b) == (depth, ballot))
            ),
            "a leader's own vote is in this turn's writes, before its Accept"
        );
        if !unsynced {
            Self::early_since(out, start);
        }
    }

    pub(super) fn on_accepted(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        depth: u64,
        out: &mut Vec<Action>,
    ) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        if l.ballot != ballot {
            return;
        }
        if let Some(slot) = l.inflight.get_mut(&depth) {
            slot.acks[from] = true;
            let have = slot.acks.iter().filter(|&&a| a).count();
            let (nodes, quorum) = (self.n, self.quorum());
            self.narrate(out, || Step::AcceptedFrom {
                ballot,
                depth,
                from,
                have,
                nodes,
                quorum,
            });
            self.check_chosen(depth, out);
        }
    }

    /// Decides `depth` once a majority accepted it; with a classroom phase delay, holds the
    /// decide back that long first (`lead` sends it when the time comes).
    pub(super) fn check_chosen(&mut self, depth: u64, out: &mut Vec<Action>) {
        let (quorum, now, hold) = (self.quorum(), self.now, self.phase_delay());
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let votes = l
            .inflight
            .get(&depth)
            .map_or(0, |s| s.acks.iter().filter(|&&a| a).count());
        assert!(
            votes <= l.projected.balances.len(),
            "votes come from distinct nodes of the cluster"
        );
        let chosen = votes >= quorum;
        if !chosen {
            return;
        }
        let ballot = l.ballot;
        if hold > 0 && l.decide_hold.is_none() {
            l.decide_hold = Some((depth, now + hold));
            return self.narrate(out, || Step::ChosenHeld {
                ballot,
                depth,
                hold,
            });
        }
        if l.decide_hold.is_some_and(|(d, at)| d == depth && now < at) {
            return;
        }
        let held = l.decide_hold.take().is_some();
        self.decide(ballot, depth, held, out);
    }

    /// `held`: the decide was held back, and `ChosenHeld` said it was chosen.
    fn decide(&mut self, ballot: Ballot, depth: u64, held: bool, out: &mut Vec<Action>) {
        let Role::Leader(l) = &mut self.role else {
            unreachable!("only a leader decides");
        };
        let slot = l
            .inflight
            .remove(&depth)
            .expect("a chosen slot is in flight");
        self.narrate(out, || Step::Decide {
            ballot,
            depth,
            value: slot.value.clone(),
            held,
        });
        assert!(
            self.accepted
                .get(&depth)
                .is_some_and(|(b, v)| *b == ballot && *v == slot.value),
            "a leader decides the value it accepted itself in this ballot"
        );
        let before = self.decided.insert(depth, slot.value.clone());
        assert!(
            before.is_none_or(|v| v == slot.value),
            "a chosen value is never replaced"
        );
        // Chosen: a majority's votes are durable, so the decide waits for no write of ours.
        let start = out.len();
        self.broadcast(Message::Decide { ballot, depth }, out);
        Self::early_since(out, start);
        self.apply_decided(out);
    }

    /// Classroom: one full round per block. The leader lets its ballot go once its depth is
    /// settled (decided by it or learned otherwise), or when it has nothing to propose, so
    /// the next depth starts again from prepare, after a random delay.
    fn end_round(&mut self, out: &mut Vec<Action>) {
        let Role::Leader(l) = &self.role else {
            return;
        };
        let busy = !l.inflight.is_empty() || l.decide_hold.is_some() || self.now < l.accept_at;
        if busy {
            return;
        }
        let (ballot, depth) = (l.ballot, l.first_depth);
        self.narrate(out, || Step::RoundOver { ballot, depth });
        self.role = Role::Follower;
        self.leader = None;
    }

    /// The classroom's pause between phases, in ms (0: none).
    fn phase_delay(&self) -> u64 {
        match self.classroom {
            true => self.timing.phase_delay_ms,
            false => 0,
        }
    }

    pub(super) fn on_forward(&mut self, from: NodeId, transfers: Vec<Transfer>) {
        let window = self.timing.offer_window();
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
        // A node may only offer transfers from its own account, and at most the window an
        // origin offers (`next_offer`): the intake stays bounded whatever a peer sends.
        let next = l.projected.next_seq[from];
        for t in transfers.into_iter().filter(|t| t.debit() == from) {
            if t.id.seq >= next && t.id.seq - next < window {
                l.intake[from].insert(t.id.seq, t);
            }
        }
        assert!(
            l.intake[from].range(next..).count() as u64 <= window,
            "an intake holds one offer window past what is proposed"
        );
    }

    /// Takes the next batch from the intake: from each origin in turn, a share of the run of
    /// transfers that continues its sequence on the projected ledger, so that one busy origin
    /// cannot fill every block.
    pub(super) fn next_batch(l: &mut Leadership, max: usize) -> Vec<Transfer> {
        let mut next = l.projected.next_seq.clone();
        let window = Timing::offer_window_for(max);
        for (origin, offered) in l.intake.iter_mut().enumerate() {
            *offered = offered.split_off(&next[origin]); // already proposed or committed
            assert!(
                offered.len() as u64 <= window,
                "an intake holds one offer window"
            );
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

    /// A leader's tick: propose what has arrived, retransmit, and show it is alive.
    pub(super) fn lead(&mut self, out: &mut Vec<Action>) {
        if !self.check_quorum(out) {
            return;
        }
        let held = match &self.role {
            Role::Leader(l) => l.decide_hold.filter(|&(_, at)| self.now >= at),
            _ => None,
        };
        if let Some((depth, _)) = held {
            self.check_chosen(depth, out);
            if !self.is_leader() {
                return; // the classroom round is over
            }
        }
        self.propose_intake(out);
        if self.classroom {
            self.end_round(out);
            if !self.is_leader() {
                return;
            }
        }
        self.resend_accepts(out);
        self.heartbeat(out);
    }

    /// Every two leader timeouts, a leader that has not heard from a majority in that time
    /// steps down (etcd's CheckQuorum): cut off, it can decide nothing, and should not say
    /// that it leads. So it stops leading within four leader timeouts of losing its majority.
    /// Every node that does not lead says hello once a leader timeout (`say_hello`), so a
    /// connected follower is heard in every period, even when there is no traffic.
    /// Returns whether it still leads. Liveness only: recovery does not rely on a cut-off
    /// leader stepping down (the probe's majority learns the ballot of any leader that won).
    fn check_quorum(&mut self, out: &mut Vec<Action>) -> bool {
        let (id, quorum) = (self.id, self.quorum());
        let timeout = 2 * self.timing.leader_timeout_ms;
        let period = self.now / timeout;
        let Role::Leader(l) = &mut self.role else {
            unreachable!("only a leader checks its quorum");
        };
        if period == l.quorum_period {
            return true;
        }
        l.heard[id] = true;
        let heard = l.heard.iter().filter(|&&h| h).count();
        l.heard.iter_mut().for_each(|h| *h = false);
        l.quorum_period = period;
        if heard >= quorum {
            return true;
        }
        let why = StepDown::NoMajority {
            heard,
            nodes: self.n,
            ms: timeout,
        };
        self.step_down(why, out);
        false
    }

    /// Proposes while fewer than `inflight_depths_max` depths are undecided: adopted values
    /// first, then batches from the intake.
    pub(super) fn propose_intake(&mut self, out: &mut Vec<Action>) {
        let own = self.next_offer();
        let (id, window, max_batch) = (
            self.id,
            self.timing.inflight_depths_max,
            self.timing.batch_transfers_max,
        );
        if let Role::Leader(l) = &mut self.role {
            l.intake[id].extend(own.into_iter().map(|t| (t.id.seq, t)));
        }
        loop {
            let Role::Leader(l) = &mut self.role else {
                return; // it stepped down: a decision showed its plan was stale
            };
            if l.inflight.len() >= window || self.now < l.accept_at {
                return;
            }
            if self.classroom && l.next_depth > l.first_depth {
                return; // one depth per round
            }
            let Some(value) = Self::next_value(l, id, max_batch) else {
                return;
            };
            self.propose(value, out);
        }
    }

    /// The value for the next depth: an adopted one, else a batch from the intake, else an
    /// empty block while below `fill_to`. `None`: nothing to propose.
    fn next_value(l: &mut Leadership, id: NodeId, max_batch: usize) -> Option<Proposal> {
        let empty = Proposal {
            proposer: id,
            transfers: vec![],
        };
        if l.next_depth <= l.adopted_top {
            return Some(l.adopted.remove(&l.next_depth).unwrap_or(empty));
        }
        let transfers = Self::next_batch(l, max_batch);
        if transfers.is_empty() && l.next_depth > l.fill_to {
            return None;
        }
        Some(Proposal {
            proposer: id,
            transfers,
        })
    }

    /// Sends an accept again to the peers that have not answered it within `resend`.
    pub(super) fn resend_accepts(&mut self, out: &mut Vec<Action>) {
        let (others, now, resend) = (self.others(), self.now, self.timing.resend_ms);
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

    pub(super) fn heartbeat(&mut self, out: &mut Vec<Action>) {
        let (now, every) = (self.now, self.timing.heartbeat_ms);
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        if now >= l.last_heartbeat + every {
            l.last_heartbeat = now;
            let ballot = l.ballot;
            self.broadcast(Message::Heartbeat { ballot }, out);
        }
    }
}
