//! Host tests: the whole driver on a software virtio-net device. The model
//! answers the common configuration (reset, features, queue setup), the
//! device configuration (MAC, link) and records notifications; the test
//! plays the device's queue processing, reading the rings and writing used
//! entries and frames by IOVA through the container.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use vfio_core::mmio::RegisterModel;
use vfio_core::vfio::{Container, Device};

use super::regs::{self, cap, common, feature, hdr, net_config, ring, status};
use super::{VirtioNet, RX_HEADROOM};
use crate::testing::{self, dma, dma_u16, dma_u32, dma_u64, frame, ConfigSpace, MASTER, MEMORY};
use crate::{ChecksumOffload, Config, Error, NetDevice, Packet, Segment, TxFrame};

const BAR: u32 = 4;
const BAR_LEN: usize = 0x4000;
const COMMON_AT: usize = 0x0000;
const DEVICE_AT: usize = 0x2000;
const NOTIFY_AT: usize = 0x3000;
const MULTIPLIER: u32 = 4;
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x57];
const OFFERED: u64 = feature::VERSION_1
    | feature::ACCESS_PLATFORM
    | feature::MAC
    | feature::STATUS
    | feature::CSUM
    | 1 << 10; // something else the driver does not take

#[derive(Debug, Clone)]
struct Queue {
    max: u16,
    size: u16,
    vector: u16,
    enable: u16,
    notify_off: u16,
    addr: [u64; 3],
}

/// A virtio-net device's registers (one BAR: common, device and
/// notification structures).
#[derive(Debug)]
struct Net {
    status: u8,
    reset_works: bool,
    /// Reads of device status that still show the old status after a reset.
    reset_reads: usize,
    offered: u64,
    device_select: u32,
    driver_select: u32,
    driver_features: [u32; 2],
    accept_features: bool,
    num_queues: u16,
    select: u16,
    queues: Vec<Queue>,
    /// Queue registers keep what is written (else: size reads the maximum,
    /// the vector reads 0).
    queue_regs_stick: bool,
    /// Status bits the device adds once DRIVER_OK is set.
    fail_after_ok: u8,
    generation: u8,
    /// Added to the generation at every read of it.
    generation_step: u8,
    mac: [u8; 6],
    link: u16,
    notifies: Vec<(usize, u16)>,
    /// Every value written to device status.
    status_writes: Vec<u8>,
}

impl Net {
    fn new() -> Net {
        let queue = |i: u16| Queue {
            max: 256,
            size: 256,
            vector: common::NO_VECTOR,
            enable: 0,
            notify_off: i,
            addr: [0; 3],
        };
        Net {
            status: 0,
            reset_works: true,
            reset_reads: 0,
            offered: OFFERED,
            device_select: 0,
            driver_select: 0,
            driver_features: [0; 2],
            accept_features: true,
            num_queues: 3,
            select: 0,
            queues: (0..3).map(queue).collect(),
            queue_regs_stick: true,
            fail_after_ok: 0,
            generation: 0,
            generation_step: 0,
            mac: MAC,
            link: net_config::LINK_UP,
            notifies: Vec::new(),
            status_writes: Vec::new(),
        }
    }

    fn queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.select as usize)
    }

    fn driver_features(&self) -> u64 {
        self.driver_features[0] as u64 | (self.driver_features[1] as u64) << 32
    }

    fn common_read(&mut self, at: usize) -> u64 {
        let stick = self.queue_regs_stick;
        let q = self.queues.get(self.select as usize).cloned();
        let qr = |f: fn(&Queue) -> u64| q.as_ref().map_or(0, f);
        match at {
            common::DEVICE_FEATURE_SELECT => self.device_select as u64,
            common::DEVICE_FEATURE => match self.device_select {
                0 | 1 => self.offered >> (32 * self.device_select) & 0xffff_ffff,
                _ => 0,
            },
            common::DRIVER_FEATURE_SELECT => self.driver_select as u64,
            common::NUM_QUEUES => self.num_queues as u64,
            common::DEVICE_STATUS if self.reset_reads > 0 => {
                self.reset_reads -= 1;
                status::DRIVER as u64
            }
            common::DEVICE_STATUS => self.status as u64,
            common::CONFIG_GENERATION => {
                self.generation = self.generation.wrapping_add(self.generation_step);
                self.generation as u64
            }
            common::QUEUE_SELECT => self.select as u64,
            common::QUEUE_SIZE if stick => qr(|q| q.size as u64),
            common::QUEUE_SIZE => qr(|q| q.max as u64),
            common::QUEUE_MSIX_VECTOR if stick => qr(|q| q.vector as u64),
            common::QUEUE_MSIX_VECTOR => 0,
            common::QUEUE_ENABLE => qr(|q| q.enable as u64),
            common::QUEUE_NOTIFY_OFF => qr(|q| q.notify_off as u64),
            _ => 0,
        }
    }

    fn common_write(&mut self, at: usize, v: u64) {
        match at {
            common::DEVICE_FEATURE_SELECT => self.device_select = v as u32,
            common::DRIVER_FEATURE_SELECT => self.driver_select = v as u32,
            common::DRIVER_FEATURE if self.driver_select < 2 => {
                self.driver_features[self.driver_select as usize] = v as u32
            }
            common::DEVICE_STATUS => {
                let v = v as u8;
                self.status_writes.push(v);
                if v == 0 {
                    if self.reset_works {
                        self.status = 0;
                        for q in &mut self.queues {
                            q.enable = 0;
                            q.size = q.max;
                        }
                    }
                    return;
                }
                let mut s = v;
                if !self.accept_features {
                    s &= !status::FEATURES_OK;
                }
                if s & status::DRIVER_OK != 0 {
                    s |= self.fail_after_ok;
                }
                self.status = s;
            }
            common::QUEUE_SELECT => self.select = v as u16,
            common::QUEUE_SIZE => {
                if let Some(q) = self.queue() {
                    q.size = v as u16
                }
            }
            common::QUEUE_MSIX_VECTOR => {
                if let Some(q) = self.queue() {
                    q.vector = v as u16
                }
            }
            common::QUEUE_ENABLE => {
                if let Some(q) = self.queue() {
                    q.enable = v as u16
                }
            }
            a @ common::QUEUE_DESC..common::SIZE => {
                if let Some(q) = self.queue() {
                    let (field, high) = ((a - common::QUEUE_DESC) / 8, a % 8 == 4);
                    let old = q.addr[field];
                    q.addr[field] = if high {
                        old & 0xffff_ffff | v << 32
                    } else {
                        old & !0xffff_ffff | v
                    };
                }
            }
            _ => {}
        }
    }
}

impl RegisterModel for Net {
    fn read(&mut self, offset: usize, _size: usize) -> u64 {
        match offset {
            o if o < DEVICE_AT => self.common_read(o - COMMON_AT),
            o if o < DEVICE_AT + net_config::MAC_END => self.mac[o - DEVICE_AT] as u64,
            o if o == DEVICE_AT + net_config::STATUS => self.link as u64,
            _ => 0,
        }
    }

    fn write(&mut self, offset: usize, _size: usize, value: u64) {
        match offset {
            o if o < DEVICE_AT => self.common_write(o - COMMON_AT, value),
            o if o >= NOTIFY_AT => self.notifies.push((o - NOTIFY_AT, value as u16)),
            _ => {}
        }
    }
}

/// One vendor capability: (cfg_type, cap_len, BAR, offset, length).
type Cap = (u8, u8, u8, u32, u32);

