//! Which version of a handler serves a request: pinned by a rule, else by
//! the request's bucket in the weighted split.
//!
//! A request gets a bucket in `0..10_000` (a basis point of traffic): drawn
//! at random, or derived from what keeps a user on one version (the
//! gateway's cookie, a header, the client address). Candidates own the low
//! buckets in order and the stable version the rest, so when a canary grows
//! from 10% to 25% everyone already on it stays there.
//!
//! Invariant: pure (no I/O, no clock); the same request, policy and weights
//! always land on the same version, unless the policy is per request.

use std::hash::{Hash as _, Hasher as _};
use std::net::IpAddr;

use http::{HeaderMap, HeaderValue, header};

use crate::config::deploy::{FULL, SplitPolicy, Sticky};

/// The cookie that carries a user's bucket.
pub const COOKIE: &str = "wasmgate-bucket";

/// How long a bucket cookie lasts: a day, long enough for a rollout.
const COOKIE_MAX_AGE: u32 = 86_400;

/// Where a request falls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The version index chosen.
    pub index: usize,
    /// A `Set-Cookie` to send, when the bucket is new and cookie-sticky.
    pub set_cookie: Option<HeaderValue>,
}

/// Chooses among versions named `names` with `weights` (basis points);
/// index 0 is the stable version, which takes what the others leave.
pub fn place(
    policy: &SplitPolicy,
    names: &[&str],
    weights: &[u32],
    headers: &HeaderMap,
    client: IpAddr,
) -> Placement {
    if let Some(index) = pinned(policy, names, headers) {
        return Placement {
            index,
            set_cookie: None,
        };
    }
    if weights.iter().skip(1).all(|weight| *weight == 0) {
        // One version takes everything: no bucket, no cookie.
        return Placement {
            index: 0,
            set_cookie: None,
        };
    }
    let (bucket, set_cookie) = bucket(policy, headers, client);
    Placement {
        index: by_bucket(weights, bucket),
        set_cookie,
    }
}

/// The version a pin header or cookie names, if it names one serving now.
fn pinned(policy: &SplitPolicy, names: &[&str], headers: &HeaderMap) -> Option<usize> {
    let by_header = policy
        .pin_header
        .as_ref()
        .and_then(|name| headers.get(name)?.to_str().ok());
    let by_cookie = || {
        policy
            .pin_cookie
            .as_deref()
            .and_then(|name| cookie(headers, name))
    };
    let wanted = by_header.or_else(by_cookie)?.trim();
    names.iter().position(|name| *name == wanted)
}

/// The index whose share holds `bucket`: candidates (1..) first, in order.
pub fn by_bucket(weights: &[u32], bucket: u32) -> usize {
    let mut upper = 0u32;
    for (index, weight) in weights.iter().enumerate().skip(1) {
        upper = upper.saturating_add(*weight);
        if bucket < upper {
            return index;
        }
    }
    0
}

