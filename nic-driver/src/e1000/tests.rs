//! Host tests: the whole driver on a software 8254x. The model answers the
//! registers (CTRL.RST self-clears, EERD completes, STATUS says link up); the
//! test plays the NIC's DMA engine, reading and writing descriptors and
//! buffers by IOVA through the container.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use vfio_core::mmio::{RegisterFile, RegisterModel};
use vfio_core::vfio::{Container, Device};

use super::regs::{self, ctrl, eerd, rah, rctl, rxd, status, tctl, txd};
use super::{E1000, RX_HEADROOM};
use crate::testing::{self, dma, dma_u32, dma_u64, frame, ConfigSpace, MASTER, MEMORY};
use crate::{ChecksumOffload, Config, Error, NetDevice, Packet, Segment, TxFrame};

const BAR_LEN: usize = 0x20000;
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// The registers of an 82540EM, as far as the driver uses them.
#[derive(Debug)]
struct Nic {
    regs: RegisterFile,
    /// CTRL.RST clears itself (a working NIC).
    reset_clears: bool,
    /// RCTL.EN reads set after a reset (a NIC whose reset does not stop it).
    receive_survives_reset: bool,
    /// Reads a slow operation takes: CTRL.RST clearing, EERD.DONE.
    slow: usize,
    /// Reads of STATUS before the link comes up.
    link_after: usize,
    /// EEPROM words 0-2; None: an EERD read never completes.
    eeprom: Option<[u16; 3]>,
    /// Every read returns all ones (a removed device).
    gone: bool,
    /// Every register write, in order.
    writes: Vec<(usize, u32)>,
    /// Reads of CTRL and of STATUS, and of any register.
    ctrl_reads: usize,
    status_reads: usize,
    reads: usize,
    /// Reads until the reset or the EEPROM read in progress completes, and
    /// the EERD value it then shows.
    reset_pending: usize,
    eerd_pending: (usize, u32),
}

impl Nic {
    fn new() -> Nic {
        let mut regs = RegisterFile::new(BAR_LEN);
        regs.set(
            regs::STATUS,
            4,
            (status::LU | status::FD | 2 << status::SPEED_SHIFT) as u64,
        );
        let w = |i: usize| u16::from_le_bytes([MAC[2 * i], MAC[2 * i + 1]]);
        Nic {
            regs,
            reset_clears: true,
            receive_survives_reset: false,
            slow: 0,
            link_after: 0,
            eeprom: Some([w(0), w(1), w(2)]),
            gone: false,
            writes: Vec::new(),
            ctrl_reads: 0,
            status_reads: 0,
            reads: 0,
            reset_pending: 0,
            eerd_pending: (0, 0),
        }
    }

    fn reg(&self, r: usize) -> u32 {
        self.regs.get(r, 4) as u32
    }

    fn writes_to(&self, r: usize) -> Vec<u32> {
        self.writes
            .iter()
            .filter(|w| w.0 == r)
            .map(|w| w.1)
            .collect()
    }

    /// Position of the first write of `value` bits to `r` after write `from`.
    fn write_index(&self, r: usize, bits: u32, from: usize) -> Option<usize> {
        self.writes
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, w)| w.0 == r && w.1 & bits == bits)
            .map(|(i, _)| i)
    }
}

/// Statistics registers: cleared when read.
const STATS: std::ops::Range<usize> = 0x4000..0x4100;

impl RegisterModel for Nic {
    fn read(&mut self, offset: usize, size: usize) -> u64 {
        self.reads += 1;
        if self.gone {
            self.ctrl_reads += (offset == regs::CTRL) as usize;
            return u64::MAX >> (64 - 8 * size);
        }
        match offset {
            regs::CTRL => {
                self.ctrl_reads += 1;
                if self.reset_pending > 0 {
                    self.reset_pending -= 1;
                    if self.reset_pending == 0 {
                        let c = self.reg(regs::CTRL) & !ctrl::RST;
                        self.regs.set(regs::CTRL, 4, c as u64);
                    }
                }
            }
            regs::EERD if self.eerd_pending.0 > 0 => {
                self.eerd_pending.0 -= 1;
                if self.eerd_pending.0 == 0 {
                    self.regs.set(regs::EERD, 4, self.eerd_pending.1 as u64);
                }
            }
            regs::STATUS => {
                self.status_reads += 1;
                if self.status_reads <= self.link_after {
                    return self.regs.get(offset, size) & !(status::LU as u64);
                }
            }
            o if STATS.contains(&o) => {
                let v = self.regs.get(offset, size);
                self.regs.set(offset, size, 0);
                return v;
            }
            _ => {}
        }
        self.regs.get(offset, size)
    }

    fn write(&mut self, offset: usize, size: usize, value: u64) {
        self.writes.push((offset, value as u32));
        let v = value as u32;
        match offset {
            regs::CTRL if v & ctrl::RST != 0 && self.reset_clears => {
                let rctl = if self.receive_survives_reset {
                    rctl::EN
                } else {
                    0
                };
                for r in [regs::RCTL, regs::TCTL, regs::RDT, regs::TDT] {
                    self.regs.set(r, 4, 0);
                }
                self.regs.set(regs::RCTL, 4, rctl as u64);
                self.reset_pending = self.slow;
                let c = if self.slow > 0 { v } else { v & !ctrl::RST };
                self.regs.set(regs::CTRL, 4, c as u64);
            }
            regs::EERD if v & eerd::START != 0 => {
                let word = (v >> eerd::ADDR_SHIFT) as usize & 0xff;
                let done = match self.eeprom {
                    Some(words) => eerd::DONE | (words[word] as u32) << eerd::DATA_SHIFT,
                    None => 0,
                };
                if self.slow > 0 && done != 0 {
                    self.eerd_pending = (self.slow, v | done);
                    self.regs.set(offset, 4, v as u64);
                } else {
                    self.regs.set(offset, 4, (v | done) as u64);
                }
            }
            _ => self.regs.set(offset, size, value),
        }
    }
}

/// A model NIC in its own container, and the handles the test keeps.
struct Harness {
    container: Arc<Container>,
    nic: Arc<Mutex<Nic>>,
    config: Arc<Mutex<ConfigSpace>>,
}

impl Harness {
    fn new(nic: Nic) -> Harness {
        Harness {
            container: Container::unbacked(),
            nic: Arc::new(Mutex::new(nic)),
            config: ConfigSpace::new(0x8086, 0x100e),
        }
    }

    fn device(&self) -> Device {
        Device::from_models(
            &self.container,
            testing::addr(),
            (256, self.config.clone()),
            vec![(0, BAR_LEN, self.nic.clone())],
        )
        .unwrap()
    }

    fn open(&self, config: Config) -> crate::Result<E1000> {
        E1000::new(self.device(), config)
    }

