//! virtio-net over modern virtio-pci (virtio spec v1.2, sections 4.1 and 5.1),
//! as QEMU's `virtio-net-pci` with `disable-legacy=on,iommu_platform=on`
//! presents it: behind the IOMMU, like any other device here.
//!
//! Bring-up (3.1.1): reset, ACKNOWLEDGE and DRIVER, feature negotiation
//! (VERSION_1 and ACCESS_PLATFORM required; MAC, STATUS and CSUM taken when
//! offered), FEATURES_OK checked, one receive and one transmit split
//! virtqueue in DMA memory, DRIVER_OK. Polling by default (the rings ask the
//! device for no interrupts); in interrupt mode the receive queue signals
//! MSI-X vector 0, which [`NetDevice::wait_rx`] sleeps on. The driver notifies
//! the device only when its used ring does not say it need not. Jumbo frames
//! (up to 9014 bytes) use 16 KiB receive buffers.
//!
//! Every frame carries the 12-byte `virtio_net_hdr` in front. On transmit
//! a packet sent with [`NetDevice::tx_packets`] that has 12 bytes of
//! headroom (a received frame has) gets a zero header written there, in
//! its own buffer, and goes out as one descriptor (VERSION_1 lets the
//! device take the header and frame in any framing, spec 2.7.4 and
//! 5.1.6.2, as DPDK's virtio driver does); other frames get a chain: a
//! header from a small header area per descriptor head (checksum offload: NEEDS_CSUM with
//! the L4 start and the checksum's offset; virtio leaves the IPv4 header
//! checksum to the driver, which computes those 20 bytes; a device that does
//! not offer CSUM, as QEMU's with a backend other than tap, gets the L4 sum
//! computed by the driver too, which reads the payload but copies nothing);
//! on receive the
//! device writes it into the buffer, 2 bytes into it so that a UDP payload
//! after it is 4-byte aligned (as on the e1000).
//!
//! Nothing the device reports is trusted: capabilities (length, extent,
//! alignment), queue sizes, notification offsets, the MAC (read under a
//! stable configuration generation) and every used-ring entry (an id not in
//! flight, a length past the buffers, an index ahead of what was made
//! available) are checked before use, and a bad one is an error naming the
//! device and the value.
//!
//! **Stopping.** `Drop` resets the device and proves it (status reads 0)
//! before the queues give their buffers back; failing that it turns bus
//! mastering off and reads it back; failing that it leaks the queues, the
//! header area and every buffer on purpose (see [Stopping](crate#stopping)).
//! [`VirtioNet::new`] builds the driver before the first queue address is
//! written to the device, so its errors after that go through the same
//! `Drop`.
//!
//! ```no_run
//! # fn main() -> nic_driver::Result<()> {
//! let container = vfio_core::vfio::Container::new()?;
//! let nic = nic_driver::open(&container, "0000:00:05.0".parse()?, nic_driver::Config::default())?;
//! assert_eq!(nic.driver_name(), "virtio-net");
//! # Ok(()) }
//! ```

pub(crate) mod regs;
mod virtqueue;

// Public but hidden: the fuzz target `virtqueue_used_ring` plays the device
// against a split virtqueue no device is given, through a harness that takes
// no IOVA. Not part of the API. The queue the driver fills with its buffers'
// IOVAs, `Virtqueue`, is private.
use virtqueue::{head_slots, Virtqueue};
#[doc(hidden)]
pub use virtqueue::{Used, UsedError, UsedRingHarness, MAX_CHAIN};

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use vfio_core::dma::{
    Backing, Buffer, BufferCache, BufferPool, BytesByWriter, DmaMemory, DmaTarget, SharedBuffer,
};
use vfio_core::mmio::Mmio;
use vfio_core::pci::PciAddress;
use vfio_core::vfio::{Device, Interrupts, IrqKind};

use self::regs::{cap, common, feature, hdr, net_config, pci, status};
use crate::frame::check_packets;
use crate::link::LinkWatch;
use crate::{
    ChecksumOffload, Config, Error, FillPayload, Link, NetDevice, Packet, Result, Segment, Stats,
    TxFrame, MAX_SEGMENTS,
};

pub use regs::DEVICE_IDS;
/// The driver's name ([`NetDevice::driver_name`], [`crate::DRIVERS`], logs).
pub const NAME: &str = "virtio-net";

/// Bytes before the net header in each receive buffer; a received frame
/// starts after both, at [`Packet::offset`] = `RX_HEADROOM` + 12.
pub const RX_HEADROOM: usize = 2;
/// Where the packets of [`NetDevice::alloc_packet`] and
/// [`NetDevice::alloc_packets`] start in their buffers: where received
/// frames start, so that [`NetDevice::tx_packets`] writes the net header
/// into the 12 bytes before the frame and gives the device one descriptor.
/// The pool's buffers hold a whole frame after it (2048 bytes for
/// 1514-byte frames, 16 KiB for jumbo ones: checked when compiled).
pub const TX_HEADROOM: usize = RX_HEADROOM + hdr::SIZE;
/// Largest frame sent or received: 1514 bytes, or 9014 with jumbo frames
/// (receive buffers of 16 KiB then hold a whole frame: no mergeable buffers).
const MAX_FRAME: usize = 1514;
const MAX_JUMBO_FRAME: usize = 9014;
/// Pool buffer sizes: for 1514-byte frames, for jumbo frames.
const BUF_SIZE: usize = 2048;
const JUMBO_BUF_SIZE: usize = 16384;
const _: () = assert!(BUF_SIZE >= TX_HEADROOM + MAX_FRAME);
const _: () = assert!(JUMBO_BUF_SIZE >= TX_HEADROOM + MAX_JUMBO_FRAME);

/// Where a configuration structure lives: a BAR mapping, an offset in it
/// and the structure's length (checked to lie inside the BAR, at an offset
/// aligned for the accesses the driver makes there).
#[derive(Debug, Clone)]
struct Region {
    bar: Arc<Mmio>,
    offset: usize,
    len: usize,
}

