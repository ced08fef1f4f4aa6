//! The command line: `check` reports every configuration problem at once and
//! exits 2; `serve` with a bad configuration binds nothing.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;

use wasmgate_tests::client::Client;
use wasmgate_tests::{TestGateway, check_in, handlers_dir, run_cli};

/// Writes `config` (with `{handlers}` and `{dir}` expanded) into a fresh
/// directory, runs `wasmgate check` on it and returns (exit code, stderr with
/// the directory replaced by `{dir}`).
fn check(config: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("notwasm.wasm"), "<html>not wasm</html>").expect("write");
    // The smallest core module: magic and version 1.
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").expect("write");
    std::fs::write(dir.path().join("bad.pem"), "-----BEGIN NOTHING-----\n").expect("write");
    check_in(dir.path(), config)
}

fn assert_invalid(config: &str, expected: &[&str]) {
    let (code, stderr) = check(config);
    assert_eq!(code, Some(2), "exit code for:\n{config}\nstderr:\n{stderr}");
    for line in expected {
        assert!(stderr.contains(line), "expected {line:?} in:\n{stderr}");
    }
    let reported = stderr
        .lines()
        .filter(|line| line.starts_with("error: {dir}/gw.toml: "))
        .count();
    assert_eq!(reported, expected.len(), "one line per problem:\n{stderr}");
}

const LISTENER: &str = "[[listener]]\naddr = \"127.0.0.1:0\"\n";

#[test]
fn unknown_keys_are_named_with_their_path() {
    assert_invalid(
        &format!(
            "{LISTENER}\n[gateway]\nhandler_dir = \"x\"\n\n[handler.hello]\npool = {{ prewarm = 1, size = 2 }}\npath = \"{{handlers}}/hello.wasm\"\n"
        ),
        &[
            "error: {dir}/gw.toml: gateway.handler_dir: unknown key",
            "error: {dir}/gw.toml: handler.hello.pool.size: unknown key",
        ],
    );
}

#[test]
fn duplicate_routes_and_unknown_handlers_are_rejected() {
    assert_invalid(
        &format!(
            "{LISTENER}\n[gateway]\nhandlers_dir = \"{{handlers}}\"\n[handler.hello]\n\
             [[route]]\npath = \"/a/*\"\nhandler = \"hello\"\n\
             [[route]]\npath = \"/a/*\"\nhandler = \"hello\"\n\
             [[route]]\npath = \"/b\"\nhandler = \"nobody\"\n"
        ),
        &[
            "error: {dir}/gw.toml: route[1].path: duplicate route: `/a/*` is already routed by an earlier [[route]]",
            "error: {dir}/gw.toml: route[2].handler: no [handler.nobody] is configured",
        ],
    );
}

#[test]
fn files_that_are_not_components_are_rejected_each_with_its_reason() {
    assert_invalid(
        &format!(
            "{LISTENER}\n[gateway]\nhandlers_dir = \"{{dir}}\"\n\
             [handler.missing]\n[handler.notwasm]\n[handler.core]\n"
        ),
        &[
            "error: {dir}/gw.toml: handler.missing.path: {dir}/missing.wasm: cannot read the file: No such file or directory",
            "error: {dir}/gw.toml: handler.notwasm.path: {dir}/notwasm.wasm: not a WebAssembly file",
            "error: {dir}/gw.toml: handler.core.path: {dir}/core.wasm: a core WebAssembly module, not a component",
        ],
    );
}

#[test]
fn bad_addresses_durations_and_sizes_are_explained() {
    assert_invalid(
        "[[listener]]\naddr = \"localhost:80\"\n\n[gateway]\ngrace_period = \"a while\"\n\n\
         [handler.hello]\nlimits = { memory = \"huge\", timeout = \"0s\" }\n",
        &[
            "error: {dir}/gw.toml: listener[0].addr: `localhost:80` is not a socket address",
            "error: {dir}/gw.toml: gateway.grace_period: `a while` is not a duration",
            "error: {dir}/gw.toml: handler.hello.limits.memory: `huge` is not a size",
            "error: {dir}/gw.toml: handler.hello.limits.timeout: must be longer than zero",
            "error: {dir}/gw.toml: handler.hello.path: {dir}/handlers/hello.wasm: cannot read the file",
        ],
    );
}

