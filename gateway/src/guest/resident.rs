//! Resident components (`resident = true`): one long-lived instance each,
//! started when its generation goes live and supervised until the gateway
//! stops. A program (it exports `wasi:cli/run`) runs; it is ready when it
//! prints `READY` on stdout, may publish on the pub/sub hub, and its
//! output goes to the log. A service (no `run`) serves calls on its shared
//! instance ([`super::wire::Shared`]), ready once instantiated.
//!
//! Invariant: each resident name has one supervised version serving, the
//! live generation's; a new version starts next to the old one, which is
//! stopped only once the new one is ready (or is itself stopped); an ended
//! run restarts after the back-off [`super::supervision`] decides, never in
//! a tight loop, and a crash-looped one waits for a new version. A program
//! gets its CPU budget (`limits.fuel`) afresh every [`SLICE`]; using it up
//! within one slice ends the run like a trap. [`Residents::stop_all`] stops
//! them, after the drain, so they outlive the requests that need them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::handler::Handler;
use super::pubsub::Hub;
use super::supervision::{Exit, Next, SLICE, State, Supervision};
use super::wire::{Library, Residence, Shared};
use crate::config::HandlerName;

/// How long [`Residents::stop_all`] waits for each resident to stop.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// The supervised residents, by name.
#[derive(Default)]
pub struct Residents {
    running: Mutex<HashMap<HandlerName, Running>>,
}

/// One supervised version.
struct Running {
    handler: Arc<Handler>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// The version it replaces, while that one still runs.
    previous: Option<Arc<Supervision>>,
}

/// One resident as `/status` and `/readyz` see it.
pub struct Seen {
    /// Its name.
    pub name: HandlerName,
    /// The serving version's record.
    pub report: super::supervision::Report,
    /// Whether it can be relied on now: its version is ready, or the
    /// version it is replacing still is.
    pub ready: bool,
}

impl Running {
    /// Tells it to stop and waits (bounded) until it has.
    async fn stop(self) {
        self.stop.send_replace(true);
        let _ = tokio::time::timeout(STOP_WAIT, self.task).await;
    }
}

impl Residents {
    /// Makes the supervised residents those of `components` (a generation
    /// just published): new versions start, each replacing its previous
    /// version once ready; removed residents stop.
    pub fn sync<'a>(
        &self,
        hub: &Arc<Hub>,
        components: impl Iterator<Item = (&'a HandlerName, &'a Arc<Handler>)>,
    ) {
        let wanted: HashMap<HandlerName, Arc<Handler>> = components
            .filter(|(_, handler)| handler.library().is_some_and(|l| l.residence().is_some()))
            .map(|(name, handler)| (name.clone(), Arc::clone(handler)))
            .collect();
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let names: Vec<HandlerName> = running.keys().cloned().collect();
        for name in names {
            if !wanted.contains_key(&name)
                && let Some(gone) = running.remove(&name)
            {
                tracing::info!(component = %name, "resident removed from the config: stopping it");
                tokio::spawn(gone.stop());
            }
        }
        for (name, handler) in wanted {
            if running
                .get(&name)
                .is_some_and(|current| Arc::ptr_eq(&current.handler, &handler))
            {
                continue;
            }
            let Some(started) = start(hub, &name, handler) else {
                continue;
            };
            let (mut started, ready) = started;
            let replaced = running.remove(&name);
            started.previous = replaced
                .as_ref()
                .and_then(|previous| supervision_of(&previous.handler));
            let successor_stops = started.stop.subscribe();
            running.insert(name.clone(), started);
            if let Some(previous) = replaced {
                tokio::spawn(hand_over(name, previous, ready, successor_stops));
            }
        }
    }

    /// Every supervised resident, by name.
    pub fn seen(&self) -> Vec<Seen> {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let mut seen: Vec<Seen> = running
            .iter()
            .filter_map(|(name, running)| {
                let report = supervision_of(&running.handler)?.report();
                let ready = report.state == State::Ready
                    || running
                        .previous
                        .as_ref()
                        .is_some_and(|previous| previous.state() == State::Ready);
                Some(Seen {
                    name: name.clone(),
                    report,
                    ready,
                })
            })
            .collect();
        seen.sort_by(|a, b| a.name.cmp(&b.name));
        seen
    }

    /// Stops every resident (the drain is over) and waits for them.
    pub async fn stop_all(&self) {
        let all: Vec<Running> = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, running)| running)
            .collect();
        futures::future::join_all(all.into_iter().map(Running::stop)).await;
    }
}

/// Starts supervising `handler`'s resident; also returns its readiness.
fn start(
    hub: &Arc<Hub>,
    name: &HandlerName,
    handler: Arc<Handler>,
) -> Option<(Running, watch::Receiver<bool>)> {
    let library = Arc::clone(handler.library()?);
    let (stop, stopping) = watch::channel(false);
    let (ready, readiness) = watch::channel(false);
    let task = match library.residence()? {
        Residence::Program { .. } => tokio::spawn(run_program(
            library,
            Arc::clone(hub),
            Arc::new(ready),
            stopping,
        )),
        Residence::Service(shared) => {
            // Its instance was made at load.
            ready.send_replace(true);
            let shared = Arc::clone(shared);
            tokio::spawn(serve_calls(library, shared, Arc::clone(hub), stopping))
        }
    };
    tracing::info!(component = %name, "resident started");
    Some((
        Running {
            handler,
            stop,
            task,
            previous: None,
        },
        readiness,
    ))
}