impl Region {
    fn r8(&self, at: usize) -> u8 {
        self.bar.read8(self.offset + at)
    }
    fn w8(&self, at: usize, v: u8) {
        self.bar.write8(self.offset + at, v)
    }
    fn r16(&self, at: usize) -> u16 {
        self.bar.read16(self.offset + at)
    }
    fn w16(&self, at: usize, v: u16) {
        self.bar.write16(self.offset + at, v)
    }
    fn r32(&self, at: usize) -> u32 {
        self.bar.read32(self.offset + at)
    }
    fn w32(&self, at: usize, v: u32) {
        self.bar.write32(self.offset + at, v)
    }
    fn w64(&self, at: usize, v: u64) {
        self.w32(at, v as u32);
        self.w32(at + 4, (v >> 32) as u32);
    }
}

/// The segments of a frame being sent, held until the device is done.
type Held = [Option<Segment>; MAX_SEGMENTS];

/// What a transmit descriptor head sent by [`NetDevice::tx_packets`] or
/// [`NetDevice::tx_fill`] holds until the device is done: the buffer (the
/// packet's offset no longer matters) and the frame's bytes, for
/// [`Stats::tx_bytes`].
#[derive(Debug, Default)]
struct TxSlot {
    buf: Option<Buffer>,
    len: u32,
}

/// A virtio network device (virtio-net over modern virtio-pci), brought up,
/// with one receive and one transmit split virtqueue in DMA memory, a net
/// header area for transmit and a buffer pool (see [`Config`] for the
/// sizes). Drive it through [`NetDevice`]; open it with
/// [`crate::open`] or [`VirtioNet::new`].
///
/// Each receive descriptor holds a pool buffer the device may write until
/// [`NetDevice::rx_batch`] takes it out; each transmitted frame's segments
/// are held until the device has used its chain. `Drop` resets the device
/// before the queues give their buffers back (see the [module docs](self)).
#[derive(Debug)]
pub struct VirtioNet {
    // Field order is drop order: the device is reset in `Drop` first, then
    // the rings give their buffers back, then the pool and the device go.
    rx: Virtqueue,
    tx: Virtqueue,
    rx_bufs: Vec<Option<Buffer>>,
    /// By descriptor head: the buffer [`NetDevice::tx_packets`] or
    /// [`NetDevice::tx_fill`] sent from there.
    tx_bufs: Vec<TxSlot>,
    /// By descriptor head: the segments of the chain [`NetDevice::tx_batch`]
    /// sent from there, the first `tx_count[head]` of them (0: none).
    tx_held: Vec<Held>,
    tx_count: Vec<u8>,
    /// By descriptor head: whether its net header holds offload fields (a
    /// plain frame's header must then be zeroed again).
    tx_hdr_set: Vec<bool>,
    /// One net header per transmit descriptor head.
    tx_hdrs: DmaMemory,
    /// The pool's buffers this NIC recycles without the pool's lock (as
    /// the e1000's: cleaned transmit buffers, receive refills,
    /// [`NetDevice::alloc_packet`]).
    cache: BufferCache,
    pool: Arc<BufferPool>,
    common: Region,
    device_cfg: Region,
    /// Notification addresses of the receive and transmit queues.
    notify: [Region; 2],
    features: u64,
    device: Device,
    mac: [u8; 6],
    promiscuous: bool,
    stats: Stats,
    /// The link as last read, and when `tx_batch` may trust it without a
    /// read ([`crate::link`]); `link()` refreshes it.
    link: LinkWatch,
    /// Frames reclaimed inside `tx_batch`, reported by the next `tx_clean`.
    tx_reclaimed: usize,
    max_frame: usize,
    /// MSI-X vector 0 (receive) in interrupt mode.
    irqs: Option<Interrupts>,
    /// A broken transmit queue was logged (by `tx_clean`, which returns no error).
    tx_broken_logged: bool,
}

