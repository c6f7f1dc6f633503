//! Tests of the protocol core on its own, with a tiny hand-driven cluster: the test decides
//! which message is delivered, dropped or held, and when time passes.

use super::*;
use crate::ledger::Hash;

const BALANCE: u64 = 100;

/// A message in flight.
#[derive(Clone, Debug)]
struct Wire {
    from: NodeId,
    to: NodeId,
    env: Envelope,
}

#[derive(Default)]
struct Disk {
    chain: Vec<Block>,
    records: Vec<Record>,
}

struct Cluster {
    n: usize,
    now: u64,
    cores: Vec<Option<Core>>,
    disks: Vec<Disk>,
    wire: Vec<Wire>,
    /// Every message ever sent, for replaying stale copies.
    history: Vec<Wire>,
    /// Each node's replies (narration left out).
    lines: Vec<Vec<Reply>>,
    /// Deliver every message twice, each round in reverse order.
    chaos: bool,
}

fn params(id: NodeId, nodes: usize) -> Params {
    Params {
        id,
        nodes,
        timing: Timing::default(),
        verbose: false,
        classroom: false,
        rng_seed: 7 + id as u64,
    }
}

fn ballot(round: u64, node: NodeId) -> Ballot {
    Ballot { round, node }
}

fn tx(node: NodeId, seq: u64, credit: NodeId, amount: u64) -> Transfer {
    Transfer {
        id: TxId { node, seq },
        credit,
        amount,
    }
}

fn msg(from: NodeId, depth: u64, msg: Message) -> Event {
    Event::Message {
        from,
        env: Envelope {
            depth,
            id: 0,
            seq: 0,
            msg,
        },
    }
}

fn errors(out: &[Action]) -> usize {
    out.iter()
        .filter(|a| matches!(a, Action::Reply(r) if r.is_error()))
        .count()
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        Cluster {
            n,
            now: 0,
            cores: (0..n)
                .map(|x| Some(Core::restore(params(x, n), Ledger::new(n, BALANCE), [])))
                .collect(),
            disks: (0..n).map(|_| Disk::default()).collect(),
            wire: Vec::new(),
            history: Vec::new(),
            lines: vec![Vec::new(); n],
            chaos: false,
        }
    }

    fn core(&self, x: NodeId) -> &Core {
        self.cores[x].as_ref().expect("node is up")
    }

    /// One turn, as the shell runs it (`Core::turn`: the events, then a `Tick`), carried
    /// out; returns its effects.
    fn batch(&mut self, x: NodeId, events: Vec<Event>) -> Vec<Action> {
        let core = self.cores[x].as_mut().expect("node is up");
        let turn = core.turn(self.now, events);
        let early = turn
            .early
            .iter()
            .map(|a| Action::Early(Box::new(a.clone())));
        let effects = early.chain(turn.effects.iter().cloned()).collect();
        self.carry_turn(x, turn);
        effects
    }

    /// Early effects, then writes, then the other sends and prints.
    fn carry_out(&mut self, x: NodeId, out: Vec<Action>) {
        self.carry_turn(x, Turn::split(out));
    }

    fn carry_turn(&mut self, x: NodeId, turn: Turn) {
        turn.early.into_iter().for_each(|a| self.effect(x, a));
        for write in turn.writes {
            match write {
                Durable::Record(r) => self.disks[x].records.push(r),
                Durable::Block(b) => self.disks[x].chain.push(b),
            }
        }
        turn.effects.into_iter().for_each(|a| self.effect(x, a));
    }

    fn effect(&mut self, x: NodeId, action: Action) {
        match action {
            Action::Send { to, env } => to.iter().for_each(|&p| self.put(x, p, env.clone())),
            Action::Loopback(env) => self.put(x, x, env), // `deliver` hands it back
            Action::ServeBlocks { to, from } => self.serve(x, to, from),
            Action::Reply(r) => self.lines[x].push(r),
            _ => {}
        }
    }

    fn put(&mut self, from: NodeId, to: NodeId, env: Envelope) {
        let w = Wire { from, to, env };
        self.history.push(w.clone());
        self.wire.push(w);
    }

    fn serve(&mut self, x: NodeId, to: NodeId, from: u64) {
        let chain = &self.disks[x].chain;
        let blocks = chain[(from as usize - 1).min(chain.len())..].to_vec();
        let depth = chain.len() as u64;
        self.put(
            x,
            to,
            Envelope {
                id: 0,
                seq: 0,
                depth,
                msg: Message::Blocks { blocks },
            },
        );
    }

    fn transfer(&mut self, x: NodeId, credit: NodeId, amount: u64) -> Vec<Action> {
        let cmd = Command::Transfer {
            debit: x,
            credit,
            amount,
        };
        self.batch(x, vec![Event::Command(cmd)])
    }

    /// One `handle` call and nothing else (no `Tick`), carried out; returns its actions, for
    /// tests that say exactly what one event does.
    fn handle(&mut self, x: NodeId, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        let core = self.cores[x].as_mut().expect("node is up");
        core.handle(self.now, event, &mut out);
        self.carry_out(x, out.clone());
        out
    }

    /// Makes `x` run for leader now.
    fn elect(&mut self, x: NodeId) {
        let mut out = Vec::new();
        self.cores[x].as_mut().unwrap().start_election(&mut out);
        self.carry_out(x, out);
    }

    /// Delivers the messages in flight that `pick` chooses (each as its own batch); the
    /// others stay in flight. Messages to a node that is down are lost.
    fn deliver(&mut self, pick: impl Fn(&Wire) -> bool) {
        let (chosen, held): (Vec<Wire>, Vec<Wire>) =
            std::mem::take(&mut self.wire).into_iter().partition(pick);
        self.wire = held;
        let mut chosen = chosen;
        if self.chaos {
            chosen.reverse();
            chosen = chosen.into_iter().flat_map(|w| [w.clone(), w]).collect();
        }
        for w in chosen {
            if self.cores[w.to].is_none() {
                continue;
            }
            let event = match w.from == w.to {
                true => Event::Loopback(w.env), // only ever our own vote, now durable
                false => Event::Message {
                    from: w.from,
                    env: w.env,
                },
            };
            self.batch(w.to, vec![event]);
        }
    }

    /// Lets `ms` pass in 5 ms steps, ticking every live node and delivering everything.
    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now += 5;
            for x in 0..self.n {
                if self.cores[x].is_some() {
                    self.batch(x, vec![]);
                }
            }
            self.deliver(|_| true);
        }
    }

    /// The node loses its memory and every message to or from it.
    fn crash(&mut self, x: NodeId) {
        self.cores[x] = None;
        self.wire.retain(|w| w.to != x && w.from != x);
    }

    fn restart(&mut self, x: NodeId) {
        let mut ledger = Ledger::new(self.n, BALANCE);
        for b in &self.disks[x].chain {
            ledger.apply(b).expect("the durable chain is valid");
        }
        let records = self.disks[x].records.clone();
        let mut p = params(x, self.n);
        p.rng_seed += 1000 * self.now;
        self.cores[x] = Some(Core::restore(p, ledger, records));
    }

    fn txids(&self, x: NodeId) -> Vec<TxId> {
        let chain = &self.disks[x].chain;
        chain
            .iter()
            .flat_map(|b| b.transfers.iter().map(|t| t.id))
            .collect()
    }

    /// Every live node has the same chain, and its ledger matches it.
    fn assert_agree(&self) {
        let first = &self.disks[0].chain;
        for x in 0..self.n {
            assert_eq!(&self.disks[x].chain, first, "node {x} disagrees");
            if let Some(core) = &self.cores[x] {
                assert_eq!(core.ledger().depth, first.len() as u64);
                assert_eq!(core.ledger().total(), (BALANCE * self.n as u64) as u128);
            }
        }
    }

    /// How many of node `x`'s replies match `pick`.
    fn replies(&self, x: NodeId, pick: impl Fn(&Reply) -> bool) -> usize {
        self.lines[x].iter().filter(|r| pick(r)).count()
    }

    /// How many times node `x` said that its transfer `id` committed.
    fn committed(&self, x: NodeId, id: TxId) -> usize {
        self.replies(
            x,
            |r| matches!(r, Reply::Committed { transfer, .. } if transfer.id == id),
        )
    }
}

