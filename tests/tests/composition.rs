//! Composition, as the greeter tutorial (examples/greeter) walks through it:
//! components wired by imports, configuration values, a capability granted
//! to one component only, interceptors; and what is refused at load.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use wasmgate_tests::client::Client;
use wasmgate_tests::{TestGateway, handlers_dir, install, run_cli, wait_for_metric};

/// A gateway config: one listener, `/greet` served by the handler
/// `greeter`, and `rest` (handlers and components).
fn config(rest: &str) -> String {
    format!(
        "[gateway]\nhandlers_dir = \"{{dir}}/handlers\"\n\n[[listener]]\naddr = \"127.0.0.1:0\"\n\n\
         [[route]]\npath = \"/greet\"\nhandler = \"greeter\"\n\n{rest}"
    )
}

/// The tutorial's configuration for `step` (`examples/greeter/STEP.toml`,
/// and its included files), in a fresh directory whose `components` are
/// this build's, listening on a free port.
fn example(step: &str) -> (tempfile::TempDir, String) {
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/greeter");
    let dir = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink(handlers_dir(), dir.path().join("components")).expect("symlink");
    let free = |text: String| text.replace("127.0.0.1:8080", "127.0.0.1:0");
    if let Ok(included) = std::fs::read_dir(source.join(step)) {
        std::fs::create_dir(dir.path().join(step)).expect("mkdir");
        for file in included.filter_map(Result::ok) {
            let text = std::fs::read_to_string(file.path()).expect("read");
            std::fs::write(dir.path().join(step).join(file.file_name()), free(text))
                .expect("write");
        }
    }
    let mut text =
        std::fs::read_to_string(source.join(format!("{step}.toml"))).expect("example config");
    if !text.contains("[[listener]]") {
        // TestGateway waits for as many listeners as the main file has
        // `[[listener]]` lines; step 7's are in an included file.
        text.push_str("\n# [[listener]] in an included file\n");
    }
    (dir, free(text))
}

fn start_example(step: &str) -> TestGateway {
    let (dir, config) = example(step);
    TestGateway::start_in(dir, &config)
}

async fn greet(gateway: &TestGateway) -> (StatusCode, String) {
    let reply = Client::http1(gateway.http()).await.get("/greet").await;
    (reply.status, reply.text())
}

/// Step 1: one self-contained component.
#[tokio::test]
async fn step_1_a_greeter_says_hello() {
    let gateway = TestGateway::start(&config(
        "[handler.greeter]\npath = \"{handlers}/greeter-plain.wasm\"\n",
    ));
    assert_eq!(
        greet(&gateway).await,
        (StatusCode::OK, "Hello, World!".into())
    );
}

/// Step 2: the translator is wired to the greeter's import; it needs (and
/// has) no capability at all.
#[tokio::test]
async fn step_2_a_translator_wired_to_the_greeter_says_aloha() {
    let gateway = start_example("step2");
    assert_eq!(
        greet(&gateway).await,
        (StatusCode::OK, "Aloha, World!".into())
    );
    wait_for_metric(
        &gateway,
        "wasmgate_component_calls_total{component=\"translator\",outcome=\"ok\"}",
        1.0,
    )
    .await;
}

/// Step 3: the greeter's locale comes from its configuration.
#[tokio::test]
async fn step_3_the_locale_comes_from_config() {
    let gateway = start_example("step3");
    assert_eq!(
        greet(&gateway).await,
        (StatusCode::OK, "Hola, World!".into())
    );
}

/// A translation API: `GET /translate?locale=L&text=T` answers the text
/// translated word by word (it knows more words than the local
/// translator), and counts its requests.
async fn translation_api() -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&asked);
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let query = request.uri().query().unwrap_or_default().to_string();
                    async move {
                        let value = |key: &str| {
                            url_decode(
                                query
                                    .split('&')
                                    .find_map(|pair| pair.strip_prefix(&format!("{key}=")))
                                    .unwrap_or_default(),
                            )
                        };
                        let words: &[(&str, &str)] = match value("locale").as_str() {
                            "es-ES" => &[("Hello", "Hola"), ("World", "Mundo")],
                            "de-DE" => &[("Hello", "Hallo"), ("World", "Welt")],
                            _ => &[],
                        };
                        let text = words
                            .iter()
                            .fold(value("text"), |text, (from, to)| text.replace(from, to));
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(text),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, asked)
}

fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && let Some(byte) = text
                .get(index + 1..index + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            index += 3;
            continue;
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Step 4: a translator that calls an external API, the one component
/// granted outgoing HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_4_a_translator_granted_outgoing_http_asks_an_api() {
    let (api, asked) = translation_api().await;
    let (dir, config) = example("step4");
    let gateway = TestGateway::start_with_env(
        dir,
        &config,
        &[("TRANSLATION_API", &format!("http://{api}"))],
    );
    assert_eq!(
        greet(&gateway).await,
        (StatusCode::OK, "Hola, Mundo!".into())
    );
    assert_eq!(asked.load(Ordering::SeqCst), 1);
}

/// Step 5: the logging advice is called around every call into the
/// translator, with the call's arguments and result.
#[tokio::test]
async fn step_5_an_interceptor_logs_around_every_call() {
    let gateway = start_example("step5");
    assert_eq!(
        greet(&gateway).await,
        (StatusCode::OK, "Hallo, Welt!".into())
    );
    gateway.wait_for_log(r#"Before translate(text: "Hello, World!", locale: "de-DE")"#);
    gateway.wait_for_log(r#"After translate -> "Hallo, Welt!""#);
    let log = gateway.log();
    let before = log.find("Before translate").expect("before");
    let after = log.find("After translate").expect("after");
    assert!(before < after, "{log}");
}

/// An interceptor that refuses a call: the call never happens, the
/// request fails (500), the refusal is logged and counted, and other
/// calls carry on.
#[tokio::test]
async fn an_interceptor_may_refuse_a_call() {
    let gateway = TestGateway::start(&config(
        "[handler.greeter]\npath = \"{handlers}/greeter.wasm\"\nimports = [\"translator\"]\n\n\
         [component.translator]\npath = \"{handlers}/translator.wasm\"\ninterceptors = [\"logger\"]\n\n\
         [component.logger]\npath = \"{handlers}/logger.wasm\"\ncapabilities = [\"logging\", \"config\"]\n\
         config.deny = \"Mallory\"\n",
    ));
    let mut client = Client::http1(gateway.http()).await;
    let refused = client.get("/greet?name=Mallory").await;
    assert_eq!(refused.status, StatusCode::INTERNAL_SERVER_ERROR);
    gateway.wait_for_log("interceptor `logger` refused translator.translate: translate may not be called with Mallory");
    let allowed = Client::http1(gateway.http())
        .await
        .get("/greet?name=Alice")
        .await;
    assert_eq!(
        (allowed.status, allowed.text()),
        (StatusCode::OK, "Aloha, Alice!".into())
    );
    wait_for_metric(
        &gateway,
        "wasmgate_component_calls_total{component=\"translator\",outcome=\"refused\"}",
        1.0,
    )
    .await;
}

/// Runs `wasmgate check` on `config` in a fresh directory.
fn check(config: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    wasmgate_tests::check_in(dir.path(), config)
}

#[test]
fn a_missing_import_is_refused_at_load_naming_the_interface() {
    let (code, stderr) = check(&config(
        "[handler.greeter]\npath = \"{handlers}/greeter.wasm\"\n",
    ));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("handler.greeter.path")
            && stderr.contains("imports `wasmgate:greeter/translate@0.1.0`, which no host capability provides and it lists no imports"),
        "{stderr}"
    );
}

#[test]
fn an_ungranted_capability_is_refused_at_load_by_name() {
    let (code, stderr) = check(&config(
        "[handler.greeter]\npath = \"{handlers}/greeter.wasm\"\nimports = [\"translator\"]\n\n\
         [component.translator]\npath = \"{handlers}/translator-api.wasm\"\ncapabilities = [\"config\"]\n\
         config.api = \"http://127.0.0.1:9\"\n",
    ));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("component.translator.path")
            && stderr.contains("imports `wasi:http/outgoing-handler@")
            && stderr.contains("which needs the `http` capability it was not granted"),
        "{stderr}"
    );
}

