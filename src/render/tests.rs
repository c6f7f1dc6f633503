//! Golden lines, one per `Reply` and `Step` variant: a wording change shows up here.

use super::*;
use crate::ledger::{Hash, LedgerError};
use crate::paxos::Ballot;

const CLOCK: &str = "14:02:07.113";

fn tx(node: NodeId, seq: u64, credit: NodeId, amount: u64) -> Transfer {
    Transfer {
        id: TxId { node, seq },
        credit,
        amount,
    }
}

fn b(round: u64, node: NodeId) -> Ballot {
    Ballot { round, node }
}

fn value(transfers: Vec<Transfer>) -> Proposal {
    Proposal {
        proposer: 1,
        transfers,
    }
}

fn status(full: bool) -> Status {
    Status {
        node: 1,
        depth: 3,
        head: Hash([0xab; 32]),
        full,
        promised: b(2, 0),
        leader: Some(0),
        role: RoleName::Follower,
        queue: 0,
        transfers: 9,
    }
}

/// Which variant a reply is, so that the goldens below must name every one.
fn reply_kind(r: &Reply) -> usize {
    match r {
        Reply::Queued(_) => 0,
        Reply::Refused(_) => 1,
        Reply::Committed { .. } => 2,
        Reply::LostId { .. } => 3,
        Reply::BadBlock { .. } => 4,
        Reply::Recovered { .. } => 5,
        Reply::CaughtUp { .. } => 6,
        Reply::Waiting { .. } => 7,
        Reply::Balance { .. } => 8,
        Reply::QueueEmpty => 9,
        Reply::QueueEntry(_) => 10,
        Reply::Status(_) => 11,
        Reply::Link { .. } => 12,
        Reply::LinkSet { .. } => 13,
        Reply::RolledBack { .. } => 14,
        Reply::State(_) => 15,
        Reply::LinkUnchanged { .. } => 16,
        Reply::SeveredBy { .. } => 17,
    }
}

fn reply_goldens() -> Vec<(Reply, &'static str)> {
    let t = tx(2, 17, 0, 5);
    vec![
        (Reply::Queued(t), "queued 2.17 2 0 5"),
        (
            Reply::Refused(Refusal::ZeroAmount),
            "error: amount must be a positive integer",
        ),
        (
            Reply::Committed {
                transfer: t,
                depth: 9,
            },
            "committed 2.17 2 0 5 depth 9",
        ),
        (
            Reply::LostId {
                queued: t,
                by: tx(2, 17, 1, 3),
            },
            "error: queued transfer 2.17 2 0 5 lost its id to 2.17 2 1 3; queue it again",
        ),
        (
            Reply::BadBlock {
                depth: 4,
                from: 2,
                error: LedgerError::BadHash { depth: 4 },
            },
            "error: rejected block 4 from node 2: block 4 fails its hash",
        ),
        (
            Reply::Recovered {
                promised: b(3, 0),
                floor: 12,
            },
            "recovered: promised 3.0, promising again above depth 12",
        ),
        (
            Reply::CaughtUp { depth: 12 },
            "caught up: transfers resume at depth 12",
        ),
        (
            Reply::Waiting { peers: vec![0, 3] },
            "waiting: node 0, node 3 still recovering; this node recovers once a majority has caught up",
        ),
        (
            Reply::Balance {
                node: 1,
                balance: 95,
            },
            "balance 1 95",
        ),
        (Reply::QueueEmpty, "queue empty"),
        (Reply::QueueEntry(t), "queue 2.17 2 0 5"),
        (
            Reply::Status(status(false)),
            "node 1 depth 3 head abababababab leader 0 queue 0 transfers 9\nrole follower ballot 2.0",
        ),
        (
            Reply::Link {
                peer: 2,
                state: LinkState::Up,
                heard_ago: Some(3_200),
            },
            "link 2 up heard 3.2 s ago",
        ),
        (
            Reply::LinkSet {
                peer: 2,
                severed: true,
            },
            "link 2 severed",
        ),
        (
            Reply::RolledBack {
                node: 2,
                from: 1,
                seen: 120,
                disk: 87,
            },
            "note: node 2's state is older than what node 1 has seen from it (sync 120, disk holds 87): recovering it from its peers",
        ),
        (
            Reply::State(StateView {
                node: 0,
                depth: 4,
                promised: b(2, 0),
                accepted: Some((b(2, 0), value(vec![t]))),
                chosen: None,
                role: RoleView::Leader {
                    ballot: b(2, 0),
                    accepted_by: Some(vec![0, 2, 3]),
                },
                nodes: 5,
                quorum: 3,
            }),
            "state of node 0 at depth 4 (chain depth 3):\n  promised ballot 2.0\n  \
             accepted ballot 2.0 value [2.17]\n  chosen: not known to this node yet\n  \
             role leader, ballot 2.0: accepted by {0,2,3}, 3 of 5 (majority 3)",
        ),
        (
            Reply::LinkUnchanged {
                peer: 2,
                severed: false,
                by_peer: true,
            },
            "link 2 was not severed here; node 2 severed it at its end",
        ),
        (
            Reply::SeveredBy {
                peer: 2,
                severed: true,
            },
            "link 2 severed by node 2: it ignores this node",
        ),
    ]
}

