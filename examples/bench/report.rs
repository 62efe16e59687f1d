//! Results of one workload: latency statistics, the table row and the JSON line.

use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};

/// Latency samples in nanoseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples(Vec<u64>);

impl Samples {
    pub fn with_capacity(n: usize) -> Self {
        Samples(Vec::with_capacity(n))
    }

    pub fn push(&mut self, d: Duration) {
        self.0.push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn push_nanos(&mut self, nanos: u64) {
        self.0.push(nanos);
    }

    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `q` quantile (0..=1) in microseconds, or `None` without samples.
    pub fn quantile_us(&mut self, q: f64) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        self.0.sort_unstable();
        let pos = ((self.0.len() as f64) * q) as usize;
        let nanos = self.0[pos.min(self.0.len() - 1)];
        Some(round1(nanos as f64 / 1000.0))
    }
}

/// A timed measurement: how many operations in how long, and their latencies.
#[derive(Debug, Clone, Default)]
pub struct Measure {
    pub ops_per_sec: Option<f64>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
}

impl Measure {
    pub fn new(ops: u64, elapsed: Duration, samples: &mut Samples) -> Self {
        Measure {
            ops_per_sec: rate(ops, elapsed),
            p50_us: samples.quantile_us(0.50),
            p99_us: samples.quantile_us(0.99),
        }
    }
}

/// Operations per second, rounded to one decimal.
pub fn rate(ops: u64, elapsed: Duration) -> Option<f64> {
    let secs = elapsed.as_secs_f64();
    (secs > 0.0).then(|| round1(ops as f64 / secs))
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// One workload's result.
#[derive(Debug, Clone)]
pub struct Row {
    pub workload: &'static str,
    /// ODB client connections the workload opened (the baseline uses as many of its own).
    pub clients: Option<u64>,
    pub ours: Measure,
    /// Name of what we compare with (`redis`, `pingpong`), if anything.
    pub baseline: Option<&'static str>,
    pub base: Option<Measure>,
    /// Why the baseline is missing.
    pub baseline_error: Option<String>,
    /// Workload-specific figures, shown in the notes column and added to the JSON.
    pub extra: Map<String, Value>,
    /// Set when the workload itself failed.
    pub error: Option<String>,
}

impl Row {
    pub fn new(workload: &'static str, ours: Measure) -> Self {
        Row {
            workload,
            clients: None,
            ours,
            baseline: None,
            base: None,
            baseline_error: None,
            extra: Map::new(),
            error: None,
        }
    }

    pub fn failed(workload: &'static str, error: &anyhow::Error) -> Self {
        let mut row = Row::new(workload, Measure::default());
        row.error = Some(format!("{error:#}"));
        row
    }

    /// Sets the baseline from its result, keeping the error text when it could not run.
    pub fn with_baseline(mut self, name: &'static str, base: Result<Measure, String>) -> Self {
        self.baseline = Some(name);
        match base {
            Ok(m) => self.base = Some(m),
            Err(e) => self.baseline_error = Some(e),
        }
        self
    }

    /// Sets how many clients the workload used.
    pub fn clients(mut self, clients: usize) -> Self {
        self.clients = Some(clients as u64);
        self
    }

    pub fn extra(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    fn ratio(&self) -> Option<f64> {
        let ours = self.ours.ops_per_sec?;
        let base = self.base.as_ref()?.ops_per_sec?;
        (base > 0.0).then(|| (ours / base * 1000.0).round() / 1000.0)
    }

    /// The JSON line; `server` says where the server under test ran.
    pub fn json(&self, server: &str, seconds: f64) -> Value {
        let base = self.base.clone().unwrap_or_default();
        let mut obj = json!({
            "workload": self.workload,
            "server": server,
            "clients": self.clients,
            "seconds": seconds,
            "ops_per_sec": self.ours.ops_per_sec,
            "p50_us": self.ours.p50_us,
            "p99_us": self.ours.p99_us,
            "baseline": self.baseline,
            "baseline_ops_per_sec": base.ops_per_sec,
            "baseline_p50_us": base.p50_us,
            "baseline_p99_us": base.p99_us,
            "ratio": self.ratio(),
            "baseline_error": self.baseline_error,
            "error": self.error,
        });
        if let Some(map) = obj.as_object_mut() {
            for (k, v) in &self.extra {
                map.insert(k.clone(), v.clone());
            }
        }
        obj
    }
}

fn cell(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v}"))
}

pub fn print_header() {
    println!(
        "{:<15} {:>7} {:>12} {:>9} {:>9}  {:<9} {:>12} {:>9} {:>9} {:>7}  notes",
        "workload",
        "clients",
        "ops/s",
        "p50 us",
        "p99 us",
        "baseline",
        "base ops/s",
        "base p50",
        "base p99",
        "ratio"
    );
}

pub fn print_row(row: &Row) {
    let base = row.base.clone().unwrap_or_default();
    let mut notes: Vec<String> = row.extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if let Some(e) = &row.baseline_error {
        notes.push(format!("baseline unavailable: {e}"));
    }
    if let Some(e) = &row.error {
        notes.push(format!("FAILED: {e}"));
    }
    println!(
        "{:<15} {:>7} {:>12} {:>9} {:>9}  {:<9} {:>12} {:>9} {:>9} {:>7}  {}",
        row.workload,
        row.clients
            .map_or_else(|| "-".to_string(), |c| c.to_string()),
        cell(row.ours.ops_per_sec),
        cell(row.ours.p50_us),
        cell(row.ours.p99_us),
        row.baseline.unwrap_or("-"),
        cell(base.ops_per_sec),
        cell(base.p50_us),
        cell(base.p99_us),
        cell(row.ratio()),
        notes.join(" ")
    );
}

/// CPU time a process has used so far, as the kernel splits it.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTime {
    /// In the program itself.
    pub user: Duration,
    /// In the kernel on its behalf: system calls (the sockets), page faults, scheduling.
    pub system: Duration,
}

