//! Words for people: "did you mean ...?" suggestions, and OS errors explained instead of
//! shown raw (`Broken pipe (os error 32)`).

use std::io::{self, ErrorKind};

/// The candidate closest to `word` (case-insensitively), if it is close enough to be a typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_lowercase();
    candidates
        .iter()
        .map(|&c| (distance(&word, &c.to_lowercase()), c))
        .filter(|&(d, c)| d <= 2 && d * 2 <= c.chars().count())
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// ` (did you mean X?)` or nothing, for appending to an error.
pub fn suggestion(word: &str, candidates: &[&str]) -> String {
    did_you_mean(word, candidates).map_or(String::new(), |c| format!(" (did you mean {c}?)"))
}

/// Levenshtein distance, by characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// An OS error in words; unusual errors keep the system's text.
pub fn explain(e: &io::Error) -> String {
    let words = match e.kind() {
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => {
            "peer closed the connection"
        }
        ErrorKind::ConnectionRefused => "connection refused (nothing listening there)",
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "timed out",
        ErrorKind::StorageFull => "no space left on device",
        ErrorKind::PermissionDenied => "permission denied",
        ErrorKind::NotFound => "no such file or directory",
        ErrorKind::AddrInUse => "address in use",
        ErrorKind::AddrNotAvailable => "address not available on this host",
        ErrorKind::HostUnreachable => "host unreachable",
        ErrorKind::NetworkUnreachable => "network unreachable",
        ErrorKind::UnexpectedEof => "closed early",
        ErrorKind::ReadOnlyFilesystem => "read-only file system",
        ErrorKind::QuotaExceeded => "disk quota exceeded",
        _ => return strip_code(&e.to_string()),
    };
    words.to_string()
}

/// `Too many open files (os error 24)` -> `too many open files`.
fn strip_code(text: &str) -> String {
    let text = match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => &text[..i],
        _ => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words_only() {
        let names = ["init", "node", "audit", "bench"];
        assert_eq!(did_you_mean("nod", &names), Some("node"));
        assert_eq!(did_you_mean("NODE", &names), Some("node"));
        assert_eq!(did_you_mean("audti", &names), Some("audit"));
        assert_eq!(did_you_mean("xyz", &names), None);
        assert_eq!(
            did_you_mean("--node", &["--nodes", "--data"]),
            Some("--nodes")
        );
        assert_eq!(suggestion("zzzzzz", &names), "");
    }

    #[test]
    fn distances() {
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("same", "same"), 0);
    }

    #[test]
    fn explains_os_errors() {
        let pipe = io::Error::from_raw_os_error(32);
        assert_eq!(explain(&pipe), "peer closed the connection");
        let reset = io::Error::from(ErrorKind::ConnectionReset);
        assert_eq!(explain(&reset), "peer closed the connection");
        let full = io::Error::from_raw_os_error(28);
        assert_eq!(explain(&full), "no space left on device");
        let files = io::Error::from_raw_os_error(24);
        assert!(!explain(&files).contains("os error"), "{}", explain(&files));
        let custom = io::Error::other("closed before greeting");
        assert_eq!(explain(&custom), "closed before greeting");
    }
}
