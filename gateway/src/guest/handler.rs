//! A loaded handler serving one request: take a ready instance, hand it the
//! request, return the response head as soon as the guest sets it while the
//! guest keeps streaming the body from its own task.
//!
//! Invariant: whatever the guest does (trap, loop, never answer), the request
//! ends by its deadline with a response or a [`GatewayError`], and the guest's
//! instance is dropped; the gateway and every other request carry on.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use http::{Request, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::task::AbortOnDropHandle;
use wasmtime::component::Resource;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode as P2ErrorCode;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};

use super::bindings::{SseService, SseServicePre, WebsocketService, WebsocketServicePre};
use super::cache::ContentHash;
use super::component::{HttpPre, Pre, Unlinked};
use super::component::{LoadError, Loaded};
use super::engine::is_pool_full;
use super::host::{
    DeadlineExceeded, Host, StoreMaker, hostcall_fuel, is_out_of_fuel, refuel, trap_summary,
};
use super::log::LogBudget;
use super::outbound::{NextHop, OutboundClient};
use super::pool::{Blueprint, Instance, Pool, Ready, Returner};
use super::pubsub::Hub;
use super::sse::Session as SseSession;
use super::stream::{Opening, Refused, Stream, StreamSetup, trial};
use super::websocket::Session;
use super::wire::Library;

mod compose;
mod http3;
mod shared;

use crate::config::{Capability, EnvGrant, HandlerConfig, HandlerName, HandlerWorld, StreamLimits};
use crate::control::metrics::{HandlerMetrics, Metrics};
use crate::http::body::{CappedBody, ReadFailure, ResponseBody, Tripped};
use crate::http::error::GatewayError;
use compose::{Linked, WiredTo, check_files, config_values, wire_up};

/// What starting a handler needs from the gateway besides its component.
pub struct Services<'a> {
    /// The engine and its linker, which wired components extend.
    pub engine: &'a super::GuestEngine,
    /// The `[component]`s started so far in this generation (every one a
    /// handler's imports or interceptors name starts before it).
    pub components: &'a HashMap<HandlerName, Arc<Handler>>,
    /// Where its metrics are registered.
    pub metrics: &'a Metrics,
    /// The `.env` file beside the config, for keys the process lacks.
    pub dotenv: &'a HashMap<String, String>,
    /// The pooled client its allowed outbound requests use.
    pub client: &'a Arc<OutboundClient>,
}

/// The variables `grant` gives a guest: from the process environment, else
/// from the `.env` file (the real environment wins). Read once, at start.
pub fn granted_env(grant: &EnvGrant, dotenv: &HashMap<String, String>) -> Vec<(String, String)> {
    match grant {
        EnvGrant::Keys(keys) => keys
            .iter()
            .filter_map(|key| Some((key.clone(), lookup_env(key, dotenv)?)))
            .collect(),
        EnvGrant::All => {
            let mut all: BTreeMap<String, String> = dotenv.clone().into_iter().collect();
            all.extend(std::env::vars());
            all.into_iter().collect()
        }
    }
}

/// A variable's value: the process environment's, else the `.env` file's.
pub(super) fn lookup_env(key: &str, dotenv: &HashMap<String, String>) -> Option<String> {
    std::env::var(key).ok().or_else(|| dotenv.get(key).cloned())
}

/// How long a request may wait for a concurrency permit before it gets 503.
const QUEUE_WAIT: Duration = Duration::from_millis(100);

/// One handler of one generation.
pub struct Handler {
    label: Arc<str>,
    metrics: Arc<HandlerMetrics>,
    loaded_at: std::time::SystemTime,
    /// One permit per request being served (`limits.concurrency`), shared
    /// with the versions before and after this one while the limit stays the
    /// same, so a hot swap does not open a second allowance of requests.
    permits: Arc<Semaphore>,
    config: HandlerConfig,
    hash: ContentHash,
    kind: Kind,
    /// The components its imports and interceptors were wired to, by name:
    /// when one of them is no longer the one serving, it is wired again.
    wired_to: WiredTo,
    /// What wiring it again starts from.
    unlinked: Option<Unlinked>,
}

