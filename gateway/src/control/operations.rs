//! The admin API's deployment endpoints: `POST /deploy/NAME` (the body is
//! the component), `POST /promote/NAME`, `POST /rollback/NAME[?to=HASH]`,
//! `GET /versions/NAME`. Each parses its request, asks the rollout
//! controller, and answers JSON.
//!
//! Invariant: every parameter is checked here with the same parsers the
//! config file uses, so the API accepts exactly what the config does; an
//! upload is bounded in size ([`MAX_COMPONENT_SIZE`]) and time
//! ([`UPLOAD_LIMIT`]) before any of it is kept.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::app::App;
use crate::config::HandlerName;
use crate::config::deploy::{
    BlueGreenPlan, CanaryPlan, RolloutPolicy, check_version_name, parse_share, parse_steps,
};
use crate::control::rollout::{Controller, Deploy, Order, Refusal};
use crate::guest::ComponentFile;
use crate::guest::component::MAX_COMPONENT_SIZE;

/// How long an upload may take.
pub const UPLOAD_LIMIT: Duration = Duration::from_secs(120);

/// Whether `path` is one of these endpoints.
pub fn is_operation(path: &str) -> bool {
    operation(path).is_some()
}

fn operation(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (verb, name) = rest.split_once('/')?;
    matches!(verb, "deploy" | "promote" | "rollback" | "versions").then_some((verb, name))
}