/// Node `x` runs for leader and wins with everyone's promise.
fn with_leader(n: usize, x: NodeId) -> Cluster {
    let mut c = Cluster::new(n);
    c.elect(x);
    c.deliver(|_| true); // prepares
    c.deliver(|_| true); // promises
    assert!(c.core(x).is_leader());
    c.deliver(|_| true); // heartbeats
    c
}

// ----- the protocol -----

#[test]
fn racing_proposers_choose_one_value_per_depth_and_both_commit() {
    let mut c = Cluster::new(3);
    c.transfer(0, 1, 10);
    c.transfer(1, 2, 20);
    // Node 0 wins with node 2 and sends an accept for depth 1, which is held up.
    c.elect(0);
    c.deliver(|w| w.from == 0 && w.to == 2);
    c.deliver(|w| w.to == 0);
    assert!(c.core(0).is_leader());
    // Node 1 outbids it with node 2 before that accept arrives, and proposes its own value.
    c.elect(1);
    c.deliver(|w| w.from == 1 && w.to == 2 && matches!(w.env.msg, Message::Prepare { .. }));
    c.deliver(|w| w.to == 1 && matches!(w.env.msg, Message::Promise { .. }));
    assert!(c.core(1).is_leader());
    c.run(3000);
    c.assert_agree();
    assert_eq!(c.disks[0].chain[0].transfers, vec![tx(1, 1, 2, 20)]);
    let mut ids = c.txids(0);
    ids.sort();
    assert_eq!(
        ids,
        vec![TxId { node: 0, seq: 1 }, TxId { node: 1, seq: 1 }]
    );
    assert!((0..3).all(|x| c.core(x).queue().next().is_none()));
}

#[test]
fn a_new_leader_finishes_what_a_crashed_leader_got_a_minority_to_accept() {
    let mut c = with_leader(5, 0);
    c.transfer(0, 1, 10);
    // Only node 1 accepts depth 1 (2 of 5) before the leader crashes.
    c.deliver(|w| w.to == 1 && matches!(w.env.msg, Message::Accept { .. }));
    c.crash(0);
    c.wire.clear();
    // Node 2 wins with nodes 1 and 3: it must adopt node 1's value for depth 1.
    c.elect(2);
    c.deliver(|_| true);
    c.deliver(|w| w.from == 1 || w.from == 3);
    assert!(c.core(2).is_leader());
    c.run(1000);
    let chain = &c.disks[2].chain;
    assert_eq!(chain[0].transfers, vec![tx(0, 1, 1, 10)]);
    assert_eq!(
        chain[0].proposer, 0,
        "the value, proposer included, is the old leader's"
    );
    c.restart(0);
    c.run(2000);
    c.assert_agree();
    assert_eq!(c.txids(0), vec![TxId { node: 0, seq: 1 }]);
    assert_eq!(c.committed(0, TxId { node: 0, seq: 1 }), 1);
}

