//! The kernel baseline: the same workload through the kernel's block layer
//! with io_uring and O_DIRECT. io_uring's submission is `unsafe` (the kernel
//! keeps the buffer address), so this one module of the examples allows it.
#![allow(unsafe_code)]

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use io_uring::{opcode, types, IoUring};
use memmap2::MmapMut;

use crate::perf::{QueueStats, Workload};

/// One thread's io_uring run: `depth` I/Os of `io_size` bytes kept in flight
/// on `dev` for `warmup` then `run`; returns only when none is in flight.
pub fn run(
    dev: &Path,
    mut workload: Workload,
    io_size: usize,
    depth: usize,
    warmup: Duration,
    run: Duration,
) -> io::Result<QueueStats> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)?;
    let mut ring = IoUring::new(depth.next_power_of_two() as u32)?;
    // Page-aligned buffers, as O_DIRECT needs.
    let mut buffers = MmapMut::map_anon(depth * io_size)?;
    let mut slots = Slots {
        fd: types::Fd(file.as_raw_fd()),
        base: buffers.as_mut_ptr(),
        io_size,
        started: vec![Instant::now(); depth],
    };
    let mut done: Vec<(u64, i32)> = Vec::with_capacity(depth);
    let mut stats = QueueStats::new();
    let begin = Instant::now();
    let mut in_flight = 0;
    for slot in 0..depth {
        slots.submit(&mut ring, slot, &mut workload)?;
        in_flight += 1;
    }
    let (mut measuring_since, mut stopped, mut failure) = (None, false, None);
    while in_flight > 0 {
        match ring.submit_and_wait(1) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => other?,
        };
        let now = Instant::now();
        if measuring_since.is_none() && now - begin >= warmup {
            measuring_since = Some(now);
        }
        if let Some(t) = measuring_since.filter(|t| !stopped && now - *t >= run) {
            stopped = true;
            stats.elapsed = now - t;
        }
        done.clear();
        done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        for &(slot, result) in &done {
            in_flight -= 1;
            let slot = slot as usize;
            if result < 0 {
                failure.get_or_insert(io::Error::from_raw_os_error(-result));
                stopped = true;
            }
            if measuring_since.is_some() && !stopped {
                stats.record(io_size, (now - slots.started[slot]).as_nanos() as u64);
            }
            if !stopped {
                slots.submit(&mut ring, slot, &mut workload)?;
                in_flight += 1;
            }
        }
    }
    failure.map_or(Ok(stats), Err)
}

/// The buffers of the operations in flight, one slot each, and when each was submitted.
struct Slots {
    fd: types::Fd,
    base: *mut u8,
    io_size: usize,
    started: Vec<Instant>,
}

impl Slots {
    /// Submits the workload's next I/O into `slot`'s buffer.
    fn submit(
        &mut self,
        ring: &mut IoUring,
        slot: usize,
        workload: &mut Workload,
    ) -> io::Result<()> {
        let (unit, read) = workload.next_io();
        let offset = unit * self.io_size as u64;
        // SAFETY: slot < depth, so the buffer lies inside the mapping.
        let buf = unsafe { self.base.add(slot * self.io_size) };
        let len = self.io_size as u32;
        let entry = if read {
            opcode::Read::new(self.fd, buf, len).offset(offset).build()
        } else {
            opcode::Write::new(self.fd, buf, len).offset(offset).build()
        };
        self.started[slot] = Instant::now();
        // SAFETY: the buffer (a slot of the mapping) and the file outlive the
        // operation: `run` waits for every operation before it returns.
        unsafe { ring.submission().push(&entry.user_data(slot as u64)) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        Ok(())
    }
}
