//! Who wrote the bytes a device is given: the basis for counting copies
//! (see [`Writer`]).

/// Who last wrote a range of DMA memory.
///
/// A program that claims zero copy should measure it: a NIC driver counts
/// every segment it hands to the NIC by who last wrote its bytes, and an
/// NVMe driver every write's source. That needs a record per buffer of the
/// bytes a device wrote, kept where the buffer is:
///
/// - a driver calls [`DmaTargetMut::device_wrote`](super::DmaTargetMut::device_wrote)
///   when a device's command or descriptor that wrote the memory completes
///   successfully (with the range it wrote), and with an empty range when
///   the command failed;
/// - every write by the CPU through a pool [`Buffer`](super::Buffer)'s
///   `&mut` accessors forgets the record (the CPU may have written any byte),
///   but for [`Buffer::write_at`](super::Buffer::write_at), which writes
///   known bytes and forgets it only when they touch the recorded range;
/// - a fresh buffer from a pool has none.
///
/// [`DmaTarget::writer`](super::DmaTarget::writer) then tells, for any range,
/// whether a device wrote all of it since the CPU last wrote the buffer.
/// Pool buffers ([`Buffer`](super::Buffer), [`SharedBuffer`](super::SharedBuffer))
/// keep the record; [`DmaMemory`](super::DmaMemory) and
/// [`RawDma`](super::RawDma) keep none and always answer [`Writer::Cpu`]: a
/// count can understate device-written bytes, never overstate them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    /// A device, by DMA, as recorded by the driver whose command wrote it;
    /// the CPU has not written the buffer since.
    Device,
    /// The CPU (or nobody known): anything not recorded as a device's.
    Cpu,
}

/// Bytes counted by who wrote them, e.g. what a NIC was given to send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BytesByWriter {
    /// Bytes a device wrote by DMA (not copied by the CPU since).
    pub device: u64,
    /// Bytes the CPU wrote (copies, headers, anything not recorded as a device's).
    pub cpu: u64,
}

impl BytesByWriter {
    /// Adds `bytes` to the count of `writer`.
    #[inline]
    pub fn add(&mut self, writer: Writer, bytes: usize) {
        match writer {
            Writer::Device => self.device += bytes as u64,
            Writer::Cpu => self.cpu += bytes as u64,
        }
    }

    /// Adds both of `other`'s counts.
    #[inline]
    pub fn add_all(&mut self, other: BytesByWriter) {
        self.device += other.device;
        self.cpu += other.cpu;
    }

    /// Both counts together.
    #[inline]
    pub fn total(&self) -> u64 {
        self.device + self.cpu
    }
}

/// The range of a buffer a device wrote last (empty: none), kept in two
/// `u32`s beside the buffer (pool buffers are at most 4 GiB).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DeviceWritten {
    start: u32,
    end: u32,
}

impl DeviceWritten {
    /// No byte is known to be a device's.
    pub(crate) const NONE: DeviceWritten = DeviceWritten { start: 0, end: 0 };

    /// `len` bytes at `offset` of a buffer of `capacity` bytes; empty when
    /// the range is empty or does not lie inside the buffer.
    #[inline]
    pub(crate) fn new(offset: usize, len: usize, capacity: usize) -> DeviceWritten {
        match offset.checked_add(len) {
            Some(end) if len > 0 && end <= capacity && end <= u32::MAX as usize => DeviceWritten {
                start: offset as u32,
                end: end as u32,
            },
            _ => DeviceWritten::NONE,
        }
    }

    /// Who wrote `len` bytes at `offset`: the device only if it wrote every
    /// one of them (an empty range has no device bytes: the CPU's).
    #[inline]
    pub(crate) fn writer(self, offset: usize, len: usize) -> Writer {
        let (start, end) = (self.start as usize, self.end as usize);
        // start <= offset, offset + len <= end, len > 0. A caller whose
        // offset and length are 32-bit (a packet's) and that knows len > 0
        // (a frame it checked) leaves the compiler two compares.
        let inside =
            start <= offset && offset.checked_add(len).is_some_and(|e| e <= end) && len > 0;
        if inside {
            Writer::Device
        } else {
            Writer::Cpu
        }
    }

