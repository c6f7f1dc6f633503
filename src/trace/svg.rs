//! The round as one self-contained SVG sequence diagram, laid out for 1200 px.

use super::record::Kind;
use super::round::{Diagram, Fate, Mark, Row};
use std::fmt::Write;

const WIDTH: f64 = 1200.0;
const MARGIN: f64 = 110.0;
const TOP: f64 = 130.0;
const ROW: f64 = 30.0;
const FOOT_LINE: f64 = 20.0;
/// A white outline under a label, so a lifeline it crosses does not run through its letters.
const HALO: &str =
    r##"stroke="#ffffff" stroke-width="4" stroke-linejoin="round" paint-order="stroke""##;

/// Every kind drawn, with its colour; each gets its own arrowhead.
const KINDS: [(Kind, &str, &str); 6] = [
    (Kind::Prepare, "prepare", "#1f77b4"),
    (Kind::Promise, "promise", "#2ca02c"),
    (Kind::Reject, "reject", "#d62728"),
    (Kind::Accept, "accept", "#e07000"),
    (Kind::Accepted, "accepted", "#9467bd"),
    (Kind::Decide, "decide", "#222222"),
];

fn style(kind: Kind) -> (&'static str, &'static str) {
    KINDS
        .iter()
        .find(|k| k.0 == kind)
        .map_or(("other", "#777777"), |k| (k.1, k.2))
}

/// The whole SVG document.
pub fn render(d: &Diagram) -> String {
    let bottom = TOP + ROW * d.rows.len() as f64;
    let height = bottom + 40.0 + FOOT_LINE * (6 + d.context.len() + d.notes.len()) as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="13">"#
    );
    s += &defs();
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    title(&mut s, d);
    lifelines(&mut s, d.nodes, bottom);
    for (k, row) in d.rows.iter().enumerate() {
        let y = TOP + ROW * k as f64 + ROW / 2.0;
        match row {
            Row::Arrow { .. } => arrow(&mut s, d.nodes, row, y),
            Row::Mark { .. } => mark(&mut s, d.nodes, row, y),
        }
    }
    footer(&mut s, d, bottom + 40.0);
    s += "</svg>\n";
    s
}

fn x_of(nodes: usize, node: usize) -> f64 {
    if nodes <= 1 {
        return WIDTH / 2.0;
    }
    MARGIN + (WIDTH - 2.0 * MARGIN) * node as f64 / (nodes - 1) as f64
}

fn defs() -> String {
    let mut s = String::from("<defs>\n");
    for (_, name, colour) in KINDS.iter().chain([&(Kind::Hello, "other", "#777777")]) {
        let _ = writeln!(
            s,
            r#"<marker id="head-{name}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>"#
        );
    }
    s + "</defs>\n"
}

fn title(s: &mut String, d: &Diagram) {
    let _ = writeln!(
        s,
        r#"<text x="20" y="30" font-size="18" font-weight="bold">The round that decided depth {}</text>"#,
        d.depth
    );
    let _ = writeln!(
        s,
        r##"<text x="20" y="52" fill="#555555">Time runs down. Order is causal (each node's own order, every send before its receipt), not by clock.</text>"##
    );
}

fn lifelines(s: &mut String, nodes: usize, bottom: f64) {
    for n in 0..nodes {
        let x = x_of(nodes, n);
        let _ = writeln!(
            s,
            r##"<rect x="{}" y="75" width="90" height="28" rx="5" fill="#f0f0f0" stroke="#333333"/><text x="{x}" y="94" text-anchor="middle" font-weight="bold">node {n}</text>"##,
            x - 45.0
        );
        let _ = writeln!(
            s,
            r##"<line x1="{x}" y1="103" x2="{x}" y2="{bottom}" stroke="#999999" stroke-width="1.5"/>"##
        );
    }
}