#[test]
fn a_restarted_acceptor_keeps_its_promise_and_accepted_value() {
    for compact in [false, true] {
        let mut c = Cluster::new(3);
        let value = Proposal {
            proposer: 0,
            transfers: vec![tx(0, 1, 2, 5)],
        };
        c.batch(
            1,
            vec![msg(
                0,
                0,
                Message::Prepare {
                    ballot: ballot(5, 0),
                    depth: 1,
                },
            )],
        );
        let accept = Message::Accept {
            ballot: ballot(5, 0),
            depth: 1,
            value: value.clone(),
        };
        c.batch(1, vec![msg(0, 0, accept)]);
        if compact {
            c.disks[1].records = c.core(1).live_records();
        }
        c.crash(1);
        c.restart(1);
        assert_eq!(c.core(1).promised(), ballot(5, 0));
        // A lower ballot is refused, and nothing is written.
        let low = Message::Accept {
            ballot: ballot(4, 2),
            depth: 1,
            value: Proposal {
                proposer: 2,
                transfers: vec![],
            },
        };
        let to_2 = |msg| Action::Send {
            to: vec![2],
            env: Envelope {
                depth: 0,
                id: 0,
                seq: 0,
                msg,
            },
        };
        let refused = Message::Reject {
            ballot: ballot(4, 2),
            promised: ballot(5, 0),
        };
        assert_eq!(c.handle(1, msg(2, 0, low)), vec![to_2(refused)]);
        // A higher ballot learns the accepted value.
        let prepare = Message::Prepare {
            ballot: ballot(6, 2),
            depth: 1,
        };
        let promise = Message::Promise {
            ballot: ballot(6, 2),
            accepted: vec![(1, ballot(5, 0), value.clone())],
        };
        assert_eq!(
            c.handle(1, msg(2, 0, prepare)),
            vec![
                Action::Persist(Record::Promise(ballot(6, 2))),
                to_2(promise)
            ]
        );
    }
}

#[test]
fn a_restarted_proposer_never_reuses_a_ballot() {
    let mut c = Cluster::new(3);
    c.elect(0);
    let first = c.core(0).promised();
    c.crash(0);
    c.restart(0);
    c.elect(0);
    assert!(c.core(0).promised() > first);
    // Also after only promising someone else's ballot, and a compaction.
    c.batch(
        1,
        vec![msg(
            2,
            0,
            Message::Prepare {
                ballot: ballot(9, 2),
                depth: 1,
            },
        )],
    );
    c.disks[1].records = c.core(1).live_records();
    c.crash(1);
    c.restart(1);
    c.elect(1);
    assert!(c.core(1).promised() > ballot(9, 2));
}

#[test]
fn duplicated_reordered_and_stale_messages_change_nothing() {
    let mut c = Cluster::new(3);
    c.chaos = true;
    for round in 0..4 {
        for x in 0..3 {
            c.transfer(x, (x + 1) % 3, 3 + round);
        }
        c.run(700);
    }
    c.run(3000);
    c.assert_agree();
    assert_eq!(c.txids(0).len(), 12);
    assert!((0..3).all(|x| c.core(x).queue().next().is_none()));
    // Every message ever sent, delivered again (twice, backwards): no new block, no error.
    let chain = c.disks[0].chain.clone();
    c.wire = c.history.clone();
    c.deliver(|_| true);
    c.run(2000);
    c.assert_agree();
    assert_eq!(c.disks[0].chain, chain);
    assert!((0..3).all(|x| c.replies(x, Reply::is_error) == 0));
}

#[test]
fn an_origin_crashing_after_a_majority_accepted_its_transfer_commits_it_once() {
    for origin in [0, 1] {
        let mut c = with_leader(3, 0);
        c.transfer(origin, 2, 10);
        c.deliver(|w| matches!(w.env.msg, Message::Forward { .. }));
        // Leader 0 and node 2 accept: a majority. The origin crashes before any decide.
        c.deliver(|w| w.to == 2 && matches!(w.env.msg, Message::Accept { .. }));
        assert!(c.disks[2]
            .records
            .iter()
            .any(|r| matches!(r, Record::Accept { .. })));
        c.crash(origin);
        c.restart(origin);
        assert_eq!(
            c.core(origin).queue().count(),
            1,
            "the queue survives the crash"
        );
        c.run(3000);
        c.assert_agree();
        assert_eq!(
            c.txids(0),
            vec![TxId {
                node: origin,
                seq: 1
            }]
        );
        assert_eq!(c.replies(origin, |r| matches!(r, Reply::Queued(_))), 1);
        let id = TxId {
            node: origin,
            seq: 1,
        };
        assert_eq!(c.committed(origin, id), 1);
        assert!(c.core(origin).queue().next().is_none());
    }
}