fn caps() -> Vec<Cap> {
    vec![
        (cap::COMMON, 16, BAR as u8, COMMON_AT as u32, 0x1000),
        (cap::NOTIFY, 20, BAR as u8, NOTIFY_AT as u32, 0x1000),
        (cap::DEVICE, 16, BAR as u8, DEVICE_AT as u32, 0x100),
    ]
}

/// Config space with the IDs and `caps` chained from 0x40 (a power
/// management capability first, as QEMU has, which the walk skips).
fn config_space(caps: &[Cap], multiplier: u32) -> Arc<Mutex<ConfigSpace>> {
    let space = ConfigSpace::new(regs::VENDOR, 0x1041);
    let mut c = space.lock().unwrap();
    c.regs.set(
        regs::pci::STATUS as usize,
        2,
        regs::pci::STATUS_CAP_LIST as u64,
    );
    c.regs.set(regs::pci::CAP_PTR as usize, 1, 0x40);
    c.regs.set(0x40, 2, 0x01 | 0x48 << 8);
    let mut at = 0x48;
    for (i, &(kind, len, bar, offset, length)) in caps.iter().enumerate() {
        let next = if i + 1 == caps.len() { 0 } else { at + 20 };
        c.regs.set(at, 1, regs::pci::CAP_ID_VNDR as u64);
        c.regs.set(at + 1, 1, next as u64);
        c.regs.set(at + cap::CAP_LEN as usize, 1, len as u64);
        c.regs.set(at + cap::CFG_TYPE as usize, 1, kind as u64);
        c.regs.set(at + cap::BAR as usize, 1, bar as u64);
        c.regs.set(at + cap::OFFSET as usize, 4, offset as u64);
        c.regs.set(at + cap::LENGTH as usize, 4, length as u64);
        if kind == cap::NOTIFY {
            c.regs.set(
                at + cap::NOTIFY_OFF_MULTIPLIER as usize,
                4,
                multiplier as u64,
            );
        }
        at = next;
    }
    drop(c);
    space
}

/// The device side of one queue: the rings' IOVAs and its own indices.
#[derive(Debug, Default, Clone, Copy)]
struct Rings {
    desc: u64,
    avail: u64,
    used: u64,
    size: u16,
    last_avail: u16,
    used_idx: u16,
}

struct Harness {
    container: Arc<Container>,
    net: Arc<Mutex<Net>>,
    config: Arc<Mutex<ConfigSpace>>,
    /// More BARs than the one the model serves.
    bars: Vec<(u32, usize, vfio_core::mmio::SharedModel)>,
    rings: [Rings; 2],
}

impl Harness {
    fn new(net: Net) -> Harness {
        Harness::with_caps(net, &caps(), MULTIPLIER)
    }

    fn with_caps(net: Net, caps: &[Cap], multiplier: u32) -> Harness {
        Harness {
            container: Container::unbacked(),
            net: Arc::new(Mutex::new(net)),
            config: config_space(caps, multiplier),
            bars: Vec::new(),
            rings: Default::default(),
        }
    }

    fn open(&mut self, config: Config) -> crate::Result<VirtioNet> {
        let mut bars = vec![(
            BAR,
            BAR_LEN,
            self.net.clone() as vfio_core::mmio::SharedModel,
        )];
        bars.extend(self.bars.iter().cloned());
        let device = Device::from_models(
            &self.container,
            testing::addr(),
            (256, self.config.clone()),
            bars,
        )
        .unwrap();
        let nic = VirtioNet::new(device, config)?;
        for q in 0..2 {
            let queue = self.net().queues[q].clone();
            assert_eq!(queue.enable, 1, "queue {q} enabled");
            self.rings[q] = Rings {
                desc: queue.addr[0],
                avail: queue.addr[1],
                used: queue.addr[2],
                size: queue.size,
                ..Rings::default()
            };
        }
        Ok(nic)
    }

    fn net(&self) -> MutexGuard<'_, Net> {
        self.net.lock().unwrap()
    }

    fn command(&self) -> u64 {
        self.config.lock().unwrap().command()
    }

    fn avail_idx(&self, q: usize) -> u16 {
        dma_u16(&self.container, self.rings[q].avail + 2)
    }

    /// As the device: the next head the driver made available.
    fn take(&mut self, q: usize) -> Option<u16> {
        let r = self.rings[q];
        if self.avail_idx(q) == r.last_avail {
            return None;
        }
        let slot = r.avail + 4 + 2 * (r.last_avail % r.size) as u64;
        self.rings[q].last_avail = r.last_avail.wrapping_add(1);
        Some(dma_u16(&self.container, slot))
    }

    /// (address, length, flags) of each descriptor of the chain at `head`.
    fn chain(&self, q: usize, head: u16) -> Vec<Desc> {
        let c = &self.container;
        let mut out = Vec::new();
        let mut d = head;
        loop {
            let at = self.rings[q].desc + 16 * d as u64;
            let flags = dma_u16(c, at + 12);
            out.push((dma_u64(c, at), dma_u32(c, at + 8), flags));
            if flags & ring::DESC_F_NEXT == 0 {
                return out;
            }
            d = dma_u16(c, at + 14);
        }
    }

    /// Writes a used entry and (unless `show` is false) the index after it.
    fn entry(&mut self, q: usize, id: u32, len: u32, show: bool) {
        let r = self.rings[q];
        let at = r.used + 4 + 8 * (r.used_idx % r.size) as u64;
        self.container.dma_write(at, &id.to_le_bytes()).unwrap();
        self.container
            .dma_write(at + 4, &len.to_le_bytes())
            .unwrap();
        self.rings[q].used_idx = r.used_idx.wrapping_add(1);
        if show {
            self.set_used_idx(q, self.rings[q].used_idx);
        }
    }

    fn set_used_idx(&self, q: usize, idx: u16) {
        let at = self.rings[q].used + 2;
        self.container.dma_write(at, &idx.to_le_bytes()).unwrap();
    }

    /// As the device: receives `bytes` into the next receive buffer (net
    /// header of zeros first); returns the head.
    fn deliver(&mut self, bytes: &[u8]) -> u16 {
        let head = self.take(0).expect("a receive buffer");
        let (addr, len, flags) = self.chain(0, head)[0];
        assert_eq!(flags, ring::DESC_F_WRITE);
        assert!(hdr::SIZE + bytes.len() <= len as usize);
        self.container.dma_write(addr, &[0; hdr::SIZE]).unwrap();
        self.container
            .dma_write(addr + hdr::SIZE as u64, bytes)
            .unwrap();
        self.entry(0, head as u32, (hdr::SIZE + bytes.len()) as u32, true);
        head
    }

    /// As the device: reads every frame made available on the transmit
    /// queue (header, frame), without using them yet; with their heads.
    fn transmitted(&mut self) -> Vec<(u16, Vec<u8>, Vec<u8>)> {
        self.transmitted_chains()
            .into_iter()
            .map(|(head, _, hd, frame)| (head, hd, frame))
            .collect()
    }

    /// As [`Harness::transmitted`], with each chain's descriptors. The
    /// header is the chain's first 12 bytes, in whatever descriptors they
    /// lie (as QEMU reads it: VERSION_1 allows any framing).
    fn transmitted_chains(&mut self) -> Vec<Chain> {
        let mut out = Vec::new();
        while let Some(head) = self.take(1) {
            let chain = self.chain(1, head);
            let mut bytes = Vec::new();
            for &(addr, len, flags) in &chain {
                assert_eq!(flags & ring::DESC_F_WRITE, 0, "the device only reads");
                let mut b = vec![0; len as usize];
                self.container.dma_read(addr, &mut b).unwrap();
                bytes.extend(b);
            }
            let frame = bytes.split_off(hdr::SIZE);
            out.push((head, chain, bytes, frame));
        }
        out
    }
}

