//! An Intel 82540EM (e1000) in software, from the PCI/PCI-X Family of
//! Gigabit Ethernet Controllers Software Developer's Manual (8254x SDM): the
//! registers a driver programs (section 13.4), the receive and transmit
//! descriptor rings with their write-back (sections 3.2 and 3.3: legacy,
//! TCP/IP context and TCP/IP data descriptors, IP and TCP/UDP checksum
//! insertion), address filtering, the statistics (13.7, cleared when read),
//! the EEPROM read register, interrupt causes, and link state.
//!
//! The wire is two queues the test holds: frames for the NIC to receive
//! ([`E1000Model::deliver`]) and frames it transmitted
//! ([`E1000Model::transmitted`]), the bytes as it read them by DMA with the
//! checksums it was asked to insert, without padding or FCS.
//!
//! **Timing.** Synchronous by default, so a test is one thread and
//! deterministic: a write to TDT transmits every descriptor up to it within
//! that write; a received frame is written into the ring by `deliver`, or,
//! when the ring has no free descriptor, by the RDT write that gives one.
//! [`E1000Model::spawn`] runs the DMA engine on a thread instead.
//!
//! Not modelled: TCP segmentation, VLAN insertion and stripping, receive
//! checksum offload (every received descriptor reports IXSM, "ignore
//! checksum indication"), flow control, the PHY's registers. Interrupts
//! are INTx, as the 8254x has: a cause set in ICR and unmasked in IMS
//! raises the device's INTx vector, as VFIO signals its eventfd.
//!
//! ```
//! use vfio_models::e1000::{E1000Config, E1000Model};
//! let container = vfio_core::vfio::Container::unbacked();
//! let (model, device) = E1000Model::new(&container, E1000Config::default());
//! assert_eq!(device.device_id().unwrap(), 0x100e);
//! model.lock().unwrap().deliver(vec![0xff; 60]); // receiver off: dropped
//! assert_eq!(model.lock().unwrap().dropped, 1);
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use vfio_core::mmio::RegisterModel;
use vfio_core::pci::PciAddress;
use vfio_core::vfio::{Container, Device, IrqLine};

use crate::common::{insert_checksum, Dma, Engine, ModelThread, PciConfig, Wedge};

/// Bytes of BAR0 (the 82540EM's 128 KiB memory BAR, 4.1).
pub const BAR_LEN: usize = 0x20000;

// Registers (table 13-2), byte offsets in BAR0.
const CTRL: usize = 0x0000; // 13.4.1
const STATUS: usize = 0x0008; // 13.4.2
const EECD: usize = 0x0010; // 13.4.3
const EERD: usize = 0x0014; // 13.4.4
const ICR: usize = 0x00c0; // 13.4.17
const ICS: usize = 0x00c8; // 13.4.19
const IMS: usize = 0x00d0; // 13.4.20
const IMC: usize = 0x00d8; // 13.4.21
const RCTL: usize = 0x0100; // 13.4.22
const TCTL: usize = 0x0400; // 13.4.33
const RDBAL: usize = 0x2800; // 13.4.27-31, RDBAH after it
const RDLEN: usize = 0x2808;
const RDH: usize = 0x2810;
const RDT: usize = 0x2818;
const TDBAL: usize = 0x3800; // 13.4.38-42, TDBAH after it
const TDLEN: usize = 0x3808;
const TDH: usize = 0x3810;
const TDT: usize = 0x3818;
const MTA: usize = 0x5200; // 13.4.60, 128 entries
const RAL0: usize = 0x5400; // 13.4.62-63, 16 pairs
const RAH0: usize = 0x5404;

// Statistics (13.7), all cleared when read; the 64-bit ones when their
// high half is read.
const STATS: std::ops::Range<usize> = 0x4000..0x4100;
const CRCERRS: usize = 0x4000;
const MPC: usize = 0x4010;
const GPRC: usize = 0x4074;
const GPTC: usize = 0x4080;
const GORCL: usize = 0x4088;
const GOTCL: usize = 0x4090;
const RNBC: usize = 0x40a0;
const RUC: usize = 0x40a4;
const ROC: usize = 0x40ac;
const TORL: usize = 0x40c0;
const TOTL: usize = 0x40c8;
const TPR: usize = 0x40d0;
const TPT: usize = 0x40d4;
const PAIRS: [usize; 4] = [GORCL, GOTCL, TORL, TOTL];

