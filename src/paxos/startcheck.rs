//! Detecting a rolled-back directory: before it votes, a starting node asks its peers whether
//! they have seen newer state from it than its disk holds.

use super::*;
use std::collections::BTreeSet;

/// A node's disk can go back in time with nothing to see on it: a directory restored from a
/// copy (`cp -a` of a running node, a snapshot) has a superblock that matches its logs, but
/// lacks the promises and votes made after the copy. Its peers can tell. The shell stamps
/// every envelope with the sequence of the node's last completed sync (the superblock's,
/// which grows with every sync, and every message of a turn leaves after that turn's sync).
/// So no peer has seen a sequence above what the node's disk holds, unless the disk went
/// back.
///
/// Every node remembers the highest sequence it has seen from each peer, in memory: a node
/// that restarts has seen nothing. At start a node asks its peers (`StartCheck`); each
/// answers with the highest it has seen from it (`StartSeen`), the question included, which
/// carries the asker's sequence now (`yours`). A higher answer means that the disk lost
/// writes whose messages had gone out: the node stops with an `error:` line, or, started
/// with `--recover`, becomes amnesic (see `Amnesia`) and rebuilds what it forgot.
///
/// Until a majority (itself included) has answered, and every peer has or a leader timeout
/// has passed, the node does nothing but the check: it neither promises nor accepts, runs
/// for leader, commits, nor hands its queue to a leader. It still queues transfers: a node
/// alone takes them, as always, and any that reuse an id after a rollback are reported
/// (see `settle_own`). Answering is never held back, so a whole cluster restarting at once
/// comes up. An answer that comes later still counts: it stops the node then. An amnesic
/// node's probe declares its loss, so its peers forget what they had seen from it: its next
/// start is not taken for a rollback.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct StartCheck {
    /// The highest sequence seen from each peer since this node started.
    seen: Vec<u64>,
    /// This node's own check, from `check_start` until every peer has answered.
    own: Option<Check>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Check {
    /// Drawn by this incarnation; an answer must carry it to count.
    nonce: u64,
    /// `--recover`: a rollback makes the node amnesic instead of stopping it.
    recover: bool,
    started: Option<u64>,
    asked_at: Option<u64>,
    answered: BTreeSet<NodeId>,
    /// Votes are allowed: a majority answered, and all did or a leader timeout passed.
    open: bool,
    /// A rollback was found and the node is stopping: it never opens.
    failed: bool,
}

impl StartCheck {
    pub(super) fn new(nodes: usize) -> StartCheck {
        StartCheck {
            seen: vec![0; nodes],
            own: None,
        }
    }
}

impl Core {
    /// Makes this node check its state with its peers before it votes. The shell calls it
    /// once, before the first event; without it (the simulator, the model) there is no
    /// check. With `recover`, a rollback makes the node amnesic instead of stopping it.
    pub fn check_start(&mut self, recover: bool) {
        self.start.own = Some(Check {
            nonce: rand_next(&mut self.rng) | 1,
            recover,
            started: None,
            asked_at: None,
            answered: BTreeSet::new(),
            open: false,
            failed: false,
        });
    }

    /// Whether this node's start check still holds its votes.
    pub(super) fn checking(&self) -> bool {
        self.start.own.as_ref().is_some_and(|c| !c.open)
    }

    /// Notes the sequence stamped on an envelope from `from`. Returns whether the message
    /// may be handled now: while checking, only the check's messages and catch-up requests
    /// (serving decided blocks votes on nothing) are.
    pub(super) fn note_seq(&mut self, from: NodeId, env: &Envelope) -> bool {
        let seen = &mut self.start.seen[from];
        match env.msg {
            // An amnesic node's probe declares its loss: what it sent before does not count.
            Message::Probe { nonce, .. } if nonce != 0 => *seen = env.seq,
            _ => *seen = (*seen).max(env.seq),
        }
        !self.checking()
            || matches!(
                env.msg,
                Message::StartCheck { .. } | Message::StartSeen { .. } | Message::CatchUp { .. }
            )
    }

