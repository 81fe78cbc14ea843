//! A virtio network device over modern virtio-pci in software, from the
//! virtio specification v1.2: the vendor capabilities in PCI configuration
//! space (4.1.4) pointing into one BAR (common configuration, notification,
//! ISR and device configuration structures), device status and feature
//! negotiation (2.1, 2.2, 3.1), split virtqueues (2.7) and the network
//! device (5.1): receive queue 0, transmit queue 1, the 12-byte
//! `virtio_net_hdr` in front of every frame, checksum completion when
//! VIRTIO_NET_F_CSUM is negotiated, the MAC and link status in the device
//! configuration.
//!
//! The wire is two queues the test holds: frames for the device to receive
//! ([`VirtioNetModel::deliver`]) and frames it transmitted
//! ([`VirtioNetModel::transmitted`]: the bytes after the net header, as
//! read by DMA, with the checksum the header asked for completed).
//!
//! **Timing.** Synchronous by default: a notification of the transmit
//! queue sends every chain made available within that MMIO write; a
//! received frame is written into a buffer by `deliver`, or, when none is
//! available, by the receive queue's next notification.
//! [`VirtioNetModel::spawn`] runs the device on a thread instead.
//!
//! Offered by default: VERSION_1, ACCESS_PLATFORM, MAC, STATUS and CSUM (the
//! last optional, see [`VirtioNetConfig::features`]). Not modelled: indirect
//! descriptors, event index, packed queues, mergeable receive buffers,
//! segmentation offload, the control queue, MSI-X (there are no interrupts;
//! the ISR status is kept).
//!
//! ```
//! use vfio_models::virtio_net::{VirtioNetConfig, VirtioNetModel};
//! let container = vfio_core::vfio::Container::unbacked();
//! let (model, device) = VirtioNetModel::new(&container, VirtioNetConfig::default());
//! assert_eq!(device.device_id().unwrap(), 0x1041);
//! # drop(model);
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use vfio_core::mmio::RegisterModel;
use vfio_core::pci::PciAddress;
use vfio_core::vfio::{Container, Device};

use crate::common::{insert_checksum, Dma, Engine, ModelThread, PciConfig, Wedge};

/// The BAR holding the structures (as QEMU's virtio-net-pci: BAR 4), and its bytes.
pub const BAR: u32 = 4;
/// Bytes of the BAR.
pub const BAR_LEN: usize = 0x4000;
const COMMON_AT: usize = 0x0000;
const COMMON_LEN: usize = 0x38;
const ISR_AT: usize = 0x1000;
const DEVICE_AT: usize = 0x2000;
const DEVICE_LEN: usize = 12;
const NOTIFY_AT: usize = 0x3000;
const NOTIFY_LEN: usize = 0x1000;
/// `notify_off_multiplier` (4.1.4.4); queue `q`'s `queue_notify_off` is `q`.
const MULTIPLIER: u32 = 4;

/// Feature bits (5.1.3, 6).
pub mod feature {
    /// The device completes a partial checksum (VIRTIO_NET_F_CSUM).
    pub const CSUM: u64 = 1 << 0;
    /// The device configuration has a MAC (VIRTIO_NET_F_MAC).
    pub const MAC: u64 = 1 << 5;
    /// The device configuration has a link status (VIRTIO_NET_F_STATUS).
    pub const STATUS: u64 = 1 << 16;
    /// virtio 1.x (VIRTIO_F_VERSION_1).
    pub const VERSION_1: u64 = 1 << 32;
    /// DMA goes through the platform's IOMMU (VIRTIO_F_ACCESS_PLATFORM).
    pub const ACCESS_PLATFORM: u64 = 1 << 33;
}

/// Device status bits (2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready: the device may use its queues.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const NEEDS_RESET: u8 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u8 = 0x80;
}

// Common configuration (4.1.4.3), offsets in the structure.
const DEVICE_FEATURE_SELECT: usize = 0x00;
const DEVICE_FEATURE: usize = 0x04;
const DRIVER_FEATURE_SELECT: usize = 0x08;
const DRIVER_FEATURE: usize = 0x0c;
const MSIX_CONFIG: usize = 0x10;
const NUM_QUEUES: usize = 0x12;
const DEVICE_STATUS: usize = 0x14;
const CONFIG_GENERATION: usize = 0x15;
const QUEUE_SELECT: usize = 0x16;
const QUEUE_SIZE: usize = 0x18;
const QUEUE_MSIX_VECTOR: usize = 0x1a;
const QUEUE_ENABLE: usize = 0x1c;
const QUEUE_NOTIFY_OFF: usize = 0x1e;
const QUEUE_DESC: usize = 0x20;
/// MSI-X "no vector": what both vector fields read, as the device has no MSI-X.
const NO_VECTOR: u16 = 0xffff;

