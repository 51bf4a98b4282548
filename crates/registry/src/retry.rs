//! Retries: which failures are worth another try, and how long to wait.
//!
//! `oci-client` has no retries of its own and its errors carry the status
//! but not the response headers, so a 429's `Retry-After` is not visible in
//! the error. A rate limiter answers every request of the client while it is
//! limiting, so after a 429 we ask the registry's `/v2/` once ourselves and
//! read `Retry-After` from that answer.

use crate::error::{RegistryError, Result, Target};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// How hard to try.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per request, the first one included.
    pub max_attempts: u32,
    /// The wait before the second attempt; it doubles each time.
    pub base_delay: Duration,
    /// The longest wait between two attempts (Retry-After aside).
    pub max_delay: Duration,
    /// The longest Retry-After honoured; longer ones fail the request.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (attempt counts from 1):
    /// exponential, with "equal jitter" (half fixed, half random) so that
    /// parallel transfers that failed together do not retry together.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(self.max_delay);
        let half = capped / 2;
        half + half.mul_f64(jitter_fraction())
    }
}

/// A number in [0, 1) that differs between calls; no need for a real RNG.
fn jitter_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(COUNTER.fetch_add(1, Ordering::Relaxed));
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Turn an `oci-client` error into ours, with the target named.
pub(crate) fn from_oci(
    err: OciDistributionError,
    target: &Target,
    auth_hint: &str,
) -> RegistryError {
    let target = target.clone();
    let denied = |status: u16| RegistryError::Denied {
        target: target.clone(),
        status,
        hint: auth_hint.to_string(),
    };
    match err {
        OciDistributionError::ServerError { code, message, .. } => {
            status_error(code, message, target, auth_hint)
        }
        OciDistributionError::UnauthorizedError { .. } => denied(401),
        OciDistributionError::AuthenticationFailure(reason) => RegistryError::Denied {
            target,
            status: 401,
            hint: format!("{auth_hint}; the token service said: {}", reason.trim()),
        },
        OciDistributionError::ImageManifestNotFoundError(_) => RegistryError::NotFound { target },
        OciDistributionError::RegistryError { envelope, .. } => {
            let message = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            let code = envelope.errors.first().map(|e| &e.code);
            match code {
                Some(
                    OciErrorCode::BlobUnknown
                    | OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::NotFound,
                ) => RegistryError::NotFound { target },
                Some(OciErrorCode::Unauthorized) => denied(401),
                Some(OciErrorCode::Denied) => denied(403),
                Some(OciErrorCode::Toomanyrequests) => RegistryError::Status {
                    target,
                    status: 429,
                    message,
                },
                _ => RegistryError::Status {
                    target,
                    status: 400,
                    message,
                },
            }
        }
        OciDistributionError::RequestError(e) => match e.status() {
            Some(s) => status_error(s.as_u16(), e.to_string(), target, auth_hint),
            None => {
                let message = describe_reqwest(&e);
                // A name that does not resolve will not resolve in a second either.
                if message.contains("dns error") {
                    RegistryError::Unreachable { target, message }
                } else {
                    RegistryError::Transport { target, message }
                }
            }
        },
        OciDistributionError::IoError(e) => RegistryError::Transport {
            target,
            message: e.to_string(),
        },
        OciDistributionError::DigestError(e) => {
            let (expected, actual) = match &e {
                oci_client::errors::DigestError::VerificationError { expected, actual } => {
                    (expected.clone(), actual.clone())
                }
                other => (String::new(), other.to_string()),
            };
            RegistryError::DigestMismatch {
                target,
                expected,
                actual,
            }
        }
        other => RegistryError::Transport {
            target,
            message: other.to_string(),
        },
    }
}

pub(crate) fn status_error(
    code: u16,
    message: String,
    target: Target,
    auth_hint: &str,
) -> RegistryError {
    match code {
        404 => RegistryError::NotFound { target },
        401 | 403 => RegistryError::Denied {
            target,
            status: code,
            hint: auth_hint.to_string(),
        },
        _ => RegistryError::Status {
            target,
            status: code,
            message: one_line(&message),
        },
    }
}

/// reqwest's Display hides the cause ("error sending request"); the chain
/// says what happened (connection reset, timed out, ...).
pub(crate) fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_timeout() {
        out.push_str(" (timed out)");
    }
    out
}

fn one_line(s: &str) -> String {
    let s = s.trim().replace('\n', " ");
    if s.len() > 300 {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}

/// What to do after a failure.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Retry,
    RateLimited,
    GiveUp,
}

pub(crate) fn verdict(err: &RegistryError) -> Verdict {
    match err {
        RegistryError::Status { status: 429, .. } => Verdict::RateLimited,
        RegistryError::Status { status, .. } if *status >= 500 || *status == 408 => Verdict::Retry,
        RegistryError::Transport { .. } => Verdict::Retry,
        // Bytes damaged on the way: fetching again is the cure.
        RegistryError::DigestMismatch { .. } => Verdict::Retry,
        _ => Verdict::GiveUp,
    }
}

/// Runs requests with retries for one registry and counts the retries.
pub(crate) struct Retrier {
    pub policy: RetryPolicy,
    /// `scheme://host` of the registry, for the Retry-After probe.
    pub base_url: String,
    pub probe: reqwest::Client,
    pub retries: AtomicU32,
}

impl Retrier {
    /// Run `op` until it succeeds, fails for good, or runs out of attempts.
    pub async fn run<T, F, Fut>(&self, target: &Target, mut op: F) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 1;
        loop {
            let err = match op(attempt).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let wait = match verdict(&err) {
                Verdict::GiveUp => return Err(err),
                Verdict::Retry => self.policy.backoff(attempt),
                Verdict::RateLimited => match self.retry_after().await {
                    Some(d) if d > self.policy.max_retry_after => return Err(err),
                    Some(d) => d.max(self.policy.backoff(attempt)),
                    None => self.policy.backoff(attempt + 2),
                },
            };
            if attempt >= self.policy.max_attempts {
                return Err(RegistryError::GaveUp {
                    target: target.clone(),
                    attempts: attempt,
                    last: Box::new(err),
                });
            }
            tracing::warn!("{err}; retrying in {} ms", wait.as_millis());
            self.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Count a retry made outside [`Retrier::run`] (a resumed download).
    pub fn count_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Ask the registry how long it wants us to wait (see the module doc).
    async fn retry_after(&self) -> Option<Duration> {
        let res = self
            .probe
            .get(format!("{}/v2/", self.base_url))
            .send()
            .await
            .ok()?;
        if res.status().as_u16() != 429 {
            return None;
        }
        let value = res.headers().get("retry-after")?.to_str().ok()?;
        parse_retry_after(value)
    }
}

/// `Retry-After` is either delay-seconds or an HTTP date.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        for attempt in 1..20 {
            let d = p.backoff(attempt);
            let full = p
                .base_delay
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(p.max_delay);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        assert!(p.backoff(30) <= p.max_delay);
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn verdicts() {
        let t = Target {
            registry: "r".into(),
            repository: "p".into(),
            what: "blob".into(),
        };
        let status = |s| RegistryError::Status {
            target: t.clone(),
            status: s,
            message: String::new(),
        };
        assert_eq!(verdict(&status(500)), Verdict::Retry);
        assert_eq!(verdict(&status(503)), Verdict::Retry);
        assert_eq!(verdict(&status(429)), Verdict::RateLimited);
        assert_eq!(verdict(&status(400)), Verdict::GiveUp);
        assert_eq!(
            verdict(&RegistryError::NotFound { target: t.clone() }),
            Verdict::GiveUp
        );
    }
}
