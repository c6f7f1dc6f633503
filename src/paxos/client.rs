//! Commands from the node's own stdin, and what they print.

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
    /// acceptor, a learner and a proposer, in a few lines of at most 80 columns.
    pub(super) fn print_state(&self, out: &mut Vec<Action>) {
        let depth = self.ledger.depth + 1;
        let mut lines = vec![format!(
            "state of node {} at depth {depth} (chain depth {}):",
            self.id, self.ledger.depth
        )];
        let promised = match self.promised == Ballot::default() {
            true => "nothing yet".to_string(),
            false => format!("ballot {}", self.promised),
        };
        lines.push(format!("  promised {promised}"));
        lines.push(match self.accepted.get(&depth) {
            Some((b, v)) => format!("  accepted ballot {b} value {}", clip(&leader::describe(v))),
            None => "  accepted nothing at this depth".to_string(),
        });
        lines.push(match self.decided.get(&depth) {
            Some(v) => format!(
                "  chosen: {} (known, not yet applied)",
                clip(&leader::describe(v))
            ),
            None => "  chosen: not known to this node yet".to_string(),
        });
        lines.push(format!("  role {}", self.role_line(depth)));
        out.extend(lines.into_iter().map(Action::Print));
    }

    /// The role, and for a candidate or leader who has answered it at `depth`.
    fn role_line(&self, depth: u64) -> String {
        let of = |who: Vec<NodeId>| {
            let ids: Vec<String> = who.iter().map(|p| p.to_string()).collect();
            let have = who.len();
            let (n, q) = (self.n, self.quorum());
            format!("{{{}}}, {have} of {n} (majority {q})", ids.join(","))
        };
        match &self.role {
            Role::Follower => match self.known_leader() {
                Some(l) => format!("follower of leader {l}"),
                None => "follower; no leader known".to_string(),
            },
            Role::Candidate(c) => format!(
                "candidate, ballot {}: promises from {}",
                c.ballot,
                of(c.promises.keys().copied().collect())
            ),
            Role::Leader(l) => match l.inflight.get(&depth) {
                Some(slot) => format!(
                    "leader, ballot {}: accepted by {}",
                    l.ballot,
                    of((0..self.n).filter(|&p| slot.acks[p]).collect())
                ),
                None => format!("leader, ballot {}: nothing proposed here yet", l.ballot),
            },
        }
    }

    pub(super) fn error(out: &mut Vec<Action>, text: String) {
        out.push(Action::Print(format!("error: {text}")));
    }

    pub(super) fn on_transfer(
        &mut self,
        debit: NodeId,
        credit: NodeId,
        amount: u64,
        out: &mut Vec<Action>,
    ) {
        if let Err(problem) = self.check_transfer(debit, credit, amount) {
            return Self::error(out, problem);
        }
        let t = Transfer {
            id: TxId {
                node: self.id,
                seq: self.next_own_seq,
            },
            credit,
            amount,
        };
        self.next_own_seq += 1;
        self.queue.insert(t.id.seq, t);
        self.queued_total += t.amount;
        out.push(Action::Persist(Record::Queue(t)));
        out.push(Action::Print(format!("queued {t}")));
    }

    /// Why this node may not queue the transfer, if it may not.
    pub(super) fn check_transfer(
        &self,
        debit: NodeId,
        credit: NodeId,
        amount: u64,
    ) -> Result<(), String> {
        let available = self.ledger.balances[self.id].saturating_sub(self.queued_total);
        if self.recovering() {
            // Lost records may have held debits of ours that commit up to the vote floor:
            // only a chain past it shows what this account can still afford.
            return Err(
                "recovering lost state: transfers resume once this node has caught up".into(),
            );
        }
        if debit >= self.n || credit >= self.n {
            let last = self.n - 1;
            return Err(format!(
                "unknown node {} (nodes are 0..{last})",
                debit.max(credit)
            ));
        }
        if debit != self.id {
            let me = self.id;
            return Err(format!(
                "node {me} can only transfer from its own account {me}"
            ));
        }
        if debit == credit {
            return Err("debit and credit are the same account".into());
        }
        if amount == 0 {
            return Err("amount must be a positive integer".into());
        }
        if amount > available {
            return Err(format!(
                "insufficient funds: {amount} requested, {available} available"
            ));
        }
        Ok(())
    }

    pub(super) fn print_balance(&self, node: NodeId, out: &mut Vec<Action>) {
        out.push(Action::Print(format!(
            "balance {} {}",
            node, self.ledger.balances[node]
        )));
    }

    pub(super) fn print_queue(&self, out: &mut Vec<Action>) {
        if self.queue.is_empty() {
            out.push(Action::Print("queue empty".to_string()));
        }
        for t in self.queue.values() {
            out.push(Action::Print(format!("queue {t}")));
        }
    }

    /// The status (see README "Line formats"): in 80 columns, the chain and queue, then the
    /// role and ballot, then one line per link: its state and when a message last came from
    /// that peer. `full` puts the first two on one line with the whole head hash.
    pub(super) fn print_status(&self, full: bool, out: &mut Vec<Action>) {
        let role = match self.role {
            Role::Follower => "follower",
            Role::Candidate(_) => "candidate",
            Role::Leader(_) => "leader",
        };
        let leader = self
            .known_leader()
            .map_or("none".to_string(), |l| l.to_string());
        let (id, depth, promised) = (self.id, self.ledger.depth, self.promised);
        let (queue, transfers) = (self.queue.len(), self.ledger.transfers);
        out.push(Action::Print(match full {
            true => format!(
                "node {id} depth {depth} head {} ballot {promised} leader {leader} role {role} \
                 queue {queue} transfers {transfers}",
                self.ledger.head
            ),
            false => format!(
                "node {id} depth {depth} head {} leader {leader} queue {queue} transfers {transfers}",
                self.ledger.head.short()
            ),
        }));
        if !full {
            out.push(Action::Print(format!("role {role} ballot {promised}")));
        }
        for p in (0..self.n).filter(|&p| p != self.id) {
            out.push(Action::Print(self.link_line(p)));
        }
    }

    /// `link 2 up heard 40 ms ago`, `link 2 severed here ...`, `link 2 severed by node 2 ...`.
    fn link_line(&self, p: NodeId) -> String {
        let state = match (self.severed[p], self.link_up[p]) {
            (true, _) => "severed here",
            (false, _) if self.severed_by.0[p] => "severed by node",
            (false, true) => "up",
            (false, false) => "down",
        };
        let state = match state {
            "severed by node" => format!("severed by node {p}"),
            s => s.to_string(),
        };
        let heard = match self.heard_at.0[p] {
            0 => "never heard from".to_string(),
            at => format!("heard {} ago", human_ms(self.now - at)),
        };
        format!("link {p} {state} {heard}")
    }

    pub(super) fn set_severed(&mut self, peer: NodeId, severed: bool, out: &mut Vec<Action>) {
        if peer >= self.n || peer == self.id {
            return Self::error(out, format!("no link from node {} to node {peer}", self.id));
        }
        if self.severed[peer] == severed {
            let by = match self.severed_by.0[peer] {
                true => format!("; node {peer} severed it at its end"),
                false => String::new(),
            };
            let was = if severed {
                "already severed"
            } else {
                "not severed"
            };
            return out.push(Action::Print(format!("link {peer} was {was} here{by}")));
        }
        self.severed[peer] = severed;
        let word = if severed { "severed" } else { "restored" };
        out.push(Action::Print(format!("link {peer} {word}")));
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
        out.push(Action::Print(match severed {
            true => format!("link {from} severed by node {from}: it ignores this node"),
            false => format!("link {from} works again: node {from} restored it or restarted"),
        }));
    }
}

/// A value description cut to fit a state line.
fn clip(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...]", &text[..i]),
        None => text.to_string(),
    }
}

/// A duration for a person: `40 ms`, `3.2 s`, `5 min`.
fn human_ms(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{}.{} s", ms / 1000, ms % 1000 / 100),
        _ => format!("{} min", ms / 60_000),
    }
}