/// CPU time process `pid` (`"self"`: the benchmark) has used so far, from `/proc/<pid>/stat`
/// (counted in clock ticks of 10 ms, Linux's usual 100 per second); `None` where that is
/// unavailable. Fine for windows of seconds.
pub fn process_cpu(pid: &str) -> Option<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it are space separated.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| -> Option<Duration> {
        let n = fields.get(i)?.parse::<u64>().ok()?;
        Some(Duration::from_millis(n.saturating_mul(10)))
    };
    Some(CpuTime {
        user: ticks(11)?,
        system: ticks(12)?,
    })
}

/// CPU readings of the two sides of a measurement: the benchmark process (the clients) and the
/// server under test when it runs in a process of its own (`None`: embedded, its CPU is the
/// benchmark's).
#[derive(Clone, Copy, Debug)]
pub struct CpuReading {
    pub clients: CpuTime,
    pub server: Option<CpuTime>,
}

/// A first CPU reading and when it was taken.
#[derive(Clone, Copy, Debug)]
pub struct CpuMeter {
    before: Option<CpuReading>,
    at: Instant,
}

impl CpuMeter {
    pub fn start(reading: Option<CpuReading>) -> CpuMeter {
        CpuMeter {
            before: reading,
            at: Instant::now(),
        }
    }

    /// What each of `ops` operations cost, up to the reading `after`.
    pub fn cost(&self, after: Option<CpuReading>, ops: u64) -> Option<CpuCost> {
        CpuCost::between(self.before?, after?, ops as f64)
    }

    /// What each operation cost up to the reading `after`, for operations made at `rate` per
    /// second since the first reading (for a measurement that reports a rate only; the moments
    /// it spends connecting count as if they had run at that rate too).
    pub fn cost_at_rate(&self, after: Option<CpuReading>, rate: Option<f64>) -> Option<CpuCost> {
        let ops = rate? * self.at.elapsed().as_secs_f64();
        CpuCost::between(self.before?, after?, ops)
    }
}

/// CPU microseconds per operation: in all, and split by process and by user and kernel time.
#[derive(Clone, Copy, Debug)]
pub struct CpuCost {
    pub total: f64,
    clients_user: f64,
    clients_system: f64,
    server_user: Option<f64>,
    server_system: Option<f64>,
}

impl CpuCost {
    fn between(before: CpuReading, after: CpuReading, ops: f64) -> Option<CpuCost> {
        if ops <= 0.0 {
            return None;
        }
        let per_op =
            |b: Duration, a: Duration| round1(a.saturating_sub(b).as_secs_f64() * 1e6 / ops);
        let clients_user = per_op(before.clients.user, after.clients.user);
        let clients_system = per_op(before.clients.system, after.clients.system);
        let (server_user, server_system) = match (before.server, after.server) {
            (Some(b), Some(a)) => (
                Some(per_op(b.user, a.user)),
                Some(per_op(b.system, a.system)),
            ),
            _ => (None, None),
        };
        let total = clients_user
            + clients_system
            + server_user.unwrap_or(0.0)
            + server_system.unwrap_or(0.0);
        Some(CpuCost {
            total: round1(total),
            clients_user,
            clients_system,
            server_user,
            server_system,
        })
    }

    fn split(&self) -> Value {
        json!({
            "server_user": self.server_user,
            "server_system": self.server_system,
            "clients_user": self.clients_user,
            "clients_system": self.clients_system,
        })
    }
}

impl Row {
    /// Adds what the workload's operations cost: `cpu_us_per_op`, both processes together, and
    /// `cpu_split_us`, by process and by user and kernel time.
    pub fn cpu(self, cost: Option<CpuCost>) -> Self {
        self.extra("cpu_us_per_op", cost.map(|c| c.total))
            .extra("cpu_split_us", cost.map(|c| c.split()))
    }

    /// Adds what the baseline's operations cost, as [`Row::cpu`] does for the workload's:
    /// `baseline_cpu_us_per_op` and `baseline_cpu_split_us`.
    pub fn baseline_cpu(self, cost: Option<CpuCost>) -> Self {
        self.extra("baseline_cpu_us_per_op", cost.map(|c| c.total))
            .extra("baseline_cpu_split_us", cost.map(|c| c.split()))
    }
}