impl VirtioNet {
    /// Brings up an opened virtio-net device.
    ///
    /// Everything the device reports is checked before it is used (where its
    /// structures lie and how they are aligned, the queue sizes, the
    /// notification addresses, the MAC), and no memory is given to it before
    /// the driver value exists: any error after that drops it, and `Drop`
    /// resets the device before the memory goes (see
    /// [Stopping](crate#stopping)).
    ///
    /// # Errors
    ///
    /// - [`Error::Device`]: not a modern virtio-net device ([`DEVICE_IDS`]);
    ///   a missing or malformed capability (outside its BAR, misaligned, too
    ///   short); a reset that does not read back 0 within 1 s (bus
    ///   mastering is then turned off); VERSION_1 or ACCESS_PLATFORM not
    ///   offered, or the features refused; fewer than 2 queues; queue sizes
    ///   that are 0, not a power of two, too small for a frame's chain, or
    ///   that do not read back; notification addresses outside their
    ///   structure; an MSI-X vector refused; no valid MAC; a device that
    ///   fails during bring-up.
    /// - [`Error::Vfio`]: PCI configuration space, mapping a BAR, enabling
    ///   MSI-X, allocating the pool, the queues or the header area.
    pub fn new(device: Device, config: Config) -> Result<VirtioNet> {
        let addr = device.address();
        let fail = |what: String| Error::Device { addr, what };
        let (vendor, id) = (device.vendor_id()?, device.device_id()?);
        if vendor != regs::VENDOR || !DEVICE_IDS.contains(&id) {
            return Err(fail(format!(
                "{vendor:04x}:{id:04x} is not a modern virtio-net device ({:04x}:{DEVICE_IDS:04x?}); \
                 QEMU: -device virtio-net-pci,disable-legacy=on,iommu_platform=on"
            , regs::VENDOR)));
        }

        let want = |n: usize| (n.clamp(8, 1024) as u16).next_power_of_two();
        device.enable_bus_master()?;
        let caps = Caps::find(&device)?;
        let common = caps
            .common
            .clone()
            .ok_or_else(|| fail("no common configuration capability".into()))?;
        let device_cfg = caps
            .device
            .clone()
            .ok_or_else(|| fail("no device configuration capability".into()))?;
        let (notify_cap, multiplier) = caps
            .notify
            .clone()
            .ok_or_else(|| fail("no notification capability".into()))?;

        if let Err(e) = reset(&common, addr) {
            // None of our memory is in its hands, but what it was left doing
            // is unknown: keep it from starting DMA.
            if let Err(off) = device.disable_bus_master() {
                log::error!("{addr}: after a failed reset, bus mastering stays on: {off}");
            }
            return Err(e);
        }
        common.w8(common::DEVICE_STATUS, status::ACKNOWLEDGE | status::DRIVER);
        let offered = read_features(&common);
        let required = feature::VERSION_1 | feature::ACCESS_PLATFORM;
        if offered & required != required {
            return Err(fail(format!(
                "the device does not offer VERSION_1 and ACCESS_PLATFORM (offers {offered:#x}): \
                 use disable-legacy=on,iommu_platform=on"
            )));
        }
        let features = required | offered & (feature::MAC | feature::STATUS | feature::CSUM);
        write_features(&common, features);
        common.w8(
            common::DEVICE_STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        if common.r8(common::DEVICE_STATUS) & status::FEATURES_OK == 0 {
            return Err(fail(format!("the device refused features {features:#x}")));
        }
        let queues = common.r16(common::NUM_QUEUES);
        if queues < 2 {
            return Err(fail(format!(
                "the device has {queues} queues; a network device has a receive and a transmit queue"
            )));
        }
        let config_end = if features & feature::STATUS != 0 {
            net_config::STATUS_END
        } else if features & feature::MAC != 0 {
            net_config::MAC_END
        } else {
            0
        };
        if device_cfg.len < config_end {
            return Err(fail(format!(
                "the device configuration structure has {} bytes; the features {features:#x} need {config_end}",
                device_cfg.len
            )));
        }
        let mac = if features & feature::MAC != 0 {
            read_mac(&common, &device_cfg).map_err(fail)?
        } else {
            [0x02, 0, 0, 0, 0, 0x01]
        };
        let rx_size = queue_size(&common, regs::RX_QUEUE, want(config.rx_ring), 1).map_err(fail)?;
        let tx_size =
            queue_size(&common, regs::TX_QUEUE, want(config.tx_ring), MAX_CHAIN).map_err(fail)?;
        let notify = [
            notify_region(&common, &notify_cap, multiplier, regs::RX_QUEUE).map_err(fail)?,
            notify_region(&common, &notify_cap, multiplier, regs::TX_QUEUE).map_err(fail)?,
        ];
        let container = Arc::clone(device.container());
        // Interrupt mode: MSI-X vector 0 for the receive queue, none else.
        let irqs = if config.interrupts {
            Some(device.enable_irqs(IrqKind::Msix, 1)?)
        } else {
            None
        };
        let rx = Virtqueue::new(&container, rx_size)?;
        let tx = Virtqueue::new(&container, tx_size)?;
        let (buf_size, max_frame) = if config.jumbo {
            (JUMBO_BUF_SIZE, MAX_JUMBO_FRAME)
        } else {
            (BUF_SIZE, MAX_FRAME)
        };
        let (rx_size, tx_size) = (rx_size as usize, tx_size as usize);
        let pool = BufferPool::new(
            &container,
            buf_size,
            rx_size * 2 + tx_size + config.spare_buffers,
        )?;
        // Receive buffers come only from this pool, of the device's
        // container (no caller hands the device receive memory), so no
        // descriptor points at memory of another container.
        assert!(Arc::ptr_eq(pool.container(), &container));
        let tx_hdrs = DmaMemory::new(&container, tx_size * 16, Backing::Auto)?;
        // From here on `Drop` resets the device before any of this memory goes.
        let mut nic = VirtioNet {
            rx,
            tx,
            rx_bufs: (0..rx_size).map(|_| None).collect(),
            tx_bufs: (0..tx_size).map(|_| TxSlot::default()).collect(),
            tx_held: (0..tx_size).map(|_| Held::default()).collect(),
            tx_count: vec![0; tx_size],
            // Unknown at first: each header is zeroed at its first use.
            tx_hdr_set: vec![true; tx_size],
            tx_hdrs,
            cache: BufferCache::new(&pool, crate::cache_size(&pool)),
            pool,
            common,
            device_cfg,
            notify,
            features,
            device,
            mac,
            promiscuous: false,
            stats: Stats::default(),
            link: LinkWatch::new(config.link_poll),
            tx_reclaimed: 0,
            max_frame,
            irqs,
            tx_broken_logged: false,
        };
        nic.start()?;
        Ok(nic)
    }

    /// Gives the queues to the device, sets DRIVER_OK and fills the receive queue.
    fn start(&mut self) -> Result<()> {
        let addr = self.address();
        let fail = |what: String| Error::Device { addr, what };
        self.common.w16(common::MSIX_CONFIG, common::NO_VECTOR);
        let rx_vector = if self.irqs.is_some() {
            0
        } else {
            common::NO_VECTOR
        };
        program_queue(&self.common, regs::RX_QUEUE, &self.rx, rx_vector).map_err(fail)?;
        program_queue(&self.common, regs::TX_QUEUE, &self.tx, common::NO_VECTOR).map_err(fail)?;
        self.rx.set_interrupts(self.irqs.is_some());
        self.common.w8(
            common::DEVICE_STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        self.refill()?;
        let s = self.common.r8(common::DEVICE_STATUS);
        if s & (status::NEEDS_RESET | status::FAILED) != 0 {
            return Err(fail(format!(
                "the device failed during bring-up (status {s:#04x})"
            )));
        }
        Ok(())
    }

    /// The NIC's PCI address.
    pub fn address(&self) -> PciAddress {
        self.device.address()
    }

    /// The pool the NIC's buffers come from.
    pub fn pool(&self) -> &Arc<BufferPool> {
        &self.pool
    }

    /// Gives every free receive descriptor a buffer; notifies once.
    fn refill(&mut self) -> Result<()> {
        while self.rx.free() > 0 {
            let buf = self.pool.try_alloc()?;
            self.arm(buf);
        }
        self.rx.publish();
        if self.rx.wants_notify() {
            self.notify[0].w16(0, regs::RX_QUEUE);
        }
        Ok(())
    }

    /// Queues `buf` on a free receive descriptor (not yet published).
    fn arm(&mut self, buf: Buffer) {
        let len = (buf.capacity() - RX_HEADROOM) as u32;
        let head = self
            .rx
            .add_one(buf.iova() + RX_HEADROOM as u64, len, true)
            .expect("a used descriptor was freed for this buffer");
        self.rx_bufs[head as usize] = Some(buf);
    }

    /// Releases the packets and segments of frames the device has sent (one
    /// read of the used index, then the entries it shows), counting them in
    /// `tx_reclaimed` and in [`Stats::tx_packets`] and [`Stats::tx_bytes`]
    /// (a frame is sent when the device gives its chain back, not when it
    /// is queued); an error when the transmit queue is broken.
    fn reclaim(&mut self) -> Result<()> {
        if let Err(e) = self.tx.used_ready() {
            return Err(self.protocol(format!("transmit queue: {e}")));
        }
        let (mut frames, mut bytes) = (0, 0);
        let (mask, slots) = head_slots(&mut self.tx_bufs, self.tx.size());
        let device = &self.device;
        let (cache, held, count) = (&mut self.cache, &mut self.tx_held, &mut self.tx_count);
        self.tx.take_used_batch(|used| {
            let head = match used {
                Ok(u) => u.head,
                // Nothing is written on transmit, so the length means
                // nothing; the chain is done all the same.
                Err(UsedError::TooLong { head, .. }) => head,
                // NotInFlight (an index jump comes only from `used_ready`).
                Err(e) => {
                    log::warn!("{}: virtio-net transmit queue: {e}", device.address());
                    return;
                }
            };
            let slot = &mut slots[head as usize & mask];
            if let Some(buf) = slot.buf.take() {
                frames += 1;
                bytes += slot.len as usize;
                cache.free_batched(buf);
            } else if let Some(n) = release_segments(held, count, cache, head) {
                frames += 1;
                bytes += n;
            }
        });
        self.tx_reclaimed += frames;
        self.stats.tx_packets += frames as u64;
        self.stats.tx_bytes += bytes as u64;
        Ok(())
    }

    fn protocol(&self, what: String) -> Error {
        Error::Device {
            addr: self.address(),
            what: format!("virtio-net: {what}"),
        }
    }

    /// A frame this (non-promiscuous) NIC takes: for its MAC, or group-addressed.
    fn wanted(&self, frame: &[u8]) -> bool {
        self.promiscuous || frame[0] & 1 == 1 || frame[..6] == self.mac
    }

    /// The 12-byte net header for `frame`, and the IPv4 header checksum the
    /// device will not compute, written into the frame.
    fn header(&mut self, head: u16, frame: &mut TxFrame) -> Result<u64> {
        let at = head as usize * 16;
        let mut h = [0u8; hdr::SIZE];
        let Some(o) = frame.offload else {
            return Ok(self.plain_header(head));
        };
        ipv4_checksum(frame, o)?;
        if self.features & feature::CSUM != 0 {
            h[hdr::FLAGS] = hdr::NEEDS_CSUM;
            h[hdr::CSUM_START..hdr::CSUM_START + 2]
                .copy_from_slice(&(o.l4_start as u16).to_le_bytes());
            h[hdr::CSUM_OFFSET..hdr::CSUM_OFFSET + 2]
                .copy_from_slice(&(o.checksum_offset() as u16).to_le_bytes());
        } else {
            // QEMU offers CSUM only with a backend that takes the net
            // header (tap): do the L4 sum here, reading the payload.
            l4_checksum(frame, o)?;
        }
        self.tx_hdr_set[head as usize] = true;
        self.tx_hdrs.write_bytes(at, &h);
        Ok(self.tx_hdrs.iova() + at as u64)
    }

    /// The IOVA of head `head`'s net header for a frame without offload:
    /// all zeros, written again only when an offload frame last set it.
    #[inline]
    fn plain_header(&mut self, head: u16) -> u64 {
        let at = head as usize * 16;
        if std::mem::take(&mut self.tx_hdr_set[head as usize]) {
            self.tx_hdrs.write_bytes(at, &[0; hdr::SIZE]);
        }
        self.tx_hdrs.iova() + at as u64
    }
}

/// Releases the segments of the frame [`NetDevice::tx_batch`] sent from
/// head `head` (held in `held`, the first `count[head]` of them); its
/// bytes, or None when it held none.
fn release_segments(
    held: &mut [Held],
    count: &mut [u8],
    cache: &mut BufferCache,
    head: u16,
) -> Option<usize> {
    let count = std::mem::take(&mut count[head as usize]) as usize;
    if count == 0 {
        return None;
    }
    let mut bytes = 0;
    for slot in &mut held[head as usize][..count] {
        if let Some(segment) = slot.take() {
            bytes += segment.dma().1;
            segment.recycle(cache);
        }
    }
    Some(bytes)
}

/// A one's complement sum over a byte stream that may arrive in pieces of
/// any length (RFC 1071).
#[derive(Default)]
struct Checksum {
    sum: u32,
    odd: bool,
}

impl Checksum {
    fn add(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.sum += if self.odd { b as u32 } else { (b as u32) << 8 };
            self.odd = !self.odd;
        }
        while self.sum > 0xffff {
            self.sum = (self.sum & 0xffff) + (self.sum >> 16);
        }
    }

    /// The checksum: the complement of the folded sum.
    fn finish(&self) -> u16 {
        !(self.sum as u16)
    }
}

/// The first `len` bytes of the frame, which must be a packet the CPU wrote
/// (headers the driver completes live there).
fn headers(frame: &mut TxFrame, len: usize) -> Result<&mut [u8]> {
    match frame.first_segment_mut() {
        Some(Segment::Packet(p)) if p.len() >= len => Ok(&mut p.data_mut()[..len]),
        _ => Err(Error::InvalidFrame(format!(
            "checksum offload on virtio needs the first {len} bytes (the headers) in a packet segment"
        ))),
    }
}

/// Computes the IPv4 header checksum at `o.ip_start` (virtio's offload does
/// only the L4 sum).
fn ipv4_checksum(frame: &mut TxFrame, o: ChecksumOffload) -> Result<()> {
    let ip = o.ip_start as usize;
    let header = &mut headers(frame, ip + 20)?[ip..];
    header[10..12].copy_from_slice(&[0, 0]);
    let mut sum = Checksum::default();
    sum.add(header);
    header[10..12].copy_from_slice(&sum.finish().to_be_bytes());
    Ok(())
}

/// Completes the UDP/TCP checksum in software: the field holds the
/// pseudo-header sum (the offload contract); the one's complement sum runs
/// from `o.l4_start` to the end of the frame, across its segments.
fn l4_checksum(frame: &mut TxFrame, o: ChecksumOffload) -> Result<()> {
    let l4 = o.l4_start as usize;
    let field = l4 + o.checksum_offset();
    let (mut sum, mut at) = (Checksum::default(), 0usize);
    for seg in frame.segments() {
        let bytes = seg.bytes();
        sum.add(&bytes[l4.saturating_sub(at).min(bytes.len())..]);
        at += bytes.len();
    }
    let mut folded = sum.finish();
    if folded == 0 && !o.tcp {
        folded = 0xffff; // UDP: 0 means "no checksum"
    }
    headers(frame, field + 2)?[field..].copy_from_slice(&folded.to_be_bytes());
    Ok(())
}

/// How long a reset may take to show (status reads 0). Short in unit tests,
/// whose models may never finish one.
const RESET_TIMEOUT: Duration = if cfg!(test) {
    Duration::from_millis(20)
} else {
    Duration::from_secs(1)
};

/// Resets the device and proves it: device status reads 0 within
/// [`RESET_TIMEOUT`] (then it uses no queue and writes no memory, 2.1.2).
fn reset(common: &Region, addr: PciAddress) -> Result<()> {
    common.w8(common::DEVICE_STATUS, 0);
    let mut s = 0;
    let done = vfio_core::poll::try_until(RESET_TIMEOUT, || {
        s = common.r8(common::DEVICE_STATUS);
        if s == 0xff {
            return Err(Error::Device {
                addr,
                what: "virtio device status reads all ones: the device no longer answers".into(),
            });
        }
        Ok((s == 0).then_some(()))
    })?;
    done.ok_or_else(|| Error::Device {
        addr,
        what: format!(
            "virtio device status did not read 0 within {RESET_TIMEOUT:?} of a reset (reads {s:#04x})"
        ),
    })
}

fn read_features(common: &Region) -> u64 {
    (0..2).fold(0, |acc, word| {
        common.w32(common::DEVICE_FEATURE_SELECT, word);
        acc | (common.r32(common::DEVICE_FEATURE) as u64) << (32 * word)
    })
}

fn write_features(common: &Region, features: u64) {
    for word in 0..2 {
        common.w32(common::DRIVER_FEATURE_SELECT, word);
        common.w32(common::DRIVER_FEATURE, (features >> (32 * word)) as u32);
    }
}

/// Reads of a configuration field wider than one access before giving up on
/// a configuration generation that keeps changing.
const CONFIG_READS: usize = 10;

/// The MAC from the device configuration: read until the configuration
/// generation is the same before and after (2.5.1; the six bytes are six
/// accesses), and checked to be a station address.
fn read_mac(common: &Region, device_cfg: &Region) -> std::result::Result<[u8; 6], String> {
    for _ in 0..CONFIG_READS {
        let before = common.r8(common::CONFIG_GENERATION);
        let mac = std::array::from_fn(|i| device_cfg.r8(net_config::MAC + i));
        if common.r8(common::CONFIG_GENERATION) == before {
            return crate::check_mac(mac);
        }
    }
    Err(format!(
        "the configuration generation changed during each of {CONFIG_READS} reads of the MAC"
    ))
}

/// The size for queue `q`: `want` (a power of two) or the device's maximum
/// when smaller, which must be a power of two (2.7) and hold `min`
/// descriptors (a transmitted frame's chain).
fn queue_size(common: &Region, q: u16, want: u16, min: usize) -> std::result::Result<u16, String> {
    common.w16(common::QUEUE_SELECT, q);
    let max = common.r16(common::QUEUE_SIZE);
    if max == 0 {
        return Err(format!("queue {q} is not available (its size reads 0)"));
    }
    if !max.is_power_of_two() {
        return Err(format!(
            "queue {q} has size {max}, not a power of two as a split virtqueue's must be"
        ));
    }
    let size = want.min(max);
    if (size as usize) < min {
        return Err(format!(
            "queue {q} holds at most {max} descriptors; a frame needs {min} (the net header and up to {MAX_SEGMENTS} segments)"
        ));
    }
    Ok(size)
}

/// Where the driver notifies queue `q`: `queue_notify_off` × the multiplier
/// into the notification structure (4.1.4.4), which must hold the 16-bit
/// write there.
fn notify_region(
    common: &Region,
    notify: &Region,
    multiplier: u32,
    q: u16,
) -> std::result::Result<Region, String> {
    common.w16(common::QUEUE_SELECT, q);
    let n = common.r16(common::QUEUE_NOTIFY_OFF);
    // u16 × u32 fits a u64, and so does the sum with a BAR offset.
    let off = n as u64 * multiplier as u64;
    let at = notify.offset as u64 + off;
    let inside = off + 2 <= notify.len as u64;
    match usize::try_from(at) {
        Ok(at) if inside && notify.bar.fits(at, 2) => Ok(Region {
            bar: Arc::clone(&notify.bar),
            offset: at,
            len: 2,
        }),
        _ => Err(format!(
            "queue {q}'s notification address, queue_notify_off {n} x notify_off_multiplier {multiplier} \
             = {off:#x}, lies outside the {:#x}-byte notification structure at {:#x} (or is not 2-byte \
             aligned) in a {:#x}-byte BAR",
            notify.len,
            notify.offset,
            notify.bar.len()
        )),
    }
}

/// Gives queue `q` to the device: its MSI-X vector, size and ring addresses,
/// each checked where the device answers, then enables it.
fn program_queue(
    common: &Region,
    q: u16,
    vq: &Virtqueue,
    vector: u16,
) -> std::result::Result<(), String> {
    common.w16(common::QUEUE_SELECT, q);
    common.w16(common::QUEUE_MSIX_VECTOR, vector);
    let got = common.r16(common::QUEUE_MSIX_VECTOR);
    if got != vector {
        return Err(format!(
            "the device refused MSI-X vector {vector:#x} for queue {q} (reads {got:#x})"
        ));
    }
    common.w16(common::QUEUE_SIZE, vq.size());
    let size = common.r16(common::QUEUE_SIZE);
    if size != vq.size() {
        return Err(format!(
            "queue {q}'s size reads {size} after the driver set {}: its rings would not match their memory",
            vq.size()
        ));
    }
    common.w64(common::QUEUE_DESC, vq.desc_iova());
    common.w64(common::QUEUE_DRIVER, vq.driver_iova());
    common.w64(common::QUEUE_DEVICE, vq.device_iova());
    common.w16(common::QUEUE_ENABLE, 1);
    Ok(())
}

/// The configuration structures found by walking the PCI capabilities.
#[derive(Default)]
struct Caps {
    common: Option<Region>,
    device: Option<Region>,
    notify: Option<(Region, u32)>,
}

impl Caps {
    /// Walks the capability list in config space (4.1.4), mapping the BARs
    /// the vendor capabilities point into. At most 48 capabilities are read,
    /// so a looping list ends. Each structure must lie inside its BAR, at an
    /// offset aligned for the accesses made there (32-bit in the common
    /// configuration, 16-bit in the device's), and the common configuration
    /// must hold every field the driver uses.
    fn find(device: &Device) -> Result<Caps> {
        let addr = device.address();
        let fail = |what: String| Error::Device { addr, what };
        let mut caps = Caps::default();
        let status = u16::from_le_bytes(device.config_read::<2>(pci::STATUS)?);
        if status & pci::STATUS_CAP_LIST == 0 {
            return Ok(caps);
        }
        let mut bars: Vec<(u8, Arc<Mmio>)> = Vec::new();
        let mut at = device.config_read::<1>(pci::CAP_PTR)?[0] as u16 & !3;
        for _ in 0..48 {
            if at < 0x40 {
                break;
            }
            let [id, next] = device.config_read::<2>(at)?;
            let kind = match id {
                pci::CAP_ID_VNDR => device.config_read::<1>(at + cap::CFG_TYPE)?[0],
                _ => 0,
            };
            if matches!(kind, cap::COMMON | cap::NOTIFY | cap::DEVICE) {
                let cap_len = device.config_read::<1>(at + cap::CAP_LEN)?[0];
                let need = if kind == cap::NOTIFY {
                    cap::NOTIFY_SIZE
                } else {
                    cap::SIZE
                };
                if cap_len < need {
                    return Err(fail(format!(
                        "virtio capability {kind} at {at:#x} is {cap_len} bytes long, less than its {need}"
                    )));
                }
                let bar = device.config_read::<1>(at + cap::BAR)?[0];
                let offset =
                    u32::from_le_bytes(device.config_read::<4>(at + cap::OFFSET)?) as usize;
                let length =
                    u32::from_le_bytes(device.config_read::<4>(at + cap::LENGTH)?) as usize;
                if bar < 6 {
                    let mmio = match bars.iter().find(|(b, _)| *b == bar) {
                        Some((_, m)) => Arc::clone(m),
                        None => {
                            let m = Arc::new(device.map_bar(bar as u32)?);
                            bars.push((bar, Arc::clone(&m)));
                            m
                        }
                    };
                    if offset
                        .checked_add(length)
                        .is_none_or(|end| end > mmio.len())
                    {
                        return Err(fail(format!(
                            "virtio capability {kind}: {length:#x} bytes at {offset:#x} lie outside the {:#x}-byte BAR {bar}",
                            mmio.len()
                        )));
                    }
                    let (align, min_len) = match kind {
                        cap::COMMON => (4, common::SIZE),
                        cap::DEVICE => (2, 0),
                        _ => (1, 0),
                    };
                    if !offset.is_multiple_of(align) || length < min_len {
                        return Err(fail(format!(
                            "virtio capability {kind}: {length:#x} bytes at {offset:#x} in BAR {bar}; \
                             the driver needs an offset aligned to {align} bytes and at least {min_len:#x} bytes"
                        )));
                    }
                    let region = Region {
                        bar: mmio,
                        offset,
                        len: length,
                    };
                    match kind {
                        cap::COMMON => caps.common = caps.common.or(Some(region)),
                        cap::DEVICE => caps.device = caps.device.or(Some(region)),
                        _ => {
                            let m = u32::from_le_bytes(
                                device.config_read::<4>(at + cap::NOTIFY_OFF_MULTIPLIER)?,
                            );
                            caps.notify = caps.notify.or(Some((region, m)));
                        }
                    }
                }
            }
            at = next as u16 & !3;
        }
        Ok(caps)
    }
}

impl VirtioNet {
    /// What every transmit call does first: reclaims what the device used,
    /// says so when a full queue is a device that stopped, and refuses
    /// while the link is down (up and trusted: no read of the device
    /// configuration).
    fn tx_ready(&mut self) -> Result<()> {
        self.reclaim()?;
        if self.tx.free() == 0 {
            let s = self.common.r8(common::DEVICE_STATUS);
            if s & (status::NEEDS_RESET | status::FAILED) != 0 {
                return Err(self.protocol(format!(
                    "the device stopped (status {s:#x}: it needs a reset)"
                )));
            }
            log::debug!(
                "virtio-net tx ring full: {} in flight, status {s:#x}",
                self.tx.in_flight()
            );
            // A transmitter that stopped: look at the link again now.
            self.link.doubt();
        }
        if !self.link.trusted().unwrap_or_else(|| self.link()).up {
            return Err(Error::LinkDown {
                addr: self.address(),
            });
        }
        Ok(())
    }