#[test]
fn a_type_mismatch_between_import_and_export_is_refused_at_load() {
    let (code, stderr) = check(&config(
        "[handler.greeter]\npath = \"{handlers}/greeter.wasm\"\nimports = [\"translator\"]\n\n\
         [component.translator]\npath = \"{handlers}/translator-mismatch.wasm\"\n",
    ));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("handler.greeter.path")
            && stderr.contains("imports `wasmgate:greeter/translate@0.1.0`, but its function `translate` does not match the one component `translator` exports: the importer passes 2 parameters, the export takes 1"),
        "{stderr}"
    );
}

#[test]
fn config_values_need_their_variables_and_checks_say_which() {
    let (code, stderr) = check(&config(
        "[handler.greeter]\npath = \"{handlers}/greeter.wasm\"\nimports = [\"translator\"]\n\
         config.locale = \"${process:env:WG_TEST_UNSET_LOCALE}\"\n\n\
         [component.translator]\npath = \"{handlers}/translator.wasm\"\nconfig.x = \"1\"\n\
         [component.spare]\npath = \"{handlers}/translator.wasm\"\nimports = [\"greeter\"]\n",
    ));
    assert_eq!(code, Some(2), "{stderr}");
    for expected in [
        "component.translator.config: needs the `config` capability",
        "component.spare.imports[0]: `greeter` is a [handler]; only a [component] can be imported",
    ] {
        assert!(stderr.contains(expected), "{expected}\n{stderr}");
    }
    // Past the config's own checks, loading reports the variable.
    let (code, stderr) = check(&config(
        "[handler.greeter]\npath = \"{handlers}/greeter.wasm\"\nimports = [\"translator\"]\n\
         config.locale = \"${process:env:WG_TEST_UNSET_LOCALE}\"\n\n\
         [component.translator]\npath = \"{handlers}/translator.wasm\"\n",
    ));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("config.locale needs the environment variable WG_TEST_UNSET_LOCALE"),
        "{stderr}"
    );
}

