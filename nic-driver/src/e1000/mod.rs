//! Intel 8254x (e1000): QEMU's `e1000` (82540EM), and the 82545EM and 82544GC
//! it also offers. Bring-up follows the 8254x SDM chapter 14 "General
//! Initialization and Reset Operation".
//!
//! What the NIC reports is checked before use: the MAC (an EEPROM read that
//! does not complete, or an address that is zero or a group address, is an
//! error), and every receive descriptor (see `rx.rs`).
//!
//! **Stopping.** No buffer goes back to the pool and no ring is unmapped
//! while the NIC may still reach it: `Drop` turns receive and transmit off,
//! resets the NIC and proves it stopped (CTRL.RST cleared within its bound,
//! RCTL.EN and TCTL.EN read back clear); failing that it turns bus mastering
//! off and reads it back; failing that it leaks the rings and their buffers
//! on purpose (see [Stopping](crate#stopping)). [`E1000::new`] builds
//! the driver before the rings are given to the NIC, so its errors after
//! that go through the same `Drop`.
//!
//! **No register read on the data path** (issue 30). Each register read is
//! a PCIe round trip, so [`NetDevice::rx_batch`], [`NetDevice::tx_batch`]
//! and [`NetDevice::tx_clean`] read none: completions come from descriptor
//! write-backs in memory (transmit: RS only once per batch, see `tx.rs`),
//! and one TDT (RDT) write hands each batch over. The link state
//! `tx_batch` checks is the one STATUS last showed, read again at most
//! once per [`Config::link_poll`](crate::Config::link_poll) while the link
//! is up, at once after a full ring or an interrupt whose cause (ICR)
//! includes a link status change (LSC), on every call while it is down,
//! and on every [`NetDevice::link`] call (see [`crate::link`]).
//!
//! **Link changes.** The NIC latches a link status change in ICR.LSC
//! until ICR is read. [`NetDevice::link_news`] reads ICR (and STATUS only
//! when LSC is set or the link was down), so a link that went down and
//! came back between two calls is reported, which STATUS alone cannot
//! show. Bring-up clears ICR after the link came up: that is no news.
//!
//! ```no_run
//! use std::collections::VecDeque;
//! use nic_driver::{e1000::E1000, Config, NetDevice, TxFrame};
//!
//! # fn main() -> nic_driver::Result<()> {
//! let container = vfio_core::vfio::Container::new()?;
//! let mut nic = E1000::open(&container, "0000:00:04.0".parse()?, Config::default())?;
//! let mut rx = Vec::with_capacity(32);
//! nic.rx_batch(&mut rx, 32)?;
//! let mut tx: VecDeque<TxFrame> = rx.drain(..).map(TxFrame::packet).collect();
//! nic.tx_batch(&mut tx)?; // echo what came in
//! # Ok(()) }
//! ```

// Public but hidden: tests/ (guest-check) programs a real e1000's
// registers directly with these names (to show the IOMMU blocks a stray
// descriptor). Users drive the NIC through `E1000`.
#[doc(hidden)]
pub mod regs;
mod rx;
mod tx;

// Public but hidden: the fuzz target `e1000_rx_descriptor` feeds it any
// descriptor values.
#[doc(hidden)]
pub use rx::check_descriptor;
pub use rx::RX_HEADROOM;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use vfio_core::dma::{BufferCache, BufferPool, SharedBuffer};
use vfio_core::mmio::Mmio;
use vfio_core::pci::PciAddress;
use vfio_core::vfio::{Container, Device, Interrupts, IrqKind};

use self::regs::{ctrl, eerd, icr, rah, rctl, stats as st, status, tctl};
use self::rx::RxRing;
use self::tx::TxRing;
use crate::link::LinkWatch;
use crate::{
    ChecksumOffload, Config, Error, FillPayload, Link, LinkNews, NetDevice, Packet, Result, Stats,
    TxFrame,
};