    /// How many packets from the front of `packets` the free descriptors
    /// take: one each with room for the net header before the frame, two
    /// each without (see [`NetDevice::tx_packets`]).
    fn tx_room(&self, packets: &[Packet]) -> usize {
        let mut free = self.tx.free();
        if free >= 2 * packets.len() {
            return packets.len();
        }
        let mut n = 0;
        for p in packets {
            let need = if p.offset() >= hdr::SIZE { 1 } else { 2 };
            if need > free {
                break;
            }
            free -= need;
            n += 1;
        }
        n
    }

    /// Adds frames from the front of `frames` to the transmit queue while
    /// they fit (not yet published); how many, and the error of a bad one
    /// (taken off `frames` and dropped).
    fn queue_frames(&mut self, frames: &mut VecDeque<TxFrame>) -> (usize, Option<Error>) {
        let mut sent = 0;
        let mut bad = None;
        // Frames are read where they are and their segments moved out one
        // by one (no frame moved as a whole); the emptied ones, and a bad
        // one, are removed at the end.
        for frame in frames.iter_mut() {
            match self.queue_frame(frame) {
                Ok(true) => sent += 1,
                Ok(false) => break,
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            }
        }
        // The frames sent are empty now; a bad one is dropped with its buffers.
        crate::frame::remove_sent(frames, sent);
        if bad.is_some() {
            frames.pop_front();
        }
        (sent, bad)
    }

