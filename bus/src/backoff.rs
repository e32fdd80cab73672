//! Exponential back-off with jitter, shared by publish retries and consumer redeliveries.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Delays that double from `initial` up to `max`.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// Growth factor per attempt (2.0 doubles).
    pub multiplier: f64,
    /// Fraction of each delay that is randomised (0.0 to 1.0), so that many clients recovering
    /// from the same outage do not retry in lock-step.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// A back-off from `initial` to `max`, doubling, with 20 % jitter.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            ..Self::default()
        }
    }

    /// The delay before retry number `attempt` (0 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.min(64)).unwrap_or(64);
        let base = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        let capped = base.min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        // Scale into [1 - jitter, 1].
        let factor = 1.0 - jitter * random_unit();
        Duration::from_secs_f64((capped * factor).max(0.0))
    }
}

/// A random number in [0, 1) without a random-number dependency: `RandomState` is seeded from
/// the operating system's randomness for every new instance.
fn random_unit() -> f64 {
    let bits = RandomState::new().build_hasher().finish() >> 11;
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let backoff = Backoff {
            jitter: 0.0,
            ..Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
        };
        assert_eq!(backoff.delay(0), Duration::from_millis(100));
        assert_eq!(backoff.delay(1), Duration::from_millis(200));
        assert_eq!(backoff.delay(3), Duration::from_millis(800));
        assert_eq!(backoff.delay(4), Duration::from_secs(1));
        assert_eq!(backoff.delay(1000), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        for _ in 0..100 {
            let delay = backoff.delay(0);
            assert!(delay <= Duration::from_secs(1));
            assert!(delay >= Duration::from_millis(800));
        }
    }
}