// CTRL (table 13-3), STATUS (13-5).
const CTRL_SLU: u32 = 1 << 6;
const CTRL_RST: u32 = 1 << 26;
const STATUS_FD: u32 = 1 << 0;
const STATUS_LU: u32 = 1 << 1;
const STATUS_SPEED_1000: u32 = 2 << 6;
// EECD: EEPROM present (table 13-7). EERD (13.4.4, 82540EM layout).
const EECD_PRES: u32 = 1 << 8;
const EERD_START: u32 = 1 << 0;
const EERD_DONE: u32 = 1 << 4;
// Interrupt causes (table 13-69).
const TXDW: u32 = 1 << 0;
const TXQE: u32 = 1 << 1;
const LSC: u32 = 1 << 2;
const RXDMT0: u32 = 1 << 4;
const RXO: u32 = 1 << 6;
const RXT0: u32 = 1 << 7;
const INT_ASSERTED: u32 = 1 << 31;
// RCTL (table 13-67).
const RCTL_EN: u32 = 1 << 1;
const RCTL_SBP: u32 = 1 << 2;
const RCTL_UPE: u32 = 1 << 3;
const RCTL_MPE: u32 = 1 << 4;
const RCTL_LPE: u32 = 1 << 5;
const RCTL_BAM: u32 = 1 << 15;
const RCTL_BSEX: u32 = 1 << 25;
const RCTL_SECRC: u32 = 1 << 26;
// TCTL (table 13-76).
const TCTL_EN: u32 = 1 << 1;
const TCTL_PSP: u32 = 1 << 3;
// RAH: Address Valid.
const RAH_AV: u32 = 1 << 31;

// Receive descriptor (3.2.3): status and error bits.
const RXD_DD: u8 = 1 << 0;
const RXD_EOP: u8 = 1 << 1;
const RXD_IXSM: u8 = 1 << 2;
// Transmit descriptors (3.3): command byte (byte 11) bits shared by the
// legacy CMD and the data DCMD, and the status DD (byte 12).
const TXD_EOP: u8 = 1 << 0;
const TXD_IFCS: u8 = 1 << 1;
const TXD_IC: u8 = 1 << 2; // legacy only
const TXD_RS: u8 = 1 << 3;
const TXD_DEXT: u8 = 1 << 5;
const TXD_DD: u8 = 1 << 0;
// POPTS of a data descriptor (3.3.7.3).
const POPTS_IXSM: u8 = 1 << 0;
const POPTS_TXSM: u8 = 1 << 1;

/// The longest packet the transmit FIFO takes (3.3.3: 16288 bytes).
const MAX_TX_PACKET: usize = 16288;
/// The longest frames received, FCS included (1522 with a VLAN tag; with
/// RCTL.LPE, 16384), and the shortest (64).
const MAX_FRAME: usize = 1522;
const MAX_LONG_FRAME: usize = 16384;
const MIN_FRAME: usize = 64;
const FCS: usize = 4;

/// What the NIC reports and how it behaves.
#[derive(Clone, Debug)]
pub struct E1000Config {
    /// PCI device ID: 0x100e (82540EM, QEMU's `e1000`), 0x100f or 0x100c.
    pub device_id: u16,
    /// The MAC in EEPROM words 0-2.
    pub mac: [u8; 6],
    /// Receive address 0 is loaded from the EEPROM at reset, valid, as the
    /// hardware does; false leaves it invalid, so a driver must read the
    /// EEPROM through EERD.
    pub mac_in_ral: bool,
    /// The cable is connected and auto-negotiation completes (STATUS.LU once
    /// CTRL.SLU is set), at 1000 Mb/s full duplex. Change it later with
    /// [`E1000Model::set_link`].
    pub link_up: bool,
    /// Bytes of received frames the receive FIFO holds while the ring has no
    /// free descriptor (the 82540EM's default 48 KiB); a frame that does
    /// not fit is missed (MPC).
    pub rx_fifo: usize,
    /// Keep each transmitted frame's bytes ([`E1000Model::transmitted`]).
    /// False (for benchmarks): descriptors are consumed and written back,
    /// counters advance, but no frame data is read.
    pub record: bool,
    /// While the link is down, consume transmit descriptors (DD written
    /// back) and lose their frames, as QEMU's e1000 does (its network
    /// backend drops what a NIC with its link down sends); false: they wait
    /// in the ring, as on the 82540EM.
    pub lose_while_down: bool,
}

impl Default for E1000Config {
    fn default() -> Self {
        E1000Config {
            device_id: 0x100e,
            mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
            mac_in_ral: true,
            link_up: true,
            rx_fifo: 48 << 10,
            record: true,
            lose_while_down: false,
        }
    }
}

