//! An NVMe controller in software (NVM Express Base Specification 2.0, NVM
//! Command Set 1.0): the BAR0 registers, the admin queue, I/O queues with
//! phase-tagged completions, PRP data pointers and (when configured,
//! [`NvmeConfig::sgl`]) Scatter Gather Lists for I/O data, RAM namespaces;
//! and the faults a test needs: commands held in flight, hostile completion
//! fields and phase tags, a controller that never becomes ready or never
//! stops.
//!
//! Commands run synchronously when the driver writes a submission queue's
//! doorbell (the driver's MMIO write calls [`NvmeModel`]), so a test is one
//! thread and deterministic.
//!
//! ```
//! use vfio_models::nvme::{NvmeConfig, NvmeModel};
//! let container = vfio_core::vfio::Container::unbacked();
//! let (model, device) = NvmeModel::new(&container, NvmeConfig::default());
//! assert_eq!(device.vendor_id().unwrap(), 0x1b36);
//! # drop(model);
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use vfio_core::mmio::RegisterModel;
use vfio_core::pci::PciAddress;
use vfio_core::vfio::{Container, Device};

use crate::nvme_sgl::{self, Piece, DATA_TRANSFER_ERROR};

const PAGE: usize = 4096;

/// How CSTS.RDY follows CC.EN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// At once, both ways.
    Prompt,
    /// RDY never becomes 1.
    NeverReady,
    /// RDY becomes 1, and stays 1 when EN is cleared: the controller cannot be stopped.
    NeverStops,
    /// CSTS.CFS (fatal) is set when enabled.
    Fatal,
    /// Every register reads all ones (a removed device).
    Gone,
}

/// One namespace: its block size (a power of two, 512 to 65536), metadata
/// bytes per block (the driver supports 0), and its contents.
#[derive(Clone, Debug)]
pub struct Namespace {
    pub nsid: u32,
    pub block_size: u32,
    pub metadata: u16,
    pub data: Vec<u8>,
}

impl Namespace {
    /// A namespace of `blocks` zeroed blocks of `block_size` bytes.
    pub fn zeroed(nsid: u32, block_size: u32, blocks: usize) -> Namespace {
        Namespace {
            nsid,
            block_size,
            metadata: 0,
            data: vec![0; block_size as usize * blocks],
        }
    }

    fn blocks(&self) -> u64 {
        (self.data.len() / self.block_size as usize) as u64
    }
}

/// What the controller reports and how it behaves.
#[derive(Clone, Debug)]
pub struct NvmeConfig {
    /// CAP (base spec 3.1.3.1). The default: MQES 255, CQR, TO 1 (500 ms),
    /// DSTRD 0, the NVM command set, 4 KiB pages.
    pub cap: u64,
    /// Bytes of BAR0.
    pub bar_len: usize,
    /// MDTS of Identify Controller (a power of two of 4 KiB; 0: no limit).
    pub mdts: u8,
    /// ONCS of Identify Controller (bit 2 Dataset Management, bit 3 Write Zeroes).
    pub oncs: u16,
    /// I/O queue pairs granted by Set Features (Number of Queues).
    pub io_queues: u16,
    pub namespaces: Vec<Namespace>,
    pub readiness: Readiness,
    /// Accept SGLs for I/O command data (PSDT 01b or 10b) and report them in
    /// Identify Controller SGLS (bytes 539:536): bits 1:0 01b (supported,
    /// no alignment or granularity requirement) and bit 16 (Bit Bucket
    /// descriptors). Data Block, Bit Bucket, Segment and Last Segment
    /// descriptors are walked, a malformed list is refused with its SGL
    /// status (0Dh, 0Eh, 0Fh, 11h) before any data moves; MPTR is not used
    /// (the namespaces served carry no metadata). Off (the default): SGLS
    /// reads 0 and a command with PSDT other than 00b fails with Invalid
    /// Field in Command, PRPs only. Admin commands always take PRPs.
    pub sgl: bool,
    /// With [`NvmeConfig::sgl`]: report SGLS bits 1:0 as 10b instead, SGLs
    /// whose Data Blocks must be dword aligned and of dword granularity,
    /// and fail a command with a Data Block whose address or length is not
    /// a multiple of 4 with SGL Data Block Granularity Invalid (1Eh) before
    /// any data moves. Off (the default): 01b, no alignment rule.
    pub sgl_dword_alignment: bool,
    /// Offer Doorbell Buffer Config (OACS bit 8, base spec 5.8). Once the
    /// command gave it the two pages, an I/O SQ tail doorbell write is only a
    /// wake-up: the tail is read from the shadow page, and after each
    /// command the event index is set to the tail taken (as QEMU does).
    /// Off (the default): opcode 7Ch is an Invalid Command Opcode.
    pub dbbuf: bool,
}

