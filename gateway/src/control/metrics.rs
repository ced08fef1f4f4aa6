//! Prometheus metrics: every collector the gateway updates, registered in
//! one registry that the caller owns (no process-global registry).
//!
//! Invariant: label values are bounded by the configuration, never by
//! traffic: route ids (`route[N]`, `auto:NAME`), handler names, listener
//! addresses, the request method folded to a fixed set, the status class,
//! and fixed outcome words. A raw path or host never becomes a label.

use std::time::Duration;

use http::Method;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// Request and instantiation latencies: 100 µs to 60 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];
/// Compile times: 10 ms to 2 min.
const COMPILE_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];

/// The gateway's collectors.
pub struct Metrics {
    registry: Registry,
    /// Requests by route, handler, method and status class.
    pub requests: IntCounterVec,
    /// Time to the response head (streamed bodies continue after it).
    pub request_duration: HistogramVec,
    /// Requests being served.
    pub in_flight: IntGauge,
    /// Responses that did not end complete, by handler and outcome: aborted
    /// (the guest failed after the head was sent), cancelled (the client
    /// went away first).
    pub responses_cut_short: IntCounterVec,
    /// Open client connections by listener and protocol.
    pub connections: IntGaugeVec,
    /// TLS handshakes that failed or timed out, by listener.
    pub tls_handshake_failures: IntCounterVec,
    /// Connections refused for a missing or bad PROXY header, by listener.
    pub proxy_header_failures: IntCounterVec,
    /// How guest runs ended, by handler: ok, trap, timeout, out_of_memory,
    /// refused, cancelled (the client left first).
    pub guest_outcomes: IntCounterVec,
    /// Time to instantiate a guest, by handler.
    pub instantiation: HistogramVec,
    /// Instances ready in each handler's pool.
    pub pool_ready: IntGaugeVec,
    /// Instances that served a request waiting for the next (`reuse`), by handler.
    pub pool_reused: IntGaugeVec,
    /// Component loads by handler and outcome (loaded, failed).
    pub swaps: IntCounterVec,
    /// Time to compile a component (cache misses only), by handler.
    pub compile_duration: HistogramVec,
    /// Open WebSocket connections and SSE streams, by handler and kind.
    pub streams_open: IntGaugeVec,
    /// Stream messages by handler and direction (in, out, refused).
    pub stream_messages: IntCounterVec,
    /// Guest stdout/stderr lines not logged (over the handler's log rate).
    pub guest_log_dropped: IntCounterVec,
    /// Calls into a component's exports through wired imports, by
    /// component and outcome (ok, failed, refused by an interceptor).
    pub component_calls: IntCounterVec,
    /// Channel messages by channel and outcome (published, invoked,
    /// failed, dropped).
    pub channel_messages: IntCounterVec,
    /// Ends of resident components' runs, by component and how (exit,
    /// trap, out_of_fuel).
    pub resident_exits: IntCounterVec,
    /// Restarts of resident components.
    pub resident_restarts: IntCounterVec,
    /// Each resident's state: 1 for the state it is in (starting, ready,
    /// restarting, failed), 0 for the others.
    pub resident_state: IntGaugeVec,
    /// ACME orders by domain and outcome (issued, failed).
    pub acme_orders: IntCounterVec,
    /// When each ACME-managed certificate expires (Unix seconds), by domain.
    pub certificate_expiry: IntGaugeVec,
    /// Requests by handler, version (short hash, serving versions only)
    /// and outcome (ok, error = 5xx): what a canary is judged on.
    pub version_requests: IntCounterVec,
    /// Time to the response head, by handler and version.
    pub version_duration: HistogramVec,
    /// Each serving version's share of its handler's traffic, in percent.
    pub rollout_weight: GaugeVec,
    /// The step a canary is on (1-based; 0: no canary), by handler.
    pub rollout_step: IntGaugeVec,
    /// Canary checks that failed, by handler.
    pub rollout_failed_checks: IntCounterVec,
    /// Rollouts pulled back (automatically or by an operator), by handler.
    pub rollout_rollbacks: IntCounterVec,
    /// Candidates promoted to stable, by handler.
    pub rollout_promotions: IntCounterVec,
    /// Components refused for their signature, by handler and reason.
    pub signature_refused: IntCounterVec,
    /// Audit log lines that could not be written.
    pub audit_write_failures: IntCounter,
    /// 1 while this node is connected to the cluster's NATS, 0 while it is
    /// not (absent without `[cluster]`).
    pub cluster_connected: IntGaugeVec,
    /// Pub/sub messages between nodes, by direction (out, in) and outcome
    /// (sent, dropped, delivered, refused).
    pub cluster_messages: IntCounterVec,
    /// Shared deployment decisions, by outcome: shared (this node's, written
    /// to NATS), applied, unchanged, failed (another node's, here).
    pub cluster_decisions: IntCounterVec,
}

