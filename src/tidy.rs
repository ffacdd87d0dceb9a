//! The architecture invariants a machine can check (ARCHITECTURE.md,
//! "Architecture invariants"), checked on the source tree, as
//! rust-analyzer's tidy tests do. A failure names the file and line.

use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("tidy.rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.push((p, text));
            }
        }
    }
    out.sort();
    out
}

/// The lines of a file before its `#[cfg(test)]` module (tests may do
/// what the code may not: build a table, read a temp file).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().take_while(|(_, l)| l.trim() != "#[cfg(test)]").map(|(i, l)| (i + 1, l))
}

fn rel(p: &Path) -> String {
    p.strip_prefix(src().parent().unwrap()).unwrap_or(p).display().to_string()
}

/// The string literals of a line (simple: `"…"` with `\"` escapes, outside
/// `//` comments).
fn literals(line: &str) -> Vec<String> {
    let code = match line.find("//") {
        // A `//` inside a string would cut it; literals with `//` are not
        // SQL anyway.
        Some(i) if !line[..i].contains('"') => &line[..i],
        _ => line,
    };
    let mut out = Vec::new();
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' {
            let mut lit = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => break,
                    c => lit.push(c),
                }
            }
            out.push(lit);
        }
    }
    out
}

#[test]
fn the_core_does_no_io() {
    let banned = ["actix", "tokio", "postgres", "std::fs", "std::net", "std::process", "crate::db", "crate::actors"];
    let mut found = Vec::new();
    for (path, text) in sources(&src().join("core")) {
        for (n, line) in code_lines(&text) {
            let line = line.trim_start();
            if line.starts_with("//") {
                continue;
            }
            for b in banned {
                if line.contains(b) {
                    found.push(format!("{}:{n}: {b}", rel(&path)));
                }
            }
        }
    }
    assert!(found.is_empty(), "the core must not do I/O or know the rest:\n{}", found.join("\n"));
}

#[test]
fn sql_lives_in_db_only() {
    const SQL: [&str; 9] =
        ["SELECT ", "INSERT INTO", "UPDATE ", "DELETE FROM", "CREATE ", "ALTER ", "COPY ", "TRUNCATE ", "SAVEPOINT"];
    let mut found = Vec::new();
    for (path, text) in sources(&src()) {
        if path.starts_with(src().join("db")) {
            continue;
        }
        for (n, line) in code_lines(&text) {
            for lit in literals(line) {
                if SQL.iter().any(|k| lit.to_ascii_uppercase().starts_with(k)) {
                    found.push(format!("{}:{n}: {lit}", rel(&path)));
                }
            }
        }
    }
    assert!(found.is_empty(), "SQL outside src/db/:\n{}", found.join("\n"));
}

#[test]
fn every_message_is_in_messages_rs() {
    let mut found = Vec::new();
    for (path, text) in sources(&src()) {
        if path.ends_with("messages.rs") {
            continue;
        }
        for (n, line) in code_lines(&text) {
            if line.contains("#[rtype(") || line.contains("impl Message for") {
                found.push(format!("{}:{n}", rel(&path)));
            }
        }
    }
    assert!(found.is_empty(), "messages defined outside src/messages.rs:\n{}", found.join("\n"));
}

/// Data flows Watcher → Parser → Validator → Writer → CheckpointKeeper; an
/// actor holds its downstream as a `Recipient`, so no actor imports
/// another (only the Supervisor wires them), and `db` knows no actor or
/// message.
#[test]
fn actors_do_not_import_each_other_and_db_knows_no_message() {
    let actors = ["parser", "validator", "writer", "checkpoint_keeper", "watcher", "generator"];
    let mut found = Vec::new();
    for (path, text) in sources(&src().join("actors")) {
        for (n, line) in code_lines(&text) {
            for a in actors {
                if line.contains(&format!("crate::actors::{a}")) {
                    found.push(format!("{}:{n}: imports actors::{a}", rel(&path)));
                }
            }
        }
    }
    for (path, text) in sources(&src().join("db")) {
        for (n, line) in code_lines(&text) {
            if line.contains("crate::messages") || line.contains("crate::actors") {
                found.push(format!("{}:{n}: db imports messages or actors", rel(&path)));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// `do_send` ignores the mailbox bound: data-path messages go by `send`.
#[test]
fn no_data_path_message_is_sent_with_do_send() {
    let data = ["ReadFiles(", "Parsed(", "Validated(", "BatchCommitted {", "ClaimFiles("];
    let mut found = Vec::new();
    for (path, text) in sources(&src()) {
        for (n, line) in code_lines(&text) {
            if line.contains("do_send(") && data.iter().any(|d| line.contains(d)) {
                found.push(format!("{}:{n}", rel(&path)));
            }
        }
    }
    assert!(found.is_empty(), "data-path messages sent with do_send:\n{}", found.join("\n"));
}

/// Only the CheckpointKeeper (and the bookkeeping it calls) writes the
/// file states: marking done, parking, counting failures.
#[test]
fn only_the_checkpoint_keeper_finishes_files() {
    let calls =
        ["files::mark_done(", "files::mark_one_done(", "files::park(", "files::record_failure(", "disposal::dispose("];
    let mut found = Vec::new();
    for (path, text) in sources(&src()) {
        if path.ends_with("checkpoint_keeper.rs") {
            continue;
        }
        for (n, line) in code_lines(&text) {
            if calls.iter().any(|c| line.contains(c)) {
                found.push(format!("{}:{n}", rel(&path)));
            }
        }
    }
    assert!(found.is_empty(), "files finished outside the CheckpointKeeper:\n{}", found.join("\n"));
}