impl Default for NvmeConfig {
    fn default() -> Self {
        NvmeConfig {
            cap: 255 | 1 << 16 | 1 << 24 | 1 << 37,
            bar_len: 0x4000,
            mdts: 5,
            oncs: 1 << 2 | 1 << 3,
            io_queues: 4,
            namespaces: vec![Namespace::zeroed(1, 512, 2048)],
            readiness: Readiness::Prompt,
            sgl: false,
            sgl_dword_alignment: false,
            dbbuf: false,
        }
    }
}

/// A change to the next I/O completion the controller posts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injection {
    /// Report this command ID instead.
    Cid(u16),
    /// Report this submission queue ID instead.
    SqId(u16),
    /// Report this SQ head instead.
    SqHead(u16),
    /// Report this status field instead (15 bits, the phase bit removed).
    Status(u16),
    /// Post the completion twice.
    Twice,
    /// Post the completion with its phase tag inverted: it reads as an
    /// entry left from the ring's previous pass, which a host must not take
    /// (base spec 2.0, Completion Queue Entry, Phase Tag). The CQ tail moves
    /// on as for any entry.
    Phase,
}

/// An I/O command the controller ran (or held, or aborted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoRecord {
    pub sqid: u16,
    pub opcode: u8,
    pub nsid: u32,
    pub slba: u64,
    /// Blocks (NLB + 1) for reads, writes and Write Zeroes; ranges for DSM.
    pub count: u32,
}

#[derive(Clone, Copy, Debug)]
struct Sq {
    base: u64,
    size: u16,
    head: u16,
    tail: u16,
    cqid: u16,
}

#[derive(Clone, Copy, Debug)]
struct Cq {
    base: u64,
    size: u16,
    tail: u16,
    phase: bool,
}

/// The controller. Tests keep an `Arc<Mutex<NvmeModel>>` to set faults and
/// look at what happened; the driver reaches it through BAR0.
#[derive(Debug)]
pub struct NvmeModel {
    container: Arc<Container>,
    pub config: NvmeConfig,
    cc: u32,
    csts: u32,
    aqa: u32,
    asq: u64,
    acq: u64,
    sqs: BTreeMap<u16, Sq>,
    cqs: BTreeMap<u16, Cq>,
    /// Park I/O commands instead of running them ([`NvmeModel::release_held`]).
    pub hold_io: bool,
    held: Vec<(u16, [u32; 16])>,
    /// Swallow Delete I/O Submission Queue (never complete it).
    pub ignore_delete_sq: bool,
    /// Changes to the next I/O completions, in order.
    pub inject: VecDeque<Injection>,
    /// LBAs whose reads fail with Unrecovered Read Error.
    pub media_errors: BTreeSet<u64>,
    /// Fail every Flush with Internal Error.
    pub fail_flush: bool,
    /// Every I/O command seen, in order.
    pub io: Vec<IoRecord>,
    /// Data bytes the controller moved by DMA (both directions).
    pub dma_bytes: u64,
    /// DMA that found no mapping (an IOMMU fault).
    pub dma_faults: u64,
    /// Times the controller was disabled (CC.EN 1 -> 0 taking effect).
    pub disables: u32,
    /// The shadow doorbell and EventIdx pages of Doorbell Buffer Config.
    dbbuf: Option<(u64, u64)>,
    /// Doorbell Buffer Config commands that succeeded.
    pub dbbuf_configs: u32,
    /// MMIO SQ tail doorbell writes to I/O queues.
    pub mmio_sq_doorbells: u64,
    /// MMIO CQ head doorbell writes to I/O queues.
    pub mmio_cq_doorbells: u64,
    /// SQ tails taken from the shadow page.
    pub shadow_tails: u64,
    /// Commands (admin ones too) whose data was described by PRPs (PSDT 00b).
    pub prp_commands: u64,
    /// Commands whose data was described by an SGL (PSDT 01b, 10b).
    pub sgl_commands: u64,
    /// Of those, commands whose SGL1 was a Segment or Last Segment
    /// descriptor: their Data Blocks were read from a list in memory.
    pub sgl_list_commands: u64,
}

