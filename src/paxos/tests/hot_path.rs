//! The hot path, one event at a time, each compared with the exact list of actions it must
//! produce (after openraft's `engine/` tests): a leader proposing, an acceptor voting, a
//! leader learning a quorum, a learner committing, a candidate winning with promises that
//! carry values.

use super::*;

fn send(to: Vec<NodeId>, depth: u64, msg: Message) -> Action {
    Action::Send {
        to,
        env: Envelope {
            depth,
            id: 0,
            seq: 0,
            msg,
        },
    }
}

/// Leader 0 (ballot 1.0) of three, with transfer 0.1 queued; the value it will propose.
fn leader_with_a_transfer() -> (Cluster, Transfer, Proposal) {
    let mut c = with_leader(3, 0);
    let t = tx(0, 1, 1, 5);
    let cmd = Command::Transfer {
        debit: 0,
        credit: 1,
        amount: 5,
    };
    assert_eq!(
        c.handle(0, Event::Command(cmd)),
        vec![
            Action::Persist(Record::Queue(t)),
            Action::Reply(Reply::Queued(t))
        ]
    );
    let value = Proposal {
        proposer: 0,
        transfers: vec![t],
    };
    (c, t, value)
}

/// The leader's own vote, handed back to it once durable.
fn own_vote(b: Ballot) -> Action {
    Action::Loopback(Envelope {
        depth: 0,
        id: 0,
        seq: 0,
        msg: Message::Accepted {
            ballot: b,
            depth: 1,
        },
    })
}

fn early(action: Action) -> Action {
    Action::Early(Box::new(action))
}

fn accept(b: Ballot, value: &Proposal) -> Message {
    Message::Accept {
        ballot: b,
        depth: 1,
        value: value.clone(),
    }
}

/// Its own transfer was queued in this turn, so the accept waits for the queue record.
#[test]
fn a_leader_proposes_by_voting_itself_then_asking_everyone() {
    let (mut c, _, value) = leader_with_a_transfer();
    let b = ballot(1, 0);
    assert_eq!(
        c.handle(0, Event::Tick),
        vec![
            Action::Persist(Record::Accept {
                depth: 1,
                ballot: b,
                value: value.clone(),
            }),
            own_vote(b),
            send(vec![1, 2], 0, accept(b, &value)),
        ]
    );
}

#[test]
fn an_acceptor_votes_durably_then_answers_the_leader() {
    let (mut c, _, value) = leader_with_a_transfer();
    let b = ballot(1, 0);
    assert_eq!(
        c.handle(1, msg(0, 0, accept(b, &value))),
        vec![
            Action::Persist(Record::Accept {
                depth: 1,
                ballot: b,
                value,
            }),
            send(
                vec![0],
                0,
                Message::Accepted {
                    ballot: b,
                    depth: 1
                }
            ),
        ]
    );
}

#[test]
fn a_leader_that_hears_a_majority_decides_commits_and_answers_its_client() {
    let (mut c, t, value) = leader_with_a_transfer();
    let b = ballot(1, 0);
    c.handle(0, Event::Tick); // proposes: its own vote is one of the two it needs
    let Action::Loopback(own) = own_vote(b) else {
        unreachable!()
    };
    assert_eq!(c.handle(0, Event::Loopback(own)), vec![]); // durable: counted, one of two
    let accepted = Message::Accepted {
        ballot: b,
        depth: 1,
    };
    let block = Ledger::new(3, BALANCE).seal(0, &value.transfers);
    // Chosen: the decide and the answer leave before the leader's own copy is written.
    assert_eq!(
        c.handle(0, msg(1, 0, accepted)),
        vec![
            early(send(
                vec![1, 2],
                0,
                Message::Decide {
                    ballot: b,
                    depth: 1
                }
            )),
            Action::Commit(block),
            early(Action::Reply(Reply::Committed {
                transfer: t,
                depth: 1
            })),
        ]
    );
}

#[test]
fn a_learner_commits_the_value_it_accepted_once_told_it_was_chosen() {
    let (mut c, _, value) = leader_with_a_transfer();
    let b = ballot(1, 0);
    c.handle(1, msg(0, 0, accept(b, &value)));
    let block = Ledger::new(3, BALANCE).seal(0, &value.transfers);
    let decide = Message::Decide {
        ballot: b,
        depth: 1,
    };
    assert_eq!(c.handle(1, msg(0, 1, decide)), vec![Action::Commit(block)]);
}

#[test]
fn a_candidate_that_wins_with_a_promise_carrying_a_value_proposes_that_value() {
    let (mut c, _, value) = leader_with_a_transfer();
    let old = ballot(1, 0);
    c.handle(1, msg(0, 0, accept(old, &value))); // node 1 votes; node 2 never hears of it
    c.crash(0);
    c.wire.clear();
    c.elect(2);
    let new = ballot(2, 2);
    let promise = Message::Promise {
        ballot: new,
        accepted: vec![(1, old, value.clone())],
    };
    // With node 1's promise it has a majority: it leads, and says so at once.
    assert_eq!(
        c.handle(2, msg(1, 0, promise)),
        vec![send(vec![0, 1], 0, Message::Heartbeat { ballot: new })]
    );
    assert!(c.core(2).is_leader());
    // Its first proposal is the value node 1 accepted (node 0's), not a value of its own;
    // the accept leaves while its own vote is being written (it counts once durable).
    assert_eq!(
        c.handle(2, Event::Tick),
        vec![
            Action::Persist(Record::Accept {
                depth: 1,
                ballot: new,
                value: value.clone(),
            }),
            own_vote(new),
            early(send(vec![0, 1], 0, accept(new, &value))),
        ]
    );
}
