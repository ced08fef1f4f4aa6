//! Turns a `.wasm` file into a handler's pre-instance.
//!
//! Invariant: a component is read, compiled, linked against the host and
//! type-checked against `wasi:http/incoming-handler` here, at load time; a
//! component that passes is never rejected at its first request.

use std::path::Path;
use std::time::{Duration, Instant};

use wasmtime::component::Component;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p3::bindings::ServicePre;

use super::bindings::{SseServicePre, WebsocketServicePre};
use super::cache::{CompileCache, ContentHash};
use super::capability;
use super::engine::GuestEngine;
use super::host::Host;
use crate::config::{Grants, HandlerWorld};

/// Why a file cannot serve as a handler.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file is missing or unreadable.
    #[error("cannot read the file: {0}")]
    Read(#[from] std::io::Error),
    /// The path names a FIFO, a device, a socket or a directory: reading
    /// one could block forever or never end.
    #[error("not a regular file ({0})")]
    NotRegularFile(&'static str),
    /// Larger than any component is allowed to be.
    #[error("{0} bytes, more than a component may have ({max} MiB)", max = MAX_COMPONENT_SIZE >> 20)]
    TooLarge(u64),
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file (it does not start with the `\\0asm` header)")]
    NotWasm,
    /// A core module rather than a component.
    #[error(
        "a core WebAssembly module, not a component: build it for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    /// The component does not validate or compile.
    #[error("the component does not compile: {0}")]
    Compile(String),
    /// The component imports something the host does not provide.
    #[error("the component cannot be linked: {0}")]
    Link(String),
    /// The component does not export an HTTP handler interface.
    #[error(
        "the component exports neither wasi:http/incoming-handler@0.2 nor wasi:http/handler@0.3: {0}"
    )]
    NotHttpHandler(String),
    /// The component does not export the stream handler interface its world needs.
    #[error("the component does not export wasmgate:streaming/{0}@0.1: {1}")]
    NotStreamHandler(&'static str, String),
    /// The component imports a host capability it was not granted.
    #[error(transparent)]
    Ungranted(#[from] capability::Ungranted),
    /// The component imports an interface no listed component exports.
    #[error(
        "imports `{interface}`, which no host capability provides and {listed}: list the component that exports it in `imports`"
    )]
    Unwired {
        /// The import.
        interface: String,
        /// What was looked at.
        listed: String,
    },
    /// An import and the export wired to it disagree on a function's type.
    #[error(
        "imports `{interface}`, but its function `{function}` does not match the one component `{component}` exports: {reason}"
    )]
    Mismatch {
        /// The interface.
        interface: String,
        /// The function.
        function: String,
        /// The component exporting it.
        component: String,
        /// How they differ.
        reason: String,
    },
    /// Wiring imports to components failed otherwise.
    #[error("cannot be wired: {0}")]
    Wiring(String),
    /// A `config.KEY` value cannot be resolved.
    #[error("{0}")]
    Config(String),
    /// A `files` directory is missing.
    #[error("{0}")]
    Files(String),
    /// The component cannot be instantiated (e.g. its initial memory exceeds
    /// the handler's limit).
    #[error("the component cannot be instantiated: {0}")]
    Instantiate(String),
    /// Trusted keys are configured and the file's signature does not pass.
    #[error("refused: {0}")]
    Signature(#[from] crate::deploy::signing::VerifyError),
    /// A stored version is missing, or its bytes no longer match its hash.
    #[error("stored version {0}")]
    Stored(String),
}

/// A component ready to be instantiated per request.
pub struct Loaded {
    /// The type-checked pre-instance.
    pub pre: Pre,
    /// What the file contained.
    pub hash: ContentHash,
    /// Whether it was compiled now or taken from the cache.
    pub origin: Origin,
    /// How long loading took.
    pub load_time: Duration,
}

/// A pre-instance, typed by the world the component implements.
pub enum Pre {
    /// A wasi:http handler, 0.2 or 0.3.
    Http(HttpPre),
    /// `wasmgate:streaming/websocket-service`.
    Websocket(WebsocketServicePre<Host>),
    /// `wasmgate:streaming/sse-service`.
    Sse(SseServicePre<Host>),
    /// A component linked only when started, once the components its
    /// imports are wired to have started (and every `[component]`).
    Unlinked(Unlinked),
}

/// A compiled component waiting for its wiring.
#[derive(Clone)]
pub struct Unlinked {
    pub(super) component: Component,
    /// Its imports no host capability serves.
    pub(super) foreign: Vec<String>,
}

/// A wasi:http handler's pre-instance, by the version it speaks.
pub enum HttpPre {
    /// `wasi:http/proxy` (WASI 0.2, `incoming-handler`).
    P2(ProxyPre<Host>),
    /// `wasi:http/service` (WASI 0.3, `handler`).
    P3(ServicePre<Host>),
}

/// Where a loaded component's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Compiled by Cranelift just now.
    Compiled,
    /// Mapped from the compile cache.
    Cache,
}

