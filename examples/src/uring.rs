//! The kernel baseline: the same workload through the kernel's block layer
//! with io_uring and O_DIRECT (the ring and its buffers: `sys::UringSlots`).

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::perf::{QueueStats, Workload};
use crate::sys::UringSlots;
use crate::syscount::{self, Counting};
use crate::usage::Usage;

/// How the kernel learns that an I/O completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Completions {
    /// The device interrupts; io_uring_enter sleeps until then.
    Interrupt,
    /// io_uring_enter polls the device's completion queue
    /// (`IORING_SETUP_IOPOLL` on an nvme poll queue): no interrupt, no sleep.
    Polled,
}

/// One thread's io_uring run: `depth` I/Os of `io_size` bytes kept in flight
/// on `dev` for `warmup` then `run`; returns only when none is in flight.
/// Only an I/O that completed with all `io_size` bytes is counted; a failed
/// or short one stops the run, which then returns an error.
pub fn run(
    dev: &Path,
    mut workload: Workload,
    io_size: usize,
    depth: usize,
    warmup: Duration,
    run: Duration,
    completions: Completions,
) -> io::Result<QueueStats> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)?;
    let mut ring = UringSlots::new(file, depth, io_size, completions == Completions::Polled)?;
    let mut started = vec![Instant::now(); depth];
    let mut done: Vec<(usize, i32)> = Vec::with_capacity(depth);
    let mut stats = QueueStats::new();
    let begin = Instant::now();
    for slot in 0..depth {
        submit(&mut ring, slot, &mut workload, &mut started, io_size)?;
    }
    let (mut measuring_since, mut stopped, mut failure) = (None, false, None);
    let mut counting: Option<Counting> = None;
    let mut cpu_at_start = None;
    while ring.in_flight() > 0 {
        ring.submit_and_wait()?;
        let now = Instant::now();
        if measuring_since.is_none() && now - begin >= warmup {
            measuring_since = Some(now);
            cpu_at_start = Some(Usage::thread_now());
            counting = Some(syscount::start());
        }
        if let Some(t) = measuring_since.filter(|t| !stopped && now - *t >= run) {
            stopped = true;
            stats.elapsed = now - t;
            stats.syscalls = counting.take().map(Counting::finish).unwrap_or_default();
            stats.cpu = cpu_at_start.map(|u| Duration::from_secs_f64(u.thread_since().cpu_seconds));
        }
        done.clear();
        ring.complete(&mut done);
        for &(slot, result) in &done {
            if let Err(e) = check(result, io_size) {
                failure.get_or_insert(e);
                stopped = true;
            }
            if measuring_since.is_some() && !stopped {
                stats.record(io_size, (now - started[slot]).as_nanos() as u64);
            }
            if !stopped {
                submit(&mut ring, slot, &mut workload, &mut started, io_size)?;
            }
        }
    }
    failure.map_or(Ok(stats), Err)
}

/// A completion's result: the bytes transferred, or a negative errno. An
/// error unless it is all `io_size` bytes.
fn check(result: i32, io_size: usize) -> io::Result<()> {
    match usize::try_from(result) {
        Err(_) => Err(io::Error::from_raw_os_error(-result)),
        Ok(n) if n == io_size => Ok(()),
        Ok(n) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("a short I/O: {n} of {io_size} bytes"),
        )),
    }
}

/// Queues the workload's next I/O into `slot`, noting when.
fn submit(
    ring: &mut UringSlots,
    slot: usize,
    workload: &mut Workload,
    started: &mut [Instant],
    io_size: usize,
) -> io::Result<()> {
    let (unit, read) = workload.next_io();
    started[slot] = Instant::now();
    ring.push(slot, read, unit * io_size as u64)
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn only_a_full_length_completion_counts() {
        assert!(check(4096, 4096).is_ok());
        let short = check(512, 4096).unwrap_err();
        assert_eq!(short.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(short.to_string().contains("512 of 4096"), "{short}");
        assert!(
            check(0, 4096).is_err(),
            "end of device: nothing transferred"
        );
        assert_eq!(
            check(-libc::EIO, 4096).unwrap_err().raw_os_error(),
            Some(libc::EIO)
        );
    }
}