/// PCI IDs this driver takes: 82540EM, 82545EM (copper), 82544GC (copper).
pub const DEVICE_IDS: &[u16] = &[0x100e, 0x100f, 0x100c];
/// PCI vendor ID (Intel).
pub const VENDOR: u16 = 0x8086;
/// The driver's name ([`NetDevice::driver_name`], [`crate::DRIVERS`], logs).
pub const NAME: &str = "e1000";

/// An Intel 8254x NIC, brought up, with one receive and one transmit ring
/// in DMA memory and a buffer pool (see [`Config`] for the sizes). Drive it
/// through [`NetDevice`].
///
/// Each receive descriptor holds a pool buffer the NIC may write until
/// [`NetDevice::rx_batch`] takes it out; each transmitted segment is held
/// until the NIC wrote its descriptor back. `Drop` stops the NIC before
/// the rings give their buffers back (see the [module docs](self)).
#[derive(Debug)]
pub struct E1000 {
    // Field order is drop order: the rings give their buffers back after
    // `Drop` has stopped the NIC, and before the pool and the device go.
    rx: RxRing,
    tx: TxRing,
    /// The pool's buffers this NIC recycles without the pool's lock: the
    /// transmit ring's cleaned buffers, the receive ring's refills,
    /// [`NetDevice::alloc_packet`].
    cache: BufferCache,
    irqs: Option<Interrupts>,
    pool: Arc<BufferPool>,
    bar: Mmio,
    device: Device,
    mac: [u8; 6],
    stats: Stats,
    /// Frames reclaimed inside `tx_batch`, reported by the next `tx_clean`.
    tx_reclaimed: usize,
    /// The link as STATUS last showed it, and when `tx_batch` may trust
    /// it without a read ([`crate::link`]); `link()` refreshes it.
    link: LinkWatch,
    /// A link status change (ICR.LSC) read and not yet reported by
    /// [`NetDevice::link_news`].
    link_changed: bool,
}

impl E1000 {
    /// Opens the NIC at `addr` (bound to vfio-pci) in `container` and brings
    /// it up, as [`E1000::new`].
    ///
    /// # Errors
    ///
    /// [`Error::Vfio`] when the device cannot be opened; then those of
    /// [`E1000::new`].
    pub fn open(container: &Arc<Container>, addr: PciAddress, config: Config) -> Result<E1000> {
        E1000::new(container.open_device(addr)?, config)
    }

    /// Brings up an opened device: reset, MAC, link, rings, receive and transmit.
    ///
    /// Nothing is given to the NIC before the driver value exists: any error
    /// after the rings were handed over drops it, and `Drop` stops the NIC
    /// before their memory goes (see [Stopping](crate#stopping)). A link
    /// that stays down for 3 s is not an error (transmit reports it).
    ///
    /// # Errors
    ///
    /// - [`Error::Device`]: not an 8254x this driver knows
    ///   ([`DEVICE_IDS`]); the reset did not complete within 1 s or CTRL
    ///   reads all ones (bus mastering is then turned off); no valid MAC
    ///   address (an EEPROM read that does not complete, all zeros, a group
    ///   address).
    /// - [`Error::InvalidConfig`]: ring sizes that are not multiples of 8
    ///   from 8 to 4096.
    /// - [`Error::Vfio`]: the PCI command register, mapping BAR0, allocating
    ///   the pool or the rings, or enabling the interrupt.
    pub fn new(device: Device, config: Config) -> Result<E1000> {
        let addr = device.address();
        let (vendor, id) = (device.vendor_id()?, device.device_id()?);
        if vendor != VENDOR || !DEVICE_IDS.contains(&id) {
            return Err(Error::Device {
                addr,
                what: format!(
                    "{vendor:04x}:{id:04x} is not an 8254x this driver knows ({DEVICE_IDS:04x?})"
                ),
            });
        }
        if config.rx_ring < 8
            || config.tx_ring < 8
            || config.rx_ring > 4096
            || config.tx_ring > 4096
            || !config.rx_ring.is_multiple_of(8)
            || !config.tx_ring.is_multiple_of(8)
        {
            return Err(Error::InvalidConfig(format!(
                "ring sizes must be multiples of 8 from 8 to 4096 (asked rx {}, tx {})",
                config.rx_ring, config.tx_ring
            )));
        }
        device.enable_bus_master()?;
        let bar = device.map_bar(0)?;
        if let Err(e) = reset(&bar, addr) {
            // None of our memory is in its hands, but what it was left doing
            // is unknown: keep it from starting DMA.
            if let Err(off) = device.disable_bus_master() {
                log::error!("{addr}: after a failed reset, bus mastering stays on: {off}");
            }
            return Err(e);
        }
        let mac = read_mac(&bar, addr)?;
        set_link_up(&bar);
        for i in 0..128 {
            bar.write32(regs::MTA + 4 * i, 0);
        }
        let container = Arc::clone(device.container());
        // Room for the headroom and the longest frame the NIC takes: 1522
        // bytes without LPE; with LPE up to the 16384-byte BSIZE.
        let buf_size = if config.jumbo {
            16384 + rx::RX_HEADROOM
        } else {
            2048
        };
        let pool = BufferPool::new(
            &container,
            buf_size,
            config.rx_ring * 2 + config.tx_ring + config.spare_buffers,
        )?;
        let rx = RxRing::new(&container, &pool, config.rx_ring)?;
        let max_frame = if config.jumbo { 9014 } else { 1514 };
        let tx = TxRing::new(&container, config.tx_ring, max_frame)?;
        // From here on `Drop` stops the NIC before any of this memory goes.
        let mut nic = E1000 {
            rx,
            tx,
            cache: BufferCache::new(&pool, crate::cache_size(&pool)),
            irqs: None,
            pool,
            bar,
            device,
            mac,
            stats: Stats::default(),
            tx_reclaimed: 0,
            link: LinkWatch::new(config.link_poll),
            link_changed: false,
        };
        nic.start(config)?;
        Ok(nic)
    }