// Split virtqueue descriptor flags (2.7.5) and ring flags (2.7.6, 2.7.8).
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const DESC_F_INDIRECT: u16 = 4;
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// The net header (5.1.6): 12 bytes with VERSION_1; NEEDS_CSUM in flags.
const HDR: usize = 12;
const NEEDS_CSUM: u8 = 1;
/// Queues of one queue pair (5.1.2).
const RX: usize = 0;
const TX: usize = 1;
/// The longest frame the device sends (64 KiB, what a TSO-less device
/// would never exceed); longer chains are consumed and dropped.
const MAX_TX: usize = 65536;

/// What the device reports and how it behaves.
#[derive(Clone, Debug)]
pub struct VirtioNetConfig {
    /// The MAC in the device configuration.
    pub mac: [u8; 6],
    /// The link status (VIRTIO_NET_S_LINK_UP); change it later with
    /// [`VirtioNetModel::set_link`].
    pub link_up: bool,
    /// The features offered (see [`feature`]).
    pub features: u64,
    /// Largest size of each queue (`queue_size` before the driver writes it).
    pub queue_size: u16,
    /// Frames [`VirtioNetModel::deliver`] holds while the receive queue has
    /// no buffer; more are dropped.
    pub rx_backlog: usize,
    /// Keep each transmitted frame's bytes ([`VirtioNetModel::transmitted`]).
    /// False (for benchmarks): chains are consumed and used, nothing is read
    /// but the descriptors.
    pub record: bool,
}

impl Default for VirtioNetConfig {
    fn default() -> Self {
        VirtioNetConfig {
            mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x57],
            link_up: true,
            features: feature::VERSION_1
                | feature::ACCESS_PLATFORM
                | feature::MAC
                | feature::STATUS
                | feature::CSUM,
            queue_size: 256,
            rx_backlog: 1024,
            record: true,
        }
    }
}

/// A change to the next used-ring entry the device writes on a queue: what
/// a broken or hostile device does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsedFault {
    /// The entry names this descriptor instead of the chain's head.
    Id(u32),
    /// The entry reports this length instead of the bytes written.
    Len(u32),
    /// The entry is written twice (the chain used again).
    Twice,
    /// The used index moves this much further than the entries written.
    IndexAhead(u16),
}

/// One virtqueue as the device sees it (4.1.4.3, 2.7).
#[derive(Clone, Copy, Debug)]
struct Queue {
    size: u16,
    enabled: bool,
    /// Descriptor table, driver (available) ring, device (used) ring.
    desc: u64,
    driver: u64,
    device: u64,
    last_avail: u16,
    used_idx: u16,
}

impl Queue {
    /// A queue as reset leaves it: its maximum size, disabled.
    fn new(size: u16) -> Queue {
        Queue {
            size,
            enabled: false,
            desc: 0,
            driver: 0,
            device: 0,
            last_avail: 0,
            used_idx: 0,
        }
    }
}

/// One buffer of a descriptor chain: IOVA, length, device-writable.
type Buf = (u64, u32, bool);

/// The device. Tests keep an `Arc<Mutex<VirtioNetModel>>` to deliver
/// frames, take the transmitted ones and set faults; the driver reaches it
/// through the BAR.
#[derive(Debug)]
pub struct VirtioNetModel {
    /// What it reports; `record` may be changed between frames.
    pub config: VirtioNetConfig,
    dma: Dma,
    status: u8,
    device_select: u32,
    driver_select: u32,
    driver_features: u64,
    select: u16,
    queues: [Queue; 2],
    generation: u8,
    isr: u8,
    backlog: VecDeque<Vec<u8>>,
    tx_log: Vec<Vec<u8>>,
    /// Changes to the next used entries of the receive queue, in order.
    pub rx_faults: VecDeque<UsedFault>,
    /// Changes to the next used entries of the transmit queue, in order.
    pub tx_faults: VecDeque<UsedFault>,
    /// Use no transmit chain (a device whose transmitter hangs) until
    /// cleared and [`VirtioNetModel::poll`] or a notification runs.
    pub tx_stalled: bool,
    /// Frames sent (counted in bench mode too).
    pub sent: u64,
    /// Frames whose checksum the device completed (NEEDS_CSUM).
    pub checksums: u64,
    /// Frames not taken or not sent: delivered before DRIVER_OK, with the
    /// link down or the backlog full, larger than the buffer, sent with the
    /// link down, or dropped at a reset.
    pub dropped: u64,
    /// Notifications per queue.
    pub notifications: [u64; 2],
    /// Device resets (status 0 written).
    pub resets: u32,
    /// A register interface that stops working ([`Wedge`]); none by default.
    pub wedge: Wedge,
    /// Values no correct driver writes (bad queue setup, a malformed chain,
    /// a feature not offered), each of which set NEEDS_RESET or was ignored.
    pub driver_errors: u64,
    threaded: bool,
}

