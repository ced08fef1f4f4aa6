//! Which host capability each import asks for, and the load-time check that
//! a component asks only for what it was granted.
//!
//! Invariant: an import is either ambient (streams, stdio, the component's
//! own HTTP types), a capability by name, or foreign (another component's
//! interface, wired at load); a component importing a capability it was not
//! granted is refused before it is linked, naming the interface and the
//! capability.

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::config::{Capability, Grants};

/// A component imports a host capability it was not granted.
#[derive(Debug, thiserror::Error)]
#[error(
    "imports `{interface}`, which needs the `{capability}` capability it was not granted (add \"{capability}\" to its capabilities)"
)]
pub struct Ungranted {
    /// The import.
    pub interface: String,
    /// What it needs.
    pub capability: Capability,
}

/// What one import needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    /// Always linked: it reaches nothing a grant guards.
    Ambient,
    /// Linked only with this capability.
    Grant(Capability),
    /// Not the host's: a component in `imports` must export it.
    Foreign,
}

/// What the import named `name` (`wasi:http/outgoing-handler@0.2.6`) needs.
pub(super) fn need(name: &str) -> Need {
    let interface = name.split('@').next().unwrap_or(name);
    let Some((package, item)) = interface.split_once('/') else {
        return Need::Foreign;
    };
    match package {
        // Streams, exit, stdin and the terminal reach nothing; stdout and
        // stderr reach the log only with `logging`, the environment shows
        // only the variables `env` grants: std imports all of them.
        "wasi:io" | "wasi:cli" => Need::Ambient,
        "wasi:clocks" => Need::Grant(Capability::Clocks),
        "wasi:random" => Need::Grant(Capability::Random),
        "wasi:config" => Need::Grant(Capability::Config),
        "wasi:filesystem" | "wasi:sockets" => Need::Grant(Capability::System),
        "wasi:http" => match item {
            // Serving HTTP needs its types; sending needs `http`.
            "types" => Need::Ambient,
            _ => Need::Grant(Capability::Http),
        },
        "wasmgate:streaming" => match item {
            "pubsub" => Need::Grant(Capability::Pubsub),
            _ => Need::Ambient,
        },
        // Another WASI package the host may not link at all: the linker
        // names it if not.
        _ if package.starts_with("wasi:") => Need::Ambient,
        _ => Need::Foreign,
    }
}

/// Refuses `component` if it imports a capability not in `grants`;
/// otherwise returns its foreign imports, to be wired to components.
pub(super) fn check(
    engine: &Engine,
    component: &Component,
    grants: &Grants,
) -> Result<Vec<String>, Ungranted> {
    let mut foreign = Vec::new();
    for (name, _) in component.component_type().imports(engine) {
        match need(name) {
            Need::Ambient => {}
            Need::Grant(capability) if grants.has(capability) => {}
            Need::Grant(capability) => {
                return Err(Ungranted {
                    interface: name.to_string(),
                    capability,
                });
            }
            Need::Foreign => foreign.push(name.to_string()),
        }
    }
    Ok(foreign)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_are_sorted_into_ambient_granted_and_foreign() {
        assert_eq!(need("wasi:io/streams@0.2.6"), Need::Ambient);
        assert_eq!(need("wasi:cli/environment@0.2.0"), Need::Ambient);
        assert_eq!(need("wasi:http/types@0.2.6"), Need::Ambient);
        assert_eq!(
            need("wasi:http/outgoing-handler@0.2.6"),
            Need::Grant(Capability::Http)
        );
        assert_eq!(
            need("wasi:http/client@0.3.0"),
            Need::Grant(Capability::Http)
        );
        assert_eq!(
            need("wasi:config/store@0.2.0-rc.1"),
            Need::Grant(Capability::Config)
        );
        assert_eq!(
            need("wasi:clocks/wall-clock@0.2.6"),
            Need::Grant(Capability::Clocks)
        );
        assert_eq!(
            need("wasi:random/random@0.2.6"),
            Need::Grant(Capability::Random)
        );
        assert_eq!(
            need("wasi:filesystem/preopens@0.2.6"),
            Need::Grant(Capability::System)
        );
        assert_eq!(
            need("wasmgate:streaming/pubsub@0.1.0"),
            Need::Grant(Capability::Pubsub)
        );
        assert_eq!(need("wasmgate:greeter/translate@0.1.0"), Need::Foreign);
        assert_eq!(need("translate"), Need::Foreign);
    }
}