    /// Adds one frame to the transmit queue (not yet published), its
    /// segments moved out of it: true, or false when the free descriptors
    /// do not take it (the frame untouched); the error of a frame the
    /// driver cannot send.
    fn queue_frame(&mut self, frame: &mut TxFrame) -> Result<bool> {
        let bytes = frame.check(self.max_frame, self.device.container(), self.address())?;
        if self.tx.free() < frame.segment_count() + 1 {
            return Ok(false);
        }
        let head = self.tx.next_head().expect("free descriptors counted");
        let hdr_iova = self.header(head, frame)?;
        self.stats.tx_from.add_all(bytes);
        let held = &mut self.tx_held[head as usize];
        let mut chain = [(hdr_iova, hdr::SIZE as u32, false); virtqueue::MAX_CHAIN];
        let mut n = 1;
        for slot in frame.segment_slots() {
            let Some(s) = slot.take() else { continue };
            let (iova, len) = s.dma();
            chain[n] = (iova, len as u32, false);
            held[n - 1] = Some(s);
            n += 1;
        }
        let got = self.tx.add(&chain[..n]).expect("free descriptors counted");
        debug_assert_eq!(got, head);
        self.tx_count[head as usize] = (n - 1) as u8;
        Ok(true)
    }

    /// Makes the `sent` chains just added visible to the device, and
    /// notifies it when it asked to be.
    fn publish_tx(&mut self, sent: usize) {
        if sent > 0 {
            self.tx.publish();
            if self.tx.wants_notify() {
                self.notify[1].w16(0, regs::TX_QUEUE);
            }
        }
    }
}

impl NetDevice for VirtioNet {
    fn driver_name(&self) -> &'static str {
        NAME
    }

