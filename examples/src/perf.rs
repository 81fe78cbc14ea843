//! Workloads, latency statistics and reports shared by the benchmarks.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::syscount::Syscalls;

/// An I/O pattern, as in SPDK's perf and fio.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    Randread,
    Randwrite,
    Read,
    Write,
    /// Random, half reads and half writes.
    Rw,
}

/// Generates the (offset in I/O units, is-read) sequence of a pattern.
#[derive(Clone, Debug)]
pub struct Workload {
    pattern: Pattern,
    units: u64,
    next: u64,
    rng: u64,
}

impl Workload {
    /// A workload over `units` I/O-sized units; `seed` makes each queue differ.
    pub fn new(pattern: Pattern, units: u64, seed: u64) -> Workload {
        Workload {
            pattern,
            units: units.max(1),
            next: seed % units.max(1),
            rng: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        }
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// The next I/O: its unit index and whether it is a read.
    pub fn next_io(&mut self) -> (u64, bool) {
        match self.pattern {
            Pattern::Read | Pattern::Write => {
                let unit = self.next;
                self.next = (self.next + 1) % self.units;
                (unit, self.pattern == Pattern::Read)
            }
            Pattern::Randread => (self.random() % self.units, true),
            Pattern::Randwrite => (self.random() % self.units, false),
            Pattern::Rw => {
                let r = self.random();
                (r % self.units, r >> 63 == 0)
            }
        }
    }
}

/// What one queue did in the measured window.
#[derive(Clone, Debug)]
pub struct QueueStats {
    pub ios: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Completion latencies in nanoseconds.
    pub latency: Histogram<u64>,
    /// Heap allocations made by this queue's thread in the measured window,
    /// where counted (`None`: not measured, e.g. the kernel baseline).
    pub allocations: Option<u64>,
    /// System calls this queue's thread made in the measured window, measured
    /// (`syscount`).
    pub syscalls: Syscalls,
    /// CPU time (user and system) this queue's thread used in the measured
    /// window ([`crate::usage::Usage::thread_since`]); `None` where not measured.
    pub cpu: Option<Duration>,
}

impl QueueStats {
    /// Empty statistics with a latency histogram from 1 ns to 60 s (allocated here, not on the I/O path).
    pub fn new() -> QueueStats {
        QueueStats {
            ios: 0,
            bytes: 0,
            elapsed: Duration::ZERO,
            latency: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .expect("valid histogram bounds"),
            allocations: None,
            syscalls: Syscalls::default(),
            cpu: None,
        }
    }

    /// Records one completed I/O.
    pub fn record(&mut self, bytes: usize, latency_ns: u64) {
        self.ios += 1;
        self.bytes += bytes as u64;
        let _ = self.latency.record(latency_ns.max(1));
    }
}

impl Default for QueueStats {
    fn default() -> Self {
        QueueStats::new()
    }
}

/// One line of a report: a queue or the total.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub name: String,
    pub ios: u64,
    pub iops: f64,
    pub mib_per_s: f64,
    pub avg_us: f64,
    pub min_us: f64,
    pub max_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// `null` where not measured (the kernel baseline's allocations happen
    /// in io_uring's setup and the kernel, which nothing here counts).
    pub allocations: Option<u64>,
    /// `null` and `syscalls_not_measured` where not measured.
    #[serde(flatten)]
    pub syscalls: Syscalls,
    /// CPU time of the queue's thread over the window, in percent of one
    /// core (the total: all threads' over the longest window); `null`
    /// where not measured. Interrupt handling in the kernel is not in it.
    pub cpu_percent: Option<f64>,
}