impl Metrics {
    /// Creates the collectors and registers them (and `build_info`) in `registry`.
    pub fn new(registry: Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let counter = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(counter.clone()))?;
            Ok::<_, prometheus::Error>(counter)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let gauge = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(gauge.clone()))?;
            Ok::<_, prometheus::Error>(gauge)
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            let histogram = HistogramVec::new(opts, labels)?;
            registry.register(Box::new(histogram.clone()))?;
            Ok::<_, prometheus::Error>(histogram)
        };
        let in_flight = IntGauge::new("wasmgate_requests_in_flight", "Requests being served.")?;
        registry.register(Box::new(in_flight.clone()))?;
        let build_info = Gauge::with_opts(
            Opts::new(
                "wasmgate_build_info",
                "Always 1; the labels say which build runs.",
            )
            .const_label("version", env!("CARGO_PKG_VERSION"))
            .const_label("wasmtime", "48"),
        )?;
        build_info.set(1.0);
        registry.register(Box::new(build_info))?;
        Ok(Self {
            requests: counter(
                "wasmgate_requests_total",
                "Requests answered, by route, handler, method and status class.",
                &["route", "handler", "method", "status"],
            )?,
            request_duration: histogram(
                "wasmgate_request_duration_seconds",
                "Time from a request's arrival to its response head.",
                &["route", "handler"],
                LATENCY_BUCKETS,
            )?,
            in_flight,
            responses_cut_short: counter(
                "wasmgate_responses_cut_short_total",
                "Responses that did not end complete: aborted (the guest failed after the head), cancelled (the client left first).",
                &["handler", "outcome"],
            )?,
            connections: gauge(
                "wasmgate_connections_open",
                "Open client connections, by listener and protocol.",
                &["listener", "protocol"],
            )?,
            tls_handshake_failures: counter(
                "wasmgate_tls_handshake_failures_total",
                "TLS handshakes that failed or timed out, by listener.",
                &["listener"],
            )?,
            proxy_header_failures: counter(
                "wasmgate_proxy_header_failures_total",
                "Connections refused for a missing or invalid PROXY protocol header, by listener.",
                &["listener"],
            )?,
            guest_outcomes: counter(
                "wasmgate_guest_outcomes_total",
                "How guest runs ended: ok, trap, timeout, out_of_memory, refused, cancelled.",
                &["handler", "outcome"],
            )?,
            instantiation: histogram(
                "wasmgate_instantiation_duration_seconds",
                "Time to instantiate a guest.",
                &["handler"],
                LATENCY_BUCKETS,
            )?,
            pool_reused: gauge(
                "wasmgate_pool_reused_instances",
                "Instances that served a request and wait to serve the next (handlers with reuse).",
                &["handler"],
            )?,
            pool_ready: gauge(
                "wasmgate_pool_ready_instances",
                "Pre-instantiated instances waiting for a request.",
                &["handler"],
            )?,
            swaps: counter(
                "wasmgate_component_loads_total",
                "Component loads (start and hot swaps), by handler and outcome.",
                &["handler", "outcome"],
            )?,
            compile_duration: histogram(
                "wasmgate_compile_duration_seconds",
                "Time to compile a component (compile-cache misses).",
                &["handler"],
                COMPILE_BUCKETS,
            )?,
            streams_open: gauge(
                "wasmgate_streams_open",
                "Open WebSocket connections and SSE streams.",
                &["handler", "kind"],
            )?,
            stream_messages: counter(
                "wasmgate_stream_messages_total",
                "Stream messages: in (from clients), out (to clients), refused (over pub/sub bounds).",
                &["handler", "direction"],
            )?,
            guest_log_dropped: counter(
                "wasmgate_guest_log_lines_dropped_total",
                "Guest stdout/stderr lines not logged because their handler was over its log rate.",
                &["handler"],
            )?,
            component_calls: counter(
                "wasmgate_component_calls_total",
                "Calls into components' exports through wired imports, by component and outcome (ok, failed, refused).",
                &["component", "outcome"],
            )?,
            cluster_connected: gauge(
                "wasmgate_cluster_connected",
                "1 while this node is connected to the cluster's NATS server, 0 while it is not (it then serves on alone).",
                &["node"],
            )?,
            cluster_messages: counter(
                "wasmgate_cluster_messages_total",
                "Pub/sub messages between nodes: out (sent; dropped while NATS was away or the relay queue full) and in (delivered here; refused as malformed).",
                &["direction", "outcome"],
            )?,
            cluster_decisions: counter(
                "wasmgate_cluster_decisions_total",
                "Shared deployment decisions: shared (made here, written to NATS), applied, unchanged or failed (made on another node, applied here or not; a failed one leaves the handler as it was).",
                &["outcome"],
            )?,
            channel_messages: counter(
                "wasmgate_channel_messages_total",
                "Channel messages: published (by routes), invoked (a subscribed component returned), failed (it did not), dropped (its queue was full or the message too large).",
                &["channel", "outcome"],
            )?,
            resident_exits: counter(
                "wasmgate_resident_exits_total",
                "Ends of resident components' runs, by component and how they ended (exit, trap, out_of_fuel).",
                &["component", "outcome"],
            )?,
            resident_restarts: counter(
                "wasmgate_resident_restarts_total",
                "Restarts of resident components after they ended.",
                &["component"],
            )?,
            resident_state: gauge(
                "wasmgate_resident_state",
                "1 for the state each resident component is in (starting, ready, restarting, failed), 0 for the others.",
                &["component", "state"],
            )?,
            acme_orders: counter(
                "wasmgate_acme_orders_total",
                "ACME certificate orders, by domain and outcome (issued, failed).",
                &["domain", "outcome"],
            )?,
            certificate_expiry: gauge(
                "wasmgate_certificate_expiry_timestamp_seconds",
                "When the certificate served for a domain through ACME expires (Unix time).",
                &["domain"],
            )?,
            version_requests: counter(
                "wasmgate_version_requests_total",
                "Requests by handler, serving version (short hash) and outcome (ok, error = 5xx).",
                &["handler", "version", "outcome"],
            )?,
            version_duration: histogram(
                "wasmgate_version_request_duration_seconds",
                "Time to the response head, by handler and serving version.",
                &["handler", "version"],
                LATENCY_BUCKETS,
            )?,
            rollout_weight: {
                let gauge = GaugeVec::new(
                    Opts::new(
                        "wasmgate_rollout_weight_percent",
                        "Share of a handler's traffic each serving version gets.",
                    ),
                    &["handler", "version", "name"],
                )?;
                registry.register(Box::new(gauge.clone()))?;
                gauge
            },
            rollout_step: gauge(
                "wasmgate_rollout_step",
                "The step a canary is on (1-based); 0 when none is rolling out.",
                &["handler"],
            )?,
            rollout_failed_checks: counter(
                "wasmgate_rollout_failed_checks_total",
                "Canary checks that failed.",
                &["handler"],
            )?,
            rollout_rollbacks: counter(
                "wasmgate_rollout_rollbacks_total",
                "Rollouts pulled back, automatically or by an operator.",
                &["handler"],
            )?,
            rollout_promotions: counter(
                "wasmgate_rollout_promotions_total",
                "Candidates promoted to stable.",
                &["handler"],
            )?,
            signature_refused: counter(
                "wasmgate_signature_refused_total",
                "Components refused for their signature: unsigned, untrusted_key, bad_signature, malformed.",
                &["handler", "reason"],
            )?,
            audit_write_failures: {
                let counter = IntCounter::new(
                    "wasmgate_audit_write_failures_total",
                    "Audit log lines that could not be written.",
                )?;
                registry.register(Box::new(counter.clone()))?;
                counter
            },
            registry,
        })
    }

    /// The request series of `version` (a short hash) of `handler`.
    pub fn version(&self, handler: &str, version: &str) -> VersionSeries {
        VersionSeries {
            ok: self
                .version_requests
                .with_label_values(&[handler, version, "ok"]),
            error: self
                .version_requests
                .with_label_values(&[handler, version, "error"]),
            duration: self.version_duration.with_label_values(&[handler, version]),
        }
    }

    /// Drops a version's series once it no longer serves (labels stay
    /// bounded by the versions serving).
    pub fn forget_version(&self, handler: &str, version: &str, name: &str) {
        for outcome in ["ok", "error"] {
            let _ = self
                .version_requests
                .remove_label_values(&[handler, version, outcome]);
        }
        let _ = self
            .version_duration
            .remove_label_values(&[handler, version]);
        let _ = self
            .rollout_weight
            .remove_label_values(&[handler, version, name]);
    }

    /// Everything registered, in Prometheus' text format.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|error| format!("# encoding failed: {error}\n"))
    }

    /// The collectors of one handler, labelled once. `kind` is `http`,
    /// `websocket` or `sse`.
    pub fn handler(&self, name: &str, kind: &str) -> HandlerMetrics {
        let outcome = |outcome: &str| self.guest_outcomes.with_label_values(&[name, outcome]);
        HandlerMetrics {
            ok: outcome("ok"),
            trap: outcome("trap"),
            timeout: outcome("timeout"),
            out_of_memory: outcome("out_of_memory"),
            out_of_fuel: outcome("out_of_fuel"),
            refused: outcome("refused"),
            cancelled: outcome("cancelled"),
            instantiation: self.instantiation.with_label_values(&[name]),
            pool_ready: self.pool_ready.with_label_values(&[name]),
            pool_reused: self.pool_reused.with_label_values(&[name]),
            streams_open: self.streams_open.with_label_values(&[name, kind]),
            messages_in: self.stream_messages.with_label_values(&[name, "in"]),
            messages_out: self.stream_messages.with_label_values(&[name, "out"]),
            pubsub_refused: self.stream_messages.with_label_values(&[name, "refused"]),
            log_dropped: self.guest_log_dropped.with_label_values(&[name]),
        }
    }

    /// The call counters of the component called `name`, by outcome.
    pub fn component_calls(&self, name: &str) -> ComponentCalls {
        let outcome = |outcome: &str| self.component_calls.with_label_values(&[name, outcome]);
        ComponentCalls {
            ok: outcome("ok"),
            failed: outcome("failed"),
            refused: outcome("refused"),
        }
    }

    /// The collectors of the resident component called `name`.
    pub fn resident(&self, name: &str) -> ResidentMetrics {
        let exit = |outcome: &str| self.resident_exits.with_label_values(&[name, outcome]);
        let state = |state: &str| self.resident_state.with_label_values(&[name, state]);
        ResidentMetrics {
            exited: exit("exit"),
            trapped: exit("trap"),
            out_of_fuel: exit("out_of_fuel"),
            restarts: self.resident_restarts.with_label_values(&[name]),
            states: [
                state("starting"),
                state("ready"),
                state("restarting"),
                state("failed"),
            ],
        }
    }

    /// Counts one answered request.
    pub fn request(
        &self,
        route: &str,
        handler: &str,
        method: &Method,
        status: u16,
        elapsed: Duration,
    ) {
        self.requests
            .with_label_values(&[route, handler, method_label(method), status_class(status)])
            .inc();
        self.request_duration
            .with_label_values(&[route, handler])
            .observe(elapsed.as_secs_f64());
    }
}

