//! # nic-driver
//!
//! NIC drivers on vfio-core, behind one trait, [`NetDevice`], that every
//! program (pktgen, echo, the forwarder) uses unchanged.
//!
//! Frames live in buffers of a vfio-core pool. A received [`Packet`] is the
//! buffer the NIC wrote; a [`TxFrame`] is one or more buffer segments the NIC
//! reads (a small header buffer and a payload buffer another device filled go
//! out as one frame, with no copy). Every buffer goes back to its pool when
//! the device is done with it, on every path, including dropping the device.
//! A NIC is given only memory of its own VFIO container: a segment of
//! another container (whose IOVA may be other memory in the NIC's) is
//! refused with [`Error::ForeignMemory`], and receive buffers come only from
//! the driver's own pool.
//!
//! - [`open`]: opens a NIC with the driver its PCI ID calls for, set up by a
//!   [`Config`].
//! - [`e1000`]: Intel 8254x (QEMU's `e1000`, 82540EM; also 82545EM, 82544GC).
//! - [`virtio`]: virtio-net over modern virtio-pci (QEMU's `virtio-net-pci`
//!   with `disable-legacy=on,iommu_platform=on`).
//!
//! # Example
//!
//! Open a NIC, receive a batch, build and send a frame, and take its buffer
//! back:
//!
//! ```no_run
//! use std::collections::VecDeque;
//! use nic_driver::{Config, NetDevice, TxFrame};
//!
//! # fn main() -> nic_driver::Result<()> {
//! // The NIC at 0000:00:04.0, bound to vfio-pci: e1000 or virtio-net.
//! let container = vfio_core::vfio::Container::new()?;
//! let config = Config::default().rx_ring(512).spare_buffers(256);
//! let mut nic = nic_driver::open(&container, "0000:00:04.0".parse()?, config)?;
//! println!("{} {:02x?} {:?}", nic.driver_name(), nic.mac(), nic.link());
//!
//! // Receive: each packet is the pool buffer the NIC wrote, now ours;
//! // dropping it returns the buffer to the pool.
//! let mut rx = Vec::with_capacity(32);
//! let n = nic.rx_batch(&mut rx, 32)?;
//! for p in rx.drain(..) {
//!     println!("{} bytes at IOVA {:#x}", p.len(), p.iova());
//! }
//! println!("{n} frames");
//!
//! // Build a broadcast frame in a fresh pool buffer.
//! let mac = nic.mac();
//! let mut p = nic.alloc_packet().expect("a free buffer");
//! let b = p.buffer_mut();
//! b[..6].copy_from_slice(&[0xff; 6]); // destination
//! b[6..12].copy_from_slice(&mac); // source
//! b[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // EtherType
//! b[14..60].fill(0);
//! p.set_len(60);
//!
//! // Send it: the NIC owns its buffer until it has sent it; `tx_clean`
//! // then returns the buffer to the pool.
//! let mut tx = VecDeque::from([TxFrame::packet(p)]);
//! while !tx.is_empty() {
//!     nic.tx_batch(&mut tx)?; // takes what fits in the ring
//! }
//! while nic.tx_pending() > 0 {
//!     nic.tx_clean();
//! }
//! # Ok(()) }
//! ```
//!
//! # Stopping
//!
//! No receive buffer goes back to its pool, no transmit segment is released
//! and no ring memory is unmapped while the NIC may still reach it. A
//! driver's `Drop`, and every error return of its constructor after a ring
//! was given to the NIC, first stops the NIC and proves it from its
//! registers (e1000: receive and transmit off and a completed reset;
//! virtio: device status reads 0 after a reset); when that fails, it turns
//! bus mastering off and reads it back; when even that fails, it leaks the
//! rings and every buffer they hold on purpose, allocated and mapped for the
//! rest of the process, so nothing else is ever placed there (counted in
//! [`vfio_core::dma::leaked`] and logged with `log::error!`). That sequence
//! is vfio-core's [`Device::stop_dma`](vfio_core::vfio::Device::stop_dma),
//! the one every driver here runs: nothing that may panic (a logger) runs
//! before the NIC is stopped or its memory leaked.
#![deny(missing_docs)]