impl VirtioNetModel {
    /// A device in `container` (made by `Container::unbacked`), and the
    /// device a driver opens: 1af4:1041 (modern virtio-net), class 0x020000,
    /// the structures in BAR [`BAR`] (common at 0, ISR at 0x1000, device at
    /// 0x2000, notifications at 0x3000 with a multiplier of 4).
    pub fn new(
        container: &Arc<Container>,
        config: VirtioNetConfig,
    ) -> (Arc<Mutex<VirtioNetModel>>, Device) {
        // Vendor capabilities (4.1.4): common, ISR, device, notify.
        let mut caps = Vec::new();
        let structures = [
            (1u8, COMMON_AT, COMMON_LEN),
            (3, ISR_AT, 4),
            (4, DEVICE_AT, DEVICE_LEN),
            (2, NOTIFY_AT, NOTIFY_LEN),
        ];
        for (i, (kind, offset, length)) in structures.into_iter().enumerate() {
            let len = if kind == 2 { 20 } else { 16 };
            let next = if i == 3 { 0 } else { 0x40 + caps.len() + len };
            caps.extend([0x09, next as u8, len as u8, kind, BAR as u8, 0, 0, 0]);
            caps.extend((offset as u32).to_le_bytes());
            caps.extend((length as u32).to_le_bytes());
            if kind == 2 {
                caps.extend(MULTIPLIER.to_le_bytes());
            }
        }
        let pci = Arc::new(Mutex::new(
            PciConfig::new(0x1af4, 0x1041, 0x01, 0x02_0000, &caps).subsystem(0x1100),
        ));
        let queue = Queue::new(config.queue_size);
        let model = Arc::new(Mutex::new(VirtioNetModel {
            config,
            dma: Dma::new(container, &pci),
            status: 0,
            device_select: 0,
            driver_select: 0,
            driver_features: 0,
            select: 0,
            queues: [queue; 2],
            generation: 0,
            isr: 0,
            backlog: VecDeque::new(),
            tx_log: Vec::new(),
            rx_faults: VecDeque::new(),
            tx_faults: VecDeque::new(),
            tx_stalled: false,
            sent: 0,
            checksums: 0,
            dropped: 0,
            notifications: [0; 2],
            resets: 0,
            wedge: Wedge::None,
            driver_errors: 0,
            threaded: false,
        }));
        let addr: PciAddress = "0000:00:05.0".parse().expect("a valid address");
        let bar: vfio_core::mmio::SharedModel = model.clone();
        let device = Device::from_models(container, addr, (256, pci), vec![(BAR, BAR_LEN, bar)])
            .expect("an unbacked container");
        (model, device)
    }

    /// Runs the device on a thread (see [`ModelThread`]): notifications no
    /// longer transmit or receive by themselves.
    pub fn spawn(model: &Arc<Mutex<VirtioNetModel>>) -> ModelThread {
        crate::common::spawn(model)
    }

    /// A frame arrives from the wire: written into the next available
    /// receive buffer behind a net header, or held until one is available.
    pub fn deliver(&mut self, frame: Vec<u8>) {
        let ready = self.status & status::DRIVER_OK != 0 && self.config.link_up;
        if !ready || self.backlog.len() >= self.config.rx_backlog {
            self.dropped += 1;
            return;
        }
        self.backlog.push_back(frame);
        if !self.threaded {
            self.receive();
        }
    }

    /// Frames delivered and not yet written into a buffer.
    pub fn queued(&self) -> usize {
        self.backlog.len()
    }

