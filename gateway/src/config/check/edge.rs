//! A route's `cors`, `headers`, `compress` and `decompress`: every origin,
//! method, header and type checked here, so the layers built from them at
//! load cannot fail.

use super::super::raw;
use super::super::{Compress, CorsPolicy, HeaderRule, RouteEdge};
use super::Checker;

impl Checker<'_> {
    /// The route's CORS policy, compression and header rules; `decompress`
    /// is `Some(whether the route reads a request body)` when asked for.
    pub(super) fn route_edge(
        &mut self,
        key: &str,
        cors: Option<raw::RawCors>,
        headers: Option<raw::RawHeaders>,
        compress: Option<raw::RawCompress>,
        decompress: Option<bool>,
    ) -> RouteEdge {
        if decompress == Some(false) {
            self.problems.push(
                format!("{key}.decompress"),
                "decompress applies to routes that read a request body (a handler's or a channel's)",
            );
        }
        RouteEdge {
            decompress: decompress == Some(true),
            compress: compress.and_then(|raw| self.compress(&format!("{key}.compress"), raw)),
            cors: cors.and_then(|cors| self.cors(&format!("{key}.cors"), cors)),
            headers: headers
                .map(|headers| self.header_rules(&format!("{key}.headers"), headers))
                .unwrap_or_default(),
        }
    }

    fn header_name(&mut self, key: &str, name: &str) -> Option<http::HeaderName> {
        let parsed = http::HeaderName::from_bytes(name.as_bytes()).ok();
        if parsed.is_none() {
            self.problems
                .push(key, format!("`{name}` is not a header name"));
        }
        parsed
    }

    fn header_value(&mut self, key: &str, value: &str) -> Option<http::HeaderValue> {
        let parsed = http::HeaderValue::from_str(value).ok();
        if parsed.is_none() {
            self.problems.push(
                key,
                format!("`{value}` is not a header value (visible ASCII and spaces)"),
            );
        }
        parsed
    }

    fn cors(&mut self, key: &str, raw: raw::RawCors) -> Option<CorsPolicy> {
        let any_origin = raw.origins.iter().any(|origin| origin == "*");
        let origins = if any_origin {
            if raw.origins.len() > 1 {
                self.problems.push(
                    format!("{key}.origins"),
                    "`*` allows every origin: list origins or give `*` alone",
                );
            }
            None
        } else {
            if raw.origins.is_empty() {
                self.problems.push(
                    format!("{key}.origins"),
                    "lists no origin: write origins like \"https://app.example.com\", or \"*\"",
                );
            }
            let mut origins = Vec::new();
            for (index, origin) in raw.origins.iter().enumerate() {
                let key = format!("{key}.origins[{index}]");
                let shaped = origin.split_once("://").is_some_and(|(scheme, rest)| {
                    matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains('/')
                });
                if !shaped {
                    self.problems.push(
                        &key,
                        format!("`{origin}` is not an origin: scheme://host[:port], with no path"),
                    );
                    continue;
                }
                origins.extend(self.header_value(&key, origin));
            }
            Some(origins)
        };
        let methods = raw
            .methods
            .unwrap_or_else(|| vec!["GET".into(), "HEAD".into(), "POST".into()])
            .iter()
            .enumerate()
            .filter_map(|(index, method)| {
                let parsed = method.parse::<http::Method>().ok();
                if parsed.is_none() {
                    self.problems.push(
                        format!("{key}.methods[{index}]"),
                        format!("`{method}` is not an HTTP method"),
                    );
                }
                parsed
            })
            .collect();
        let headers = match raw.headers {
            Some(list) if list.iter().any(|header| header == "*") => None,
            Some(list) => Some(
                list.iter()
                    .enumerate()
                    .filter_map(|(index, name)| {
                        self.header_name(&format!("{key}.headers[{index}]"), name)
                    })
                    .collect(),
            ),
            None => Some(Vec::new()),
        };
        let expose = raw
            .expose
            .iter()
            .enumerate()
            .filter_map(|(index, name)| self.header_name(&format!("{key}.expose[{index}]"), name))
            .collect();
        let credentials = raw.credentials.unwrap_or(false);
        if credentials && (origins.is_none() || headers.is_none()) {
            // Browsers refuse credentials with a wildcard; tower-http would
            // refuse the layer.
            self.problems.push(
                format!("{key}.credentials"),
                "credentials cannot be allowed with `*` origins or headers: list them",
            );
            return None;
        }
        let max_age = raw.max_age.map(|text| {
            self.duration(
                &format!("{key}.max_age"),
                Some(text),
                std::time::Duration::ZERO,
            )
        });
        Some(CorsPolicy {
            origins,
            methods,
            headers,
            expose,
            credentials,
            max_age,
        })
    }

    fn compress(&mut self, key: &str, raw: raw::RawCompress) -> Option<Compress> {
        let (min_size, types) = match raw {
            raw::RawCompress::On(false) => return None,
            raw::RawCompress::On(true) => (None, None),
            raw::RawCompress::Table { min_size, types } => (min_size, types),
        };
        let min_size = min_size.unwrap_or(Compress::DEFAULT_MIN_SIZE);
        let types = match types {
            None => Compress::DEFAULT_TYPES
                .iter()
                .map(|ty| ty.to_string())
                .collect(),
            Some(types) => types
                .into_iter()
                .enumerate()
                .filter(|(index, ty)| {
                    let shaped = ty.split_once('/').is_some_and(|(kind, sub)| {
                        !kind.is_empty() && !sub.is_empty() && !ty.contains(char::is_whitespace)
                    });
                    if !shaped {
                        self.problems.push(
                            format!("{key}.types[{index}]"),
                            format!("`{ty}` is not a content type: type/subtype or type/*"),
                        );
                    }
                    shaped && ty != "text/event-stream"
                })
                .map(|(_, ty)| ty.to_ascii_lowercase())
                .collect(),
        };
        Some(Compress { min_size, types })
    }

    fn header_rules(&mut self, key: &str, raw: raw::RawHeaders) -> Vec<HeaderRule> {
        let mut rules = Vec::new();
        for (field, pairs) in [("set", raw.set), ("append", raw.append)] {
            for (name, value) in pairs {
                let key = format!("{key}.{field}.{name}");
                let (Some(parsed), Some(value)) = (
                    self.header_name(&key, &name),
                    self.header_value(&key, &value),
                ) else {
                    continue;
                };
                rules.push(if field == "set" {
                    HeaderRule::Set(parsed, value)
                } else {
                    HeaderRule::Append(parsed, value)
                });
            }
        }
        for (index, name) in raw.remove.iter().enumerate() {
            if let Some(parsed) = self.header_name(&format!("{key}.remove[{index}]"), name) {
                rules.push(HeaderRule::Remove(parsed));
            }
        }
        rules
    }
}
