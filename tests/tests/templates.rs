//! Each `wasmgate new --lang L` template, end to end: create the project,
//! `wasmgate build` it (which installs the pinned toolchain from its
//! registry: PyPI for Python, npm for JavaScript and TypeScript), serve it
//! with `wasmgate serve`, and ask it. The Rust template is tested the same
//! way through `wasmgate dev` in `cli.rs`.

use std::path::Path;

use wasmgate_tests::client::Client;
use wasmgate_tests::{run_cli, start_in_project};

/// Creates `name` in `lang`, builds and serves it; returns what `GET /hi` answered.
async fn create_build_serve(dir: &Path, name: &str, lang: &str) -> String {
    let created = run_cli(&["new", name, "--lang", lang], dir);
    assert!(created.status.success(), "{created:?}");
    let project = dir.join(name);
    for file in ["README.md", ".gitignore", "config/wasmgate.toml"] {
        assert!(project.join(file).is_file(), "{file} missing");
    }
    wasmgate_tests::free_project_ports(&project);

    let built = run_cli(&["build"], &project);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let component = project.join(format!("handlers/wasm/{name}.wasm"));
    assert!(component.is_file(), "{} not installed", component.display());
    // Nothing changed: the second build does not build it again.
    let again = run_cli(&["build"], &project);
    assert!(again.status.success());
    assert!(
        !String::from_utf8_lossy(&again.stderr).contains(&format!("building {name}")),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let (mut child, addr) = start_in_project(&["serve"], &project, &[]);
    let reply = Client::http1(addr).await.get("/hi").await;
    let _ = child.kill();
    let _ = child.wait();
    reply.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_project_builds_with_its_pinned_componentize_py_and_serves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let answer = create_build_serve(dir.path(), "py-app", "python").await;
    assert_eq!(answer, "Hello from py-app! You asked for /hi\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_project_builds_with_its_pinned_componentize_js_and_serves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let answer = create_build_serve(dir.path(), "js-app", "js").await;
    assert_eq!(answer, "Hello from js-app! You asked for /hi\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typescript_project_builds_with_tsc_and_componentize_js_and_serves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let answer = create_build_serve(dir.path(), "ts-app", "ts").await;
    assert_eq!(answer, "Hello from ts-app! You asked for /hi\n");
}

#[test]
fn an_unknown_language_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let refused = run_cli(&["new", "app", "--lang", "cobol"], dir.path());
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("the languages are rust, ts, js and python"),
        "{refused:?}"
    );
    assert!(!dir.path().join("app").exists());
}