    /// Takes the frames transmitted so far, oldest first.
    pub fn transmitted(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.tx_log)
    }

    /// Sets the link status: the configuration generation changes and the
    /// ISR's configuration bit is set (2.5.1, 4.1.4.5). With the link down,
    /// frames sent are used and dropped, and none are received.
    pub fn set_link(&mut self, up: bool) {
        if up != self.config.link_up {
            self.config.link_up = up;
            self.generation = self.generation.wrapping_add(1);
            self.isr |= 2;
        }
    }

    /// Transmits what the driver made available and receives what the
    /// backlog holds, now (what the thread of [`VirtioNetModel::spawn`] does).
    pub fn poll(&mut self) {
        self.transmit();
        self.receive();
    }

    /// The device status register.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// The features the driver accepted.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// DMA the IOMMU refused (no mapping) or bus mastering forbade.
    /// Makes the PCI command register ignore writes (`on`), or take them
    /// again: a device whose Bus Master Enable cannot be cleared.
    pub fn set_bus_master_stuck(&mut self, on: bool) {
        self.dma.set_command_stuck(on);
    }

    /// Whether Bus Master Enable is set in its command register: with it
    /// clear the device starts no DMA.
    pub fn bus_master(&self) -> bool {
        self.dma.bus_master()
    }

    pub fn dma_faults(&self) -> u64 {
        self.dma.faults
    }

    /// Device reset (2.1.1, 4.1.4.3.1): status, features and queues to
    /// their initial values; the backlog dropped.
    fn reset(&mut self) {
        self.status = 0;
        self.driver_features = 0;
        self.device_select = 0;
        self.driver_select = 0;
        self.select = 0;
        self.queues = [Queue::new(self.config.queue_size); 2];
        self.isr = 0;
        self.dropped += self.backlog.len() as u64;
        self.backlog.clear();
        self.resets += 1;
    }

    /// An error the device cannot recover from (2.1.2): NEEDS_RESET, and a
    /// configuration change notification.
    fn fail(&mut self) {
        self.driver_errors += 1;
        self.status |= status::NEEDS_RESET;
        self.isr |= 2;
    }

    fn set_status(&mut self, v: u8) {
        if v == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        let mut new = v | old & status::NEEDS_RESET;
        if new & status::FEATURES_OK != 0 && old & status::FEATURES_OK == 0 {
            // 2.2.2, 6.1: only offered features, VERSION_1 among them, and
            // ACCESS_PLATFORM when offered (the device cannot work without
            // the IOMMU it sits behind).
            let f = self.driver_features;
            let platform = feature::ACCESS_PLATFORM;
            let ok = f & !self.config.features == 0
                && f & feature::VERSION_1 != 0
                && (self.config.features & platform == 0 || f & platform != 0);
            if !ok {
                new &= !status::FEATURES_OK;
                self.driver_errors += 1;
            }
        }
        self.status = new;
        if new & status::DRIVER_OK != 0 && old & status::DRIVER_OK == 0 && !self.threaded {
            self.poll();
        }
    }

    /// Whether the device may use queue `q` now.
    fn live(&self, q: usize) -> bool {
        let s = self.status;
        s & status::DRIVER_OK != 0
            && s & (status::NEEDS_RESET | status::FAILED) == 0
            && self.queues[q].enabled
    }

    /// The head of the next available chain of queue `q`, not yet consumed;
    /// None when the driver made nothing more available (or the ring
    /// cannot be read, or its index is beyond what the queue holds, which
    /// sets NEEDS_RESET).
    fn next_avail(&mut self, q: usize) -> Option<u16> {
        let Queue {
            size,
            driver,
            last_avail,
            ..
        } = self.queues[q];
        let idx = self.dma.read_u16(driver + 2)?;
        let pending = idx.wrapping_sub(last_avail);
        if pending == 0 {
            return None;
        }
        if pending > size {
            self.fail();
            return None;
        }
        self.dma
            .read_u16(driver + 4 + 2 * (last_avail % size) as u64)
    }

    /// The buffers of the chain at `head` (2.7.5), in order; None for a
    /// chain no correct driver makes (a descriptor outside the table, an
    /// indirect one, a loop), which sets NEEDS_RESET.
    fn chain(&mut self, q: usize, head: u16) -> Option<Vec<Buf>> {
        let Queue { size, desc, .. } = self.queues[q];
        let mut bufs = Vec::new();
        let mut id = head;
        for _ in 0..size {
            let mut d = [0u8; 16];
            if id >= size || !self.dma.read(desc + 16 * id as u64, &mut d) {
                break;
            }
            let addr = u64::from_le_bytes(d[0..8].try_into().expect("8"));
            let len = u32::from_le_bytes(d[8..12].try_into().expect("4"));
            let flags = u16::from_le_bytes([d[12], d[13]]);
            if flags & DESC_F_INDIRECT != 0 {
                break;
            }
            bufs.push((addr, len, flags & DESC_F_WRITE != 0));
            if flags & DESC_F_NEXT == 0 {
                return Some(bufs);
            }
            id = u16::from_le_bytes([d[14], d[15]]);
        }
        self.fail();
        None
    }

    /// Writes a used entry for `id` with `len` (2.7.8), changed by the next
    /// fault of the queue, then the used index.
    fn push_used(&mut self, q: usize, id: u32, len: u32) {
        let fault = if q == RX {
            self.rx_faults.pop_front()
        } else {
            self.tx_faults.pop_front()
        };
        let (mut id, mut len, mut times, mut ahead) = (id, len, 1, 0);
        match fault {
            Some(UsedFault::Id(i)) => id = i,
            Some(UsedFault::Len(l)) => len = l,
            Some(UsedFault::Twice) => times = 2,
            Some(UsedFault::IndexAhead(n)) => ahead = n,
            None => {}
        }
        let Queue { size, device, .. } = self.queues[q];
        for _ in 0..times {
            let slot = self.queues[q].used_idx % size;
            let mut elem = [0u8; 8];
            elem[..4].copy_from_slice(&id.to_le_bytes());
            elem[4..].copy_from_slice(&len.to_le_bytes());
            self.dma.write(device + 4 + 8 * slot as u64, &elem);
            self.queues[q].used_idx = self.queues[q].used_idx.wrapping_add(1);
        }
        let idx = self.queues[q].used_idx.wrapping_add(ahead);
        self.queues[q].used_idx = idx;
        self.dma.write(device + 2, &idx.to_le_bytes());
    }

    /// Sets the ISR's queue bit after used entries, unless the driver asked
    /// for no interrupts (2.7.7).
    fn interrupt(&mut self, q: usize) {
        let flags = self.dma.read_u16(self.queues[q].driver).unwrap_or(0);
        if flags & AVAIL_F_NO_INTERRUPT == 0 {
            self.isr |= 1;
        }
    }

    /// Sends every chain the driver made available on the transmit queue
    /// (5.1.6.2).
    fn transmit(&mut self) {
        if !self.live(TX) || self.tx_stalled || !self.dma.begin() {
            return;
        }
        let mut used = false;
        while let Some(head) = self.next_avail(TX) {
            let Some(bufs) = self.chain(TX, head) else {
                break;
            };
            self.queues[TX].last_avail = self.queues[TX].last_avail.wrapping_add(1);
            self.send(&bufs);
            self.push_used(TX, head as u32, 0);
            used = true;
        }
        if used {
            self.interrupt(TX);
        }
    }

    /// One transmitted chain: the net header and the frame after it, across
    /// the device-readable buffers in any split (2.6.4); the checksum
    /// completed when the header asks (NEEDS_CSUM: the sum from csum_start
    /// to the end, stored at csum_start + csum_offset).
    fn send(&mut self, bufs: &[Buf]) {
        let readable: u64 = bufs.iter().filter(|b| !b.2).map(|b| b.1 as u64).sum();
        if readable < HDR as u64 || readable > (HDR + MAX_TX) as u64 || !self.config.link_up {
            self.dropped += 1;
            self.driver_errors += (readable < HDR as u64) as u64;
            return;
        }
        self.sent += 1;
        if !self.config.record {
            return;
        }
        let mut bytes = Vec::with_capacity(readable as usize);
        for &(iova, len, _) in bufs.iter().filter(|b| !b.2) {
            let from = bytes.len();
            bytes.resize(from + len as usize, 0);
            if !self.dma.read(iova, &mut bytes[from..]) {
                bytes.truncate(from);
            }
        }
        if bytes.len() < HDR {
            return;
        }
        let mut frame = bytes.split_off(HDR);
        let h = bytes;
        if h[0] & NEEDS_CSUM != 0 {
            if self.driver_features & feature::CSUM == 0 {
                self.driver_errors += 1;
            } else {
                let start = u16::from_le_bytes([h[6], h[7]]) as usize;
                let at = start + u16::from_le_bytes([h[8], h[9]]) as usize;
                if start < frame.len() && at + 2 <= frame.len() {
                    let end = frame.len();
                    insert_checksum(&mut frame, start, end, at);
                    // A sum of 0 goes out as 0xffff, its equal in one's
                    // complement, as a UDP checksum of 0 means "none".
                    if frame[at..at + 2] == [0, 0] {
                        frame[at..at + 2].copy_from_slice(&[0xff, 0xff]);
                    }
                    self.checksums += 1;
                }
            }
        }
        self.tx_log.push(frame);
    }

    /// Writes backlog frames into available receive buffers (5.1.6.4): the
    /// net header (all zeros but num_buffers 1), then the frame, across the
    /// chain's device-writable buffers. A frame longer than the chain holds
    /// is dropped and the buffer kept.
    fn receive(&mut self) {
        if !self.live(RX) || self.backlog.is_empty() || !self.dma.begin() {
            return;
        }
        let mut used = false;
        while !self.backlog.is_empty() {
            let Some(head) = self.next_avail(RX) else {
                break;
            };
            let Some(bufs) = self.chain(RX, head) else {
                break;
            };
            let frame = self.backlog.pop_front().expect("not empty");
            let room: u64 = bufs.iter().filter(|b| b.2).map(|b| b.1 as u64).sum();
            if room < (HDR + frame.len()) as u64 {
                self.dropped += 1;
                continue;
            }
            self.queues[RX].last_avail = self.queues[RX].last_avail.wrapping_add(1);
            let mut data = vec![0u8; HDR];
            data[10] = 1; // num_buffers
            data.extend_from_slice(&frame);
            let mut rest = &data[..];
            for &(iova, len, _) in bufs.iter().filter(|b| b.2) {
                let n = rest.len().min(len as usize);
                self.dma.write(iova, &rest[..n]);
                rest = &rest[n..];
            }
            self.push_used(RX, head as u32, data.len() as u32);
            used = true;
        }
        if used {
            self.interrupt(RX);
        }
    }

    fn queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.select as usize)
    }

    fn common_read(&mut self, at: usize, size: usize) -> u64 {
        let q = self.queues.get(self.select as usize).copied();
        let field = |f: fn(&Queue) -> u64| q.as_ref().map_or(0, f);
        match (at, size) {
            (DEVICE_FEATURE_SELECT, 4) => self.device_select as u64,
            (DEVICE_FEATURE, 4) if self.device_select < 2 => {
                self.config.features >> (32 * self.device_select) & 0xffff_ffff
            }
            (DRIVER_FEATURE_SELECT, 4) => self.driver_select as u64,
            (DRIVER_FEATURE, 4) if self.driver_select < 2 => {
                self.driver_features >> (32 * self.driver_select) & 0xffff_ffff
            }
            (MSIX_CONFIG, 2) | (QUEUE_MSIX_VECTOR, 2) => NO_VECTOR as u64,
            (NUM_QUEUES, 2) => self.queues.len() as u64,
            (DEVICE_STATUS, 1) => self.status as u64,
            (CONFIG_GENERATION, 1) => self.generation as u64,
            (QUEUE_SELECT, 2) => self.select as u64,
            (QUEUE_SIZE, 2) => field(|q| q.size as u64),
            (QUEUE_ENABLE, 2) => field(|q| q.enabled as u64),
            (QUEUE_NOTIFY_OFF, 2) if q.is_some() => self.select as u64,
            (QUEUE_DESC..COMMON_LEN, 4 | 8) if at.is_multiple_of(size) => {
                let v = q.map_or(0, |q| [q.desc, q.driver, q.device][(at - QUEUE_DESC) / 8]);
                (v >> (8 * (at % 8))) & (u64::MAX >> (64 - 8 * size))
            }
            _ => 0,
        }
    }

    fn common_write(&mut self, at: usize, size: usize, v: u64) {
        let features_ok = self.status & status::FEATURES_OK != 0;
        match (at, size) {
            (DEVICE_FEATURE_SELECT, 4) => self.device_select = v as u32,
            (DRIVER_FEATURE_SELECT, 4) => self.driver_select = v as u32,
            (DRIVER_FEATURE, 4) if self.driver_select < 2 && !features_ok => {
                let shift = 32 * self.driver_select;
                self.driver_features =
                    self.driver_features & !(0xffff_ffff << shift) | (v & 0xffff_ffff) << shift;
            }
            (DEVICE_STATUS, 1) => self.set_status(v as u8),
            (QUEUE_SELECT, 2) => self.select = v as u16,
            (QUEUE_SIZE, 2) => {
                if let Some(q) = self.queue().filter(|q| !q.enabled) {
                    q.size = v as u16;
                }
            }
            (QUEUE_ENABLE, 2) if v == 1 => self.enable_queue(),
            (QUEUE_DESC..COMMON_LEN, 4 | 8) if at.is_multiple_of(size) => {
                let Some(q) = self.queue().filter(|q| !q.enabled) else {
                    return;
                };
                let field = match (at - QUEUE_DESC) / 8 {
                    0 => &mut q.desc,
                    1 => &mut q.driver,
                    _ => &mut q.device,
                };
                *field = if size == 8 {
                    v
                } else if at.is_multiple_of(8) {
                    *field & !0xffff_ffff | v & 0xffff_ffff
                } else {
                    *field & 0xffff_ffff | v << 32
                };
            }
            _ => {}
        }
    }

    /// `queue_enable` 1 (4.1.4.3.2): the size must be a power of two up to
    /// the maximum, the rings aligned as 2.7 requires (16, 2, 4).
    fn enable_queue(&mut self) {
        let max = self.config.queue_size;
        let Some(q) = self.queue() else {
            return;
        };
        let ok = q.size != 0
            && q.size.is_power_of_two()
            && q.size <= max
            && q.desc % 16 == 0
            && q.driver % 2 == 0
            && q.device % 4 == 0;
        if ok {
            q.enabled = true;
        } else {
            self.fail();
        }
    }

    fn device_config(&self) -> [u8; DEVICE_LEN] {
        let mut c = [0u8; DEVICE_LEN];
        c[0..6].copy_from_slice(&self.config.mac);
        c[6..8].copy_from_slice(&(self.config.link_up as u16).to_le_bytes());
        c[8..10].copy_from_slice(&1u16.to_le_bytes()); // max_virtqueue_pairs
        c[10..12].copy_from_slice(&1500u16.to_le_bytes()); // mtu
        c
    }
}

