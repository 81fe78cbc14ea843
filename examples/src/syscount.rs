//! System calls measured, not declared: a perf counter on the
//! `raw_syscalls:sys_enter` tracepoint, which the kernel fires at the entry
//! of every system call, whoever makes it (the tools' own code, the standard
//! library, the drivers, libc, a crate's thread).
//!
//! The counter is opened with perf_event_open(2) on the calling thread (pid
//! 0, any CPU), disabled, with `inherit` set so that threads the measured
//! code starts are counted too, and nothing excluded; it is enabled when
//! counting starts and read when it ends. The count includes that one read.
//! The tracepoint's id comes from tracefs
//! (`/sys/kernel/tracing/events/raw_syscalls/sys_enter/id`, or the same under
//! `/sys/kernel/debug/tracing`).
//!
//! Where the kernel does not permit it (tracefs not mounted or not readable,
//! `perf_event_paranoid` above what the process's capabilities allow, no
//! perf events or syscall tracepoints in the kernel) the figure is
//! [`Syscalls::NotMeasured`] with the reason: never a 0 that was not counted.
//! In JSON it is `"syscalls": null` with `"syscalls_not_measured": reason`.
//!
//! [perf-event2] does the system call (and holds the `unsafe`): it supports
//! tracepoint events by id, `inherit`, and a disabled start.
//!
//! [perf-event2]: https://docs.rs/perf-event2

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use perf_event::events::Tracepoint;
use perf_event::{Builder, Counter};
use serde::ser::{SerializeMap, Serializer};

/// Where tracefs is mounted: its own mount point, then the one under debugfs.
pub const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
/// The tracepoint's id file, under a tracefs mount.
const ID_FILE: &str = "events/raw_syscalls/sys_enter/id";
/// CAP_SYS_ADMIN and CAP_PERFMON (capability(7) bit numbers).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;

/// A count of system calls, or why there is none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Syscalls {
    /// Counted by the kernel's tracepoint.
    Measured(u64),
    /// The kernel did not permit counting (or nothing was measured): why.
    NotMeasured(String),
}

impl Default for Syscalls {
    fn default() -> Syscalls {
        Syscalls::NotMeasured("nothing was measured".into())
    }
}

impl Syscalls {
    /// Counts the system calls `f` makes (on this thread and the threads it
    /// starts).
    pub fn count<T>(f: impl FnOnce() -> T) -> (T, Syscalls) {
        let counting = start();
        let value = f();
        (value, counting.finish())
    }

    /// The count, if measured.
    pub fn measured(&self) -> Option<u64> {
        match self {
            Syscalls::Measured(n) => Some(*n),
            Syscalls::NotMeasured(_) => None,
        }
    }

    /// Why there is no count, if there is none.
    pub fn not_measured(&self) -> Option<&str> {
        match self {
            Syscalls::Measured(_) => None,
            Syscalls::NotMeasured(why) => Some(why),
        }
    }

    /// The sum of two counts; not measured if either is not (with its reason).
    pub fn add(&self, other: &Syscalls) -> Syscalls {
        match (self, other) {
            (Syscalls::Measured(a), Syscalls::Measured(b)) => Syscalls::Measured(a + b),
            (Syscalls::NotMeasured(why), _) | (_, Syscalls::NotMeasured(why)) => {
                Syscalls::NotMeasured(why.clone())
            }
        }
    }

    /// The figure of a tool's JSON object (`syscalls`, and
    /// `syscalls_not_measured` when that is null).
    pub fn from_json(object: &serde_json::Value) -> Syscalls {
        match object["syscalls"].as_u64() {
            Some(n) => Syscalls::Measured(n),
            None => Syscalls::NotMeasured(
                object["syscalls_not_measured"]
                    .as_str()
                    .unwrap_or("no syscalls figure in the report")
                    .to_string(),
            ),
        }
    }
}

/// "12345", or "not measured (why)".
impl fmt::Display for Syscalls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Syscalls::Measured(n) => write!(f, "{n}"),
            Syscalls::NotMeasured(why) => write!(f, "not measured ({why})"),
        }
    }
}

/// As the fields of the object it is flattened into (`#[serde(flatten)]`):
/// `"syscalls": n`, or `"syscalls": null, "syscalls_not_measured": why`.
impl serde::Serialize for Syscalls {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Syscalls::Measured(n) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("syscalls", n)?;
                map.end()
            }
            Syscalls::NotMeasured(why) => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("syscalls", &None::<u64>)?;
                map.serialize_entry("syscalls_not_measured", why)?;
                map.end()
            }
        }
    }
}