#[test]
fn a_lagging_node_catches_up_in_an_idle_cluster_when_its_request_is_lost() {
    // Regression (sim seed 11366): the one catch-up request is lost, and no leader is left
    // to send anything that would prompt another; node 2 stayed behind for good.
    let mut c = with_leader(3, 0);
    c.crash(2);
    c.transfer(0, 1, 5);
    c.run(500);
    assert_eq!(c.disks[0].chain.len(), 1);
    for x in 0..3 {
        c.crash(x);
        c.restart(x);
    }
    let up = |peer| vec![Event::Link { peer, up: true }];
    for (x, peer) in [(2, 0), (2, 1), (0, 2), (1, 2)] {
        c.batch(x, up(peer));
    }
    c.deliver(|_| true); // hellos: node 2 asks one of them
    c.wire
        .retain(|w| !matches!(w.env.msg, Message::CatchUp { .. }));
    c.run(2000);
    c.assert_agree();
}

#[test]
fn a_node_missing_the_depth_below_a_decided_one_fetches_it_from_the_decider() {
    // Regression (sim seed 29889, at an older sim revision): node 1 learned that depth 2 was
    // decided while depth 1 had never reached it, from a leader that was itself still at
    // depth 0 and then fell silent. Nothing told node 1 that anyone was ahead.
    let mut c = with_leader(3, 0);
    c.crash(1);
    c.transfer(0, 2, 1);
    c.run(300);
    c.transfer(0, 2, 2);
    c.run(300);
    assert_eq!(c.disks[0].chain.len(), 2);
    let accept = c
        .history
        .iter()
        .rev()
        .find(|w| w.to == 1 && matches!(w.env.msg, Message::Accept { depth: 2, .. }));
    let Message::Accept { ballot, value, .. } = accept.unwrap().env.msg.clone() else {
        unreachable!()
    };
    for x in 0..3 {
        c.crash(x);
        c.restart(x);
    }
    // What the leader said to node 1 when its own chain was still empty.
    let (depth, stale) = (2, 0);
    c.batch(
        1,
        vec![
            msg(
                0,
                stale,
                Message::Accept {
                    ballot,
                    depth,
                    value,
                },
            ),
            msg(0, stale, Message::Decide { ballot, depth }),
        ],
    );
    c.run(2000);
    c.assert_agree();
}

// ----- commands -----

#[test]
fn bad_transfers_get_one_error_and_change_nothing() {
    let mut c = Cluster::new(3);
    assert_eq!(errors(&c.transfer(0, 1, 60)), 0);
    let records = c.core(0).live_records();
    let ledger = c.core(0).ledger().clone();
    let overdraft = |requested| Refusal::Overdraft {
        requested,
        available: 40,
    };
    let bad = [
        ((1, 2, 5), Refusal::NotOwnAccount { node: 0 }),
        ((0, 0, 5), Refusal::SameAccount),
        ((0, 3, 5), Refusal::UnknownNode { node: 3, nodes: 3 }),
        ((0, 1, 0), Refusal::ZeroAmount),
        ((0, 1, 41), overdraft(41)),
        ((0, 2, 1000), overdraft(1000)),
    ];
    for ((debit, credit, amount), why) in bad {
        let cmd = Command::Transfer {
            debit,
            credit,
            amount,
        };
        let out = c.batch(0, vec![Event::Command(cmd)]);
        assert_eq!(
            out,
            vec![Action::Reply(Reply::Refused(why))],
            "nothing else"
        );
    }
    assert_eq!(c.core(0).live_records(), records);
    assert_eq!(c.core(0).ledger(), &ledger);
    assert_eq!(
        errors(&c.transfer(0, 1, 40)),
        0,
        "exactly the rest is available"
    );
}

#[test]
fn followers_forward_their_transfers_to_the_leader() {
    let mut c = with_leader(3, 0);
    let out = c.transfer(2, 1, 5);
    let forward = Message::Forward {
        transfers: vec![tx(2, 1, 1, 5)],
    };
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Send { to, env } if to == &[0] && env.msg == forward)));
    c.run(500);
    c.assert_agree();
    let t = tx(2, 1, 1, 5);
    assert_eq!(
        c.lines[2],
        [
            Reply::Queued(t),
            Reply::Committed {
                transfer: t,
                depth: 1
            }
        ]
    );
    assert_eq!(c.core(2).ledger().balances, vec![100, 105, 95]);
}

/// The leader's accept leaves before its own vote is durable, and its decide before its
/// commit record; but an accept carrying its own transfer queued in the same turn waits
/// for that queue record (else a power loss could commit a transfer never acknowledged,
/// under a number the node then hands out again).
#[test]
fn a_leader_sends_accepts_early_except_with_its_own_unsynced_transfers() {
    let mut c = with_leader(3, 0);
    let early_accept = |out: &[Action]| {
        out.iter().any(|a| {
            matches!(a, Action::Early(e) if matches!(&**e,
                Action::Send { env, .. } if matches!(env.msg, Message::Accept { .. })))
        })
    };
    let own = c.transfer(0, 1, 5);
    assert!(!early_accept(&own), "{own:?}");
    assert!(own.iter().any(|a| matches!(a, Action::Loopback(_))));
    c.transfer(2, 1, 5);
    let forward = Message::Forward {
        transfers: vec![tx(2, 1, 1, 5)],
    };
    c.handle(0, msg(2, 0, forward)); // durable at node 2 before it was sent
    let next = c.batch(0, vec![]);
    assert!(early_accept(&next), "{next:?}");
    c.run(500);
    c.assert_agree();
    let t = tx(0, 1, 1, 5);
    assert_eq!(
        c.lines[0],
        [
            Reply::Queued(t),
            Reply::Committed {
                transfer: t,
                depth: 1
            }
        ]
    );
}