/// How the handler's instances are made and used.
enum Kind {
    /// wasi:http 0.2 or 0.3: one pooled, pre-instantiated instance per
    /// request (or, with `reuse`, per few requests in a row); a 0.3 run
    /// lasts until the guest has no task left (its body, work after the
    /// response). With `reuse.max_concurrent` above 1, a 0.3 component's
    /// instances are shared by concurrent requests ([`shared`]).
    Http(Pool, Option<shared::Workers>),
    /// One instance per WebSocket connection, made when it opens.
    Websocket {
        pre: WebsocketServicePre<Host>,
        stores: StoreMaker,
    },
    /// One instance per SSE stream, made when it is subscribed.
    Sse {
        pre: SseServicePre<Host>,
        stores: StoreMaker,
    },
    /// A `[component]`: one instance per instance importing it.
    Component(Arc<Library>),
}

/// What a guest's run takes along onto its task: its concurrency permit,
/// how to report its end, and the pub/sub hub.
struct Guest {
    permit: OwnedSemaphorePermit,
    run: GuestRun,
    /// Told when the run failed, before the body's sender goes (a shared
    /// instance's worker takes it, as only it knows when that is).
    failed: Option<oneshot::Sender<()>>,
    cancelled: Cancelled,
    hub: Arc<Hub>,
    /// For a middleware: the rest of its route's chain.
    next: Option<Arc<dyn NextHop>>,
}

/// A request handed to its guest: where the response head arrives, and the
/// task whose end is the run's.
type Started = (HeadReceiver, AbortOnDropHandle<Outcome>);

/// Where a guest's response head (or its error code, as text) arrives.
enum HeadReceiver {
    /// From 0.2's `response-outparam`.
    P2(oneshot::Receiver<Result<Response<ResponseBody>, P2ErrorCode>>),
    /// From the 0.3 run's task.
    P3(oneshot::Receiver<Result<Response<ResponseBody>, String>>),
}

impl HeadReceiver {
    async fn recv(
        self,
    ) -> Result<Result<Response<ResponseBody>, String>, oneshot::error::RecvError> {
        match self {
            Self::P2(receiver) => Ok(receiver.await?.map_err(|code| format!("{code:?}"))),
            Self::P3(receiver) => receiver.await,
        }
    }
}

impl Guest {
    /// Ends a run that `result` says how it went: frees its permit, counts
    /// and logs its outcome, reports a failure (so its body ends in an
    /// error, not cleanly), and gives the instance of a run that ended well
    /// back for reuse; a trap, a timeout or an exhausted memory cap drops it.
    fn end(
        self,
        result: Result<wasmtime::Result<()>, tokio::time::error::Elapsed>,
        ready: Ready,
        returner: Option<Returner>,
    ) -> Outcome {
        let outcome = self.close(RunEnd::from(result), ready.store.data().memory_denied());
        if let (Outcome::Finished, Some(returner)) = (&outcome, returner) {
            returner.give_back(ready);
        }
        outcome
    }

    /// Frees the permit, counts and logs how the run ended, and reports a
    /// failure to the body if it still can.
    fn close(self, end: RunEnd, memory_denied: bool) -> Outcome {
        let Self {
            permit,
            run,
            failed,
            cancelled,
            hub: _,
            next: _,
        } = self;
        drop(permit);
        cancelled.disarm();
        let outcome = run.outcome(end, memory_denied);
        if let (Outcome::Failed(_), Some(failed)) = (&outcome, failed) {
            let _ = failed.send(());
        }
        outcome
    }
}

/// How a guest's run ended, before it is counted.
enum RunEnd {
    Finished,
    TimedOut,
    Failed(wasmtime::Error),
}

impl From<Result<wasmtime::Result<()>, tokio::time::error::Elapsed>> for RunEnd {
    fn from(result: Result<wasmtime::Result<()>, tokio::time::error::Elapsed>) -> Self {
        match result {
            Ok(Ok(())) => Self::Finished,
            Ok(Err(error)) if error.is::<DeadlineExceeded>() => Self::TimedOut,
            Ok(Err(error)) => Self::Failed(error),
            Err(_elapsed) => Self::TimedOut,
        }
    }
}

