//! What a piece of work cost this process or thread, from getrusage(2): CPU time (user
//! and system) and context switches (voluntary and involuntary).

use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::time::TimeVal;

/// A reading, or the difference of two.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub context_switches: u64,
}

impl Usage {
    /// The process's totals so far.
    pub fn now() -> Usage {
        Usage::read(UsageWho::RUSAGE_SELF)
    }

    /// The calling thread's totals so far (a worker's own cost, beside
    /// other threads of the process).
    pub fn thread_now() -> Usage {
        Usage::read(UsageWho::RUSAGE_THREAD)
    }

    /// What the process spent since this reading (a [`Usage::now`]).
    pub fn since(&self) -> Usage {
        self.until(Usage::now())
    }

    /// What the thread spent since this reading (a [`Usage::thread_now`]).
    pub fn thread_since(&self) -> Usage {
        self.until(Usage::thread_now())
    }

    fn read(who: UsageWho) -> Usage {
        let secs = |tv: TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        getrusage(who).map_or(Usage::default(), |u| Usage {
            cpu_seconds: secs(u.user_time()) + secs(u.system_time()),
            context_switches: (u.voluntary_context_switches() + u.involuntary_context_switches())
                as u64,
        })
    }

    fn until(&self, now: Usage) -> Usage {
        Usage {
            cpu_seconds: now.cpu_seconds - self.cpu_seconds,
            context_switches: now.context_switches.saturating_sub(self.context_switches),
        }
    }
}

/// The most address space this process has had mapped (VmPeak of
/// /proc/self/status), in KiB; None where /proc does not say.
pub fn vm_peak_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmPeak:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn vm_peak_is_read_and_plausible() {
        let kib = super::vm_peak_kib().expect("Linux has /proc/self/status");
        assert!(
            kib > 100,
            "a Rust test process maps more than 100 KiB: {kib}"
        );
    }
}
