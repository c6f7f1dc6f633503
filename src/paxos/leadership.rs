//! The state of a leader and of a candidate, with the methods that keep it consistent.
//! Its own file, apart from the leader's behaviour in `leader.rs`, so that the learner and
//! recovery can ask a leader's state questions without calling into another role's file.

use super::*;

/// A leader's view of one depth in flight.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Slot {
    pub(super) value: Proposal,
    pub(super) acks: Vec<bool>,
    pub(super) sent_at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Leadership {
    pub(super) ballot: Ballot,
    pub(super) next_depth: u64,
    pub(super) inflight: BTreeMap<u64, Slot>,
    /// The ledger as it will be once every depth in flight is decided.
    pub(super) projected: Ledger,
    /// Transfers offered by each origin, by sequence number, not yet proposed.
    pub(super) intake: Vec<BTreeMap<u64, Transfer>>,
    pub(super) last_heartbeat: u64,
    /// The period (of two leader timeouts, counted from time 0) it last checked that it
    /// heard from a majority in (see `check_quorum`). Periods, not times, keep the states of
    /// leaders elected at slightly different times alike.
    pub(super) quorum_period: u64,
    /// The peers heard from since the last check (at first, those that promised).
    pub(super) heard: Vec<bool>,
    /// Values the promises reported above our chain, proposed again first, in order; a hole
    /// up to `adopted_top` is filled with an empty block (nobody accepted anything there, so
    /// nothing can have been chosen).
    pub(super) adopted: BTreeMap<u64, Proposal>,
    pub(super) adopted_top: u64,
    /// The first depth it proposes: in the classroom, the only one.
    pub(super) first_depth: u64,
    /// No accept goes out before this time (the classroom's phase delay after promises).
    pub(super) accept_at: u64,
    /// A chosen depth whose decide is held back until the time given (phase delay).
    pub(super) decide_hold: Option<(u64, u64)>,
    /// Propose empty blocks, if nothing else, up to this depth: the vote floor of a
    /// recovering node, which takes no transfers until the chain has passed it.
    pub(super) fill_to: u64,
}

impl Leadership {
    /// Settles `depth`, decided as `value` by someone: true if that breaks this leader's
    /// plan (a depth it had not proposed yet, or a slot it proposed with another value).
    pub(super) fn settle(&mut self, depth: u64, value: &Proposal) -> bool {
        let unplanned = depth >= self.next_depth;
        let differs = self
            .inflight
            .remove(&depth)
            .is_some_and(|slot| slot.value != *value);
        differs || unplanned
    }

    /// Forgets the offered transfers that `block` committed.
    pub(super) fn forget_committed(&mut self, block: &Block) {
        for t in &block.transfers {
            self.intake[t.debit()].remove(&t.id.seq);
        }
    }

    /// A recovering node asks for the chain to reach `floor`: fill it with empty blocks.
    pub(super) fn fill_up_to(&mut self, floor: u64) {
        self.fill_to = self.fill_to.max(floor);
    }

    /// The highest depth this leader has proposed (its chain's depth if none).
    pub(super) fn top_proposed(&self) -> u64 {
        self.next_depth - 1
    }

    /// `peer` spoke this period (CheckQuorum).
    pub(super) fn heard_from(&mut self, peer: NodeId) {
        self.heard[peer] = true;
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Candidacy {
    pub(super) ballot: Ballot,
    /// For each node that promised: its chain depth and the values it had accepted.
    pub(super) promises: BTreeMap<NodeId, (u64, AcceptedList)>,
    pub(super) started: u64,
}
