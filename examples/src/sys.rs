//! The one module of the examples crate that uses `unsafe`: two kernel
//! interfaces of the baselines whose Rust bindings are `unsafe` by their
//! nature, each behind a safe type whose invariants make it sound. The rest
//! of the crate is compiled under the workspace's `unsafe_code = "deny"`
//! (AF_PACKET and sendmmsg need none: see `packet`, which uses nix).
//!
//! - [`UringSlots`]: io_uring submission (`SubmissionQueue::push`) is
//!   `unsafe` because the kernel keeps the buffer's address and the file
//!   descriptor after the call returns, beyond any borrow the compiler can
//!   see. `UringSlots` owns the buffers and the file, gives each operation a
//!   slot no other operation in flight uses, never hands out a reference to
//!   the buffers, and waits in `Drop` for every operation still in flight
//!   (leaking the mapping if it cannot), so the kernel never reads or writes
//!   memory that has been unmapped or reused.
//! - [`map_device`]: mapping a file is `unsafe` in memmap2 because the bytes
//!   behind the returned slice can change, or vanish (SIGBUS), if something
//!   else writes or truncates the file while it is mapped. It is used for
//!   copy-bench's mmap route over a block device, which cannot be truncated
//!   and which nothing writes while the benchmark reads it; that is the
//!   condition its callers must keep.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use io_uring::{opcode, types, IoUring};
use memmap2::{Mmap, MmapMut, MmapOptions};

/// Maps the first `len` bytes of `file` (a block device) read-only. The
/// caller must make sure nothing writes the device while the map lives (see
/// the module documentation).
pub fn map_device(file: &File, len: usize) -> io::Result<Mmap> {
    // SAFETY: the map is read-only and private to this process; a block
    // device has a fixed size and cannot be truncated under it, and the
    // benchmark's device is written by nothing while it runs (the caller's
    // condition), so the bytes behind the slice do not change while borrowed.
    unsafe { MmapOptions::new().len(len).map(file) }
}

/// An io_uring with a fixed set of equally sized, page-aligned buffers
/// ("slots") on one file, for O_DIRECT reads and writes.
pub struct UringSlots {
    ring: IoUring,
    /// The file the operations use; owned, so its descriptor stays open
    /// while any operation is in flight.
    file: File,
    /// The buffers' mapping: `None` only once leaked in `Drop`.
    buffers: Option<MmapMut>,
    /// Start of the mapping, taken before any operation was in flight (no
    /// reference to the buffers is made after that).
    base: *mut u8,
    io_size: usize,
    /// Slots whose operation has not completed.
    busy: Vec<bool>,
    in_flight: usize,
}

