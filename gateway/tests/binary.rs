//! The binary's own surface. (Having an integration test here also makes
//! `cargo test --workspace` build the `wasmgate` binary that the end-to-end
//! tests in `tests/` run.)

use std::process::Command;

fn wasmgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(args)
        .output()
        .expect("wasmgate runs")
}

#[test]
fn version_names_the_program() {
    let output = wasmgate(&["--version"]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("wasmgate "));
}

#[test]
fn a_missing_config_file_is_a_config_error() {
    let output = wasmgate(&["check", "--config", "/nonexistent/wasmgate.toml"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/wasmgate.toml: (file): cannot read the config file"),
        "{stderr}"
    );
}