fn bucket(policy: &SplitPolicy, headers: &HeaderMap, client: IpAddr) -> (u32, Option<HeaderValue>) {
    let hashed = |key: &dyn Fn(&mut std::collections::hash_map::DefaultHasher)| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key(&mut hasher);
        (hasher.finish() % u64::from(FULL)) as u32
    };
    match &policy.sticky {
        Sticky::Request => (fastrand::u32(0..FULL), None),
        Sticky::Client => (hashed(&|h| client.to_canonical().hash(h)), None),
        Sticky::Header(name) => match headers.get(name) {
            Some(value) => (hashed(&|h| value.as_bytes().hash(h)), None),
            None => (fastrand::u32(0..FULL), None),
        },
        Sticky::Cookie => {
            let kept = cookie(headers, COOKIE)
                .and_then(|value| value.parse::<u32>().ok())
                .filter(|bucket| *bucket < FULL);
            match kept {
                Some(bucket) => (bucket, None),
                None => {
                    let bucket = fastrand::u32(0..FULL);
                    let value = format!(
                        "{COOKIE}={bucket}; Path=/; Max-Age={COOKIE_MAX_AGE}; HttpOnly; SameSite=Lax"
                    );
                    (bucket, HeaderValue::from_str(&value).ok())
                }
            }
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn policy(sticky: Sticky) -> SplitPolicy {
        SplitPolicy {
            sticky,
            pin_header: Some(http::HeaderName::from_static("x-variant")),
            pin_cookie: Some("variant".into()),
        }
    }

    #[test]
    fn candidates_take_the_low_buckets_so_a_growing_share_keeps_its_users() {
        assert_eq!(by_bucket(&[0, 1_000], 999), 1);
        assert_eq!(by_bucket(&[0, 1_000], 1_000), 0);
        assert_eq!(by_bucket(&[0, 2_500], 999), 1, "still on the canary at 25%");
        assert_eq!(by_bucket(&[0, 1_000, 500], 1_200), 2);
        assert_eq!(by_bucket(&[0, 0, 0], 0), 0);
        assert_eq!(by_bucket(&[0, FULL], FULL - 1), 1);
    }

    #[test]
    fn a_random_split_lands_near_its_weight() {
        let headers = HeaderMap::new();
        let canary = (0..20_000)
            .filter(|_| {
                place(
                    &policy(Sticky::Request),
                    &["stable", "canary"],
                    &[0, 1_000],
                    &headers,
                    CLIENT,
                )
                .index
                    == 1
            })
            .count();
        assert!((1_600..2_400).contains(&canary), "{canary} of 20000");
    }

    #[test]
    fn a_cookie_keeps_a_bucket_and_is_set_only_once() {
        let first = place(
            &policy(Sticky::Cookie),
            &["stable", "canary"],
            &[0, 5_000],
            &HeaderMap::new(),
            CLIENT,
        );
        let set = first.set_cookie.expect("a new bucket is set");
        let pair = set
            .to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("pair")
            .to_string();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; {pair}")).expect("v"),
        );
        for _ in 0..50 {
            let again = place(
                &policy(Sticky::Cookie),
                &["stable", "canary"],
                &[0, 5_000],
                &headers,
                CLIENT,
            );
            assert_eq!(again.index, first.index);
            assert_eq!(again.set_cookie, None);
        }
    }

    #[test]
    fn a_pin_names_a_serving_version_and_nothing_else() {
        let names = ["stable", "b"];
        let mut headers = HeaderMap::new();
        headers.insert("x-variant", HeaderValue::from_static("b"));
        assert_eq!(
            place(&policy(Sticky::Request), &names, &[0, 0], &headers, CLIENT).index,
            1
        );
        headers.insert("x-variant", HeaderValue::from_static("nope"));
        assert_eq!(
            place(&policy(Sticky::Request), &names, &[0, 0], &headers, CLIENT).index,
            0
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("variant=b"));
        assert_eq!(
            place(&policy(Sticky::Request), &names, &[0, 0], &headers, CLIENT).index,
            1
        );
    }

    #[test]
    fn the_same_key_always_lands_on_the_same_version() {
        let sticky = policy(Sticky::Header(http::HeaderName::from_static("x-user")));
        let mut headers = HeaderMap::new();
        headers.insert("x-user", HeaderValue::from_static("alice"));
        let first = place(&sticky, &["stable", "c"], &[0, 5_000], &headers, CLIENT).index;
        for _ in 0..20 {
            assert_eq!(
                place(&sticky, &["stable", "c"], &[0, 5_000], &headers, CLIENT).index,
                first
            );
        }
        let by_client = policy(Sticky::Client);
        let first = place(
            &by_client,
            &["stable", "c"],
            &[0, 5_000],
            &HeaderMap::new(),
            CLIENT,
        )
        .index;
        assert_eq!(
            place(
                &by_client,
                &["stable", "c"],
                &[0, 5_000],
                &HeaderMap::new(),
                CLIENT
            )
            .index,
            first
        );
    }
}