/// A resident handler's supervision record.
fn supervision_of(handler: &Handler) -> Option<Arc<Supervision>> {
    Some(Arc::clone(handler.library()?.residence()?.supervision()))
}

/// Stops `previous` once its successor is ready, or once the successor is
/// itself told to stop; while the successor is not ready (still starting,
/// or crash-looping) the previous version keeps running.
async fn hand_over(
    name: HandlerName,
    previous: Running,
    mut ready: watch::Receiver<bool>,
    mut successor_stops: watch::Receiver<bool>,
) {
    tokio::select! {
        became = ready.wait_for(|ready| *ready) => {
            if became.is_ok() {
                tracing::info!(component = %name, "new resident version ready: stopping the previous one");
            }
        }
        () = stopped(&mut successor_stops) => {}
    }
    previous.stop().await;
}

/// Waits until `stop` is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Runs a program resident, restarting it after each end until it is
/// stopped or crash-loops.
async fn run_program(
    library: Arc<Library>,
    hub: Arc<Hub>,
    ready: super::log::Ready,
    mut stop: watch::Receiver<bool>,
) {
    let Some(Residence::Program {
        command,
        supervision,
    }) = library.residence()
    else {
        return;
    };
    let fuel = library.stores().fuel;
    loop {
        supervision.set(State::Starting);
        ready.send_replace(false);
        let mut readiness = ready.subscribe();
        let mut store = program_store(&library, &hub, &ready);
        let ended = {
            let mut ran = std::pin::pin!(async {
                let instance = command.instantiate_async(&mut store).await?;
                instance.wasi_cli_run().call_run(&mut store).await
            });
            loop {
                tokio::select! {
                    ended = &mut ran => break ended,
                    became = readiness.wait_for(|ready| *ready), if !*readiness.borrow() => {
                        if became.is_ok() {
                            supervision.set(State::Ready);
                        }
                    }
                    () = stopped(&mut stop) => {
                        supervision.set(State::Stopped);
                        return;
                    }
                }
            }
        };
        // Its last unfinished output line goes to the log with the store.
        drop(store);
        let exit = match ended {
            Ok(Ok(())) => Exit::Code(0),
            Ok(Err(())) => Exit::Code(1),
            Err(error) => Exit::from_error(&error, fuel),
        };
        if !after_end(supervision, exit, &mut stop).await {
            return;
        }
    }
}

/// Records an end and waits out the back-off; `false`: do not start again
/// (stopped, or crash-looped and now stopped).
async fn after_end(
    supervision: &Supervision,
    exit: Exit,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    match supervision.ended(exit, Instant::now()) {
        Next::RestartIn(delay) => {
            tokio::select! {
                () = tokio::time::sleep(delay) => true,
                () = stopped(stop) => {
                    supervision.set(State::Stopped);
                    false
                }
            }
        }
        Next::Failed => {
            stopped(stop).await;
            false
        }
    }
}

/// A program's store: its handler's grants, the hub to publish on, its
/// `READY` signal, no deadline, and its fuel refilled every [`SLICE`].
fn program_store(
    library: &Library,
    hub: &Arc<Hub>,
    ready: &super::log::Ready,
) -> wasmtime::Store<super::Host> {
    let mut maker = library.stores().clone();
    maker.ready = Some(Arc::clone(ready));
    let budget = maker.fuel;
    let mut store = maker.make(library.engine());
    store.data_mut().attachment.hub = Some(Arc::clone(hub));
    if let Some(budget) = budget {
        let ticks_per_slice =
            u32::try_from(SLICE.as_millis() / super::engine::EPOCH_TICK.as_millis())
                .unwrap_or(u32::MAX)
                .max(1);
        let mut ticks = 0u32;
        // Replaces the deadline callback: a resident has no deadline, only
        // its budget per slice; it still yields every tick.
        store.epoch_deadline_callback(move |mut store| {
            ticks += 1;
            if ticks >= ticks_per_slice {
                ticks = 0;
                store.set_fuel(budget)?;
            }
            Ok(wasmtime::UpdateDeadline::Yield(1))
        });
    }
    store
}

/// Supervises a service resident: after its shared instance failed, waits
/// out the back-off and makes the next one.
async fn serve_calls(
    library: Arc<Library>,
    shared: Arc<Shared>,
    hub: Arc<Hub>,
    mut stop: watch::Receiver<bool>,
) {
    shared.attach(&hub).await;
    loop {
        let delay = tokio::select! {
            delay = shared.emptied() => delay,
            () = stopped(&mut stop) => break,
        };
        let Some(delay) = delay else {
            // Crash-looped: it waits for a new version.
            stopped(&mut stop).await;
            break;
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(&mut stop) => break,
        }
        if let Err(error) = shared.fill(&library).await {
            tracing::warn!(
                component = library.name(),
                "resident could not be instantiated: {error:#}"
            );
        }
    }
    shared.supervision.set(State::Stopped);
}