/// A new translator file swaps the greeter's wiring in the same
/// generation: under steady load, every request answers 200, first the old
/// greeting and then, for good, the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_the_translator_under_load_changes_the_greeting_with_no_failed_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let handlers = dir.path().join("handlers");
    std::fs::create_dir(&handlers).expect("handlers dir");
    install(
        &handlers,
        "translator.wasm",
        &handlers_dir().join("translator.wasm"),
    );
    let (api, _) = translation_api().await;
    let gateway = TestGateway::start_in(
        dir,
        &config(&format!(
            "[handler.greeter]\npath = \"{{handlers}}/greeter.wasm\"\nimports = [\"translator\"]\nconfig.locale = \"es-ES\"\n\n\
             [component.translator]\ncapabilities = [\"http\", \"config\", \"logging\"]\noutbound = [\"127.0.0.1:{port}\"]\n\
             allow_private = true\nconfig.api = \"http://127.0.0.1:{port}\"\n",
            port = api.port()
        )),
    );
    assert_eq!(
        greet(&gateway).await,
        (StatusCode::OK, "Hola, World!".into())
    );
    let stop = Arc::new(AtomicBool::new(false));
    let addr = gateway.http();
    let load = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut client = Client::http1(addr).await;
            while !stop.load(Ordering::SeqCst) {
                let reply = client.get("/greet").await;
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
                let text = reply.text();
                if seen.last() != Some(&text) {
                    seen.push(text);
                }
            }
            seen
        })
    };
    install(
        &handlers,
        "translator.wasm",
        &handlers_dir().join("translator-api.wasm"),
    );
    gateway.wait_for_log("wired again to a new version of a component it uses");
    // Requests after the swap was published meet the new translator.
    let mut after = Client::http1(gateway.http()).await;
    let mut swapped = false;
    for _ in 0..100 {
        if after.get("/greet").await.text() == "Hola, Mundo!" {
            swapped = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(swapped, "{}", gateway.log());
    stop.store(true, Ordering::SeqCst);
    let seen = load.await.expect("load");
    assert_eq!(
        seen,
        vec!["Hola, World!".to_string(), "Hola, Mundo!".to_string()]
    );
}

/// A WebSocket route whose guest sees the channels as its topics.
const WATCHER: &str = "[handler.ws-echo]\npath = \"components/ws-echo.wasm\"\nworld = \"websocket\"\n\
                       topic_scope = \"channels\"\n\n[[route]]\npath = \"/watch\"\nhandler = \"ws-echo\"\n";

/// Step 6: a route publishes request bodies to a channel; the greeter,
/// subscribed, is invoked once per message and its result logged; a
/// WebSocket client watches the same channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_6_a_channel_invokes_its_subscriber_per_message() {
    use futures::SinkExt as _;
    use tokio_tungstenite::tungstenite::Message;
    let (dir, config) = example("step6");
    // The same channel from a route that takes gzip bodies.
    let packed = "[[route]]\npath = \"/names.gz\"\npublish = \"names\"\ndecompress = true\n";
    let gateway = TestGateway::start_in(dir, &format!("{config}\n{WATCHER}\n{packed}"));
    let mut watcher = wasmgate_tests::ws::connect(&gateway, "/watch")
        .await
        .expect("websocket");
    watcher
        .send(Message::Text("subscribe:names".into()))
        .await
        .expect("send");
    assert_eq!(
        wasmgate_tests::ws::next(&mut watcher).await,
        Message::Text("subscribed to names".into())
    );
    let mut client = Client::http1(gateway.http()).await;
    for name in ["Ana", "Kai"] {
        let request = client
            .request("POST", "/names")
            .body(wasmgate_tests::client::full(name))
            .expect("request");
        let reply = client.send(request).await.expect("response");
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
        let id: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON");
        assert!(id["id"].as_str().is_some_and(|id| !id.is_empty()), "{id}");
    }
    gateway.wait_for_log("invocation complete component=greeter function=greet result=Aloha, Ana!");
    gateway.wait_for_log("invocation complete component=greeter function=greet result=Aloha, Kai!");
    let request = client
        .request("POST", "/names.gz")
        .header(http::header::CONTENT_ENCODING, "gzip")
        .body(wasmgate_tests::client::full(wasmgate_tests::gzip(b"Zoe")))
        .expect("request");
    let reply = client.send(request).await.expect("response");
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    gateway.wait_for_log("invocation complete component=greeter function=greet result=Aloha, Zoe!");
    let log = gateway.log();
    assert!(
        log.find("result=Aloha, Ana!") < log.find("result=Aloha, Kai!"),
        "messages are handled in order:\n{log}"
    );
    assert_eq!(
        wasmgate_tests::ws::next(&mut watcher).await,
        Message::Text("names: Ana".into())
    );
    wait_for_metric(
        &gateway,
        "wasmgate_channel_messages_total{channel=\"names\",outcome=\"invoked\"}",
        3.0,
    )
    .await;
}

/// An invocation route: path segments are the function's named arguments,
/// its result the body; a missing function is refused at load.
#[tokio::test]
async fn an_invocation_route_calls_a_components_function_with_path_arguments() {
    let (dir, config) = example("step6");
    let gateway = TestGateway::start_in(
        dir,
        &format!("{config}\n[component.greeter.config]\nlocale = \"de-DE\"\n"),
    );
    let reply = Client::http1(gateway.http())
        .await
        .get("/greet/Welt%20und%20Ana")
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "Hallo, Welt und Ana!");
    let (code, stderr) = check(
        "[gateway]\nhandlers_dir = \"{handlers}\"\nauto_routes = false\n\n[[listener]]\naddr = \"127.0.0.1:0\"\n\n\
         [[route]]\npath = \"/x/{name}\"\ninvoke = \"translator.greet\"\n\n\
         [component.translator]\npath = \"{handlers}/translator.wasm\"\n",
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("route[0].invoke: component `translator` exports no function `greet`"),
        "{stderr}"
    );
}