    /// Gives the rings to the NIC and turns receive and transmit on.
    fn start(&mut self, config: Config) -> Result<()> {
        let bar = &self.bar;
        self.rx.start(bar);
        self.tx.start(bar);
        let buffers = if config.jumbo {
            rctl::BSIZE_16384 | rctl::LPE
        } else {
            rctl::BSIZE_2048
        };
        bar.write32(regs::RCTL, rctl::EN | rctl::BAM | rctl::SECRC | buffers);
        bar.write32(regs::TIPG, 10 | 8 << 10 | 6 << 20);
        bar.write32(
            regs::TCTL,
            tctl::EN | tctl::PSP | tctl::CT_15 | tctl::COLD_FD,
        );
        wait_for_link(bar);
        // The link coming up is no news for link_news: causes cleared (a
        // change after this read stays latched).
        bar.read32(regs::ICR);
        if config.interrupts {
            self.irqs = Some(enable_interrupts(&self.device, bar)?);
        }
        self.read_counters();
        self.stats = Stats::default();
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

    /// Adds the hardware counters (cleared when read) to the software ones.
    fn read_counters(&mut self) {
        let b = &self.bar;
        let r64 = |lo, hi| b.read32(lo) as u64 | (b.read32(hi) as u64) << 32;
        self.stats.rx_packets += b.read32(st::GPRC) as u64;
        self.stats.tx_packets += b.read32(st::GPTC) as u64;
        self.stats.rx_bytes += r64(st::GORCL, st::GORCH);
        self.stats.tx_bytes += r64(st::GOTCL, st::GOTCH);
        self.stats.rx_dropped += b.read32(st::MPC) as u64 + b.read32(st::RNBC) as u64;
        self.stats.rx_errors += b.read32(st::CRCERRS) as u64;
    }
}

/// The descriptor after `i` in a ring of `size`: a compare, not a `%`.
#[inline]
fn ring_next(i: usize, size: usize) -> usize {
    if i + 1 == size {
        0
    } else {
        i + 1
    }
}

/// How long CTRL.RST may take to clear (the manual asks for about 1 us;
/// QEMU clears it at once). Short in unit tests, whose models may never clear it.
const RESET_TIMEOUT: Duration = if cfg!(test) {
    Duration::from_millis(20)
} else {
    Duration::from_secs(1)
};
/// How long an EEPROM word read may take.
const EEPROM_TIMEOUT: Duration = Duration::from_millis(100);
/// How long bring-up waits for the link.
const LINK_TIMEOUT: Duration = if cfg!(test) {
    Duration::from_millis(20)
} else {
    Duration::from_secs(3)
};

/// Device reset (CTRL.RST), interrupts masked before and after; an error
/// when RST does not clear within [`RESET_TIMEOUT`] or CTRL reads all ones
/// (the device is gone).
fn reset(bar: &Mmio, addr: PciAddress) -> Result<()> {
    bar.write32(regs::IMC, u32::MAX);
    bar.write32(regs::CTRL, bar.read32(regs::CTRL) | ctrl::RST);
    let mut c = 0;
    let done = vfio_core::poll::try_until(RESET_TIMEOUT, || {
        c = bar.read32(regs::CTRL);
        if c == u32::MAX {
            return Err(Error::Device {
                addr,
                what: "CTRL reads all ones: the NIC no longer answers (removed, or powered off)"
                    .into(),
            });
        }
        Ok((c & ctrl::RST == 0).then_some(()))
    })?;
    done.ok_or_else(|| Error::Device {
        addr,
        what: format!(
            "CTRL.RST did not clear within {RESET_TIMEOUT:?} of a reset (CTRL {c:#010x})"
        ),
    })?;
    bar.write32(regs::IMC, u32::MAX);
    bar.read32(regs::ICR);
    Ok(())
}

/// Stops the NIC's DMA and proves it: receive and transmit off, a reset that
/// completes, and RCTL.EN and TCTL.EN read back clear.
fn stop(bar: &Mmio, addr: PciAddress) -> Result<()> {
    bar.write32(regs::RCTL, 0);
    bar.write32(regs::TCTL, 0);
    reset(bar, addr)?;
    let (r, t) = (bar.read32(regs::RCTL), bar.read32(regs::TCTL));
    if r & rctl::EN != 0 || t & tctl::EN != 0 {
        return Err(Error::Device {
            addr,
            what: format!(
                "receive or transmit still enabled after a reset (RCTL {r:#010x}, TCTL {t:#010x})"
            ),
        });
    }
    Ok(())
}

/// The MAC from receive address 0, or from the EEPROM (words 0-2) when it is
/// not valid; an error when an EEPROM read does not complete or the address
/// is not one a NIC may have.
fn read_mac(bar: &Mmio, addr: PciAddress) -> Result<[u8; 6]> {
    let fail = |what: String| Error::Device { addr, what };
    let (ral, rah) = (bar.read32(regs::RAL0), bar.read32(regs::RAH0));
    if rah & rah::AV != 0 {
        let (l, h) = (ral.to_le_bytes(), rah.to_le_bytes());
        return crate::check_mac([l[0], l[1], l[2], l[3], h[0], h[1]]).map_err(fail);
    }
    let mut mac = [0u8; 6];
    for word in 0..3u32 {
        bar.write32(regs::EERD, eerd::START | word << eerd::ADDR_SHIFT);
        let mut v = 0;
        let done = vfio_core::poll::try_until(EEPROM_TIMEOUT, || {
            v = bar.read32(regs::EERD);
            Ok::<_, Error>((v & eerd::DONE != 0).then_some(v))
        })?;
        let Some(v) = done else {
            return Err(fail(format!(
                "the EEPROM read of MAC word {word} did not complete within {EEPROM_TIMEOUT:?} \
                 (EERD {v:#010x}, and receive address 0 is not valid): no MAC address"
            )));
        };
        let bytes = ((v >> eerd::DATA_SHIFT) as u16).to_le_bytes();
        mac[2 * word as usize..2 * word as usize + 2].copy_from_slice(&bytes);
    }
    let mac = crate::check_mac(mac).map_err(fail)?;
    bar.write32(
        regs::RAL0,
        u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
    );
    bar.write32(
        regs::RAH0,
        u16::from_le_bytes([mac[4], mac[5]]) as u32 | rah::AV,
    );
    Ok(mac)
}

/// CTRL.SLU with auto speed detection; link reset, PHY reset and ILOS cleared.
fn set_link_up(bar: &Mmio) {
    let c = bar.read32(regs::CTRL);
    bar.write32(
        regs::CTRL,
        (c | ctrl::SLU | ctrl::ASDE) & !(ctrl::LRST | ctrl::PHY_RST | ctrl::ILOS),
    );
}

/// Waits (at most [`LINK_TIMEOUT`]) for auto-negotiation to bring the link up; a link that
/// stays down is not an error (transmit reports it).
fn wait_for_link(bar: &Mmio) {
    let up = || (bar.read32(regs::STATUS) & status::LU != 0).then_some(());
    // A timeout is the link staying down: not an error here.
    let _ = vfio_core::poll::until("link up", LINK_TIMEOUT, up);
}

/// INTx to an eventfd; receive and link-change causes unmasked.
fn enable_interrupts(device: &Device, bar: &Mmio) -> Result<Interrupts> {
    let irqs = device.enable_irqs(IrqKind::Intx, 1)?;
    bar.write32(regs::IMS, icr::RXT0 | icr::RXO | icr::RXDMT0 | icr::LSC);
    Ok(irqs)
}

impl E1000 {
    /// Reads (and so acknowledges) ICR and keeps a link status change for
    /// [`NetDevice::link_news`]; the causes read.
    fn read_icr(&mut self) -> u32 {
        let icr = self.bar.read32(regs::ICR);
        if icr & icr::LSC != 0 {
            // The link changed: the next tx_batch reads STATUS too.
            self.link.doubt();
            self.link_changed = true;
        }
        icr
    }

