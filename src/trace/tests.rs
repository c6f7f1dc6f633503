//! Tests of the trace writer, the round builder and both pictures.

use super::read::{self, Traces};
use super::record::{Ev, Out, Rec, Summary};
use super::round::{self, Fate, Row};
use super::{svg, text, Format, Options, TraceWriter};
use crate::ledger::{Block, Hash, Transfer, TxId};
use crate::paxos::{Ballot, Message, Proposal};
use std::fs;

fn ballot(round: u64, node: usize) -> Ballot {
    Ballot { round, node }
}

fn tx(node: usize, seq: u64) -> Transfer {
    Transfer {
        id: TxId { node, seq },
        credit: (node + 1) % 3,
        amount: 5,
    }
}

fn value() -> Proposal {
    Proposal {
        proposer: 0,
        transfers: vec![tx(0, 3), tx(2, 1)],
    }
}

/// Writes `out` the way the writer does and reads it back.
fn via_json(out: &Out) -> Rec {
    Rec::parse(&serde_json::to_string(out).unwrap()).unwrap()
}

fn send(t: u64, node: usize, id: u64, to: &[usize], msg: &Message) -> Rec {
    let mut out = Out::new(t, node, "send");
    out.id = Some(id);
    out.to = Some(to);
    out.msg = Some(Summary(msg));
    via_json(&out)
}

fn recv(t: u64, node: usize, from: usize, id: u64, msg: &Message) -> Rec {
    let mut out = Out::new(t, node, "recv");
    out.from = Some(from);
    out.id = Some(id);
    out.msg = Some(Summary(msg));
    via_json(&out)
}

fn start(t: u64, node: usize, inc: u64) -> Rec {
    let mut out = Out::new(t, node, "start");
    out.inc = Some(inc);
    via_json(&out)
}

fn commit(t: u64, node: usize) -> Rec {
    let v = value();
    let mut out = Out::new(t, node, "commit");
    out.depth = Some(7);
    out.proposer = Some(0);
    out.value = Some(super::record::Ids(&v.transfers));
    out.txs = Some(v.transfers.len());
    via_json(&out)
}

fn prepare() -> Message {
    Message::Prepare {
        ballot: ballot(1, 0),
        depth: 7,
    }
}
fn promise() -> Message {
    Message::Promise {
        ballot: ballot(1, 0),
        accepted: vec![],
    }
}
fn accept() -> Message {
    Message::Accept {
        ballot: ballot(1, 0),
        depth: 7,
        value: value(),
    }
}
fn accepted() -> Message {
    Message::Accepted {
        ballot: ballot(1, 0),
        depth: 7,
    }
}
fn decide() -> Message {
    Message::Decide {
        ballot: ballot(1, 0),
        depth: 7,
    }
}

/// Node 0 leads ballot 1.0 at depth 7; its Accept to node 2 is lost. Every sender numbers
/// its messages from 1, so pairing must go by (sender, id). `skew` shifts node 1's clock.
fn golden_round(skew: i64) -> Vec<Vec<Rec>> {
    let s = |t: u64| (t as i64 + skew) as u64;
    let n0 = vec![
        start(1000, 0, 1),
        send(1010, 0, 1, &[1, 2], &prepare()),
        recv(1030, 0, 1, 1, &promise()),
        recv(1031, 0, 2, 1, &promise()),
        send(1040, 0, 2, &[1, 2], &accept()),
        recv(1060, 0, 1, 2, &accepted()),
        send(1070, 0, 3, &[1, 2], &decide()),
        commit(1071, 0),
    ];
    let n1 = vec![
        start(s(1000), 1, 1),
        send(s(1001), 1, 99, &[0, 2], &Message::Hello),
        recv(s(1020), 1, 0, 1, &prepare()),
        send(s(1025), 1, 1, &[0], &promise()),
        recv(s(1050), 1, 0, 2, &accept()),
        send(s(1055), 1, 2, &[0], &accepted()),
        recv(s(1080), 1, 0, 3, &decide()),
        commit(s(1081), 1),
    ];
    let n2 = vec![
        start(1000, 2, 1),
        recv(1021, 2, 0, 1, &prepare()),
        send(1026, 2, 1, &[0], &promise()),
        recv(1082, 2, 0, 3, &decide()),
    ];
    vec![n0, n1, n2]
}