#[test]
fn decided_blocks_link_to_the_chain() {
    let mut c = with_leader(3, 1);
    c.transfer(1, 0, 1);
    c.run(500);
    c.transfer(1, 0, 2);
    c.run(500);
    c.assert_agree();
    let chain = &c.disks[0].chain;
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0].prev, Hash::ZERO);
    assert_eq!(chain[1].prev, chain[0].hash);
}

// ----- recovery from lost WAL records -----

fn sends(out: &[Action], pick: impl Fn(&Message) -> bool) -> usize {
    out.iter()
        .filter(|a| matches!(a, Action::Send { env, .. } if pick(&env.msg)))
        .count()
}

#[test]
fn a_node_that_lost_its_wal_votes_only_where_that_is_safe() {
    let mut c = with_leader(3, 0);
    c.transfer(0, 1, 10);
    c.run(500);
    let leader_ballot = c.core(0).promised();
    c.crash(2);
    c.disks[2].records.clear(); // the WAL is gone: promises and accepted values forgotten
    c.restart(2);
    let ledger = c.core(2).ledger().clone();
    c.cores[2] = Some(Core::restore(params(2, 3), ledger, [Record::Amnesia]));
    // Silent at first: no promise, no accepted, no transfers of its own.
    let prepare = msg(
        1,
        1,
        Message::Prepare {
            ballot: ballot(9, 1),
            depth: 2,
        },
    );
    let out = c.batch(2, vec![prepare]);
    assert_eq!(
        sends(&out, |m| matches!(
            m,
            Message::Promise { .. } | Message::Reject { .. }
        )),
        0
    );
    assert_eq!(errors(&c.transfer(2, 0, 1)), 1);
    // After a leader timeout it asks its peers and recovers a safe floor.
    c.run(2000);
    let floor = 1 + Timing::default().inflight_depths_max as u64;
    let recovered = |r: &Reply| matches!(r, Reply::Recovered { .. });
    assert_eq!(c.replies(2, recovered), 1, "{:?}", c.lines[2]);
    assert!(c.core(2).promised() >= leader_ballot);
    assert!(c.disks[2].records.contains(&Record::VoteFloor(floor)));
    // The leader carried the chain past the floor with empty blocks if need be.
    c.run(2000);
    assert!(c.core(2).ledger().depth >= floor);
    assert!(!c.core(2).recovering());
}

#[test]
fn below_its_vote_floor_a_node_accepts_but_does_not_promise() {
    let floor = 9;
    let records = [Record::VoteFloor(floor)];
    let mut core = Core::restore(params(2, 3), Ledger::new(3, BALANCE), records);
    let value = Proposal {
        proposer: 0,
        transfers: vec![],
    };
    let b = ballot(5, 0);
    let mut out = Vec::new();
    let accept = Message::Accept {
        ballot: b,
        depth: 4,
        value: value.clone(),
    };
    core.handle(10, msg(0, 0, accept), &mut out);
    assert_eq!(
        out,
        vec![
            Action::Persist(Record::Accept {
                depth: 4,
                ballot: b,
                value: value.clone()
            }),
            Action::Send {
                to: vec![0],
                env: Envelope {
                    id: 0,
                    seq: 0,
                    depth: 0,
                    msg: Message::Accepted {
                        ballot: b,
                        depth: 4
                    }
                }
            },
        ]
    );
    let prepare = |depth| Message::Prepare {
        ballot: ballot(6, 1),
        depth,
    };
    let mut out = Vec::new();
    core.handle(10, msg(1, 0, prepare(floor)), &mut out);
    assert_eq!(
        out,
        vec![],
        "a promise from depth {floor} would be incomplete"
    );
    core.handle(10, msg(1, 0, prepare(floor + 1)), &mut out);
    let promise = Message::Promise {
        ballot: ballot(6, 1),
        accepted: vec![],
    };
    assert_eq!(
        out,
        vec![
            Action::Persist(Record::Promise(ballot(6, 1))),
            Action::Send {
                to: vec![1],
                env: Envelope {
                    id: 0,
                    seq: 0,
                    depth: 0,
                    msg: promise
                }
            },
        ]
    );
}

/// An amnesic node of 3 that has waited out its leader timeout; returns its probe's nonce.
fn amnesic_after_probe() -> (Core, u64) {
    let mut core = Core::restore(params(2, 3), Ledger::new(3, BALANCE), [Record::Amnesia]);
    let mut out = Vec::new();
    core.handle(0, Event::Tick, &mut out);
    core.handle(Timing::default().leader_timeout_ms, Event::Tick, &mut out);
    let nonce = out.iter().find_map(|a| match a {
        Action::Send { env, .. } => match env.msg {
            Message::Probe { nonce, .. } => Some(nonce),
            _ => None,
        },
        _ => None,
    });
    (core, nonce.expect("it probed"))
}

fn reply(nonce: u64, recovering: bool) -> Message {
    Message::ProbeReply(ProbeReply {
        nonce,
        promised: ballot(3, 0),
        top: 4,
        seq: 0,
        recovering,
    })
}