/// One serving version's request series, resolved once.
#[derive(Clone)]
pub struct VersionSeries {
    /// Answered below 500.
    pub ok: IntCounter,
    /// Answered 5xx (traps, timeouts and refusals included).
    pub error: IntCounter,
    /// Time to the response head.
    pub duration: Histogram,
}

impl VersionSeries {
    /// Counts one answered request.
    pub fn observe(&self, status: u16, elapsed: Duration) {
        if status >= 500 {
            self.error.inc();
        } else {
            self.ok.inc();
        }
        self.duration.observe(elapsed.as_secs_f64());
    }
}

/// One component's call counters, resolved once when it starts.
pub struct ResidentMetrics {
    /// Runs that returned or exited.
    pub exited: IntCounter,
    /// Runs that trapped.
    pub trapped: IntCounter,
    /// Runs that used up a slice's CPU budget.
    pub out_of_fuel: IntCounter,
    /// Restarts.
    pub restarts: IntCounter,
    /// The state gauges: starting, ready, restarting, failed.
    pub states: [IntGauge; 4],
}

/// One component's call counters.
pub struct ComponentCalls {
    /// The call returned.
    pub ok: IntCounter,
    /// The call (or an interceptor's) trapped or ran past its deadline.
    pub failed: IntCounter,
    /// An interceptor refused the call.
    pub refused: IntCounter,
}