fn traces(nodes: Vec<Option<Vec<Rec>>>) -> Traces {
    Traces {
        nodes,
        notes: Vec::new(),
    }
}

/// The traces as `read::load` gives them, kills inferred.
fn all(nodes: Vec<Vec<Rec>>) -> Traces {
    let mut nodes = nodes;
    nodes.iter_mut().for_each(super::record::mark_kills);
    traces(nodes.into_iter().map(Some).collect())
}

fn arrows(rows: &[Row]) -> Vec<(usize, usize, String, Fate)> {
    rows.iter()
        .filter_map(|r| match r {
            Row::Arrow {
                from,
                to,
                label,
                fate,
                ..
            } => Some((*from, *to, label.clone(), *fate)),
            Row::Mark { .. } => None,
        })
        .collect()
}

#[test]
fn every_receipt_pairs_with_exactly_one_send_and_the_rest_are_lost() {
    let t = all(golden_round(0));
    let d = round::build(&t, 7).unwrap();
    let a = arrows(&d.rows);
    let receipts = t
        .nodes
        .iter()
        .flatten()
        .flatten()
        .filter(|r| matches!(&r.ev, Ev::Recv { msg, .. } if msg.kind != super::record::Kind::Hello))
        .count();
    let delivered = a.iter().filter(|x| x.3 == Fate::Delivered).count();
    assert_eq!(delivered, receipts, "one arrow per receipt");
    let lost: Vec<_> = a.iter().filter(|x| x.3 == Fate::Lost).collect();
    assert_eq!(lost.len(), 1);
    assert_eq!((lost[0].0, lost[0].1), (0, 2));
    assert!(lost[0].2.starts_with("accept 1.0 depth 7"));
    // Node 1's promise (its id 1) pairs with node 1's send, not node 0's or node 2's id 1.
    assert!(a.contains(&(1, 0, "promise 1.0 (none accepted)".into(), Fate::Delivered)));
    assert!(a.contains(&(2, 0, "promise 1.0 (none accepted)".into(), Fate::Delivered)));
    assert_eq!(d.chosen.as_deref(), Some("0.3 2.1"));
    assert!(d.notes.is_empty(), "{:?}", d.notes);
}

#[test]
fn text_ladder_matches_the_golden_picture() {
    let d = round::build(&all(golden_round(0)), 7).unwrap();
    let got = text::render(&d);
    let want = include_str!("golden_ladder.txt");
    assert_eq!(got, want, "got:\n{got}");
    assert!(got.lines().all(|l| l.len() <= 80));
}

#[test]
fn svg_is_xml_and_names_every_node_and_phase() {
    let mut d = round::build(&all(golden_round(0)), 7).unwrap();
    d.notes.push("note: <odd> & \"quoted\" 'text'".into());
    let svg = svg::render(&d);
    let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
    let text: String = doc
        .descendants()
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join("\n");
    for want in [
        "node 0",
        "node 1",
        "node 2",
        "prepare",
        "promise",
        "accept 1.0",
    ] {
        assert!(text.contains(want), "no '{want}' in the SVG text");
    }
    for want in [
        "accepted",
        "decide",
        "Chosen at depth 7: 0.3 2.1",
        "<odd> &",
    ] {
        assert!(text.contains(want), "no '{want}' in the SVG text");
    }
}

#[test]
fn causal_order_survives_a_receiver_clock_far_behind() {
    // Node 1's clock runs 1000 ms behind node 0's: by wall time it would receive every
    // message before node 0 sent it.
    let d = round::build(&all(golden_round(-1000)), 7).unwrap();
    let a = arrows(&d.rows);
    let at = |from: usize, to: usize, phase: &str| {
        a.iter()
            .position(|x| x.0 == from && x.1 == to && x.2.starts_with(phase))
            .unwrap_or_else(|| panic!("no {phase} {from}->{to}"))
    };
    let chain = [
        at(0, 1, "prepare"),
        at(1, 0, "promise"),
        at(0, 1, "accept "),
        at(1, 0, "accepted"),
        at(0, 1, "decide"),
    ];
    assert!(chain.windows(2).all(|w| w[0] < w[1]), "{chain:?} in {a:#?}");
    // The lost accept to node 2 is drawn after the promises that made it possible.
    assert!(at(0, 2, "accept ") > at(1, 0, "promise"));
}

