//! What composition adds to a component's settings: the host capabilities it
//! is granted, its configuration values (with `${process:env:NAME|default}`
//! templates), and the check that imports and interceptors form no cycle.
//!
//! Invariant: a template is parsed here, once, and resolved only at load
//! (where the process environment and the `.env` file are read); a grant is
//! a closed set of names, so a component can never be granted something
//! this file does not name.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A host capability a component may be granted by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// Outgoing HTTP (`wasi:http/outgoing-handler`), still only to the
    /// hosts its `outbound` rules allow.
    Http,
    /// The values of the environment variables its `env` grants (without
    /// it, `wasi:cli/environment` answers with nothing).
    Env,
    /// Its configuration values (`wasi:config/store`).
    Config,
    /// Its stdout and stderr become log lines (without it they are dropped).
    Logging,
    /// Topics (`wasmgate:streaming/pubsub`).
    Pubsub,
    /// Wall and monotonic clocks (`wasi:clocks`).
    Clocks,
    /// Random bytes (`wasi:random`).
    Random,
    /// `wasi:filesystem` and `wasi:sockets` imports: linked, but no directory is
    /// ever preopened and no socket may be opened, so they reach nothing.
    System,
}

impl Capability {
    /// Every capability, in the order names are listed in messages.
    pub const ALL: [Self; 8] = [
        Self::Http,
        Self::Env,
        Self::Config,
        Self::Logging,
        Self::Pubsub,
        Self::Clocks,
        Self::Random,
        Self::System,
    ];

    /// The name written in `capabilities = [...]`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Env => "env",
            Self::Config => "config",
            Self::Logging => "logging",
            Self::Pubsub => "pubsub",
            Self::Clocks => "clocks",
            Self::Random => "random",
            Self::System => "system",
        }
    }

    /// The capability called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|capability| capability.name() == name)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The capabilities granted to one handler or component.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grants(BTreeSet<Capability>);

impl Grants {
    /// A handler that names no `capabilities`: everything a handler had
    /// before grants existed, so existing configurations keep working.
    pub fn handler_default() -> Self {
        Self(Capability::ALL.into_iter().collect())
    }

    /// A `[component.NAME]` that names no `capabilities`: its log lines and
    /// nothing else.
    pub fn component_default() -> Self {
        Self([Capability::Logging].into_iter().collect())
    }

    /// Exactly these.
    pub fn of(capabilities: impl IntoIterator<Item = Capability>) -> Self {
        Self(capabilities.into_iter().collect())
    }

    /// Whether `capability` is granted.
    pub fn has(&self, capability: Capability) -> bool {
        self.0.contains(&capability)
    }
}

/// One configuration value: literal text and `${process:env:NAME|default}`
/// references, resolved at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigValue(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Env {
        name: String,
        default: Option<String>,
    },
}

/// A variable a value needs is set neither in the process nor in `.env`,
/// and the reference gives no default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingVariable(pub String);

impl ConfigValue {
    /// Parses `text`. `$$` is a literal `$`; a reference is
    /// `${process:env:NAME}` or `${process:env:NAME|default}`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(dollar) = rest.find('$') {
            literal.push_str(&rest[..dollar]);
            rest = &rest[dollar..];
            if let Some(after) = rest.strip_prefix("$$") {
                literal.push('$');
                rest = after;
                continue;
            }
            let Some(body) = rest.strip_prefix("${") else {
                literal.push('$');
                rest = &rest[1..];
                continue;
            };
            let end = body
                .find('}')
                .ok_or_else(|| format!("`{text}`: a `${{` is never closed by `}}`"))?;
            let reference = &body[..end];
            let spec = reference.strip_prefix("process:env:").ok_or_else(|| {
                format!(
                    "`${{{reference}}}` is not a reference this gateway resolves; write ${{process:env:NAME}} or ${{process:env:NAME|default}} (and $$ for a literal $)"
                )
            })?;
            let (name, default) = match spec.split_once('|') {
                Some((name, default)) => (name, Some(default.to_string())),
                None => (spec, None),
            };
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(format!("`{name}` is not an environment variable name"));
            }
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Env {
                name: name.to_string(),
                default,
            });
            rest = &body[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() || parts.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Self(parts))
    }

    /// The value, with each reference looked up by `lookup` (the process
    /// environment, then `.env`).
    pub fn resolve(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<String, MissingVariable> {
        let mut value = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => value.push_str(text),
                Part::Env { name, default } => match lookup(name).or_else(|| default.clone()) {
                    Some(found) => value.push_str(&found),
                    None => return Err(MissingVariable(name.clone())),
                },
            }
        }
        Ok(value)
    }
}

