//! Rate limits per application: a token bucket each, refilled at the application's rate up to
//! its burst. The buckets are this gateway's own: with several gateway replicas, each allows an
//! application its rate, so the deployment's limit is the rate times the replicas.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::applications::RateLimit;

/// The buckets of every application that called.
#[derive(Debug)]
pub struct RateLimiter {
    default: RateLimit,
    buckets: Mutex<HashMap<Arc<str>, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// Limits every application without a limit of its own to `default`.
    pub fn new(default: RateLimit) -> Self {
        Self {
            default,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The limit applied when an application has none of its own.
    pub fn default_limit(&self) -> RateLimit {
        self.default
    }

    /// Takes one request from `application`'s bucket, or says how long until there is one.
    pub fn take(&self, application: &Arc<str>, own: Option<RateLimit>) -> Result<(), Duration> {
        let limit = own.unwrap_or(self.default);
        let rate = f64::from(limit.per_second);
        let burst = f64::from(limit.burst);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets.entry(Arc::clone(application)).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refilled = bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate;
        bucket.tokens = refilled.min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_and_the_next_waits_for_the_refill() {
        let limiter = RateLimiter::new(RateLimit::new(1, 3).expect("limit"));
        let app: Arc<str> = Arc::from("dinsos.siks");
        for _ in 0..3 {
            assert!(limiter.take(&app, None).is_ok());
        }
        let wait = limiter.take(&app, None).expect_err("limited");
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO);
        // Another application has its own bucket, and its own limit.
        let other: Arc<str> = Arc::from("dinkes.simpus");
        let own = RateLimit::new(1, 1).expect("limit");
        assert!(limiter.take(&other, Some(own)).is_ok());
        assert!(limiter.take(&other, Some(own)).is_err());
    }
}