    /// Answers a peer's start check, always: it is what lets a whole cluster restart.
    pub(super) fn on_start_check(
        &mut self,
        from: NodeId,
        nonce: u64,
        yours: u64,
        out: &mut Vec<Action>,
    ) {
        let seen = self.start.seen[from];
        assert!(seen >= yours, "the question itself was noted");
        self.send(vec![from], Message::StartSeen { nonce, seen, yours }, out);
    }

    pub(super) fn on_start_seen(
        &mut self,
        from: NodeId,
        nonce: u64,
        seen: u64,
        yours: u64,
        out: &mut Vec<Action>,
    ) {
        let Some(c) = &mut self.start.own else { return };
        if nonce != c.nonce || c.failed {
            return; // not an answer to this incarnation's check, or too late to matter
        }
        c.answered.insert(from);
        if seen > yours {
            self.rolled_back(from, seen, yours, out);
        }
        self.open_gate(out);
    }

    /// Peer `from` has seen sequence `seen` from us, and our disk holds only `disk`.
    fn rolled_back(&mut self, from: NodeId, seen: u64, disk: u64, out: &mut Vec<Action>) {
        if self.amnesia.is_some() {
            // It votes on nothing it may have forgotten until its peers have answered.
            return self.narrate(out, || Step::RolledBackRecovering { from, seen, disk });
        }
        let node = self.id;
        let Some(c) = &mut self.start.own else { return };
        if !c.recover {
            c.failed = true;
            c.open = false;
            let why = Fatal::RolledBack {
                node,
                from,
                seen,
                disk,
            };
            return out.push(Action::Fatal(why));
        }
        if self.role_ballot().is_some() {
            self.step_down(StepDown::RolledBack, out);
        }
        // As `benmo node --recover` does for damage: durable before it acts on it.
        self.amnesia = Some(Amnesia::new(&mut self.rng));
        out.push(Action::Persist(Record::Amnesia));
        out.push(Action::Reply(Reply::RolledBack {
            node: self.id,
            from,
            seen,
            disk,
        }));
    }

    /// On a tick: asks the peers that have not answered (again every resend interval while
    /// votes are held), and opens the gate when it may. Returns whether the node may go on
    /// with the rest of its tick.
    pub(super) fn check_start_tick(&mut self, out: &mut Vec<Action>) -> bool {
        let (id, n, now, resend) = (self.id, self.n, self.now, self.timing.resend_ms);
        let Some(c) = &mut self.start.own else {
            return true;
        };
        c.started.get_or_insert(now);
        let due = c.asked_at.is_none_or(|at| now >= at + resend);
        if !c.open && !c.failed && due {
            c.asked_at = Some(now);
            let nonce = c.nonce;
            let to = (0..n)
                .filter(|p| *p != id && !c.answered.contains(p))
                .collect();
            self.send(to, Message::StartCheck { nonce }, out);
        }
        self.open_gate(out);
        !self.checking()
    }