/// One handler's collectors, resolved once so the request path only
/// increments.
pub struct HandlerMetrics {
    /// The guest finished normally.
    pub ok: IntCounter,
    /// The guest trapped.
    pub trap: IntCounter,
    /// The guest used up its CPU budget (`limits.fuel`).
    pub out_of_fuel: IntCounter,
    /// The guest ran past its time limit.
    pub timeout: IntCounter,
    /// The guest trapped after its memory cap refused to grow.
    pub out_of_memory: IntCounter,
    /// A limit refused the work before the guest ran (full route, full pool).
    pub refused: IntCounter,
    /// The client went away and the guest was stopped before it finished.
    pub cancelled: IntCounter,
    /// Time to instantiate.
    pub instantiation: Histogram,
    /// Ready instances in the pool.
    pub pool_ready: IntGauge,
    /// Instances waiting to be reused.
    pub pool_reused: IntGauge,
    /// Open streams.
    pub streams_open: IntGauge,
    /// Messages from stream clients.
    pub messages_in: IntCounter,
    /// Messages and events to stream clients.
    pub messages_out: IntCounter,
    /// Publications and subscriptions refused by pub/sub's bounds (message
    /// size, topic length, topics per connection).
    pub pubsub_refused: IntCounter,
    /// Guest output lines dropped over the log rate.
    pub log_dropped: IntCounter,
}

/// The method as a label: the standard ones by name, anything else `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_bounded_and_render_as_text() {
        let metrics = Metrics::new(Registry::new()).expect("registers");
        let method = Method::from_bytes(b"BREW").expect("extension method");
        metrics.request("route[0]", "hello", &method, 418, Duration::from_millis(3));
        metrics.request(
            "route[0]",
            "hello",
            &Method::GET,
            200,
            Duration::from_millis(1),
        );
        let text = metrics.render();
        assert!(text.contains(
            r#"wasmgate_requests_total{handler="hello",method="other",route="route[0]",status="4xx"} 1"#
        ));
        assert!(text.contains(
            r#"wasmgate_requests_total{handler="hello",method="GET",route="route[0]",status="2xx"} 1"#
        ));
        assert!(text.contains("wasmgate_build_info{"));
    }
}