#[test]
fn unreadable_certificates_are_reported_per_file() {
    assert_invalid(
        "[[listener]]\naddr = \"127.0.0.1:0\"\ntls = { cert = \"absent.pem\", key = \"bad.pem\" }\n",
        &[
            "error: {dir}/gw.toml: listener[0].tls.cert: cannot load a certificate from {dir}/absent.pem",
            "error: {dir}/gw.toml: listener[0].tls.key: cannot load a private key from {dir}/bad.pem",
        ],
    );
}

#[test]
fn syntax_errors_give_line_and_column() {
    let (code, stderr) = check("[[listener]\naddr = \"127.0.0.1:0\"\n");
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("error: {dir}/gw.toml: (syntax (line 1, column"),
        "{stderr}"
    );
}

#[test]
fn a_valid_config_checks_ok_and_compiles_every_component() {
    let (code, stderr) = check(
        "[[listener]]\naddr = \"127.0.0.1:0\"\n[gateway]\nhandlers_dir = \"{handlers}\"\n\
         [handler.hello]\n[handler.echo]\n[[route]]\npath = \"/*\"\nhandler = \"hello\"\n",
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("component loaded") && stderr.contains("handler=\"echo\""),
        "{stderr}"
    );
}

#[test]
fn serve_with_a_missing_component_exits_2_and_binds_nothing() {
    // Reserve a free port, release it, and point the gateway at it.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("free port")
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("gw.toml");
    let text = format!(
        "[[listener]]\naddr = \"{addr}\"\n[gateway]\nhandlers_dir = \"{}\"\n[handler.hello]\n[handler.ghost]\n",
        handlers_dir().display()
    );
    std::fs::write(&config, text).expect("write config");
    let output = run_cli(
        &["serve", "--config", &config.display().to_string()],
        Path::new("/"),
    );
    assert_eq!(output.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("listening on"), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("handler.ghost.path") && stderr.contains("ghost.wasm"),
        "{stderr}"
    );
    assert!(
        TcpStream::connect(addr).is_err(),
        "nothing may listen on {addr}"
    );
}

#[test]
fn config_problems_and_file_problems_are_reported_together() {
    assert_invalid(
        &format!(
            "{LISTENER}\n[gateway]\nhandlers_dir = \"{{dir}}\"\ncolour = \"blue\"\n\
             [handler.missing]\n[[route]]\npath = \"/\"\nhandler = \"nobody\"\n"
        ),
        &[
            "error: {dir}/gw.toml: gateway.colour: unknown key",
            "error: {dir}/gw.toml: route[0].handler: no [handler.nobody] is configured",
            "error: {dir}/gw.toml: handler.missing.path: {dir}/missing.wasm: cannot read the file",
        ],
    );
}

/// `wasmgate build`: a crate that does not compile does not stop the others
/// (their components are installed, the compiler's errors are shown, the
/// exit is non-zero), and a rebuild leaves unchanged components alone.
#[test]
fn build_installs_what_builds_and_shows_what_does_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let workspace = dir.path().join("guests");
    let crate_at = |name: &str, source: &str| {
        let root = workspace.join(name);
        std::fs::create_dir_all(root.join("src")).expect("mkdir");
        std::fs::write(
            root.join("Cargo.toml"),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n"
            ),
        )
        .expect("write");
        std::fs::write(root.join("src/lib.rs"), source).expect("write");
    };
    std::fs::create_dir_all(&workspace).expect("mkdir");
    std::fs::write(
        workspace.join("Cargo.toml"),
        "[workspace]\nresolver = \"3\"\nmembers = [\"good\", \"broken\"]\n",
    )
    .expect("write");
    crate_at(
        "good",
        "#[unsafe(no_mangle)]\npub extern \"C\" fn answer() -> u32 { 42 }\n",
    );
    crate_at("broken", "pub fn oops() -> u32 { \"not a number\" }\n");
    let installed = dir.path().join("installed");
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        "[gateway]\nhandlers_dir = \"installed\"\n\n[[listener]]\naddr = \"127.0.0.1:0\"\n",
    )
    .expect("write");
    let build = || {
        let output = run_cli(
            &[
                "build",
                "--config",
                &config.display().to_string(),
                "--source",
                &workspace.display().to_string(),
            ],
            dir.path(),
        );
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = build();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("mismatched types"),
        "the compiler's error: {stderr}"
    );
    assert!(
        stderr.contains("installed ") && stderr.contains("good.wasm"),
        "{stderr}"
    );
    assert!(installed.join("good.wasm").is_file());
    assert!(!installed.join("broken.wasm").exists());
    let modified = std::fs::metadata(installed.join("good.wasm"))
        .and_then(|meta| meta.modified())
        .expect("mtime");
    let (_, stderr) = build();
    assert!(stderr.contains("1 components unchanged"), "{stderr}");
    assert!(!stderr.contains("installed "), "{stderr}");
    assert_eq!(
        std::fs::metadata(installed.join("good.wasm"))
            .and_then(|meta| meta.modified())
            .expect("mtime"),
        modified,
        "an unchanged component is not rewritten"
    );
}