    fn nic(&self) -> MutexGuard<'_, Nic> {
        self.nic.lock().unwrap()
    }

    fn command(&self) -> u64 {
        self.config.lock().unwrap().command()
    }

    fn ring(&self, base_lo: usize, base_hi: usize) -> u64 {
        let n = self.nic();
        n.reg(base_lo) as u64 | (n.reg(base_hi) as u64) << 32
    }

    /// IOVA of receive descriptor `i`.
    fn rxd(&self, i: usize) -> u64 {
        self.ring(regs::RDBAL, regs::RDBAH) + (i * rxd::SIZE) as u64
    }

    /// IOVA of transmit descriptor `i`.
    fn txd(&self, i: usize) -> u64 {
        self.ring(regs::TDBAL, regs::TDBAH) + (i * txd::SIZE) as u64
    }

    /// The buffer address in receive descriptor `i`.
    fn rx_buffer(&self, i: usize) -> u64 {
        dma_u64(&self.container, self.rxd(i))
    }

    /// As the NIC: writes `bytes` into descriptor `i`'s buffer and writes the
    /// descriptor back with `len`, `status` and `errors`.
    fn write_back(&self, i: usize, bytes: &[u8], len: u16, status: u8, errors: u8) {
        let c = &self.container;
        c.dma_write(self.rx_buffer(i), bytes).unwrap();
        let d = self.rxd(i);
        c.dma_write(d + rxd::LENGTH as u64, &len.to_le_bytes())
            .unwrap();
        c.dma_write(d + rxd::ERRORS as u64, &[errors]).unwrap();
        c.dma_write(d + rxd::STATUS as u64, &[status]).unwrap();
    }

    /// As the NIC: a whole good frame into descriptor `i`.
    fn receive(&self, i: usize, bytes: &[u8]) {
        self.write_back(i, bytes, bytes.len() as u16, rxd::DD | rxd::EOP, 0);
    }

    /// As the NIC: transmit descriptor `i` is done.
    fn sent(&self, i: usize) {
        let at = self.txd(i) + txd::STATUS as u64;
        self.container.dma_write(at, &[txd::DD]).unwrap();
    }
}

fn packet(nic: &mut E1000, bytes: &[u8]) -> Packet {
    let mut p = nic.alloc_packet().unwrap();
    p.buffer_mut()[..bytes.len()].copy_from_slice(bytes);
    p.set_len(bytes.len());
    p
}

// ---- bring-up ----

#[test]
fn bring_up_takes_the_mac_from_the_eeprom_and_gives_full_rings_to_the_nic() {
    let h = Harness::new(Nic::new());
    let nic = h.open(testing::config(8, 16)).unwrap();
    assert_eq!(nic.mac(), MAC);
    assert_eq!(h.command() & (MEMORY | MASTER), MEMORY | MASTER);
    let n = h.nic();
    assert_eq!(
        n.reg(regs::RAL0),
        u32::from_le_bytes([0x52, 0x54, 0x00, 0x12])
    );
    assert_eq!(n.reg(regs::RAH0), 0x5634 | rah::AV);
    let reset = n.write_index(regs::CTRL, ctrl::RST, 0).expect("a reset");
    let base = n.write_index(regs::RDBAL, 0, 0).unwrap();
    assert!(reset < base, "reset before the ring is given");
    assert_eq!(n.reg(regs::RDLEN), 8 * 16);
    assert_eq!(n.reg(regs::TDLEN), 16 * 16);
    assert_eq!(
        n.writes_to(regs::RDT),
        [7],
        "all but one receive descriptor"
    );
    assert_eq!(n.writes_to(regs::TDT), [0]);
    assert_eq!(n.reg(regs::RDH), 0);
    let r = n.reg(regs::RCTL);
    assert_eq!(
        r & (rctl::EN | rctl::BAM | rctl::SECRC),
        rctl::EN | rctl::BAM | rctl::SECRC
    );
    assert_eq!(n.reg(regs::TCTL) & tctl::EN, tctl::EN);
    // The rings start after the reset and before receive is enabled.
    let rctl_on = n.write_index(regs::RCTL, rctl::EN, 0).unwrap();
    assert!(base < rctl_on);
    drop(n);
    let pool = nic.pool().clone();
    let mut buffers: Vec<u64> = (0..8).map(|i| h.rx_buffer(i)).collect();
    for (i, &b) in buffers.iter().enumerate() {
        assert_eq!(
            (b - pool.iova() - RX_HEADROOM as u64) % 2048,
            0,
            "descriptor {i}"
        );
        assert_eq!(
            dma::<8>(&h.container, h.rxd(i) + 8),
            [0; 8],
            "status cleared"
        );
    }
    buffers.sort();
    buffers.dedup();
    assert_eq!(buffers.len(), 8, "one buffer per descriptor");
    assert_eq!(nic.free_buffers(), pool.capacity() - 8);
}

#[test]
fn a_valid_receive_address_is_the_mac_and_the_eeprom_is_not_read() {
    let mut model = Nic::new();
    model.eeprom = None;
    model.regs.set(regs::RAL0, 4, 0x1200_5402);
    model.regs.set(regs::RAH0, 4, (0x5634 | rah::AV) as u64);
    let h = Harness::new(model);
    let nic = h.open(testing::config(8, 8)).unwrap();
    assert_eq!(nic.mac(), [0x02, 0x54, 0x00, 0x12, 0x34, 0x56]);
    assert!(h.nic().writes_to(regs::EERD).is_empty());
}

#[test]
fn an_eeprom_that_never_answers_is_an_error_not_a_made_up_mac() {
    let mut model = Nic::new();
    model.eeprom = None;
    let h = Harness::new(model);
    let e = h.open(testing::config(8, 8)).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::Device { .. }), "{e:?}");
    assert!(
        text.contains("EEPROM read of MAC word 0") && text.contains("0000:00:04.0"),
        "{text}"
    );
    assert_eq!(
        h.nic().writes_to(regs::EERD),
        [eerd::START],
        "gave up at word 0"
    );
    assert_eq!(h.container.mapping_count(), 0, "nothing allocated");
    assert!(
        h.nic().writes_to(regs::RCTL).is_empty(),
        "receive never enabled"
    );
}

#[test]
fn a_group_or_zero_mac_is_refused() {
    for words in [[0x5453, 0x1200, 0x5634], [0, 0, 0]] {
        let mut model = Nic::new();
        model.eeprom = Some(words);
        let h = Harness::new(model);
        let e = h.open(testing::config(8, 8)).unwrap_err().to_string();
        assert!(e.contains("group address"), "{e}");
        assert_eq!(h.nic().reg(regs::RAH0) & rah::AV, 0, "not programmed");
    }
}

#[test]
fn a_reset_that_never_completes_fails_bring_up_with_bus_mastering_off() {
    let mut model = Nic::new();
    model.reset_clears = false;
    let h = Harness::new(model);
    let e = h.open(testing::config(8, 8)).unwrap_err().to_string();
    assert!(e.contains("CTRL.RST did not clear"), "{e}");
    assert_eq!(h.command() & (MEMORY | MASTER), MEMORY);
    assert_eq!(h.container.mapping_count(), 0);
}

#[test]
fn bad_ring_sizes_are_refused_before_the_device_is_touched() {
    for (rx, tx) in [(4, 8), (8, 12), (8192, 8), (8, 0)] {
        let h = Harness::new(Nic::new());
        let e = h.open(testing::config(rx, tx)).unwrap_err();
        assert!(matches!(e, crate::Error::InvalidConfig(_)), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("multiples of 8 from 8 to 4096"), "{e}");
        assert!(h.nic().writes.is_empty());
        assert_eq!(h.command(), 0);
    }
}

#[test]
fn a_device_that_is_not_an_8254x_is_refused() {
    let h = Harness::new(Nic::new());
    h.config.lock().unwrap().regs.set(2, 2, 0x10d3);
    let e = h.open(testing::config(8, 8)).unwrap_err().to_string();
    assert!(e.contains("8086:10d3 is not an 8254x"), "{e}");
}

// ---- receive ----