    /// The record after the CPU wrote `len` bytes at `offset`: forgotten
    /// when the write touched a byte of the recorded range, kept when it
    /// lay wholly outside it (a header written into the headroom before a
    /// frame the device wrote).
    #[inline]
    pub(crate) fn after_cpu_write(self, offset: usize, len: usize) -> DeviceWritten {
        let end = offset.saturating_add(len);
        let overlaps = len > 0 && offset < self.end as usize && end > self.start as usize;
        if overlaps {
            DeviceWritten::NONE
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_the_devices_only_when_the_device_wrote_all_of_it() {
        let w = DeviceWritten::new(100, 50, 4096);
        assert_eq!(w.writer(100, 50), Writer::Device);
        assert_eq!(w.writer(120, 30), Writer::Device);
        assert_eq!(w.writer(100, 1), Writer::Device);
        assert_eq!(w.writer(149, 1), Writer::Device);
        assert_eq!(w.writer(99, 2), Writer::Cpu);
        assert_eq!(w.writer(149, 2), Writer::Cpu);
        assert_eq!(w.writer(150, 1), Writer::Cpu);
        assert_eq!(w.writer(0, 4096), Writer::Cpu);
        assert_eq!(w.writer(120, 0), Writer::Cpu, "no bytes are no device's");
        assert_eq!(w.writer(usize::MAX, 2), Writer::Cpu);
    }

    #[test]
    fn ranges_outside_the_buffer_or_empty_record_nothing() {
        assert_eq!(DeviceWritten::new(0, 0, 4096), DeviceWritten::NONE);
        assert_eq!(DeviceWritten::new(4000, 97, 4096), DeviceWritten::NONE);
        assert_eq!(DeviceWritten::new(usize::MAX, 2, 4096), DeviceWritten::NONE);
        assert_eq!(
            DeviceWritten::new(0, 4096, 4096).writer(0, 4096),
            Writer::Device
        );
        assert_eq!(DeviceWritten::NONE.writer(0, 1), Writer::Cpu);
    }

    #[test]
    fn a_cpu_write_forgets_the_record_only_when_it_touches_it() {
        let w = DeviceWritten::new(14, 60, 2048);
        // Before, after, empty, and empty inside: the record stays.
        assert_eq!(w.after_cpu_write(2, 12), w, "ends where the range starts");
        assert_eq!(w.after_cpu_write(74, 100), w, "starts where it ends");
        assert_eq!(w.after_cpu_write(0, 0), w);
        assert_eq!(w.after_cpu_write(30, 0), w, "no byte written");
        // Any byte of it written: the range is the CPU's.
        for (offset, len) in [(2, 13), (73, 1), (20, 4), (0, 2048), (14, 60)] {
            let after = w.after_cpu_write(offset, len);
            assert_eq!(after, DeviceWritten::NONE, "{len} bytes at {offset}");
            assert_eq!(after.writer(14, 60), Writer::Cpu);
        }
        assert_eq!(w.after_cpu_write(usize::MAX, 2), w, "past any buffer");
        assert_eq!(
            DeviceWritten::NONE.after_cpu_write(0, 1),
            DeviceWritten::NONE
        );
    }

    #[test]
    fn counts_add_by_writer() {
        let mut c = BytesByWriter::default();
        c.add(Writer::Device, 1456);
        c.add(Writer::Cpu, 42);
        c.add(Writer::Device, 4);
        assert_eq!(
            c,
            BytesByWriter {
                device: 1460,
                cpu: 42
            }
        );
        assert_eq!(c.total(), 1502);
    }
}
