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
            return self.narrate(out, || Step::NoPromiseAmnesic { ballot, depth });
        }
        if ballot < self.promised {
            return self.refuse(from, ballot, Asked::Promise, out);
        }
        assert!(
            depth > self.vote_floor,
            "no promise at or below the vote floor"
        );
        let raised = ballot > self.promised;
        if raised {
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
        self.narrate(out, || Step::Promised {
            ballot,
            depth,
            to: from,
            carried: accepted.len(),
        });
        assert!(
            accepted.iter().all(|(_, b, _)| *b <= self.promised),
            "an acceptor's promise is at least every ballot it accepted"
        );
        self.send(vec![from], Message::Promise { ballot, accepted }, out);
        assert!(
            !raised || persisted_before_send(out, |r| *r == Record::Promise(ballot)),
            "a promise is on disk before it is sent"
        );
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
            return self.refuse(from, ballot, Asked::Accept, out);
        }
        if depth <= self.ledger.depth {
            // Decided here already. Voting again could count for a stale ballot with another
            // value (we may never have promised the ballot that decided it): say our depth
            // instead, and the sender fetches the block.
            return self.send(vec![from], Message::Hello, out);
        }
        if !self.may_accept() {
            return self.narrate(out, || Step::NoVoteRecovering { ballot, depth });
        }
        self.follow(ballot, out);
        self.promised = ballot;
        self.narrate(out, || Step::Voted {
            ballot,
            depth,
            from,
            value: value.clone(),
        });
        let record = Record::Accept {
            depth,
            ballot,
            value: value.clone(),
        };
        self.accepted.insert(depth, (ballot, value));
        assert!(
            self.accepted.values().all(|(b, _)| *b <= self.promised),
            "an acceptor's promise is at least every ballot it accepted"
        );
        out.push(Action::Persist(record));
        self.send(vec![from], Message::Accepted { ballot, depth }, out);
        assert!(
            persisted_before_send(
                out,
                |r| matches!(r, Record::Accept { depth: d, ballot: b, .. } if (*d, *b) == (depth, ballot))
            ),
            "a vote is on disk before its Accepted is sent"
        );
    }

    /// Refuses what was `asked` for a ballot lower than our promise, and says why.
    pub(super) fn refuse(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        asked: Asked,
        out: &mut Vec<Action>,
    ) {
        let promised = self.promised;
        self.narrate(out, || Step::Refused {
            ballot,
            asked,
            to: from,
            promised,
        });
        self.send(vec![from], Message::Reject { ballot, promised }, out);
    }
}

/// Whether `out`, if it ends in a `Send`, holds a `Persist` of a record that `is` picks
/// before it: the shell writes a turn's records before its sends, so a vote is durable
/// before any peer can count it. Nothing sent (every peer severed) holds nothing back.
pub(super) fn persisted_before_send(out: &[Action], is: impl Fn(&Record) -> bool) -> bool {
    match out.split_last() {
        Some((Action::Send { .. }, before)) => before
            .iter()
            .rev()
            .any(|a| matches!(a, Action::Persist(r) if is(r))),
        _ => true,
    }
}
