//! WASI 0.3 instances that serve several requests at once
//! (`reuse = { max_concurrent > 1 }`), the model 0.3 is made for: one
//! worker task per instance owns its store and runs one long
//! `run_concurrent` event loop, into which requests are admitted through
//! the instance's [`Door`].
//!
//! Invariants:
//! - a door admits at most `max_concurrent` requests at once and
//!   `max_requests` in all; it closes for good on the first request that
//!   fails (trap, deadline, refused memory), on `idle`, or when its handler
//!   goes, and the instance is dropped once what it admitted has ended;
//! - every admitted request is settled exactly once ([`Door::settle`]):
//!   by the worker when its response body is done or its guest call
//!   failed, by its own deadline timer outside the event loop (a guest
//!   busy in another task cannot hold it), or by the instance's end;
//!   a failure is told to the request's body before the store goes, so no
//!   client takes a cut body for a whole one;
//! - the store's deadline is that of the last request admitted while any
//!   request or guest task is left, and none while the instance is idle:
//!   work after the responses ends by then, a busy loop is trapped, and a
//!   worker whose event loop is stuck is dropped by its outer timer.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use http::{Request, Response};
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;
use wasmtime::Store;
use wasmtime::component::Accessor;
use wasmtime_wasi_http::p3::bindings::Service;

use super::{Guest, HeadReceiver, RunEnd, Scheme, Started, trap_summary};
use crate::guest::host::{DeadlineExceeded, Host, far_future};
use crate::guest::pool::{Instance, Ready};
use crate::http::body::{CappedBody, ReadFailure, ResponseBody};
use crate::http::error::GatewayError;

/// A request's body, as the worker takes it whatever its source.
type RequestBody = UnsyncBoxBody<bytes::Bytes, wasmtime_wasi_http::Error>;

/// How each admitted request ends, as its own task learns it: how the run
/// ended, and whether the instance had been refused memory by then.
type Settled = (RunEnd, bool);

/// The live shared instances of one handler version.
pub(super) struct Workers {
    doors: Mutex<Vec<Arc<Door>>>,
    /// Held while a new instance is opened, so requests arriving together
    /// fill one instance rather than each opening their own.
    opening: tokio::sync::Mutex<()>,
    max_concurrent: usize,
    max_requests: u32,
    idle: Duration,
    /// The handler's name, for logs.
    label: Arc<str>,
}

impl Workers {
    pub(super) fn new(reuse: crate::config::Reuse, label: Arc<str>) -> Self {
        Self {
            label,
            doors: Mutex::new(Vec::new()),
            opening: tokio::sync::Mutex::new(()),
            max_concurrent: reuse.max_concurrent as usize,
            max_requests: reuse.max_requests,
            idle: reuse.idle,
        }
    }

    /// Admits `request` into an open instance with room, else into a new
    /// one made from `instance()` (a ready instance of the handler's pool);
    /// returns where its response head arrives, and the task that settles
    /// it (aborted with the response body, as for a fresh instance).
    pub(super) async fn dispatch<B, F>(
        &self,
        request: Request<CappedBody<B>>,
        scheme: &Scheme,
        timeout: Duration,
        mut guest: Guest,
        instance: F,
    ) -> Result<Started, GatewayError>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + Sync + Unpin + 'static,
        B::Error: ReadFailure,
        F: std::future::Future<Output = Result<Ready, GatewayError>>,
    {
        let deadline = Instant::now() + timeout;
        let request = super::http3::absolute(request, scheme)
            .map(|body| body.map_err(Into::into).boxed_unsync());
        let (head, receiver) = oneshot::channel();
        let (done, settled) = oneshot::channel();
        // Boxed: it is handed around until a door takes it, and is large.
        let admission = Box::new(Admission {
            job: Job {
                id: 0,
                request,
                head,
                deadline,
            },
            failed: guest.failed.take(),
            done,
        });
        let (door, id) = match self.admit(admission) {
            Ok(admitted) => admitted,
            Err(admission) => {
                let _opening = self.opening.lock().await;
                match self.admit(admission) {
                    Ok(admitted) => admitted,
                    Err(admission) => self.open(admission, instance, &guest.hub).await?,
                }
            }
        };
        let task = AbortOnDropHandle::new(tokio::spawn(
            async move {
                let mut settled = settled;
                let (end, memory_denied) = tokio::select! {
                    biased;
                    ended = &mut settled => ended.unwrap_or_else(|_| lost()),
                    () = tokio::time::sleep_until(deadline.into()) => {
                        // Enforced here, not in the event loop, which a guest
                        // busy in another task may be holding.
                        door.settle(id, RunEnd::TimedOut, false);
                        settled.await.unwrap_or_else(|_| lost())
                    }
                };
                guest.close(end, memory_denied)
            }
            .in_current_span(),
        ));
        Ok((HeadReceiver::P3(receiver), task))
    }