#[test]
fn probe_replies_count_only_for_this_incarnations_probe_after_its_wait() {
    // Unsolicited replies before the wait ends: nothing happens (issue: recovered at 1 ms).
    let mut core = Core::restore(params(2, 3), Ledger::new(3, BALANCE), [Record::Amnesia]);
    let mut out = Vec::new();
    core.handle(1, msg(0, 0, reply(7, false)), &mut out);
    core.handle(1, msg(1, 0, reply(7, false)), &mut out);
    assert_eq!(out, vec![]);
    assert!(core.recovering());
    // After the wait, replies to another nonce are ignored; replies to ours end the amnesia.
    let (mut core, nonce) = amnesic_after_probe();
    let mut out = Vec::new();
    core.handle(1001, msg(0, 0, reply(nonce ^ 2, false)), &mut out);
    core.handle(1001, msg(1, 0, reply(nonce ^ 2, false)), &mut out);
    assert_eq!(out, vec![]);
    core.handle(1001, msg(0, 0, reply(nonce, false)), &mut out);
    core.handle(1001, msg(1, 0, reply(nonce, false)), &mut out);
    let floor = 4 + Timing::default().inflight_depths_max as u64;
    assert_eq!(
        out,
        vec![
            Action::Persist(Record::Promise(ballot(3, 0))),
            Action::Persist(Record::VoteFloor(floor)),
            Action::Reply(Reply::Recovered {
                promised: ballot(3, 0),
                floor
            }),
        ]
    );
}

#[test]
fn an_amnesic_node_does_not_answer_probes() {
    let (mut core, _) = amnesic_after_probe();
    let mut out = Vec::new();
    let probe = Message::Probe { floor: 0, nonce: 5 };
    core.handle(1001, msg(0, 0, probe), &mut out);
    assert_eq!(out, vec![]);
}

#[test]
fn a_node_recovering_beside_a_recovering_peer_waits_and_says_so() {
    let (mut core, nonce) = amnesic_after_probe();
    let mut out = Vec::new();
    core.handle(1001, msg(0, 0, reply(nonce, true)), &mut out);
    core.handle(1001, msg(1, 0, reply(nonce, false)), &mut out);
    assert_eq!(out, vec![Action::Reply(Reply::Waiting { peers: vec![0] })]);
    assert!(core.recovering());
    // Once the peer has caught up, its next answer counts.
    let mut out = Vec::new();
    core.handle(1001, msg(0, 0, reply(nonce, false)), &mut out);
    assert_eq!(
        out.iter()
            .filter(|a| matches!(a, Action::Reply(Reply::Recovered { .. })))
            .count(),
        1
    );
}

#[test]
fn the_others_keep_committing_while_a_node_recovers_lost_records() {
    let mut c = with_leader(3, 0);
    c.crash(2);
    let fresh = Ledger::new(3, BALANCE);
    c.cores[2] = Some(Core::restore(params(2, 3), fresh, [Record::Amnesia]));
    for k in 0..12 {
        c.transfer(k % 2, 2, 1);
        c.run(300);
    }
    c.run(3000);
    c.assert_agree();
    assert_eq!(c.disks[2].chain.len(), c.disks[0].chain.len());
    assert_eq!(c.core(2).ledger().balances[2], BALANCE + 12);
}

// ----- batching and flow control -----