#[test]
fn frames_arrive_in_order_and_each_descriptor_gets_a_fresh_buffer() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 8)).unwrap();
    let free = nic.free_buffers();
    let mut out = Vec::with_capacity(8);
    assert_eq!(nic.rx_batch(&mut out, 8).unwrap(), 0);
    assert_eq!(
        h.nic().writes_to(regs::RDT),
        [7],
        "no RDT write for nothing"
    );
    let old: Vec<u64> = (0..3).map(|i| h.rx_buffer(i)).collect();
    let frames: Vec<Vec<u8>> = (0..3).map(|i| frame(i, 60 + 100 * i as usize)).collect();
    for (i, f) in frames.iter().enumerate() {
        h.receive(i, f);
    }
    assert!(nic.rx.has_frame());
    assert_eq!(nic.rx_batch(&mut out, 8).unwrap(), 3);
    for (p, f) in out.iter().zip(&frames) {
        assert_eq!(p.data(), &f[..]);
        assert_eq!(p.offset(), RX_HEADROOM);
    }
    assert_eq!(
        out[0].iova(),
        old[0],
        "the packet is the buffer the NIC wrote"
    );
    assert_eq!(h.nic().writes_to(regs::RDT), [7, 2]);
    for (i, &o) in old.iter().enumerate() {
        assert_ne!(
            h.rx_buffer(i),
            o,
            "descriptor {i} re-armed with a fresh buffer"
        );
        assert_eq!(
            dma::<8>(&h.container, h.rxd(i) + 8),
            [0; 8],
            "status cleared"
        );
    }
    assert!(!nic.rx.has_frame());
    assert_eq!(nic.free_buffers(), free - 3);
    out.clear();
    assert_eq!(nic.free_buffers(), free, "each packet's buffer back once");
    let s = nic.stats();
    assert_eq!((s.rx_errors, s.rx_dropped), (0, 0));
}

#[test]
fn max_limits_a_batch_and_the_next_call_goes_on_where_it_stopped() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 8)).unwrap();
    for i in 0..3 {
        h.receive(i, &frame(i as u8, 64));
    }
    let mut out = Vec::new();
    assert_eq!(nic.rx_batch(&mut out, 2).unwrap(), 2);
    assert_eq!(h.nic().writes_to(regs::RDT), [7, 1]);
    assert_eq!(nic.rx_batch(&mut out, 0).unwrap(), 0);
    assert_eq!(nic.rx_batch(&mut out, 2).unwrap(), 1);
    assert_eq!(out[2].data(), &frame(2, 64)[..]);
    assert_eq!(h.nic().writes_to(regs::RDT), [7, 1, 2]);
}

#[test]
fn the_ring_wraps_and_rdt_follows() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 8)).unwrap();
    let mut out = Vec::new();
    for n in 0..20u8 {
        let i = n as usize % 8;
        h.receive(i, &frame(n, 70));
        assert_eq!(nic.rx_batch(&mut out, 4).unwrap(), 1, "frame {n}");
        assert_eq!(out.pop().unwrap().data(), &frame(n, 70)[..]);
        assert_eq!(*h.nic().writes_to(regs::RDT).last().unwrap(), i as u32);
    }
}

#[test]
fn bad_descriptors_are_counted_and_their_buffers_stay_in_the_ring() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(16, 8)).unwrap();
    let free = nic.free_buffers();
    let before: Vec<u64> = (0..8).map(|i| h.rx_buffer(i)).collect();
    let f = frame(1, 100);
    let good = rxd::DD | rxd::EOP;
    h.write_back(0, &f, 100, good, 0x01); // CRC error
    h.write_back(1, &f, 0, good, 0); // empty
    h.write_back(2, &f, 2047, good, 0); // past the buffer after the headroom
    h.write_back(3, &f, u16::MAX, good, 0);
    h.write_back(4, &f, 100, rxd::DD, 0); // a frame spanning descriptors...
    h.write_back(5, &f, 100, rxd::DD, 0);
    h.write_back(6, &f, 100, good, 0); // ...ends here: dropped whole
    h.write_back(7, &f, 2046, good, 0); // exactly fills the buffer: good
    let mut out = Vec::new();
    assert_eq!(nic.rx_batch(&mut out, 16).unwrap(), 1);
    assert_eq!(out[0].len(), 2046);
    assert_eq!(out[0].iova(), before[7]);
    assert_eq!(nic.stats().rx_errors, 7);
    for (i, &b) in before.iter().enumerate().take(7) {
        assert_eq!(h.rx_buffer(i), b, "descriptor {i} keeps its buffer");
        assert_eq!(dma::<1>(&h.container, h.rxd(i) + rxd::STATUS as u64), [0]);
    }
    assert_eq!(h.nic().writes_to(regs::RDT), [15, 7]);
    drop(out);
    assert_eq!(nic.free_buffers(), free);
}

#[test]
fn a_batch_reads_only_the_descriptors_the_nic_owns() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 8)).unwrap();
    // DD on the descriptor at RDT, which the NIC was never given.
    h.receive(7, &frame(7, 64));
    let mut out = Vec::new();
    assert_eq!(nic.rx_batch(&mut out, 8).unwrap(), 0);
    // DD everywhere: one call takes the 7 the NIC owns, not the 8th.
    for i in 0..8 {
        h.receive(i, &frame(i as u8, 64));
    }
    assert_eq!(nic.rx_batch(&mut out, 100).unwrap(), 7);
    assert_eq!(h.nic().writes_to(regs::RDT), [7, 6]);
    assert!(nic.rx.has_frame(), "descriptor 7 is next, in the next call");
}

#[test]
fn a_nic_that_sets_dd_on_everything_at_once_cannot_keep_the_driver_looping() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 8)).unwrap();
    for i in 0..8 {
        h.write_back(i, &[], 0, rxd::DD | rxd::EOP, 0xff);
    }
    let mut out = Vec::new();
    assert_eq!(nic.rx_batch(&mut out, 1).unwrap(), 0);
    assert_eq!(
        nic.stats().rx_errors,
        7,
        "one pass over the NIC's descriptors"
    );
}

#[test]
fn with_the_pool_empty_frames_are_dropped_and_counted_and_the_ring_stays_full() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 8)).unwrap();
    let pool = nic.pool().clone();
    let mut hoard = Vec::new();
    pool.alloc_batch(pool.capacity(), &mut hoard);
    let old = h.rx_buffer(0);
    h.receive(0, &frame(1, 80));
    h.receive(1, &frame(2, 80));
    let mut out = Vec::new();
    assert_eq!(nic.rx_batch(&mut out, 8).unwrap(), 0);
    assert_eq!(nic.stats().rx_dropped, 2);
    assert_eq!(h.rx_buffer(0), old, "the same buffer, armed again");
    assert_eq!(dma::<1>(&h.container, h.rxd(0) + rxd::STATUS as u64), [0]);
    assert_eq!(h.nic().writes_to(regs::RDT), [7, 1]);
    hoard.clear();
    h.receive(2, &frame(3, 80));
    assert_eq!(nic.rx_batch(&mut out, 8).unwrap(), 1, "recovers");
}

#[test]
fn with_the_pool_running_out_mid_batch_the_frames_after_are_dropped() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 8)).unwrap();
    let pool = nic.pool().clone();
    let mut hoard = Vec::new();
    pool.alloc_batch(pool.capacity(), &mut hoard);
    let spare = hoard.pop().unwrap();
    let spare_iova = spare.iova() + RX_HEADROOM as u64;
    drop(spare);
    let old = [h.rx_buffer(0), h.rx_buffer(1), h.rx_buffer(2)];
    for i in 0..3 {
        h.receive(i, &frame(i as u8 + 1, 80));
    }
    let mut out = Vec::new();
    assert_eq!(nic.rx_batch(&mut out, 8).unwrap(), 1, "one fresh buffer");
    assert_eq!(out[0].data(), &frame(1, 80)[..]);
    assert_eq!(out[0].iova(), old[0], "the frame in the buffer it came in");
    assert_eq!(nic.stats().rx_dropped, 2);
    assert_eq!(h.rx_buffer(0), spare_iova, "the fresh buffer armed");
    assert_eq!(
        [h.rx_buffer(1), h.rx_buffer(2)],
        [old[1], old[2]],
        "the same buffers, armed again"
    );
    assert_eq!(h.nic().writes_to(regs::RDT), [7, 2]);
}