#[test]
fn every_reply_renders_as_its_golden_line() {
    let goldens = reply_goldens();
    let mut kinds: Vec<usize> = goldens.iter().map(|(r, _)| reply_kind(r)).collect();
    kinds.dedup();
    assert_eq!(kinds, (0..18).collect::<Vec<_>>(), "one golden per variant");
    for (r, line) in goldens {
        assert_eq!(reply(&r), line, "{r:?}");
    }
}

#[test]
fn every_refusal_and_link_line_renders_as_golden() {
    let cases = [
        (
            Refusal::Recovering,
            "recovering lost state: transfers resume once this node has caught up",
        ),
        (
            Refusal::UnknownNode { node: 7, nodes: 3 },
            "unknown node 7 (nodes are 0..2)",
        ),
        (
            Refusal::NotOwnAccount { node: 1 },
            "node 1 can only transfer from its own account 1",
        ),
        (
            Refusal::SameAccount,
            "debit and credit are the same account",
        ),
        (Refusal::ZeroAmount, "amount must be a positive integer"),
        (
            Refusal::Overdraft {
                requested: 41,
                available: 40,
            },
            "insufficient funds: 41 requested, 40 available",
        ),
        (
            Refusal::NoLink { from: 1, to: 1 },
            "no link from node 1 to node 1",
        ),
    ];
    for (why, text) in cases {
        assert_eq!(refusal(&why), text);
    }
    let link = |state, heard_ago| {
        reply(&Reply::Link {
            peer: 0,
            state,
            heard_ago,
        })
    };
    assert_eq!(link(LinkState::Down, None), "link 0 down never heard from");
    assert_eq!(
        link(LinkState::SeveredHere, Some(40)),
        "link 0 severed here heard 40 ms ago"
    );
    assert_eq!(
        link(LinkState::Up, Some(300_000)),
        "link 0 up heard 5 min ago"
    );
}

#[test]
fn every_reply_line_fits_80_columns_in_short_form() {
    // A busy classroom cluster: a million blocks, a hundred million transfers.
    let status = Status {
        node: 9,
        depth: 1_000_000,
        queue: 10_000,
        transfers: 100_000_000,
        promised: Ballot {
            round: 1_000_000,
            node: 9,
        },
        ..status(false)
    };
    let mut all: Vec<Reply> = reply_goldens().into_iter().map(|(r, _)| r).collect();
    all.push(Reply::Status(status));
    for r in all.iter().filter(|r| {
        !matches!(
            r,
            Reply::Waiting { .. } | Reply::RolledBack { .. } | Reply::LostId { .. }
        )
    }) {
        for line in reply(r).lines() {
            assert!(line.chars().count() <= 80, "{line}");
        }
    }
}

#[test]
fn a_fatal_stop_says_why_and_what_to_do() {
    let why = Fatal::RolledBack {
        node: 2,
        from: 1,
        seen: 120,
        disk: 87,
    };
    assert_eq!(
        fatal(&why),
        "node 2's state is older than what node 1 has seen from it (sync 120, disk holds 87): \
         it was restored from a copy or lost writes; start with --recover to rebuild it from \
         its peers"
    );
}