/// An enabled counter of the calling thread's system calls (and those of the
/// threads it starts from now on).
pub struct SyscallCounter {
    counter: Counter,
}

impl SyscallCounter {
    /// Opens and enables the counter; the error says why it cannot be.
    pub fn start() -> Result<SyscallCounter, String> {
        let roots: Vec<PathBuf> = TRACEFS.iter().map(PathBuf::from).collect();
        let id = tracepoint_id(&roots)?;
        SyscallCounter::start_id(id)
    }

    /// The counter on tracepoint `id`.
    fn start_id(id: u64) -> Result<SyscallCounter, String> {
        let mut counter = Builder::new(Tracepoint::with_id(id))
            .observe_self()
            .any_cpu()
            .inherit(true)
            .enabled(false)
            .exclude_kernel(false)
            .exclude_hv(false)
            .build()
            .map_err(|e| refused(&e, id))?;
        counter
            .enable()
            .map_err(|e| format!("enabling the perf counter: {e}"))?;
        Ok(SyscallCounter { counter })
    }

    /// System calls so far (this read's own included).
    pub fn read(&mut self) -> Result<u64, String> {
        self.counter
            .read()
            .map_err(|e| format!("reading the perf counter: {e}"))
    }
}

/// Counting in progress, or why it is not.
pub struct Counting(Result<SyscallCounter, String>);

/// Starts counting this thread's system calls (and its new threads').
pub fn start() -> Counting {
    Counting(SyscallCounter::start())
}

impl Counting {
    /// The system calls since [`start`].
    pub fn finish(self) -> Syscalls {
        match self.0.and_then(|mut c| c.read()) {
            Ok(n) => Syscalls::Measured(n),
            Err(why) => Syscalls::NotMeasured(why),
        }
    }
}

