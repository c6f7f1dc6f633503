//! Commands from the node's own stdin, and what they answer.

use super::*;

impl Core {
    pub(super) fn on_command(&mut self, cmd: Command, out: &mut Vec<Action>) {
        match cmd {
            Command::Transfer {
                debit,
                credit,
                amount,
            } => self.on_transfer(debit, credit, amount, out),
            Command::PrintBlockchain { full } => out.push(Action::PrintChain { full }),
            Command::PrintBalance => self.print_balance(self.id, out),
            Command::PrintBalances => (0..self.n).for_each(|p| self.print_balance(p, out)),
            Command::PrintQueue => self.print_queue(out),
            Command::Status { full } => self.print_status(full, out),
            Command::Crash => out.push(Action::Crash),
            Command::Sever(peer) => self.set_severed(peer, true, out),
            Command::Restore(peer) => self.set_severed(peer, false, out),
            Command::State => self.print_state(out),
        }
    }

    /// `state`: this node's view of the Paxos instance for the depth in play, as an
    /// acceptor, a learner and a proposer.
    pub(super) fn print_state(&self, out: &mut Vec<Action>) {
        let depth = self.ledger.depth + 1;
        let (nodes, quorum) = (self.n, self.quorum());
        let role = match &self.role {
            Role::Follower => RoleView::Follower {
                leader: self.known_leader(),
            },
            Role::Candidate(c) => RoleView::Candidate {
                ballot: c.ballot,
                promised_by: c.promises.keys().copied().collect(),
            },
            Role::Leader(l) => RoleView::Leader {
                ballot: l.ballot,
                accepted_by: l
                    .inflight
                    .get(&depth)
                    .map(|slot| (0..self.n).filter(|&p| slot.acks[p]).collect()),
            },
        };
        out.push(Action::Reply(Reply::State(StateView {
            node: self.id,
            depth,
            promised: self.promised,
            accepted: self.accepted.get(&depth).cloned(),
            chosen: self.decided.get(&depth).cloned(),
            role,
            nodes,
            quorum,
        })));
    }

    pub(super) fn refuse_command(out: &mut Vec<Action>, why: Refusal) {
        out.push(Action::Reply(Reply::Refused(why)));
    }

    pub(super) fn on_transfer(
        &mut self,
        debit: NodeId,
        credit: NodeId,
        amount: u64,
        out: &mut Vec<Action>,
    ) {
        if let Err(why) = self.check_transfer(debit, credit, amount) {
            return Self::refuse_command(out, why);
        }
        let t = Transfer {
            id: TxId {
                node: self.id,
                seq: self.next_own_seq,
            },
            credit,
            amount,
        };
        assert!(
            t.id.seq >= self.ledger.next_seq[self.id],
            "the queue holds only transfers the chain has not committed"
        );
        self.next_own_seq += 1;
        self.unsynced_from.get_or_insert(t.id.seq);
        self.queue.insert(t.id.seq, t);
        self.queued_total += t.amount;
        assert!(
            self.queued_total <= self.ledger.balances[self.id],
            "a node never queues more than its account holds"
        );
        out.push(Action::Persist(Record::Queue(t)));
        out.push(Action::Reply(Reply::Queued(t)));
    }

    /// Why this node may not queue the transfer, if it may not.
    pub(super) fn check_transfer(
        &self,
        debit: NodeId,
        credit: NodeId,
        amount: u64,
    ) -> Result<(), Refusal> {
        // A recovering node's lost records may have held debits of ours that commit up to
        // the vote floor: only a chain past it shows what this account can still afford.
        let judge = Judge {
            nodes: self.n,
            me: Some(self.id),
            available: Some(self.ledger.balances[self.id].saturating_sub(self.queued_total)),
            recovering: self.recovering(),
        };
        check_transfer(&judge, &Request::transfer(debit, credit, amount))
    }

    pub(super) fn print_balance(&self, node: NodeId, out: &mut Vec<Action>) {
        let balance = self.ledger.balances[node];
        out.push(Action::Reply(Reply::Balance { node, balance }));
    }

    pub(super) fn print_queue(&self, out: &mut Vec<Action>) {
        if self.queue.is_empty() {
            out.push(Action::Reply(Reply::QueueEmpty));
        }
        for t in self.queue.values() {
            out.push(Action::Reply(Reply::QueueEntry(*t)));
        }
    }

    /// The status (see README "Line formats"): in 80 columns, the chain and queue, then the
    /// role and ballot, then one line per link: its state and when a message last came from
    /// that peer. `full` puts the first two on one line with the whole head hash.
    pub(super) fn print_status(&self, full: bool, out: &mut Vec<Action>) {
        let role = match self.role {
            Role::Follower => RoleName::Follower,
            Role::Candidate(_) => RoleName::Candidate,
            Role::Leader(_) => RoleName::Leader,
        };
        out.push(Action::Reply(Reply::Status(Status {
            node: self.id,
            depth: self.ledger.depth,
            head: self.ledger.head,
            full,
            promised: self.promised,
            leader: self.known_leader(),
            role,
            queue: self.queue.len(),
            transfers: self.ledger.transfers,
        })));
        for peer in (0..self.n).filter(|&p| p != self.id) {
            let state = match (self.severed[peer], self.link_up[peer]) {
                (true, _) => LinkState::SeveredHere,
                (false, _) if self.severed_by.0[peer] => LinkState::SeveredBy,
                (false, true) => LinkState::Up,
                (false, false) => LinkState::Down,
            };
            let heard_ago = match self.heard_at.0[peer] {
                0 => None,
                at => Some(self.now - at),
            };
            out.push(Action::Reply(Reply::Link {
                peer,
                state,
                heard_ago,
            }));
        }
    }

    pub(super) fn set_severed(&mut self, peer: NodeId, severed: bool, out: &mut Vec<Action>) {
        if peer >= self.n || peer == self.id {
            let why = Refusal::NoLink {
                from: self.id,
                to: peer,
            };
            return Self::refuse_command(out, why);
        }
        if self.severed[peer] == severed {
            let by_peer = self.severed_by.0[peer];
            let same = Reply::LinkUnchanged {
                peer,
                severed,
                by_peer,
            };
            return out.push(Action::Reply(same));
        }
        self.severed[peer] = severed;
        out.push(Action::Reply(Reply::LinkSet { peer, severed }));
        match severed {
            true => Self::notify_severed(peer, self.ledger.depth, out),
            false => self.send(vec![peer], Message::Hello, out),
        }
    }

    /// Tells `peer` that we severed our link to it: the one message a severed link carries.
    pub(super) fn notify_severed(peer: NodeId, depth: u64, out: &mut Vec<Action>) {
        let env = Envelope {
            depth,
            id: 0,
            seq: 0,
            msg: Message::Severed,
        };
        out.push(Action::Send {
            to: vec![peer],
            env,
        });
    }

    /// Keeps `severed_by` true while `from` says it severed us. Any other message means it
    /// talks to us again: it restored the link, or restarted and forgot the sever.
    pub(super) fn note_severed_by(&mut self, from: NodeId, severed: bool, out: &mut Vec<Action>) {
        if std::mem::replace(&mut self.severed_by.0[from], severed) == severed {
            return;
        }
        out.push(Action::Reply(Reply::SeveredBy {
            peer: from,
            severed,
        }));
    }
}