pub mod e1000;
mod error;
mod frame;
mod held;
pub mod link;
#[cfg(test)]
mod testing;
pub mod virtio;

use std::collections::VecDeque;
use std::ops::Range;
use std::time::Duration;

pub use error::{Error, Result};

use std::sync::Arc;

use vfio_core::dma::SharedBuffer;
use vfio_core::pci::PciAddress;
use vfio_core::vfio::Container;

/// A driver of this crate: its name, the PCI IDs it takes, and how it
/// brings up a device. [`DRIVERS`] lists them; [`open`] picks from it by
/// the device's IDs. A new driver is one more entry.
#[derive(Clone, Copy, Debug)]
pub struct Driver {
    /// What [`NetDevice::driver_name`] says.
    pub name: &'static str,
    /// PCI vendor ID.
    pub vendor: u16,
    /// PCI device IDs.
    pub device_ids: &'static [u16],
    /// Brings up an opened device.
    pub open: fn(vfio_core::vfio::Device, Config) -> Result<Box<dyn NetDevice + Send>>,
}

impl Driver {
    /// True when the driver takes `vendor:device`.
    pub fn takes(&self, vendor: u16, device: u16) -> bool {
        vendor == self.vendor && self.device_ids.contains(&device)
    }
}

/// Every driver of this crate, in the order [`open`] tries them.
pub const DRIVERS: &[Driver] = &[
    Driver {
        name: e1000::NAME,
        vendor: e1000::VENDOR,
        device_ids: e1000::DEVICE_IDS,
        open: |device, config| Ok(Box::new(e1000::E1000::new(device, config)?)),
    },
    Driver {
        name: virtio::NAME,
        vendor: virtio::regs::VENDOR,
        device_ids: virtio::DEVICE_IDS,
        open: |device, config| Ok(Box::new(virtio::VirtioNet::new(device, config)?)),
    },
];

/// The driver of [`DRIVERS`] that takes `vendor:device`, if any.
pub fn driver_for(vendor: u16, device: u16) -> Option<&'static Driver> {
    DRIVERS.iter().find(|d| d.takes(vendor, device))
}

/// Opens the NIC at `addr` (bound to vfio-pci) in `container` with the
/// driver of [`DRIVERS`] its PCI IDs call for, and brings it up.
///
/// # Errors
///
/// [`Error::Vfio`] when the device cannot be opened or its IDs read;
/// [`Error::Device`] when no driver here takes its PCI IDs (the message
/// lists those they take); then those of the driver's bring-up
/// ([`e1000::E1000::new`], [`virtio::VirtioNet::new`]).
///
/// ```no_run
/// # fn main() -> nic_driver::Result<()> {
/// let container = vfio_core::vfio::Container::new()?;
/// let nic = nic_driver::open(&container, "0000:00:04.0".parse()?, nic_driver::Config::default())?;
/// println!("{} {:02x?}", nic.driver_name(), nic.mac());
/// # Ok(()) }
/// ```
pub fn open(
    container: &Arc<Container>,
    addr: PciAddress,
    config: Config,
) -> Result<Box<dyn NetDevice + Send>> {
    let device = container.open_device(addr)?;
    let (vendor, id) = (device.vendor_id()?, device.device_id()?);
    match driver_for(vendor, id) {
        Some(driver) => (driver.open)(device, config),
        None => Err(Error::Device {
            addr,
            what: format!(
                "{vendor:04x}:{id:04x} is no NIC these drivers know ({})",
                known_ids()
            ),
        }),
    }
}

/// The PCI IDs every driver takes, e.g. `e1000: 8086:[100e, 100f]`.
fn known_ids() -> String {
    let ids = |d: &Driver| format!("{}: {:04x}:{:04x?}", d.name, d.vendor, d.device_ids);
    DRIVERS.iter().map(ids).collect::<Vec<_>>().join(", ")
}

pub use frame::{ChecksumOffload, Packet, Segment, TxFrame, MAX_SEGMENTS};