/// The first cycle in `edges` (each name → the names it depends on), as
/// the path that closes it: `a → b → a`.
pub fn find_cycle<N: Ord + Clone + fmt::Display>(edges: &BTreeMap<N, Vec<N>>) -> Option<String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit<N: Ord + Clone + fmt::Display>(
        node: &N,
        edges: &BTreeMap<N, Vec<N>>,
        marks: &mut BTreeMap<N, Mark>,
        path: &mut Vec<N>,
    ) -> Option<String> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Visiting) => {
                let start = path.iter().position(|seen| seen == node).unwrap_or(0);
                let mut names: Vec<String> =
                    path[start..].iter().map(ToString::to_string).collect();
                names.push(node.to_string());
                return Some(names.join(" → "));
            }
            None => {}
        }
        marks.insert(node.clone(), Mark::Visiting);
        path.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut marks, &mut Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str, env: &[(&str, &str)]) -> Result<String, MissingVariable> {
        let value = ConfigValue::parse(text).expect("parses");
        value.resolve(|name| {
            env.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_string())
        })
    }

    #[test]
    fn references_resolve_from_the_lookup_then_their_default() {
        assert_eq!(resolve("es-ES", &[]), Ok("es-ES".into()));
        assert_eq!(
            resolve("${process:env:LOCALE|en-US}", &[]),
            Ok("en-US".into())
        );
        assert_eq!(
            resolve("${process:env:LOCALE|en-US}", &[("LOCALE", "de-DE")]),
            Ok("de-DE".into())
        );
        assert_eq!(
            resolve(
                "http://${process:env:HOST}:${process:env:PORT|80}/v1",
                &[("HOST", "api")]
            ),
            Ok("http://api:80/v1".into())
        );
        assert_eq!(resolve("${process:env:EMPTY|}", &[]), Ok(String::new()));
        assert_eq!(
            resolve("costs $5 and $${x}", &[]),
            Ok("costs $5 and ${x}".into())
        );
        assert_eq!(
            resolve("${process:env:NOPE}", &[]),
            Err(MissingVariable("NOPE".into()))
        );
    }

    #[test]
    fn malformed_references_are_refused_with_the_fix() {
        let unclosed = ConfigValue::parse("${process:env:X").expect_err("unclosed");
        assert!(unclosed.contains("never closed"), "{unclosed}");
        let other = ConfigValue::parse("${vault:secret}").expect_err("unknown source");
        assert!(other.contains("${process:env:NAME|default}"), "{other}");
        assert!(ConfigValue::parse("${process:env:}").is_err());
    }

    #[test]
    fn a_cycle_is_named_by_its_path() {
        let edges: BTreeMap<&str, Vec<&str>> = [
            ("greeter", vec!["translator"]),
            ("translator", vec!["logger"]),
            ("logger", vec!["translator"]),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            find_cycle(&edges).as_deref(),
            Some("translator → logger → translator")
        );
        let acyclic: BTreeMap<&str, Vec<&str>> =
            [("greeter", vec!["translator"]), ("translator", vec![])]
                .into_iter()
                .collect();
        assert_eq!(find_cycle(&acyclic), None);
    }

    #[test]
    fn capabilities_are_a_closed_set_of_names() {
        for capability in Capability::ALL {
            assert_eq!(Capability::parse(capability.name()), Some(capability));
        }
        assert_eq!(Capability::parse("filesystem"), None);
        assert!(!Grants::component_default().has(Capability::Http));
        assert!(Grants::handler_default().has(Capability::Http));
    }
}