impl Engine for VirtioNetModel {
    fn poll(&mut self) {
        VirtioNetModel::poll(self);
    }
    fn set_threaded(&mut self, on: bool) {
        self.threaded = on;
    }
}

impl RegisterModel for VirtioNetModel {
    fn read(&mut self, offset: usize, size: usize) -> u64 {
        if self.wedge == Wedge::Panics {
            panic!("virtio-net model: a read of BAR offset {offset:#x} with Wedge::Panics");
        }
        match offset {
            o if o < COMMON_AT + COMMON_LEN => self.common_read(o - COMMON_AT, size),
            // 4.1.4.5: reading the ISR status clears it.
            ISR_AT => std::mem::take(&mut self.isr) as u64,
            o if (DEVICE_AT..DEVICE_AT + DEVICE_LEN).contains(&o) => {
                let c = self.device_config();
                let mut b = [0u8; 8];
                for (i, byte) in b.iter_mut().take(size).enumerate() {
                    *byte = c.get(o - DEVICE_AT + i).copied().unwrap_or(0);
                }
                u64::from_le_bytes(b)
            }
            _ => 0,
        }
    }

    fn write(&mut self, offset: usize, size: usize, value: u64) {
        match self.wedge {
            Wedge::None => {}
            Wedge::IgnoresWrites => return,
            Wedge::Panics => {
                panic!("virtio-net model: a write of BAR offset {offset:#x} with Wedge::Panics")
            }
        }
        match offset {
            o if o < COMMON_AT + COMMON_LEN => self.common_write(o - COMMON_AT, size, value),
            o if (NOTIFY_AT..NOTIFY_AT + NOTIFY_LEN).contains(&o) && size == 2 => {
                let off = (o - NOTIFY_AT) as u32;
                let q = (off / MULTIPLIER) as usize;
                if !off.is_multiple_of(MULTIPLIER) || q >= self.queues.len() {
                    self.driver_errors += 1;
                    return;
                }
                self.notifications[q] += 1;
                if !self.threaded {
                    match q {
                        TX => self.transmit(),
                        _ => self.receive(),
                    }
                }
            }
            _ => {}
        }
    }
}