/// `wasmgate dev`: serves what it built, rebuilds and hot-swaps a
/// component after its source is edited, and keeps the last good version
/// serving while an edit does not compile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_rebuilds_and_swaps_on_edit_and_keeps_serving_through_a_broken_edit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let workspace = dir.path().join("app");
    let crate_dir = workspace.join("hi");
    std::fs::create_dir_all(crate_dir.join("src")).expect("mkdir");
    let guest_lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../handlers/libs/guest");
    std::fs::write(
        workspace.join("Cargo.toml"),
        "[workspace]\nresolver = \"3\"\nmembers = [\"hi\"]\n\n[profile.release]\nopt-level = 1\n",
    )
    .expect("write");
    std::fs::write(
        crate_dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"hi\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nguest = {{ path = \"{}\" }}\n",
            guest_lib.display()
        ),
    )
    .expect("write");
    let source = |answer: &str| {
        format!(
            "use guest::wasip2;\nuse wasip2::http::types::{{IncomingRequest, ResponseOutparam}};\n\
             struct Hi;\nimpl wasip2::exports::http::incoming_handler::Guest for Hi {{\n\
             fn handle(_request: IncomingRequest, out: ResponseOutparam) {{\n\
             guest::respond(out, 200, \"text/plain\", b\"{answer}\");\n}}\n}}\n\
             wasip2::http::proxy::export!(Hi);\n"
        )
    };
    let lib = crate_dir.join("src/lib.rs");
    std::fs::write(&lib, source("v1")).expect("write");
    // The guest workspace's lock: the same crate versions, already in
    // cargo's cache, so the build needs no network.
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../handlers/Cargo.lock"),
        workspace.join("Cargo.lock"),
    )
    .expect("copy the lock file");
    let gateway = TestGateway::start_dev(
        dir,
        "[gateway]\nhandlers_dir = \"{dir}/installed\"\n\n[[listener]]\naddr = \"127.0.0.1:0\"\n\n\
         [handler.hi]\n\n[[route]]\npath = \"/\"\nhandler = \"hi\"\n",
        &workspace,
    );
    let answer = || async { Client::http1(gateway.http()).await.get("/").await.text() };
    assert_eq!(answer().await, "v1");
    // An edit: the next requests (polled) meet the new version.
    std::fs::write(&lib, source("v2")).expect("write");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while answer().await != "v2" {
        assert!(std::time::Instant::now() < deadline, "{}", gateway.log());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // A broken edit: the error is shown, v2 keeps serving.
    std::fs::write(&lib, "this is not rust").expect("write");
    gateway.wait_for_log("what failed keeps serving its last good version");
    assert_eq!(answer().await, "v2");
}

/// `wasmgate new NAME`, then `cd NAME && wasmgate dev` (with no argument):
/// the project builds and answers on `/`. The test moves its ports to free
/// ones and builds offline with the machine's stable toolchain (the project
/// pins that same version).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_project_serves_with_dev_and_no_arguments() {
    let dir = tempfile::tempdir().expect("temp dir");
    let created = run_cli(&["new", "hello-app"], dir.path());
    assert!(created.status.success(), "{created:?}");
    let project = dir.path().join("hello-app");
    for file in [
        "README.md",
        ".gitignore",
        "rust-toolchain.toml",
        "config/wasmgate.toml",
        "handlers/Cargo.toml",
        "handlers/hello-app/src/lib.rs",
    ] {
        assert!(project.join(file).is_file(), "{file} missing");
    }
    let again = run_cli(&["new", "hello-app"], dir.path());
    assert!(!again.status.success(), "never overwrites");
    wasmgate_tests::free_project_ports(&project);
    let (mut child, addr) = wasmgate_tests::start_in_project(
        &["dev"],
        &project,
        &[
            ("RUSTUP_TOOLCHAIN", "stable"),
            ("CARGO_NET_OFFLINE", "true"),
        ],
    );
    let reply = Client::http1(addr).await.get("/hi").await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(reply.text(), "Hello from hello-app! You asked for /hi\n");
}