    /// Starts a worker (the task serving its instance) on `instance` and
    /// admits into its door.
    async fn open(
        &self,
        admission: Box<Admission>,
        instance: impl std::future::Future<Output = Result<Ready, GatewayError>>,
        hub: &Arc<crate::guest::pubsub::Hub>,
    ) -> Result<(Arc<Door>, u64), GatewayError> {
        let Ready { mut store, guest } = instance.await?;
        let Instance::P3(service) = guest else {
            return Err(GatewayError::Internal(
                "a WASI 0.2 instance cannot be shared".into(),
            ));
        };
        let (jobs, receiver) = mpsc::unbounded_channel();
        let door = Arc::new(Door::new(jobs, self.max_concurrent, self.max_requests));
        store.data_mut().attachment.hub = Some(Arc::clone(hub));
        store.data_mut().deadline = far_future();
        tokio::spawn(run_worker(
            store,
            service,
            Arc::clone(&door),
            receiver,
            self.idle,
            Arc::clone(&self.label),
        ));
        // A new door has room for its first request.
        let id = door.admit(admission).map_err(|_| {
            GatewayError::Internal("a new shared instance refused its first request".into())
        })?;
        lock(&self.doors).push(Arc::clone(&door));
        Ok((door, id))
    }

    /// Admits into the first open door with room (dropping closed ones
    /// from the list); gives the admission back if none has room.
    fn admit(&self, mut admission: Box<Admission>) -> Result<(Arc<Door>, u64), Box<Admission>> {
        let mut doors = lock(&self.doors);
        doors.retain(|door| door.is_open());
        for door in doors.iter() {
            match door.admit(admission) {
                Ok(id) => return Ok((Arc::clone(door), id)),
                Err(refused) => admission = refused,
            }
        }
        Err(admission)
    }
}

impl Drop for Workers {
    /// The handler is gone (a swap, a removal): its instances take no new
    /// request and end once what they admitted has ended.
    fn drop(&mut self) {
        for door in lock(&self.doors).drain(..) {
            door.close();
        }
    }
}

/// What a worker needs to serve one request.
struct Job {
    id: u64,
    request: Request<RequestBody>,
    head: oneshot::Sender<Result<Response<ResponseBody>, String>>,
    deadline: Instant,
}

/// A job on its way in, with how its end is told.
struct Admission {
    job: Job,
    failed: Option<oneshot::Sender<()>>,
    done: oneshot::Sender<Settled>,
}

/// An admitted request not settled yet.
struct InFlight {
    failed: Option<oneshot::Sender<()>>,
    done: oneshot::Sender<Settled>,
}

/// The way into one shared instance, and what it is serving.
struct Door {
    state: Mutex<DoorState>,
    /// Requests admitted at once, and in all.
    max_concurrent: usize,
    max_requests: u64,
    /// Told when the instance goes from idle to busy, so the worker's outer
    /// timer picks up the new deadline.
    busy: Notify,
}

struct DoorState {
    /// Where admitted jobs go; `None` once the door has closed.
    jobs: Option<mpsc::UnboundedSender<Job>>,
    admitted: u64,
    in_flight: HashMap<u64, InFlight>,
    /// The deadline of the last request admitted, while the instance has
    /// any request or guest task left; `None` while it is idle.
    busy_until: Option<Instant>,
}

