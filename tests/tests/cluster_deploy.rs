//! Cluster mode's shared deployment state: a deploy, a split and the
//! rollbacks made on one node reach every node through JetStream; each
//! node checks the signature itself (one that trusts a key refuses an
//! unsigned version the others take); a node started late serves the
//! cluster's version from its first ready moment.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;
use wasmgate_tests::client::Client;
use wasmgate_tests::nats::Nats;
use wasmgate_tests::{
    TestGateway, admin, handlers_dir, install, run_cli, sign, wait_for_metric,
    wait_for_metric_at_least,
};

/// A node serving `first` as `version`, trusting `key` when given.
fn node(nats: &Nats, name: &str, first: &Path, key: Option<&Path>) -> TestGateway {
    let dir = tempfile::tempdir().expect("temp dir");
    let handlers = dir.path().join("handlers");
    std::fs::create_dir(&handlers).expect("handlers dir");
    install(&handlers, "version.wasm", first);
    let trusted = key.map_or_else(String::new, |key| {
        format!("[deploy]\ntrusted_keys = [\"{}\"]\n", key.display())
    });
    let config = format!(
        r#"
[gateway]
handlers_dir = "{{dir}}/handlers"
cache_dir = "{{dir}}/cache"

[[listener]]
addr = "127.0.0.1:0"

[handler.version]

[[route]]
path = "/version"
handler = "version"

[admin]
addr = "127.0.0.1:0"

{trusted}
[cluster]
nats = "{}"
node = "{name}"
"#,
        nats.url()
    );
    TestGateway::start_in(dir, &config)
}

