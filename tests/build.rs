//! Builds the guest workspace in `handlers/` (examples, fixtures and the
//! libraries they use) for wasm32-wasip2 (the same code as `wasmgate build`)
//! and tells the tests where the components are.

#[path = "../gateway/src/cli/handler_build.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with the gateway, which uses all of it"
)]
mod handler_build;

use std::path::{Path, PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir.join("..").join("handlers");
    watch(&workspace);
    println!("cargo:rerun-if-changed=../gateway/src/cli/handler_build.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("wasm");
    let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
    let result = handler_build::ensure_target()
        .and_then(|()| handler_build::build(&cargo, &workspace))
        .and_then(|built| match built.failure {
            Some(failure) => Err(failure),
            None => handler_build::install(&built.components, &out, handler_build::Install::All),
        });
    match result {
        Ok(installed) => {
            assert!(
                !installed.is_empty(),
                "no components were built from {}",
                workspace.display()
            );
            println!("cargo:rustc-env=WASMGATE_TEST_HANDLERS={}", out.display());
        }
        Err(error) => panic!("building the guest fixtures failed: {error}"),
    }
}

/// The folders of `handlers/` whose subfolders are the workspace's crates.
const GROUPS: [&str; 3] = ["examples", "fixtures", "libs"];

/// Rebuild when a guest's sources or manifests change (not on its build output).
fn watch(workspace: &Path) {
    for file in ["Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", workspace.join(file).display());
    }
    for group in GROUPS {
        let Ok(entries) = std::fs::read_dir(workspace.join(group)) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let crate_dir = entry.path();
            if crate_dir.join("Cargo.toml").is_file() {
                println!(
                    "cargo:rerun-if-changed={}",
                    crate_dir.join("Cargo.toml").display()
                );
                println!("cargo:rerun-if-changed={}", crate_dir.join("src").display());
            }
        }
    }
}
