//! Components from toolchains other than rustc load and serve: a Python
//! handler built with componentize-py (CPython inside, wasi:cli and
//! filesystem imports beyond the proxy world).

use std::path::{Path, PathBuf};
use std::process::Command;

use http::StatusCode;
use wasmgate_tests::TestGateway;
use wasmgate_tests::client::Client;

/// componentize-py, as scripts/test.sh installs it.
fn componentize_py() -> PathBuf {
    wasmgate_tests::venv_tool("COMPONENTIZE_PY", "componentize-py")
}

/// The WASI 0.2 WIT files that ship inside the `wasip2` crate the Rust
/// handlers use, so both toolchains target the same interface versions.
fn wasi_wit_dir(handlers: &Path) -> PathBuf {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--manifest-path",
        ])
        .arg(handlers.join("Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("metadata JSON");
    let manifest = metadata["packages"]
        .as_array()
        .expect("package list")
        .iter()
        .find(|package| package["name"] == "wasip2")
        .and_then(|package| package["manifest_path"].as_str())
        .expect("the handlers depend on wasip2");
    Path::new(manifest).with_file_name("wit")
}

#[tokio::test]
async fn a_componentize_py_component_loads_and_serves() {
    let handlers = Path::new(env!("CARGO_MANIFEST_DIR")).join("../handlers");
    let dir = tempfile::tempdir().expect("temp dir");
    let component = dir.path().join("python-hello.wasm");
    let output = Command::new(componentize_py())
        .arg("-d")
        .arg(wasi_wit_dir(&handlers))
        .args(["-w", "wasi:http/proxy", "componentize", "-p"])
        .arg(handlers.join("examples/python-hello"))
        .args(["app", "-o"])
        .arg(&component)
        .current_dir(dir.path())
        .output()
        .expect("componentize-py runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let gateway = TestGateway::start_in(
        dir,
        &format!(
            "[[listener]]\naddr = \"127.0.0.1:0\"\n\n[handler.python]\npath = \"{}\"\n\n\
             [[route]]\npath = \"/*\"\nhandler = \"python\"\n",
            component.display()
        ),
    );
    let mut client = Client::http1(gateway.http()).await;
    for path in ["/", "/again"] {
        let reply = client.get(path).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", gateway.log());
        assert_eq!(reply.text(), "Hello from Python!\n");
    }
}