    /// [`E1000::read_icr`], then INTx unmasked (interrupt mode).
    fn acknowledge(&mut self) -> Result<u32> {
        let icr = self.read_icr();
        if let Some(irqs) = &self.irqs {
            irqs.unmask()?;
        }
        Ok(icr)
    }

    /// What every transmit call does first: releases what the NIC sent,
    /// and refuses while the link is down (up and trusted: no STATUS read).
    fn tx_ready(&mut self) -> Result<()> {
        self.tx_reclaimed += self.tx.clean(&mut self.cache);
        let link = self.link.trusted().unwrap_or_else(|| self.link());
        if !link.up {
            return Err(Error::LinkDown {
                addr: self.address(),
            });
        }
        Ok(())
    }

    /// After a transmit call: one that took nothing while frames were
    /// `waiting` found the ring full, as a transmitter that stopped leaves
    /// it (one does when its link is lost): the next call looks at the link
    /// again.
    fn full_ring_check(&self, sent: &Result<usize>, waiting: bool) {
        if matches!(sent, Ok(0)) && waiting {
            self.link.doubt();
        }
    }
}

impl NetDevice for E1000 {
    fn driver_name(&self) -> &'static str {
        NAME
    }

    fn rx_batch(&mut self, out: &mut Vec<Packet>, max: usize) -> Result<usize> {
        let before = out.len();
        let counts = self.rx.receive(&self.bar, &mut self.cache, out, max);
        self.stats.rx_errors += counts.errors;
        self.stats.rx_dropped += counts.no_buffer;
        Ok(out.len() - before)
    }