/// A change to how the next received frame is written back: what a broken
/// or hostile NIC does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxFault {
    /// Its last descriptor reports this length instead of the bytes written.
    Length(u16),
    /// Its last descriptor reports these ERRORS bits (3.2.3.2: CE 0x01, SE
    /// 0x02, SEQ 0x04, CXE 0x10, TCPE 0x20, IPE 0x40, RXE 0x80).
    Errors(u8),
    /// Its descriptors are written back without EOP.
    NoEop,
}

/// The transmit TCP/IP context (3.3.6): checksum start, offset and end
/// (inclusive; 0 to the end of the packet) for the IP and the TCP/UDP sum.
#[derive(Clone, Copy, Debug, Default)]
struct Context {
    ipcss: u8,
    ipcso: u8,
    ipcse: u16,
    tucss: u8,
    tucso: u8,
    tucse: u16,
}

/// The packet being gathered from transmit descriptors until EOP.
#[derive(Debug, Default)]
struct Gather {
    bytes: Vec<u8>,
    len: usize,
    /// POPTS of its first data descriptor (3.3.7.3), if it has one.
    popts: Option<u8>,
    /// Longer than the FIFO takes: dropped at EOP.
    too_long: bool,
}

/// The NIC. Tests keep an `Arc<Mutex<E1000Model>>` to deliver frames, take
/// the transmitted ones and set faults; the driver reaches it through BAR0.
#[derive(Debug)]
pub struct E1000Model {
    /// What it reports; `record` may be changed between frames.
    pub config: E1000Config,
    dma: Dma,
    regs: Vec<u32>,
    eeprom: [u16; 64],
    /// Frames on the wire not yet in the ring (the receive FIFO), and their bytes.
    fifo: VecDeque<Vec<u8>>,
    fifo_bytes: usize,
    tx_log: Vec<Vec<u8>>,
    gather: Gather,
    context: Context,
    /// Changes to the next received frames, in order.
    pub rx_faults: VecDeque<RxFault>,
    /// Consume no transmit descriptor (a NIC whose transmitter hangs) until
    /// cleared and [`E1000Model::poll`] or a TDT write runs.
    pub tx_stalled: bool,
    /// Frames the NIC sent (counted in bench mode too).
    pub sent: u64,
    /// The cable is pulled (the link goes down, LSC) once this many frames
    /// were sent: a link lost in the middle of a transmit batch, at a
    /// frame a test chooses rather than when a thread gets to it.
    pub pull_cable_at: Option<u64>,
    /// 32-bit reads of STATUS so far: how often the driver looked at the
    /// link.
    pub link_reads: u64,
    /// Frames it did not take: delivered while the receiver was off or the
    /// link down, refused by the address filter or the length checks, or
    /// dropped at a reset.
    pub dropped: u64,
    /// Device resets (CTRL.RST).
    pub resets: u32,
    /// A register interface that stops working ([`Wedge`]); none by default.
    pub wedge: Wedge,
    /// Ring and transmit values no correct driver writes (a tail past the
    /// ring, an unknown descriptor type), seen and ignored.
    pub driver_errors: u64,
    threaded: bool,
    /// The INTx line, raised when a cause is set in ICR and IMS.
    intx: IrqLine,
}

impl E1000Model {
    /// A NIC in `container` (made by `Container::unbacked`), and the device
    /// a driver opens: 8086:`device_id`, class 0x020000 (Ethernet), BAR0 of
    /// [`BAR_LEN`] bytes.
    pub fn new(
        container: &Arc<Container>,
        config: E1000Config,
    ) -> (Arc<Mutex<E1000Model>>, Device) {
        let pci = Arc::new(Mutex::new(
            PciConfig::new(0x8086, config.device_id, 0x03, 0x02_0000, &[]).subsystem(0x001e),
        ));
        let mut eeprom = [0u16; 64];
        for (i, w) in eeprom.iter_mut().take(3).enumerate() {
            *w = u16::from_le_bytes([config.mac[2 * i], config.mac[2 * i + 1]]);
        }
        // Word 0x3f makes the sum of words 0..=0x3f 0xbaba (the EEPROM
        // map, chapter 5).
        let sum = eeprom[..63].iter().fold(0u16, |a, w| a.wrapping_add(*w));
        eeprom[63] = 0xbabau16.wrapping_sub(sum);
        let mut nic = E1000Model {
            config,
            dma: Dma::new(container, &pci),
            regs: vec![0; BAR_LEN / 4],
            eeprom,
            fifo: VecDeque::new(),
            fifo_bytes: 0,
            tx_log: Vec::new(),
            gather: Gather::default(),
            context: Context::default(),
            rx_faults: VecDeque::new(),
            tx_stalled: false,
            sent: 0,
            pull_cable_at: None,
            link_reads: 0,
            dropped: 0,
            resets: 0,
            wedge: Wedge::None,
            driver_errors: 0,
            threaded: false,
            intx: IrqLine::default(),
        };
        nic.reset();
        nic.resets = 0;
        let model = Arc::new(Mutex::new(nic));
        let addr: PciAddress = "0000:00:04.0".parse().expect("a valid address");
        let bar: vfio_core::mmio::SharedModel = model.clone();
        let mut device = Device::from_models(container, addr, (256, pci), vec![(0, BAR_LEN, bar)])
            .expect("an unbacked container");
        let line = model.lock().expect("a fresh model").intx.clone();
        device.connect_intx(line).expect("a model device");
        (model, device)
    }

