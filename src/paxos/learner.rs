//! Learning decided values and applying them to the chain, in order.

use super::*;

impl Core {
    pub(super) fn on_decide(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        depth: u64,
        out: &mut Vec<Action>,
    ) {
        if ballot >= self.promised {
            self.follow(ballot, out);
        }
        if depth <= self.ledger.depth || self.decided.contains_key(&depth) {
            return;
        }
        // The decider holds this depth or soon will: if we cannot apply it (we lack the value,
        // or a depth below it), it is where to fetch the blocks from.
        self.peer_depth[from] = self.peer_depth[from].max(depth);
        match self.accepted.get(&depth) {
            Some((b, value)) if *b == ballot => {
                self.log(out, || {
                    format!(
                        "ballot {ballot} depth {depth}: decided {}: learned from node {from}",
                        leader::describe(value)
                    )
                });
                self.decided.insert(depth, value.clone());
                self.apply_decided(out);
            }
            _ => {} // we never accepted that value: catch-up fetches the block
        }
    }

    /// Seals and commits every decided value that now sits directly on the chain.
    pub(super) fn apply_decided(&mut self, out: &mut Vec<Action>) {
        while let Some(value) = self.decided.remove(&(self.ledger.depth + 1)) {
            self.settle_slot(self.ledger.depth + 1, &value, out);
            let block = self.ledger.seal(value.proposer, &value.transfers);
            let applied = self.ledger.apply(&block);
            assert!(
                applied.is_ok(),
                "a block sealed on our own ledger must apply: {applied:?}"
            );
            self.after_commit(block, out);
        }
    }

    /// A leader may learn a depth it has in flight from someone else's decision (one it
    /// re-proposed on election). The slot is done; if the value differs, so is its plan.
    pub(super) fn settle_slot(&mut self, depth: u64, value: &Proposal, out: &mut Vec<Action>) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        // A depth we have not proposed yet was decided without us: our plan is stale too.
        let unplanned = depth >= l.next_depth;
        let differs = l
            .inflight
            .remove(&depth)
            .is_some_and(|slot| slot.value != *value);
        if differs || unplanned {
            self.step_down(
                || format!("depth {depth} was decided outside its plan"),
                out,
            );
        }
    }

    /// Takes our own committed transfers off the queue; returns the lines to print.
    pub(super) fn settle_own(&mut self, block: &Block) -> Vec<String> {
        let (me, depth) = (self.id, block.depth);
        let mut lines = Vec::new();
        for t in block.transfers.iter().filter(|t| t.debit() == me) {
            if let Some(q) = self.queue.get(&t.id.seq).filter(|q| *q != t) {
                // Only after lost records: an older transfer with this id got there first.
                lines.push(format!(
                    "error: queued transfer {q} lost its id to {t}; queue it again"
                ));
            }
            self.unqueue(t.id.seq);
            // After lost records our numbering may lag what others committed for us.
            self.next_own_seq = self.next_own_seq.max(t.id.seq + 1);
            lines.push(format!("committed {t} depth {depth}"));
        }
        lines
    }

    /// Bookkeeping once `block` is the new head of `self.ledger`.
    pub(super) fn after_commit(&mut self, block: Block, out: &mut Vec<Action>) {
        let depth = block.depth;
        self.accepted = self.accepted.split_off(&(depth + 1));
        self.decided = self.decided.split_off(&(depth + 1));
        let lines = self.settle_own(&block);
        let committed_own = !lines.is_empty();
        if let Role::Leader(l) = &mut self.role {
            for t in &block.transfers {
                l.intake[t.debit()].remove(&t.id.seq);
            }
        }
        self.log(out, || {
            format!(
                "committed block {depth} head {} ({} transfers)",
                block.hash.short(),
                block.transfers.len()
            )
        });
        out.push(Action::Commit(block));
        // The block is chosen, so durable at a majority: the lines need not wait for our copy.
        let start = out.len();
        out.extend(lines.into_iter().map(Action::Print));
        Self::early_since(out, start);
        if self.vote_floor > 0 && depth == self.vote_floor {
            Self::caught_up(depth, out);
        }
        if self.queue.is_empty() {
            self.election_at = None;
        } else if committed_own && self.forwarded_at.is_some() {
            self.forwarded_at = Some(self.now); // the leader is serving us: no need to resend yet
        }
    }

    pub(super) fn on_blocks(&mut self, from: NodeId, blocks: Vec<Block>, out: &mut Vec<Action>) {
        if blocks.iter().any(|b| b.depth > self.ledger.depth) {
            self.catch_up = None; // progress: the next chunk may be asked for at once
        }
        for block in blocks {
            if block.depth <= self.ledger.depth {
                continue;
            }
            if self.is_leader() {
                // Someone decided past us: our leadership is stale.
                self.step_down(
                    || "blocks past its depth were decided without it".into(),
                    out,
                );
            }
            if let Err(e) = self.ledger.apply(&block) {
                out.push(Action::Print(format!(
                    "error: rejected block {} from node {from}: {e}",
                    block.depth
                )));
                return;
            }
            self.after_commit(block, out);
        }
        self.apply_decided(out);
    }
}
