//! `wasmgate build` (and `dev`'s rebuilds) across languages: finds every
//! component source under the handlers source directory and builds each
//! with its own toolchain, then installs what built.
//!
//! - a Cargo workspace (`Cargo.toml` at the top): [`handler_build`];
//! - a directory with a `package.json`: `npm install` (when its
//!   dependencies changed), then `npm run build`, which writes
//!   `target/NAME.wasm` (componentize-js for JavaScript and TypeScript);
//! - a directory with `app.py` and `requirements.txt`: the pinned toolchain
//!   (componentize-py) installed into its `.venv/`, then
//!   `componentize-py -d wit -w app componentize app -o target/NAME.wasm`.
//!
//! Invariant: each component builds on its own (one that fails does not
//! stop the others, and keeps its last good version installed); a component
//! whose sources are older than its last output is not built again; the
//! toolchains' output reaches the terminal as they print it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use super::handler_build::{self, Install};

/// One component source that is not Rust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A `package.json` project (JavaScript, TypeScript).
    Npm(PathBuf),
    /// A componentize-py app.
    Python(PathBuf),
}

impl Source {
    fn dir(&self) -> &Path {
        match self {
            Self::Npm(dir) | Self::Python(dir) => dir,
        }
    }

    /// Its component's name: its directory's.
    fn name(&self) -> String {
        self.dir()
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Where its build writes the component.
    fn output(&self) -> PathBuf {
        self.dir()
            .join("target")
            .join(format!("{}.wasm", self.name()))
    }
}

/// Directories that hold what a build makes or installs, never sources.
fn is_output(name: &str) -> bool {
    name.starts_with('.') || matches!(name, "target" | "node_modules" | "__pycache__")
}

/// Whether `path` (inside `root`) is a source file of a component, not
/// build output, installed tools or hidden (editors' swap files, .git).
pub fn is_source(root: &Path, path: &Path) -> bool {
    path.strip_prefix(root).is_ok_and(|inside| {
        !inside
            .components()
            .any(|part| is_output(&part.as_os_str().to_string_lossy()))
    })
}

/// The non-Rust component sources directly under `source`, by name.
pub fn discover(source: &Path) -> Vec<Source> {
    let Ok(listing) = std::fs::read_dir(source) else {
        return Vec::new();
    };
    let mut found: Vec<Source> = listing
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|dir| {
            dir.is_dir()
                && dir
                    .file_name()
                    .is_some_and(|name| !is_output(&name.to_string_lossy()))
        })
        .filter_map(|dir| {
            if dir.join("package.json").is_file() {
                Some(Source::Npm(dir))
            } else if dir.join("app.py").is_file() && dir.join("requirements.txt").is_file() {
                Some(Source::Python(dir))
            } else {
                None
            }
        })
        .collect();
    found.sort_by(|a, b| a.dir().cmp(b.dir()));
    found
}

/// Builds every component source under `source` and installs what a
/// gateway serves into `dir`; the error names each one that failed.
pub fn build_and_install(source: &Path, dir: &Path) -> Result<(), String> {
    let mut failures = Vec::new();
    if source.join("Cargo.toml").is_file()
        && let Err(failure) = handler_build::build_and_install(source, dir)
    {
        failures.push(failure);
    }
    // Each toolchain runs in its component's directory: paths handed to it
    // must not be relative to ours.
    let absolute = source
        .canonicalize()
        .map_err(|error| format!("cannot read {}: {error}", source.display()))?;
    for each in discover(&absolute) {
        if let Err(failure) = build_one(&each, dir) {
            failures.push(failure);
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// Builds one component when its sources changed, and installs it.
fn build_one(source: &Source, dir: &Path) -> Result<(), String> {
    let name = source.name();
    let output = source.output();
    if newest_source(source.dir()) > modified(&output) {
        eprintln!("building {name} ({})", source.dir().display());
        let built = match source {
            Source::Npm(dir) => build_npm(dir),
            Source::Python(dir) => build_python(dir, &name),
        };
        built.map_err(|reason| {
            format!("{name}: {reason}; its last good build (if any) stays installed")
        })?;
        if !output.is_file() {
            return Err(format!("{name}: the build wrote no {}", output.display()));
        }
    }
    for one in handler_build::install(&[output], dir, Install::Servable)? {
        if one.changed {
            eprintln!("installed {}", one.path.display());
        }
    }
    Ok(())
}

fn build_npm(dir: &Path) -> Result<(), String> {
    // What `npm install` last installed, against what the project asks for.
    let installed = modified(&dir.join("node_modules").join(".package-lock.json"));
    let wanted = modified(&dir.join("package.json")).max(modified(&dir.join("package-lock.json")));
    if installed.is_none() || wanted > installed {
        run(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund"])
                .current_dir(dir),
            "npm install",
        )?;
    }
    run(
        Command::new("npm").args(["run", "build"]).current_dir(dir),
        "npm run build",
    )
}

fn build_python(dir: &Path, name: &str) -> Result<(), String> {
    let venv = dir.join(".venv");
    let tool = venv.join("bin").join("componentize-py");
    let installed = modified(&venv.join("installed"));
    if !tool.is_file() || installed.is_none() || modified(&dir.join("requirements.txt")) > installed
    {
        run(
            Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .current_dir(dir),
            "python3 -m venv .venv",
        )?;
        run(
            Command::new(venv.join("bin").join("pip"))
                .args([
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                    "requirements.txt",
                ])
                .current_dir(dir),
            "pip install -r requirements.txt",
        )?;
        std::fs::write(venv.join("installed"), "")
            .map_err(|error| format!("cannot write {}: {error}", venv.display()))?;
    }
    run(
        Command::new(&tool)
            .args(["-d", "wit", "-w", "app", "componentize", "app", "-o"])
            .arg(Path::new("target").join(format!("{name}.wasm")))
            .current_dir(dir),
        "componentize-py",
    )
}

/// Runs `command` with the terminal as its output; `what` names it in errors.
fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|error| format!("cannot run {what}: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
}

/// When the newest source file under `dir` changed.
fn newest_source(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(listing) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in listing.filter_map(Result::ok) {
            let path = entry.path();
            if is_output(&entry.file_name().to_string_lossy()) {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else {
                newest = newest.max(modified(&path));
            }
        }
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_kind_of_source_and_skips_output() {
        let root = tempfile::tempdir().expect("temp dir");
        let make = |path: &str| {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(path, "").expect("write");
        };
        make("web/package.json");
        make("api/app.py");
        make("api/requirements.txt");
        make("script/app.py");
        make("node_modules/package.json");
        make(".hidden/package.json");
        let found = discover(root.path());
        assert_eq!(
            found,
            vec![
                Source::Python(root.path().join("api")),
                Source::Npm(root.path().join("web")),
            ]
        );
        assert_eq!(found[1].output(), root.path().join("web/target/web.wasm"));
        assert!(is_source(root.path(), &root.path().join("web/app.ts")));
        for output in [
            "web/node_modules/x.js",
            "web/target/web.wasm",
            "api/.venv/x",
        ] {
            assert!(
                !is_source(root.path(), &root.path().join(output)),
                "{output}"
            );
        }
    }
}