/// A descriptor as the device reads it: address, length, flags.
type Desc = (u64, u32, u16);
/// A transmitted chain: its head, its descriptors, its net header, its frame.
type Chain = (u16, Vec<Desc>, Vec<u8>, Vec<u8>);

/// A frame for `dst` of `len` bytes.
fn frame_to(dst: [u8; 6], id: u8, len: usize) -> Vec<u8> {
    let mut f = frame(id, len);
    f[..6].copy_from_slice(&dst);
    f
}

fn packet(nic: &mut VirtioNet, bytes: &[u8]) -> Packet {
    let mut p = nic.alloc_packet().unwrap();
    p.buffer_mut()[..bytes.len()].copy_from_slice(bytes);
    p.set_len(bytes.len());
    p
}

fn open(net: Net) -> (Harness, VirtioNet) {
    let mut h = Harness::new(net);
    let nic = h.open(testing::config(8, 8)).unwrap();
    (h, nic)
}

fn open_err(net: Net) -> (Harness, String) {
    open_err_caps(net, &caps(), MULTIPLIER)
}

fn open_err_caps(net: Net, caps: &[Cap], multiplier: u32) -> (Harness, String) {
    let mut h = Harness::with_caps(net, caps, multiplier);
    let e = h.open(testing::config(8, 8)).unwrap_err();
    assert!(matches!(e, Error::Device { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("0000:00:04.0"), "names the device: {text}");
    (h, text)
}

// ---- bring-up ----

#[test]
fn bring_up_negotiates_sets_up_both_queues_and_fills_the_receive_queue() {
    let (h, nic) = open(Net::new());
    assert_eq!(nic.mac(), MAC);
    assert!(nic.link().up);
    let n = h.net();
    assert_eq!(
        n.driver_features(),
        feature::VERSION_1
            | feature::ACCESS_PLATFORM
            | feature::MAC
            | feature::STATUS
            | feature::CSUM
    );
    let ok = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;
    assert_eq!(n.status, ok);
    assert_eq!(n.status_writes[0], 0, "a reset first");
    assert_eq!(n.status_writes.last(), Some(&ok));
    for q in 0..2 {
        assert_eq!(
            (n.queues[q].size, n.queues[q].vector),
            (8, common::NO_VECTOR)
        );
    }
    assert_eq!(n.queues[2].enable, 0, "the control queue is not used");
    assert_eq!(
        n.notifies,
        [(0, regs::RX_QUEUE)],
        "receive queue notified once"
    );
    drop(n);
    assert_eq!(h.avail_idx(0), 8, "every receive descriptor has a buffer");
    assert_eq!(h.avail_idx(1), 0);
    assert_eq!(h.command() & (MEMORY | MASTER), MEMORY | MASTER);
    let r = h.rings[0];
    assert_eq!(r.avail - r.desc, 8 * 16);
    let pool = nic.pool().clone();
    assert_eq!(nic.free_buffers(), pool.capacity() - 8);
}

#[test]
fn without_the_mac_feature_a_local_address_is_used_and_no_link_status_is_read() {
    let mut net = Net::new();
    net.offered &= !(feature::MAC | feature::STATUS);
    net.link = 0;
    let (_h, nic) = open(net);
    assert_eq!(nic.mac(), [0x02, 0, 0, 0, 0, 0x01]);
    assert!(nic.link().up, "no STATUS feature: always up");
}

#[test]
fn a_mac_read_while_the_configuration_changes_is_read_again() {
    let mut net = Net::new();
    net.generation_step = 1; // every read differs: never stable
    let (h, e) = open_err(net);
    assert!(
        e.contains("configuration generation changed during each of 10 reads"),
        "{e}"
    );
    assert_eq!(h.container.mapping_count(), 0);
}

#[test]
fn bad_macs_and_missing_features_are_refused() {
    let mut net = Net::new();
    net.mac = [0xff; 6];
    assert!(open_err(net).1.contains("group address"));
    let mut net = Net::new();
    net.offered &= !feature::ACCESS_PLATFORM;
    assert!(open_err(net).1.contains("iommu_platform=on"));
    let mut net = Net::new();
    net.accept_features = false;
    assert!(open_err(net).1.contains("refused features"));
    let mut net = Net::new();
    net.num_queues = 1;
    assert!(open_err(net).1.contains("has 1 queues"));
}

#[test]
fn queue_sizes_the_driver_cannot_use_are_refused_before_memory_is_given() {
    for (q, max, says) in [
        (0, 0, "queue 0 is not available"),
        (1, 0, "queue 1 is not available"),
        (0, 100, "size 100, not a power of two"),
        (1, 4, "a frame needs 5"),
    ] {
        let mut net = Net::new();
        net.queues[q].max = max;
        let (h, e) = open_err(net);
        assert!(e.contains(says), "{e}");
        assert_eq!(h.container.mapping_count(), 0, "{says}");
        assert!(h.net().queues.iter().all(|q| q.enable == 0));
    }
    // Small but usable: a 2-entry receive queue, an 8-entry transmit queue.
    let mut net = Net::new();
    net.queues[0].max = 2;
    let (h, _nic) = open(net);
    assert_eq!(h.net().queues[0].size, 2);
}

#[test]
fn notification_addresses_outside_the_structure_or_the_bar_are_refused() {
    let mut net = Net::new();
    net.queues[1].notify_off = 0x400; // 0x400 * 4 = the structure's end
    let (_, e) = open_err(net);
    assert!(e.contains("queue 1's notification address"), "{e}");
    assert!(e.contains("1024 x notify_off_multiplier 4 = 0x1000"), "{e}");
    let mut net = Net::new();
    net.queues[0].notify_off = u16::MAX;
    let (h, e) = open_err_caps(net, &caps(), u32::MAX);
    assert!(e.contains("queue 0's notification address"), "{e}");
    assert_eq!(h.container.mapping_count(), 0);
    // An odd offset cannot take the 16-bit write.
    let mut net = Net::new();
    net.queues[1].notify_off = 1;
    assert!(open_err_caps(net, &caps(), 1).1.contains("not 2-byte"));
    // The last two bytes of the structure are fine.
    let mut net = Net::new();
    net.queues[1].notify_off = 0x3ff;
    let mut h = Harness::with_caps(net, &caps(), MULTIPLIER);
    let mut nic = h.open(testing::config(8, 8)).unwrap();
    let mut q = VecDeque::from([TxFrame::packet(packet(&mut nic, &frame(1, 60)))]);
    nic.tx_batch(&mut q).unwrap();
    assert_eq!(h.net().notifies.last(), Some(&(0xffc, regs::TX_QUEUE)));
}

#[test]
fn capabilities_outside_their_bar_too_short_or_misaligned_are_refused() {
    let cases: [(usize, Cap, &str); 6] = [
        (
            0,
            (cap::COMMON, 16, BAR as u8, 0x3ff0, 0x38),
            "lie outside the 0x4000-byte BAR 4",
        ),
        (
            0,
            (cap::COMMON, 16, BAR as u8, u32::MAX, 0x38),
            "lie outside",
        ),
        (
            0,
            (cap::COMMON, 16, BAR as u8, 2, 0x38),
            "aligned to 4 bytes",
        ),
        (
            0,
            (cap::COMMON, 16, BAR as u8, 0, 0x30),
            "at least 0x38 bytes",
        ),
        (
            2,
            (cap::DEVICE, 16, BAR as u8, 0x2001, 0x10),
            "aligned to 2 bytes",
        ),
        (
            1,
            (cap::NOTIFY, 16, BAR as u8, NOTIFY_AT as u32, 0x1000),
            "less than its 20",
        ),
    ];
    for (i, replacement, says) in cases {
        let mut c = caps();
        c[i] = replacement;
        let (h, e) = open_err_caps(Net::new(), &c, MULTIPLIER);
        assert!(e.contains(says), "{says}: {e}");
        assert!(
            h.net().status_writes.is_empty(),
            "the device was not touched"
        );
    }
    for (i, says) in [(0, "no common"), (1, "no notification"), (2, "no device")] {
        let mut c = caps();
        c.remove(i);
        assert!(open_err_caps(Net::new(), &c, MULTIPLIER).1.contains(says));
    }
    // A device configuration too short for the link status the features promise.
    let mut c = caps();
    c[2].4 = 6;
    let (_, e) = open_err_caps(Net::new(), &c, MULTIPLIER);
    assert!(e.contains("has 6 bytes"), "{e}");
    // A capability in a BAR number past 5 is ignored, as the spec says.
    let mut c = caps();
    c.insert(0, (cap::COMMON, 16, 7, 0, 0x38));
    let mut h = Harness::with_caps(Net::new(), &c, MULTIPLIER);
    h.open(testing::config(8, 8)).unwrap();
}

#[test]
fn a_reset_that_never_completes_fails_bring_up_with_bus_mastering_off() {
    let mut net = Net::new();
    net.reset_works = false;
    net.status = status::ACKNOWLEDGE; // left over from an earlier user
    let (h, e) = open_err(net);
    assert!(e.contains("did not read 0"), "{e}");
    assert_eq!(h.command() & (MEMORY | MASTER), MEMORY);
}

#[test]
fn errors_after_the_queues_exist_reset_the_device_before_freeing_them() {
    // The size does not read back, the vector is refused, the device fails.
    let mut stuck = Net::new();
    stuck.queues[0].max = 8;
    stuck.queue_regs_stick = false;
    let mut failing = Net::new();
    failing.fail_after_ok = status::NEEDS_RESET;
    for (net, says) in [
        (stuck, "refused MSI-X vector 0xffff for queue 0"),
        (failing, "failed during bring-up (status 0x4f)"),
    ] {
        let (h, e) = open_err(net);
        assert!(e.contains(says), "{e}");
        assert_eq!(h.net().status_writes.last(), Some(&0), "reset last");
        assert_eq!(h.container.mapping_count(), 0, "then freed");
        assert_eq!(h.command() & MASTER, MASTER, "a proven reset");
    }
}

// ---- receive ----

#[test]
fn frames_arrive_in_order_and_each_buffer_is_replaced_and_returned_once() {
    let (mut h, mut nic) = open(Net::new());
    let free = nic.free_buffers();
    let frames: Vec<Vec<u8>> = (0..3)
        .map(|i| frame_to(MAC, i, 60 + 200 * i as usize))
        .collect();
    let heads: Vec<u16> = frames.iter().map(|f| h.deliver(f)).collect();
    let buffers: Vec<u64> = heads.iter().map(|&d| h.chain(0, d)[0].0).collect();
    let mut out = Vec::new();
    assert_eq!(nic.rx_batch(&mut out, 8).unwrap(), 3);
    for (k, (p, f)) in out.iter().zip(&frames).enumerate() {
        assert_eq!(p.data(), &f[..]);
        assert_eq!(p.offset(), RX_HEADROOM + hdr::SIZE);
        assert_eq!(p.iova(), buffers[k] + hdr::SIZE as u64);
    }
    assert_eq!(h.avail_idx(0), 11, "three fresh buffers made available");
    for _ in 0..3 {
        let head = h.take(0).unwrap();
        let (addr, len, _) = h.chain(0, head)[0];
        assert!(!buffers.contains(&addr), "a fresh buffer");
        assert_eq!(len as usize, 2048 - RX_HEADROOM);
    }
    assert_eq!(nic.free_buffers(), free - 3);
    out.clear();
    assert_eq!(nic.free_buffers(), free);
    let s = nic.stats();
    assert_eq!(
        (s.rx_packets, s.rx_bytes, s.rx_errors),
        (3, 60 + 260 + 460, 0)
    );
}

#[test]
fn frames_for_other_macs_only_in_promiscuous_mode() {
    let (mut h, mut nic) = open(Net::new());
    let other = [0x52, 0, 0, 0, 0, 9];
    h.deliver(&frame_to(other, 1, 60));
    h.deliver(&frame_to([0xff; 6], 2, 60));
    let mut out = Vec::new();
    assert_eq!(nic.rx_batch(&mut out, 8).unwrap(), 1, "broadcast only");
    assert_eq!(out[0].data()[..6], [0xff; 6]);
    nic.set_promiscuous(true);
    h.deliver(&frame_to(other, 3, 60));
    assert_eq!(nic.rx_batch(&mut out, 8).unwrap(), 1);
    assert_eq!(out[1].data()[..6], other);
}

#[test]
fn max_limits_a_batch() {
    let (mut h, mut nic) = open(Net::new());
    for i in 0..3 {
        h.deliver(&frame_to(MAC, i, 60));
    }
    let mut out = Vec::new();
    assert_eq!(nic.rx_batch(&mut out, 2).unwrap(), 2);
    assert_eq!(nic.rx_batch(&mut out, 0).unwrap(), 0);
    assert_eq!(nic.rx_batch(&mut out, 2).unwrap(), 1);
    assert_eq!(out[2].data(), &frame_to(MAC, 2, 60)[..]);
}

#[test]
fn bad_lengths_are_counted_and_the_buffer_goes_back_to_the_device() {
    let (mut h, mut nic) = open(Net::new());
    let free = nic.free_buffers();
    let mut heads = Vec::new();
    for len in [
        0,
        hdr::SIZE as u32 + 14,
        2046 - hdr::SIZE as u32 + 1,
        2047,
        u32::MAX,
    ] {
        let head = h.take(0).unwrap();
        h.entry(0, head as u32, len, true);
        heads.push((head, h.chain(0, head)[0].0));
    }
    for _ in 0..3 {
        h.take(0).unwrap(); // the buffers never used
    }
    let mut out = Vec::new();
    assert_eq!(nic.rx_batch(&mut out, 8).unwrap(), 0);
    assert_eq!(nic.stats().rx_errors, 5);
    let mut again: Vec<u64> = (0..5)
        .map(|_| {
            let head = h.take(0).unwrap();
            h.chain(0, head)[0].0
        })
        .collect();
    let mut old: Vec<u64> = heads.iter().map(|x| x.1).collect();
    again.sort();
    old.sort();
    assert_eq!(again, old, "the same buffers, made available again");
    assert_eq!(nic.free_buffers(), free);
}

#[test]
fn the_largest_frame_a_buffer_takes_is_received() {
    let (mut h, mut nic) = open(Net::new());
    let mut out = Vec::new();
    for len in [15, 1514 + 4] {
        h.deliver(&frame_to(MAC, 9, len));
        assert_eq!(nic.rx_batch(&mut out, 8).unwrap(), 1);
        assert_eq!(out.pop().unwrap().len(), len);
    }
    assert_eq!(nic.stats().rx_errors, 0);
}

#[test]
fn used_entries_for_buffers_not_in_flight_are_errors_that_name_the_queue() {
    let (mut h, mut nic) = open(Net::new());
    let free = nic.free_buffers();
    h.entry(0, 200, 100, true);
    let mut out = Vec::new();
    let e = nic.rx_batch(&mut out, 8).unwrap_err().to_string();
    assert!(
        e.contains("receive queue: used entry for descriptor 200"),
        "{e}"
    );
    assert_eq!(nic.rx_batch(&mut out, 8).unwrap(), 0, "consumed");
    assert_eq!(nic.free_buffers(), free);
    // A used index far ahead: an error now and at every later call.
    h.set_used_idx(0, 5000);
    for _ in 0..2 {
        let e = nic.rx_batch(&mut out, 8).unwrap_err().to_string();
        assert!(e.contains("used index jumped from 1 to 5000"), "{e}");
        assert!(e.contains("needs a device reset"), "{e}");
    }
    assert_eq!(nic.free_buffers(), free, "nothing handed out");
}

#[test]
fn with_the_pool_empty_frames_are_dropped_and_counted() {
    let (mut h, mut nic) = open(Net::new());
    let pool = nic.pool().clone();
    let mut hoard = Vec::new();
    pool.alloc_batch(pool.capacity(), &mut hoard);
    let head = h.deliver(&frame_to(MAC, 1, 60));
    let buffer = h.chain(0, head)[0].0;
    for _ in 0..7 {
        h.take(0).unwrap(); // the buffers never used
    }
    let mut out = Vec::new();
    assert_eq!(nic.rx_batch(&mut out, 8).unwrap(), 0);
    assert_eq!(nic.stats().rx_dropped, 1);
    let again = h.take(0).unwrap();
    assert_eq!(
        h.chain(0, again)[0].0,
        buffer,
        "its own buffer back to the device"
    );
}

#[test]
fn a_device_that_keeps_using_buffers_cannot_keep_rx_batch_looping() {
    let (mut h, mut nic) = open(Net::new());
    // Entries for the 8 buffers, then as many for the refills it can see
    // in the avail ring before they are published: the driver reads one
    // ring's worth per call, then publishes.
    for _ in 0..8 {
        h.deliver(&frame_to([0x52, 0, 0, 0, 0, 9], 1, 60));
    }
    let mut out = Vec::new();
    assert_eq!(nic.rx_batch(&mut out, 8).unwrap(), 0);
    assert_eq!(h.avail_idx(0), 16);
}

// ---- transmit ----

#[test]
fn frames_go_out_behind_a_net_header_and_come_back_when_used() {
    let (mut h, mut nic) = open(Net::new());
    let free = nic.free_buffers();
    let one = frame(1, 60);
    let mut two = TxFrame::packet(packet(&mut nic, &frame(2, 14)));
    let body = packet(&mut nic, &frame(3, 100));
    let at = body.offset();
    two.push(Segment::Slice {
        buf: body.into_buffer(),
        offset: at + 10,
        len: 90,
    })
    .unwrap();
    let mut q = VecDeque::from([TxFrame::packet(packet(&mut nic, &one)), two]);
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 2);
    assert_eq!(h.avail_idx(1), 2);
    assert_eq!(h.net().notifies.last(), Some(&(4, regs::TX_QUEUE)));
    let sent = h.transmitted();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].1, [0; hdr::SIZE], "no offload: an empty header");
    assert_eq!(sent[0].2, one);
    let mut expected = frame(2, 14);
    expected.extend(&frame(3, 100)[10..]);
    assert_eq!(sent[1].2, expected);
    assert_eq!(nic.tx_pending(), 2);
    assert_eq!(nic.free_buffers(), free - 3);
    assert_eq!(nic.tx_clean(), 0);
    let s = nic.stats();
    assert_eq!(
        (s.tx_packets, s.tx_bytes),
        (0, 0),
        "queued is not sent: nothing counted before the device gives a chain back"
    );
    h.entry(1, sent[1].0 as u32, 0, true);
    assert_eq!(nic.tx_clean(), 1);
    assert_eq!(nic.free_buffers(), free - 1);
    let s = nic.stats();
    assert_eq!((s.tx_packets, s.tx_bytes), (1, 14 + 90), "the used frame");
    h.entry(1, sent[0].0 as u32, 0, true);
    assert_eq!(nic.tx_clean(), 1);
    assert_eq!(nic.tx_clean(), 0);
    assert_eq!(nic.free_buffers(), free);
    assert_eq!(nic.tx_pending(), 0);
    let s = nic.stats();
    assert_eq!((s.tx_packets, s.tx_bytes), (2, 60 + 14 + 90));
}