// ---- transmit ----

/// (address, command dword, option dword) of transmit descriptor `i`.
fn tx_descriptor(h: &Harness, i: usize) -> (u64, u32, u32) {
    let d = h.txd(i);
    let c = &h.container;
    let at = |off: usize| d + off as u64;
    (
        dma_u64(c, d),
        dma_u32(c, at(txd::CMD_DWORD)),
        dma_u32(c, at(txd::STATUS)),
    )
}

#[test]
fn frames_go_out_one_descriptor_per_segment_and_buffers_come_back_on_dd() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 8)).unwrap();
    let free = nic.free_buffers();
    let one = packet(&mut nic, &frame(1, 60));
    let one_iova = one.iova();
    let mut two = TxFrame::packet(packet(&mut nic, &frame(2, 14)));
    let body = packet(&mut nic, &frame(3, 100)).into_buffer();
    let body_iova = body.iova();
    two.push(Segment::Slice {
        buf: body,
        offset: 10,
        len: 90,
    })
    .unwrap();
    let mut q = VecDeque::from([TxFrame::packet(one), two]);
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 2);
    assert!(q.is_empty());
    assert_eq!(
        h.nic().writes_to(regs::TDT),
        [0, 3],
        "one TDT write per batch"
    );
    let (a0, c0, o0) = tx_descriptor(&h, 0);
    assert_eq!(
        (a0, c0, o0),
        (one_iova, txd::CMD_EOP | txd::CMD_IFCS | 60, 0),
        "RS only on the batch's last descriptor"
    );
    let (_, c1, _) = tx_descriptor(&h, 1);
    assert_eq!(c1, txd::CMD_IFCS | 14, "no EOP inside a frame");
    let (a2, c2, _) = tx_descriptor(&h, 2);
    assert_eq!(
        (a2, c2),
        (
            body_iova + 10,
            txd::CMD_EOP | txd::CMD_IFCS | txd::CMD_RS | 90
        )
    );
    assert_eq!(nic.tx_pending(), 2);
    assert_eq!(nic.free_buffers(), free - 3);
    assert_eq!(nic.tx_clean(), 0, "nothing sent yet");
    h.sent(0);
    h.sent(1);
    assert_eq!(nic.tx_clean(), 0, "DD where no RS asked for it is not read");
    assert_eq!(nic.free_buffers(), free - 3);
    assert_eq!(nic.tx_pending(), 2);
    h.sent(2);
    assert_eq!(
        nic.tx_clean(),
        2,
        "DD on the RS descriptor: it and all before it are done"
    );
    assert_eq!(nic.tx_clean(), 0, "each frame once");
    assert_eq!(nic.free_buffers(), free);
    assert_eq!(nic.tx_pending(), 0);
}

#[test]
fn sent_bytes_are_counted_by_who_wrote_them_a_copy_shows_as_the_cpus() {
    use vfio_core::dma::{BytesByWriter, Writer};
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 8)).unwrap();
    let (a, b) = (frame(1, 300), frame(2, 200));
    h.receive(0, &a);
    h.receive(1, &b);
    let mut out = Vec::with_capacity(2);
    assert_eq!(nic.rx_batch(&mut out, 2).unwrap(), 2);
    let mut rx = out.drain(..);
    let (first, second) = (rx.next().unwrap(), rx.next().unwrap());
    assert_eq!(
        first.writer(),
        Writer::Device,
        "the NIC wrote a received frame"
    );
    // Zero copy: a CPU-written header, then a slice of the received frame.
    let mut fwd = TxFrame::packet(packet(&mut nic, &frame(3, 14)));
    let shared = first.into_buffer().into_shared();
    let slice = |offset, len| Segment::Shared {
        buf: shared.clone(),
        offset,
        len,
    };
    fwd.push(slice(RX_HEADROOM + 14, 286)).unwrap();
    // A slice reaching one byte before the frame the NIC wrote is the CPU's.
    let mut before = TxFrame::packet(packet(&mut nic, &frame(4, 14)));
    before.push(slice(RX_HEADROOM - 1, 100)).unwrap();
    // The copy a forwarder could have made instead: all the CPU's.
    let copy = TxFrame::packet(packet(&mut nic, second.data()));
    // And the received frame itself, once the CPU has written one byte of it.
    let mut touched = second;
    touched.data_mut()[0] ^= 1;
    assert_eq!(touched.writer(), Writer::Cpu);
    let mut q = VecDeque::from([fwd, before, copy, TxFrame::packet(touched)]);
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 4);
    assert_eq!(
        nic.stats().tx_from,
        BytesByWriter {
            device: 286,
            cpu: 14 + 14 + 100 + 200 + 200
        }
    );
}

#[test]
fn a_full_ring_keeps_the_frames_that_do_not_fit() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 8)).unwrap();
    let mut q: VecDeque<TxFrame> = (0..10)
        .map(|i| TxFrame::packet(packet(&mut nic, &frame(i, 64))))
        .collect();
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 7, "size - 1 descriptors");
    assert_eq!(q.len(), 3);
    assert_eq!(h.nic().writes_to(regs::TDT), [0, 7]);
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 0);
    assert_eq!(
        h.nic().writes_to(regs::TDT),
        [0, 7],
        "no TDT write for nothing"
    );
    // The batch ended on a frame that did not fit: RS went on its last
    // descriptor all the same, and only there.
    for i in 0..7 {
        let rs = tx_descriptor(&h, i).1 & txd::CMD_RS != 0;
        assert_eq!(rs, i == 6, "RS on descriptor {i}");
    }
    for i in 0..3 {
        h.sent(i);
    }
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 0, "no DD where RS was");
    h.sent(6);
    // tx_batch reclaims first; tx_clean reports what it reclaimed.
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 3);
    assert_eq!(nic.tx_clean(), 7);
    assert_eq!(h.nic().writes_to(regs::TDT), [0, 7, 2], "wrapped");
}

#[test]
fn dd_on_descriptors_not_in_flight_or_out_of_order_releases_nothing() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 8)).unwrap();
    // Two batches of two frames: RS on descriptors 1 and 3.
    for batch in 0..2 {
        let mut q: VecDeque<TxFrame> = (0..2)
            .map(|i| TxFrame::packet(packet(&mut nic, &frame(2 * batch + i, 64))))
            .collect();
        nic.tx_batch(&mut q).unwrap();
    }
    let free = nic.free_buffers();
    for i in 4..8 {
        h.sent(i); // never given
    }
    h.sent(0); // no RS there: DD is not asked for and not read
    h.sent(2);
    h.sent(3); // RS, but after one (1) that is not done
    assert_eq!(nic.tx_clean(), 0);
    assert_eq!(nic.free_buffers(), free);
    h.sent(1);
    assert_eq!(nic.tx_clean(), 4);
    assert_eq!(nic.free_buffers(), free + 4);
    assert_eq!(
        nic.tx_clean(),
        0,
        "the stale DD bits past the tail count for nothing"
    );
}

/// Queues `n` 60-byte frames in one `tx_batch`.
fn send_batch(nic: &mut E1000, n: usize) -> usize {
    let mut q: VecDeque<TxFrame> = (0..n)
        .map(|i| TxFrame::packet(packet(nic, &frame(i as u8, 60))))
        .collect();
    let sent = nic.tx_batch(&mut q).unwrap();
    assert!(q.is_empty());
    sent
}