/// Step 7: the configuration split into domain, environment and operations
/// files; the locale comes from the environment, with a default; a change
/// to an included file reloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_7_a_split_config_takes_values_from_the_environment() {
    let gateway = start_example("step7");
    assert_eq!(
        greet(&gateway).await,
        (StatusCode::OK, "Hello, World!".into())
    );
    let (dir, config) = example("step7");
    let german = TestGateway::start_with_env(dir, &config, &[("LOCALE", "de-DE")]);
    assert_eq!(
        greet(&german).await,
        (StatusCode::OK, "Hallo, Welt!".into())
    );
    // The environment team changes its file: the gateway reloads.
    std::fs::write(
        german.dir().join("step7/env.toml"),
        "[handler.greeter.config]\nlocale = \"es-ES\"\n",
    )
    .expect("write");
    german.wait_for_generation(2);
    assert_eq!(
        greet(&german).await,
        (StatusCode::OK, "Hola, World!".into())
    );
}

/// The same key in two included files: `wasmgate check` names both files.
#[test]
fn the_same_key_in_two_included_files_is_refused_naming_both() {
    let (dir, _) = example("step7");
    std::fs::write(
        dir.path().join("step7/ops.toml"),
        "[gateway]\nhandlers_dir = \"components\"\n\n[[listener]]\naddr = \"127.0.0.1:0\"\n\n\
         [handler.greeter.config]\nlocale = \"fr-FR\"\n",
    )
    .expect("write");
    let main = dir.path().join("step7.toml");
    std::fs::write(
        &main,
        "include = [\"step7/domain.toml\", \"step7/env.toml\", \"step7/ops.toml\"]\n",
    )
    .expect("write");
    let output = run_cli(
        &["check", "--config", &main.display().to_string()],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let ops = dir.path().join("step7/ops.toml").display().to_string();
    let env = dir.path().join("step7/env.toml").display().to_string();
    assert!(
        stderr.contains(&format!(
            "{ops}: handler.greeter.config.locale: is also set in {env}: a key belongs to one file"
        )),
        "{stderr}"
    );
}

/// Components are signed like handlers: with trusted keys, an unsigned new
/// translator is refused and the signed one keeps serving its dependents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_needs_a_trusted_signature_like_a_handler() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |args: &[&str]| run_cli(args, dir.path());
    assert!(run(&["keygen", "--out", "release"]).status.success());
    let handlers = dir.path().join("handlers");
    std::fs::create_dir(&handlers).expect("handlers dir");
    let signed = dir.path().join("translator-signed.wasm");
    std::fs::copy(handlers_dir().join("translator.wasm"), &signed).expect("copy");
    wasmgate_tests::sign(&signed, "release.key", dir.path());
    install(&handlers, "translator.wasm", &signed);
    let key = dir.path().join("release.pub");
    let gateway = TestGateway::start_in(
        dir,
        &config(&format!(
            "[handler.greeter]\npath = \"{{handlers}}/greeter.wasm\"\nimports = [\"translator\"]\n\n\
             [component.translator]\ntrusted_keys = [\"{}\"]\n",
            key.display()
        )),
    );
    assert_eq!(
        greet(&gateway).await,
        (StatusCode::OK, "Aloha, World!".into())
    );
    install(
        &handlers,
        "translator.wasm",
        &handlers_dir().join("translator-api.wasm"),
    );
    gateway.wait_for_log("not signed");
    assert_eq!(
        greet(&gateway).await,
        (StatusCode::OK, "Aloha, World!".into())
    );
}