#[test]
fn sent_bytes_are_counted_by_who_wrote_them_and_the_net_header_is_not_a_frame_byte() {
    use vfio_core::dma::{BytesByWriter, Writer};
    let (mut h, mut nic) = open(Net::new());
    let received = frame_to(MAC, 1, 400);
    h.deliver(&received);
    let mut out = Vec::new();
    assert_eq!(nic.rx_batch(&mut out, 1).unwrap(), 1);
    let p = out.pop().unwrap();
    assert_eq!(
        p.writer(),
        Writer::Device,
        "the device wrote the received frame"
    );
    let offset = p.offset();
    let shared = p.into_buffer().into_shared();
    let mut fwd = TxFrame::packet(packet(&mut nic, &frame(2, 14)));
    fwd.push(Segment::Shared {
        buf: shared.clone(),
        offset: offset + 14,
        len: 386,
    })
    .unwrap();
    // Bytes of the receive buffer the device did not write (its net header
    // area is the driver's, zeroed here by the test as the device): the CPU's.
    let mut header_area = TxFrame::packet(packet(&mut nic, &frame(3, 14)));
    header_area
        .push(Segment::Shared {
            buf: shared,
            offset: offset - 4,
            len: 50,
        })
        .unwrap();
    let mut q = VecDeque::from([fwd, header_area]);
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 2);
    assert_eq!(h.transmitted()[0].2[14..], received[14..]);
    assert_eq!(
        nic.stats().tx_from,
        BytesByWriter {
            device: 386,
            cpu: 14 + 14 + 50
        }
    );
}

