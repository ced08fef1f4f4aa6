//! Safe deployments: versions served side by side with weights, sticky and
//! pinned; canaries judged by the gateway and rolled back or promoted;
//! blue-green switches; signed components; the audit trail; a restart
//! mid-rollout resumes on the stable version.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;
use wasmgate_tests::client::{self, Client};
use wasmgate_tests::{TestGateway, admin, free_port, handlers_dir, install, metric, run_cli};

/// `version.wasm` (v1 at start) on `/version`, with `policy` added to its
/// handler table; the admin listener on `admin_port` so the CLI finds it.
fn config(admin_port: u16, policy: &str) -> String {
    format!(
        r#"
[gateway]
handlers_dir = "{{dir}}/handlers"
cache_dir = "{{dir}}/cache"
grace_period = "2s"

[[listener]]
addr = "127.0.0.1:0"

[handler.version]
env = ["FAIL_PERCENT"]
{policy}

[[route]]
path = "/version"
handler = "version"

[admin]
addr = "127.0.0.1:{admin_port}"
"#
    )
}

fn fixture(name: &str) -> PathBuf {
    handlers_dir().join(format!("{name}.wasm"))
}

/// A gateway directory whose `handlers/version.wasm` is `first`.
fn prepared(first: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let handlers = dir.path().join("handlers");
    std::fs::create_dir(&handlers).expect("handlers dir");
    install(&handlers, "version.wasm", first);
    dir
}

/// A gateway serving `first` with `policy`, and `env` set.
fn start(policy: &str, first: &Path, env: &[(&str, &str)]) -> TestGateway {
    TestGateway::start_with_env(prepared(first), &config(free_port(), policy), env)
}

/// Deploys `fixture` to the `version` handler with `query`; must succeed.
async fn deploy(gateway: &TestGateway, fixture_name: &str, query: &str) -> Value {
    let bytes = std::fs::read(fixture(fixture_name)).expect("fixture");
    let (status, body) = admin(gateway, "POST", &format!("/deploy/version?{query}"), bytes).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn status(gateway: &TestGateway) -> Value {
    admin(gateway, "GET", "/status", Vec::new()).await.1["handlers"][0].clone()
}

/// Waits until the `version` handler's rollout is over and served: no
/// rollout in progress, and more rollouts ended than `ended_before`.
async fn rollout_over(gateway: &TestGateway, within: Duration, ended_before: f64) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let handler = status(gateway).await;
        // The rollout leaves /status as its end begins; the end is counted
        // once the generation that serves it is published.
        if handler["rollout"].is_null() && rollouts_ended(gateway).await > ended_before {
            return status(gateway).await;
        }
        assert!(Instant::now() < deadline, "rollout still going: {handler}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rollouts ended so far, promoted or rolled back.
async fn rollouts_ended(gateway: &TestGateway) -> f64 {
    metric(
        gateway,
        r#"wasmgate_rollout_promotions_total{handler="version"}"#,
    )
    .await
        + metric(
            gateway,
            r#"wasmgate_rollout_rollbacks_total{handler="version"}"#,
        )
        .await
}

/// What a load loop saw.
#[derive(Debug, Default, Clone)]
struct Seen {
    v1: u64,
    v2: u64,
    flaky_ok: u64,
    failed: u64,
    other: u64,
}

impl Seen {
    fn total(&self) -> u64 {
        self.v1 + self.v2 + self.flaky_ok + self.failed + self.other
    }

    fn count(&mut self, status: StatusCode, body: &str) {
        match (status.as_u16(), body) {
            (200, "v1\n") => self.v1 += 1,
            (200, "v2\n") => self.v2 += 1,
            (200, "flaky\n") => self.flaky_ok += 1,
            (s, _) if s >= 500 => self.failed += 1,
            _ => self.other += 1,
        }
    }
}

/// `clients` keep-alive connections sending `GET /version` until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Seen>>,
}

impl Load {
    fn start(gateway: &TestGateway, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let (addr, stop) = (gateway.http(), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut seen = Seen::default();
                    let mut client = Client::http1(addr).await;
                    while !stop.load(Ordering::Relaxed) {
                        let request = client.request("GET", "/version").body(client::empty());
                        match client.send(request.expect("valid")).await {
                            Ok(reply) => seen.count(reply.status, &reply.text()),
                            // A transport error is a failed request too.
                            Err(_) => {
                                seen.failed += 1;
                                client = Client::http1(addr).await;
                            }
                        }
                    }
                    seen
                })
            })
            .collect();
        Self { stop, tasks }
    }

    async fn stop(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Seen::default();
        for task in self.tasks {
            let seen = task.await.expect("load task");
            total.v1 += seen.v1;
            total.v2 += seen.v2;
            total.flaky_ok += seen.flaky_ok;
            total.failed += seen.failed;
            total.other += seen.other;
        }
        total
    }
}