#[test]
fn a_node_whose_trace_lacks_the_round_gets_a_note() {
    let mut nodes = golden_round(0);
    // Node 2's trace was rotated past the round: only later heartbeats remain.
    let hb = Message::Heartbeat {
        ballot: ballot(1, 0),
    };
    nodes[2] = vec![recv(5000, 2, 0, 40, &hb), recv(5100, 2, 0, 41, &hb)];
    let d = round::build(&all(nodes.clone()), 7).unwrap();
    assert_eq!(
        d.notes,
        vec!["note: node 2's trace starts after this round began; its part is missing"]
    );
    let a = arrows(&d.rows);
    assert!(a.iter().any(|x| x.1 == 2 && x.3 == Fate::Unknown));
    assert!(
        !a.iter().any(|x| x.3 == Fate::Lost),
        "cannot tell, not lost"
    );
    // A node with no trace at all.
    let mut t = all(nodes);
    t.nodes[2] = None;
    let d = round::build(&t, 7).unwrap();
    assert_eq!(
        d.notes,
        vec!["note: node 2 has no trace; its part is missing"]
    );
    assert!(text::render(&d).contains("note: node 2 has no trace"));
}

#[test]
fn crash_and_restart_are_marked() {
    let mut nodes = golden_round(0);
    // Node 2 crashes after promising, restarts, then learns the decision.
    nodes[2].insert(3, start(1045, 2, 2));
    let d = round::build(&all(nodes), 7).unwrap();
    let marks: Vec<_> = d
        .rows
        .iter()
        .filter_map(|r| match r {
            Row::Mark { node: 2, label, .. } => Some(label.as_str()),
            _ => None,
        })
        .collect();
    // A kill leaves no record: the crash is drawn after its last record, not at the restart.
    assert_eq!(
        marks,
        vec![
            "node 2 crashed (killed; its last record)",
            "node 2 restarted (2)"
        ]
    );
    let ladder = text::render(&d);
    let prepare = ladder.find("|---------->|   prepare").unwrap();
    let crash = ladder
        .find("  |     |     X   node 2 crashed (killed; its last record)\n")
        .unwrap();
    let restart = ladder
        .find("  |     |     o   node 2 restarted (2)\n")
        .unwrap();
    assert!(prepare < crash && crash < restart, "{ladder}");
}

#[test]
fn the_last_decided_depth_is_the_default_and_missing_depths_are_errors() {
    let t = all(golden_round(0));
    assert_eq!(round::last_decided(&t), Some(7));
    let e = round::build(&t, 8).unwrap_err();
    assert_eq!(e, "no round at depth 8 in the traces");
}

#[test]
fn writer_records_read_back_and_rotation_keeps_the_size_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let node_dir = dir.path().join("node0");
    fs::create_dir(&node_dir).unwrap();
    let cap = 4096;
    let mut w = TraceWriter::with_cap(&node_dir, 0, 3, cap).unwrap();
    let mut last = 0;
    for i in 0..2000u64 {
        last = w.next_id();
        w.sent(i, last, &[1, 2], &accept());
        if i % 7 == 0 {
            w.flush().unwrap();
        }
    }
    w.stopped(2000).unwrap();
    assert_eq!(last, (3 << 32) | 2000);
    for name in [super::TRACE_FILE, super::ROTATED_FILE] {
        let size = fs::metadata(node_dir.join(name)).unwrap().len();
        assert!(size <= cap && size > cap / 2, "{name} holds {size} bytes");
    }
    let t = read::load(dir.path()).unwrap();
    assert!(t.notes.is_empty(), "{:?}", t.notes);
    let recs = t.nodes[0].as_ref().unwrap();
    assert!(matches!(recs.last().unwrap().ev, Ev::Stop));
    let Ev::Send { id, to, msg } = &recs[recs.len() - 2].ev else {
        panic!("not a send")
    };
    assert_eq!((*id, to.as_slice()), (last, &[1, 2][..]));
    assert_eq!(msg.value().unwrap().to_string(), "0.3 2.1");
}