/// What [`NetDevice::tx_fill_payload`] calls per frame: it writes the
/// header into the room it is given and returns the header's length and
/// the payload bytes that follow it.
pub type FillPayload<'a> = dyn FnMut(&mut [u8]) -> (usize, Range<usize>) + 'a;

/// How a NIC is set up (every driver takes the same settings). Start from
/// [`Config::default`] and change what you need with the methods of the
/// same names as the fields:
///
/// ```
/// let config = nic_driver::Config::default().rx_ring(512).interrupts(true);
/// assert_eq!((config.rx_ring, config.tx_ring, config.interrupts), (512, 256, true));
/// ```
///
/// The driver allocates one buffer pool of 2 × `rx_ring` + `tx_ring` +
/// `spare_buffers` buffers (with the ring sizes it uses).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Receive descriptors (default 256). The e1000 takes a multiple of 8
    /// from 8 to 4096; virtio-net uses the next power of two within 8 to
    /// 1024, or the device's queue size when that is smaller.
    pub rx_ring: usize,
    /// Transmit descriptors (default 256), as for `rx_ring`. A frame takes
    /// one per segment (e1000: one more when its checksum offload changes;
    /// virtio-net: one more for its net header).
    pub tx_ring: usize,
    /// Jumbo frames (default off): frames up to 9014 bytes (9018 received
    /// with a VLAN tag) in 16 KiB buffers; else up to 1514 (1518) in 2 KiB
    /// buffers.
    pub jumbo: bool,
    /// Sleep in [`NetDevice::wait_rx`] until the NIC interrupts, instead of
    /// returning at once (default off: polling).
    pub interrupts: bool,
    /// Extra pool buffers beyond those the rings hold, for frames being
    /// built or held (default 1024).
    pub spare_buffers: usize,
    /// How long transmit trusts the link state it last read while the
    /// link is up (default 5 ms): the link register is read at most once
    /// per interval in steady state (see [`link`]).
    pub link_poll: Duration,
}

impl Config {
    /// Sets the receive descriptors (see the field `rx_ring`).
    #[must_use]
    pub fn rx_ring(mut self, descriptors: usize) -> Config {
        self.rx_ring = descriptors;
        self
    }

    /// Sets the transmit descriptors (see the field `tx_ring`).
    #[must_use]
    pub fn tx_ring(mut self, descriptors: usize) -> Config {
        self.tx_ring = descriptors;
        self
    }

    /// Turns jumbo frames on or off (see the field `jumbo`).
    #[must_use]
    pub fn jumbo(mut self, on: bool) -> Config {
        self.jumbo = on;
        self
    }

    /// Turns interrupt mode on or off (see the field `interrupts`).
    #[must_use]
    pub fn interrupts(mut self, on: bool) -> Config {
        self.interrupts = on;
        self
    }

    /// Sets how long transmit trusts the link it last read (see the field
    /// `link_poll`).
    #[must_use]
    pub fn link_poll(mut self, interval: Duration) -> Config {
        self.link_poll = interval;
        self
    }

    /// Sets the extra pool buffers (see the field `spare_buffers`).
    #[must_use]
    pub fn spare_buffers(mut self, buffers: usize) -> Config {
        self.spare_buffers = buffers;
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rx_ring: 256,
            tx_ring: 256,
            jumbo: false,
            interrupts: false,
            spare_buffers: 1024,
            link_poll: LINK_POLL,
        }
    }
}

/// How long transmit trusts the link it last read, by default.
pub const LINK_POLL: Duration = Duration::from_millis(5);

/// Link state, as [`NetDevice::link`] reads it. More fields may be added;
/// [`Link::default`] is a link that is down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Link {
    /// The link is up: frames can be sent.
    pub up: bool,
    /// Mb/s, when up (virtio-net always reports 10000).
    pub speed_mbps: u32,
    /// Full duplex (virtio-net always reports it).
    pub full_duplex: bool,
}

/// What [`NetDevice::link_news`] reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkNews {
    /// The link now.
    pub link: Link,
    /// The link was down at some time since the previous call, as far as
    /// the device can tell, or is down now: frames the NIC reported done
    /// meanwhile may have been dropped rather than sent. A device that
    /// latches link changes (e1000: ICR.LSC) reports a link that went
    /// down and came back between two calls; one that does not
    /// (virtio-net) reports only a link that is down at the call.
    pub went_down: bool,
}

