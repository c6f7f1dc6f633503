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
        self.unsynced_from.get_or_insert(t.id.seq);
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

    /// The status line (short hashes unless `full`), then one line per link: its state and
    /// when a message last came from that peer, so a sever made at one end shows at both.
    pub(super) fn print_status(&self, full: bool, out: &mut Vec<Action>) {
        let role = match self.role {
            Role::Follower => "follower",
            Role::Candidate(_) => "candidate",
            Role::Leader(_) => "leader",
        };
        let leader = self
            .known_leader()
            .map_or("none".to_string(), |l| l.to_string());
        out.push(Action::Print(format!(
            "node {} depth {} head {} ballot {} leader {} role {} queue {} transfers {}",
            self.id,
            self.ledger.depth,
            match full {
                true => self.ledger.head.to_string(),
                false => self.ledger.head.short(),
            },
            self.promised,
            leader,
            role,
            self.queue.len(),
            self.ledger.transfers
        )));
        for p in (0..self.n).filter(|&p| p != self.id) {
            let state = match (self.severed[p], self.link_up[p]) {
                (true, _) => "severed",
                (false, true) => "up",
                (false, false) => "down",
            };
            let heard = match self.heard_at.0[p] {
                0 => "never heard from".to_string(),
                at => format!("heard {} ago", human_ms(self.now - at)),
            };
            out.push(Action::Print(format!("link {p} {state} {heard}")));
        }
    }

    pub(super) fn set_severed(&mut self, peer: NodeId, severed: bool, out: &mut Vec<Action>) {
        if peer >= self.n || peer == self.id {
            return Self::error(out, format!("no link from node {} to node {peer}", self.id));
        }
        self.severed[peer] = severed;
        let word = if severed { "severed" } else { "restored" };
        out.push(Action::Print(format!("link {peer} {word}")));
        if !severed {
            self.send(vec![peer], Message::Hello, out);
        }
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