#[test]
fn writer_round_trip_survives_a_torn_line_and_notes_unreadable_ones() {
    let dir = tempfile::tempdir().unwrap();
    let node_dir = dir.path().join("node0");
    fs::create_dir(&node_dir).unwrap();
    assert_eq!(super::next_incarnation(&node_dir).unwrap(), 1);
    assert_eq!(super::next_incarnation(&node_dir).unwrap(), 2);
    fs::write(node_dir.join(super::TRACE_FILE), "{\"t\":1,\"node\"").unwrap();
    let mut w = TraceWriter::open(&node_dir, 0, 2).unwrap();
    w.received(10, 1, 7, &promise());
    let block = Block {
        depth: 7,
        prev: Hash::ZERO,
        proposer: 0,
        transfers: value().transfers,
        hash: Hash::ZERO,
    };
    w.committed(11, &block);
    drop(w);
    let t = read::load(dir.path()).unwrap();
    assert_eq!(
        t.notes,
        vec!["note: skipped 1 unreadable line(s) in node0/trace.log, the first at line 1"]
    );
    let evs: Vec<_> = t.nodes[0].as_ref().unwrap().iter().map(|r| &r.ev).collect();
    assert!(matches!(evs[0], Ev::Start { inc: 2 }));
    assert!(matches!(evs[1], Ev::Recv { from: 1, id: 7, .. }));
    assert!(matches!(evs[2], Ev::Commit { depth: 7, value } if value.to_string() == "0.3 2.1"));
}

#[test]
fn options_default_to_text_and_to_svg_for_an_svg_file() {
    let words = |s: &str| crate::cli::Args::new(s.split_whitespace().map(String::from).collect());
    let o = Options::parse(words("--data d --depth 4")).unwrap();
    assert_eq!((o.format, o.depth, o.out), (Format::Text, Some(4), None));
    let o = Options::parse(words("--out r.svg")).unwrap();
    assert_eq!(o.format, Format::Svg);
    let o = Options::parse(words("--out r.svg --format text")).unwrap();
    assert_eq!(o.format, Format::Text);
    assert!(Options::parse(words("--format png")).is_err());
    assert!(Options::parse(words("--depth")).is_err());
    let o = Options::parse(words("--format=svg --depth=3")).unwrap();
    assert_eq!((o.format, o.depth), (Format::Svg, Some(3)));
    let e = Options::parse(words("--fromat svg")).unwrap_err();
    assert!(e.contains("did you mean --format?"), "{e}");
    let e = Options::parse(words("--format txt")).unwrap_err();
    assert!(e.contains("did you mean text?"), "{e}");
}

#[test]
fn no_traces_is_one_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = read::load(dir.path()).unwrap_err();
    assert!(e.starts_with("no traces found in "), "{e}");
}

// ----- what a student did, and what the nodes did by themselves -----

fn event<'a>(t: u64, node: usize, ev: &'static str, fill: impl FnOnce(&mut Out<'a>)) -> Rec {
    let mut out = Out::new(t, node, ev);
    fill(&mut out);
    via_json(&out)
}

fn link(t: u64, node: usize, peer: usize, up: bool) -> Rec {
    let ev = if up { "restore" } else { "sever" };
    event(t, node, ev, |o| o.peer = Some(peer))
}

fn dropped(t: u64, node: usize, id: u64, to: usize, msg: &Message) -> Rec {
    let to = [to];
    let mut out = Out::new(t, node, "drop");
    out.id = Some(id);
    out.to = Some(&to);
    out.msg = Some(Summary(msg));
    via_json(&out)
}

