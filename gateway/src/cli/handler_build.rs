//! Builds the guest workspace (`handlers/`) for `wasm32-wasip2` and installs
//! its components.
//!
//! Invariant: this file uses `std` only, because the end-to-end tests' build
//! script compiles it too (`#[path]`), so `wasmgate build` and the tests build
//! the handlers the same way. An installed component appears by an atomic
//! rename, never as a half-written file.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target every guest is built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Installs the wasm32-wasip2 standard library through rustup when missing.
pub fn ensure_target() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|error| {
            format!("cannot run rustup (needed to add the {TARGET} target): {error}")
        })?;
    let listed = String::from_utf8_lossy(&installed.stdout);
    if listed.lines().any(|line| line.trim() == TARGET) {
        return Ok(());
    }
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map_err(|error| format!("cannot run rustup: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`rustup target add {TARGET}` failed ({status})"))
    }
}

/// What a build of the guest workspace gave.
#[derive(Debug)]
pub struct Built {
    /// Every component in the build's output directory: the ones built now,
    /// and the last good build of any crate that failed this time.
    pub components: Vec<PathBuf>,
    /// Why the build failed, when a crate did not build (cargo has printed
    /// the compiler's errors as they came); the other crates still built.
    pub failure: Option<String>,
}

/// Runs `cargo build --release --keep-going` for the guest workspace at
/// `workspace` (one crate that fails does not stop the others; cargo
/// rebuilds only what changed) and lists the components in its output,
/// one per `cdylib` or command crate.
pub fn build(cargo: &Path, workspace: &Path) -> Result<Built, String> {
    let manifest = workspace.join("Cargo.toml");
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--release",
            "--keep-going",
            "--target",
            TARGET,
            "--manifest-path",
        ])
        .arg(&manifest);
    // Inside a build script these point at the host build and would leak
    // into the guest build.
    for variable in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        command.env_remove(variable);
    }
    let status = command
        .status()
        .map_err(|error| format!("cannot run {}: {error}", cargo.display()))?;
    let failure = (!status.success()).then(|| {
        format!(
            "building {} failed ({status}); the crates that built are installed",
            manifest.display()
        )
    });
    let out = workspace.join("target").join(TARGET).join("release");
    let listing = match std::fs::read_dir(&out) {
        Ok(listing) => listing,
        // Nothing ever built: the failure says why.
        Err(error) => {
            return match failure {
                Some(failure) => Ok(Built {
                    components: Vec::new(),
                    failure: Some(failure),
                }),
                None => Err(format!("cannot list {}: {error}", out.display())),
            };
        }
    };
    let mut components: Vec<PathBuf> = listing
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "wasm")
        })
        .collect();
    components.sort();
    Ok(Built {
        components,
        failure,
    })
}

/// `wasmgate build`: builds the guest workspace `source` and installs what
/// a gateway serves into `dir`, saying on stderr what changed. A crate that
/// failed is the error (the others are installed).
pub fn build_and_install(source: &Path, dir: &Path) -> Result<(), String> {
    ensure_target()?;
    let built = build(Path::new("cargo"), source)?;
    let installed = install(&built.components, dir, Install::Servable)?;
    let unchanged = installed.iter().filter(|one| !one.changed).count();
    for one in installed.iter().filter(|one| one.changed) {
        eprintln!("installed {}", one.path.display());
    }
    if unchanged > 0 {
        eprintln!("{unchanged} components unchanged");
    }
    built.failure.map_or(Ok(()), Err)
}

/// Which of the built components to install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// Everything, test fixtures included (the end-to-end tests).
    All,
    /// Only components a gateway can serve: not [`TEST_ONLY`] (`wasmgate build`).
    Servable,
}

/// Fixtures that exist to be rejected by the gateway, or to be wired into
/// a test or a benchmark rather than served on their own.
pub const TEST_ONLY: [&str; 9] = [
    "no-handler",
    "cli-hello",
    "translator-mismatch",
    "wired-bench",
    "advice-pass",
    "mw-stamp",
    "mw-fanout",
    "resident-ticker",
    "resident-tally",
];

/// One component in the install directory.
#[derive(Debug)]
pub struct Installed {
    /// Where it is.
    pub path: PathBuf,
    /// Whether this install changed it (a file with the same bytes is left
    /// alone, so a watching gateway sees no change).
    pub changed: bool,
}

/// Copies each component into `dir` under its file name (`ws_echo.wasm` →
/// `ws-echo.wasm`: handler names use `-`, crate artifacts `_`), replacing an
/// older copy atomically unless it has the same bytes.
pub fn install(
    components: &[PathBuf],
    dir: &Path,
    which: Install,
) -> Result<Vec<Installed>, String> {
    std::fs::create_dir_all(dir)
        .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    let mut installed = Vec::with_capacity(components.len());
    for component in components {
        let Some(stem) = component.file_stem().and_then(|stem| stem.to_str()) else {
            continue;
        };
        let name = stem.replace('_', "-");
        if which == Install::Servable && TEST_ONLY.contains(&name.as_str()) {
            continue;
        }
        let target = dir.join(format!("{name}.wasm"));
        let unchanged = match (std::fs::read(component), std::fs::read(&target)) {
            (Ok(new), Ok(old)) => new == old,
            _ => false,
        };
        if !unchanged {
            let staging = dir.join(format!(".{stem}.wasm.partial"));
            std::fs::copy(component, &staging)
                .and_then(|_| std::fs::rename(&staging, &target))
                .map_err(|error| format!("cannot install {}: {error}", target.display()))?;
        }
        installed.push(Installed {
            path: target,
            changed: !unchanged,
        });
    }
    Ok(installed)
}