    /// Runs the NIC's DMA engine on a thread (see [`ModelThread`]): register
    /// writes no longer transmit or receive by themselves.
    pub fn spawn(model: &Arc<Mutex<E1000Model>>) -> ModelThread {
        crate::common::spawn(model)
    }

    /// A frame arrives from the wire (without its FCS): filtered by address
    /// and length as the receiver is set up, then written into the ring, or
    /// held in the receive FIFO while the ring has no free descriptor.
    pub fn deliver(&mut self, frame: Vec<u8>) {
        if !self.accepts(&frame) {
            self.dropped += 1;
            return;
        }
        let bytes = frame.len() + FCS;
        if self.fifo_bytes + bytes > self.config.rx_fifo {
            self.stat(MPC, 1);
            self.cause(RXO);
            self.dropped += 1;
            return;
        }
        // 13.7.33: frames that arrive while the ring has no free
        // descriptor are counted (and still received if the FIFO has room).
        if !self.fifo.is_empty() || self.rx_free() == 0 {
            self.stat(RNBC, 1);
        }
        self.fifo_bytes += bytes;
        self.fifo.push_back(frame);
        if !self.threaded {
            self.receive();
        }
    }

    /// Frames received from the wire and not yet written into the ring.
    pub fn queued(&self) -> usize {
        self.fifo.len()
    }