/// How a guest's run ended.
enum Outcome {
    Finished,
    Failed(GatewayError),
}

impl Handler {
    /// Wraps a loaded component and fills its pool before returning, so the
    /// first request finds ready instances. Reads the granted environment
    /// variables now, so a request never touches the process environment.
    pub async fn start(
        name: &HandlerName,
        config: &HandlerConfig,
        loaded: Loaded,
        services: &Services<'_>,
        previous: Option<&Self>,
    ) -> Result<Self, LoadError> {
        let label = name.label();
        let kind = match config.world {
            HandlerWorld::Http => "http",
            HandlerWorld::Websocket => "websocket",
            HandlerWorld::Sse => "sse",
            HandlerWorld::Component => "component",
        };
        let metrics = Arc::new(services.metrics.handler(name.as_str(), kind));
        let config_values = config_values(config, services.dotenv)?;
        check_files(config)?;
        let stores = StoreMaker {
            logging: config.capabilities.has(Capability::Logging),
            fuel: config.limits.fuel,
            command: None,
            ready: None,
            files: config.files.iter().cloned().collect(),
            config: Arc::new(config_values),
            handler: Arc::clone(&label),
            env: granted_env(&config.env, services.dotenv),
            memory: usize::try_from(config.limits.memory).unwrap_or(usize::MAX),
            outbound: config.outbound.iter().cloned().collect(),
            allow_private: config.allow_private,
            topic_scope: config.topic_scope.clone().unwrap_or_else(|| name.label()),
            max_publish: config.stream.max_message,
            pubsub_refused: metrics.pubsub_refused.clone(),
            log_budget: Arc::new(LogBudget::new(
                Arc::clone(&label),
                metrics.log_dropped.clone(),
            )),
            client: Arc::clone(services.client),
            hostcall_fuel: hostcall_fuel(config.stream.max_message),
        };
        let instantiate_failed =
            |error: wasmtime::Error| LoadError::Instantiate(format!("{error:#}"));
        let (linked, unlinked, wired_to) = match loaded.pre {
            Pre::Unlinked(unlinked) => {
                let (linked, wired_to) = wire_up(config, &unlinked, services)?;
                (linked, Some(unlinked), wired_to)
            }
            pre => (Linked::Pre(pre), None, Vec::new()),
        };
        let kind = match linked {
            Linked::Component(instance_pre, component, advice) => {
                let calls = services.metrics.component_calls(name.as_str());
                let library = Library::new(
                    Arc::clone(&label),
                    component,
                    instance_pre,
                    stores,
                    &advice,
                    calls,
                    config
                        .resident
                        .map(|policy| (policy, services.metrics.resident(name.as_str()))),
                )?;
                library.trial().await.map_err(instantiate_failed)?;
                Kind::Component(Arc::new(library))
            }
            Linked::Pre(Pre::Http(pre)) => {
                // Only a 0.3 instance can take requests concurrently.
                let shared = config
                    .reuse
                    .filter(|reuse| reuse.max_concurrent > 1 && matches!(pre, HttpPre::P3(_)))
                    .map(|reuse| shared::Workers::new(reuse, Arc::clone(&label)));
                let pool = Pool::start(
                    Blueprint {
                        pre,
                        stores,
                        metrics: Arc::clone(&metrics),
                    },
                    config.prewarm,
                    config.reuse,
                    config.limits.concurrency,
                )
                .await
                .map_err(instantiate_failed)?;
                Kind::Http(pool, shared)
            }
            Linked::Pre(Pre::Websocket(pre)) => {
                trial::<WebsocketService>(&pre, &stores)
                    .await
                    .map_err(instantiate_failed)?;
                Kind::Websocket { pre, stores }
            }
            Linked::Pre(Pre::Sse(pre)) => {
                trial::<SseService>(&pre, &stores)
                    .await
                    .map_err(instantiate_failed)?;
                Kind::Sse { pre, stores }
            }
            // `wire_up` links what it is given; nothing else is unlinked.
            Linked::Pre(Pre::Unlinked(_)) => {
                return Err(LoadError::Wiring("linked twice".into()));
            }
        };
        Ok(Self {
            kind,
            label,
            metrics,
            loaded_at: std::time::SystemTime::now(),
            permits: previous
                .filter(|old| old.config.limits.concurrency == config.limits.concurrency)
                .map_or_else(
                    || Arc::new(Semaphore::new(config.limits.concurrency)),
                    |old| Arc::clone(&old.permits),
                ),
            config: config.clone(),
            hash: loaded.hash,
            wired_to,
            unlinked,
        })
    }

