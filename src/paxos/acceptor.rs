//! The acceptor: promises and accepted values, the part of Paxos that keeps it safe.

use super::*;

impl Core {
    /// Whether this acceptor may promise for depths from `depth` up: a promise reports what
    /// it accepted there, which after lost state is complete only above its vote floor.
    pub(super) fn may_promise(&self, depth: u64) -> bool {
        self.amnesia.is_none() && depth > self.vote_floor
    }

    /// Whether this acceptor may accept values: at any depth once it knows its vote floor
    /// (see `Amnesia` for why that is safe).
    pub(super) fn may_accept(&self) -> bool {
        self.amnesia.is_none()
    }

    pub(super) fn on_prepare(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        depth: u64,
        out: &mut Vec<Action>,
    ) {
        self.see_ballot(ballot, out);
        if !self.may_promise(depth) {
            return self.log(out, || {
                format!("not promising ballot {ballot}: recovering lost state")
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

    pub(super) fn on_accept(
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
        if !self.may_accept() {
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
}
