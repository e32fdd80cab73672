//! Runs, latency percentiles and comparisons.

use std::time::Duration;

use serde::Serialize;

/// One measured run of one path.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// What ran.
    pub label: String,
    /// Operations completed (events, calls).
    pub operations: u64,
    /// Wall time.
    pub seconds: f64,
    /// Per-operation latency, where measured.
    pub latency: Option<Latency>,
}

impl Run {
    /// A run of `operations` in `elapsed`.
    pub fn new(label: impl Into<String>, operations: u64, elapsed: Duration) -> Self {
        Self {
            label: label.into(),
            operations,
            seconds: elapsed.as_secs_f64(),
            latency: None,
        }
    }

    /// With per-operation latencies (microseconds).
    pub fn with_latencies(mut self, micros: Vec<u64>) -> Self {
        self.latency = Latency::from_micros(micros);
        self
    }

    /// Operations per second.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.operations as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Latency {
    /// Percentiles of `micros` (none for no samples).
    pub fn from_micros(mut micros: Vec<u64>) -> Option<Self> {
        if micros.is_empty() {
            return None;
        }
        micros.sort_unstable();
        let at = |quantile: f64| {
            let index = ((micros.len() as f64 * quantile).ceil() as usize).clamp(1, micros.len());
            micros[index - 1] as f64 / 1000.0
        };
        Some(Self {
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        })
    }
}

/// The govbus path beside its raw baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The scenario.
    pub name: String,
    /// govbus's run.
    pub govbus: Run,
    /// The raw baseline's run.
    pub baseline: Run,
    /// govbus's rate divided by the baseline's.
    pub ratio: f64,
    /// The ratio govbus aims for.
    pub goal: f64,
    /// Reference runs between the two, each doing part of what govbus adds to the baseline,
    /// to show where the difference goes.
    pub steps: Vec<Run>,
}

impl Comparison {
    /// Compares `govbus` with `baseline` against `goal`.
    pub fn new(name: impl Into<String>, govbus: Run, baseline: Run, goal: f64) -> Self {
        let ratio = if baseline.rate() > 0.0 {
            govbus.rate() / baseline.rate()
        } else {
            0.0
        };
        Self {
            name: name.into(),
            govbus,
            baseline,
            ratio,
            goal,
            steps: Vec::new(),
        }
    }

    /// With `step` as a reference run between the baseline and govbus.
    pub fn with_step(mut self, step: Run) -> Self {
        self.steps.push(step);
        self
    }

    /// Whether the ratio reaches the goal.
    pub fn meets_goal(&self) -> bool {
        self.ratio >= self.goal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_taken_from_the_sorted_samples() {
        let latency =
            Latency::from_micros((1..=100).rev().map(|n| n * 1000).collect()).expect("samples");
        assert_eq!(latency.p50_ms, 50.0);
        assert_eq!(latency.p90_ms, 90.0);
        assert_eq!(latency.p99_ms, 99.0);
        assert_eq!(latency.max_ms, 100.0);
        assert!(Latency::from_micros(Vec::new()).is_none());
    }

    #[test]
    fn the_ratio_is_govbus_over_the_baseline() {
        let govbus = Run::new("govbus", 800, Duration::from_secs(1));
        let baseline = Run::new("raw", 1000, Duration::from_secs(1));
        let comparison = Comparison::new("publish", govbus, baseline, 0.8);
        assert!((comparison.ratio - 0.8).abs() < 1e-9);
        assert!(comparison.meets_goal());
    }
}
