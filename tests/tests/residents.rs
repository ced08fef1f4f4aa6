//! Resident components (`resident = true`): a program that publishes every
//! 100 ms is heard by a WebSocket client; one that traps or exits is
//! restarted with back-off, then marked failed in `/status`, metrics and
//! `/readyz`; a service keeps state that its callers share; a new version
//! takes over once ready.

use std::time::{Duration, Instant};

use futures::SinkExt as _;
use http::StatusCode;
use tokio_tungstenite::tungstenite::Message;
use wasmgate_tests::client::Client;
use wasmgate_tests::{TestGateway, metric, ws};

/// A gateway with an admin listener, the chat example's WebSocket handler
/// on `/ws` (topics in scope `demo`) and `rest`.
fn config(rest: &str) -> String {
    format!(
        "[[listener]]\naddr = \"127.0.0.1:0\"\n\n[admin]\naddr = \"127.0.0.1:0\"\n\n\
         [handler.room]\npath = \"{{handlers}}/chat.wasm\"\nworld = \"websocket\"\ntopic_scope = \"demo\"\n\n\
         [[route]]\npath = \"/ws\"\nhandler = \"room\"\n\n{rest}"
    )
}

/// The ticker fixture as a resident in scope `demo`, with `extra` keys.
fn ticker(extra: &str) -> String {
    format!(
        "[component.ticker]\npath = \"{{handlers}}/resident-ticker.wasm\"\nresident = true\n\
         topic_scope = \"demo\"\ncapabilities = [\"pubsub\", \"logging\", \"clocks\", \"env\"]\n\
         env = [\"TRAP_AFTER\", \"EXIT_AFTER\", \"SPIN_AFTER\"]\n{extra}"
    )
}

async fn admin_json(gateway: &TestGateway, path: &str) -> (StatusCode, serde_json::Value) {
    let reply = Client::http1(gateway.admin()).await.get(path).await;
    let json = serde_json::from_str(&reply.text()).expect("the admin API answers JSON");
    (reply.status, json)
}