/// The audit log's lines, each parsed as JSON.
fn audit(gateway: &TestGateway) -> Vec<Value> {
    let text = std::fs::read_to_string(gateway.dir().join("state/wasmgate/audit.log"))
        .expect("the audit log exists");
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

fn events(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .filter_map(|line| line["event"].as_str())
        .collect()
}

async fn versions_served(gateway: &TestGateway, requests: usize, headers: &[(&str, &str)]) -> Seen {
    let mut client = Client::http1(gateway.http()).await;
    let mut seen = Seen::default();
    for _ in 0..requests {
        let mut request = client.request("GET", "/version");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let reply = client
            .send(request.body(client::empty()).expect("valid"))
            .await
            .expect("reply");
        seen.count(reply.status, &reply.text());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_serves_its_weight_keeps_users_sticky_and_obeys_pins() {
    let policy =
        r#"split = { sticky = "cookie", pin_header = "x-variant", pin_cookie = "variant" }"#;
    let gateway = start(policy, &fixture("version-v1"), &[]);
    let answer = deploy(&gateway, "version-v2", "strategy=split&weight=10&name=b").await;
    assert_eq!(answer["strategy"], "split");

    // 10,000 requests without a cookie: each is a fresh draw.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let addr = gateway.http();
            tokio::spawn(async move {
                let mut client = Client::http1(addr).await;
                let mut seen = Seen::default();
                let mut cookies = 0;
                for _ in 0..1_250 {
                    let reply = client.get("/version").await;
                    cookies += usize::from(reply.headers.contains_key("set-cookie"));
                    seen.count(reply.status, &reply.text());
                }
                (seen, cookies)
            })
        })
        .collect();
    let (mut v2, mut total, mut cookies) = (0, 0, 0);
    for task in tasks {
        let (seen, set) = task.await.expect("task");
        v2 += seen.v2;
        total += seen.total();
        cookies += set;
        assert_eq!(seen.failed + seen.other, 0, "{seen:?}");
    }
    assert_eq!(total, 10_000);
    assert!(
        (800..=1_200).contains(&v2),
        "{v2} of 10000 from the 10% version"
    );
    assert_eq!(cookies, 10_000, "every cookieless request gets its bucket");

    // Sticky: a client keeps its version across 100 requests.
    let mut client = Client::http1(gateway.http()).await;
    for _ in 0..20 {
        let first = client.get("/version").await;
        let cookie = first.headers["set-cookie"]
            .to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("pair")
            .to_string();
        let kept = versions_served(&gateway, 100, &[("cookie", &cookie)]).await;
        let expected = first.text();
        let same = if expected == "v2\n" { kept.v2 } else { kept.v1 };
        assert_eq!(same, 100, "{cookie}: {kept:?}");
    }
    // The low buckets are the new version's, the rest stable's.
    let low = versions_served(&gateway, 100, &[("cookie", "wasmgate-bucket=5")]).await;
    assert_eq!(low.v2, 100);
    let high = versions_served(&gateway, 100, &[("cookie", "wasmgate-bucket=5000")]).await;
    assert_eq!(high.v1, 100);

    // A/B by rule: the header or cookie names the version.
    let pinned = versions_served(&gateway, 100, &[("x-variant", "b")]).await;
    assert_eq!(pinned.v2, 100, "{pinned:?}");
    let stable = versions_served(&gateway, 100, &[("x-variant", "stable")]).await;
    assert_eq!(stable.v1, 100, "{stable:?}");
    let by_cookie = versions_served(&gateway, 100, &[("cookie", "variant=b")]).await;
    assert_eq!(by_cookie.v2, 100, "{by_cookie:?}");

    let handler = status(&gateway).await;
    let shares: Vec<(String, f64)> = handler["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().expect("name").to_string(),
                v["weight_percent"].as_f64().expect("weight"),
            )
        })
        .collect();
    assert_eq!(
        shares,
        vec![("stable".to_string(), 90.0), ("b".to_string(), 10.0)]
    );
    let series = r#"wasmgate_rollout_weight_percent{handler="version",name="b","#;
    let scrape = Client::http1(gateway.admin())
        .await
        .get("/metrics")
        .await
        .text();
    assert!(
        scrape
            .lines()
            .any(|line| line.starts_with(series) && line.ends_with(" 10")),
        "{scrape}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_canary_from_a_file_drop_is_rolled_back_by_the_gateway() {
    let policy = r#"rollout = { strategy = "canary", steps = [10, 50], interval = "1s", max_failures = 2, min_requests = 10 }"#;
    let gateway = start(policy, &fixture("version-v1"), &[("FAIL_PERCENT", "33")]);
    let load = Load::start(&gateway, 4);
    install(
        &gateway.dir().join("handlers"),
        "version.wasm",
        &fixture("flaky"),
    );
    gateway.wait_for_log("rollout started");
    let started = Instant::now();
    gateway.wait_for_log("rolled back");
    let elapsed = started.elapsed();
    let seen = load.stop().await;
    // Two failed checks a second apart, then out at once: within
    // interval x max_failures + 1 s.
    assert!(
        elapsed < Duration::from_secs(3),
        "rolled back after {elapsed:?}"
    );
    // At 10% of the traffic, the canary can fail at most 10% of requests
    // (a third of its share: about 3%).
    assert!(seen.failed > 0, "the canary got no traffic: {seen:?}");
    assert!(seen.failed * 10 <= seen.total(), "{seen:?}");
    assert_eq!(seen.other, 0, "{seen:?}");
    println!("bad canary: {seen:?}, rolled back after {elapsed:?}");

    let after = versions_served(&gateway, 200, &[]).await;
    assert_eq!(after.v1, 200, "stable serves everything again: {after:?}");
    let handler = rollout_over(&gateway, Duration::from_secs(5), 0.0).await;
    assert_eq!(
        handler["versions"].as_array().map(Vec::len),
        Some(1),
        "{handler}"
    );
    // Counted just after the state that status shows changes.
    wasmgate_tests::wait_for_metric(
        &gateway,
        r#"wasmgate_rollout_rollbacks_total{handler="version"}"#,
        1.0,
    )
    .await;
    assert!(
        metric(
            &gateway,
            r#"wasmgate_rollout_failed_checks_total{handler="version"}"#
        )
        .await
            >= 2.0
    );

    let lines = audit(&gateway);
    let events = events(&lines);
    for expected in [
        "loaded",
        "rollout_started",
        "rollout_step",
        "rollout_check_failed",
        "rolled_back",
    ] {
        assert!(events.contains(&expected), "{expected} missing: {events:?}");
    }
    let rolled_back = lines
        .iter()
        .find(|line| line["event"] == "rolled_back")
        .expect("line");
    assert_eq!(rolled_back["actor"], "rollout controller");
    assert!(
        rolled_back["reason"]
            .as_str()
            .is_some_and(|r| r.contains("failed checks")),
        "{rolled_back}"
    );
    assert!(rolled_back["time"].as_str().is_some());

    // The same file stays out: a reload does not start it again.
    gateway.signal("HUP");
    gateway.wait_for_log("generation published cause=SIGHUP");
    // Nothing announces a rollout that does not start: give the controller
    // the time a start takes (well under this) before looking.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(status(&gateway).await["rollout"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_canary_is_promoted_step_by_step_without_a_failed_request() {
    let gateway = start("", &fixture("version-v1"), &[]);
    let load = Load::start(&gateway, 4);
    let answer = deploy(
        &gateway,
        "version-v2",
        "strategy=canary&steps=20,50&interval=500ms&min_requests=5",
    )
    .await;
    assert_eq!(answer["strategy"], "canary");
    let running = status(&gateway).await;
    assert_eq!(running["rollout"]["strategy"], "canary", "{running}");
    let handler = rollout_over(&gateway, Duration::from_secs(10), 0.0).await;
    let seen = load.stop().await;
    assert_eq!(seen.failed + seen.other, 0, "{seen:?}");
    assert!(seen.v1 > 0 && seen.v2 > 0, "{seen:?}");
    let versions = handler["versions"].as_array().expect("versions");
    assert_eq!(versions[0]["name"], "stable");
    assert_eq!(versions[0]["weight_percent"], 100.0);
    // The old version stays warm, at 0%, for a fast rollback.
    assert_eq!(versions[1]["name"], "previous", "{handler}");
    assert_eq!(versions_served(&gateway, 100, &[]).await.v2, 100);
    // Counted just after the state that status shows changes.
    wasmgate_tests::wait_for_metric(
        &gateway,
        r#"wasmgate_rollout_promotions_total{handler="version"}"#,
        1.0,
    )
    .await;
    let events = events(&audit(&gateway))
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    let steps = events.iter().filter(|e| *e == "rollout_step").count();
    assert_eq!(steps, 2, "{events:?}");
    assert!(events.contains(&"promoted".to_string()), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_switches_and_switches_back_under_load_and_a_failed_smoke_keeps_blue() {
    let gateway = start("", &fixture("version-v1"), &[]);
    let load = Load::start(&gateway, 4);
    deploy(
        &gateway,
        "version-v2",
        "strategy=blue-green&smoke=/version&keep_warm=1m",
    )
    .await;
    rollout_over(&gateway, Duration::from_secs(10), 0.0).await;
    assert_eq!(versions_served(&gateway, 50, &[]).await.v2, 50);
    let (code, back) = admin(&gateway, "POST", "/rollback/version", Vec::new()).await;
    assert_eq!(code, StatusCode::OK, "{back}");
    println!("switch back took {} ms", back["ms"]);
    assert_eq!(versions_served(&gateway, 50, &[]).await.v1, 50);
    let seen = load.stop().await;
    assert_eq!(seen.failed + seen.other, 0, "{seen:?}");

    // The trap fixture fails its smoke request: blue (v1) keeps serving.
    let ended = rollouts_ended(&gateway).await;
    deploy(&gateway, "trap", "strategy=blue-green&smoke=/version").await;
    rollout_over(&gateway, Duration::from_secs(10), ended).await;
    assert_eq!(versions_served(&gateway, 50, &[]).await.v1, 50);
    let lines = audit(&gateway);
    let smoke = lines
        .iter()
        .rev()
        .find(|line| line["event"] == "rolled_back")
        .expect("the failed smoke is in the audit log");
    assert!(
        smoke["reason"]
            .as_str()
            .is_some_and(|r| r.contains("smoke check")),
        "{smoke}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_signed_components_load_when_keys_are_trusted() {
    let work = tempfile::tempdir().expect("dir");
    let run = |args: &[&str]| run_cli(args, work.path());
    let keygen = run(&["keygen", "--out", "release"]);
    assert!(keygen.status.success(), "{keygen:?}");
    assert!(run(&["keygen", "--out", "other"]).status.success());
    assert!(
        !run(&["keygen", "--out", "release"]).status.success(),
        "never overwrites a key"
    );
    let copy = |name: &str, to: &str| {
        let path = work.path().join(to);
        std::fs::copy(fixture(name), &path).expect("copy");
        path
    };
    let v1 = copy("version-v1", "v1.wasm");
    let v2 = copy("version-v2", "v2.wasm");
    let v2_other = copy("version-v2", "v2-other.wasm");
    let unsigned = copy("version-v2", "v2-unsigned.wasm");
    for (file, key) in [
        (&v1, "release.key"),
        (&v2, "release.key"),
        (&v2_other, "other.key"),
    ] {
        wasmgate_tests::sign(file, key, work.path());
    }
    let verify = |file: &Path| {
        let out = run(&[
            "verify",
            file.to_str().expect("utf-8"),
            "--key",
            "release.pub",
        ]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = verify(&v2);
    assert!(ok && text.contains("signed by trusted key"), "{text}");
    let mut tampered = std::fs::read(&v2).expect("read");
    tampered[100] ^= 1;
    let tampered_path = work.path().join("v2-tampered.wasm");
    std::fs::write(&tampered_path, &tampered).expect("write");
    let (ok, text) = verify(&tampered_path);
    assert!(
        !ok && text.contains("does not match the contents (changed after signing)"),
        "{text}"
    );
    let (ok, text) = verify(&v2_other);
    assert!(!ok && text.contains("which is not a trusted key"), "{text}");
    let (ok, text) = verify(&unsigned);
    assert!(!ok && text.contains("not signed"), "{text}");

    let key = work.path().join("release.pub");
    let policy = "";
    let dir = prepared(&v1);
    let handlers = dir.path().join("handlers");
    let text = config(free_port(), policy).replace(
        "[[listener]]",
        &format!(
            "[deploy]\ntrusted_keys = [\"{}\"]\n\n[[listener]]",
            key.display()
        ),
    );
    let gateway = TestGateway::start_in(dir, &text);
    assert_eq!(versions_served(&gateway, 5, &[]).await.v1, 5);
    for (file, reason, label) in [
        (&unsigned, "not signed", "unsigned"),
        (&v2_other, "which is not a trusted key", "untrusted_key"),
        (
            &tampered_path,
            "does not match the contents",
            "bad_signature",
        ),
    ] {
        install(&handlers, "version.wasm", file);
        gateway.wait_for_log(reason);
        assert_eq!(
            versions_served(&gateway, 5, &[]).await.v1,
            5,
            "{label}: the old version serves"
        );
        let series =
            format!(r#"wasmgate_signature_refused_total{{handler="version",reason="{label}"}}"#);
        assert_eq!(metric(&gateway, &series).await, 1.0, "{label}");
    }
    install(&handlers, "version.wasm", &v2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while versions_served(&gateway, 1, &[]).await.v2 == 0 {
        assert!(Instant::now() < deadline, "the signed v2 never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused: Vec<Value> = audit(&gateway)
        .into_iter()
        .filter(|line| line["event"] == "signature_refused")
        .collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    // An upload is checked the same way.
    let bytes = std::fs::read(&unsigned).expect("read");
    let (code, body) = admin(
        &gateway,
        "POST",
        "/deploy/version?strategy=immediate",
        bytes,
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("not signed")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_canary_resumes_on_stable_and_the_cli_shows_versions() {
    let admin_port = free_port();
    let dir = prepared(&fixture("version-v1"));
    let text = config(admin_port, "");
    let gateway = TestGateway::start_in(dir, &text);
    let config_path = gateway.dir().join("wasmgate.toml");
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--config", config_path.to_str().expect("utf-8")]);
        run_cli(&all, gateway.dir())
    };
    let v2 = fixture("version-v2");
    let deployed = cli(&[
        "deploy",
        "version",
        v2.to_str().expect("utf-8"),
        "--canary",
        "50%",
        "--every",
        "1h",
    ]);
    assert!(deployed.status.success(), "{deployed:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let running = status(&gateway).await;
        if running["rollout"]["weight_percent"] == 50.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the canary never took 50%: {running}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A configuration reload keeps the rollout where it is.
    gateway.signal("HUP");
    gateway.wait_for_log("cause=SIGHUP");
    gateway.wait_for_log("generation published cause=SIGHUP");
    let reloaded = status(&gateway).await;
    assert_eq!(reloaded["rollout"]["weight_percent"], 50.0, "{reloaded}");
    assert_eq!(
        reloaded["versions"].as_array().map(Vec::len),
        Some(2),
        "{reloaded}"
    );
    let listed = cli(&["versions", "version"]);
    let listing: Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(
        listing["versions"].as_array().map(Vec::len),
        Some(2),
        "{listing}"
    );
    assert_eq!(listing["versions"][0]["source"], "deploy");
    assert_eq!(listing["versions"][0]["serving_as"], "canary");

    let dir = gateway.stop_keeping_dir();
    let gateway = TestGateway::start_in(dir, &text);
    let served = versions_served(&gateway, 100, &[]).await;
    assert_eq!(served.v1, 100, "never half-way: {served:?}");
    assert!(status(&gateway).await["rollout"].is_null());
    let lines = audit(&gateway);
    assert!(events(&lines).contains(&"rollout_started"));

    // A rollback to a version in the history, by hash.
    let sha = listing["versions"][0]["sha256"]
        .as_str()
        .expect("sha")
        .to_string();
    let rolled = run_cli(
        &[
            "rollback",
            "version",
            "--to",
            &sha[..12],
            "--config",
            config_path.to_str().expect("utf-8"),
        ],
        gateway.dir(),
    );
    assert!(rolled.status.success(), "{rolled:?}");
    assert_eq!(versions_served(&gateway, 20, &[]).await.v2, 20);
    let promoted = run_cli(
        &[
            "promote",
            "version",
            "--config",
            config_path.to_str().expect("utf-8"),
        ],
        gateway.dir(),
    );
    assert!(!promoted.status.success(), "nothing to promote");
    assert!(String::from_utf8_lossy(&promoted.stderr).contains("no rollout to promote"));
}