/// The transmit descriptors among `range` whose command has RS.
fn with_rs(h: &Harness, range: std::ops::Range<usize>) -> Vec<usize> {
    range
        .filter(|&i| tx_descriptor(h, i).1 & txd::CMD_RS != 0)
        .collect()
}

#[test]
fn a_batch_of_32_asks_for_one_status_write_back_on_its_last_descriptor() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 64)).unwrap();
    let free = nic.free_buffers();
    assert_eq!(send_batch(&mut nic, 32), 32);
    assert_eq!(with_rs(&h, 0..64), [31], "RS once, on the last descriptor");
    assert_eq!(h.nic().writes_to(regs::TDT), [0, 32], "one doorbell");
    // A NIC that writes DD where RS was not set releases nothing.
    for i in 0..31 {
        h.sent(i);
    }
    assert_eq!(nic.tx_clean(), 0);
    assert_eq!(nic.free_buffers(), free - 32, "no segment released early");
    h.sent(31);
    assert_eq!(nic.tx_clean(), 32, "DD on the last: all 32 are done");
    assert_eq!(nic.free_buffers(), free);
    assert_eq!(nic.tx_pending(), 0);
}

#[test]
fn a_long_batch_asks_for_a_write_back_every_32_descriptors_and_at_its_end() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 64)).unwrap();
    let free = nic.free_buffers();
    assert_eq!(send_batch(&mut nic, 40), 40);
    assert_eq!(with_rs(&h, 0..64), [31, 39]);
    h.sent(31);
    assert_eq!(
        nic.tx_clean(),
        32,
        "the first 32 go back before the batch ends"
    );
    assert_eq!(nic.free_buffers(), free - 8);
    h.sent(39);
    assert_eq!(nic.tx_clean(), 8);
    assert_eq!(nic.free_buffers(), free);
}

/// `tx_fill` places RS as the other paths do, counting a context
/// descriptor left unreported before it (written by a `tx_fill_payload`
/// whose first frame was refused): RS where 32 descriptors went without,
/// and on the batch's end; `tx_clean` counts frames.
#[test]
fn tx_fill_reports_every_32_descriptors_counting_a_context_before_it() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 64)).unwrap();
    let free = nic.free_buffers();
    let fill = |nic: &mut E1000, n| {
        nic.tx_fill(n, &mut |room| {
            room[..60].fill(1);
            60
        })
        .unwrap()
    };
    assert_eq!(fill(&mut nic, 40), 40);
    assert_eq!(with_rs(&h, 0..64), [31, 39]);
    h.sent(31);
    h.sent(39);
    assert_eq!(nic.tx_clean(), 40);
    // A context descriptor (40) whose frame was refused, then 40 frames.
    let payload = nic.pool().alloc().unwrap().into_shared();
    let offload = ChecksumOffload {
        ip_start: 14,
        l4_start: 34,
        tcp: false,
    };
    let none = nic.tx_fill_payload(&payload, Some(offload), 4, &mut |_| (0, 0..0));
    assert_eq!(none.unwrap(), 0);
    drop(payload);
    assert_eq!(fill(&mut nic, 40), 40);
    // Descriptors 40 (context), 41..=63, 0..=16: RS on the 31st frame (at
    // 7, the context making 32) and on the last (16).
    assert_eq!(with_rs(&h, 40..64), [] as [usize; 0]);
    assert_eq!(with_rs(&h, 0..17), [7, 16]);
    h.sent(7);
    assert_eq!(nic.tx_clean(), 31);
    h.sent(16);
    assert_eq!(nic.tx_clean(), 9);
    assert_eq!(nic.free_buffers(), free);
}

/// `tx_fill` batches around the RS threshold: 31 frames get RS only on
/// the last (the batch's end), 32 on the 32nd (the threshold, and the
/// end: once), 33 on the 32nd and the 33rd; `tx_clean` counts each frame
/// once.
#[test]
fn tx_fill_batches_around_the_threshold_report_each_frame_once() {
    for (n, rs) in [(31, vec![30]), (32, vec![31]), (33, vec![31, 32])] {
        let h = Harness::new(Nic::new());
        let mut nic = h.open(testing::config(8, 64)).unwrap();
        let free = nic.free_buffers();
        let sent = nic
            .tx_fill(n, &mut |room| {
                room[..60].fill(2);
                60
            })
            .unwrap();
        assert_eq!(sent, n);
        assert_eq!(with_rs(&h, 0..64), rs, "{n} frames");
        for &i in &rs {
            h.sent(i);
        }
        assert_eq!(nic.tx_clean(), n, "{n} frames");
        assert_eq!((nic.tx_pending(), nic.free_buffers()), (0, free));
    }
}

/// Headers sent alone by `tx_fill_payload` (an empty payload range: a
/// copying sender's frames) take one descriptor each, and RS comes where
/// 32 descriptors, the context included, went without. The room is
/// counted as two descriptors a frame (whether a frame comes alone is
/// known only once it is built): 31 frames fit a 64-descriptor ring.
#[test]
fn fill_payload_headers_alone_take_one_descriptor_each() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 64)).unwrap();
    let free = nic.free_buffers();
    let payload = nic.pool().alloc().unwrap().into_shared();
    let offload = ChecksumOffload {
        ip_start: 14,
        l4_start: 34,
        tcp: false,
    };
    let sent = nic
        .tx_fill_payload(&payload, Some(offload), 40, &mut |room| {
            room[..100].fill(3);
            (100, 0..0)
        })
        .unwrap();
    assert_eq!(sent, 31);
    // The context at 0, the frames at 1..=31: the 32nd descriptor is the last.
    assert_eq!(with_rs(&h, 0..64), [31]);
    for i in 1..=31 {
        let cmd = tx_descriptor(&h, i).1;
        assert_eq!(cmd & (txd::CMD_EOP | 0xffff), txd::CMD_EOP | 100, "{i}");
    }
    drop(payload);
    h.sent(31);
    assert_eq!(nic.tx_clean(), 31);
    assert_eq!(nic.free_buffers(), free, "no share was taken");
}

/// `tx_fill_payload` (two descriptors a frame, a context descriptor
/// first) asks for write-backs on a frame's end once 32 descriptors went
/// without, and at the batch's end; its payload buffer is held at the
/// batch's last descriptor, so DD there releases it, with every header.
#[test]
fn fill_payload_reports_on_frame_ends_and_holds_the_payload_to_the_last() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 64)).unwrap();
    let free = nic.free_buffers();
    let mut buf = nic.pool().alloc().unwrap();
    buf.as_mut_slice()[..600].fill(7);
    let payload = buf.into_shared();
    let offload = ChecksumOffload {
        ip_start: 14,
        l4_start: 34,
        tcp: false,
    };
    let mut k = 0;
    let sent = nic
        .tx_fill_payload(&payload, Some(offload), 20, &mut |room| {
            room[..42].fill(k);
            k += 1;
            (42, 0..600)
        })
        .unwrap();
    assert_eq!(sent, 20);
    // Descriptor 0 is the context; frame f at 1 + 2f (header), 2 + 2f.
    assert_eq!(with_rs(&h, 0..64), [32, 40], "a frame's end, then the last");
    let (addr, cmd, _) = tx_descriptor(&h, 2);
    assert_eq!(addr, payload.iova());
    assert_eq!(cmd & 0xffff, 600);
    assert_ne!(cmd & txd::CMD_EOP, 0);
    assert_eq!(tx_descriptor(&h, 1).1 & (txd::CMD_EOP | 0xffff), 42);
    assert_eq!(h.nic().writes_to(regs::TDT), [0, 41], "one doorbell");
    drop(payload);
    h.sent(32);
    assert_eq!(nic.tx_clean(), 16, "16 frames end by descriptor 32");
    assert_eq!(
        nic.free_buffers(),
        free - 5,
        "4 headers and the payload out"
    );
    h.sent(40);
    assert_eq!(nic.tx_clean(), 4);
    assert_eq!(nic.free_buffers(), free, "the payload back with the last");
}

