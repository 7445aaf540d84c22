//! The one retry policy. A [`Policy`] decides, for an answer or a failure to get one,
//! whether a request is done, retried (after the Retry-After the server asked for, or the
//! backoff), signed in again, or given up; a [`Backoff`] built from [`RetrySettings`] gives the
//! waits, exponential with jitter, and says when the retries are spent. The partner APIs,
//! Graph (every request, upload chunks included), the token client and IMAP all retry by
//! it, and each retry is reported once, by [`crate::events::Retry`].

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use std::time::Duration;

/// The longest Retry-After obeyed: a server asking for more is retried after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// How often and how patiently a client retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySettings {
    /// Retries after the first attempt; 0 never retries.
    pub max_retries: usize,
    /// The first wait; each next one doubles, with jitter.
    pub initial: Duration,
    /// The longest wait between attempts.
    pub max_delay: Duration,
}

impl RetrySettings {
    /// The waits of one request.
    pub fn backoff(&self) -> Backoff {
        use backon::BackoffBuilder;
        Backoff(
            backon::ExponentialBuilder::default()
                .with_min_delay(self.initial)
                .with_max_delay(self.max_delay)
                .with_max_times(self.max_retries)
                .with_jitter()
                .build(),
        )
    }
}

/// The waits between the attempts of one request.
pub struct Backoff(backon::ExponentialBackoff);

impl Backoff {
    /// The wait before the next attempt, `asked` (a server's Retry-After) if it said one;
    /// None once the retries are spent.
    pub fn next(&mut self, asked: Option<Duration>) -> Option<Duration> {
        let backoff = self.0.next()?;
        Some(asked.map_or(backoff, |asked| asked.min(MAX_RETRY_AFTER)))
    }
}

/// What to do after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The answer is the result.
    Done,
    /// Try again, after the wait the server asked for when it asked.
    Retry(Option<Duration>),
    /// The credentials were refused: sign in again, once.
    Reauthenticate,
    /// Retrying cannot help.
    GiveUp,
}

/// Decides what an answer, or a failure to get one, means for the request.
pub trait Policy {
    fn answer(&self, status: StatusCode, headers: &HeaderMap) -> Verdict;
    fn failure(&self, error: &reqwest::Error) -> Verdict;
}

/// HTTP as every service we call speaks it: 2xx is done; 401 signs in again; 408, 429 and
/// 5xx are retried, after Retry-After when the server sends one; anything else is final.
/// A request that could not be sent or timed out is retried.
#[derive(Debug, Clone, Copy, Default)]
pub struct Http;

impl Policy for Http {
    fn answer(&self, status: StatusCode, headers: &HeaderMap) -> Verdict {
        match status.as_u16() {
            200..=299 => Verdict::Done,
            401 => Verdict::Reauthenticate,
            408 | 429 | 500..=599 => Verdict::Retry(retry_after(headers)),
            _ => Verdict::GiveUp,
        }
    }

    fn failure(&self, _: &reqwest::Error) -> Verdict {
        Verdict::Retry(None)
    }
}

/// The wait a server asked for, in seconds (the form Graph and the partners use) or as an
/// HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(retry_after: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, retry_after.parse().unwrap());
        h
    }

    #[test]
    fn the_policy_retries_what_can_pass_and_gives_up_on_the_rest() {
        let none = HeaderMap::new();
        let at = |s: u16| Http.answer(StatusCode::from_u16(s).unwrap(), &none);
        assert_eq!(at(200), Verdict::Done);
        assert_eq!(at(401), Verdict::Reauthenticate);
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(at(s), Verdict::Retry(None), "{s}");
        }
        for s in [400, 403, 404, 413] {
            assert_eq!(at(s), Verdict::GiveUp, "{s}");
        }
        assert_eq!(
            Http.answer(StatusCode::TOO_MANY_REQUESTS, &headers("7")),
            Verdict::Retry(Some(Duration::from_secs(7)))
        );
        let later = (chrono::Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let wait = retry_after(&headers(&later)).unwrap();
        assert!(wait > Duration::from_secs(80) && wait <= Duration::from_secs(90));
        assert_eq!(retry_after(&headers("soon")), None);
    }

    #[test]
    fn the_backoff_grows_with_jitter_obeys_the_server_within_bounds_and_ends() {
        let settings = RetrySettings {
            max_retries: 4,
            initial: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        let mut backoff = settings.backoff();
        let waits: Vec<Duration> = std::iter::from_fn(|| backoff.next(None)).collect();
        assert_eq!(waits.len(), 4);
        assert!(waits.iter().all(|w| *w >= Duration::from_millis(100)));
        // The cap holds, jitter included (backon's jitter adds up to the delay once more).
        assert!(
            waits.iter().all(|w| *w <= Duration::from_millis(700)),
            "{waits:?}"
        );
        let mut backoff = settings.backoff();
        assert_eq!(
            backoff.next(Some(Duration::from_secs(3))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            backoff.next(Some(Duration::from_secs(3600))),
            Some(MAX_RETRY_AFTER)
        );
        let mut never = RetrySettings {
            max_retries: 0,
            ..settings
        }
        .backoff();
        assert_eq!(never.next(None), None);
    }
}