#[test]
fn lines_read_back_as_what_was_rendered() {
    let t = tx(2, 17, 0, 5);
    let queued = reply(&Reply::Queued(t));
    assert_eq!(parse(&queued), Some(Heard::Queued(t)));
    let committed = reply(&Reply::Committed {
        transfer: t,
        depth: 9,
    });
    assert_eq!(
        parse(&committed),
        Some(Heard::Committed {
            transfer: t,
            depth: 9
        })
    );
    let why = Refusal::Overdraft {
        requested: 41,
        available: 40,
    };
    let refused = reply(&Reply::Refused(why.clone()));
    assert_eq!(parse(&refused), Some(Heard::Error(refusal(&why))));
    for full in [false, true] {
        let s = status(full);
        let line = reply(&Reply::Status(s.clone()));
        let head = if full {
            s.head.to_string()
        } else {
            s.head.short()
        };
        let back = StatusLine {
            depth: s.depth,
            head,
            leader: s.leader,
            queue: s.queue,
            transfers: s.transfers,
        };
        assert_eq!(parse(&line), Some(Heard::Status(back)));
    }
    let no_leader = Status {
        leader: None,
        ..status(false)
    };
    let line = reply(&Reply::Status(no_leader));
    assert!(matches!(parse(&line), Some(Heard::Status(s)) if s.leader.is_none()));
    // Lines a tool does not act on, and damaged ones, are not misread.
    for other in [
        "link 1 up heard 3 ms ago",
        "queued 2.17 3 0 5",
        "committed 2.17 2 0 5",
    ] {
        assert_eq!(parse(other), None, "{other}");
    }
}

/// Which variant a step is, so that the goldens below must name every one.
fn step_kind(s: &Step) -> usize {
    match s {
        Step::NoPromiseAmnesic { .. } => 0,
        Step::Promised { .. } => 1,
        Step::NoVoteRecovering { .. } => 2,
        Step::Voted { .. } => 3,
        Step::Refused { .. } => 4,
        Step::Probing => 5,
        Step::CatchingUp { .. } => 6,
        Step::SteppingDown(_) => 7,
        Step::Following { .. } => 8,
        Step::ElectionIn { .. } => 9,
        Step::ElectionTimedOut { .. } => 10,
        Step::Forwarding { .. } => 11,
        Step::Prepare { .. } => 12,
        Step::PromiseFrom { .. } => 13,
        Step::RefusedBy { .. } => 14,
        Step::Behind { .. } => 15,
        Step::Adopt { .. } => 16,
        Step::Elected { .. } => 17,
        Step::AcceptIn { .. } => 18,
        Step::Propose { .. } => 19,
        Step::AcceptedFrom { .. } => 20,
        Step::ChosenHeld { .. } => 21,
        Step::Decide { .. } => 22,
        Step::RoundOver { .. } => 23,
        Step::Learned { .. } => 24,
        Step::CommittedBlock { .. } => 25,
        Step::IgnoredBlocks { .. } => 26,
        Step::RolledBackRecovering { .. } => 27,
        Step::StartChecked { .. } => 28,
    }
}

