//! Runs, latency percentiles, processor time and comparisons.

use std::time::{Duration, Instant};

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
    /// What the whole machine's processors did meanwhile (every process: the benchmark,
    /// nats-server, PostgreSQL), where `/proc/stat` could be read.
    pub cpu: Option<CpuUse>,
}

impl Run {
    /// A run of `operations` in `elapsed`.
    pub fn new(label: impl Into<String>, operations: u64, elapsed: Duration) -> Self {
        Self {
            label: label.into(),
            operations,
            seconds: elapsed.as_secs_f64(),
            latency: None,
            cpu: None,
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

    /// Processor time the machine spent per operation, in microseconds.
    pub fn cpu_micros_per_operation(&self) -> Option<f64> {
        let cpu = self.cpu?;
        (self.operations > 0).then(|| cpu.busy_cores * self.seconds * 1e6 / self.operations as f64)
    }
}

/// A run's start: wall time and the machine's processor counters.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch {
    started: Instant,
    ticks: Option<CpuTicks>,
}

impl Stopwatch {
    /// Starts now.
    pub fn start() -> Self {
        Self {
            ticks: CpuTicks::now(),
            started: Instant::now(),
        }
    }

    /// Wall time since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The run of `operations` that ends now.
    pub fn run(&self, label: impl Into<String>, operations: u64) -> Run {
        let elapsed = self.started.elapsed();
        let cpu = self
            .ticks
            .zip(CpuTicks::now())
            .and_then(|(before, after)| CpuUse::between(before, after));
        Run {
            cpu,
            ..Run::new(label, operations, elapsed)
        }
    }
}

/// How busy the machine's processors were during a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CpuUse {
    /// Processors busy on average (user, system and interrupt time of every process; at most
    /// the number of processors).
    pub busy_cores: f64,
    /// The share of the processors' time the hypervisor gave to other machines (steal).
    pub steal_share: f64,
}

impl CpuUse {
    /// From two readings of the counters. Ticks are converted through the readings' own total
    /// (every state summed is the wall time times the processors), so no tick rate is assumed.
    fn between(before: CpuTicks, after: CpuTicks) -> Option<Self> {
        let total = after.total.checked_sub(before.total)?;
        if total == 0 {
            return None;
        }
        let busy = after.busy.saturating_sub(before.busy) as f64;
        let steal = after.steal.saturating_sub(before.steal) as f64;
        Some(Self {
            busy_cores: busy / total as f64 * after.processors as f64,
            steal_share: steal / total as f64,
        })
    }
}

/// The first line of `/proc/stat`: time every processor spent in each state, summed.
#[derive(Debug, Clone, Copy)]
struct CpuTicks {
    busy: u64,
    steal: u64,
    total: u64,
    processors: usize,
}

impl CpuTicks {
    fn now() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    fn parse(stat: &str) -> Option<Self> {
        let mut lines = stat.lines();
        let fields: Vec<u64> = lines
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        // user nice system idle iowait irq softirq steal (guest time is inside user already).
        let [user, nice, system, idle, iowait, irq, softirq, steal, ..] = fields[..] else {
            return None;
        };
        let processors = lines
            .filter(|line| {
                line.starts_with("cpu") && line.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
            })
            .count();
        Some(Self {
            busy: user + nice + system + irq + softirq,
            steal,
            total: user + nice + system + idle + iowait + irq + softirq + steal,
            processors,
        })
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
    fn processor_time_is_read_from_the_counters_own_total() {
        let before = CpuTicks::parse("cpu  100 0 50 800 0 0 0 50 0 0\ncpu0 1\ncpu1 1\nintr 5\n")
            .expect("counters");
        let after = CpuTicks::parse("cpu  250 0 100 1000 0 0 0 100 0 0\ncpu0 1\ncpu1 1\n")
            .expect("counters");
        assert_eq!(before.processors, 2);
        let cpu = CpuUse::between(before, after).expect("a difference");
        // 200 of 450 ticks busy, on two processors.
        assert!((cpu.busy_cores - 2.0 * 200.0 / 450.0).abs() < 1e-9);
        assert!((cpu.steal_share - 50.0 / 450.0).abs() < 1e-9);
        let run = Run {
            cpu: Some(cpu),
            ..Run::new("run", 100, Duration::from_secs(1))
        };
        let per_operation = run.cpu_micros_per_operation().expect("processor time");
        assert!((per_operation - cpu.busy_cores * 1e4).abs() < 1e-6);
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
