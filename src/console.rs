//! The terminal a node talks to: which prompt is on screen, so that a line printed while it
//! is shown (a `[paxos]` line, a commit) starts on its own line and the prompt comes back.

use parking_lot::{Mutex, MutexGuard};
use std::io::{self, Write};
use std::sync::Arc;

/// The prompt on screen with the cursor after it, if any (`node3> `, or a question for
/// a bare command). Shared by the stdin thread and the event loop; whoever prints takes the
/// lock first, then stdout, so prompt and output never interleave.
#[derive(Clone, Default)]
pub struct Prompt(Arc<Mutex<Option<String>>>);

impl Prompt {
    pub fn lock(&self) -> MutexGuard<'_, Option<String>> {
        self.0.lock()
    }

    /// Shows `text` as the prompt (for the stdin thread's questions).
    pub fn show(&self, text: &str) {
        let mut shown = self.lock();
        let mut out = io::stdout().lock();
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
        *shown = Some(text.to_string());
    }

    /// A line was read: the person's Enter moved the cursor past the prompt.
    pub fn answered(&self) {
        *self.lock() = None;
    }
}

/// Output of one turn: the first byte written while a prompt is shown is preceded by a
/// newline, and `finish` draws the prompt again after it.
pub struct Screen<'a, W: Write> {
    inner: W,
    shown: &'a mut Option<String>,
    wrote: bool,
}

impl<'a, W: Write> Screen<'a, W> {
    pub fn new(inner: W, shown: &'a mut Option<String>) -> Self {
        Screen {
            inner,
            shown,
            wrote: false,
        }
    }

    /// Ends the turn's output: shows `fresh` as the new prompt if given, else redraws the
    /// one that was on screen if anything was printed over it.
    pub fn finish(mut self, fresh: Option<String>) -> io::Result<W> {
        let again = match fresh {
            Some(p) => Some(p),
            None if self.wrote => self.shown.take(),
            None => None,
        };
        if let Some(p) = again {
            self.inner.write_all(p.as_bytes())?;
            *self.shown = Some(p);
        }
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Screen<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.wrote && !buf.is_empty() {
            self.wrote = true;
            if self.shown.is_some() {
                self.inner.write_all(b"\n")?;
            }
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `text` cut to at most `max` characters, its middle replaced by `...`.
pub fn elide(text: &str, max: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= max {
        return text.to_string();
    }
    let keep = max.saturating_sub(3);
    let (front, back) = (keep - keep / 2, keep / 2);
    let tail: String = chars[chars.len() - back..].iter().collect();
    format!("{}...{tail}", chars[..front].iter().collect::<String>())
}

#[cfg(test)]
mod tests {
    #[test]
    fn elide_keeps_both_ends() {
        assert_eq!(super::elide("short", 80), "short");
        let long = format!("/tmp/{}/data", "x".repeat(100));
        let cut = super::elide(&long, 30);
        assert_eq!(cut.chars().count(), 30);
        assert!(cut.starts_with("/tmp/x") && cut.ends_with("x/data") && cut.contains("..."));
    }

    use super::*;

    fn turn(shown: &mut Option<String>, lines: &[&str], fresh: Option<&str>) -> String {
        let mut s = Screen::new(Vec::new(), shown);
        for l in lines {
            writeln!(s, "{l}").unwrap();
        }
        String::from_utf8(s.finish(fresh.map(String::from)).unwrap()).unwrap()
    }

    #[test]
    fn a_line_arriving_under_a_prompt_gets_its_own_line_and_the_prompt_returns() {
        let mut shown = Some("node0> ".to_string());
        let got = turn(&mut shown, &["12:00:00.000 [paxos] node 1: hi"], None);
        assert_eq!(got, "\n12:00:00.000 [paxos] node 1: hi\nnode0> ");
        assert_eq!(shown.as_deref(), Some("node0> "));
        // Nothing printed: nothing redrawn.
        assert_eq!(turn(&mut shown, &[], None), "");
    }

    #[test]
    fn replies_after_enter_and_the_fresh_prompt() {
        let mut shown = None;
        assert_eq!(
            turn(&mut shown, &["queued 0.1 0 1 5"], Some("node0> ")),
            "queued 0.1 0 1 5\nnode0> "
        );
        assert_eq!(shown.as_deref(), Some("node0> "));
        let mut asked = Some("Enter credit node: ".to_string());
        assert_eq!(
            turn(&mut asked, &["committed"], None),
            "\ncommitted\nEnter credit node: "
        );
    }
}