fn step_goldens() -> Vec<(Step, &'static str)> {
    let v = value(vec![tx(1, 4, 0, 5), tx(2, 9, 1, 1)]);
    vec![
        (
            Step::NoPromiseAmnesic {
                ballot: b(4, 1),
                depth: 2,
            },
            "14:02:07.113 [paxos] node 3: ballot 4.1 depth 2: no promise: it lost its votes",
        ),
        (
            Step::Promised {
                ballot: b(4, 1),
                depth: 2,
                to: 1,
                carried: 0,
            },
            "14:02:07.113 [paxos] node 3: ballot 4.1 depth 2: promise to node 1, had none",
        ),
        (
            Step::NoVoteRecovering {
                ballot: b(4, 1),
                depth: 2,
            },
            "14:02:07.113 [paxos] node 3: ballot 4.1 depth 2: no vote: recovering lost state",
        ),
        (
            Step::Voted {
                ballot: b(4, 1),
                depth: 2,
                from: 1,
                value: v.clone(),
            },
            "14:02:07.113 [paxos] node 3: ballot 4.1 depth 2: accepted [1.4 2.9] from node 1",
        ),
        (
            Step::Refused {
                ballot: b(4, 1),
                asked: Asked::Accept,
                to: 1,
                promised: b(5, 2),
            },
            "14:02:07.113 [paxos] node 3: ballot 4.1: refuses accept to node 1: promised 5.2",
        ),
        (
            Step::Probing,
            "14:02:07.113 [paxos] node 3: recovering lost state: asking peers what they know",
        ),
        (
            Step::CatchingUp { peer: 2, from: 5 },
            "14:02:07.113 [paxos] node 3: behind node 2: asking for blocks from depth 5",
        ),
        (
            Step::SteppingDown(StepDown::HigherBallot(b(5, 2))),
            "14:02:07.113 [paxos] node 3: stepping down: ballot 5.2 is higher",
        ),
        (
            Step::Following { ballot: b(4, 1) },
            "14:02:07.113 [paxos] node 3: following leader 1 (ballot 4.1)",
        ),
        (
            Step::ElectionIn { delay: 42 },
            "14:02:07.113 [paxos] node 3: no leader; runs for leader in 42 ms (random delay)",
        ),
        (
            Step::ElectionTimedOut { ballot: b(4, 3) },
            "14:02:07.113 [paxos] node 3: ballot 4.3: too few promises in time; will retry",
        ),
        (
            Step::Forwarding {
                count: 3,
                leader: 1,
            },
            "14:02:07.113 [paxos] node 3: forward 3 transfers to leader 1",
        ),
        (
            Step::Prepare {
                ballot: b(4, 3),
                depth: 2,
            },
            "14:02:07.113 [paxos] node 3: ballot 4.3 depth 2: running for leader: prepare",
        ),
        (
            Step::PromiseFrom {
                ballot: b(4, 3),
                from: 1,
                have: 2,
                nodes: 5,
                quorum: 3,
                carried: vec![(2, b(3, 1), v.clone())],
            },
            "14:02:07.113 [paxos] node 3: ballot 4.3: promises 2 of 5 (majority 3): node 1",
        ),
        (
            Step::RefusedBy {
                ballot: b(4, 3),
                from: 1,
                promised: b(5, 2),
            },
            "14:02:07.113 [paxos] node 3: ballot 4.3: refused by node 1, which promised 5.2",
        ),
        (
            Step::Behind { ahead: 2, depth: 7 },
            "14:02:07.113 [paxos] node 3: node 2 is at depth 7: catching up before leading",
        ),
        (
            Step::Adopt {
                ballot: b(4, 3),
                depth: 2,
                from: 1,
                accepted: b(3, 1),
            },
            "14:02:07.113 [paxos] node 3: ballot 4.3 depth 2: must re-propose node 1's value",
        ),
        (
            Step::Elected {
                ballot: b(4, 3),
                depth: 2,
                have: 3,
                nodes: 5,
                quorum: 3,
            },
            "14:02:07.113 [paxos] node 3: ballot 4.3 depth 2: elected leader, 3 of 5 promised",
        ),
        (
            Step::AcceptIn {
                ballot: b(4, 3),
                hold: 2000,
            },
            "14:02:07.113 [paxos] node 3: ballot 4.3: accept phase in 2000 ms (phase delay)",
        ),
        (
            Step::Propose {
                ballot: b(4, 3),
                depth: 2,
                value: v.clone(),
            },
            "14:02:07.113 [paxos] node 3: ballot 4.3 depth 2: propose [1.4 2.9]: accept",
        ),
        (
            Step::AcceptedFrom {
                ballot: b(4, 3),
                depth: 2,
                from: 1,
                have: 2,
                nodes: 5,
                quorum: 3,
            },
            "14:02:07.113 [paxos] node 3: ballot 4.3 depth 2: accepted 2 of 5 (majority 3)",
        ),
        (
            Step::ChosenHeld {
                ballot: b(4, 3),
                depth: 2,
                hold: 2000,
            },
            "14:02:07.113 [paxos] node 3: ballot 4.3 depth 2: chosen; decide in 2000 ms",
        ),
        (
            Step::Decide {
                ballot: b(4, 3),
                depth: 2,
                value: v.clone(),
                held: false,
            },
            "14:02:07.113 [paxos] node 3: ballot 4.3 depth 2: chosen [1.4 2.9]: decide",
        ),
        (
            Step::RoundOver {
                ballot: b(4, 3),
                depth: 2,
            },
            "14:02:07.113 [paxos] node 3: ballot 4.3 depth 2: round over; next from prepare",
        ),
        (
            Step::Learned {
                ballot: b(4, 1),
                depth: 2,
                value: value(vec![]),
                from: 1,
            },
            "14:02:07.113 [paxos] node 3: ballot 4.1 depth 2: decided empty (from node 1)",
        ),
        (
            Step::CommittedBlock {
                depth: 2,
                head: Hash([0xab; 32]),
                transfers: 2,
            },
            "14:02:07.113 [paxos] node 3: committed block 2 head abababababab (2 transfers)",
        ),
        (
            Step::IgnoredBlocks { depth: 9, from: 1 },
            "14:02:07.113 [paxos] node 3: ignored blocks from depth 9 from node 1",
        ),
        (
            Step::RolledBackRecovering {
                from: 1,
                seen: 120,
                disk: 87,
            },
            "14:02:07.113 [paxos] node 3: disk older than node 1 saw (87 < 120); recovering",
        ),
        (
            Step::StartChecked { answered: 4 },
            "14:02:07.113 [paxos] node 3: start check: 4 peers saw nothing newer; voting",
        ),
    ]
}