    /// Whether this handler is exactly what `config` and a file whose
    /// SHA-256 is `sha256` would make, so a reload can keep it instead of
    /// rebuilding it.
    pub fn is_same(&self, config: &HandlerConfig, sha256: &str) -> bool {
        self.config == *config && self.hash.as_str() == sha256
    }

    /// When this version started serving.
    pub fn loaded_at(&self) -> std::time::SystemTime {
        self.loaded_at
    }

    /// The content hash of the component file.
    pub fn hash(&self) -> &ContentHash {
        &self.hash
    }

    /// Serves `request` on an instance (a fresh one unless the handler
    /// reuses them). `route` names the route in logs. The body is a
    /// client's ([`crate::http::body::RequestBody`]), a middleware's, or the
    /// gateway's own (a smoke check's empty one).
    pub async fn serve<B>(
        &self,
        request: Request<B>,
        scheme: Scheme,
        route: &Arc<str>,
        hub: &Arc<Hub>,
        body_timeout: Duration,
        next: Option<Arc<dyn NextHop>>,
    ) -> Result<Response<ResponseBody>, GatewayError>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + Sync + Unpin + 'static,
        B::Error: ReadFailure,
    {
        let Kind::Http(pool, shared) = &self.kind else {
            return Err(GatewayError::UpgradeRequired);
        };
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.config.limits.body) {
            return Err(GatewayError::PayloadTooLarge(self.config.limits.body));
        }
        // hyper never reads the body of a HEAD response: dropping it unread
        // is no reason to stop the guest.
        let head_only = request.method() == http::Method::HEAD;
        let permit = self.permit().await?;
        let (tripped, mut body_cut) = oneshot::channel();
        let request = request
            .map(|body| CappedBody::new(body, self.config.limits.body, body_timeout, tripped));
        let run = GuestRun {
            handler: Arc::clone(&self.label),
            metrics: Arc::clone(&self.metrics),
            route: Arc::clone(route),
            timeout: self.config.limits.timeout,
            fuel: self.config.limits.fuel,
        };
        // Told before the store (and with it the body's sender) goes, so a
        // body that ends because its guest failed is never taken for complete.
        let (failed, failure) = oneshot::channel();
        // The guest runs on its own task: after it sets the response head it
        // keeps writing the body, which hyper streams out concurrently.
        // Aborted when the request is dropped before its head (the client
        // left) or its body is dropped unfinished: the guest stops at its
        // next epoch tick, and its instance and permit go back.
        let guest = Guest {
            permit,
            run,
            failed: Some(failed),
            cancelled: Cancelled(Some(self.metrics.cancelled.clone())),
            hub: Arc::clone(hub),
            next,
        };
        let (receiver, mut task) = match shared {
            Some(workers) => {
                let timeout = self.config.limits.timeout;
                let instance = self.instantiate(pool.take());
                workers
                    .dispatch(request, &scheme, timeout, guest, instance)
                    .await?
            }
            None => self.start_own(pool, request, scheme, guest).await?,
        };
        let first = tokio::select! {
            biased;
            head = receiver.recv() => Ok(head),
            // The body broke a limit before the guest answered: the client
            // gets 413 or 408 at once.
            Ok(why) = &mut body_cut => return Err(self.body_cut(why, task, body_timeout)),
            // The run was settled without an answer while its guest still
            // holds the head's sender (a shared instance's request at its
            // deadline): the client is not kept waiting for the instance.
            ended = &mut task => Err(ended),
        };
        // An answer (or an end) after the body broke a limit (an error
        // page, a trap on the failed read) is about the body: 413 or 408.
        if let Ok(why) = body_cut.try_recv() {
            return Err(self.body_cut(why, task, body_timeout));
        }
        let head = match first {
            Ok(head) => head,
            Err(ended) => return Err(self.unanswered(ended, route)),
        };
        match head {
            Ok(Ok(response)) => {
                let guest = (!head_only).then_some(task);
                Ok(AbortOnFailure::wrap(response, failure, guest))
            }
            Ok(Err(code)) => {
                // The guest answered; it finishes (and is counted) on its own.
                task.detach();
                let error = GatewayError::GuestErrorCode(code);
                self.log(route, &error);
                Err(error)
            }
            // The store (and with it the sender) is gone: the run is over.
            Err(_) => Err(self.unanswered(task.await, route)),
        }
    }

    /// The error for a run that ended without a response head.
    fn unanswered(
        &self,
        ended: Result<Outcome, tokio::task::JoinError>,
        route: &str,
    ) -> GatewayError {
        match ended {
            Ok(Outcome::Failed(error)) => error,
            Ok(Outcome::Finished) => {
                let error = GatewayError::GuestNoResponse;
                self.log(route, &error);
                error
            }
            Err(join) => GatewayError::Internal(format!("guest task failed: {join}")),
        }
    }

    /// Starts `request` on an instance of its own (fresh, or reused one
    /// request after another): a 0.3 one through [`http3`], a 0.2 one here.
    async fn start_own<B>(
        &self,
        pool: &Pool,
        request: Request<CappedBody<B>>,
        scheme: Scheme,
        guest: Guest,
    ) -> Result<Started, GatewayError>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + Sync + Unpin + 'static,
        B::Error: ReadFailure,
    {
        let ready = self.instantiate(pool.take()).await?;
        let proxy = match ready.guest {
            Instance::P2(proxy) => proxy,
            Instance::P3(service) => {
                return Ok(http3::start(
                    (ready.store, service),
                    pool.returner(),
                    request,
                    &scheme,
                    self.config.limits.timeout,
                    guest,
                ));
            }
        };
        // WASI 0.2: the handler runs on a task of its own, and the head
        // arrives through its response-outparam.
        let mut store = ready.store;
        let mut guest = guest;
        let deadline = Instant::now() + self.config.limits.timeout;
        store.data_mut().deadline = deadline;
        refuel(&mut store);
        store.data_mut().set_next(guest.next.take());
        store.data_mut().attachment.hub = Some(Arc::clone(&guest.hub));
        let (sender, receiver) = oneshot::channel();
        let mut http = store.data_mut().http();
        let incoming: Resource<HostIncomingRequest> = http
            .new_incoming_request(scheme, request)
            .map_err(|error| GatewayError::BadRequest(format!("{error:#}")))?;
        let outparam: Resource<HostResponseOutparam> = http
            .new_response_outparam(sender)
            .map_err(|error| GatewayError::Internal(format!("{error:#}")))?;
        let returner = pool.returner();
        let task = AbortOnDropHandle::new(tokio::spawn(
            async move {
                let call = proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, incoming, outparam);
                let result = tokio::time::timeout_at(deadline.into(), call).await;
                let ready = Ready {
                    store,
                    guest: Instance::P2(proxy),
                };
                guest.end(result, ready, returner)
            }
            .in_current_span(),
        ));
        Ok((HeadReceiver::P2(receiver), task))
    }

    /// An instance from `instantiating`; a full instance pool is 503.
    async fn instantiate<T>(
        &self,
        instantiating: impl std::future::Future<Output = wasmtime::Result<T>>,
    ) -> Result<T, GatewayError> {
        instantiating.await.map_err(|error| {
            if is_pool_full(&error) {
                self.metrics.refused.inc();
                GatewayError::Saturated("the instance pool".into())
            } else {
                GatewayError::Internal(format!("instantiating the guest: {error:#}"))
            }
        })
    }

    /// The answer to a request whose body broke a limit. An oversized body's
    /// guest ends on its own (it saw its read fail); a stalled upload's guest
    /// is stopped, so a slow client holds no instance and no permit.
    fn body_cut(
        &self,
        why: Tripped,
        task: AbortOnDropHandle<Outcome>,
        body_timeout: Duration,
    ) -> GatewayError {
        match why {
            Tripped::TooLarge => {
                task.detach();
                GatewayError::PayloadTooLarge(self.config.limits.body)
            }
            Tripped::Stalled => {
                drop(task);
                GatewayError::BodyTimeout(body_timeout)
            }
            Tripped::Undecodable => {
                task.detach();
                GatewayError::BadRequest(
                    "the body does not decode as its Content-Encoding says".into(),
                )
            }
        }
    }

    /// The limits of this handler's streams.
    pub fn stream_limits(&self) -> &StreamLimits {
        &self.config.stream
    }

    /// Whether this handler serves SSE streams.
    pub fn is_sse(&self) -> bool {
        matches!(self.kind, Kind::Sse { .. })
    }

    /// Whether this handler serves WebSocket connections.
    pub fn is_websocket(&self) -> bool {
        matches!(self.kind, Kind::Websocket { .. })
    }

    /// Instantiates the guest for a new SSE stream and asks it whether to
    /// accept `opening`.
    pub async fn open_sse(&self, hub: &Arc<Hub>, opening: Opening) -> Result<SseSession, Refused> {
        let Kind::Sse { pre, stores } = &self.kind else {
            return Err(Refused::Failed("not an SSE handler".into()));
        };
        Stream::open(pre, self.stream_setup(stores, hub)?, opening).await
    }

    /// Instantiates the guest for a new WebSocket connection and asks it
    /// whether to accept `opening`.
    pub async fn open_websocket(
        &self,
        hub: &Arc<Hub>,
        opening: Opening,
    ) -> Result<Session, Refused> {
        let Kind::Websocket { pre, stores } = &self.kind else {
            return Err(Refused::Failed("not a WebSocket handler".into()));
        };
        Stream::open(pre, self.stream_setup(stores, hub)?, opening).await
    }

    /// What a new stream needs, with one of the handler's concurrency
    /// permits (none free: refused at once, a stream does not queue).
    fn stream_setup<'a>(
        &'a self,
        stores: &'a StoreMaker,
        hub: &'a Arc<Hub>,
    ) -> Result<StreamSetup<'a>, Refused> {
        let Ok(concurrency) = Arc::clone(&self.permits).try_acquire_owned() else {
            self.metrics.refused.inc();
            return Err(Refused::Saturated(format!(
                "handler {}'s concurrency",
                self.label
            )));
        };
        Ok(StreamSetup {
            stores,
            hub,
            timeout: self.config.limits.timeout,
            limits: &self.config.stream,
            metrics: &self.metrics,
            concurrency,
        })
    }

    /// Counts a stream refused before it reached the guest (its route full).
    pub fn count_refused(&self) {
        self.metrics.refused.inc();
    }

    /// A concurrency permit: at once when one is free, else after at most
    /// [`QUEUE_WAIT`], else 503 (never an unbounded queue).
    async fn permit(&self) -> Result<OwnedSemaphorePermit, GatewayError> {
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            return Ok(permit);
        }
        match tokio::time::timeout(QUEUE_WAIT, Arc::clone(&self.permits).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                self.metrics.refused.inc();
                Err(GatewayError::Saturated(format!(
                    "handler {}'s concurrency",
                    self.label
                )))
            }
        }
    }

    fn log(&self, route: &str, error: &GatewayError) {
        tracing::warn!(route, handler = &*self.label, "{error}");
    }
}