#[test]
fn a_packet_with_headroom_goes_out_as_one_descriptor_its_header_in_the_headroom() {
    use vfio_core::dma::{BytesByWriter, Writer};
    let (mut h, mut nic) = open(Net::new());
    let free = nic.free_buffers();
    // Received frames lie behind their net header's room: echo one back.
    let received = frame_to(MAC, 1, 60);
    h.deliver(&received);
    let mut out = Vec::new();
    assert_eq!(nic.rx_batch(&mut out, 1).unwrap(), 1);
    assert_eq!(out[0].offset(), RX_HEADROOM + hdr::SIZE);
    let iova = out[0].iova();
    // Whatever the device left in front of the frame (its header, made
    // nonzero here) is overwritten with the plain header.
    h.container
        .dma_write(iova - hdr::SIZE as u64, &[0xee; hdr::SIZE])
        .unwrap();
    assert_eq!(nic.tx_packets(&mut out).unwrap(), 1);
    assert!(out.is_empty());
    let sent = h.transmitted_chains();
    assert_eq!(sent.len(), 1);
    let (head, chain, hd, bytes) = &sent[0];
    assert_eq!(
        chain[..],
        [(iova - hdr::SIZE as u64, (hdr::SIZE + 60) as u32, 0)],
        "one descriptor: header and frame"
    );
    assert_eq!((&hd[..], &bytes[..]), (&[0; hdr::SIZE][..], &received[..]));
    assert_eq!(
        nic.stats().tx_from,
        BytesByWriter { device: 60, cpu: 0 },
        "the header is no frame byte, and the frame stays the device's"
    );
    assert_eq!(nic.tx_pending(), 1);
    h.entry(1, *head as u32, 0, true);
    assert_eq!(nic.tx_clean(), 1);
    let s = nic.stats();
    assert_eq!((s.tx_packets, s.tx_bytes), (1, 60));
    assert_eq!(nic.free_buffers(), free);
    // A frame the CPU wrote there (over the device's) is the CPU's.
    h.deliver(&received);
    assert_eq!(nic.rx_batch(&mut out, 1).unwrap(), 1);
    out[0].data_mut()[0] = 0x02;
    assert_eq!(out[0].writer(), Writer::Cpu);
    nic.tx_packets(&mut out).unwrap();
    assert_eq!(nic.stats().tx_from.cpu, 60);
    assert_eq!(h.transmitted_chains()[0].1.len(), 1);
}