/// The single-buffer path asks for write-backs as `tx_batch` does, and
/// `tx_clean` counts frames, not descriptors, across both paths (a
/// context descriptor ends no frame).
#[test]
fn tx_packets_reports_every_32_descriptors_and_clean_counts_frames() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 64)).unwrap();
    let free = nic.free_buffers();
    let mut q: Vec<Packet> = (0..40).map(|i| packet(&mut nic, &frame(i, 60))).collect();
    assert_eq!(nic.tx_packets(&mut q).unwrap(), 40);
    assert!(q.is_empty());
    assert_eq!(with_rs(&h, 0..64), [31, 39]);
    let (_, cmd, _) = tx_descriptor(&h, 39);
    assert_eq!(cmd, txd::CMD_IFCS | txd::CMD_EOP | txd::CMD_RS | 60);
    h.sent(31);
    assert_eq!(nic.tx_clean(), 32);
    // A frame with a checksum offload (context + data), then two packets.
    let mut f = TxFrame::packet(packet(&mut nic, &frame(40, 80)));
    f.offload = Some(ChecksumOffload {
        ip_start: 14,
        l4_start: 34,
        tcp: false,
    });
    assert_eq!(nic.tx_batch(&mut VecDeque::from([f])).unwrap(), 1);
    let mut q: Vec<Packet> = (0..2).map(|i| packet(&mut nic, &frame(i, 60))).collect();
    assert_eq!(nic.tx_packets(&mut q).unwrap(), 2);
    assert_eq!(
        with_rs(&h, 40..64),
        [41, 43],
        "the frame's end, the batch's end"
    );
    h.sent(39);
    assert_eq!(nic.tx_clean(), 8);
    h.sent(41);
    h.sent(43);
    assert_eq!(
        nic.tx_clean(),
        3,
        "one frame and two packets, not four descriptors"
    );
    assert_eq!(nic.tx_clean(), 0);
    assert_eq!(nic.free_buffers(), free);
}

#[test]
fn steady_state_transmit_and_receive_read_no_register() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 64)).unwrap();
    assert!(nic.link().up);
    let (reads, status_reads) = {
        let n = h.nic();
        (n.reads, n.status_reads)
    };
    let mut rx = Vec::with_capacity(8);
    let mut next_rx = 0;
    // As many batches as trust the link state link() just read.
    const BATCHES: usize = crate::link::CHECK_EVERY as usize;
    for b in 0..BATCHES {
        assert_eq!(send_batch(&mut nic, 32), 32);
        h.sent((b * 32 + 31) % 64); // as the NIC: the RS descriptor is done
        assert_eq!(nic.tx_clean(), 32);
        h.receive(next_rx, &frame(b as u8, 60));
        next_rx = (next_rx + 1) % 8;
        assert_eq!(nic.rx_batch(&mut rx, 8).unwrap(), 1);
        rx.clear();
    }
    let n = h.nic();
    assert_eq!(n.status_reads - status_reads, 0, "no STATUS read");
    assert_eq!(n.reads - reads, 0, "no register read at all");
    assert_eq!(
        n.writes_to(regs::TDT).len(),
        1 + BATCHES,
        "one doorbell a batch"
    );
    drop(n);
    // The next batch looks at the link again: once.
    assert_eq!(send_batch(&mut nic, 32), 32);
    assert_eq!(h.nic().status_reads - status_reads, 1);
}

/// Issue 30: with the link up, transmit reads STATUS at most once per
/// `link_poll`, however many batches go out (the clock is looked at every
/// CHECK_EVERY calls).
#[test]
fn transmit_reads_status_at_most_once_per_link_poll() {
    let h = Harness::new(Nic::new());
    let config = testing::config(8, 64).link_poll(std::time::Duration::from_secs(3600));
    let mut nic = h.open(config).unwrap();
    assert!(nic.link().up);
    let status_reads = h.nic().status_reads;
    for b in 0..4 * crate::link::CHECK_EVERY as usize {
        assert_eq!(send_batch(&mut nic, 1), 1);
        h.sent(b % 64);
        assert_eq!(nic.tx_clean(), 1);
    }
    assert_eq!(h.nic().status_reads, status_reads, "no STATUS read");
}

#[test]
fn transmit_notices_a_link_that_went_down_within_link_refresh_batches() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 64)).unwrap();
    assert_eq!(send_batch(&mut nic, 1), 1);
    h.nic().regs.set(regs::STATUS, 4, 0);
    for _ in 0..crate::link::CHECK_EVERY {
        assert_eq!(nic.tx_batch(&mut VecDeque::new()).unwrap(), 0, "trusted");
    }
    let mut q = VecDeque::from([TxFrame::packet(packet(&mut nic, &frame(1, 60)))]);
    assert!(matches!(nic.tx_batch(&mut q), Err(Error::LinkDown { .. })));
    assert_eq!(q.len(), 1, "the frame stays with the caller");
    assert_eq!(h.nic().writes_to(regs::TDT), [0, 1]);
    // While down, every call looks again: the link coming back is seen at once.
    let reads = h.nic().status_reads;
    assert!(matches!(nic.tx_batch(&mut q), Err(Error::LinkDown { .. })));
    assert_eq!(h.nic().status_reads, reads + 1);
    h.nic().regs.set(regs::STATUS, 4, status::LU as u64);
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 1);
    // And link() always reads STATUS, so transmit refuses right after it
    // reported the link down.
    h.nic().regs.set(regs::STATUS, 4, 0);
    assert!(!nic.link().up);
    let mut q = VecDeque::from([TxFrame::packet(packet(&mut nic, &frame(2, 60)))]);
    assert!(matches!(nic.tx_batch(&mut q), Err(Error::LinkDown { .. })));
}

#[test]
fn a_full_ring_makes_transmit_look_at_the_link_again() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 8)).unwrap();
    let mut q: VecDeque<TxFrame> = (0..8)
        .map(|i| TxFrame::packet(packet(&mut nic, &frame(i, 60))))
        .collect();
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 7);
    // The NIC lost its link and sends nothing more.
    h.nic().regs.set(regs::STATUS, 4, 0);
    let reads = h.nic().status_reads;
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 0, "full, link trusted");
    assert_eq!(h.nic().status_reads, reads);
    assert!(matches!(nic.tx_batch(&mut q), Err(Error::LinkDown { .. })));
    assert_eq!(h.nic().status_reads, reads + 1);
}

#[test]
fn checksum_offload_writes_a_context_descriptor_only_when_it_changes() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 8)).unwrap();
    let udp = ChecksumOffload {
        ip_start: 14,
        l4_start: 34,
        tcp: false,
    };
    let mut q: VecDeque<TxFrame> = (0..3)
        .map(|i| {
            let mut f = TxFrame::packet(packet(&mut nic, &frame(i, 80)));
            f.offload = Some(ChecksumOffload { tcp: i == 2, ..udp });
            f
        })
        .collect();
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 3);
    assert_eq!(
        h.nic().writes_to(regs::TDT),
        [0, 5],
        "context, data, data, context, data"
    );
    let (lower, cmd, _) = tx_descriptor(&h, 0);
    assert_eq!(lower, 14 | 24 << 8 | 33 << 16 | 34 << 32 | 40 << 40);
    assert_eq!(cmd, txd::DTYP_CONTEXT | txd::CMD_DEXT | txd::TUCMD_IP);
    let (_, cmd, opts) = tx_descriptor(&h, 1);
    let data = txd::CMD_DEXT | txd::DTYP_DATA | txd::CMD_EOP | txd::CMD_IFCS;
    assert_eq!(cmd, data | 80);
    let (_, cmd, _) = tx_descriptor(&h, 4);
    assert_eq!(cmd, data | txd::CMD_RS | 80, "RS on the last descriptor");
    assert_eq!(opts, ((txd::POPTS_IXSM | txd::POPTS_TXSM) as u32) << 8);
    let (lower, cmd, _) = tx_descriptor(&h, 3);
    assert_eq!(lower >> 40 & 0xff, 34 + 16, "TCP checksum field");
    assert_eq!(cmd & txd::TUCMD_TCP, txd::TUCMD_TCP);
    assert_eq!(nic.tx_pending(), 3, "context descriptors are no frames");
    for i in 0..5 {
        h.sent(i);
    }
    assert_eq!(nic.tx_clean(), 3);
}