/// The `/status` entry of the resident `name`.
async fn resident(gateway: &TestGateway, name: &str) -> serde_json::Value {
    let (_, status) = admin_json(gateway, "/status").await;
    status["residents"]
        .as_array()
        .and_then(|all| all.iter().find(|each| each["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no resident {name} in {status}"))
}

/// Polls `/status` (at most 20 s) until the resident's state is `state`.
async fn wait_for_state(gateway: &TestGateway, name: &str, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = resident(gateway, name).await;
        if seen["state"] == state {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never became {state}: {seen}\n{}",
            gateway.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The number in the next `tick N` the socket receives.
async fn next_tick<S>(socket: &mut tokio_tungstenite::WebSocketStream<S>) -> u64
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match ws::next(socket).await {
        Message::Text(text) => text
            .strip_prefix("tick ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a tick: {text}")),
        other => panic!("not a text message: {other:?}"),
    }
}

#[tokio::test]
async fn a_resident_program_publishes_to_websocket_clients_and_is_ready() {
    let gateway = TestGateway::start(&config(&ticker("required = true\n")));
    wait_for_state(&gateway, "ticker", "ready").await;
    let (status, ready) = admin_json(&gateway, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");

    let mut socket = ws::connect(&gateway, "/ws?room=ticks")
        .await
        .expect("upgrade");
    let first = next_tick(&mut socket).await;
    let started = Instant::now();
    for expected in first + 1..first + 5 {
        assert_eq!(next_tick(&mut socket).await, expected);
    }
    // Every 100 ms: four more ticks take about 400 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    // Its output is in the log, tagged with its name.
    gateway.wait_for_log(&format!("tick {first}"));
    assert_eq!(resident(&gateway, "ticker").await["restarts"], 0);
    assert_eq!(
        metric(
            &gateway,
            "wasmgate_resident_state{component=\"ticker\",state=\"ready\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn a_trapping_resident_restarts_with_back_off_then_fails_and_readyz_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let gateway = TestGateway::start_with_env(
        dir,
        &config(&ticker(
            "required = true\nrestart = { max = 3, within = \"60s\", backoff = \"50ms\" }\n",
        )),
        &[("TRAP_AFTER", "3")],
    );
    let failed = wait_for_state(&gateway, "ticker", "failed").await;
    assert_eq!(failed["restarts"], 3, "{failed}");
    let last_exit = failed["last_exit"].as_str().unwrap_or_default();
    assert!(last_exit.starts_with("trapped: "), "{failed}");

    // The state changes first, then the line says so; every line before
    // it in the log is there once it is.
    gateway.wait_for_log("marked failed");
    let log = gateway.log();
    // The guest's own panic message, the trap and the back-off doubling.
    assert!(log.contains("ticker gave up after 3 ticks"), "{log}");
    assert!(log.contains("unreachable"), "{log}");
    for delay in ["50ms", "100ms", "200ms"] {
        assert!(log.contains(&format!("restarting in {delay}")), "{log}");
    }
    assert!(log.contains("marked failed"), "{log}");
    // Four runs of three ticks: each started afresh from tick 1.
    assert_eq!(log.matches("tick 3").count(), 4, "{log}");

    let (status, ready) = admin_json(&gateway, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        ready["reasons"]
            .to_string()
            .contains("resident ticker is failed"),
        "{ready}"
    );
    for (series, value) in [
        (
            "wasmgate_resident_restarts_total{component=\"ticker\"}",
            3.0,
        ),
        (
            "wasmgate_resident_exits_total{component=\"ticker\",outcome=\"trap\"}",
            4.0,
        ),
        (
            "wasmgate_resident_state{component=\"ticker\",state=\"failed\"}",
            1.0,
        ),
        (
            "wasmgate_resident_state{component=\"ticker\",state=\"ready\"}",
            0.0,
        ),
    ] {
        assert_eq!(metric(&gateway, series).await, value, "{series}");
    }
    // The rest of the gateway serves on.
    let mut socket = ws::connect(&gateway, "/ws?room=other")
        .await
        .expect("upgrade");
    socket
        .send(Message::Text("still here".into()))
        .await
        .expect("send");
    assert_eq!(
        ws::next(&mut socket).await,
        Message::Text("still here".into())
    );
}

#[tokio::test]
async fn an_exiting_resident_logs_its_exit_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let gateway = TestGateway::start_with_env(
        dir,
        &config(&ticker(
            "restart = { max = 1, within = \"60s\", backoff = \"10ms\" }\n",
        )),
        &[("EXIT_AFTER", "2")],
    );
    let failed = wait_for_state(&gateway, "ticker", "failed").await;
    assert_eq!(failed["last_exit"], "exited with code 1", "{failed}");
    gateway.wait_for_log("marked failed");
    let log = gateway.log();
    assert!(log.contains("ticker exits after 2 ticks"), "{log}");
    assert!(
        log.contains("resident exited with code 1; restarting in 10ms"),
        "{log}"
    );
    // Not required: /readyz does not wait for it.
    assert_eq!(admin_json(&gateway, "/readyz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_resident_service_keeps_state_its_callers_share_and_restarts_after_a_trap() {
    let gateway = TestGateway::start(&config(
        "[component.tally]\npath = \"{handlers}/resident-tally.wasm\"\nresident = true\n\
         capabilities = [\"pubsub\", \"logging\"]\nrestart = { backoff = \"10ms\" }\n\n\
         [[route]]\npath = \"/add/{n}\"\ninvoke = \"tally.add\"\n\n\
         [[route]]\npath = \"/crash\"\ninvoke = \"tally.crash\"\n",
    ));
    wait_for_state(&gateway, "tally", "ready").await;
    // Calls from separate connections, one at a time and at once, all land
    // in the one instance.
    let mut client = Client::http1(gateway.http()).await;
    assert_eq!(client.get("/add/5").await.text(), "5");
    let adds = (0..8).map(|_| async {
        let mut client = Client::http1(gateway.http()).await;
        client.get("/add/1").await.status
    });
    for status in futures::future::join_all(adds).await {
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(client.get("/add/0").await.text(), "13");

    let crashed = client.get("/crash").await;
    assert_eq!(crashed.status, StatusCode::INTERNAL_SERVER_ERROR);
    let restarted = wait_for_state(&gateway, "tally", "ready").await;
    assert_eq!(restarted["restarts"], 1, "{restarted}");
    // A new instance: the total starts again.
    assert_eq!(client.get("/add/2").await.text(), "2");
    gateway.wait_for_log("asked to crash with a total of 13");
}

#[tokio::test]
async fn a_new_resident_version_takes_over_once_ready_with_no_gap() {
    let gateway = TestGateway::start(&config(&ticker("")));
    wait_for_state(&gateway, "ticker", "ready").await;
    let mut socket = ws::connect(&gateway, "/ws?room=ticks")
        .await
        .expect("upgrade");
    let mut last = next_tick(&mut socket).await;
    assert!(last < 100, "{last}");
    // A changed setting starts a new version of it.
    gateway.write_config(&config(&ticker(
        "restart = { max = 9, within = \"60s\", backoff = \"100ms\" }\n",
    )));
    gateway.signal("HUP");
    // The old version ticks on until the new one says READY; then only the
    // new one ticks, from 1, and never more than ~100 ms apart.
    let mut gap = Duration::ZERO;
    for _ in 0..100 {
        let before = Instant::now();
        let tick = next_tick(&mut socket).await;
        gap = gap.max(before.elapsed());
        if tick == 1 {
            break;
        }
        assert_eq!(
            tick,
            last + 1,
            "the old version stopped before the new one was ready"
        );
        last = tick;
    }
    assert!(last < 100, "no new version started:\n{}", gateway.log());
    let mut seen = Vec::new();
    for _ in 0..5 {
        let before = Instant::now();
        seen.push(next_tick(&mut socket).await);
        gap = gap.max(before.elapsed());
    }
    assert!(
        seen == [2, 3, 4, 5, 6] || seen == [last + 1, 2, 3, 4, 5],
        "the old version still ticks: {seen:?}"
    );
    assert!(gap < Duration::from_millis(400), "a gap of {gap:?}");
    gateway.wait_for_log("new resident version ready: stopping the previous one");
    assert_eq!(resident(&gateway, "ticker").await["state"], "ready");
}

#[tokio::test]
async fn a_resident_past_its_cpu_budget_per_second_is_restarted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let gateway = TestGateway::start_with_env(
        dir,
        &config(&ticker(
            "limits = { fuel = 20_000_000 }\n\
             restart = { max = 1, within = \"60s\", backoff = \"10ms\" }\n",
        )),
        &[("SPIN_AFTER", "2")],
    );
    let failed = wait_for_state(&gateway, "ticker", "failed").await;
    assert_eq!(
        failed["last_exit"], "used up its CPU budget of 20000000 fuel in one 1-second slice",
        "{failed}"
    );
    assert_eq!(
        metric(
            &gateway,
            "wasmgate_resident_exits_total{component=\"ticker\",outcome=\"out_of_fuel\"}"
        )
        .await,
        2.0
    );
}

/// The tally as a resident service (or not), imported by the wired-bench
/// handler, whose every request calls `translate` once.
fn tally_imported(resident: bool) -> String {
    format!(
        "[handler.bench]\npath = \"{{handlers}}/wired-bench.wasm\"\nimports = [\"tally\"]\n\n\
         [[route]]\npath = \"/bench\"\nhandler = \"bench\"\n\n\
         [component.tally]\npath = \"{{handlers}}/resident-tally.wasm\"\nresident = {resident}\n\
         capabilities = [\"pubsub\", \"logging\"]\n"
    )
}

#[tokio::test]
async fn handlers_importing_a_resident_service_share_its_state() {
    let gateway = TestGateway::start(&config(&tally_imported(true)));
    for expected in 1..=3 {
        // A new connection each time: a new handler instance each time.
        let reply = Client::http1(gateway.http())
            .await
            .get("/bench?calls=1")
            .await;
        assert_eq!(reply.text(), format!("Hello, World! #{expected}"));
    }
    // Not resident: each importing instance gets an instance of its own.
    let gateway = TestGateway::start(&config(&tally_imported(false)));
    for _ in 1..=3 {
        let reply = Client::http1(gateway.http())
            .await
            .get("/bench?calls=1")
            .await;
        assert_eq!(reply.text(), "Hello, World! #1");
    }
}

#[tokio::test]
async fn a_resident_bot_hears_a_chat_room_and_answers_in_it() {
    let gateway = TestGateway::start(
        &config(
            "[component.tally]\npath = \"{handlers}/resident-tally.wasm\"\nresident = true\n\
             capabilities = [\"pubsub\", \"logging\"]\ntopic_scope = \"channels\"\n\
             subscription = \"lobby\"\n\n\
             [[route]]\npath = \"/add/{n}\"\ninvoke = \"tally.add\"\n",
        )
        .replace("topic_scope = \"demo\"", "topic_scope = \"channels\""),
    );
    let mut client = Client::http1(gateway.http()).await;
    assert_eq!(client.get("/add/7").await.text(), "7");
    let mut socket = ws::connect(&gateway, "/ws?room=lobby")
        .await
        .expect("upgrade");
    socket
        .send(Message::Text("!total".into()))
        .await
        .expect("send");
    assert_eq!(ws::next(&mut socket).await, Message::Text("!total".into()));
    assert_eq!(
        ws::next(&mut socket).await,
        Message::Text("total is 7".into())
    );
    // It heard its own answer too, and let it be.
    gateway.wait_for_log("result=ignored");
}