#[test]
fn allocated_packets_leave_room_for_the_header_and_go_out_as_one_descriptor() {
    let (mut h, mut nic) = open(Net::new());
    let mut q = vec![packet(&mut nic, &frame(1, 1514))];
    assert_eq!(nic.alloc_packets(2, &mut q), 2);
    for (i, p) in q.iter_mut().enumerate().skip(1) {
        p.buffer_mut()[..60].copy_from_slice(&frame(i as u8 + 1, 60));
        p.set_len(60);
    }
    assert!(q.iter().all(|p| p.offset() == super::TX_HEADROOM));
    assert_eq!(q[0].len(), 1514, "a whole frame fits after the headroom");
    assert_eq!(nic.tx_packets(&mut q).unwrap(), 3);
    let sent = h.transmitted_chains();
    let expected = [frame(1, 1514), frame(2, 60), frame(3, 60)];
    for ((_, chain, hd, bytes), want) in sent.iter().zip(&expected) {
        assert_eq!(chain.len(), 1);
        assert_eq!(chain[0].1 as usize, hdr::SIZE + want.len());
        assert_eq!((&hd[..], bytes), (&[0; hdr::SIZE][..], want));
    }
}

#[test]
fn a_packet_without_headroom_goes_out_as_a_header_and_its_frame() {
    use vfio_core::dma::BytesByWriter;
    let (mut h, mut nic) = open(Net::new());
    let free = nic.free_buffers();
    let bytes = frame(7, 61);
    let mut buf = nic.pool().alloc().unwrap();
    buf.as_mut_slice()[..61].copy_from_slice(&bytes);
    let p = Packet::new(buf, 61);
    assert_eq!(p.offset(), 0);
    let iova = p.iova();
    // Two packets without headroom, one with: 5 descriptors of 8.
    let mut q = vec![p, Packet::at(nic.pool().alloc().unwrap(), 11, 60)];
    q.push(Packet::at(nic.pool().alloc().unwrap(), 12, 60));
    assert_eq!(nic.tx_packets(&mut q).unwrap(), 3);
    let sent = h.transmitted_chains();
    let (head, chain, hd, got) = &sent[0];
    assert_eq!(chain.len(), 2, "{chain:x?}");
    assert_eq!(chain[0].1 as usize, hdr::SIZE, "the header alone first");
    assert_eq!((chain[0].2, chain[1]), (ring::DESC_F_NEXT, (iova, 61, 0)));
    assert_eq!((&hd[..], &got[..]), (&[0; hdr::SIZE][..], &bytes[..]));
    assert_eq!(sent[1].1.len(), 2, "11 bytes of headroom are too few");
    assert_eq!(sent[2].1.len(), 1, "12 are enough");
    assert_eq!(
        nic.stats().tx_from,
        BytesByWriter {
            device: 0,
            cpu: 61 + 60 + 60
        }
    );
    // 3 descriptors left: a packet with headroom, one without; the third waits.
    let mut q = vec![Packet::at(nic.pool().alloc().unwrap(), 12, 60)];
    q.push(Packet::at(nic.pool().alloc().unwrap(), 0, 60));
    q.push(Packet::at(nic.pool().alloc().unwrap(), 0, 60));
    assert_eq!(nic.tx_packets(&mut q).unwrap(), 2);
    assert_eq!(q.len(), 1);
    drop(q);
    h.entry(1, *head as u32, 0, true);
    for (head, ..) in &sent[1..] {
        h.entry(1, *head as u32, 0, true);
    }
    for (head, ..) in h.transmitted_chains() {
        h.entry(1, head as u32, 0, true);
    }
    assert_eq!(nic.tx_clean(), 5);
    assert_eq!(nic.free_buffers(), free);
}

#[test]
fn a_full_queue_keeps_the_frames_and_notifies_only_when_asked() {
    let (mut h, mut nic) = open(Net::new());
    let mut q: VecDeque<TxFrame> = (0..6)
        .map(|i| TxFrame::packet(packet(&mut nic, &frame(i, 60))))
        .collect();
    // The device says it needs no notification.
    let used = h.rings[1].used;
    h.container
        .dma_write(used, &ring::USED_F_NO_NOTIFY.to_le_bytes())
        .unwrap();
    let notifies = h.net().notifies.len();
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 4, "two descriptors a frame");
    assert_eq!(q.len(), 2);
    assert_eq!(h.net().notifies.len(), notifies);
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 0);
    let sent = h.transmitted();
    for (head, _, _) in &sent[..2] {
        h.entry(1, *head as u32, 0, true);
    }
    assert_eq!(nic.stats().tx_packets, 0, "4 queued, none used yet");
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 2, "reclaimed first");
    assert_eq!(
        nic.stats().tx_packets,
        2,
        "the 2 used chains, reclaimed inside tx_batch; not the 6 queued"
    );
    assert_eq!(nic.tx_clean(), 2);
    assert_eq!(nic.stats().tx_packets, 2, "counted once");
}

#[test]
fn hostile_transmit_used_entries_free_only_what_was_in_flight() {
    let (mut h, mut nic) = open(Net::new());
    let mut q: VecDeque<TxFrame> = (0..2)
        .map(|i| TxFrame::packet(packet(&mut nic, &frame(i, 60))))
        .collect();
    nic.tx_batch(&mut q).unwrap();
    let sent = h.transmitted();
    let free = nic.free_buffers();
    // Not a head (the second descriptor of a chain), then a length on a
    // transmit chain (meaningless: the chain is done all the same).
    let body = sent[0].0 as u32 + 1;
    h.entry(1, body, 0, true);
    h.entry(1, sent[0].0 as u32, 60, true);
    assert_eq!(nic.tx_clean(), 1);
    assert_eq!(nic.free_buffers(), free + 1);
    let s = nic.stats();
    assert_eq!(
        (s.tx_packets, s.tx_bytes),
        (1, 60),
        "only the chain in flight"
    );
    // An index far ahead: transmit stops with an error, nothing is freed.
    h.set_used_idx(1, 40);
    let mut more = VecDeque::from([TxFrame::packet(packet(&mut nic, &frame(5, 60)))]);
    let e = nic.tx_batch(&mut more).unwrap_err().to_string();
    assert!(e.contains("transmit queue: used index jumped"), "{e}");
    assert_eq!(more.len(), 1, "the frame is kept");
    assert_eq!(nic.tx_clean(), 0);
    assert_eq!(nic.tx_clean(), 0);
    assert!(nic.tx_broken_logged);
    assert_eq!(nic.tx_pending(), 1);
    assert_eq!(nic.stats().tx_packets, 1, "nothing used past the jump");
}