#[test]
fn a_frame_whose_context_descriptor_does_not_fit_waits_and_a_context_frees_nothing() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 8)).unwrap();
    let mut plain: VecDeque<TxFrame> = (0..6)
        .map(|i| TxFrame::packet(packet(&mut nic, &frame(i, 64))))
        .collect();
    assert_eq!(nic.tx_batch(&mut plain).unwrap(), 6);
    let mut f = TxFrame::packet(packet(&mut nic, &frame(9, 80)));
    f.offload = Some(ChecksumOffload {
        ip_start: 14,
        l4_start: 34,
        tcp: false,
    });
    let mut q = VecDeque::from([f]);
    assert_eq!(
        nic.tx_batch(&mut q).unwrap(),
        0,
        "1 descriptor free, 2 needed"
    );
    assert_eq!(q.len(), 1);
    assert_eq!(h.nic().writes_to(regs::TDT), [0, 6]);
    h.sent(5);
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 1);
    assert_eq!(
        h.nic().writes_to(regs::TDT),
        [0, 6, 0],
        "context at 6, data at 7"
    );

    // Writing a context descriptor releases none of the frames in flight.
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 8)).unwrap();
    let mut f = TxFrame::packet(packet(&mut nic, &frame(9, 80)));
    f.offload = Some(ChecksumOffload {
        ip_start: 14,
        l4_start: 34,
        tcp: false,
    });
    let mut q = VecDeque::from([TxFrame::packet(packet(&mut nic, &frame(1, 64))), f]);
    let free = nic.free_buffers();
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 2);
    assert_eq!(nic.tx_pending(), 2);
    assert_eq!(nic.free_buffers(), free);
    for i in 0..3 {
        h.sent(i);
    }
    assert_eq!(nic.tx_clean(), 2);
    assert_eq!(nic.free_buffers(), free + 2);
}

#[test]
fn malformed_frames_are_refused_after_the_good_ones_before_them_went_out() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 8)).unwrap();
    let pool = nic.pool().clone();
    let mut past_end = TxFrame::packet(packet(&mut nic, &frame(0, 14)));
    let other = packet(&mut nic, &[0; 60]).into_buffer();
    past_end
        .push(Segment::Slice {
            offset: other.capacity() - 10,
            buf: other,
            len: 100,
        })
        .unwrap();
    let mut q = VecDeque::from([
        TxFrame::packet(packet(&mut nic, &frame(1, 60))),
        past_end,
        TxFrame::packet(packet(&mut nic, &frame(2, 1515))),
    ]);
    let e = nic.tx_batch(&mut q).unwrap_err().to_string();
    assert!(e.contains("past the end of its buffer"), "{e}");
    assert_eq!(q.len(), 1, "the bad frame was taken off, the next kept");
    assert_eq!(h.nic().writes_to(regs::TDT), [0, 1]);
    let e = nic.tx_batch(&mut q).unwrap_err().to_string();
    assert!(e.contains("1515 bytes"), "{e}");
    assert_eq!(
        nic.free_buffers(),
        pool.capacity() - 8 - 1,
        "refused frames' buffers back"
    );
}

#[test]
fn while_the_link_is_down_transmit_keeps_the_frames() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 8)).unwrap();
    h.nic().regs.set(regs::STATUS, 4, 0);
    let mut q = VecDeque::from([TxFrame::packet(packet(&mut nic, &frame(0, 60)))]);
    assert!(matches!(nic.tx_batch(&mut q), Err(Error::LinkDown { .. })));
    assert_eq!(q.len(), 1);
    assert_eq!(h.nic().writes_to(regs::TDT), [0]);
    assert!(!nic.link().up);
    h.nic().regs.set(
        regs::STATUS,
        4,
        (status::LU | 1 << status::SPEED_SHIFT) as u64,
    );
    let link = nic.link();
    assert_eq!(
        (link.up, link.speed_mbps, link.full_duplex),
        (true, 100, false)
    );
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 1);
}

// ---- stopping ----

/// Opens, receives and sends a little, so buffers are out in both rings.
fn busy(h: &Harness) -> E1000 {
    let mut nic = h.open(testing::config(8, 8)).unwrap();
    let mut q: VecDeque<TxFrame> = (0..2)
        .map(|i| TxFrame::packet(packet(&mut nic, &frame(i, 64))))
        .collect();
    nic.tx_batch(&mut q).unwrap();
    nic
}

#[test]
fn drop_stops_receive_and_transmit_resets_and_only_then_frees_the_rings() {
    let h = Harness::new(Nic::new());
    let nic = busy(&h);
    let pool = nic.pool().clone();
    let start = h.nic().writes.len();
    assert_eq!(h.container.mapping_count(), 3, "pool and two rings");
    drop(nic);
    let n = h.nic();
    let rctl_off = n.writes[start..].iter().position(|w| *w == (regs::RCTL, 0));
    let tctl_off = n.writes[start..].iter().position(|w| *w == (regs::TCTL, 0));
    let reset = n
        .write_index(regs::CTRL, ctrl::RST, start)
        .map(|i| i - start);
    assert!(rctl_off.unwrap() < reset.unwrap() && tctl_off.unwrap() < reset.unwrap());
    drop(n);
    assert_eq!(
        h.command() & MASTER,
        MASTER,
        "a proven stop needs no fallback"
    );
    assert_eq!(pool.free_count(), pool.capacity(), "every buffer back once");
    drop(pool);
    assert_eq!(h.container.mapping_count(), 0);
}

#[test]
fn an_error_after_the_rings_were_given_goes_through_the_same_stop() {
    let h = Harness::new(Nic::new());
    let mut config = testing::config(8, 8);
    config.interrupts = true; // a model has no interrupts: fails after RCTL.EN
    let e = h.open(config).unwrap_err().to_string();
    assert!(e.contains("no INTx interrupts"), "{e}");
    let n = h.nic();
    let on = n
        .write_index(regs::RCTL, rctl::EN, 0)
        .expect("receive was enabled");
    let reset = n
        .write_index(regs::CTRL, ctrl::RST, on)
        .expect("then a reset");
    assert!(n.writes[on..reset].contains(&(regs::RCTL, 0)));
    drop(n);
    assert_eq!(h.container.mapping_count(), 0, "freed only after the stop");
}

#[test]
fn drop_turns_bus_mastering_off_when_the_reset_never_completes() {
    let h = Harness::new(Nic::new());
    let nic = busy(&h);
    let pool = nic.pool().clone();
    h.nic().reset_clears = false;
    drop(nic);
    assert_eq!(
        h.command() & (MEMORY | MASTER),
        MEMORY,
        "read from the model's config space"
    );
    assert_eq!(pool.free_count(), pool.capacity());
}