/// Deploys the component at `file` on `gateway` with `query`; must succeed.
async fn deploy(gateway: &TestGateway, file: &Path, query: &str) {
    let bytes = std::fs::read(file).expect("component");
    let (status, body) = admin(gateway, "POST", &format!("/deploy/version?{query}"), bytes).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// What `GET /version` answers on `gateway`.
async fn version(gateway: &TestGateway) -> String {
    let reply = Client::http1(gateway.http()).await.get("/version").await;
    assert_eq!(reply.status, StatusCode::OK);
    String::from_utf8_lossy(&reply.body).trim().to_string()
}

/// Waits until every one of `nodes` answers `expected`; how long it took.
async fn all_serve(nodes: &[&TestGateway], expected: &str) -> Duration {
    let started = Instant::now();
    for gateway in nodes {
        loop {
            if version(gateway).await == expected {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "still not {expected} on {}",
                gateway.http()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    started.elapsed()
}

/// Waits until `check` holds for `gateway`'s `version` handler in `/status`.
async fn status_until(gateway: &TestGateway, what: &str, check: impl Fn(&Value) -> bool) {
    let started = Instant::now();
    loop {
        let (_, status) = admin(gateway, "GET", "/status", Vec::new()).await;
        let handler = &status["handlers"][0];
        if check(handler) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: {handler}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `gateway`'s `/readyz` says ready.
async fn ready(gateway: &TestGateway) {
    let started = Instant::now();
    loop {
        let (status, body) = admin(gateway, "GET", "/readyz", Vec::new()).await;
        if status == StatusCode::OK {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not ready: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Nodes a and b serving `version-v1`, both ready.
async fn two_nodes(nats: &Nats) -> (TestGateway, TestGateway) {
    let v1 = fixture("version-v1");
    let (a, b) = (node(nats, "a", &v1, None), node(nats, "b", &v1, None));
    for gateway in [&a, &b] {
        ready(gateway).await;
    }
    (a, b)
}

fn fixture(name: &str) -> PathBuf {
    handlers_dir().join(format!("{name}.wasm"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_and_rollbacks_reach_every_node_and_a_late_node_catches_up() {
    let work = tempfile::tempdir().expect("dir");
    let run = |args: &[&str]| run_cli(args, work.path());
    assert!(run(&["keygen", "--out", "release"]).status.success());
    let signed = |name: &str| {
        let path = work.path().join(format!("{name}.wasm"));
        std::fs::copy(fixture(name), &path).expect("copy");
        sign(&path, "release.key", work.path());
        path
    };
    let (v1, v2, flaky) = (signed("version-v1"), signed("version-v2"), signed("flaky"));
    let key = work.path().join("release.pub");

    let nats = Nats::start();
    let a = node(&nats, "a", &v1, None);
    let b = node(&nats, "b", &v1, None);
    let c = node(&nats, "c", &v1, Some(&key));
    for gateway in [&a, &b, &c] {
        ready(gateway).await;
    }
    all_serve(&[&a, &b, &c], "v1").await;
    let (_, status) = admin(&a, "GET", "/status", Vec::new()).await;
    let v1_sha = status["handlers"][0]["sha256"]
        .as_str()
        .expect("v1's hash")
        .to_string();

    // An unsigned v2 deployed on a: a and b take it; c trusts a key, so it
    // refuses it, counts it and serves v1 on.
    deploy(&a, &fixture("version-v2"), "strategy=immediate").await;
    all_serve(&[&a, &b], "v2").await;
    c.wait_for_log("not applied; serving as before: refused: not signed");
    wait_for_metric_at_least(
        &c,
        r#"wasmgate_cluster_decisions_total{outcome="failed"}"#,
        1.0,
    )
    .await;
    assert_eq!(version(&c).await, "v1");

    // The signed v2: every node serves it within seconds.
    deploy(&a, &v2, "strategy=immediate").await;
    let took = all_serve(&[&a, &b, &c], "v2").await;
    eprintln!("deploy propagated to 3 nodes in {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");

    // A node started now, with v1 in its folder, catches up before it
    // says it is ready: its first answer is v2.
    let d = node(&nats, "d", &v1, None);
    ready(&d).await;
    assert_eq!(
        version(&d).await,
        "v2",
        "the late node serves the cluster's version"
    );

    // A split decided on a: every node gives the candidate the same share.
    deploy(&a, &flaky, "strategy=split&weight=10&name=b").await;
    for gateway in [&b, &c, &d] {
        status_until(gateway, "the split arrives", |handler| {
            handler["rollout"]["weight_percent"] == 10.0 && handler["rollout"]["name"] == "b"
        })
        .await;
    }

    // Rolled back on a: the candidate leaves everywhere, then v1 is stable
    // again everywhere.
    let (status, body) = admin(&a, "POST", "/rollback/version", Vec::new()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for gateway in [&b, &c, &d] {
        status_until(gateway, "the candidate leaves", |handler| {
            handler["rollout"].is_null()
        })
        .await;
    }
    // Not to the previous version (the unsigned v2): to v1, by its hash.
    let (status, body) = admin(
        &a,
        "POST",
        &format!("/rollback/version?to={v1_sha}"),
        Vec::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    all_serve(&[&a, &b, &c, &d], "v1").await;
    for gateway in [&b, &c, &d] {
        wait_for_metric_at_least(
            gateway,
            r#"wasmgate_cluster_decisions_total{outcome="applied"}"#,
            3.0,
        )
        .await;
    }
    wait_for_metric_at_least(
        &a,
        r#"wasmgate_cluster_decisions_total{outcome="shared"}"#,
        4.0,
    )
    .await;
}

/// A canary driven on a is judged on the whole cluster's traffic: every
/// request goes to b, none to a, and the step still passes on b's counts,
/// reported over NATS; its 50% share is the same on every node meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_is_judged_on_every_nodes_requests() {
    let nats = Nats::start();
    let (a, b) = two_nodes(&nats).await;
    deploy(
        &a,
        &fixture("version-v2"),
        "strategy=canary&steps=50%25&interval=200ms&min_requests=30",
    )
    .await;
    status_until(&b, "the step's share arrives", |handler| {
        handler["rollout"]["weight_percent"] == 50.0
    })
    .await;
    let started = Instant::now();
    let mut sent = 0;
    loop {
        version(&b).await;
        sent += 1;
        let (_, status) = admin(&a, "GET", "/status", Vec::new()).await;
        if status["handlers"][0]["rollout"].is_null() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not promoted after {sent} requests to b: {}",
            status["handlers"][0]
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Counted just after the state that status shows changes.
    wait_for_metric(
        &a,
        r#"wasmgate_rollout_promotions_total{handler="version"}"#,
        1.0,
    )
    .await;
    all_serve(&[&a, &b], "v2").await;
    a.wait_for_log("canary check passed");
}

/// A rollback made while NATS is down serves at once where it was made,
/// and reaches the other node once NATS is back: the decision waits to be
/// written, and the other node reads on from its last decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_made_while_nats_is_down_arrives_when_it_is_back() {
    let mut nats = Nats::start();
    let (a, b) = two_nodes(&nats).await;
    deploy(&a, &fixture("version-v2"), "strategy=immediate").await;
    all_serve(&[&a, &b], "v2").await;

    nats.stop();
    for (gateway, name) in [(&a, "a"), (&b, "b")] {
        let series = format!("wasmgate_cluster_connected{{node=\"{name}\"}}");
        wait_for_metric(gateway, &series, 0.0).await;
    }
    let (status, body) = admin(&a, "POST", "/rollback/version", Vec::new()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(version(&a).await, "v1");
    assert_eq!(version(&b).await, "v2", "b serves its last state");

    nats.resume();
    let took = all_serve(&[&b], "v1").await;
    eprintln!("the decision arrived {took:?} after NATS was back");
    assert_eq!(version(&a).await, "v1");
}

/// Publishes `payload` on `subject` as a plain NATS client would (anyone
/// who reaches the server can), and waits for the server's answer.
fn publish_raw(nats: &Nats, subject: &str, payload: &[u8]) {
    use std::io::{BufRead as _, BufReader, Write as _};
    let addr = nats.url().trim_start_matches("nats://").to_string();
    let mut stream = std::net::TcpStream::connect(addr).expect("nats-server");
    let mut frame = format!(
        "CONNECT {{\"verbose\":false}}\r\nPUB {subject} {}\r\n",
        payload.len()
    )
    .into_bytes();
    frame.extend_from_slice(payload);
    frame.extend_from_slice(b"\r\nPING\r\n");
    stream.write_all(&frame).expect("publish");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !line.starts_with("PONG") {
        line.clear();
        assert!(
            reader.read_line(&mut line).expect("answer") > 0,
            "server hung up"
        );
        assert!(!line.starts_with("-ERR"), "{line}");
    }
}

/// What anyone on the NATS server may write is refused entry by entry: a
/// value that is not a decision, a key that is no handler, a decision
/// naming a version missing from the object store, a metrics report that
/// does not parse. The nodes serve on, stay ready, and a real deploy after
/// them still reaches every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_entries_are_refused_one_by_one() {
    let nats = Nats::start();
    let (a, b) = two_nodes(&nats).await;
    let missing = format!(
        r#"{{"node":"x","stable":"{}","candidate":null}}"#,
        "0".repeat(64)
    );
    for (subject, payload) in [
        ("$KV.wasmgate_deployments.version", &b"not a decision"[..]),
        ("$KV.wasmgate_deployments.Not_A_Handler", missing.as_bytes()),
        ("$KV.wasmgate_deployments.version", missing.as_bytes()),
        ("wasmgate.metrics", &b"\xff\xfe"[..]),
        (
            "wasmgate.metrics",
            br#"{"node":"x","versions":[["h","ab",{"requests":1}]]}"#,
        ),
    ] {
        publish_raw(&nats, subject, payload);
    }
    for gateway in [&a, &b] {
        gateway.wait_for_log("is not in the cluster's object store");
        wait_for_metric_at_least(
            gateway,
            r#"wasmgate_cluster_decisions_total{outcome="failed"}"#,
            3.0,
        )
        .await;
        assert_eq!(version(gateway).await, "v1");
        let (status, body) = admin(gateway, "GET", "/readyz", Vec::new()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    deploy(&a, &fixture("version-v2"), "strategy=immediate").await;
    all_serve(&[&a, &b], "v2").await;
}

/// An object whose description anyone on the NATS server wrote, with no
/// bytes behind it: the node waiting for them gives up within its bound,
/// counts the decision as failed, and takes the next real deploy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_whose_bytes_never_come_is_given_up() {
    let nats = Nats::start();
    let (a, b) = two_nodes(&nats).await;
    let sha = "1".repeat(64);
    let encoded = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("printf %s {sha} | base64 -w0 | tr '+/' '-_'"),
        ])
        .output()
        .expect("base64 runs");
    let encoded = String::from_utf8_lossy(&encoded.stdout).to_string();
    let meta = format!(
        r#"{{"name":"{sha}","bucket":"wasmgate_components","nuid":"nochunks","size":10,"chunks":1,"digest":"SHA-256=AAAA"}}"#
    );
    publish_raw(
        &nats,
        &format!("$O.wasmgate_components.M.{encoded}"),
        meta.as_bytes(),
    );
    let decision = format!(r#"{{"node":"x","stable":"{sha}","candidate":null}}"#);
    publish_raw(
        &nats,
        "$KV.wasmgate_deployments.version",
        decision.as_bytes(),
    );
    for gateway in [&a, &b] {
        gateway.wait_for_log("did not arrive within");
        wait_for_metric_at_least(
            gateway,
            r#"wasmgate_cluster_decisions_total{outcome="failed"}"#,
            1.0,
        )
        .await;
        assert_eq!(version(gateway).await, "v1");
    }
    deploy(&a, &fixture("version-v2"), "strategy=immediate").await;
    all_serve(&[&a, &b], "v2").await;
}