#[test]
fn every_step_renders_as_its_golden_line() {
    let goldens = step_goldens();
    let mut kinds: Vec<usize> = goldens.iter().map(|(s, _)| step_kind(s)).collect();
    kinds.dedup();
    assert_eq!(kinds, (0..29).collect::<Vec<_>>(), "one golden per variant");
    for (s, line) in goldens {
        assert_eq!(narration(CLOCK, 3, &s, false), line, "{s:?}");
    }
}

#[test]
fn counts_say_of_how_many_and_when_a_majority_is_reached() {
    let accepted = |have| Step::AcceptedFrom {
        ballot: b(4, 3),
        depth: 2,
        from: 1,
        have,
        nodes: 5,
        quorum: 3,
    };
    assert_eq!(
        step(&accepted(4), usize::MAX),
        "ballot 4.3 depth 2: accepted by node 1, 4 of 5, majority reached"
    );
    assert_eq!(
        narration(CLOCK, 3, &accepted(4), false),
        "14:02:07.113 [paxos] node 3: ballot 4.3 depth 2: accepted 4 of 5, a majority"
    );
    let promise = Step::PromiseFrom {
        ballot: b(4, 3),
        from: 1,
        have: 1,
        nodes: 3,
        quorum: 2,
        carried: vec![],
    };
    assert_eq!(
        narration(CLOCK, 3, &promise, false),
        "14:02:07.113 [paxos] node 3: ballot 4.3: promises 1 of 3 (majority 2): node 1"
    );
}

#[test]
fn a_held_decide_does_not_say_chosen_again() {
    let held = Step::Decide {
        ballot: b(4, 3),
        depth: 2,
        value: value(vec![tx(1, 4, 0, 5)]),
        held: true,
    };
    assert_eq!(step(&held, usize::MAX), "ballot 4.3 depth 2: decide [1.4]");
    let chosen = Step::ChosenHeld {
        ballot: b(4, 3),
        depth: 2,
        hold: 5,
    };
    let said = [chosen, held].map(|s| step(&s, usize::MAX));
    assert_eq!(said.iter().filter(|l| l.contains("chosen")).count(), 1);
}

#[test]
fn full_narration_keeps_every_detail() {
    let adopt = Step::Adopt {
        ballot: b(4, 3),
        depth: 2,
        from: 1,
        accepted: b(3, 1),
    };
    assert_eq!(
        step(&adopt, usize::MAX),
        "ballot 4.3 depth 2: node 1 had accepted ballot 3.1's value at depth 2; \
         the new leader must propose that value, not its own"
    );
    let propose = Step::Propose {
        ballot: b(4, 3),
        depth: 2,
        value: value((1..=12).map(|seq| tx(1, seq, 0, 1)).collect()),
    };
    assert_eq!(
        step(&propose, usize::MAX),
        "ballot 4.3 depth 2: propose [1.1 1.2 1.3 1.4 1.5 1.6 1.7 1.8 +4 more]: accept"
    );
    assert_eq!(
        narration(CLOCK, 3, &propose, false),
        "14:02:07.113 [paxos] node 3: ballot 4.3 depth 2: propose [1.1 1.2 +10]: accept"
    );
}

#[test]
fn every_step_fits_80_columns_even_with_huge_numbers() {
    let huge = Ballot {
        round: u64::MAX,
        node: 9_999,
    };
    let wide = value((0..50).map(|i| tx(9_999, u64::MAX - i, 0, 1)).collect());
    let mut steps: Vec<Step> = step_goldens().into_iter().map(|(s, _)| s).collect();
    steps.push(Step::Voted {
        ballot: huge,
        depth: u64::MAX,
        from: 9_999,
        value: wide.clone(),
    });
    steps.push(Step::Adopt {
        ballot: huge,
        depth: u64::MAX,
        from: 9_999,
        accepted: huge,
    });
    steps.push(Step::PromiseFrom {
        ballot: huge,
        from: 9_999,
        have: 9_999,
        nodes: 9_999,
        quorum: 5_000,
        carried: vec![(1, huge, wide)],
    });
    for s in steps {
        let line = narration(CLOCK, 9_999, &s, false);
        assert!(line.chars().count() <= WIDTH, "{line}");
    }
}