#[test]
fn drop_does_not_trust_registers_while_memory_decoding_is_off() {
    let h = Harness::new(Nic::new());
    let nic = busy(&h);
    h.config
        .lock()
        .unwrap()
        .regs
        .set(testing::COMMAND, 2, MASTER);
    drop(nic);
    assert_eq!(h.command() & MASTER, 0);
}

#[test]
fn drop_of_a_removed_nic_turns_bus_mastering_off_at_once() {
    let h = Harness::new(Nic::new());
    let nic = busy(&h);
    h.nic().gone = true;
    let reads = h.nic().ctrl_reads;
    drop(nic);
    assert_eq!(h.command() & MASTER, 0);
    assert_eq!(
        h.nic().ctrl_reads - reads,
        2,
        "one to set RST, one that reads all ones"
    );
}

#[test]
fn drop_leaks_the_rings_when_the_nic_can_be_stopped_by_no_means() {
    let h = Harness::new(Nic::new());
    let nic = busy(&h);
    let pool = nic.pool().clone();
    h.nic().reset_clears = false;
    h.config.lock().unwrap().keep_master = true;
    let before = vfio_core::dma::leaked();
    drop(nic);
    assert!(
        vfio_core::dma::leaked() >= before + 10 + 2,
        "8 receive buffers, 2 frames, 2 rings"
    );
    assert_eq!(
        pool.free_count(),
        pool.capacity() - 10,
        "never back in the pool"
    );
    drop(pool);
    assert_eq!(
        h.container.mapping_count(),
        3,
        "the pool and both rings stay mapped"
    );
}

// ---- registers the driver programs, counters, slow hardware ----

#[test]
fn receive_transmit_and_link_are_programmed_as_the_manual_says() {
    let mut model = Nic::new();
    // Left over from before: link reset, PHY reset and inverted loss of signal.
    model.regs.set(
        regs::CTRL,
        4,
        (ctrl::LRST | ctrl::PHY_RST | ctrl::ILOS | ctrl::FD) as u64,
    );
    let h = Harness::new(model);
    let nic = h.open(testing::config(8, 8)).unwrap();
    assert_eq!(nic.driver_name(), "e1000");
    let n = h.nic();
    assert_eq!(
        n.reg(regs::CTRL),
        ctrl::FD | ctrl::SLU | ctrl::ASDE,
        "link set up, resets and ILOS cleared, the rest kept"
    );
    assert_eq!(
        n.reg(regs::RCTL),
        rctl::EN | rctl::BAM | rctl::SECRC | rctl::BSIZE_2048
    );
    assert_eq!(
        n.reg(regs::TCTL),
        tctl::EN | tctl::PSP | tctl::CT_15 | tctl::COLD_FD
    );
    assert_eq!(n.reg(regs::TIPG), 10 | 8 << 10 | 6 << 20);
    assert_eq!(
        n.writes_to(regs::MTA + 4 * 127),
        [0],
        "multicast table cleared"
    );
    drop(n);
    drop(nic);
    let h = Harness::new(Nic::new());
    let mut config = testing::config(8, 8);
    config.jumbo = true;
    let nic = h.open(config).unwrap();
    let r = h.nic().reg(regs::RCTL);
    assert_eq!(
        r,
        rctl::EN | rctl::BAM | rctl::SECRC | rctl::BSIZE_16384 | rctl::LPE
    );
    assert_eq!(
        nic.pool().buf_size(),
        20480,
        "16 KiB and the headroom, in 4 KiB pages"
    );
}

#[test]
fn promiscuous_mode_sets_and_clears_only_its_bits() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 8)).unwrap();
    let base = h.nic().reg(regs::RCTL);
    nic.set_promiscuous(true);
    assert_eq!(h.nic().reg(regs::RCTL), base | rctl::UPE | rctl::MPE);
    nic.set_promiscuous(true);
    assert_eq!(h.nic().reg(regs::RCTL), base | rctl::UPE | rctl::MPE);
    nic.set_promiscuous(false);
    assert_eq!(h.nic().reg(regs::RCTL), base);
}

#[test]
fn hardware_counters_are_added_once_and_those_from_before_bring_up_are_not() {
    let set = |h: &Harness, r: usize, v: u32| h.nic().regs.set(r, 4, v as u64);
    let mut model = Nic::new();
    model.regs.set(regs::stats::GPRC, 4, 1000); // from an earlier user
    let h = Harness::new(model);
    let mut nic = h.open(testing::config(8, 8)).unwrap();
    assert_eq!(nic.stats(), crate::Stats::default());
    use regs::stats as st;
    for (r, v) in [
        (st::GPRC, 5),
        (st::GPTC, 3),
        (st::GORCL, 0x10),
        (st::GORCH, 1),
        (st::GOTCL, 0x20),
        (st::GOTCH, 2),
        (st::MPC, 2),
        (st::RNBC, 1),
        (st::CRCERRS, 4),
    ] {
        set(&h, r, v);
    }
    let s = nic.stats();
    assert_eq!((s.rx_packets, s.tx_packets), (5, 3));
    assert_eq!((s.rx_bytes, s.tx_bytes), (1 << 32 | 0x10, 2 << 32 | 0x20));
    assert_eq!((s.rx_dropped, s.rx_errors), (3, 4));
    assert_eq!(nic.stats(), s, "cleared when read: not added twice");
    set(&h, st::GPRC, 1);
    assert_eq!(nic.stats().rx_packets, 6);
}

#[test]
fn the_link_speed_and_duplex_come_from_status() {
    let h = Harness::new(Nic::new());
    let nic = h.open(testing::config(8, 8)).unwrap();
    for (bits, speed) in [(0, 10), (1, 100), (2, 1000), (3, 1000)] {
        let s = status::LU | status::FD | bits << status::SPEED_SHIFT;
        h.nic().regs.set(regs::STATUS, 4, s as u64);
        let link = nic.link();
        assert_eq!(
            (link.up, link.speed_mbps, link.full_duplex),
            (true, speed, true)
        );
    }
}

#[test]
fn slow_hardware_is_waited_for_reset_eeprom_and_link() {
    let mut model = Nic::new();
    model.slow = 5;
    model.link_after = 5;
    let h = Harness::new(model);
    let nic = h.open(testing::config(8, 8)).unwrap();
    assert_eq!(nic.mac(), MAC);
    assert!(h.nic().status_reads > 5, "bring-up waited for the link");
    assert!(nic.link().up);
    // And Drop waits for a slow reset too: a proven stop, bus mastering stays.
    drop(nic);
    assert_eq!(h.command() & MASTER, MASTER);
}

#[test]
fn a_link_that_stays_down_is_no_bring_up_error() {
    let mut model = Nic::new();
    model.link_after = usize::MAX;
    let h = Harness::new(model);
    let nic = h.open(testing::config(8, 8)).unwrap();
    assert!(!nic.link().up);
}

#[test]
fn a_reset_that_leaves_receive_enabled_is_no_proof_of_a_stop() {
    let mut model = Nic::new();
    model.receive_survives_reset = true;
    let h = Harness::new(model);
    let nic = h.open(testing::config(8, 8)).unwrap();
    // RCTL.EN survives the reset in Drop: bus mastering must go off.
    drop(nic);
    assert_eq!(h.command() & MASTER, 0);
}

#[test]
fn polling_mode_never_sleeps() {
    let h = Harness::new(Nic::new());
    let mut nic = h.open(testing::config(8, 8)).unwrap();
    h.receive(0, &frame(1, 60));
    let t = std::time::Instant::now();
    assert!(!nic.wait_rx(std::time::Duration::from_secs(5)).unwrap());
    assert!(t.elapsed() < std::time::Duration::from_secs(1));
}