/// Summaries of each queue and of all of them together (the last).
pub fn summarize(queues: &[QueueStats]) -> Vec<Summary> {
    let mut all = QueueStats::new();
    let mut out = Vec::new();
    for (i, q) in queues.iter().enumerate() {
        out.push(summary(&format!("queue {i}"), q));
        all.ios += q.ios;
        all.bytes += q.bytes;
        all.elapsed = all.elapsed.max(q.elapsed);
        all.allocations = if i == 0 {
            q.allocations
        } else {
            all.allocations.zip(q.allocations).map(|(a, b)| a + b)
        };
        let _ = all.latency.add(&q.latency);
        all.cpu = if i == 0 {
            q.cpu
        } else {
            all.cpu.zip(q.cpu).map(|(a, b)| a + b)
        };
    }
    all.syscalls = queues
        .iter()
        .map(|q| q.syscalls.clone())
        .reduce(|a, b| a.add(&b))
        .unwrap_or_default();
    out.push(summary("total", &all));
    out
}

fn summary(name: &str, q: &QueueStats) -> Summary {
    let secs = q.elapsed.as_secs_f64().max(1e-9);
    let us = |ns: u64| ns as f64 / 1000.0;
    let h = &q.latency;
    Summary {
        name: name.to_string(),
        ios: q.ios,
        iops: q.ios as f64 / secs,
        mib_per_s: q.bytes as f64 / secs / (1 << 20) as f64,
        avg_us: h.mean() / 1000.0,
        min_us: us(if h.is_empty() { 0 } else { h.min() }),
        max_us: us(h.max()),
        p50_us: us(h.value_at_quantile(0.5)),
        p99_us: us(h.value_at_quantile(0.99)),
        p999_us: us(h.value_at_quantile(0.999)),
        allocations: q.allocations,
        syscalls: q.syscalls.clone(),
        cpu_percent: q.cpu.map(|c| 100.0 * c.as_secs_f64() / secs),
    }
}

/// Prints a table of summaries under a title.
pub fn print_table(title: &str, rows: &[Summary]) {
    println!("{title}");
    println!(
        "  {:<8} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>6}",
        "",
        "IOPS",
        "MiB/s",
        "avg us",
        "min us",
        "max us",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "allocs",
        "cpu %"
    );
    for r in rows {
        println!(
            "  {:<8} {:>10.0} {:>10.2} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>7} {:>6}",
            r.name,
            r.iops,
            r.mib_per_s,
            r.avg_us,
            r.min_us,
            r.max_us,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.allocations.map_or("n/m".into(), |n| n.to_string()),
            r.cpu_percent.map_or("n/m".into(), |c| format!("{c:.1}"))
        );
    }
}

/// "QEMU guest" when the machine is one (its numbers are emulator numbers).
pub fn machine_label() -> &'static str {
    let vendor = std::fs::read_to_string("/sys/class/dmi/id/sys_vendor").unwrap_or_default();
    if vendor.trim() == "QEMU" {
        "QEMU guest (emulated devices: compare the ratio, not the absolute numbers)"
    } else {
        "this machine"
    }
}

/// Prints `value` as one line of JSON (the `--json` output of the tools).
pub fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string(value).expect("a summary serializes")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_wraps_and_random_stays_in_range() {
        let mut w = Workload::new(Pattern::Read, 3, 0);
        let seq: Vec<u64> = (0..5).map(|_| w.next_io().0).collect();
        assert_eq!(seq, [0, 1, 2, 0, 1]);
        let mut r = Workload::new(Pattern::Rw, 1000, 7);
        let ios: Vec<(u64, bool)> = (0..10_000).map(|_| r.next_io()).collect();
        assert!(ios.iter().all(|&(u, _)| u < 1000));
        let reads = ios.iter().filter(|(_, read)| *read).count();
        assert!((4000..6000).contains(&reads), "about half reads: {reads}");
    }

    #[test]
    fn summaries_add_up() {
        let mut a = QueueStats::new();
        a.elapsed = Duration::from_secs(1);
        for i in 1..=100 {
            a.record(4096, i * 1000);
        }
        let rows = summarize(&[a.clone(), a]);
        let total = rows.last().unwrap();
        assert_eq!(total.ios, 200);
        assert!((total.iops - 200.0).abs() < 1e-6);
        assert!((total.p50_us - 50.0).abs() < 1.0, "{}", total.p50_us);
    }
}
