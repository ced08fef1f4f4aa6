//! A real headless Chromium driven over the Chrome DevTools Protocol, for
//! the tests that need a browser (the chat demo page).
//!
//! The protocol is JSON messages over a WebSocket; the handful of calls the
//! tests make (open a tab, navigate, type, evaluate) are sent with the
//! tokio-tungstenite client the suite already uses, rather than through a
//! generated binding of the whole protocol.
//!
//! Invariant: the browser listens on a port it picks itself
//! (`--remote-debugging-port=0`, read back from its stderr), keeps its profile
//! in a temporary directory, and is killed when the [`Browser`] is dropped.

use std::process::Stdio;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// How long any one protocol call or awaited event may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A running headless browser.
pub struct Browser {
    _child: Child,
    _profile: tempfile::TempDir,
    socket: WebSocketStream<TcpStream>,
    next_id: u64,
    /// Events read while waiting for a call's answer, oldest first.
    events: Vec<Value>,
}

/// One tab, attached to by its session.
pub struct Tab {
    session: String,
}

impl Browser {
    /// Starts `chromium` (or `$WASMGATE_CHROMIUM`) headless and connects to it.
    pub async fn launch() -> Self {
        let program = std::env::var("WASMGATE_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(&program)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-extensions",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start `{program}` ({error}); scripts/test.sh installs Debian's chromium"
                )
            });
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let url = tokio::time::timeout(CALL_TIMEOUT, async {
            while let Some(line) = lines.next_line().await.expect("browser stderr") {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.trim().to_string();
                }
            }
            panic!("the browser exited before it listened");
        })
        .await
        .expect("the browser listens in time");
        // Keep draining stderr so the browser never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let uri: http::Uri = url.parse().expect("a ws:// URL");
        let authority = uri.authority().expect("host and port").to_string();
        let tcp = TcpStream::connect(authority).await.expect("DevTools port");
        let (socket, _) = tokio_tungstenite::client_async(url, tcp)
            .await
            .expect("DevTools connection");
        Self {
            _child: child,
            _profile: profile,
            socket,
            next_id: 1,
            events: Vec::new(),
        }
    }

    /// Opens a tab on `url` and returns once its page has loaded.
    pub async fn open(&mut self, url: &str) -> Tab {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let target_id = target["targetId"].clone();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await;
        let tab = Tab {
            session: attached["sessionId"]
                .as_str()
                .expect("a session id")
                .to_string(),
        };
        self.call(Some(&tab), "Page.enable", json!({})).await;
        self.call(Some(&tab), "Page.navigate", json!({ "url": url }))
            .await;
        self.event(&tab, "Page.loadEventFired").await;
        tab
    }

    /// Evaluates `expression` in `tab`, awaiting it if it is a promise, and
    /// returns its value; a thrown exception fails the test.
    pub async fn eval(&mut self, tab: &Tab, expression: &str) -> Value {
        let result = self
            .call(
                Some(tab),
                "Runtime.evaluate",
                json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("`{expression}` threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Types `text` into the focused element of `tab`, as a keyboard would.
    pub async fn type_text(&mut self, tab: &Tab, text: &str) {
        self.call(Some(tab), "Input.insertText", json!({ "text": text }))
            .await;
    }

    async fn call(&mut self, tab: Option<&Tab>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(tab) = tab {
            message["sessionId"] = json!(tab.session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .expect("DevTools send");
        tokio::time::timeout(CALL_TIMEOUT, async {
            loop {
                let message = self.receive().await;
                if message["id"] == json!(id) {
                    if let Some(error) = message.get("error") {
                        panic!("{method} failed: {error}");
                    }
                    return message["result"].clone();
                }
                self.events.push(message);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{method} answered in time"))
    }

    /// Waits for the event `method` in `tab` (one that already arrived counts).
    async fn event(&mut self, tab: &Tab, method: &str) {
        let matches =
            |event: &Value| event["method"] == method && event["sessionId"] == tab.session;
        if let Some(index) = self.events.iter().position(matches) {
            self.events.remove(index);
            return;
        }
        tokio::time::timeout(CALL_TIMEOUT, async {
            loop {
                let message = self.receive().await;
                if matches(&message) {
                    return;
                }
                self.events.push(message);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{method} in time"));
    }

    async fn receive(&mut self) -> Value {
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(&text).expect("DevTools sends JSON");
                }
                Some(Ok(_)) => {}
                other => panic!("DevTools connection ended: {other:?}"),
            }
        }
    }
}
