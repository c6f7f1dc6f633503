//! Role changes, and the state that more than one role acts on: the highest ballot seen,
//! stepping down, following a leader, and offering this node's own queue. The role files
//! (acceptor, leader, learner, follower) call these; these call no role file, so no two
//! role files need to call each other.

use super::*;

impl Core {
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