/// Answers an operation request from `peer`.
pub async fn answer(
    app: &Arc<App>,
    controller: &Arc<Controller>,
    peer: std::net::SocketAddr,
    request: http::Request<Incoming>,
) -> (StatusCode, Value) {
    let path = request.uri().path().to_string();
    let Some((verb, name)) = operation(&path) else {
        return (StatusCode::NOT_FOUND, json!({ "error": "not found" }));
    };
    let Some(handler) = HandlerName::parse(name) else {
        return (
            StatusCode::NOT_FOUND,
            json!({ "error": format!("`{name}` is not a handler name") }),
        );
    };
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .map(|query| {
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let actor = format!("admin API from {peer}");
    let method = request.method().clone();
    let result = match (verb, method) {
        ("versions", Method::GET) => return (StatusCode::OK, versions(app, &handler)),
        ("deploy", Method::POST) => match order(app, &handler, &query) {
            Ok((order, name)) => match upload(request).await {
                Ok(file) => {
                    let deploy = Deploy {
                        handler,
                        file,
                        name,
                        order,
                        actor,
                        source: "deploy",
                    };
                    controller.deploy(deploy).await
                }
                Err(answer) => return answer,
            },
            Err(reason) => Err(Refusal::Invalid(reason)),
        },
        ("promote", Method::POST) => controller.promote(&handler, &actor).await,
        ("rollback", Method::POST) => {
            let to = query.get("to").map(String::as_str);
            controller.rollback(&handler, to, &actor).await
        }
        ("versions", _) => {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({ "error": "use GET" }),
            );
        }
        _ => {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({ "error": "use POST" }),
            );
        }
    };
    match result {
        Ok(body) => (StatusCode::OK, body),
        Err(refusal) => {
            let status = match refusal {
                Refusal::UnknownHandler(_) => StatusCode::NOT_FOUND,
                Refusal::Invalid(_) => StatusCode::CONFLICT,
                Refusal::Failed(_) => StatusCode::UNPROCESSABLE_ENTITY,
                Refusal::Draining | Refusal::Unreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            (status, json!({ "error": refusal.to_string() }))
        }
    }
}

/// The rollout a deploy asks for: `strategy` (else the handler's
/// configured policy) and its parameters.
fn order(
    app: &App,
    handler: &HandlerName,
    query: &HashMap<String, String>,
) -> Result<(Order, Option<String>), String> {
    let known = [
        "strategy",
        "steps",
        "interval",
        "max_failures",
        "min_requests",
        "max_error_rate",
        "max_p99",
        "smoke",
        "keep_warm",
        "weight",
        "name",
    ];
    if let Some(unknown) = query.keys().find(|key| !known.contains(&key.as_str())) {
        return Err(format!("unknown parameter `{unknown}`"));
    }
    let name = query.get("name").cloned();
    if let Some(name) = &name {
        check_version_name(name)?;
    }
    let duration = |key: &str| -> Result<Option<Duration>, String> {
        query
            .get(key)
            .map(|text| {
                humantime::parse_duration(text)
                    .map_err(|error| format!("{key}: `{text}` is not a duration: {error}"))
            })
            .transpose()
    };
    let number = |key: &str| -> Result<Option<u64>, String> {
        query
            .get(key)
            .map(|text| {
                text.parse::<u64>()
                    .map_err(|_| format!("{key}: `{text}` is not a number"))
            })
            .transpose()
    };
    let configured = app
        .live
        .load()
        .config
        .handler_deploy
        .get(handler)
        .map(|policy| policy.rollout.clone())
        .unwrap_or_default();
    let strategy = query
        .get("strategy")
        .map(String::as_str)
        .unwrap_or(match &configured {
            RolloutPolicy::Immediate => "immediate",
            RolloutPolicy::Canary(_) => "canary",
            RolloutPolicy::BlueGreen(_) => "blue-green",
        });
    let order = match strategy {
        "immediate" => Order::Immediate,
        "split" => {
            let weight = query
                .get("weight")
                .ok_or("a split needs `weight`")
                .map_err(str::to_string)
                .and_then(|text| parse_share(text).map_err(|e| format!("weight: {e}")))?;
            Order::Split(weight)
        }
        "canary" => {
            let mut plan = match configured {
                RolloutPolicy::Canary(plan) => plan,
                _ => CanaryPlan::default(),
            };
            if let Some(steps) = query.get("steps") {
                plan.steps = parse_steps(steps.split(',')).map_err(|e| format!("steps: {e}"))?;
            }
            if let Some(interval) = duration("interval")?.filter(|d| !d.is_zero()) {
                plan.interval = interval;
            }
            if let Some(failures) = number("max_failures")? {
                plan.max_failures = u32::try_from(failures.clamp(1, 1_000)).unwrap_or(1);
            }
            if let Some(minimum) = number("min_requests")? {
                plan.min_requests = minimum.min(1_000_000);
            }
            if let Some(rate) = query.get("max_error_rate") {
                plan.max_error_rate =
                    f64::from(parse_share(rate).map_err(|e| format!("max_error_rate: {e}"))?)
                        / 10_000.0;
            }
            if let Some(p99) = duration("max_p99")? {
                plan.max_p99 = p99;
            }
            Order::Canary(plan)
        }
        "blue-green" => {
            let mut plan = match configured {
                RolloutPolicy::BlueGreen(plan) => plan,
                _ => BlueGreenPlan::default(),
            };
            if let Some(smoke) = query.get("smoke") {
                if !smoke.starts_with('/') {
                    return Err(format!("smoke: `{smoke}` is not a path"));
                }
                plan.smoke = Some(smoke.clone());
            }
            if let Some(keep_warm) = duration("keep_warm")? {
                plan.keep_warm = keep_warm;
            }
            Order::BlueGreen(plan)
        }
        other => {
            return Err(format!(
                "`{other}` is not a strategy (immediate, canary, blue-green, split)"
            ));
        }
    };
    Ok((order, name))
}

/// The uploaded component, whole, within the size and time limits.
async fn upload(request: http::Request<Incoming>) -> Result<ComponentFile, (StatusCode, Value)> {
    let limited = http_body_util::Limited::new(
        request.into_body(),
        usize::try_from(MAX_COMPONENT_SIZE).unwrap_or(usize::MAX),
    );
    let bytes = match tokio::time::timeout(UPLOAD_LIMIT, limited.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) => {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({ "error": format!("the upload failed: {error}") }),
            ));
        }
        Err(_) => {
            return Err((
                StatusCode::REQUEST_TIMEOUT,
                json!({ "error": format!("the upload took longer than {UPLOAD_LIMIT:?}") }),
            ));
        }
    };
    if bytes.is_empty() {
        return Err((
            StatusCode::BAD_REQUEST,
            json!({ "error": "send the component as the request body" }),
        ));
    }
    ComponentFile::from_bytes(bytes.to_vec()).map_err(|error| {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({ "error": error.to_string() }),
        )
    })
}

/// `handler`'s history: every version kept, which serve now and how much.
fn versions(app: &App, handler: &HandlerName) -> Value {
    let history = app.deployments.store.history(handler);
    let snapshot = app.live.load();
    let serving: HashMap<String, (String, u32)> = snapshot
        .handlers
        .get(handler)
        .map(|deployed| {
            deployed
                .versions
                .iter()
                .map(|v| {
                    let sha = v.handler.hash().as_str().to_string();
                    (sha, (v.name.to_string(), v.weight))
                })
                .collect()
        })
        .unwrap_or_default();
    let versions: Vec<Value> = history
        .versions
        .iter()
        .rev()
        .map(|version| {
            let active = serving.get(&version.sha256);
            json!({
                "sha256": version.sha256,
                "arrived": version.arrived,
                "source": version.source,
                "size": version.size,
                "signed_by": version.signed_by,
                "serving_as": active.map(|(name, _)| name.clone()),
                "weight_percent": active.map(|(_, weight)| f64::from(*weight) / 100.0),
            })
        })
        .collect();
    json!({
        "handler": handler.as_str(),
        "stable": history.stable,
        "previous": history.previous,
        "persistent": app.deployments.store.is_persistent(),
        "versions": versions,
    })
}