/// Counters since the device was opened, as [`NetDevice::stats`] returns
/// them. More counters may be added; [`Stats::default`] is all zeros.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Frames received (e1000: good frames the NIC counted; virtio-net:
    /// frames handed out by [`NetDevice::rx_batch`]).
    pub rx_packets: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Frames sent (e1000: counted by the NIC; virtio-net: frames whose
    /// descriptor chain the device gave back as used, counted when the
    /// driver reclaims them in [`NetDevice::tx_clean`] or
    /// [`NetDevice::tx_batch`], not when they are queued).
    pub tx_packets: u64,
    /// Bytes of those frames (without the virtio-net header).
    pub tx_bytes: u64,
    /// Frames the NIC dropped for lack of receive buffers or ring space.
    pub rx_dropped: u64,
    /// Frames received with errors, or that the driver refused (bad length, no EOP).
    pub rx_errors: u64,
    /// Bytes of the frames the driver handed to the NIC to send, by who
    /// last wrote them ([`vfio_core::dma::DmaTarget::writer`]), counted per
    /// segment as its descriptor is written: bytes another device wrote by
    /// DMA (an NVMe read, a received frame) in `device`, bytes the CPU wrote
    /// (headers, copies, anything the CPU touched since) in `cpu`. What a
    /// program reports as sent with or without a copy.
    pub tx_from: vfio_core::dma::BytesByWriter,
}

/// A network device driven from user space.
///
/// The device's rings own the buffers the NIC may reach: a receive
/// descriptor's buffer until [`NetDevice::rx_batch`] hands it out as a
/// [`Packet`], a transmitted frame's segments until the NIC has sent them
/// and [`NetDevice::tx_clean`] (or the next [`NetDevice::tx_batch`]) lets
/// them go. Dropping the device stops the NIC before the rings give their
/// buffers back (see [Stopping](crate#stopping)).
pub trait NetDevice {
    /// The driver's name, e.g. "e1000".
    fn driver_name(&self) -> &'static str;

    /// Moves up to `max` received frames into `out` (give it the capacity, so
    /// nothing is allocated); returns how many. Each [`Packet`] is the buffer
    /// the NIC wrote, now the caller's; its descriptor gets a fresh buffer
    /// from the pool (the driver's own, built on the NIC's container: no
    /// caller hands a NIC receive memory, so none of another container can
    /// reach a receive descriptor). When the pool is empty, the frame is dropped (counted
    /// in [`Stats::rx_dropped`]) and the descriptor keeps its buffer, so the
    /// ring never runs dry. Bad frames are dropped and counted
    /// in [`Stats::rx_errors`].
    ///
    /// # Errors
    ///
    /// virtio-net: [`Error::Device`] when the device wrote a used-ring entry
    /// no correct device writes; the frames before it are in `out`. The
    /// e1000 returns no error.
    fn rx_batch(&mut self, out: &mut Vec<Packet>, max: usize) -> Result<usize>;

    /// Sends frames from the front of `frames` until it is empty or the ring is
    /// full; returns how many were queued. A queued frame's segments belong
    /// to the device until the NIC has sent them.
    ///
    /// # Errors
    ///
    /// - [`Error::LinkDown`]: nothing is taken, so no frame is lost silently.
    /// - [`Error::InvalidFrame`]: the first frame the driver cannot send
    ///   (empty, a segment outside its buffer, too long, bad offload
    ///   offsets; virtio-net: offload headers not in a first packet
    ///   segment) is taken off `frames` and dropped, its buffers back to
    ///   their pools; the frames before it were queued.
    /// - [`Error::ForeignMemory`]: the first frame with a segment of another
    ///   VFIO container than the NIC's ([`Segment::container`]), which the
    ///   NIC does not reach and whose IOVA may be other memory in its own
    ///   container, is taken off and dropped the same way, before any
    ///   descriptor points at it.
    /// - virtio-net: [`Error::Device`] when the device needs a reset or
    ///   wrote a used-ring index no correct device writes.
    fn tx_batch(&mut self, frames: &mut VecDeque<TxFrame>) -> Result<usize>;

