//! The `odb-server` binary's storage flags: conflicting choices and unusable data directories
//! are refused at start with one line on standard error. The kill-and-restart tests of the
//! durable backends live in the workspace's end-to-end tests, where the client is available.

use std::path::PathBuf;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_odb-server"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run odb-server")
}

/// The `odb-server: error:` line of a failed start.
fn error_line(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "the server should have refused to start"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("odb-server: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line expected in {stderr:?}");
    lines[0].to_string()
}

fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("odb-persistence-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn two_storage_options_are_refused() {
    let dir = temp_dir("two");
    let dir_arg = dir.display().to_string();
    let line = error_line(&run(&[
        "--service-token",
        "t",
        "--data-dir",
        &dir_arg,
        "--redis",
        "redis://127.0.0.1:1/0",
        "127.0.0.1",
        "0",
    ]));
    assert!(line.contains("at most one of"), "{line}");
    let line = error_line(&run(&[
        "--service-token",
        "t",
        "--inmem",
        "--data-dir",
        &dir_arg,
        "127.0.0.1",
        "0",
    ]));
    assert!(line.contains("at most one of"), "{line}");
    let line = error_line(&run(&[
        "--service-token",
        "t",
        "--redis-prefix",
        "x:",
        "127.0.0.1",
        "0",
    ]));
    assert!(line.contains("need --redis"), "{line}");
}

#[test]
fn a_data_dir_that_is_not_an_odb_database_is_refused() {
    let dir = temp_dir("garbage");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("odb.redb"), b"this is not a database").unwrap();
    let dir_arg = dir.display().to_string();
    let line = error_line(&run(&[
        "--service-token",
        "t",
        "--data-dir",
        &dir_arg,
        "127.0.0.1",
        "0",
    ]));
    assert!(line.contains("cannot open"), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_data_dir_file_in_the_way_is_refused() {
    let path = temp_dir("file");
    std::fs::write(&path, b"x").unwrap();
    let arg = path.display().to_string();
    let line = error_line(&run(&[
        "--service-token",
        "t",
        "--data-dir",
        &arg,
        "127.0.0.1",
        "0",
    ]));
    assert!(line.contains("is not a directory"), "{line}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn command_line_mistakes_have_the_same_error_style() {
    let output = run(&["--service-token", "t", "--no-such-flag", "127.0.0.1", "0"]);
    let line = error_line(&output);
    assert!(line.contains("--no-such-flag"), "{line}");
    assert_eq!(output.status.code(), Some(2));
    // Clap's usage hint still follows.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--help"), "{stderr}");
}