#[test]
fn while_the_link_is_down_transmit_keeps_the_frames() {
    let (h, mut nic) = open(Net::new());
    h.net().link = 0;
    assert!(!nic.link().up);
    let mut q = VecDeque::from([TxFrame::packet(packet(&mut nic, &frame(0, 60)))]);
    assert!(matches!(nic.tx_batch(&mut q), Err(Error::LinkDown { .. })));
    assert_eq!(q.len(), 1);
    h.net().link = net_config::LINK_UP;
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 1);
}

/// The one's complement sum of 16-bit big-endian words.
fn ones_sum(words: impl IntoIterator<Item = u16>) -> u16 {
    let mut s: u32 = words.into_iter().map(u32::from).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn words(b: &[u8]) -> impl Iterator<Item = u16> + '_ {
    b.chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]))
}

/// Ethernet + IPv4 + UDP with `payload`, the IP checksum 0 and the UDP
/// checksum field holding the pseudo-header sum (the offload contract).
fn udp_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = frame_to([0x52, 0, 0, 0, 0, 1], 0, 14);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    f.extend([
        0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 2, 192, 0, 2, 1,
    ]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    let udp_len = total - 20;
    let pseudo = ones_sum(words(&f[26..34]).chain([17, udp_len]));
    f.extend(4000u16.to_be_bytes());
    f.extend(5000u16.to_be_bytes());
    f.extend(udp_len.to_be_bytes());
    f.extend(pseudo.to_be_bytes());
    f.extend(payload);
    f
}

const UDP: ChecksumOffload = ChecksumOffload {
    ip_start: 14,
    l4_start: 34,
    tcp: false,
};

#[test]
fn with_csum_the_header_asks_the_device_and_the_driver_fills_the_ip_checksum() {
    let (mut h, mut nic) = open(Net::new());
    let mut f = TxFrame::packet(packet(&mut nic, &udp_frame(&frame(7, 101))));
    f.offload = Some(UDP);
    nic.tx_batch(&mut VecDeque::from([f])).unwrap();
    let (_, header, bytes) = h.transmitted().remove(0);
    assert_eq!(header[hdr::FLAGS], hdr::NEEDS_CSUM);
    assert_eq!(
        header[hdr::CSUM_START..hdr::CSUM_START + 2],
        34u16.to_le_bytes()
    );
    assert_eq!(
        header[hdr::CSUM_OFFSET..hdr::CSUM_OFFSET + 2],
        6u16.to_le_bytes()
    );
    assert_eq!(
        ones_sum(words(&bytes[14..34])),
        0xffff,
        "IPv4 header checksum"
    );
    assert_eq!(
        bytes[40..42],
        udp_frame(&frame(7, 101))[40..42],
        "L4 left to the device"
    );
}

#[test]
fn without_csum_the_driver_completes_the_udp_checksum_across_segments() {
    let mut net = Net::new();
    net.offered &= !feature::CSUM;
    let (mut h, mut nic) = open(net);
    let whole = udp_frame(&frame(9, 333));
    let mut f = TxFrame::packet(packet(&mut nic, &whole[..50]));
    let rest = packet(&mut nic, &whole[50..]);
    f.push(Segment::Slice {
        len: whole.len() - 50,
        offset: rest.offset(),
        buf: rest.into_buffer(),
    })
    .unwrap();
    f.offload = Some(UDP);
    nic.tx_batch(&mut VecDeque::from([f])).unwrap();
    let (_, header, bytes) = h.transmitted().remove(0);
    assert_eq!(header, [0; hdr::SIZE]);
    assert_eq!(bytes[50..], whole[50..], "the payload as written");
    assert_eq!(ones_sum(words(&bytes[14..34])), 0xffff);
    let udp_len = (bytes.len() - 34) as u16;
    let pseudo = words(&bytes[26..34]).chain([17, udp_len]);
    assert_eq!(
        ones_sum(pseudo.chain(words(&bytes[34..]))),
        0xffff,
        "UDP checksum"
    );
    assert_ne!(bytes[40..42], [0, 0]);
}

#[test]
fn offload_needs_the_headers_in_a_packet_segment() {
    let (mut h, mut nic) = open(Net::new());
    let whole = udp_frame(&frame(1, 10));
    let mut f = TxFrame::packet(packet(&mut nic, &whole[..20]));
    f.push(Segment::Packet(packet(&mut nic, &whole[20..])))
        .unwrap();
    f.offload = Some(UDP);
    let e = nic
        .tx_batch(&mut VecDeque::from([f]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs the first 34 bytes"), "{e}");
    assert!(h.transmitted().is_empty());
}

#[test]
fn checksum_of_a_known_ipv4_header_and_of_a_stream_in_odd_pieces() {
    let header = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];
    let mut whole = super::Checksum::default();
    whole.add(&header);
    assert_eq!(whole.finish(), 0xb861);
    let mut pieces = super::Checksum::default();
    for part in [&header[..3], &header[3..10], &header[10..]] {
        pieces.add(part);
    }
    assert_eq!(pieces.finish(), 0xb861);
    // A sum of exactly 0xffff is folded already (and ends the loop).
    let mut ones = super::Checksum::default();
    ones.add(&[0xff, 0xff]);
    assert_eq!(ones.finish(), 0);
    ones.add(&[0, 1]);
    assert_eq!(ones.finish(), 0xfffe, "0xffff + 1 folds to 1");
}

// ---- stopping ----

fn busy(h: &mut Harness) -> VirtioNet {
    let mut nic = h.open(testing::config(8, 8)).unwrap();
    let mut q: VecDeque<TxFrame> = (0..2)
        .map(|i| TxFrame::packet(packet(&mut nic, &frame(i, 60))))
        .collect();
    nic.tx_batch(&mut q).unwrap();
    // And one packet held at its head by tx_packets.
    let mut packets = vec![packet(&mut nic, &frame(2, 60))];
    assert_eq!(nic.tx_packets(&mut packets).unwrap(), 1);
    nic
}

#[test]
fn drop_resets_the_device_and_only_then_frees_its_memory() {
    let mut h = Harness::new(Net::new());
    let nic = busy(&mut h);
    let pool = nic.pool().clone();
    assert_eq!(h.container.mapping_count(), 4, "pool, two queues, headers");
    drop(nic);
    assert_eq!(h.net().status, 0);
    assert_eq!(h.net().status_writes.last(), Some(&0));
    assert_eq!(h.command() & MASTER, MASTER);
    assert_eq!(pool.free_count(), pool.capacity());
    drop(pool);
    assert_eq!(h.container.mapping_count(), 0);
}

#[test]
fn drop_turns_bus_mastering_off_when_the_reset_does_not_show() {
    let mut h = Harness::new(Net::new());
    let nic = busy(&mut h);
    let pool = nic.pool().clone();
    h.net().reset_works = false;
    drop(nic);
    assert_eq!(h.command() & (MEMORY | MASTER), MEMORY);
    assert_eq!(pool.free_count(), pool.capacity());
}

#[test]
fn drop_does_not_trust_a_status_of_0_while_memory_decoding_is_off() {
    let mut h = Harness::new(Net::new());
    let nic = busy(&mut h);
    h.config
        .lock()
        .unwrap()
        .regs
        .set(testing::COMMAND, 2, MASTER);
    drop(nic);
    assert_eq!(h.command() & MASTER, 0);
}

#[test]
fn drop_leaks_everything_the_device_may_reach_when_it_cannot_be_stopped() {
    let mut h = Harness::new(Net::new());
    let nic = busy(&mut h);
    let pool = nic.pool().clone();
    h.net().reset_works = false;
    h.config.lock().unwrap().keep_master = true;
    let before = vfio_core::dma::leaked();
    drop(nic);
    assert!(
        vfio_core::dma::leaked() >= before + 11 + 3,
        "8 receive buffers, 3 frames, 2 queues, the header area"
    );
    assert_eq!(pool.free_count(), pool.capacity() - 11);
    drop(pool);
    assert_eq!(h.container.mapping_count(), 4);
    // The device can still read what it was given.
    assert_eq!(
        dma::<2>(&h.container, h.rings[0].avail + 2),
        8u16.to_le_bytes()
    );
}

// ---- more bring-up, transmit and checksum corners ----

#[test]
fn a_udp_checksum_that_comes_out_0_is_sent_as_ffff() {
    let mut net = Net::new();
    net.offered &= !feature::CSUM;
    let (mut h, mut nic) = open(net);
    // Choose the last two payload bytes so that the sum is 0xffff, so the
    // complement is 0, which UDP spells 0xffff (0 means "no checksum").
    let mut whole = udp_frame(&frame(3, 40));
    let n = whole.len();
    whole[n - 2..].copy_from_slice(&[0, 0]);
    let s = ones_sum(words(&whole[34..]));
    whole[n - 2..].copy_from_slice(&(0xffff - s).to_be_bytes());
    assert_eq!(ones_sum(words(&whole[34..])), 0xffff);
    let mut f = TxFrame::packet(packet(&mut nic, &whole));
    f.offload = Some(UDP);
    nic.tx_batch(&mut VecDeque::from([f])).unwrap();
    let (_, _, bytes) = h.transmitted().remove(0);
    assert_eq!(bytes[40..42], [0xff, 0xff]);
}

#[test]
fn each_frame_in_flight_has_its_own_net_header() {
    let (mut h, mut nic) = open(Net::new());
    let tcp = ChecksumOffload { tcp: true, ..UDP };
    let mut q: VecDeque<TxFrame> = [UDP, tcp, UDP]
        .into_iter()
        .map(|o| {
            let mut f = TxFrame::packet(packet(&mut nic, &udp_frame(&frame(1, 30))));
            f.offload = Some(o);
            f
        })
        .collect();
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 3);
    let sent = h.transmitted();
    let offsets: Vec<u16> = sent
        .iter()
        .map(|(_, hd, _)| u16::from_le_bytes([hd[hdr::CSUM_OFFSET], hd[hdr::CSUM_OFFSET + 1]]))
        .collect();
    assert_eq!(offsets, [6, 16, 6]);
    assert!(sent
        .iter()
        .all(|(_, hd, _)| hd[hdr::FLAGS] == hdr::NEEDS_CSUM));
}