/// A classroom round on three nodes. Before it, nodes 1 and 2 severed their link. Node 0
/// (ballot 1.0) prepares depth 7; node 2's election 0.2 times out; node 0 drops its Accept
/// to node 2 (`drop accept 2`); node 1's accept makes the majority; node 1 crashes
/// (crashNode) and restarts; node 2 restores its link to 1; node 0 steps down.
fn classroom_round() -> Vec<Vec<Rec>> {
    let b10 = ballot(1, 0);
    let b02 = ballot(0, 2);
    let stepdown = |t, node, b: Ballot, leading| {
        event(t, node, "stepdown", |o| {
            o.ballot = Some(super::record::Shown(&b));
            o.leading = Some(leading);
        })
    };
    let n0 = vec![
        start(900, 0, 1),
        send(1010, 0, 1, &[1, 2], &prepare()),
        recv(1030, 0, 1, 1, &promise()),
        recv(1031, 0, 2, 1, &promise()),
        send(1040, 0, 2, &[1], &accept()),
        dropped(1040, 0, 2, 2, &accept()),
        recv(1060, 0, 1, 2, &accepted()),
        commit(1061, 0),
        send(1070, 0, 3, &[1, 2], &decide()),
        stepdown(1078, 0, b10, true),
    ];
    let n1 = vec![
        start(900, 1, 1),
        link(950, 1, 2, false),
        recv(1020, 1, 0, 1, &prepare()),
        send(1025, 1, 1, &[0], &promise()),
        recv(1050, 1, 0, 2, &accept()),
        send(1055, 1, 2, &[0], &accepted()),
        event(1056, 1, "crash", |_| {}),
        start(1075, 1, 2),
        recv(1080, 1, 0, 3, &decide()),
        commit(1081, 1),
    ];
    let n2 = vec![
        start(900, 2, 1),
        link(951, 2, 1, false),
        recv(1021, 2, 0, 1, &prepare()),
        event(1022, 2, "timeout", |o| {
            o.ballot = Some(super::record::Shown(&b02))
        }),
        send(1026, 2, 1, &[0], &promise()),
        link(1065, 2, 1, true),
        recv(1082, 2, 0, 3, &decide()),
    ];
    vec![n0, n1, n2]
}

#[test]
fn classroom_ladder_matches_the_golden_picture() {
    let d = round::build(&all(classroom_round()), 7).unwrap();
    let got = text::render(&d);
    let want = include_str!("golden_classroom.txt");
    assert_eq!(got, want, "got:\n{got}");
    assert!(got.lines().all(|l| l.len() <= 80));
}

/// Each marker, as one exact line of the ladder and as text in the SVG.
#[test]
fn every_marker_is_drawn_in_both_pictures() {
    let d = round::build(&all(classroom_round()), 7).unwrap();
    let ladder = text::render(&d);
    let svg = svg::render(&d);
    let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
    let svg_text: Vec<&str> = doc.descendants().filter_map(|n| n.text()).collect();
    for (line, label) in [
        (
            "links severed when it began: 1-2",
            "links severed when it began: 1-2",
        ),
        (
            "  |- - -|- - d|   accept 1.0 depth 7: 0.3 2.1",
            "accept 1.0 depth 7: 0.3 2.1",
        ),
        (
            "  |     !     |   chosen: 2 of 3 nodes accepted 1.0 (majority 2)",
            "chosen: 2 of 3 nodes accepted 1.0 (majority 2)",
        ),
        (
            "  |     X     |   node 1 crashed (crashNode)",
            "node 1 crashed (crashNode)",
        ),
        (
            "  |     o     |   node 1 restarted (2)",
            "node 1 restarted (2)",
        ),
        (
            "  |     |     T   node 2: election 0.2 timed out",
            "node 2: election 0.2 timed out",
        ),
        (
            "  |     |     =   node 2 restores its link to 1",
            "node 2 restores its link to 1",
        ),
        (
            "  v     |     |   node 0 steps down: stops leading 1.0",
            "node 0 steps down: stops leading 1.0",
        ),
        (
            "  *     |     |   node 0 learns it: commits depth 7",
            "node 0 learns it: commits depth 7",
        ),
    ] {
        assert!(
            ladder.contains(&format!("{line}\n")),
            "no {line:?} in\n{ladder}"
        );
        assert!(svg_text.contains(&label), "no {label:?} in the SVG");
    }
    // The dropped accept is not also drawn as lost, and nothing else is lost.
    let a = arrows(&d.rows);
    assert!(!a.iter().any(|x| x.3 == Fate::Lost), "{a:?}");
    assert_eq!(a.iter().filter(|x| x.3 == Fate::Dropped).count(), 1);
    // Chosen comes before anyone learns it.
    let chosen = ladder.find("chosen: 2 of 3").unwrap();
    assert!(ladder.find("learns it").unwrap() > chosen);
}

