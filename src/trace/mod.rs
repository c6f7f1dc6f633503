//! Traces of the protocol messages each node sends and receives, and `benmo trace`, which
//! draws the round that decided a depth as a sequence diagram (text or SVG).
//!
//! - `writer`: the bounded, rotating `trace.log` every node keeps (the node calls it).
//! - `record`: the JSON-lines format, written without allocating and read back.
//! - `read`: loading every node's trace from a data dir.
//! - `round`: choosing the round's messages, pairing sends with receipts, causal order.
//! - `text`, `svg`: the two pictures.

pub mod read;
pub mod record;
pub mod round;
pub mod svg;
pub mod text;
pub mod writer;

#[cfg(test)]
mod tests;

pub use writer::{next_incarnation, now_ms, TraceWriter, ROTATED_FILE, TRACE_CAP, TRACE_FILE};

use crate::cli::Args;
use crate::human;
use std::io::Write;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Svg,
}

/// `benmo trace`'s flags.
#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    pub data: PathBuf,
    pub depth: Option<u64>,
    pub format: Format,
    pub out: Option<PathBuf>,
}

impl Options {
    /// Parses the words after `trace` (errors are usage errors). The format defaults to SVG
    /// when `--out` ends in .svg.
    pub fn parse(mut args: Args) -> Result<Options, String> {
        let data = args.data()?;
        let depth = match args.value("--depth")? {
            Some(d) => Some(number(&d)?),
            None => None,
        };
        let format = args.value("--format")?.map(|f| format_of(&f)).transpose()?;
        let out = args.value("--out")?.map(PathBuf::from);
        args.rest(0)?;
        let svg_out = out
            .as_ref()
            .is_some_and(|o: &PathBuf| o.extension().is_some_and(|e| e == "svg"));
        let format = format.unwrap_or(if svg_out { Format::Svg } else { Format::Text });
        Ok(Options {
            data,
            depth,
            format,
            out,
        })
    }
}

fn number(text: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("--depth: '{text}' is not a depth (a whole number)"))
}

fn format_of(text: &str) -> Result<Format, String> {
    match text {
        "svg" => Ok(Format::Svg),
        "text" => Ok(Format::Text),
        _ => Err(format!(
            "--format: expected svg or text, not '{text}'{}",
            human::suggestion(text, &["svg", "text"])
        )),
    }
}

/// `benmo trace ...`: prints the picture, or writes it to `--out` and prints the path.
pub fn run(opts: &Options) -> Result<(), String> {
    let picture = draw(opts)?;
    let Some(out) = &opts.out else {
        // Written, not print!: `benmo trace | head` closing the pipe is not a panic.
        let _ = std::io::stdout().lock().write_all(picture.text.as_bytes());
        return Ok(());
    };
    std::fs::write(out, &picture.text)
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    for note in &picture.notes {
        eprintln!("{note}");
    }
    println!("{}", out.display());
    Ok(())
}

/// A rendered picture and the notes it carries.
pub struct Picture {
    pub text: String,
    pub notes: Vec<String>,
}

/// Reads the traces under `--data` and renders the round `opts` asks for.
pub fn draw(opts: &Options) -> Result<Picture, String> {
    let traces = read::load(&opts.data)?;
    let depth = match opts.depth {
        Some(d) => d,
        None => round::last_decided(&traces).ok_or("no decided depth in the traces")?,
    };
    let mut diagram = round::build(&traces, depth)?;
    let mut notes = traces.notes;
    notes.append(&mut diagram.notes);
    diagram.notes = notes;
    let text = match opts.format {
        Format::Text => text::render(&diagram),
        Format::Svg => svg::render(&diagram),
    };
    Ok(Picture {
        text,
        notes: diagram.notes,
    })
}