impl Door {
    /// An open door whose admitted jobs go to `jobs`.
    fn new(jobs: mpsc::UnboundedSender<Job>, max_concurrent: usize, max_requests: u32) -> Self {
        Self {
            state: Mutex::new(DoorState {
                jobs: Some(jobs),
                admitted: 0,
                in_flight: HashMap::new(),
                busy_until: None,
            }),
            max_concurrent,
            max_requests: u64::from(max_requests),
            busy: Notify::new(),
        }
    }

    fn is_open(&self) -> bool {
        self.lock().jobs.is_some()
    }

    /// Admits `admission` if the door is open and has room; returns its id.
    fn admit(&self, admission: Box<Admission>) -> Result<u64, Box<Admission>> {
        let mut state = self.lock();
        let room =
            state.in_flight.len() < self.max_concurrent && state.admitted < self.max_requests;
        let Some(jobs) = state.jobs.as_ref().filter(|_| room) else {
            return Err(admission);
        };
        let Admission {
            mut job,
            failed,
            done,
        } = *admission;
        let id = state.admitted + 1;
        job.id = id;
        let deadline = job.deadline;
        if let Err(mpsc::error::SendError(job)) = jobs.send(job) {
            // Its worker has gone (it panicked): as good as closed.
            state.jobs = None;
            return Err(Box::new(Admission { job, failed, done }));
        }
        let was_idle = state.busy_until.is_none();
        state.busy_until = state.busy_until.max(Some(deadline));
        state.admitted = id;
        state.in_flight.insert(id, InFlight { failed, done });
        if state.admitted >= self.max_requests {
            state.jobs = None;
        }
        drop(state);
        if was_idle {
            self.busy.notify_one();
        }
        Ok(id)
    }

    /// Settles request `id` unless it already is: a request that did not
    /// finish closes the door (its instance is not trusted with another),
    /// and its body is told before its result.
    fn settle(&self, id: u64, end: RunEnd, memory_denied: bool) {
        let entry = {
            let mut state = self.lock();
            if !matches!(end, RunEnd::Finished) || memory_denied {
                state.jobs = None;
            }
            state.in_flight.remove(&id)
        };
        if let Some(InFlight { failed, done }) = entry {
            if !matches!(end, RunEnd::Finished)
                && let Some(failed) = failed
            {
                let _ = failed.send(());
            }
            let _ = done.send((end, memory_denied));
        }
    }

    /// Closes the door and settles whatever is left with how the instance
    /// ended; called before its store is dropped.
    fn end(&self, result: &wasmtime::Result<()>, memory_denied: bool) {
        let left: Vec<u64> = {
            let mut state = self.lock();
            state.jobs = None;
            state.in_flight.keys().copied().collect()
        };
        for id in left {
            let end = match result {
                Err(error) if error.is::<DeadlineExceeded>() => RunEnd::TimedOut,
                Err(error) => RunEnd::Failed(wasmtime::format_err!("{}", trap_summary(error))),
                Ok(()) => RunEnd::Failed(wasmtime::format_err!(
                    "the instance ended before this request did"
                )),
            };
            self.settle(id, end, memory_denied);
        }
    }

    fn close(&self) {
        self.lock().jobs = None;
    }

    /// Closes the door if nothing was admitted since it went idle.
    fn close_if_idle(&self) {
        let mut state = self.lock();
        if state.in_flight.is_empty() {
            state.jobs = None;
        }
    }

    /// No guest task left: unless a request was admitted meanwhile, no
    /// deadline until the next one.
    fn idle(&self, accessor: &Accessor<Host>) {
        let mut state = self.lock();
        if state.in_flight.is_empty() {
            state.busy_until = None;
            accessor.with(|mut store| store.data_mut().deadline = far_future());
        }
    }

    /// A job came in: the store's deadline is the last admitted request's.
    fn taken(&self, deadline: Instant, accessor: &Accessor<Host>) {
        let mut state = self.lock();
        let until = state
            .busy_until
            .map_or(deadline, |until| until.max(deadline));
        state.busy_until = Some(until);
        accessor.with(|mut store| store.data_mut().deadline = until);
    }