    /// Takes the frames transmitted so far, oldest first.
    pub fn transmitted(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.tx_log)
    }

    /// Connects or disconnects the cable: STATUS.LU follows, and ICR.LSC is
    /// set. While the link is down nothing is sent (descriptors wait) and
    /// nothing is received.
    pub fn set_link(&mut self, up: bool) {
        if up != self.config.link_up {
            self.config.link_up = up;
            self.cause(LSC);
        }
        if up && !self.threaded {
            self.poll();
        }
    }

    /// Transmits what the driver made available and receives what the FIFO
    /// holds, now (what the thread of [`E1000Model::spawn`] does).
    pub fn poll(&mut self) {
        self.transmit();
        self.receive();
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

    /// The register at `offset`, as stored (no side effect of a read).
    pub fn reg(&self, offset: usize) -> u32 {
        self.regs[offset / 4]
    }

    /// A hostile NIC: every receive descriptor of the ring, owned by the
    /// NIC or not, is written back done (DD, EOP) with `len`, its buffer
    /// untouched.
    pub fn rx_done_everywhere(&mut self, len: u16) {
        let (base, size) = self.ring(RDBAL, RDLEN);
        if !self.dma.begin() {
            return;
        }
        for i in 0..size {
            let mut wb = [0u8; 8];
            wb[0..2].copy_from_slice(&len.to_le_bytes());
            wb[4] = RXD_DD | RXD_EOP;
            self.dma.write(base + 16 * i as u64 + 8, &wb);
        }
    }

    /// A hostile NIC: DD is written into every transmit descriptor of the
    /// ring, those not given to it and those it has not sent included.
    pub fn tx_done_everywhere(&mut self) {
        let (base, size) = self.ring(TDBAL, TDLEN);
        if !self.dma.begin() {
            return;
        }
        for i in 0..size {
            self.dma.write(base + 16 * i as u64 + 12, &[TXD_DD]);
        }
    }

    fn r(&self, offset: usize) -> u32 {
        self.regs[offset / 4]
    }

    fn set(&mut self, offset: usize, v: u32) {
        self.regs[offset / 4] = v;
    }

    /// Sets interrupt causes (ICR), and raises the line if that asserts it.
    fn cause(&mut self, bits: u32) {
        let icr = self.r(ICR) | bits;
        self.asserting(|m| m.set(ICR, icr));
    }

    /// Runs `change` (of ICR or IMS), and raises the INTx line when it
    /// asserts the interrupt (a cause set and unmasked, none before): the
    /// line is level-triggered, so a cause set while it is asserted raises
    /// nothing more until the driver reads ICR.
    fn asserting(&mut self, change: impl FnOnce(&mut Self)) {
        let asserted = |m: &Self| m.r(ICR) & m.r(IMS) != 0;
        let before = asserted(self);
        change(self);
        if !before && asserted(self) {
            self.intx.raise();
        }
    }

    /// Adds to a statistics register, sticking at its maximum (13.7); a
    /// 64-bit pair carries into its high half.
    fn stat(&mut self, offset: usize, n: u64) {
        if PAIRS.contains(&offset) {
            let v = (self.r(offset) as u64 | (self.r(offset + 4) as u64) << 32).saturating_add(n);
            self.set(offset, v as u32);
            self.set(offset + 4, (v >> 32) as u32);
        } else {
            let v = (self.r(offset) as u64 + n).min(u32::MAX as u64);
            self.set(offset, v as u32);
        }
    }

    /// Device reset (CTRL.RST, chapter 14): every register to its initial value,
    /// the rings, the FIFO and the transmit state dropped; receive address
    /// 0 reloaded from the EEPROM.
    fn reset(&mut self) {
        self.regs.fill(0);
        self.set(EECD, EECD_PRES);
        if self.config.mac_in_ral {
            let m = self.config.mac;
            self.set(RAL0, u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
            self.set(RAH0, u16::from_le_bytes([m[4], m[5]]) as u32 | RAH_AV);
        }
        self.dropped += self.fifo.len() as u64;
        self.fifo.clear();
        self.fifo_bytes = 0;
        self.gather = Gather::default();
        self.context = Context::default();
        self.resets += 1;
    }

    fn status(&self) -> u32 {
        let up = self.config.link_up && self.r(CTRL) & CTRL_SLU != 0;
        if up {
            STATUS_FD | STATUS_LU | STATUS_SPEED_1000
        } else {
            STATUS_FD
        }
    }

    fn link_up(&self) -> bool {
        self.status() & STATUS_LU != 0
    }

    /// A ring's base IOVA (16-byte aligned: the low bits are ignored) and
    /// its descriptors (the length's bits 19:7).
    fn ring(&self, bal: usize, len: usize) -> (u64, usize) {
        let base = (self.r(bal) & !0xf) as u64 | (self.r(bal + 4) as u64) << 32;
        (base, (self.r(len) & 0xf_ff80) as usize / 16)
    }

    // ---- receive (3.2) ----

    /// The address filter (13.4.22, 13.4.60-63) and the length checks a
    /// frame must pass to be received (table 13-67: LPE, SBP).
    fn accepts(&mut self, frame: &[u8]) -> bool {
        let rctl = self.r(RCTL);
        if rctl & RCTL_EN == 0 || !self.link_up() || frame.len() < 6 {
            return false;
        }
        let with_fcs = frame.len() + FCS;
        let max = if rctl & RCTL_LPE != 0 {
            MAX_LONG_FRAME
        } else {
            MAX_FRAME
        };
        if with_fcs > max {
            self.stat(ROC, 1);
            return false;
        }
        if with_fcs < MIN_FRAME && rctl & RCTL_SBP == 0 {
            self.stat(RUC, 1);
            return false;
        }
        let dst: [u8; 6] = frame[..6].try_into().expect("6 bytes");
        if dst == [0xff; 6] && rctl & RCTL_BAM != 0 {
            return true;
        }
        if dst[0] & 1 == 1 {
            return rctl & RCTL_MPE != 0 || self.multicast_hash(dst);
        }
        let ours = (0..16).any(|i| {
            let (lo, hi) = (self.r(RAL0 + 8 * i), self.r(RAH0 + 8 * i));
            let (l, h) = (lo.to_le_bytes(), hi.to_le_bytes());
            hi & RAH_AV != 0 && dst == [l[0], l[1], l[2], l[3], h[0], h[1]]
        });
        ours || rctl & RCTL_UPE != 0
    }

    /// The Multicast Table Array bit for `dst`: 12 bits of the address that
    /// RCTL.MO (bits 13:12) selects (13.4.60).
    fn multicast_hash(&self, dst: [u8; 6]) -> bool {
        let (b4, b5) = (dst[4] as u32, dst[5] as u32);
        let hash = match (self.r(RCTL) >> 12) & 3 {
            0 => b4 >> 4 | b5 << 4,
            1 => b4 >> 3 | b5 << 5,
            2 => b4 >> 2 | b5 << 6,
            _ => b4 | b5 << 8,
        } & 0xfff;
        self.r(MTA + 4 * (hash as usize >> 5)) & 1 << (hash & 31) != 0
    }

    /// Receive descriptors the NIC owns now (RDH up to RDT).
    fn rx_free(&self) -> usize {
        let (_, size) = self.ring(RDBAL, RDLEN);
        let (head, tail) = (self.r(RDH) as usize, self.r(RDT) as usize);
        if size == 0 || head >= size || tail >= size {
            return 0;
        }
        (tail + size - head) % size
    }

    /// Receive buffer size from RCTL.BSIZE and BSEX (table 13-67).
    fn buffer_size(&self) -> usize {
        let rctl = self.r(RCTL);
        let bsize = (rctl >> 16) & 3;
        if rctl & RCTL_BSEX != 0 && bsize != 0 {
            [0, 16384, 8192, 4096][bsize as usize]
        } else {
            [2048, 1024, 512, 256][bsize as usize]
        }
    }

    /// Writes FIFO frames into the ring while it has room.
    fn receive(&mut self) {
        if self.r(RCTL) & RCTL_EN == 0 || self.fifo.is_empty() || !self.dma.begin() {
            return;
        }
        while let Some(frame) = self.fifo.pop_front() {
            if !self.write_frame(&frame) {
                self.fifo.push_front(frame);
                break;
            }
            self.fifo_bytes -= frame.len() + FCS;
        }
    }

    /// One frame into as many descriptors as its bytes need (3.2.4), each
    /// buffer written before its descriptor; false when the ring has not
    /// enough free descriptors (RDH..RDT) for it.
    fn write_frame(&mut self, frame: &[u8]) -> bool {
        let (base, size) = self.ring(RDBAL, RDLEN);
        let (head, tail) = (self.r(RDH) as usize, self.r(RDT) as usize);
        if size == 0 || head >= size || tail >= size {
            self.driver_errors += (size != 0) as u64;
            return false;
        }
        let free = self.rx_free();
        let mut data = frame.to_vec();
        if self.r(RCTL) & RCTL_SECRC == 0 {
            data.extend_from_slice(&crc32(frame).to_le_bytes());
        }
        let bsize = self.buffer_size();
        let needed = data.len().div_ceil(bsize);
        if free < needed {
            return false;
        }
        let fault = self.rx_faults.pop_front();
        let mut at = head;
        for (n, chunk) in data.chunks(bsize).enumerate() {
            let desc = base + 16 * at as u64;
            let mut addr = [0u8; 8];
            if self.dma.read(desc, &mut addr) {
                self.dma.write(u64::from_le_bytes(addr), chunk);
            }
            let last = n + 1 == needed;
            let mut len = chunk.len() as u16;
            let mut status = RXD_DD | RXD_IXSM;
            let mut errors = 0;
            if last {
                status |= RXD_EOP;
                match fault {
                    Some(RxFault::Length(l)) => len = l,
                    Some(RxFault::Errors(e)) => errors = e,
                    _ => {}
                }
            }
            if fault == Some(RxFault::NoEop) {
                status &= !RXD_EOP;
            }
            let mut wb = [0u8; 8]; // length, checksum, status, errors, special
            wb[0..2].copy_from_slice(&len.to_le_bytes());
            wb[4] = status;
            wb[5] = errors;
            self.dma.write(desc + 8, &wb);
            at = (at + 1) % size;
        }
        self.set(RDH, at as u32);
        match fault {
            Some(RxFault::Errors(e)) if e != 0 => self.stat(CRCERRS, (e & 1) as u64),
            _ => {
                self.stat(GPRC, 1);
                self.stat(GORCL, (frame.len() + FCS) as u64);
            }
        }
        self.stat(TPR, 1);
        self.stat(TORL, (frame.len() + FCS) as u64);
        self.cause(RXT0);
        // RXDMT0 when the free descriptors fall to the threshold RCTL.RDMTS
        // sets (1/2, 1/4 or 1/8 of the ring).
        let left = (tail + size - at) % size;
        if left <= size >> (1 + ((self.r(RCTL) >> 8) & 3).min(2)) {
            self.cause(RXDMT0);
        }
        true
    }

    // ---- transmit (3.3) ----

    /// Processes descriptors from TDH up to TDT (3.3.1), writing DD back
    /// into each one with RS set.
    fn transmit(&mut self) {
        let sending = |m: &Self| m.link_up() || m.config.lose_while_down;
        if self.r(TCTL) & TCTL_EN == 0 || self.tx_stalled || !sending(self) {
            return;
        }
        let (base, size) = self.ring(TDBAL, TDLEN);
        let tail = self.r(TDT) as usize;
        if size == 0 || tail >= size || self.r(TDH) as usize >= size {
            self.driver_errors += (size != 0) as u64;
            return;
        }
        if self.r(TDH) as usize == tail || !self.dma.begin() {
            return;
        }
        let mut written_back = false;
        // Nothing more goes out once the link is down (a cable pulled
        // mid-batch): the rest wait.
        while self.r(TDH) as usize != tail && sending(self) {
            let head = self.r(TDH) as usize;
            let at = base + 16 * head as u64;
            let mut d = [0u8; 16];
            if !self.dma.read(at, &mut d) {
                break;
            }
            self.descriptor(&d);
            if d[11] & TXD_RS != 0 {
                self.dma.write(at + 12, &[d[12] & 0xf0 | TXD_DD]);
                written_back = true;
            }
            self.set(TDH, ((head + 1) % size) as u32);
        }
        self.cause(TXQE | if written_back { TXDW } else { 0 });
    }

    /// One transmit descriptor: a context (3.3.6) is kept for the packets
    /// after it; a legacy (3.3.3) or data (3.3.7) descriptor adds its
    /// buffer to the packet, which goes out at EOP.
    fn descriptor(&mut self, d: &[u8; 16]) {
        let addr = u64::from_le_bytes(d[0..8].try_into().expect("8"));
        let dword2 = u32::from_le_bytes(d[8..12].try_into().expect("4"));
        let cmd = d[11];
        let (len, legacy_sum) = if cmd & TXD_DEXT == 0 {
            let len = u16::from_le_bytes([d[8], d[9]]) as usize;
            (len, (cmd & TXD_IC != 0).then_some((d[13], d[10])))
        } else {
            match (dword2 >> 20) & 0xf {
                0 => {
                    let u16at = |i: usize| u16::from_le_bytes([d[i], d[i + 1]]);
                    self.context = Context {
                        ipcss: d[0],
                        ipcso: d[1],
                        ipcse: u16at(2),
                        tucss: d[4],
                        tucso: d[5],
                        tucse: u16at(6),
                    };
                    return;
                }
                1 => {
                    if self.gather.len == 0 && self.gather.popts.is_none() {
                        self.gather.popts = Some(d[13]);
                    }
                    ((dword2 & 0xf_ffff) as usize, None)
                }
                _ => {
                    self.driver_errors += 1;
                    return;
                }
            }
        };
        let g = &mut self.gather;
        if g.len + len > MAX_TX_PACKET {
            g.too_long = true;
        }
        if !g.too_long && len > 0 && addr != 0 {
            if self.config.record {
                let from = g.bytes.len();
                g.bytes.resize(from + len, 0);
                if !self.dma.read(addr, &mut self.gather.bytes[from..]) {
                    self.gather.bytes.truncate(from);
                }
            }
            self.gather.len += len;
        }
        if cmd & TXD_EOP != 0 {
            self.end_of_packet(cmd, legacy_sum);
        }
    }

    /// The packet is complete: checksums inserted as asked, sent (logged,
    /// counted), the gathering state cleared.
    fn end_of_packet(&mut self, cmd: u8, legacy_sum: Option<(u8, u8)>) {
        let mut g = std::mem::take(&mut self.gather);
        if g.too_long || g.len == 0 {
            self.dropped += 1;
            return;
        }
        let end = |cse: u16, len: usize| if cse == 0 { len } else { cse as usize + 1 };
        let bytes = &mut g.bytes;
        let n = bytes.len();
        let c = self.context;
        match (g.popts, legacy_sum) {
            (Some(popts), _) => {
                if popts & POPTS_TXSM != 0 {
                    let e = end(c.tucse, n);
                    insert_checksum(bytes, c.tucss as usize, e, c.tucso as usize);
                }
                if popts & POPTS_IXSM != 0 {
                    let e = end(c.ipcse, n);
                    insert_checksum(bytes, c.ipcss as usize, e, c.ipcso as usize);
                }
            }
            // IC is ignored when CSS >= length or CSO >= length - 1 (3.3.3.1).
            (None, Some((css, cso))) if (css as usize) < n && (cso as usize) + 1 < n => {
                insert_checksum(bytes, css as usize, n, cso as usize);
            }
            _ => {}
        }
        let padded = if self.r(TCTL) & TCTL_PSP != 0 {
            g.len.max(MIN_FRAME - FCS)
        } else {
            g.len
        };
        let octets = (padded + if cmd & TXD_IFCS != 0 { FCS } else { 0 }) as u64;
        if octets >= MIN_FRAME as u64 {
            self.stat(GPTC, 1);
            self.stat(GOTCL, octets);
        }
        self.stat(TPT, 1);
        self.stat(TOTL, octets);
        self.sent += 1;
        if self.config.record && self.link_up() {
            self.tx_log.push(g.bytes);
        }
        if self.pull_cable_at == Some(self.sent) {
            self.set_link(false);
        }
    }
}

impl Engine for E1000Model {
    fn poll(&mut self) {
        E1000Model::poll(self);
    }
    fn set_threaded(&mut self, on: bool) {
        self.threaded = on;
    }
}

impl RegisterModel for E1000Model {
    /// 32-bit registers; a narrower read returns its bytes of the register,
    /// with no side effect.
    fn read(&mut self, offset: usize, size: usize) -> u64 {
        if self.wedge == Wedge::Panics {
            panic!("e1000 model: a read of BAR offset {offset:#x} with Wedge::Panics");
        }
        let word = offset & !3;
        if size != 4 {
            let v = if word == STATUS {
                self.status()
            } else {
                self.r(word)
            };
            return (v >> (8 * (offset - word))) as u64 & ((1u64 << (8 * size)) - 1);
        }
        match offset {
            STATUS => {
                self.link_reads += 1;
                self.status() as u64
            }
            ICR => {
                let v = self.r(ICR);
                self.set(ICR, 0);
                let asserted = if v & self.r(IMS) != 0 {
                    INT_ASSERTED
                } else {
                    0
                };
                (v | asserted) as u64
            }
            // The high half of a 64-bit counter clears both halves.
            o if o.checked_sub(4).is_some_and(|low| PAIRS.contains(&low)) => {
                let v = self.r(o);
                self.set(o, 0);
                self.set(o - 4, 0);
                v as u64
            }
            o if PAIRS.contains(&o) => self.r(o) as u64,
            o if STATS.contains(&o) => {
                let v = self.r(o);
                self.set(o, 0);
                v as u64
            }
            o => self.r(o) as u64,
        }
    }

    /// 32-bit registers; narrower writes are ignored.
    fn write(&mut self, offset: usize, size: usize, value: u64) {
        match self.wedge {
            Wedge::None => {}
            Wedge::IgnoresWrites => return,
            Wedge::Panics => {
                panic!("e1000 model: a write of BAR offset {offset:#x} with Wedge::Panics")
            }
        }
        if size != 4 {
            return;
        }
        let v = value as u32;
        match offset {
            CTRL if v & CTRL_RST != 0 => self.reset(),
            CTRL => {
                let was_up = self.link_up();
                self.set(CTRL, v);
                if self.link_up() != was_up {
                    self.cause(LSC);
                }
            }
            STATUS => {}
            ICS => self.cause(v),
            EERD if v & EERD_START != 0 => {
                let word = self
                    .eeprom
                    .get((v >> 8) as usize & 0xff)
                    .copied()
                    .unwrap_or(0);
                // START clears itself; DONE and the word show at once.
                self.set(EERD, v & 0xff00 | EERD_DONE | (word as u32) << 16);
            }
            ICR => {
                let icr = self.r(ICR) & !v;
                self.set(ICR, icr);
            }
            IMS => {
                let ims = self.r(IMS) | v;
                self.asserting(|m| m.set(IMS, ims));
            }
            IMC => {
                let ims = self.r(IMS) & !v;
                self.set(IMS, ims);
            }
            RCTL => {
                self.set(RCTL, v);
                if v & RCTL_EN == 0 {
                    self.dropped += self.fifo.len() as u64;
                    self.fifo.clear();
                    self.fifo_bytes = 0;
                } else if !self.threaded {
                    self.receive();
                }
            }
            RDT => {
                self.set(RDT, v & 0xffff);
                if !self.threaded {
                    self.receive();
                }
            }
            TCTL | TDT => {
                self.set(offset, if offset == TDT { v & 0xffff } else { v });
                if !self.threaded {
                    self.transmit();
                }
            }
            RDH | TDH => self.set(offset, v & 0xffff),
            RDLEN | TDLEN => self.set(offset, v & 0xf_ff80),
            o if STATS.contains(&o) => {}
            o => self.set(o, v),
        }
    }
}

/// The Ethernet FCS: CRC-32 (IEEE 802.3 clause 3.2.9), reflected, as sent
/// least significant byte first.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                crc >> 1 ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fcs_of_the_standard_check_string() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn the_eeprom_checksum_word_makes_the_sum_0xbaba() {
        let c = Container::unbacked();
        let (m, _device) = E1000Model::new(&c, E1000Config::default());
        let m = m.lock().unwrap();
        let sum = m.eeprom.iter().fold(0u16, |a, w| a.wrapping_add(*w));
        assert_eq!(sum, 0xbaba);
        assert_eq!(m.eeprom[0], 0x5452);
    }
}
