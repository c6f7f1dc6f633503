//! Recovery after lost state: an amnesic node asks its peers before it votes again.

use super::*;

/// A node that lost records (WAL records, or blocks, which record its votes once the WAL is
/// compacted) may have promised a ballot or accepted a value it no longer remembers, and
/// voting as if it had not could break Paxos. So it stays silent, waits out any election
/// that might have counted its forgotten promise (one leader timeout: a candidacy lasts no
/// longer), and asks its peers. Any majority of the others overlaps every quorum it took part
/// in, so their answers bound what it could have done: it then promises at least the highest
/// ballot they report, and never votes at or below the highest depth they know plus the
/// window, the furthest a leader could have proposed. Those depths are decided without it,
/// which needs the others to be a majority: at most a minority may recover at once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Amnesia {
    /// When this node (re)started: the first time it saw the clock.
    pub(super) since: Option<u64>,
    pub(super) asked_at: Option<u64>,
    pub(super) replies: BTreeMap<NodeId, (Ballot, u64, u64)>,
}

impl Core {
    pub(super) fn on_probe(&mut self, from: NodeId, floor: u64, out: &mut Vec<Action>) {
        let mut top = self
            .ledger
            .depth
            .max(self.accepted.keys().next_back().copied().unwrap_or(0));
        // Committed numbers only: numbering past one that never commits would leave a gap
        // that blocks the whole queue. One that does commit later is reported then.
        let seq = self.ledger.next_seq[from] - 1;
        if let Role::Leader(l) = &mut self.role {
            top = top.max(l.next_depth - 1);
            l.fill_to = l.fill_to.max(floor);
        }
        let promised = self.promised;
        self.send(vec![from], Message::ProbeReply { promised, top, seq }, out);
    }

    pub(super) fn on_probe_reply(
        &mut self,
        from: NodeId,
        reply: (Ballot, u64, u64),
        out: &mut Vec<Action>,
    ) {
        let Some(a) = &mut self.amnesia else { return };
        a.replies.insert(from, reply);
        if a.replies.len() >= self.quorum() {
            self.end_amnesia(out);
        }
    }

    /// Asks the peers, once a leader timeout has passed since start (so that any election
    /// that counted a forgotten promise is over), and again every resend interval.
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
        if self.n == 1 {
            return self.end_amnesia(out); // no one else could have counted on us
        }
        self.log(out, || {
            "recovering lost state: asking peers what they know".to_string()
        });
        self.broadcast(Message::Probe { floor: 0 }, out);
    }

    pub(super) fn end_amnesia(&mut self, out: &mut Vec<Action>) {
        let Some(a) = self.amnesia.take() else { return };
        let promised = a.replies.values().map(|r| r.0).max().unwrap_or_default();
        let top = a.replies.values().map(|r| r.1).max().unwrap_or(0);
        let seq = a.replies.values().map(|r| r.2).max().unwrap_or(0);
        self.promised = self.promised.max(promised);
        self.highest_seen = self.highest_seen.max(self.promised);
        if !a.replies.is_empty() {
            // A lone node (n = 1) needs no floor: no one else could have counted on it.
            self.vote_floor = self
                .vote_floor
                .max(top + self.timing.inflight_depths_max as u64);
        }
        self.next_own_seq = self.next_own_seq.max(seq.saturating_add(1));
        out.push(Action::Persist(Record::Promise(self.promised)));
        out.push(Action::Persist(Record::VoteFloor(self.vote_floor)));
        out.push(Action::Print(format!(
            "recovered: promised {}, voting again above depth {}",
            self.promised, self.vote_floor
        )));
        if self.ledger.depth >= self.vote_floor {
            Self::caught_up(self.ledger.depth, out);
        }
    }

    pub(super) fn caught_up(depth: u64, out: &mut Vec<Action>) {
        let line = format!("caught up: transfers resume at depth {depth}");
        out.push(Action::Print(line));
    }
}