    /// Takes used receive buffers; each descriptor gets a fresh buffer at
    /// once, or, when the pool is empty, its own buffer back and the frame is
    /// dropped and counted (so the device never runs dry, as on the e1000).
    /// Reads at most one ring's worth of used entries per call.
    fn rx_batch(&mut self, out: &mut Vec<Packet>, max: usize) -> Result<usize> {
        let before = out.len();
        let mut result = Ok(());
        for _ in 0..self.rx.size() {
            if out.len() - before == max {
                break;
            }
            let (head, len) = match self.rx.pop_used() {
                None => break,
                Some(Ok(used)) => (used.head, Some(used.len as usize)),
                // More than the buffer holds: its bytes are not a frame.
                Some(Err(UsedError::TooLong { head, .. })) => (head, None),
                Some(Err(e)) => {
                    result = Err(self.protocol(format!("receive queue: {e}")));
                    break;
                }
            };
            let Some(buf) = self.rx_bufs[head as usize].take() else {
                result = Err(self.protocol(format!("receive descriptor {head} had no buffer")));
                break;
            };
            // The virtqueue checked that `len` fits the buffer; a frame is
            // more than an Ethernet header and at most a frame with a VLAN tag.
            let good =
                len.filter(|&len| len > hdr::SIZE + 14 && len - hdr::SIZE <= self.max_frame + 4);
            let fresh = match (good, self.cache.alloc()) {
                (Some(len), Some(fresh)) => {
                    let p = Packet::received(buf, RX_HEADROOM + hdr::SIZE, len - hdr::SIZE);
                    if self.wanted(p.data()) {
                        self.stats.rx_packets += 1;
                        self.stats.rx_bytes += p.len() as u64;
                        out.push(p);
                    }
                    fresh
                }
                (Some(_), None) => {
                    self.stats.rx_dropped += 1;
                    buf
                }
                (None, _) => {
                    self.stats.rx_errors += 1;
                    buf
                }
            };
            self.arm(fresh);
        }
        self.rx.publish();
        if self.rx.wants_notify() {
            self.notify[0].w16(0, regs::RX_QUEUE);
        }
        result.map(|()| out.len() - before)
    }