#[test]
fn batches_take_from_every_origin_in_turn_and_skip_gaps() {
    let mut l = Leadership {
        ballot: ballot(1, 0),
        next_depth: 1,
        inflight: BTreeMap::new(),
        projected: Ledger::new(3, BALANCE),
        intake: vec![BTreeMap::new(); 3],
        last_heartbeat: 0,
        quorum_period: 0,
        heard: vec![false; 3],
        adopted: BTreeMap::new(),
        adopted_top: 0,
        first_depth: 1,
        accept_at: 0,
        decide_hold: None,
        fill_to: 0,
    };
    l.intake[1].extend((1..=10).map(|seq| (seq, tx(1, seq, 0, 1))));
    l.intake[2].extend((1..=2).map(|seq| (seq, tx(2, seq, 0, 1))));
    l.intake[0].insert(2, tx(0, 2, 1, 1)); // 0.1 is missing, so 0.2 must wait
    let batch = Core::next_batch(&mut l, 6);
    let from = |o: NodeId| {
        batch
            .iter()
            .filter(|t| t.debit() == o)
            .map(|t| t.id.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        (from(0), from(1), from(2)),
        (vec![], vec![1, 2, 3, 4], vec![1, 2])
    );
    assert_eq!(l.intake[1].len(), 6, "the rest waits for the next batch");
}

#[test]
fn an_origin_offers_the_leader_one_window_at_a_time() {
    let window = 4 * Timing::default().batch_transfers_max;
    let mut core = Core::restore(params(1, 3), Ledger::new(3, 1 << 40), []);
    let mut out = Vec::new();
    core.handle(
        0,
        msg(
            0,
            0,
            Message::Heartbeat {
                ballot: ballot(1, 0),
            },
        ),
        &mut out,
    );
    for _ in 0..window + 10 {
        let cmd = Command::Transfer {
            debit: 1,
            credit: 2,
            amount: 1,
        };
        core.handle(0, Event::Command(cmd), &mut out);
    }
    let forwarded = |out: &[Action]| -> Vec<u64> {
        out.iter()
            .flat_map(|a| match a {
                Action::Send {
                    env:
                        Envelope {
                            msg: Message::Forward { transfers },
                            ..
                        },
                    ..
                } => transfers.iter().map(|t| t.id.seq).collect(),
                _ => vec![],
            })
            .collect()
    };
    let mut tick = Vec::new();
    core.handle(0, Event::Tick, &mut tick);
    assert_eq!(forwarded(&tick), (1..=window as u64).collect::<Vec<_>>());
    tick.clear();
    core.handle(1, Event::Tick, &mut tick);
    assert!(
        forwarded(&tick).is_empty(),
        "nothing more until some of it commits"
    );
}

// ----- a leader's majority -----

#[test]
fn a_leader_cut_off_from_the_majority_steps_down_and_an_idle_healthy_one_does_not() {
    let mut c = with_leader(3, 0);
    c.run(5 * Timing::default().leader_timeout_ms);
    assert!(
        c.core(0).is_leader(),
        "idle, but hearing from its followers"
    );
    let sever = |p| Event::Command(Command::Sever(p));
    c.batch(0, vec![sever(1), sever(2)]);
    c.run(4 * Timing::default().leader_timeout_ms + 100);
    assert!(!c.core(0).is_leader(), "cut off, it no longer leads");
    assert_eq!(c.core(0).known_leader(), None);
}

// ----- the classroom policy -----

fn classroom_cluster(n: usize) -> Cluster {
    let mut c = Cluster::new(n);
    for x in 0..n {
        let p = Params {
            classroom: true,
            ..params(x, n)
        };
        c.cores[x] = Some(Core::restore(p, Ledger::new(n, BALANCE), []));
    }
    c
}

/// Simulator seed 5505 (classroom): a leader whose round had nothing left to do kept its
/// ballot for good, and the others, who do not forward in the classroom, waited for ever.
#[test]
fn a_classroom_leader_lets_its_ballot_go_once_its_round_is_done() {
    let mut c = classroom_cluster(3);
    c.transfer(0, 1, 10);
    c.run(2000);
    let id = TxId { node: 0, seq: 1 };
    assert_eq!(c.committed(0, id), 1, "{:?}", c.lines[0]);
    assert!(
        !c.core(0).is_leader(),
        "its one depth is decided: the round is over"
    );
    // A leader elected with nothing to propose lets go at once, too.
    c.elect(1);
    c.deliver(|_| true); // prepares
    c.deliver(|_| true); // promises
    c.run(50);
    assert!((0..3).all(|x| !c.core(x).is_leader()));
    // The next transfer gets a round of its own, at the next depth.
    c.transfer(2, 0, 5);
    c.run(2000);
    let t = tx(2, 1, 0, 5);
    let committed = Reply::Committed {
        transfer: t,
        depth: 2,
    };
    assert_eq!(c.replies(2, |r| *r == committed), 1);
}

/// Found by cargo-mutants (`may_accept` always true survived the model and the simulator):
/// before its peers have answered, an amnesic node accepts nothing, whatever the ballot.
#[test]
fn an_amnesic_node_accepts_nothing_until_its_peers_have_answered() {
    let (mut core, _) = amnesic_after_probe();
    let accept = Message::Accept {
        ballot: ballot(9, 0),
        depth: 1,
        value: Proposal {
            proposer: 0,
            transfers: vec![],
        },
    };
    let mut out = Vec::new();
    core.handle(1001, msg(0, 0, accept), &mut out);
    assert_eq!(out, vec![], "no vote, no write, no reply");
}

fn is(w: &Wire, from: NodeId, to: NodeId, pick: impl Fn(&Message) -> bool) -> bool {
    w.from == from && w.to == to && pick(&w.env.msg)
}

fn prepare(m: &Message) -> bool {
    matches!(m, Message::Prepare { .. })
}

/// Issue 18, bug 1: nodes L, P, Q, V, A. A candidacy outlives a leader timeout while a
/// promise it counted is forgotten by `--recover`; a late promise must not make it win.
#[test]
fn a_candidacy_past_its_leader_timeout_counts_no_late_promise() {
    let (l, p, q, v, a) = (0, 1, 2, 3, 4);
    let mut c = Cluster::new(5);
    c.transfer(l, 1, 10);
    c.transfer(a, 1, 20);
    // A prepares b; V promises b and A counts it (2 of 3).
    c.elect(a);
    c.deliver(|w| is(w, a, v, prepare));
    c.deliver(|w| is(w, v, a, |m| matches!(m, Message::Promise { .. })));
    // L prepares a lower ballot and wins with P and Q; V's disk loses its promise for b.
    c.elect(l);
    assert!(c.core(l).promised() < c.core(a).promised());
    c.deliver(|w| is(w, l, p, prepare) || is(w, l, q, prepare));
    c.crash(v);
    c.disks[v].records = vec![Record::Amnesia]; // as `benmo node --recover` leaves it
    c.restart(v);
    c.batch(v, vec![]);
    c.deliver(|w| w.to == l && matches!(w.env.msg, Message::Promise { .. }));
    assert!(c.core(l).is_leader());
    // A runs no turn for a leader timeout; V waits that long, asks L, P and Q, and recovers.
    c.now += Timing::default().leader_timeout_ms;
    c.batch(v, vec![]);
    c.deliver(|w| w.from == v && w.to != a);
    c.deliver(|w| w.to == v && matches!(w.env.msg, Message::ProbeReply(_)));
    let recovered = |r: &Reply| matches!(r, Reply::Recovered { .. });
    assert_eq!(c.replies(v, recovered), 1, "{:?}", c.lines[v]);
    // X is chosen at depth 1 by L, Q and V; P and Q miss the decide.
    c.deliver(|w| w.from == l && (w.to == q || w.to == v));
    c.deliver(|w| w.to == l && matches!(w.env.msg, Message::Accepted { .. }));
    assert_eq!(c.disks[l].chain.len(), 1, "X is chosen");
    // P's promise for b reaches A, handled before the tick in A's next turn.
    c.deliver(|w| is(w, a, p, prepare));
    c.deliver(|w| is(w, p, a, |m| matches!(m, Message::Promise { .. })));
    assert!(!c.core(a).is_leader(), "a timed-out candidacy won");
    c.deliver(|w| w.from == a && (w.to == p || w.to == q));
    c.deliver(|w| w.to == a);
    let firsts: Vec<&Block> = c.disks.iter().filter_map(|d| d.chain.first()).collect();
    assert!(
        firsts.iter().all(|b| *b == firsts[0]),
        "two values chosen at depth 1: {firsts:?}"
    );
}

/// Was a false `error:` (simulator seeds 3003614, 3033837, 3114380, with pauses): a node asked
/// for blocks from depth 5, its chain was then cut by `--recover`, and a peer that had been
/// stalled meanwhile answered the old request. Blocks above a gap are a stale reply, not a
/// bad block: the node takes none of them, prints no error, and asks again.
#[test]
fn blocks_above_a_gap_are_a_stale_reply_not_an_error() {
    let mut chain = Ledger::new(3, BALANCE);
    let mut blocks = Vec::new();
    for _ in 0..6 {
        let block = chain.seal(1, &[]);
        chain.apply(&block).unwrap();
        blocks.push(block);
    }
    let mut core = Core::restore(params(0, 3), Ledger::new(3, BALANCE), []);
    let mut out = Vec::new();
    let stale = Message::Blocks {
        blocks: blocks[4..].to_vec(),
    };
    core.handle(10, msg(1, 6, stale), &mut out);
    assert_eq!(errors(&out), 0, "{out:?}");
    assert_eq!(core.ledger().depth, 0);
    let asks = |a: &Action| matches!(a, Action::Send { env, .. } if matches!(env.msg, Message::CatchUp { from: 1 }));
    assert!(out.iter().any(asks), "{out:?}");
    let fresh = Message::Blocks { blocks };
    core.handle(20, msg(1, 6, fresh), &mut out);
    assert_eq!(core.ledger().depth, 6);
}

fn replies(out: &[Action]) -> Vec<Reply> {
    out.iter()
        .filter_map(|a| match a {
            Action::Reply(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn command(core: &mut Core, cmd: Command) -> Vec<Action> {
    let mut out = Vec::new();
    core.handle(0, Event::Command(cmd), &mut out);
    out
}

/// The state each link shows in `status`.
fn links(core: &mut Core) -> Vec<(NodeId, LinkState)> {
    replies(&command(core, Command::Status { full: false }))
        .into_iter()
        .filter_map(|r| match r {
            Reply::Link { peer, state, .. } => Some((peer, state)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_sever_is_told_to_the_peer_and_shown_at_both_ends() {
    let mut a = Core::restore(params(0, 3), Ledger::new(3, BALANCE), []);
    let mut b = Core::restore(params(1, 3), Ledger::new(3, BALANCE), []);
    let unchanged = |severed| Reply::LinkUnchanged {
        peer: 1,
        severed,
        by_peer: false,
    };
    let out = command(&mut a, Command::Restore(1));
    assert_eq!(replies(&out), [unchanged(false)]);
    let out = command(&mut a, Command::Sever(1));
    let told = out.iter().any(
        |x| matches!(x, Action::Send { to, env } if to == &[1] && env.msg == Message::Severed),
    );
    assert!(told, "{out:?}");
    assert_eq!(
        replies(&command(&mut a, Command::Sever(1))),
        [unchanged(true)]
    );
    let mut out = Vec::new();
    b.handle(5, msg(0, 0, Message::Severed), &mut out);
    let by = |severed| Reply::SeveredBy { peer: 0, severed };
    assert_eq!(replies(&out), [by(true)]);
    assert!(links(&mut b).contains(&(0, LinkState::SeveredBy)));
    assert!(links(&mut a).contains(&(1, LinkState::SeveredHere)));
    // The restarted (or restored) peer talks again: the sever is over, and b says so.
    let mut out = Vec::new();
    b.handle(6, msg(0, 0, Message::Hello), &mut out);
    assert_eq!(replies(&out), [by(false)]);
    // A peer that comes back while we sever it is told again.
    let mut out = Vec::new();
    a.handle(7, Event::Link { peer: 1, up: true }, &mut out);
    let told = out
        .iter()
        .any(|x| matches!(x, Action::Send { env, .. } if env.msg == Message::Severed));
    assert!(told, "{out:?}");
}

#[test]
fn state_shows_the_depth_in_play_and_who_answered_the_leader() {
    let mut c = with_leader(5, 0);
    c.transfer(0, 1, 10);
    let core = c.cores[0].as_mut().unwrap();
    let answer = replies(&command(core, Command::State));
    let [Reply::State(v)] = answer.as_slice() else {
        panic!("one state reply: {answer:?}");
    };
    assert_eq!((v.node, v.depth, v.nodes, v.quorum), (0, 1, 5, 3));
    assert!(matches!(v.role, RoleView::Leader { .. }), "{v:?}");
    let status = replies(&command(core, Command::Status { full: false }));
    assert!(
        matches!(&status[0], Reply::Status(s) if s.role == RoleName::Leader),
        "{status:?}"
    );
}

mod hot_path;