impl NvmeModel {
    /// A controller in `container` (made by `Container::unbacked`), and the
    /// device a driver opens: 1b36:0010, class 0x010802, as QEMU's.
    pub fn new(container: &Arc<Container>, config: NvmeConfig) -> (Arc<Mutex<NvmeModel>>, Device) {
        let bar_len = config.bar_len;
        let model = Arc::new(Mutex::new(NvmeModel {
            container: Arc::clone(container),
            config,
            cc: 0,
            csts: 0,
            aqa: 0,
            asq: 0,
            acq: 0,
            sqs: BTreeMap::new(),
            cqs: BTreeMap::new(),
            hold_io: false,
            held: Vec::new(),
            ignore_delete_sq: false,
            inject: VecDeque::new(),
            media_errors: BTreeSet::new(),
            fail_flush: false,
            io: Vec::new(),
            dma_bytes: 0,
            dma_faults: 0,
            disables: 0,
            dbbuf: None,
            dbbuf_configs: 0,
            prp_commands: 0,
            sgl_commands: 0,
            sgl_list_commands: 0,
            mmio_sq_doorbells: 0,
            mmio_cq_doorbells: 0,
            shadow_tails: 0,
        }));
        let mut cfg = vec![0u8; 256];
        cfg[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
        cfg[2..4].copy_from_slice(&0x0010u16.to_le_bytes());
        cfg[9..12].copy_from_slice(&[0x02, 0x08, 0x01]);
        let addr: PciAddress = "0000:00:03.0".parse().expect("a valid address");
        let bar: vfio_core::mmio::SharedModel = model.clone();
        let device = Device::from_model(container, addr, cfg, vec![(0, bar_len, bar)])
            .expect("an unbacked container");
        (model, device)
    }

    /// Runs every held command now (data moved, completions posted), as a
    /// slow device finally would.
    pub fn release_held(&mut self) {
        for (sqid, cmd) in std::mem::take(&mut self.held) {
            if self.sqs.contains_key(&sqid) {
                let (status, result) = self.io_command(&cmd);
                self.complete(sqid, &cmd, status, result, true);
            }
        }
    }

    /// Commands held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// I/O queues that exist at the controller.
    pub fn io_queue_ids(&self) -> Vec<u16> {
        self.sqs.keys().copied().filter(|&q| q != 0).collect()
    }

    /// Namespace `nsid`'s contents.
    pub fn namespace(&self, nsid: u32) -> &[u8] {
        &self
            .config
            .namespaces
            .iter()
            .find(|n| n.nsid == nsid)
            .expect("a namespace of the model")
            .data
    }

    fn stride(&self) -> usize {
        4 << (self.config.cap >> 32 & 0xf)
    }

    fn set_cc(&mut self, value: u32) {
        let was = self.cc & 1 == 1;
        self.cc = value;
        let en = value & 1 == 1;
        if en && !was {
            match self.config.readiness {
                Readiness::Prompt | Readiness::NeverStops => {
                    self.csts |= 1;
                    let entries = |v: u32| (v & 0xfff) as u16 + 1;
                    self.sqs.insert(0, sq(self.asq, entries(self.aqa), 0));
                    self.cqs.insert(0, cq(self.acq, entries(self.aqa >> 16)));
                }
                Readiness::Fatal => self.csts |= 2,
                Readiness::NeverReady | Readiness::Gone => {}
            }
        }
        if !en && was && self.config.readiness != Readiness::NeverStops {
            self.csts &= !1;
            self.sqs.clear();
            self.cqs.clear();
            self.held.clear();
            self.dbbuf = None;
            self.disables += 1;
        }
        if value >> 14 & 3 != 0 {
            self.csts = self.csts & !(3 << 2) | 2 << 2; // shutdown complete
        }
    }

    fn doorbell(&mut self, offset: usize, value: u32) {
        let index = (offset - 0x1000) / self.stride();
        let qid = (index / 2) as u16;
        if index % 2 == 1 {
            // CQ head: the model never runs out of CQ room in these tests.
            if qid != 0 {
                self.mmio_cq_doorbells += 1;
            }
            return;
        }
        let shadowed = qid != 0 && self.dbbuf.is_some();
        let Some(q) = self.sqs.get_mut(&qid) else {
            return;
        };
        if !shadowed {
            q.tail = value as u16 % q.size;
        }
        if qid != 0 {
            self.mmio_sq_doorbells += 1;
        }
        self.process(qid);
    }

    /// Offset of queue `qid`'s SQ doorbell in the doorbell pages.
    fn sq_slot(&self, qid: u16) -> u64 {
        (2 * qid as usize * self.stride()) as u64
    }

    /// With shadow doorbells: the SQ tail from the shadow page.
    fn read_shadow_tail(&mut self, qid: u16) {
        let Some((shadow, _)) = self.dbbuf.filter(|_| qid != 0) else {
            return;
        };
        let mut v = [0u8; 4];
        if self
            .container
            .dma_read(shadow + self.sq_slot(qid), &mut v)
            .is_err()
        {
            self.dma_faults += 1;
            return;
        }
        if let Some(q) = self.sqs.get_mut(&qid) {
            q.tail = u32::from_le_bytes(v) as u16 % q.size;
            self.shadow_tails += 1;
        }
    }

    /// With shadow doorbells: the event index set to the tail taken.
    fn write_event_idx(&mut self, qid: u16, tail: u16) {
        let Some((_, event_idx)) = self.dbbuf.filter(|_| qid != 0) else {
            return;
        };
        let at = event_idx + self.sq_slot(qid);
        if self
            .container
            .dma_write(at, &(tail as u32).to_le_bytes())
            .is_err()
        {
            self.dma_faults += 1;
        }
    }

    fn process(&mut self, qid: u16) {
        self.read_shadow_tail(qid);
        while let Some(q) = self.sqs.get(&qid).copied() {
            if q.head == q.tail {
                self.write_event_idx(qid, q.tail);
                // The host may have moved the shadow after the index was read.
                self.read_shadow_tail(qid);
                if self.sqs.get(&qid).is_some_and(|q| q.head == q.tail) {
                    break;
                }
                continue;
            }
            let mut raw = [0u8; 64];
            if self
                .container
                .dma_read(q.base + q.head as u64 * 64, &mut raw)
                .is_err()
            {
                self.dma_faults += 1;
                break;
            }
            let head = (q.head + 1) % q.size;
            self.sqs.get_mut(&qid).expect("exists").head = head;
            let cmd: [u32; 16] = std::array::from_fn(|i| {
                u32::from_le_bytes(raw[4 * i..4 * i + 4].try_into().expect("4"))
            });
            if qid == 0 {
                self.admin_command(&cmd);
            } else if self.hold_io {
                self.io.push(record(qid, &cmd));
                self.held.push((qid, cmd));
            } else {
                self.io.push(record(qid, &cmd));
                let (status, result) = self.io_command(&cmd);
                self.complete(qid, &cmd, status, result, true);
            }
        }
    }

    fn admin_command(&mut self, cmd: &[u32; 16]) {
        let opcode = cmd[0] as u8;
        let (status, result) = match opcode {
            _ if psdt(cmd) != 0 => (0x02, 0), // admin commands take PRPs
            0x06 => (self.identify(cmd), 0),
            0x09 if cmd[10] & 0xff == 7 => {
                let n = self.config.io_queues.max(1) as u32 - 1;
                (0, n | n << 16)
            }
            0x05 => (self.create_cq(cmd), 0),
            0x7c if self.config.dbbuf => {
                let (shadow, event_idx) = (prp1(cmd), cmd[8] as u64 | (cmd[9] as u64) << 32);
                if shadow % PAGE as u64 != 0 || event_idx % PAGE as u64 != 0 {
                    (0x02, 0) // Invalid Field in Command
                } else {
                    self.dbbuf = Some((shadow, event_idx));
                    self.dbbuf_configs += 1;
                    (0, 0)
                }
            }
            0x01 => (self.create_sq(cmd), 0),
            0x00 => {
                if self.ignore_delete_sq {
                    return;
                }
                (self.delete_sq(cmd[10] as u16), 0)
            }
            0x04 => {
                let qid = cmd[10] as u16;
                let in_use = self.sqs.values().any(|s| s.cqid == qid);
                match (qid, self.cqs.contains_key(&qid), in_use) {
                    (0, _, _) | (_, false, _) => (0x101, 0),
                    (_, _, true) => (0x10c, 0), // Invalid Queue Deletion
                    _ => {
                        self.cqs.remove(&qid);
                        (0, 0)
                    }
                }
            }
            0x02 => {
                let numd = (cmd[10] >> 16 | (cmd[11] & 0xffff) << 16) as usize + 1;
                let zeros = vec![0u8; (numd * 4).min(PAGE)];
                (self.transfer_out(cmd, &zeros), 0)
            }
            _ => (0x01, 0), // Invalid Command Opcode
        };
        self.complete(0, cmd, status, result, false);
    }

    fn identify(&mut self, cmd: &[u32; 16]) -> u16 {
        let mut page = vec![0u8; PAGE];
        match cmd[10] & 0xff {
            1 => {
                page[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
                page[4..12].copy_from_slice(b"model-01");
                page[24..35].copy_from_slice(b"vfio-models");
                page[77] = self.config.mdts;
                let oacs: u16 = if self.config.dbbuf { 1 << 8 } else { 0 };
                page[256..258].copy_from_slice(&oacs.to_le_bytes());
                page[516..520]
                    .copy_from_slice(&(self.config.namespaces.len() as u32).to_le_bytes());
                page[520..522].copy_from_slice(&self.config.oncs.to_le_bytes());
                let sgls: u32 = match (self.config.sgl, self.config.sgl_dword_alignment) {
                    (false, _) => 0,
                    (true, false) => 1 | 1 << 16,
                    (true, true) => 2 | 1 << 16,
                };
                page[536..540].copy_from_slice(&sgls.to_le_bytes());
            }
            2 => {
                let after = cmd[1];
                let mut ids: Vec<u32> = self
                    .config
                    .namespaces
                    .iter()
                    .map(|n| n.nsid)
                    .filter(|&n| n > after)
                    .collect();
                ids.sort_unstable();
                for (i, id) in ids.iter().take(1024).enumerate() {
                    page[4 * i..4 * i + 4].copy_from_slice(&id.to_le_bytes());
                }
            }
            0 => {
                let Some(ns) = self.config.namespaces.iter().find(|n| n.nsid == cmd[1]) else {
                    return 0x0b; // Invalid Namespace or Format
                };
                let blocks = ns.blocks();
                page[0..8].copy_from_slice(&blocks.to_le_bytes());
                page[8..16].copy_from_slice(&blocks.to_le_bytes());
                page[16..24].copy_from_slice(&blocks.to_le_bytes());
                let lbads = ns.block_size.trailing_zeros();
                let lbaf = (lbads << 16) | ns.metadata as u32;
                page[128..132].copy_from_slice(&lbaf.to_le_bytes());
            }
            _ => return 0x02, // Invalid Field in Command
        }
        self.transfer_out(cmd, &page)
    }

    fn create_cq(&mut self, cmd: &[u32; 16]) -> u16 {
        let qid = cmd[10] as u16;
        let size = (cmd[10] >> 16) as u16 as u32 + 1;
        if qid == 0 || qid > self.config.io_queues || self.cqs.contains_key(&qid) {
            return 0x101; // Invalid Queue Identifier
        }
        if size < 2 || size > (self.config.cap & 0xffff) as u32 + 1 {
            return 0x102; // Invalid Queue Size
        }
        self.cqs.insert(qid, cq(prp1(cmd), size as u16));
        0
    }

    fn create_sq(&mut self, cmd: &[u32; 16]) -> u16 {
        let qid = cmd[10] as u16;
        let size = (cmd[10] >> 16) as u16 as u32 + 1;
        let cqid = (cmd[11] >> 16) as u16;
        if qid == 0 || qid > self.config.io_queues || self.sqs.contains_key(&qid) {
            return 0x101;
        }
        if !self.cqs.contains_key(&cqid) || cqid == 0 {
            return 0x100; // Completion Queue Invalid
        }
        if size < 2 || size > (self.config.cap & 0xffff) as u32 + 1 {
            return 0x102;
        }
        self.sqs.insert(qid, sq(prp1(cmd), size as u16, cqid));
        0
    }

    /// Every command still held for `qid` is aborted (no data moved), its
    /// completion posted, then the queue goes (base spec 5.6).
    fn delete_sq(&mut self, qid: u16) -> u16 {
        if qid == 0 || !self.sqs.contains_key(&qid) {
            return 0x101;
        }
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(q, _)| *q == qid);
        self.held = rest;
        for (_, cmd) in mine {
            self.complete(qid, &cmd, 0x08, 0, false); // Command Aborted due to SQ Deletion
        }
        self.sqs.remove(&qid);
        0
    }

    fn io_command(&mut self, cmd: &[u32; 16]) -> (u16, u32) {
        let (opcode, nsid) = (cmd[0] as u8, cmd[1]);
        let Some(ns) = self.config.namespaces.iter().position(|n| n.nsid == nsid) else {
            return (0x0b, 0);
        };
        let bs = self.config.namespaces[ns].block_size as usize;
        let blocks = self.config.namespaces[ns].blocks();
        let slba = cmd[10] as u64 | (cmd[11] as u64) << 32;
        let nlb = (cmd[12] & 0xffff) as u64 + 1;
        let in_range = slba.checked_add(nlb).is_some_and(|e| e <= blocks);
        match opcode {
            0x00 if self.fail_flush => (0x06, 0), // Internal Error
            0x00 => (0, 0),
            0x01 | 0x02 | 0x08 if !in_range => (0x80, 0), // LBA Out of Range
            0x02 if (slba..slba + nlb).any(|l| self.media_errors.contains(&l)) => (0x281, 0),
            0x02 => {
                let at = slba as usize * bs;
                let data = self.config.namespaces[ns].data[at..at + nlb as usize * bs].to_vec();
                (self.transfer_out(cmd, &data), 0)
            }
            0x01 => {
                let mut data = vec![0u8; nlb as usize * bs];
                let status = self.transfer_in(cmd, &mut data);
                if status == 0 {
                    let at = slba as usize * bs;
                    self.config.namespaces[ns].data[at..at + data.len()].copy_from_slice(&data);
                }
                (status, 0)
            }
            0x08 => {
                let at = slba as usize * bs;
                self.config.namespaces[ns].data[at..at + nlb as usize * bs].fill(0);
                (0, 0)
            }
            0x09 => {
                let ranges = (cmd[10] & 0xff) as usize + 1;
                let mut list = vec![0u8; 16 * ranges];
                let status = self.transfer_in(cmd, &mut list);
                if status != 0 {
                    return (status, 0);
                }
                for r in list.chunks(16) {
                    let len = u32::from_le_bytes(r[4..8].try_into().expect("4")) as u64;
                    let start = u64::from_le_bytes(r[8..16].try_into().expect("8"));
                    if start.checked_add(len).is_none_or(|e| e > blocks) {
                        return (0x80, 0);
                    }
                    let at = start as usize * bs;
                    self.config.namespaces[ns].data[at..at + len as usize * bs].fill(0);
                }
                (0, 0)
            }
            _ => (0x01, 0),
        }
    }

    /// The pages a command's PRP1/PRP2 describe for `len` bytes.
    fn pages(&mut self, cmd: &[u32; 16], len: usize) -> Option<Vec<(u64, usize)>> {
        let (p1, p2) = (prp1(cmd), cmd[8] as u64 | (cmd[9] as u64) << 32);
        let first = len.min(PAGE - (p1 as usize % PAGE));
        let mut out = vec![(p1, first)];
        let mut rest = len - first;
        if rest == 0 {
            return Some(out);
        }
        if rest <= PAGE {
            out.push((p2, rest));
            return Some(out);
        }
        let mut list = p2;
        while rest > 0 {
            let mut entry = [0u8; 8];
            self.container.dma_read(list, &mut entry).ok()?;
            let page = u64::from_le_bytes(entry);
            let last_in_page = (list as usize % PAGE) == PAGE - 8;
            if last_in_page && rest > PAGE {
                list = page; // chained list page
                continue;
            }
            let n = rest.min(PAGE);
            out.push((page, n));
            rest -= n;
            list += 8;
        }
        Some(out)
    }

    /// Where the command's data goes for `len` bytes, `to_host` for a
    /// controller-to-host transfer: PRPs (PSDT 00b), or the SGL of SGL1
    /// when SGLs are configured (PSDT 01b, 10b). Err: the status to fail
    /// the command with.
    fn pieces(&mut self, cmd: &[u32; 16], len: usize, to_host: bool) -> Result<Vec<Piece>, u16> {
        match psdt(cmd) {
            0 => self.prp_commands += 1,
            _ => self.sgl_commands += 1,
        }
        let pieces = match psdt(cmd) {
            0 => self
                .pages(cmd, len)
                .map(|p| p.into_iter().map(|(a, n)| Piece::Dma(a, n)).collect())
                .ok_or(DATA_TRANSFER_ERROR),
            1 | 2 if self.config.sgl => {
                let sgl1 = nvme_sgl::sgl1(cmd);
                if nvme_sgl::is_segment(&sgl1) {
                    self.sgl_list_commands += 1;
                }
                let dword = self.config.sgl_dword_alignment;
                nvme_sgl::walk(&self.container, &sgl1, len, to_host, dword)
            }
            _ => return Err(0x02), // Invalid Field in Command
        };
        if matches!(pieces, Err(DATA_TRANSFER_ERROR)) {
            self.dma_faults += 1; // a PRP list or SGL segment not mapped
        }
        pieces
    }

    /// Controller -> host: `data` into the command's pages or SGL.
    fn transfer_out(&mut self, cmd: &[u32; 16], data: &[u8]) -> u16 {
        let pieces = match self.pieces(cmd, data.len(), true) {
            Ok(p) => p,
            Err(status) => return status,
        };
        let mut at = 0;
        for piece in pieces {
            match piece {
                Piece::Dma(iova, n) => {
                    if self.container.dma_write(iova, &data[at..at + n]).is_err() {
                        self.dma_faults += 1;
                        return DATA_TRANSFER_ERROR;
                    }
                    self.dma_bytes += n as u64;
                    at += n;
                }
                Piece::Discard(n) => at += n,
            }
        }
        0
    }

    /// Host -> controller: the command's pages or SGL into `data`.
    fn transfer_in(&mut self, cmd: &[u32; 16], data: &mut [u8]) -> u16 {
        let pieces = match self.pieces(cmd, data.len(), false) {
            Ok(p) => p,
            Err(status) => return status,
        };
        let mut at = 0;
        for piece in pieces {
            match piece {
                Piece::Dma(iova, n) => {
                    if self
                        .container
                        .dma_read(iova, &mut data[at..at + n])
                        .is_err()
                    {
                        self.dma_faults += 1;
                        return DATA_TRANSFER_ERROR;
                    }
                    self.dma_bytes += n as u64;
                    at += n;
                }
                Piece::Discard(n) => at += n,
            }
        }
        0
    }

    fn complete(&mut self, sqid: u16, cmd: &[u32; 16], status: u16, result: u32, io: bool) {
        let Some(q) = self.sqs.get(&sqid).copied() else {
            return;
        };
        let (mut cid, mut sq_id, mut head, mut status) =
            ((cmd[0] >> 16) as u16, sqid, q.head, status);
        let (mut times, mut stale) = (1, false);
        if io {
            match self.inject.pop_front() {
                Some(Injection::Cid(c)) => cid = c,
                Some(Injection::SqId(s)) => sq_id = s,
                Some(Injection::SqHead(h)) => head = h,
                Some(Injection::Status(s)) => status = s,
                Some(Injection::Twice) => times = 2,
                Some(Injection::Phase) => stale = true,
                None => {}
            }
        }
        for _ in 0..times {
            let Some(c) = self.cqs.get_mut(&q.cqid) else {
                return;
            };
            let entry = [
                result,
                0,
                head as u32 | (sq_id as u32) << 16,
                cid as u32 | ((c.phase != stale) as u32) << 16 | (status as u32 & 0x7fff) << 17,
            ];
            let bytes: Vec<u8> = entry.iter().flat_map(|d| d.to_le_bytes()).collect();
            let at = c.base + c.tail as u64 * 16;
            c.tail += 1;
            if c.tail == c.size {
                c.tail = 0;
                c.phase = !c.phase;
            }
            if self.container.dma_write(at, &bytes).is_err() {
                self.dma_faults += 1;
            }
        }
    }
}

impl RegisterModel for NvmeModel {
    fn read(&mut self, offset: usize, size: usize) -> u64 {
        if self.config.readiness == Readiness::Gone {
            return u64::MAX >> (64 - 8 * size);
        }
        let word = |v: u64, base: usize| v >> (8 * (offset - base));
        let mask = if size == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * size)) - 1
        };
        let v = match offset {
            0x00..=0x07 => word(self.config.cap, 0),
            0x08 => 0x0002_0000,
            0x14 => self.cc as u64,
            0x1c => self.csts as u64,
            0x24 => self.aqa as u64,
            0x28..=0x2f => word(self.asq, 0x28),
            0x30..=0x37 => word(self.acq, 0x30),
            _ => 0,
        };
        v & mask
    }

    fn write(&mut self, offset: usize, size: usize, value: u64) {
        let half = |old: u64, base: usize| {
            if size == 8 {
                value
            } else if offset == base {
                old & !0xffff_ffff | value & 0xffff_ffff
            } else {
                old & 0xffff_ffff | value << 32
            }
        };
        match offset {
            0x14 => self.set_cc(value as u32),
            0x24 => self.aqa = value as u32,
            0x28 | 0x2c => self.asq = half(self.asq, 0x28),
            0x30 | 0x34 => self.acq = half(self.acq, 0x30),
            o if o >= 0x1000 => self.doorbell(o, value as u32),
            _ => {}
        }
    }
}

/// PSDT, command dword 0 bits 15:14: 00b PRPs, 01b and 10b SGLs (MPTR a
/// buffer, or one SGL descriptor), 11b reserved.
fn psdt(cmd: &[u32; 16]) -> u32 {
    cmd[0] >> 14 & 3
}

fn prp1(cmd: &[u32; 16]) -> u64 {
    cmd[6] as u64 | (cmd[7] as u64) << 32
}

fn sq(base: u64, size: u16, cqid: u16) -> Sq {
    Sq {
        base,
        size,
        head: 0,
        tail: 0,
        cqid,
    }
}

fn cq(base: u64, size: u16) -> Cq {
    Cq {
        base,
        size,
        tail: 0,
        phase: true,
    }
}

fn record(sqid: u16, cmd: &[u32; 16]) -> IoRecord {
    let opcode = cmd[0] as u8;
    IoRecord {
        sqid,
        opcode,
        nsid: cmd[1],
        slba: cmd[10] as u64 | (cmd[11] as u64) << 32,
        count: if opcode == 0x09 {
            (cmd[10] & 0xff) + 1
        } else {
            (cmd[12] & 0xffff) + 1
        },
    }
}
