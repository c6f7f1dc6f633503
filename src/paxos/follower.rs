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
}