/// What the guest task needs to report how its run ended.
struct GuestRun {
    handler: Arc<str>,
    metrics: Arc<HandlerMetrics>,
    route: Arc<str>,
    timeout: Duration,
    /// The CPU budget, for the message when it runs out.
    fuel: Option<u64>,
}

impl GuestRun {
    /// Classifies and logs the end of a run. The log line is written here
    /// because only the task sees failures that happen after the response
    /// head was sent.
    fn outcome(self, end: RunEnd, memory_denied: bool) -> Outcome {
        let error = match end {
            RunEnd::Finished => {
                self.metrics.ok.inc();
                return Outcome::Finished;
            }
            RunEnd::TimedOut => {
                self.metrics.timeout.inc();
                GatewayError::GuestTimeout(self.timeout)
            }
            RunEnd::Failed(error) => {
                tracing::debug!(
                    route = &*self.route,
                    handler = &*self.handler,
                    "guest trap in full: {error:?}"
                );
                if memory_denied {
                    self.metrics.out_of_memory.inc();
                    GatewayError::GuestOutOfMemory(trap_summary(&error))
                } else if is_out_of_fuel(&error) {
                    self.metrics.out_of_fuel.inc();
                    GatewayError::GuestOutOfFuel(self.fuel.unwrap_or(u64::MAX))
                } else {
                    self.metrics.trap.inc();
                    GatewayError::GuestTrap(trap_summary(&error))
                }
            }
        };
        tracing::warn!(route = &*self.route, handler = &*self.handler, "{error}");
        Outcome::Failed(error)
    }
}