/// The bytes of a component file and their hash, read once.
pub struct ComponentFile {
    bytes: Vec<u8>,
    /// SHA-256 of the bytes.
    pub hash: ContentHash,
}

/// The largest component file read: far above what toolchains produce
/// (an interpreter-bundling Python component is ~40 MiB), far below what
/// would hurt the gateway to hold.
pub const MAX_COMPONENT_SIZE: u64 = 256 << 20;

impl ComponentFile {
    /// Reads the file at `path`, which must be a regular file (a symlink to
    /// one is fine) of at most [`MAX_COMPONENT_SIZE`] bytes. It is opened
    /// without blocking and checked before a byte is read, so a FIFO or a
    /// device dropped in its place is refused at once.
    pub fn read(path: &Path) -> Result<Self, LoadError> {
        use std::io::Read as _;
        use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(path)?;
        let meta = file.metadata()?;
        let kind = meta.file_type();
        if !kind.is_file() {
            return Err(LoadError::NotRegularFile(if kind.is_fifo() {
                "a FIFO"
            } else if kind.is_char_device() {
                "a character device"
            } else if kind.is_block_device() {
                "a block device"
            } else if kind.is_socket() {
                "a socket"
            } else if kind.is_dir() {
                "a directory"
            } else {
                "not a file"
            }));
        }
        if meta.len() > MAX_COMPONENT_SIZE {
            return Err(LoadError::TooLarge(meta.len()));
        }
        // The length may change while reading (a copy still going): never
        // read past the cap whatever it says now.
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.take(MAX_COMPONENT_SIZE + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_COMPONENT_SIZE {
            return Err(LoadError::TooLarge(bytes.len() as u64));
        }
        let hash = ContentHash::of(&bytes);
        Ok(Self { bytes, hash })
    }

    /// A component received whole (an upload), under the same size cap.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, LoadError> {
        if bytes.len() as u64 > MAX_COMPONENT_SIZE {
            return Err(LoadError::TooLarge(bytes.len() as u64));
        }
        let hash = ContentHash::of(&bytes);
        Ok(Self { bytes, hash })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Compiles (or maps from `cache`) and type-checks `file`. Compiling is
/// CPU-heavy (hundreds of milliseconds for a small component): call it off
/// the request path.
pub fn load(
    engine: &GuestEngine,
    cache: Option<&CompileCache>,
    file: &ComponentFile,
    world: HandlerWorld,
    grants: &Grants,
) -> Result<Loaded, LoadError> {
    let started = Instant::now();
    let bytes = &file.bytes;
    if wasmparser::Parser::is_core_wasm(bytes) {
        return Err(LoadError::CoreModule);
    }
    if !wasmparser::Parser::is_component(bytes) {
        return Err(LoadError::NotWasm);
    }
    let cached = cache.and_then(|cache| cache.load(engine.engine(), &file.hash));
    let origin = if cached.is_some() {
        Origin::Cache
    } else {
        Origin::Compiled
    };
    let component = match cached {
        Some(component) => component,
        None => {
            let component = Component::new(engine.engine(), bytes)
                .map_err(|error| LoadError::Compile(format!("{error:#}")))?;
            if let Some(cache) = cache {
                cache.store(&file.hash, &component);
            }
            component
        }
    };
    let foreign = capability::check(engine.engine(), &component, grants)?;
    let pre = if world == HandlerWorld::Component || !foreign.is_empty() {
        Pre::Unlinked(Unlinked { component, foreign })
    } else {
        let instance_pre = engine
            .linker()
            .instantiate_pre(&component)
            .map_err(|error| LoadError::Link(format!("{error:#}")))?;
        typed(world, instance_pre)?
    };
    Ok(Loaded {
        pre,
        hash: file.hash.clone(),
        origin,
        load_time: started.elapsed(),
    })
}

/// A linked component, checked against the world it is served as.
pub(super) fn typed(
    world: HandlerWorld,
    instance_pre: wasmtime::component::InstancePre<Host>,
) -> Result<Pre, LoadError> {
    Ok(match world {
        // Told apart by their exports: 0.3's `handler`, else 0.2's
        // `incoming-handler`.
        HandlerWorld::Http => Pre::Http(match ServicePre::new(instance_pre.clone()) {
            Ok(service) => HttpPre::P3(service),
            Err(_) => ProxyPre::new(instance_pre)
                .map(HttpPre::P2)
                .map_err(|error| LoadError::NotHttpHandler(format!("{error:#}")))?,
        }),
        HandlerWorld::Websocket => WebsocketServicePre::new(instance_pre)
            .map(Pre::Websocket)
            .map_err(|error| {
                LoadError::NotStreamHandler("websocket-handler", format!("{error:#}"))
            })?,
        HandlerWorld::Sse => SseServicePre::new(instance_pre)
            .map(Pre::Sse)
            .map_err(|error| LoadError::NotStreamHandler("sse-handler", format!("{error:#}")))?,
        HandlerWorld::Component => {
            return Err(LoadError::Wiring(
                "a component is served through its exports, not a world".into(),
            ));
        }
    })
}