#[test]
fn a_frame_that_does_not_fit_the_descriptors_left_waits() {
    let (mut h, mut nic) = open(Net::new());
    let mut two = TxFrame::packet(packet(&mut nic, &frame(0, 14)));
    two.push(Segment::Packet(packet(&mut nic, &frame(1, 50))))
        .unwrap();
    let mut q = VecDeque::from([two]);
    q.extend((2..5).map(|i| TxFrame::packet(packet(&mut nic, &frame(i, 60)))));
    // 3 + 2 + 2 descriptors of 8; the third single frame needs 2, 1 is left.
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 3);
    assert_eq!(q.len(), 1);
    let notifies = h.net().notifies.len();
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 0);
    assert_eq!(nic.tx_batch(&mut VecDeque::new()).unwrap(), 0);
    assert_eq!(
        h.net().notifies.len(),
        notifies,
        "no notification for nothing"
    );
    assert_eq!(h.avail_idx(1), 3);
    let sent = h.transmitted();
    h.entry(1, sent[0].0 as u32, 0, true);
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 1);
}

#[test]
fn a_full_queue_on_a_device_that_needs_a_reset_is_an_error() {
    let (h, mut nic) = open(Net::new());
    let mut q: VecDeque<TxFrame> = (0..5)
        .map(|i| TxFrame::packet(packet(&mut nic, &frame(i, 60))))
        .collect();
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 4);
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 0, "full, the device is fine");
    h.net().status |= status::NEEDS_RESET;
    let e = nic.tx_batch(&mut q).unwrap_err().to_string();
    assert!(e.contains("the device stopped (status 0x4f"), "{e}");
    assert_eq!(q.len(), 1);
}

#[test]
fn a_slow_reset_is_waited_for() {
    let mut net = Net::new();
    net.reset_reads = 5;
    let mut h = Harness::new(net);
    let nic = h.open(testing::config(8, 8)).unwrap();
    assert_eq!(nic.driver_name(), "virtio-net");
    h.net().reset_reads = 5;
    drop(nic);
    assert_eq!(h.command() & MASTER, MASTER, "proven after a few polls");
}

#[test]
fn a_receive_queue_of_one_entry_works() {
    let mut net = Net::new();
    net.queues[0].max = 1;
    let (mut h, mut nic) = open(net);
    let mut out = Vec::new();
    for i in 0..3 {
        h.deliver(&frame_to(MAC, i, 60));
        assert_eq!(nic.rx_batch(&mut out, 8).unwrap(), 1);
    }
}

#[test]
fn a_device_without_a_capability_list_has_no_common_configuration() {
    let mut h = Harness::new(Net::new());
    h.config
        .lock()
        .unwrap()
        .regs
        .set(regs::pci::STATUS as usize, 2, 0);
    let e = h.open(testing::config(8, 8)).unwrap_err().to_string();
    assert!(e.contains("no common configuration capability"), "{e}");
}

#[test]
fn structures_in_two_bars_and_in_a_bar_number_past_5() {
    // The device configuration in BAR 2, a common configuration of exactly
    // the size the driver needs, and a capability naming BAR 6 (ignored).
    let mut c = caps();
    c[0].4 = common::SIZE as u32;
    c[2] = (cap::DEVICE, 16, 2, 0x100, 8);
    c.insert(0, (cap::COMMON, 16, 6, 0, 0x38));
    let mut h = Harness::with_caps(Net::new(), &c, MULTIPLIER);
    let mut bar2 = vfio_core::mmio::RegisterFile::new(0x1000);
    let mac = [0x52, 0x54, 0, 0, 0, 0x22];
    for (i, b) in mac.iter().enumerate() {
        bar2.set(0x100 + i, 1, *b as u64);
    }
    bar2.set(0x100 + net_config::STATUS, 2, net_config::LINK_UP as u64);
    h.bars.push((2, 0x1000, Arc::new(Mutex::new(bar2))));
    let nic = h.open(testing::config(8, 8)).unwrap();
    assert_eq!(nic.mac(), mac);
    assert!(nic.link().up);
}

#[test]
fn polling_mode_never_sleeps() {
    let (mut h, mut nic) = open(Net::new());
    h.deliver(&frame_to(MAC, 1, 60));
    let t = std::time::Instant::now();
    assert!(!nic.wait_rx(std::time::Duration::from_secs(5)).unwrap());
    assert!(t.elapsed() < std::time::Duration::from_secs(1));
}
