//! Following a leader: links, hellos, forwarding our queue, and catching up.

use super::*;

impl Core {
    pub(super) fn on_link(&mut self, peer: NodeId, up: bool, out: &mut Vec<Action>) {
        if peer >= self.n || peer == self.id {
            return;
        }
        self.link_up[peer] = up;
        if up && self.severed[peer] {
            // A peer that restarted forgot what we told it: say it again.
            Self::notify_severed(peer, self.ledger.depth, out);
        } else if up {
            self.send(vec![peer], Message::Hello, out);
        }
    }

    /// Asks `peer` for the blocks we miss, unless a request is already out. The deadline only
    /// paces retries: blocks are applied whenever they come, which is safe at any time.
    pub(super) fn maybe_catch_up(&mut self, peer: NodeId, out: &mut Vec<Action>) {
        let waiting = self
            .catch_up
            .is_some_and(|(_, deadline)| self.now < deadline);
        if self.peer_depth[peer] > self.ledger.depth && !waiting {
            self.catch_up = Some((peer, self.now + self.timing.resend_ms));
            let from = self.ledger.depth + 1;
            self.narrate(out, || Step::CatchingUp { peer, from });
            self.send(vec![peer], Message::CatchUp { from }, out);
        }
    }

    /// Asks a random peer known to be ahead, if no request is out. Without this, a request
    /// lost with its peer was never repeated unless that same peer spoke again, and an idle
    /// cluster says nothing: the node stayed behind for good.
    pub(super) fn retry_catch_up(&mut self, out: &mut Vec<Action>) {
        let ahead: Vec<NodeId> = (0..self.n)
            .filter(|&p| p != self.id && !self.severed[p] && self.peer_depth[p] > self.ledger.depth)
            .collect();
        if self.catch_up.is_none() && !ahead.is_empty() {
            let peer = ahead[(rand_next(&mut self.rng) % ahead.len() as u64) as usize];
            self.maybe_catch_up(peer, out);
        }
    }

    /// Notes a higher ballot. If it beats our own candidacy or leadership, we step down.
    pub(super) fn see_ballot(&mut self, ballot: Ballot, out: &mut Vec<Action>) {
        self.highest_seen = self.highest_seen.max(ballot);
        if self.role_ballot().is_some_and(|mine| ballot > mine) {
            self.step_down(StepDown::HigherBallot(ballot), out);
        }
    }

    /// Stops running or leading; `why` says why, in verbose output.
    pub(super) fn step_down(&mut self, why: StepDown, out: &mut Vec<Action>) {
        self.narrate(out, || Step::SteppingDown(why));
        self.role = Role::Follower;
        if self.leader.is_some_and(|b| b.node == self.id) {
            self.leader = None;
        }
        self.forwarded_at = None;
    }

    /// Accept, Decide and Heartbeat with a ballot we honour all say who leads.
    pub(super) fn follow(&mut self, ballot: Ballot, out: &mut Vec<Action>) {
        self.see_ballot(ballot, out);
        if ballot.node == self.id {
            return;
        }
        if self.leader != Some(ballot) {
            self.narrate(out, || Step::Following { ballot });
            self.forwarded_at = None; // hand the whole queue to the new leader
        }
        self.leader = Some(ballot);
        self.heard_leader_at = self.now;
        self.election_at = None;
    }

    pub(super) fn on_heartbeat(&mut self, from: NodeId, ballot: Ballot, out: &mut Vec<Action>) {
        if ballot < self.promised {
            return self.refuse(from, ballot, Asked::Heartbeat, out);
        }
        self.follow(ballot, out);
    }

    /// Asks the leader, now and then, to carry the chain past our vote floor.
    pub(super) fn remind_leader(&mut self, out: &mut Vec<Action>) {
        let Some(leader) = self.leader.map(|b| b.node) else {
            return;
        };
        if self.now >= self.reminded_at + self.timing.resend_ms {
            self.reminded_at = self.now;
            let floor = self.vote_floor;
            self.send(vec![leader], Message::Probe { floor, nonce: 0 }, out);
        }
    }

    /// Every leader timeout, a node that is not leading tells its peers its depth. With no
    /// leader there is no other traffic, and a lagging node must still learn it is behind.
    pub(super) fn say_hello(&mut self, out: &mut Vec<Action>) {
        if self.now >= self.hello_at {
            self.hello_at = self.now + self.timing.leader_timeout_ms;
            if !self.is_leader() {
                self.broadcast(Message::Hello, out);
            }
        }
    }

    pub(super) fn follow_tick(&mut self, out: &mut Vec<Action>) {
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
            if self.classroom {
                return; // a round is under way; ours comes after it, with our own transfers
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
                let defer = match self.may_promise(self.ledger.depth + 1) {
                    true => 0,
                    false => self.timing.leader_timeout_ms,
                };
                let delay = self.random_delay() + defer;
                self.election_at = Some(self.now + delay);
                self.narrate(out, || Step::ElectionIn { delay });
            }
            Some(at) if self.now >= at => self.start_election(out),
            Some(_) => {}
        }
    }

    /// Hands new transfers to the leader at once, and the whole window again now and then,
    /// since a forward can be lost with a leader. The queue stays ours until it commits.
    pub(super) fn forward(&mut self, out: &mut Vec<Action>) {
        let Some(leader) = self.leader.map(|b| b.node) else {
            return;
        };
        let due = self
            .forwarded_at
            .is_none_or(|at| self.now >= at + self.timing.resend_ms);
        if due {
            self.forwarded_at = Some(self.now);
            self.offered_upto = 0;
        }
        let transfers = self.next_offer();
        if !transfers.is_empty() {
            let count = transfers.len();
            self.narrate(out, || Step::Forwarding { count, leader });
            self.send(vec![leader], Message::Forward { transfers }, out);
        }
    }

    /// The next run of our own queue to offer the leader: what we have not offered yet, at
    /// most a window ahead of what has committed. This is flow control: a leader holds at
    /// most a window of each origin's queue, however long the queue grows.
    pub(super) fn next_offer(&mut self) -> Vec<Transfer> {
        let committed = self.ledger.next_seq[self.id] - 1;
        let from = self.offered_upto.max(committed) + 1;
        let to = committed + self.timing.offer_window();
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
