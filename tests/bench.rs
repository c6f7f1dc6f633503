//! `benmo bench` end to end, small: the closed-loop table, and the crash loop (kill -9 of
//! every node at once under load, then every `committed` transfer checked on every chain).
//! The figures are not asserted, only that the runs complete and check what they say.
//! Every wait inside `benmo bench` is bounded, and it kills its nodes by PID when it ends.

use std::process::{Command, Output};

const EXE: &str = env!("CARGO_BIN_EXE_benmo");

fn bench(args: &[&str]) -> (Output, String) {
    let out = Command::new(EXE).arg("bench").args(args).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out, text)
}

#[test]
fn closed_loop_rows_come_with_the_floor() {
    let args = ["--nodes", "3", "--clients", "1,4", "--duration", "300ms"];
    let (out, text) = bench(&[&args[..], &["--transfers", "2000", "--unloaded", "10"]].concat());
    assert!(out.status.success(), "{text}");
    let header = text
        .lines()
        .position(|l| l.starts_with("clients  transfers"));
    let header = header.unwrap_or_else(|| panic!("no closed-loop table:\n{text}"));
    let rows: Vec<&str> = text.lines().skip(header + 1).take(2).collect();
    for (row, clients) in rows.iter().zip(["1", "4"]) {
        let words: Vec<&str> = row.split_whitespace().collect();
        assert_eq!((words.len(), words[0]), (10, clients), "{text}");
    }
    for line in [
        "floor: fsync + 2 rtt",
        "unloaded ",
        "saturated ",
        "audit: audit ok",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
}

#[test]
fn a_crash_loop_loses_no_committed_transfer() {
    let (out, text) = bench(&["--crash-loop", "2", "--nodes", "3", "--clients", "4"]);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("\nround ").count(), 2, "{text}");
    let checked = text
        .lines()
        .find_map(|l| l.strip_prefix("every one of the "))
        .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok());
    assert!(
        checked.is_some_and(|n| n >= 3),
        "nothing was checked:\n{text}"
    );
    assert!(text.contains("audit: audit ok"), "{text}");
}
