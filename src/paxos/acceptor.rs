//! The acceptor: promises and accepted values, the part of Paxos that keeps it safe.

use super::*;

impl Core {
    /// Whether this acceptor may promise for depths from `depth` up: a promise reports what
    /// it accepted there, which after lost state is complete only above its vote floor,
    /// and, after a start, only once its peers have vouched that its disk is not behind.
    pub(super) fn may_promise(&self, depth: u64) -> bool {
        self.amnesia.is_none() && depth > self.vote_floor && !self.checking()
    }

    /// Whether this acceptor may accept values: at any depth once it knows its vote floor
    /// (see `Amnesia` for why that is safe), and not while its start check runs.
    pub(super) fn may_accept(&self) -> bool {
        self.amnesia.is_none() && !self.checking()
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
                format!("ballot {ballot} depth {depth}: not promising: this node lost state and cannot say what it accepted there")
            });
        }
        if ballot < self.promised {
            return self.refuse(from, ballot, "promise", out);
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
            let had = match accepted.as_slice() {
                [] => "nothing accepted there".to_string(),
                list => format!("with the {} values it accepted there", list.len()),
            };
            format!("ballot {ballot} depth {depth}: promise to node {from}, {had}; no lower ballot counts here from now on")
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
            return self.refuse(from, ballot, "accept", out);
        }
        if depth <= self.ledger.depth {
            // Decided here already. Voting again could count for a stale ballot with another
            // value (we may never have promised the ballot that decided it): say our depth
            // instead, and the sender fetches the block.
            return self.send(vec![from], Message::Hello, out);
        }
        if !self.may_accept() {
            return self.log(out, || {
                format!("ballot {ballot} depth {depth}: not voting: recovering lost state")
            });
        }
        self.follow(ballot, out);
        self.promised = ballot;
        self.log(out, || {
            format!(
                "ballot {ballot} depth {depth}: accept {} from node {from}: accepted",
                leader::describe(&value)
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

    /// Refuses a `what` (promise or accept) for a ballot lower than our promise, and says why.
    pub(super) fn refuse(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        what: &str,
        out: &mut Vec<Action>,
    ) {
        let promised = self.promised;
        self.log(out, || {
            format!("ballot {ballot}: {what} refused to node {from}: already promised {promised}")
        });
        self.send(vec![from], Message::Reject { ballot, promised }, out);
    }
}