fn arrow(s: &mut String, nodes: usize, row: &Row, y: f64) {
    let Row::Arrow {
        from,
        to,
        kind,
        label,
        fate,
        ..
    } = row
    else {
        return;
    };
    let (name, colour) = style(*kind);
    let (x1, x2) = (x_of(nodes, *from), x_of(nodes, *to));
    let dir = if x2 > x1 { 1.0 } else { -1.0 };
    // A lost message stops short of the receiver's lifeline and ends in a cross.
    let end = if *fate == Fate::Delivered {
        x2
    } else {
        x2 - dir * 30.0
    };
    let extra = match fate {
        Fate::Delivered => format!(r#" marker-end="url(#head-{name})""#),
        _ => r#" stroke-dasharray="6 4""#.to_string(),
    };
    let _ = writeln!(
        s,
        r#"<line x1="{x1}" y1="{y}" x2="{end}" y2="{y}" stroke="{colour}" stroke-width="2"{extra}/>"#
    );
    match fate {
        Fate::Delivered => {}
        Fate::Lost => cross(s, end, y, colour),
        Fate::Dropped => {
            let _ = writeln!(
                s,
                r#"<path d="M{},{} L{},{} M{},{} L{},{}" stroke="{colour}" stroke-width="2.5"/>"#,
                end - 2.0,
                y - 8.0,
                end - 8.0,
                y + 8.0,
                end + 4.0,
                y - 8.0,
                end - 2.0,
                y + 8.0
            );
        }
        Fate::Unknown => {
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" fill="{colour}" font-weight="bold">?</text>"#,
                end + dir * 4.0 - 4.0,
                y + 5.0
            );
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" fill="{colour}" {HALO}>{}</text>"#,
        label_x((x1 + x2) / 2.0, label),
        y - 5.0,
        esc(label)
    );
}

/// Centred over the arrow, but moved in so that a long label (a value of many transfers over
/// a short arrow at the edge) is not cut off by the side of the page.
fn label_x(centre: f64, label: &str) -> f64 {
    // About 7 px a character at 13 px sans-serif, a little generous.
    let half = 3.6 * label.chars().count() as f64;
    let (lo, hi) = (8.0 + half, WIDTH - 8.0 - half);
    if lo > hi {
        WIDTH / 2.0
    } else {
        centre.clamp(lo, hi)
    }
}

fn cross(s: &mut String, x: f64, y: f64, colour: &str) {
    let r = 6.0;
    let _ = writeln!(
        s,
        r#"<path d="M{},{} L{},{} M{},{} L{},{}" stroke="{colour}" stroke-width="2.5"/>"#,
        x - r,
        y - r,
        x + r,
        y + r,
        x - r,
        y + r,
        x + r,
        y - r
    );
}

fn mark(s: &mut String, nodes: usize, row: &Row, y: f64) {
    let Row::Mark { node, mark, label } = row else {
        return;
    };
    let x = x_of(nodes, *node);
    match mark {
        Mark::Crashed => cross(s, x, y, "#d62728"),
        Mark::Started | Mark::Restarted => circle(s, x, y, "#ffffff"),
        Mark::Stopped => {
            let _ = writeln!(
                s,
                r##"<rect x="{}" y="{}" width="12" height="12" fill="#333333"/>"##,
                x - 6.0,
                y - 6.0
            );
        }
        Mark::Committed => circle(s, x, y, "#222222"),
        Mark::Chosen => {
            let _ = writeln!(
                s,
                r##"<path d="M{x},{} L{},{y} L{x},{} L{},{y} z" fill="#f2b400" stroke="#222222" stroke-width="1.5"/>"##,
                y - 9.0,
                x + 9.0,
                y + 9.0,
                x - 9.0
            );
        }
        Mark::Severed | Mark::Restored | Mark::SteppedDown | Mark::TimedOut => {
            let (glyph, colour) = match mark {
                Mark::Severed => ("/", "#d62728"),
                Mark::Restored => ("=", "#2ca02c"),
                Mark::SteppedDown => ("v", "#555555"),
                _ => ("T", "#555555"),
            };
            let _ = writeln!(
                s,
                r##"<rect x="{}" y="{}" width="14" height="14" fill="#ffffff" stroke="{colour}"/><text x="{x}" y="{}" text-anchor="middle" font-weight="bold" fill="{colour}">{glyph}</text>"##,
                x - 7.0,
                y - 7.0,
                y + 5.0
            );
        }
    }
    // Labels go right of the lifeline, or left of the last one so they stay on the page.
    let (lx, anchor) = if *node + 1 == nodes && nodes > 1 {
        (x - 12.0, "end")
    } else {
        (x + 12.0, "start")
    };
    let _ = writeln!(
        s,
        r##"<text x="{lx}" y="{}" text-anchor="{anchor}" fill="#333333" font-style="italic" {HALO}>{}</text>"##,
        y + 4.0,
        esc(label)
    );
}

fn circle(s: &mut String, x: f64, y: f64, fill: &str) {
    let _ = writeln!(
        s,
        r##"<circle cx="{x}" cy="{y}" r="6" fill="{fill}" stroke="#222222" stroke-width="2"/>"##
    );
}

fn footer(s: &mut String, d: &Diagram, top: f64) {
    let chosen = d
        .chosen
        .as_deref()
        .unwrap_or("unknown (no commit or decide traced)");
    let mut lines = vec![
        format!("Chosen at depth {}: {chosen}", d.depth),
        "Solid arrow: received. Dashed with a cross: sent, never received. Dashed with ?: the receiver's trace does not cover it.".to_string(),
        "Dashed and cut: dropped on purpose (drop). Ballot R.N: round R of node N; a higher round wins.".to_string(),
        "Red cross: crash. Open circle: start. Square: clean stop. / link severed. = link restored. v step down. T election timed out.".to_string(),
        "Gold diamond: the value is chosen (a majority accepted one ballot). Black dot: a node learns it and commits.".to_string(),
    ];
    lines.extend(d.context.iter().cloned());
    lines.extend(d.notes.iter().cloned());
    for (k, line) in lines.iter().enumerate() {
        let weight = if k == 0 { "bold" } else { "normal" };
        let _ = writeln!(
            s,
            r#"<text x="20" y="{}" font-weight="{weight}">{}</text>"#,
            top + FOOT_LINE * k as f64,
            esc(line)
        );
    }
}

/// XML-escapes text content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}