    fn tx_batch(&mut self, frames: &mut VecDeque<TxFrame>) -> Result<usize> {
        self.tx_ready()?;
        let (sent, bad) = self.queue_frames(frames);
        self.publish_tx(sent);
        bad.map_or(Ok(sent), Err)
    }

    /// Built as [`NetDevice::tx_batch`] frames of a header packet and a
    /// [`Segment::Shared`] slice (the payload's share cloned per frame, as
    /// virtio-net may use chains out of order), queued a frame at a time
    /// (`queue_frame`) so that `fill` is called only for frames that fit.
    fn tx_fill_payload(
        &mut self,
        payload: &SharedBuffer,
        offload: Option<ChecksumOffload>,
        n: usize,
        fill: &mut FillPayload<'_>,
    ) -> Result<usize> {
        self.tx_ready()?;
        crate::frame::check_payload_container(payload, self.device.container(), self.address())?;
        let room = (self.cache.pool().buf_size() - TX_HEADROOM).min(self.max_frame);
        let (mut sent, mut result) = (0, Ok(()));
        // A chain: the net header, the header packet, the slice.
        while sent < n && self.tx.free() >= 3 {
            let Some(mut p) = self.alloc_packet() else {
                break;
            };
            let (header, data) = fill(&mut p.buffer_mut()[..room]);
            let checked = crate::frame::check_payload_frame(
                header,
                room,
                &data,
                payload.capacity(),
                self.max_frame,
                offload,
            );
            if let Err(e) = checked {
                self.cache.free(p.into_buffer());
                result = e.map_or(Ok(()), Err);
                break;
            }
            p.set_len(header);
            let mut frame = TxFrame::packet(p);
            frame.offload = offload;
            if !data.is_empty() {
                let slice = Segment::Shared {
                    buf: payload.clone(),
                    offset: data.start,
                    len: data.len(),
                };
                frame.push(slice).expect("two segments fit");
            }
            // The free descriptors were counted, so it is queued; a
            // refused one is dropped here with its buffers.
            match self.queue_frame(&mut frame) {
                Ok(true) => sent += 1,
                Ok(false) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.publish_tx(sent);
        result.map(|()| sent)
    }

    /// A packet with 12 bytes of headroom, the net header's size (as
    /// [`NetDevice::alloc_packets`] and received frames have) goes out as
    /// one descriptor: its zero net header written into the headroom, just
    /// before the frame, in its own buffer (VERSION_1 lets the device take
    /// any framing, 2.7.4 and 5.1.6.2; QEMU reads the header from the start
    /// of the chain). One without is a chain of two: a header from the
    /// header area, then the frame. Either way only the frame's bytes are
    /// counted in [`Stats::tx_from`], by who wrote them: the header lies
    /// outside them, so a frame the NIC wrote stays the NIC's.
    fn tx_packets(&mut self, packets: &mut Vec<Packet>) -> Result<usize> {
        self.tx_ready()?;
        let addr = self.address();
        let room = self.tx_room(packets);
        let (sent, bad) =
            check_packets(packets, self.max_frame, self.device.container(), addr, room);
        let mut from = BytesByWriter::default();
        for mut p in packets.drain(..sent) {
            let head = if p.offset() >= hdr::SIZE {
                p.write_headroom(&[0; hdr::SIZE]);
                let len = (hdr::SIZE + p.len()) as u32;
                self.tx.add_one(p.iova() - hdr::SIZE as u64, len, false)
            } else {
                let head = self.tx.next_head().expect("free descriptors counted");
                let hdr_iova = self.plain_header(head);
                self.tx.add(&[
                    (hdr_iova, hdr::SIZE as u32, false),
                    (p.iova(), p.len() as u32, false),
                ])
            }
            .expect("free descriptors counted");
            from.add(p.writer(), p.len());
            let slot = &mut self.tx_bufs[head as usize];
            debug_assert!(slot.buf.is_none(), "head {head} was free");
            slot.len = p.len() as u32;
            slot.buf = Some(p.into_buffer());
        }
        self.stats.tx_from.add_all(from);
        if bad.is_some() {
            packets.remove(0);
        }
        self.publish_tx(sent);
        bad.map_or(Ok(sent), Err)
    }

    fn tx_fill(&mut self, n: usize, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> Result<usize> {
        self.tx_ready()?;
        // Each frame at TX_HEADROOM of a fresh buffer, its zero net header
        // before it: one descriptor over both (see `tx_packets`).
        let (mask, slots) = head_slots(&mut self.tx_bufs, self.tx.size());
        let cache = &mut self.cache;
        let room = (cache.pool().buf_size() - TX_HEADROOM).min(self.max_frame);
        let (mut bytes, mut refused) = (0, None);
        let sent = self.tx.add_one_batch(n, false, |head| {
            // Straight into the head's slot (free with the head: empty),
            // built there, and taken back out if `fill` refuses it.
            let slot = &mut slots[head as usize & mask];
            debug_assert!(slot.buf.is_none(), "head {head} was free");
            let buf = slot.buf.insert(cache.alloc()?);
            let at = buf.iova() + RX_HEADROOM as u64;
            let (header, frame) =
                buf.as_mut_slice()[RX_HEADROOM..TX_HEADROOM + room].split_at_mut(hdr::SIZE);
            header.fill(0);
            let len = fill(frame);
            if len == 0 || len > room {
                cache.free(slot.buf.take().expect("just put there"));
                refused = (len > room).then(|| crate::frame::too_long(len, room));
                return None;
            }
            slot.len = len as u32;
            bytes += len as u64;
            Some((at, (hdr::SIZE + len) as u32))
        });
        // Written by the CPU, through the buffers' `&mut` slices.
        self.stats.tx_from.cpu += bytes;
        self.publish_tx(sent);
        refused.map_or(Ok(sent), Err)
    }

    fn tx_clean(&mut self) -> usize {
        if let Err(e) = self.reclaim() {
            if !std::mem::replace(&mut self.tx_broken_logged, true) {
                log::error!("{e}");
            }
        }
        std::mem::take(&mut self.tx_reclaimed)
    }

    fn tx_pending(&self) -> usize {
        self.tx.in_flight()
    }

    fn pool(&self) -> &Arc<BufferPool> {
        &self.pool
    }

    fn free_buffers(&self) -> usize {
        self.pool.free_count() + self.cache.len()
    }

    /// A packet at [`TX_HEADROOM`] in its buffer, which
    /// [`NetDevice::tx_packets`] sends as one descriptor.
    fn alloc_packet(&mut self) -> Option<Packet> {
        self.cache.alloc().map(|b| Packet::at(b, TX_HEADROOM, 0))
    }

    /// Packets at [`TX_HEADROOM`], as [`VirtioNet::alloc_packet`] gives them.
    fn alloc_packets(&mut self, n: usize, out: &mut Vec<Packet>) -> usize {
        crate::alloc_packets(&mut self.cache, n, TX_HEADROOM, out)
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Reads the device configuration's status now (a device without
    /// VIRTIO_NET_F_STATUS is always up), and refreshes the link state
    /// `tx_batch` checks ([`crate::link`]).
    fn link(&self) -> Link {
        let up = self.features & feature::STATUS == 0
            || self.device_cfg.r16(net_config::STATUS) & net_config::LINK_UP != 0;
        let link = Link {
            up,
            speed_mbps: 10_000,
            full_duplex: true,
        };
        self.link.store(link);
        link
    }

    fn set_promiscuous(&mut self, on: bool) {
        // QEMU's device receives everything until a control queue says
        // otherwise; the driver filters by MAC itself when not promiscuous.
        self.promiscuous = on;
    }

    fn stats(&mut self) -> Stats {
        self.stats
    }

    fn wait_rx(&mut self, timeout: Duration) -> Result<bool> {
        let Some(irqs) = &self.irqs else {
            return Ok(false);
        };
        if self.rx.has_used() {
            return Ok(true);
        }
        // MSI-X is an edge message: nothing to acknowledge or unmask; the
        // eventfd counts what fired meanwhile.
        let fired = irqs.wait(0, timeout)?.fired();
        Ok(fired || self.rx.has_used())
    }
}

impl Drop for VirtioNet {
    /// Stops the device's DMA before the rings give their buffers back (see
    /// [Stopping](crate#stopping)): a reset that reads back 0, or bus mastering off;
    /// failing both, the rings, the header area and every buffer they hold
    /// are leaked.
    fn drop(&mut self) {
        let (common, addr) = (&self.common, self.device.address());
        let (rx_bufs, tx_bufs, tx_held) = (&mut self.rx_bufs, &mut self.tx_bufs, &mut self.tx_held);
        let (rx, tx, tx_hdrs) = (&self.rx, &self.tx, &self.tx_hdrs);
        self.device.stop_dma(
            NAME,
            || reset(common, addr),
            || {
                rx_bufs
                    .iter_mut()
                    .filter_map(Option::take)
                    .for_each(DmaTarget::leak);
                tx_bufs
                    .iter_mut()
                    .filter_map(|slot| slot.buf.take())
                    .for_each(DmaTarget::leak);
                for held in tx_held.iter_mut() {
                    held.iter_mut()
                        .filter_map(Option::take)
                        .for_each(Segment::leak);
                }
                rx.leak();
                tx.leak();
                tx_hdrs.leak_on_drop();
            },
        );
    }
}

#[cfg(test)]
mod tests;