#[test]
fn a_sever_before_the_round_at_one_end_only_says_so() {
    let mut nodes = golden_round(0);
    nodes[2].insert(1, link(990, 2, 0, false));
    nodes[1].insert(1, link(991, 1, 0, false));
    nodes[1].insert(2, link(992, 1, 0, true));
    let d = round::build(&all(nodes), 7).unwrap();
    assert_eq!(
        d.context,
        vec!["links severed when it began: 2-0 (at 2 only)"]
    );
    // A restart forgets the node's severed links.
    let mut nodes = golden_round(0);
    nodes[2].insert(1, link(990, 2, 0, false));
    nodes[2].insert(2, start(995, 2, 2));
    assert!(round::build(&all(nodes), 7).unwrap().context.is_empty());
}

#[test]
fn writer_records_what_a_student_did_and_it_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let node_dir = dir.path().join("node0");
    fs::create_dir(&node_dir).unwrap();
    let mut w = TraceWriter::open_at(&node_dir, 0, 1, super::TRACE_CAP, 1).unwrap();
    w.link(2, 3, false);
    w.link(3, 3, true);
    let id = w.next_id();
    w.dropped(4, id, 2, &accept());
    let (b, c) = (ballot(2, 0), ballot(3, 0));
    // A candidacy lost on a tick timed out; a leadership lost on one is a step-down, as
    // is any loss on a message; a candidacy won, or kept, is nothing.
    w.role_change(5, Some((b, false)), None, true);
    w.role_change(6, Some((b, true)), None, true);
    w.role_change(7, Some((b, false)), None, false);
    w.role_change(8, Some((b, false)), Some(b), true);
    w.role_change(9, None, Some(c), false);
    w.crashed(10).unwrap();
    drop(w);
    // A second incarnation, then a kill -9 (no record), then a third.
    let mut w = TraceWriter::open_at(&node_dir, 0, 2, super::TRACE_CAP, 20).unwrap();
    w.sent(21, 5, &[1], &prepare());
    w.flush().unwrap();
    drop(w);
    let w = TraceWriter::open_at(&node_dir, 0, 3, super::TRACE_CAP, 30).unwrap();
    drop(w);
    let t = read::load(dir.path()).unwrap();
    assert!(t.notes.is_empty(), "{:?}", t.notes);
    let evs: Vec<(u64, &Ev)> = t.nodes[0]
        .as_ref()
        .unwrap()
        .iter()
        .map(|r| (r.t, &r.ev))
        .collect();
    assert!(matches!(evs[1], (2, Ev::Sever { peer: 3 })));
    assert!(matches!(evs[2], (3, Ev::Restore { peer: 3 })));
    assert!(
        matches!(evs[3], (4, Ev::Drop { to: 2, msg, .. }) if msg.kind == super::record::Kind::Accept)
    );
    assert_eq!(evs[4], (5, &Ev::Timeout { ballot: b }));
    let down = |leading| Ev::StepDown { ballot: b, leading };
    assert_eq!(evs[5], (6, &down(true)));
    assert_eq!(evs[6], (7, &down(false)));
    assert_eq!(evs[7], (10, &Ev::Crash { killed: false }));
    assert!(matches!(evs[8], (20, Ev::Start { inc: 2 })));
    assert!(matches!(evs[9], (21, Ev::Send { .. })));
    assert_eq!(
        evs[10],
        (21, &Ev::Crash { killed: true }),
        "inferred at the last record"
    );
    assert!(matches!(evs[11], (30, Ev::Start { inc: 3 })));
    assert_eq!(evs.len(), 12);
}