impl UringSlots {
    /// A ring for `slots` operations of `io_size` bytes each on `file`;
    /// `polled`: completions are polled for by the kernel
    /// (`IORING_SETUP_IOPOLL`, which needs a block device with poll queues:
    /// the nvme module's `poll_queues`) instead of signalled by interrupts.
    pub fn new(file: File, slots: usize, io_size: usize, polled: bool) -> io::Result<UringSlots> {
        let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "too many slots");
        let entries = u32::try_from(slots.max(1).next_power_of_two()).map_err(|_| too_big())?;
        let bytes = slots.checked_mul(io_size).ok_or_else(too_big)?;
        let ring = if polled {
            IoUring::builder().setup_iopoll().build(entries)?
        } else {
            IoUring::new(entries)?
        };
        // Page-aligned, as O_DIRECT needs.
        let mut buffers = MmapMut::map_anon(bytes.max(1))?;
        let base = buffers.as_mut_ptr();
        Ok(UringSlots {
            ring,
            file,
            buffers: Some(buffers),
            base,
            io_size,
            busy: vec![false; slots],
            in_flight: 0,
        })
    }

    /// Queues a read (or a write) of `slot`'s buffer at byte `offset` of the
    /// file; its completion carries `slot`. Submitted by the next
    /// [`UringSlots::submit_and_wait`].
    pub fn push(&mut self, slot: usize, read: bool, offset: u64) -> io::Result<()> {
        let len = u32::try_from(self.io_size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "I/O size over 4 GiB"))?;
        match self.busy.get(slot) {
            Some(false) if self.buffers.is_some() => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("slot {slot} does not exist or is in flight"),
                ))
            }
        }
        let buf = self.base.wrapping_add(slot * self.io_size);
        let fd = types::Fd(self.file.as_raw_fd());
        let entry = if read {
            opcode::Read::new(fd, buf, len).offset(offset).build()
        } else {
            opcode::Write::new(fd, buf, len).offset(offset).build()
        };
        // SAFETY: `buf..buf + io_size` is slot `slot` of the mapping, inside
        // it (slot < slots), and stays mapped until this operation has
        // completed: `Drop` waits for every operation in flight, or leaks the
        // mapping. No other operation in flight uses this slot (checked
        // above), and the buffers are never borrowed after `new`, so the
        // kernel's accesses alias nothing Rust holds. The descriptor is
        // `self.file`'s, open as long as `self` is.
        unsafe { self.ring.submission().push(&entry.user_data(slot as u64)) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        self.busy[slot] = true;
        self.in_flight += 1;
        Ok(())
    }

    /// Submits what was pushed and waits for at least one completion (EINTR
    /// is retried).
    pub fn submit_and_wait(&mut self) -> io::Result<()> {
        loop {
            match self.ring.submit_and_wait(1) {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                other => return other.map(|_| ()),
            }
        }
    }

    /// Appends the completions that have arrived to `out` as (slot, result:
    /// bytes moved, or a negative errno); their slots are free again.
    pub fn complete(&mut self, out: &mut Vec<(usize, i32)>) {
        for c in self.ring.completion() {
            let slot = c.user_data() as usize;
            if let Some(busy @ true) = self.busy.get_mut(slot) {
                *busy = false;
                self.in_flight -= 1;
                out.push((slot, c.result()));
            }
        }
    }

    /// Operations pushed and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

impl Drop for UringSlots {
    /// Waits for every operation in flight before the buffers are unmapped;
    /// if the ring fails, leaks the mapping instead (the kernel may still
    /// use it).
    fn drop(&mut self) {
        let mut done = Vec::new();
        while self.in_flight > 0 {
            if self.submit_and_wait().is_err() {
                std::mem::forget(self.buffers.take());
                return;
            }
            self.complete(&mut done);
            done.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn reads_and_writes_land_in_their_slots_and_drop_waits() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..4 * 4096)
            .map(|i| (i / 4096 * 17 + i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).expect("write the file");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        let mut ring = UringSlots::new(file, 4, 4096, false).expect("a ring");
        for slot in 0..4 {
            ring.push(slot, true, (3 - slot as u64) * 4096)
                .expect("push a read");
        }
        assert!(ring.push(4, true, 0).is_err(), "no slot 4");
        assert!(ring.push(0, true, 0).is_err(), "slot 0 is in flight");
        let mut done = Vec::new();
        while ring.in_flight() > 0 {
            ring.submit_and_wait().expect("submit");
            ring.complete(&mut done);
        }
        assert_eq!(done.len(), 4);
        assert!(done.iter().all(|&(_, r)| r == 4096), "{done:?}");
        // Slot k now holds block 3 - k: write slot 0 (block 3) over block 0.
        ring.push(0, false, 0).expect("push a write");
        drop(ring); // waits for the write
        let mut block = vec![0u8; 4096];
        std::fs::File::open(&path)
            .expect("open")
            .read_exact_at(&mut block, 0)
            .expect("read block 0");
        assert!(block == data[3 * 4096..], "the write landed");
    }

    #[test]
    fn a_mapped_file_reads_back() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("dev");
        std::fs::write(&path, b"0123456789").expect("write");
        let map = map_device(&File::open(&path).expect("open"), 4).expect("map");
        assert_eq!(&map[..], b"0123");
    }
}