    fn tx_batch(&mut self, frames: &mut VecDeque<TxFrame>) -> Result<usize> {
        self.tx_ready()?;
        let sent = self.tx.send(&self.bar, self.device.address(), frames);
        self.full_ring_check(&sent, !frames.is_empty());
        sent
    }

    fn tx_packets(&mut self, packets: &mut Vec<Packet>) -> Result<usize> {
        self.tx_ready()?;
        let sent = self
            .tx
            .send_packets(&self.bar, self.device.address(), packets);
        self.full_ring_check(&sent, !packets.is_empty());
        sent
    }

    fn tx_fill(&mut self, n: usize, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> Result<usize> {
        self.tx_ready()?;
        let sent = self.tx.fill(&self.bar, &mut self.cache, n, fill);
        self.full_ring_check(&sent, n > 0);
        sent
    }

    fn tx_fill_payload(
        &mut self,
        payload: &SharedBuffer,
        offload: Option<ChecksumOffload>,
        n: usize,
        fill: &mut FillPayload<'_>,
    ) -> Result<usize> {
        self.tx_ready()?;
        let (bar, addr) = (&self.bar, self.device.address());
        let sent = self
            .tx
            .fill_payload(bar, addr, &mut self.cache, payload, offload, n, fill);
        self.full_ring_check(&sent, n > 0);
        sent
    }

    fn tx_clean(&mut self) -> usize {
        self.tx.clean(&mut self.cache) + std::mem::take(&mut self.tx_reclaimed)
    }

    fn tx_pending(&self) -> usize {
        self.tx.pending()
    }

    fn pool(&self) -> &Arc<BufferPool> {
        &self.pool
    }

    fn free_buffers(&self) -> usize {
        self.pool.free_count() + self.cache.len()
    }

    fn alloc_packet(&mut self) -> Option<Packet> {
        self.cache.alloc().map(|b| Packet::new(b, 0))
    }

    fn alloc_packets(&mut self, n: usize, out: &mut Vec<Packet>) -> usize {
        crate::alloc_packets(&mut self.cache, n, 0, out)
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Reads STATUS now, and refreshes the link state `tx_batch` checks
    /// (see the [module docs](self)).
    fn link(&self) -> Link {
        let s = self.bar.read32(regs::STATUS);
        let speed_mbps = match (s >> status::SPEED_SHIFT) & 3 {
            0 => 10,
            1 => 100,
            _ => 1000,
        };
        let link = Link {
            up: s & status::LU != 0,
            speed_mbps,
            full_duplex: s & status::FD != 0,
        };
        self.link.store(link);
        link
    }

    /// One register read, ICR, while the link was up and did not change
    /// (STATUS too when it did, or is down). `went_down` comes from
    /// ICR.LSC, which the NIC latches until ICR is read: a link that went
    /// down and came back between two calls is reported. In interrupt mode
    /// reading ICR acknowledges the causes the next
    /// [`NetDevice::wait_rx`] would have read; it still sees the frames
    /// (it looks at the ring first), and unmasks INTx.
    fn link_news(&mut self) -> Result<LinkNews> {
        self.read_icr();
        let went_down = std::mem::take(&mut self.link_changed);
        let known = self.link.last();
        let link = if went_down || !known.up {
            self.link()
        } else {
            known
        };
        Ok(LinkNews {
            link,
            went_down: went_down || !link.up,
        })
    }

    fn set_promiscuous(&mut self, on: bool) {
        let r = self.bar.read32(regs::RCTL);
        let bits = rctl::UPE | rctl::MPE;
        self.bar
            .write32(regs::RCTL, if on { r | bits } else { r & !bits });
    }

    fn stats(&mut self) -> Stats {
        self.read_counters();
        self.stats.tx_from = self.tx.from;
        self.stats
    }

    fn wait_rx(&mut self, timeout: Duration) -> Result<bool> {
        let Some(irqs) = &self.irqs else {
            return Ok(false);
        };
        if self.rx.has_frame() {
            return Ok(true);
        }
        if !irqs.wait(0, timeout)?.fired() {
            return Ok(self.rx.has_frame());
        }
        // INTx: reading ICR acknowledges every cause (the line drops), and
        // only then may VFIO unmask it; a wake-up with ICR 0 was another
        // device's on a shared line.
        let icr = self.acknowledge()?;
        Ok(icr != 0 || self.rx.has_frame())
    }
}

impl Drop for E1000 {
    /// Stops the NIC's DMA before the rings hand their buffers back (see
    /// [Stopping](crate#stopping)): receive and transmit off and a completed reset,
    /// or bus mastering off; failing both, the rings' memory is leaked.
    fn drop(&mut self) {
        let (bar, addr) = (&self.bar, self.device.address());
        let (rx, tx) = (&mut self.rx, &mut self.tx);
        self.device.stop_dma(
            NAME,
            || stop(bar, addr),
            || {
                rx.leak();
                tx.leak();
            },
        );
    }
}

#[cfg(test)]
mod tests;
