//! What a piece of work cost this process, from getrusage(2): CPU time (user
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
        let secs = |tv: TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        getrusage(UsageWho::RUSAGE_SELF).map_or(Usage::default(), |u| Usage {
            cpu_seconds: secs(u.user_time()) + secs(u.system_time()),
            context_switches: (u.voluntary_context_switches() + u.involuntary_context_switches())
                as u64,
        })
    }

    /// What was spent since this reading.
    pub fn since(&self) -> Usage {
        let now = Usage::now();
        Usage {
            cpu_seconds: now.cpu_seconds - self.cpu_seconds,
            context_switches: now.context_switches.saturating_sub(self.context_switches),
        }
    }
}