    /// Lets the node vote once a majority (itself included) has answered, and every peer
    /// has or a leader timeout has passed; ends the check once every peer has answered.
    fn open_gate(&mut self, out: &mut Vec<Action>) {
        let (quorum, n, now) = (self.quorum(), self.n, self.now);
        let timeout = self.timing.leader_timeout_ms;
        let Some(c) = &mut self.start.own else { return };
        if c.failed {
            return;
        }
        let all = c.answered.len() == n - 1;
        let waited = c.started.is_some_and(|s| now >= s + timeout);
        if !c.open && c.answered.len() + 1 >= quorum && (all || waited) {
            c.open = true;
            let answered = c.answered.len();
            self.narrate(out, || Step::StartChecked { answered });
        }
        if all {
            self.start.own = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(id: NodeId, n: usize) -> Core {
        let params = Params {
            id,
            nodes: n,
            timing: Timing::default(),
            verbose: false,
            classroom: false,
            rng_seed: 11 + id as u64,
        };
        Core::restore(params, Ledger::new(n, 100), [])
    }

    /// A message from `from` stamped with sync sequence `seq`.
    fn env(from: NodeId, seq: u64, msg: Message) -> Event {
        let env = Envelope {
            depth: 0,
            id: 0,
            seq,
            msg,
        };
        Event::Message { from, env }
    }

    fn step(c: &mut Core, now: u64, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        c.handle(now, event, &mut out);
        out
    }

    fn sent(out: &[Action]) -> Vec<&Message> {
        out.iter()
            .filter_map(|a| match a {
                Action::Send { env, .. } => Some(&env.msg),
                _ => None,
            })
            .collect()
    }

    /// Starts `c`'s check with a first tick; returns the nonce it asks with.
    fn start(c: &mut Core, recover: bool) -> u64 {
        c.check_start(recover);
        let out = step(c, 0, Event::Tick);
        match sent(&out)[..] {
            [Message::StartCheck { nonce }] => *nonce,
            ref other => panic!("expected one start check, got {other:?}"),
        }
    }

    fn accept() -> Message {
        let value = Proposal {
            proposer: 0,
            transfers: vec![],
        };
        Message::Accept {
            ballot: Ballot { round: 1, node: 0 },
            depth: 1,
            value,
        }
    }

    fn votes(out: &[Action]) -> usize {
        let vote = |m: &Message| matches!(m, Message::Accepted { .. } | Message::Promise { .. });
        sent(out).into_iter().filter(|m| vote(m)).count()
    }

    #[test]
    fn the_gate_holds_votes_until_a_majority_answered() {
        let mut c = core(2, 3);
        let nonce = start(&mut c, false);
        let prepare = Message::Prepare {
            ballot: Ballot { round: 1, node: 0 },
            depth: 1,
        };
        let mut out = step(&mut c, 1, env(0, 5, prepare));
        out.extend(step(&mut c, 1, env(0, 5, accept())));
        assert_eq!(votes(&out), 0, "{out:?}");
        assert!(!out.iter().any(|a| matches!(a, Action::Persist(_))));
        // One answer makes a majority with itself, but the other peer may yet answer: the
        // gate waits for it, or for a leader timeout.
        let seen = Message::StartSeen {
            nonce,
            seen: 5,
            yours: 5,
        };
        let out = step(&mut c, 2, env(0, 5, seen));
        assert!(c.checking() && out.is_empty(), "{out:?}");
        let out = step(&mut c, 3, env(0, 5, accept()));
        assert_eq!(votes(&out), 0);
        step(&mut c, Timing::default().leader_timeout_ms, Event::Tick);
        assert!(!c.checking());
        let out = step(&mut c, 2000, env(0, 5, accept()));
        assert_eq!(votes(&out), 1, "{out:?}");
    }

    #[test]
    fn every_peer_answering_opens_the_gate_at_once() {
        let mut c = core(0, 3);
        let nonce = start(&mut c, false);
        for p in [1, 2] {
            let seen = Message::StartSeen {
                nonce,
                seen: 0,
                yours: 0,
            };
            step(&mut c, 1, env(p, 0, seen));
        }
        assert!(!c.checking() && c.start.own.is_none());
        assert_eq!(votes(&step(&mut c, 2, env(1, 0, accept()))), 1);
    }

    #[test]
    fn a_peer_that_saw_a_newer_sync_stops_the_node_before_it_votes() {
        let mut c = core(2, 3);
        let nonce = start(&mut c, false);
        let stale = Message::StartSeen {
            nonce: nonce ^ 2,
            seen: 120,
            yours: 87,
        };
        assert!(
            step(&mut c, 1, env(1, 87, stale)).is_empty(),
            "not our check"
        );
        let seen = Message::StartSeen {
            nonce,
            seen: 120,
            yours: 87,
        };
        let out = step(&mut c, 1, env(1, 87, seen));
        let want = Fatal::RolledBack {
            node: 2,
            from: 1,
            seen: 120,
            disk: 87,
        };
        assert_eq!(out, vec![Action::Fatal(want)]);
        // Whatever answers or time come after, it never votes.
        let fine = Message::StartSeen {
            nonce,
            seen: 87,
            yours: 87,
        };
        step(&mut c, 2, env(0, 87, fine));
        step(&mut c, 5000, Event::Tick);
        assert!(c.checking());
        assert_eq!(votes(&step(&mut c, 5001, env(0, 87, accept()))), 0);
    }

    #[test]
    fn with_recover_a_rolled_back_node_turns_amnesic_instead() {
        let mut c = core(2, 3);
        let nonce = start(&mut c, true);
        let seen = Message::StartSeen {
            nonce,
            seen: 120,
            yours: 87,
        };
        let out = step(&mut c, 1, env(1, 87, seen));
        assert_eq!(out[0], Action::Persist(Record::Amnesia));
        let note = Reply::RolledBack {
            node: 2,
            from: 1,
            seen: 120,
            disk: 87,
        };
        assert_eq!(out[1], Action::Reply(note));
        assert!(!out.iter().any(|a| matches!(a, Action::Fatal(_))));
        assert!(c.recovering());
        let seen = Message::StartSeen {
            nonce,
            seen: 87,
            yours: 87,
        };
        step(&mut c, 2, env(0, 87, seen));
        assert!(!c.checking(), "the check is over");
        assert_eq!(votes(&step(&mut c, 3, env(0, 87, accept()))), 0, "amnesic");
    }

    #[test]
    fn peers_answer_the_highest_seen_and_forget_it_on_an_amnesic_probe() {
        let mut peer = core(0, 3);
        let nonce = start(&mut peer, false); // answering is never held back
        step(&mut peer, 1, env(2, 120, Message::Hello));
        let check = |peer: &mut Core, seq| {
            let out = step(peer, 2, env(2, seq, Message::StartCheck { nonce: 9 }));
            match sent(&out)[..] {
                [Message::StartSeen {
                    nonce: 9,
                    seen,
                    yours,
                }] => (*seen, *yours),
                ref other => panic!("expected an answer, got {other:?}"),
            }
        };
        assert_eq!(check(&mut peer, 87), (120, 87));
        assert_eq!(check(&mut peer, 130), (130, 130));
        // A floor reminder is no declaration of loss; an amnesic probe is.
        step(
            &mut peer,
            3,
            env(2, 90, Message::Probe { floor: 4, nonce: 0 }),
        );
        assert_eq!(check(&mut peer, 91), (130, 91));
        step(
            &mut peer,
            3,
            env(2, 90, Message::Probe { floor: 0, nonce: 5 }),
        );
        assert_eq!(check(&mut peer, 91), (91, 91));
        assert!(peer.checking() && nonce != 0, "its own check still waits");
    }

    #[test]
    fn a_whole_cluster_restarting_at_once_comes_up() {
        let n = 5;
        let mut cores: Vec<Core> = (0..n).map(|x| core(x, n)).collect();
        let mut wire = Vec::new();
        for (x, c) in cores.iter_mut().enumerate() {
            c.check_start(false);
            let out = step(c, 0, Event::Tick);
            wire.extend(out.into_iter().map(|a| (x, a)));
        }
        while let Some((from, action)) = wire.pop() {
            let Action::Send { to, mut env } = action else {
                assert!(!matches!(action, Action::Fatal(_)), "{action:?}");
                continue;
            };
            env.seq = 40 + from as u64; // each node's disk sequence
            for p in to {
                let out = step(
                    &mut cores[p],
                    1,
                    Event::Message {
                        from,
                        env: env.clone(),
                    },
                );
                wire.extend(out.into_iter().map(|a| (p, a)));
            }
        }
        assert!(cores.iter().all(|c| !c.checking()));
    }
}
