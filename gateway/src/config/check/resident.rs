//! `resident = true`, `required` and `restart = { max, within, backoff }`:
//! a `[component]` that runs from boot as one supervised instance.

use std::time::Duration;

use super::super::Resident;
use super::super::raw;
use super::Checker;
use super::compose::Section;

/// Restarts allowed within the window before a resident is marked failed.
const DEFAULT_MAX_RESTARTS: u32 = 5;
const DEFAULT_WITHIN: Duration = Duration::from_secs(60);
const DEFAULT_BACKOFF: Duration = Duration::from_millis(100);

impl Checker<'_> {
    /// The component's resident settings, if it is one; the keys need
    /// `resident = true` on a `[component]`.
    pub(super) fn resident(
        &mut self,
        key: &str,
        raw: &mut raw::RawHandler,
        section: Section,
    ) -> Option<Resident> {
        let resident = raw.resident.take();
        let required = raw.required.take();
        let restart = raw.restart.take();
        let mut refuse = |fields: &[(&str, bool)], reason: &str| {
            for (field, present) in fields {
                if *present {
                    self.problems.push(format!("{key}.{field}"), reason);
                }
            }
        };
        if section == Section::Handler {
            refuse(
                &[
                    ("resident", resident.is_some()),
                    ("required", required.is_some()),
                    ("restart", restart.is_some()),
                ],
                "only a [component] can be resident: a handler's instances live for one request or stream",
            );
            return None;
        }
        if resident != Some(true) {
            refuse(
                &[
                    ("required", required.is_some()),
                    ("restart", restart.is_some()),
                ],
                "applies to resident components only: add `resident = true`",
            );
            return None;
        }
        let restart = restart.unwrap_or_default();
        let max_restarts = match restart.max {
            Some(0) => {
                self.problems.push(
                    format!("{key}.restart.max"),
                    "must be at least 1 (a resident that may never restart fails at its first exit)",
                );
                DEFAULT_MAX_RESTARTS
            }
            Some(max) => max,
            None => DEFAULT_MAX_RESTARTS,
        };
        Some(Resident {
            required: required.unwrap_or(false),
            max_restarts,
            within: self.duration(
                &format!("{key}.restart.within"),
                restart.within,
                DEFAULT_WITHIN,
            ),
            backoff: self.duration(
                &format!("{key}.restart.backoff"),
                restart.backoff,
                DEFAULT_BACKOFF,
            ),
        })
    }
}