    fn busy_until(&self) -> Option<Instant> {
        self.lock().busy_until
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DoorState> {
        // Every critical section is a few field updates that cannot panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A settlement that never came: the worker went without telling (it
/// panicked); the request is counted as failed.
fn lost() -> Settled {
    (
        RunEnd::Failed(wasmtime::format_err!("the shared instance was lost")),
        false,
    )
}

async fn run_worker(
    mut store: Store<Host>,
    service: Service,
    door: Arc<Door>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    idle: Duration,
    label: Arc<str>,
) {
    let result = {
        let serving = store.run_concurrent(async |accessor| {
            serve(accessor, &service, &door, &mut jobs, idle).await;
            Ok(())
        });
        let mut serving = std::pin::pin!(serving);
        loop {
            let until = door.busy_until().unwrap_or_else(far_future);
            tokio::select! {
                ran = &mut serving => break ran.and_then(|inner: wasmtime::Result<()>| inner),
                () = door.busy.notified() => {}
                () = tokio::time::sleep_until(until.into()) => {
                    // The event loop is stuck past every deadline (a
                    // host call holding the store): the epoch cannot
                    // stop it, dropping it does.
                    if door.busy_until().is_some_and(|until| until <= Instant::now()) {
                        break Err(DeadlineExceeded.into());
                    }
                }
            }
        }
    };
    let memory_denied = store.data().memory_denied();
    if let Err(error) = &result {
        tracing::warn!(
            handler = &*label,
            "a shared instance was stopped: {}",
            trap_summary(error)
        );
    }
    door.end(&result, memory_denied);
}

/// The event loop's part: admits jobs while the door is open, serves each
/// concurrently, closes the door after `idle` with nothing to do, then
/// lets what was admitted and whatever the guest still does end.
async fn serve(
    accessor: &Accessor<Host>,
    service: &Service,
    door: &Door,
    jobs: &mut mpsc::UnboundedReceiver<Job>,
    idle: Duration,
) {
    let mut running = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(()) = running.next(), if !running.is_empty() => {}
            job = jobs.recv() => match job {
                Some(job) => {
                    door.taken(job.deadline, accessor);
                    running.push(serve_one(accessor, service, door, job));
                }
                // Closed, and every admitted job taken.
                None => break,
            },
            () = rest(accessor, door, idle), if running.is_empty() => door.close_if_idle(),
        }
    }
    while running.next().await.is_some() {}
    poll_fn(|cx| accessor.poll_no_interesting_tasks(cx)).await;
}

/// Waits until the guest has no task left, marks the instance idle, then
/// waits `idle`.
async fn rest(accessor: &Accessor<Host>, door: &Door, idle: Duration) {
    poll_fn(|cx| accessor.poll_no_interesting_tasks(cx)).await;
    door.idle(accessor);
    tokio::time::sleep(idle).await;
}

/// One request on the shared instance, until its response body is done
/// (read to its end or dropped) or its deadline.
async fn serve_one(accessor: &Accessor<Host>, service: &Service, door: &Door, job: Job) {
    let Job {
        id,
        request,
        head,
        deadline,
    } = job;
    let served = tokio::time::timeout_at(deadline.into(), async {
        match super::http3::respond(accessor, service, request).await? {
            Ok(response) => {
                let (watch, finished) = oneshot::channel::<()>();
                // The body holds `watch`: it is done when it is dropped.
                let response = response.map(|body| {
                    body.map_frame(move |frame| {
                        let _held = &watch;
                        frame
                    })
                    .boxed_unsync()
                });
                let _ = head.send(Ok(response));
                let _ = finished.await;
            }
            Err(code) => {
                let _ = head.send(Err(code));
            }
        }
        wasmtime::Result::Ok(())
    })
    .await;
    let memory_denied = accessor.with(|mut store| store.data_mut().memory_denied());
    door.settle(id, RunEnd::from(served), memory_denied);
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Its critical sections are pushes, drains and retains that cannot panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
