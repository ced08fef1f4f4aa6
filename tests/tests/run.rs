//! `wasmgate run`: a command component or a core WASI module, once, with
//! the gateway's limits: READY once instantiated, the program's exit code,
//! a trap's message and 134, and a clear refusal of what has no entry point.

use std::path::{Path, PathBuf};
use std::process::Output;

use wasmgate_tests::{handlers_dir, run_cli};

fn command() -> PathBuf {
    handlers_dir().join("cli-hello.wasm")
}

fn run(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    let Output {
        status,
        stdout,
        stderr,
    } = run_cli(&all, dir);
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// A core WASI preview 1 module, from its text, written into `dir`.
fn module(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, wat::parse_str(text).expect("valid WAT")).expect("write");
    path.display().to_string()
}

#[test]
fn a_command_component_runs_with_its_arguments_after_ready() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = command().display().to_string();
    let (code, stdout, stderr) = run(dir.path(), &[&file, "--", "one", "two"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "hello from a command: one two\n");
    assert_eq!(stderr.lines().next(), Some("READY"), "{stderr}");
    // A failure exit: WASI 0.2's `exit` says only success or failure.
    let (code, _, _) = run(dir.path(), &[&file, "--", "exit", "3"]);
    assert_eq!(code, Some(1));
}

#[test]
fn a_trap_prints_its_message_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = command().display().to_string();
    let (code, stdout, stderr) = run(dir.path(), &[&file, "--", "trap"]);
    assert_eq!(code, Some(134), "{stderr}");
    assert_eq!(stdout, "hello from a command: trap\n");
    assert!(
        stderr.contains("READY") && stderr.contains("wasm `unreachable` instruction executed"),
        "{stderr}"
    );
}

#[test]
fn limits_apply_fuel_and_time_and_only_granted_variables() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = command().display().to_string();
    let (code, _, stderr) = run(dir.path(), &["--fuel", "10000000", &file, "--", "spin"]);
    assert_eq!(code, Some(134), "{stderr}");
    assert!(
        stderr.contains("used up its CPU budget of 10000000 fuel"),
        "{stderr}"
    );
    let (code, _, stderr) = run(dir.path(), &["--timeout", "300ms", &file, "--", "spin"]);
    assert_eq!(code, Some(134), "{stderr}");
    assert!(
        stderr.contains("ran past its time limit of 300ms"),
        "{stderr}"
    );
    // The test process's PATH is set, but not granted.
    let (_, stdout, _) = run(dir.path(), &[&file, "--", "env", "PATH"]);
    assert!(stdout.contains("PATH unset"), "{stdout}");
    let (_, stdout, _) = run(dir.path(), &["--env", "PATH", &file, "--", "env", "PATH"]);
    assert!(stdout.contains("PATH=/"), "{stdout}");
}

#[test]
fn a_core_wasi_module_runs_and_its_exit_code_passes_through() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = module(
        dir.path(),
        "exits.wasm",
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write"
                (func $fd_write (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
            (memory (export "memory") 1)
            (data (i32.const 16) "hello from a module\n")
            (func (export "_start")
                (i32.store (i32.const 0) (i32.const 16))
                (i32.store (i32.const 4) (i32.const 20))
                (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
                (call $proc_exit (i32.const 7))))"#,
    );
    let (code, stdout, stderr) = run(dir.path(), &[&file]);
    assert_eq!(code, Some(7), "{stderr}");
    assert_eq!(stdout, "hello from a module\n");
    assert_eq!(stderr.trim(), "READY");
}

#[test]
fn a_file_without_an_entry_point_is_refused_naming_what_it_exports() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = module(
        dir.path(),
        "library.wasm",
        r#"(module (memory (export "memory") 1) (func (export "other")))"#,
    );
    let (code, _, stderr) = run(dir.path(), &[&file]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains(
            "a core module that exports no `_start` function (it exports memory, other): not a command"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("READY"), "{stderr}");
    let handler = handlers_dir().join("hello.wasm").display().to_string();
    let (code, _, stderr) = run(dir.path(), &[&handler]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains(
            "a component that exports no wasi:cli/run (it exports wasi:http/incoming-handler@0.2"
        ),
        "{stderr}"
    );
}

/// `--profile NAME` takes a `[profile.NAME]`'s env grants and limits from
/// the config; flags given on the command line win.
#[test]
fn a_profile_lends_its_env_and_limits_to_a_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        "[[listener]]\naddr = \"127.0.0.1:0\"\n\n\
         [profile.batch]\nenv = [\"HOME\"]\nlimits = { fuel = 1_000_000, timeout = \"30s\" }\n",
    )
    .expect("write");
    let config = config.display().to_string();
    let file = command().display().to_string();
    let with = |args: &[&str]| {
        let mut all = vec!["--config", &config, "--profile", "batch", &file];
        all.extend_from_slice(args);
        run(dir.path(), &all)
    };
    let (code, stdout, stderr) = with(&["--", "env", "HOME"]);
    assert_eq!(code, Some(0), "{stderr}");
    let home = std::env::var("HOME").expect("HOME is set");
    assert!(stdout.contains(&format!("HOME={home}")), "{stdout}");
    // Without the profile the variable is not granted.
    let (_, stdout, _) = run(dir.path(), &[&file, "--", "env", "HOME"]);
    assert!(stdout.contains("HOME unset"), "{stdout}");
    // The profile's fuel ends a loop long before its 30 s.
    let (code, _, stderr) = with(&["--", "spin"]);
    assert_eq!(code, Some(134), "{stderr}");
    assert!(stderr.contains("CPU budget of 1000000 fuel"), "{stderr}");
    // A flag wins over the profile.
    let (code, _, stderr) = with(&["--timeout", "200ms", "--fuel", "100000000000", "--", "spin"]);
    assert_eq!(code, Some(134), "{stderr}");
    assert!(stderr.contains("time limit of 200ms"), "{stderr}");

    let (code, _, stderr) = run(
        dir.path(),
        &["--config", &config, "--profile", "nightly", &file],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("no [profile.nightly] is configured"),
        "{stderr}"
    );
}