    /// Sends packets from the front of `packets`, each one frame of one
    /// buffer (its bytes as they are, no offload), until it is empty or the
    /// ring is full, removing the sent ones; returns how many. The path for
    /// frames in one buffer (a generator's, an echo's: `rx_batch`'s vector
    /// can be handed back as it is): one descriptor per packet, no
    /// [`TxFrame`] built or moved. A sent packet's buffer belongs to the
    /// device until the NIC has sent it.
    ///
    /// # Errors
    ///
    /// As [`NetDevice::tx_batch`]: [`Error::LinkDown`] (nothing taken),
    /// [`Error::InvalidFrame`] for the first packet that is empty or too
    /// long and [`Error::ForeignMemory`] for the first of another
    /// container (taken off and dropped, after the packets before it were
    /// queued); virtio-net: [`Error::Device`].
    fn tx_packets(&mut self, packets: &mut Vec<Packet>) -> Result<usize>;

    /// Builds up to `n` frames in place and sends them, one doorbell for
    /// all: each in a fresh buffer of the device's pool, which `fill`
    /// writes (it gets the buffer's room for a frame, at most the largest
    /// frame the NIC sends) and whose frame length it returns. 0 ends the
    /// batch (that buffer goes back unsent). Returns how many were sent:
    /// fewer than `n` when the ring is full, the pool has run out, or
    /// `fill` ended the batch. The path for a generator: no [`Packet`] is
    /// made, moved or checked per frame (the buffers are the device's own,
    /// so of its container), each frame goes to the NIC from where it was
    /// written, and counts as the CPU's bytes ([`Stats::tx_from`]).
    ///
    /// ```no_run
    /// # fn main() -> nic_driver::Result<()> {
    /// # let container = vfio_core::vfio::Container::new()?;
    /// let mut nic = nic_driver::open(&container, "0000:00:03.0".parse()?, Default::default())?;
    /// let frame = [0u8; 60]; // destination, source, EtherType, payload
    /// let sent = nic.tx_fill(32, &mut |room| {
    ///     room[..frame.len()].copy_from_slice(&frame);
    ///     frame.len()
    /// })?;
    /// println!("{sent} frames on the wire");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::LinkDown`] as [`NetDevice::tx_batch`] (nothing built);
    /// [`Error::InvalidFrame`] when `fill` returns more than the room it
    /// was given (that frame is not sent, the frames before it are);
    /// virtio-net: [`Error::Device`].
    fn tx_fill(&mut self, n: usize, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> Result<usize>;

    /// Builds up to `n` frames of a header and a slice of `payload` and
    /// sends them, one doorbell for all: the zero-copy sender's path (the
    /// forwarder's: a header the CPU writes, then bytes another device
    /// wrote, sent from where they are). Each header goes in a fresh
    /// buffer of the device's pool, which `fill` writes (it gets the
    /// buffer's room, as in [`NetDevice::tx_fill`]) and answers with the
    /// header's length and the bytes of `payload` that follow it on the
    /// wire (an empty range: the header alone). A header length of 0 ends
    /// the batch. `offload` applies to every frame; its IP and L4 headers
    /// lie in the header. Returns how many were sent: fewer than `n` when
    /// the ring is full, the pool has run out, or `fill` ended the batch;
    /// `fill` is called only for frames that then go out (and for the
    /// one it ends or that is refused).
    ///
    /// `payload` is borrowed, not moved: the ring takes its own share of
    /// it for the batch (one, not one per frame) and holds it until the
    /// NIC is done with the batch's last frame. No [`TxFrame`] or
    /// [`Segment`] is made per frame. Bytes are counted by who wrote them
    /// ([`Stats::tx_from`]): headers as the CPU's, payloads as `payload`
    /// records them.
    ///
    /// ```no_run
    /// # fn main() -> nic_driver::Result<()> {
    /// # let container = vfio_core::vfio::Container::new()?;
    /// # let pool = vfio_core::dma::BufferPool::new(&container, 4096, 8)?;
    /// let mut nic = nic_driver::open(&container, "0000:00:03.0".parse()?, Default::default())?;
    /// // Say the NVMe controller read a block into `data` (same container).
    /// let data = pool.alloc().expect("a free buffer").into_shared();
    /// let mut next = 0;
    /// let sent = nic.tx_fill_payload(&data, None, 4, &mut |room| {
    ///     room[..14].copy_from_slice(&[0xff; 14]); // an Ethernet header
    ///     next += 1024;
    ///     (14, next - 1024..next) // then 1 KiB of the block
    /// })?;
    /// println!("{sent} frames on the wire, the block sent from where it was read");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`Error::LinkDown`] as [`NetDevice::tx_batch`], and
    ///   [`Error::ForeignMemory`] when `payload` is of another VFIO
    ///   container than the NIC's: nothing built.
    /// - [`Error::InvalidFrame`] when `fill` returns a header longer than
    ///   its room or too short for `offload`, a range outside `payload`,
    ///   or a frame longer than the NIC sends: that frame is not sent, the
    ///   frames before it are.
    /// - virtio-net: [`Error::Device`].
    fn tx_fill_payload(
        &mut self,
        payload: &SharedBuffer,
        offload: Option<ChecksumOffload>,
        n: usize,
        fill: &mut FillPayload<'_>,
    ) -> Result<usize>;

    /// Appends up to `n` fresh packets of length 0 to `out`, as `n` calls
    /// of [`NetDevice::alloc_packet`] would, in one call; returns how
    /// many (fewer when the buffers run out).
    fn alloc_packets(&mut self, n: usize, out: &mut Vec<Packet>) -> usize {
        let before = out.len();
        for _ in 0..n {
            match self.alloc_packet() {
                Some(p) => out.push(p),
                None => break,
            }
        }
        out.len() - before
    }

    /// Releases the segments of frames the NIC has sent, each buffer back to
    /// its pool; returns how many frames.
    ///
    /// The contract every driver keeps: each frame taken by a transmit
    /// call ([`NetDevice::tx_batch`], [`NetDevice::tx_packets`],
    /// [`NetDevice::tx_fill`]) is counted by exactly one `tx_clean`, the
    /// first after the NIC is done with it. A driver that reclaims inside a
    /// transmit call (to make room in a full ring) keeps the count and
    /// reports it here. Callers rely on it: the forwarder keeps each
    /// datagram for a resend until a `tx_clean` has counted it, so a frame
    /// released and not reported would hold its window (and its buffers)
    /// for good.
    fn tx_clean(&mut self) -> usize;

    /// Frames queued for transmission and not yet released.
    fn tx_pending(&self) -> usize;

    /// A fresh buffer from the device's pool as a packet of length 0, for
    /// building a frame ([`Packet::buffer_mut`], [`Packet::set_len`]); None
    /// when every buffer is in use.
    fn alloc_packet(&mut self) -> Option<Packet>;

    /// The pool the device's buffers come from.
    fn pool(&self) -> &Arc<vfio_core::dma::BufferPool>;

    /// Buffers of [`NetDevice::pool`] not in use (to count what is out):
    /// those on the pool's free list and those on the driver's own stack
    /// of free buffers ([`vfio_core::dma::BufferCache`]), which its rings
    /// recycle without the pool's lock and which the pool's
    /// [`free_count`](vfio_core::dma::BufferPool::free_count) does not see.
    fn free_buffers(&self) -> usize;

    /// The MAC address the device reported, checked at bring-up to be a
    /// station address (not zero, not a group address); a virtio-net device
    /// that reports none gets 02:00:00:00:00:01.
    fn mac(&self) -> [u8; 6];

    /// Link state now: read from the device at each call (e1000: STATUS;
    /// virtio-net: the device configuration's status), so call it to poll
    /// the link, not per frame. Transmit does not call it per batch:
    /// [`NetDevice::tx_batch`] checks the state this call refreshes, read
    /// again at most once per [`Config::link_poll`] while up, at once after
    /// a full ring, and on every call while down (see [`link`]).
    fn link(&self) -> Link;

    /// The link, and whether it went down since the previous call, for a
    /// loop that needs to know which frames the NIC reported done while
    /// the link stayed up (a NIC may report a frame done that it dropped
    /// because its link was down: QEMU's e1000 does). e1000: one read of
    /// ICR, whose link status change the NIC latches, so a link that went
    /// down and came back between two calls is reported; STATUS only when
    /// that is set or the link was down. Default: [`NetDevice::link`] at
    /// each call, `went_down` when it is down (a flap between two calls is
    /// not seen).
    ///
    /// # Errors
    ///
    /// None from the drivers here (a driver that learns of link changes
    /// through an interrupt's eventfd would report failing to read it).
    fn link_news(&mut self) -> Result<LinkNews> {
        let link = self.link();
        Ok(LinkNews {
            link,
            went_down: !link.up,
        })
    }

    /// Receive every frame, whatever its destination (on), or only frames
    /// for the NIC's MAC and broadcast frames (off, the default; virtio-net:
    /// every group address).
    fn set_promiscuous(&mut self, on: bool);

    /// Counters since the device was opened (e1000: the NIC's counters,
    /// accumulated in software; virtio-net: counted by the driver).
    fn stats(&mut self) -> Stats;

    /// Sleeps until a frame may have arrived or `timeout` passes (interrupt
    /// mode); in polling mode returns at once. True if woken by the device.
    ///
    /// # Errors
    ///
    /// [`Error::Vfio`] when waiting on or unmasking the interrupt fails.
    fn wait_rx(&mut self, timeout: Duration) -> Result<bool>;
}

/// A MAC address a device reported, if it can be a station's own: not
/// all zeros, not a group (multicast or broadcast) address.
/// Buffers a driver's [`vfio_core::dma::BufferCache`] holds at most: a
/// quarter of its pool, at most 128 (four batches of 32).
pub(crate) fn cache_size(pool: &vfio_core::dma::BufferPool) -> usize {
    (pool.capacity() / 4).clamp(2, 128)
}

/// Up to `n` packets of length 0 at `headroom` (at most a buffer) from
/// `cache` appended to `out`; how many (a driver's
/// [`NetDevice::alloc_packets`]: one pass over the cache, no call per
/// packet).
#[inline]
pub(crate) fn alloc_packets(
    cache: &mut vfio_core::dma::BufferCache,
    n: usize,
    headroom: usize,
    out: &mut Vec<Packet>,
) -> usize {
    let headroom = headroom.min(cache.pool().buf_size());
    cache.alloc_into(n, out, |buf| Packet::empty_at(buf, headroom))
}

pub(crate) fn check_mac(mac: [u8; 6]) -> std::result::Result<[u8; 6], String> {
    if mac == [0; 6] || mac[0] & 1 == 1 {
        return Err(format!(
            "the device reports MAC {} (all zeros or a group address), which no NIC may use as its own",
            mac.map(|b| format!("{b:02x}")).join(":")
        ));
    }
    Ok(mac)
}

#[cfg(test)]
mod driver_table {
    use super::*;

    #[test]
    fn each_pci_id_has_one_driver_and_the_error_names_them_all() {
        for d in DRIVERS {
            for &id in d.device_ids {
                let takers: Vec<&str> = DRIVERS
                    .iter()
                    .filter(|o| o.takes(d.vendor, id))
                    .map(|o| o.name)
                    .collect();
                assert_eq!(takers, [d.name], "{:04x}:{id:04x}", d.vendor);
            }
        }
        assert_eq!(driver_for(0x8086, 0x100e).map(|d| d.name), Some("e1000"));
        assert_eq!(
            driver_for(0x1af4, 0x1041).map(|d| d.name),
            Some("virtio-net")
        );
        assert!(
            driver_for(0x8086, 0x1041).is_none(),
            "the vendor counts too"
        );
        assert!(driver_for(0x10ec, 0x8139).is_none());
        assert_eq!(
            known_ids(),
            "e1000: 8086:[100e, 100f, 100c], virtio-net: 1af4:[1041]"
        );
    }
}