/// A guest's response body that ends in an error, not a clean end, when the
/// guest failed (trap, time limit, out of memory) before finishing it: hyper
/// then closes an HTTP/1.1 connection without the last chunk and resets an
/// HTTP/2 stream, so no client takes a truncated body for a whole one.
///
/// It also holds the guest's task: dropped before it ended (the client went
/// away mid-body), it stops the guest.
///
/// A body with a `Content-Length` is over once that many bytes went out:
/// hyper then drops it without asking for its end, so it says so itself and
/// lets the guest finish on its own rather than be stopped as if its client
/// had left.
struct AbortOnFailure {
    inner: ResponseBody,
    /// `None` once told, either way.
    failure: Option<oneshot::Receiver<()>>,
    guest: Option<AbortOnDropHandle<Outcome>>,
    /// Bytes still owed when the head announced a length.
    remaining: Option<u64>,
}

impl AbortOnFailure {
    fn wrap(
        response: Response<ResponseBody>,
        failure: oneshot::Receiver<()>,
        guest: Option<AbortOnDropHandle<Outcome>>,
    ) -> Response<ResponseBody> {
        use http_body_util::BodyExt as _;
        let remaining = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        response.map(|inner| {
            Self {
                inner,
                failure: Some(failure),
                guest,
                remaining,
            }
            .boxed_unsync()
        })
    }
}

/// Counts a guest run as cancelled unless disarmed first: only an aborted
/// task drops it armed.
struct Cancelled(Option<prometheus::IntCounter>);

impl Cancelled {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Cancelled {
    fn drop(&mut self) {
        if let Some(counter) = self.0.take() {
            counter.inc();
        }
    }
}

impl http_body::Body for AbortOnFailure {
    type Data = bytes::Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        // A failure is reported before the store drops the body's sender, so
        // by the time the body has ended the report is in; it also cuts a
        // body still flowing (a shared instance outliving the request's
        // deadline).
        if let Some(failure) = &mut self.failure
            && let Poll::Ready(told) = std::pin::Pin::new(failure).poll(cx)
        {
            self.failure = None;
            if told.is_ok() {
                return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::InternalError(Some(
                    "the guest failed before finishing its response".into(),
                )))));
            }
        }
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(remaining)) = (&polled, &mut self.remaining) {
            let sent = frame.data_ref().map_or(0, |data| data.len() as u64);
            *remaining = remaining.saturating_sub(sent);
        }
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) || self.remaining == Some(0) {
            // Over: the guest may finish on its own (and be counted).
            if let Some(guest) = self.guest.take() {
                guest.detach();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == Some(0) || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
