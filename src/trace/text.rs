//! The round as an ASCII ladder that fits 80 columns: one lifeline per node, one line per
//! message, top to bottom in causal order, the label to the right.

use super::round::{Diagram, Fate, Mark, Row};

const WIDTH: usize = 80;

/// Every symbol drawn, each line within 80 columns.
const LEGEND: &str = "\
legend: --> received   - - x lost   - - ? not in the receiver's trace
        - - d dropped on purpose (drop)   ballot R.N: round R of node N
        o start   X crash   # stop   / link severed   = link restored
        v step down   T election timed out   ! chosen: a majority accepted
        * learned and committed (each node learns the choice on its own)
";
const LEFT: usize = 2;

/// The whole ladder, ending with a newline.
pub fn render(d: &Diagram) -> String {
    let cols = Columns::new(d.nodes);
    let mut out = format!(
        "round at depth {}: {} nodes; time runs down, in causal order\n",
        d.depth, d.nodes
    );
    for line in &d.context {
        out += line;
        out += "\n";
    }
    out += "\n";
    out += &cols.header();
    out += &cols.finish(cols.blank(), "");
    for row in &d.rows {
        out += &cols.row(row);
    }
    out += &cols.finish(cols.blank(), "");
    out += &footer(d);
    out
}

fn footer(d: &Diagram) -> String {
    let chosen = d
        .chosen
        .as_deref()
        .unwrap_or("unknown (no commit or decide traced)");
    let mut out = format!("\nchosen at depth {}: {chosen}\n", d.depth);
    out += LEGEND;
    for note in &d.notes {
        out += note;
        out += "\n";
    }
    out
}

/// Where each lifeline sits.
struct Columns {
    at: Vec<usize>,
    label: usize,
}

impl Columns {
    fn new(nodes: usize) -> Columns {
        // Six columns apart leaves room for labels with up to seven nodes; then squeeze.
        let gap = if nodes <= 7 {
            6
        } else {
            (44 / nodes.max(1)).max(3)
        };
        let at: Vec<usize> = (0..nodes).map(|i| LEFT + gap * i).collect();
        let label = at.last().map_or(LEFT, |c| c + 4);
        Columns { at, label }
    }

    fn blank(&self) -> Vec<u8> {
        let mut line = vec![b' '; self.label];
        for &c in &self.at {
            line[c] = b'|';
        }
        line
    }

    fn header(&self) -> String {
        let mut line = vec![b' '; self.label + 4];
        for (i, &c) in self.at.iter().enumerate() {
            let name = format!("n{i}");
            let end = (c + name.len()).min(line.len());
            line[c..end].copy_from_slice(&name.as_bytes()[..end - c]);
        }
        self.finish(line, "")
    }

    fn row(&self, row: &Row) -> String {
        let mut line = self.blank();
        match row {
            Row::Arrow {
                from,
                to,
                label,
                fate,
                ..
            } => {
                self.draw_arrow(&mut line, *from, *to, *fate);
                self.finish(line, label)
            }
            Row::Mark { node, mark, label } => {
                line[self.at[*node]] = symbol(*mark);
                self.finish(line, label)
            }
        }
    }

    fn draw_arrow(&self, line: &mut [u8], from: usize, to: usize, fate: Fate) {
        let (a, b) = (self.at[from], self.at[to]);
        let (lo, hi) = (a.min(b) + 1, a.max(b) - 1);
        for (k, c) in (lo..=hi).enumerate() {
            let near_sender = if a < b { k } else { hi - c };
            if fate == Fate::Delivered || near_sender % 2 == 0 {
                line[c] = b'-';
            }
        }
        let head = if a < b { hi } else { lo };
        line[head] = match (fate, a < b) {
            (Fate::Delivered, true) => b'>',
            (Fate::Delivered, false) => b'<',
            (Fate::Lost, _) => b'x',
            (Fate::Unknown, _) => b'?',
            (Fate::Dropped, _) => b'd',
        };
    }

    /// The line with its label, cut to 80 columns, without trailing spaces.
    fn finish(&self, mut line: Vec<u8>, label: &str) -> String {
        line.truncate(self.label);
        line.extend_from_slice(label.as_bytes());
        line.truncate(WIDTH);
        let mut s = String::from_utf8_lossy(&line).trim_end().to_string();
        s.push('\n');
        s
    }
}

fn symbol(mark: Mark) -> u8 {
    match mark {
        Mark::Crashed => b'X',
        Mark::Started | Mark::Restarted => b'o',
        Mark::Stopped => b'#',
        Mark::Committed => b'*',
        Mark::Chosen => b'!',
        Mark::Severed => b'/',
        Mark::Restored => b'=',
        Mark::SteppedDown => b'v',
        Mark::TimedOut => b'T',
    }
}
