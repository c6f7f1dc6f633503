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
                self.narrate(out, || Step::Learned {
                    ballot,
                    depth,
                    value: value.clone(),
                    from,
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
        if l.settle(depth, value) {
            self.step_down(StepDown::OutsidePlan { depth }, out);
        }
    }

    /// Takes our own committed transfers off the queue; returns the replies they are owed.
    pub(super) fn settle_own(&mut self, block: &Block) -> Vec<Reply> {
        let (me, depth) = (self.id, block.depth);
        let mut lines = Vec::new();
        for t in block.transfers.iter().filter(|t| t.debit() == me) {
            if let Some(q) = self.queue.get(&t.id.seq).filter(|q| *q != t) {
                // Only after lost records: an older transfer with this id got there first.
                lines.push(Reply::LostId { queued: *q, by: *t });
            }
            self.unqueue(t.id.seq);
            // After lost records our numbering may lag what others committed for us.
            self.next_own_seq = self.next_own_seq.max(t.id.seq + 1);
            lines.push(Reply::Committed {
                transfer: *t,
                depth,
            });
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
            l.forget_committed(&block);
        }
        self.narrate(out, || Step::CommittedBlock {
            depth,
            head: block.hash,
            transfers: block.transfers.len(),
        });
        out.push(Action::Commit(block));
        // The block is chosen, so durable at a majority: the lines need not wait for our copy.
        let start = out.len();
        out.extend(lines.into_iter().map(Action::Reply));
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
            // A value we learned was chosen here must be what the block holds.
            let learned = self.decided.get(&block.depth);
            assert!(
                block.depth != self.ledger.depth + 1
                    || learned.is_none_or(|v| {
                        self.ledger.seal(v.proposer, &v.transfers).hash == block.hash
                    }),
                "a chosen value is never replaced"
            );
            if self.is_leader() {
                // Someone decided past us: our leadership is stale.
                self.step_down(StepDown::BlocksWithout, out);
            }
            if block.depth > self.ledger.depth + 1 {
                // A reply to a request from before our chain was cut (`--recover`), kept
                // by a peer that was stalled meanwhile: not a bad block. Ask again.
                let depth = block.depth;
                self.narrate(out, || Step::IgnoredBlocks { depth, from });
                break;
            }
            if let Err(e) = self.ledger.apply(&block) {
                out.push(Action::Reply(Reply::BadBlock {
                    depth: block.depth,
                    from,
                    error: e,
                }));
                return;
            }
            self.after_commit(block, out);
        }
        self.apply_decided(out);
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
}