/// The id of `raw_syscalls:sys_enter` from the first tracefs mount of
/// `roots` that has the event.
fn tracepoint_id(roots: &[PathBuf]) -> Result<u64, String> {
    let mut mounted = None;
    for root in roots {
        let path = root.join(ID_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => return parse_id(&text, &path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if root.join("events").is_dir() {
                    mounted.get_or_insert(root);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(format!(
                    "{}: permission denied (tracefs is root's; {})",
                    path.display(),
                    privilege()
                ))
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    Err(match mounted {
        Some(root) => format!(
            "tracefs at {} has no raw_syscalls:sys_enter event (a kernel without CONFIG_FTRACE_SYSCALLS)",
            root.display()
        ),
        None => format!(
            "tracefs is not mounted (at {})",
            roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    })
}

fn parse_id(text: &str, path: &Path) -> Result<u64, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{}: not a tracepoint id: {text:?}", path.display()))
}

/// Why perf_event_open refused tracepoint `id`.
fn refused(e: &io::Error, id: u64) -> String {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            format!("perf_event_open: {e}: {}", privilege())
        }
        Some(libc::ENOENT) => {
            format!("perf_event_open: the kernel has no tracepoint with id {id}: {e}")
        }
        Some(libc::ENOSYS) => format!("perf_event_open: no perf events in this kernel: {e}"),
        _ => format!("perf_event_open: {e}"),
    }
}

/// What the kernel's perf permission rests on here: "perf_event_paranoid=3
/// and no CAP_PERFMON", or with it.
fn privilege() -> String {
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .map_or("unknown".into(), |s| s.trim().to_string());
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| effective_caps(&s));
    let caps = match caps {
        Some(c) if has_cap(c, CAP_PERFMON) || has_cap(c, CAP_SYS_ADMIN) => {
            "with CAP_PERFMON or CAP_SYS_ADMIN (a seccomp filter or LSM refusing?)"
        }
        Some(_) => "and no CAP_PERFMON",
        None => "and capabilities unknown",
    };
    format!("perf_event_paranoid={paranoid} {caps}")
}

/// The `CapEff` mask of a /proc/PID/status text.
fn effective_caps(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

fn has_cap(mask: u64, cap: u32) -> bool {
    mask >> cap & 1 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Report {
        bytes: u64,
        #[serde(flatten)]
        syscalls: Syscalls,
    }

    #[test]
    fn json_has_null_and_the_reason_when_not_measured() {
        let json = |s: Syscalls| {
            serde_json::to_value(Report {
                bytes: 7,
                syscalls: s,
            })
            .unwrap()
        };
        let measured = json(Syscalls::Measured(42));
        assert_eq!(measured, serde_json::json!({"bytes": 7, "syscalls": 42}));
        assert_eq!(Syscalls::from_json(&measured), Syscalls::Measured(42));
        let not = json(Syscalls::NotMeasured("tracefs is not mounted".into()));
        assert_eq!(
            not,
            serde_json::json!({"bytes": 7, "syscalls": null, "syscalls_not_measured": "tracefs is not mounted"})
        );
        assert_eq!(
            Syscalls::from_json(&not),
            Syscalls::NotMeasured("tracefs is not mounted".into())
        );
        assert!(Syscalls::from_json(&serde_json::json!({}))
            .not_measured()
            .is_some());
    }

    #[test]
    fn text_says_not_measured_and_why_never_zero() {
        assert_eq!(Syscalls::Measured(0).to_string(), "0");
        assert_eq!(
            Syscalls::NotMeasured("why".into()).to_string(),
            "not measured (why)"
        );
        assert!(Syscalls::default().measured().is_none());
    }

    #[test]
    fn a_sum_is_measured_only_if_every_part_is() {
        let (a, b) = (Syscalls::Measured(2), Syscalls::Measured(3));
        assert_eq!(a.add(&b), Syscalls::Measured(5));
        let no = Syscalls::NotMeasured("refused".into());
        assert_eq!(a.add(&no), no);
        assert_eq!(no.add(&b), no);
    }

    #[test]
    fn the_id_is_read_from_the_first_mount_that_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let (empty, mounted, other) = (
            dir.path().join("empty"),
            dir.path().join("a"),
            dir.path().join("b"),
        );
        std::fs::create_dir_all(&empty).unwrap();
        let why = tracepoint_id(std::slice::from_ref(&empty)).unwrap_err();
        assert!(why.starts_with("tracefs is not mounted"), "{why}");
        std::fs::create_dir_all(mounted.join("events/sched")).unwrap();
        let why = tracepoint_id(&[empty.clone(), mounted.clone()]).unwrap_err();
        assert!(why.contains("CONFIG_FTRACE_SYSCALLS"), "{why}");
        let id = other.join(ID_FILE);
        std::fs::create_dir_all(id.parent().unwrap()).unwrap();
        std::fs::write(&id, "443\n").unwrap();
        assert_eq!(tracepoint_id(&[empty.clone(), mounted, other]), Ok(443));
        std::fs::write(&id, "x\n").unwrap();
        let roots = [dir.path().join("b")];
        assert!(tracepoint_id(&roots)
            .unwrap_err()
            .contains("not a tracepoint id"));
    }

    #[test]
    fn capabilities_are_read_from_the_status_text() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000004000200000\n";
        let caps = effective_caps(status).unwrap();
        assert!(has_cap(caps, CAP_PERFMON) && has_cap(caps, CAP_SYS_ADMIN));
        assert!(!has_cap(
            effective_caps("CapEff:\t0000000000000000").unwrap(),
            CAP_PERFMON
        ));
        assert_eq!(effective_caps("Name:\tx\n"), None);
    }

    #[test]
    fn an_unknown_tracepoint_is_refused_with_a_reason() {
        // No tracefs needed: the kernel refuses an id no tracepoint has (or
        // refuses perf_event_open altogether), and the reason says which.
        let why = SyscallCounter::start_id(u64::MAX).err().expect("refused");
        assert!(why.starts_with("perf_event_open: "), "{why}");
    }

    /// Where this machine permits it (root, tracefs mounted), a known number
    /// of system calls on this thread and on a thread it starts raise the
    /// count by at least that many; elsewhere, the reason is given.
    #[test]
    fn known_system_calls_are_counted_where_the_kernel_permits() {
        const N: u64 = 1000;
        let mut counter = match SyscallCounter::start() {
            Ok(c) => c,
            Err(why) => {
                assert!(!why.is_empty());
                assert!(start().finish().not_measured().is_some());
                eprintln!("not measured here: {why}");
                return;
            }
        };
        let before = counter.read().expect("read");
        for _ in 0..N {
            std::hint::black_box(std::process::id());
        }
        let after = counter.read().expect("read");
        assert!(
            (N..N + 50).contains(&(after - before)),
            "{N} getpid: {}",
            after - before
        );
        std::thread::spawn(|| {
            for _ in 0..N {
                std::hint::black_box(std::process::id());
            }
        })
        .join()
        .unwrap();
        let with_thread = counter.read().expect("read");
        assert!(
            with_thread - after >= N,
            "a thread started later is counted (inherit): {}",
            with_thread - after
        );
        let (_, quiet) = Syscalls::count(|| (0..N).sum::<u64>());
        assert!(quiet.measured() < Some(5), "pure computation: {quiet}");
    }
}
