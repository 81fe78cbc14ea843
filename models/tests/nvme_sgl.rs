//! The NVMe model's Scatter Gather Lists, from a minimal host written here
//! (the driver uses PRPs only): bring-up through the BAR0 registers, one
//! I/O queue pair in DMA memory, commands written into the submission
//! queue and doorbells rung by hand, completions read back by phase.

use std::sync::{Arc, Mutex};

use vfio_core::dma::{Backing, DmaMemory};
use vfio_core::mmio::RegisterModel;
use vfio_core::vfio::{Container, Device};
use vfio_models::nvme::{Namespace, NvmeConfig, NvmeModel};

/// Offsets in the host's DMA memory.
const ASQ: usize = 0;
const ACQ: usize = 0x1000;
const IOSQ: usize = 0x2000;
const IOCQ: usize = 0x3000;
/// SGL segments.
const LISTS: usize = 0x4000;
/// Data buffers, 0x8000 to the end (96 KiB).
const DATA: usize = 0x8000;
const MEM: usize = 0x2_0000;
/// Entries of every queue.
const ENTRIES: u16 = 8;

const READ: u8 = 0x02;
const WRITE: u8 = 0x01;

const DATA_BLOCK: u8 = 0x0;
const BIT_BUCKET: u8 = 0x1;
const SEGMENT: u8 = 0x2;
const LAST_SEGMENT: u8 = 0x3;

struct Host {
    model: Arc<Mutex<NvmeModel>>,
    mem: DmaMemory,
    tail: [u16; 2],
    head: [u16; 2],
    phase: [bool; 2],
    cid: u16,
    _device: Device,
}

/// A descriptor: address, length, identifier byte (type 7:4, subtype 3:0).
fn desc(address: u64, length: u32, kind: u8) -> [u8; 16] {
    raw(address, length, kind << 4)
}

fn raw(address: u64, length: u32, identifier: u8) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[0..8].copy_from_slice(&address.to_le_bytes());
    d[8..12].copy_from_slice(&length.to_le_bytes());
    d[15] = identifier;
    d
}

impl Host {
    /// The model (one namespace of 64 patterned 512-byte blocks) enabled,
    /// with I/O queue pair 1.
    fn new(sgl: bool) -> Host {
        Host::with(sgl, false)
    }

    /// As [`Host::new`]; with `dword`, SGL Data Blocks must be dword
    /// aligned and of dword granularity (SGLS 10b).
    fn with(sgl: bool, dword: bool) -> Host {
        let mut ns = Namespace::zeroed(1, 512, 64);
        for (i, b) in ns.data.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let container = Container::unbacked();
        let (model, device) = NvmeModel::new(
            &container,
            NvmeConfig {
                namespaces: vec![ns],
                sgl,
                sgl_dword_alignment: dword,
                ..NvmeConfig::default()
            },
        );
        let mem = DmaMemory::new(&container, MEM, Backing::Pages).unwrap();
        let base = mem.iova();
        {
            let mut m = model.lock().unwrap();
            let n = (ENTRIES - 1) as u64;
            m.write(0x24, 4, n | n << 16); // AQA
            m.write(0x28, 8, base + ASQ as u64);
            m.write(0x30, 8, base + ACQ as u64);
            m.write(0x14, 4, 1 | 6 << 16 | 4 << 20); // CC: EN, IOSQES 64, IOCQES 16
            assert_eq!(m.read(0x1c, 4) & 1, 1, "CSTS.RDY");
        }
        let mut host = Host {
            model,
            mem,
            tail: [0; 2],
            head: [0; 2],
            phase: [true; 2],
            cid: 0,
            _device: device,
        };
        let size = (ENTRIES as u32 - 1) << 16;
        let mut cq = host.prp_cmd(0x05, IOCQ);
        (cq[10], cq[11]) = (1 | size, 1); // QID 1, physically contiguous
        assert_eq!(host.run(0, cq), 0, "Create I/O CQ");
        let mut sq = host.prp_cmd(0x01, IOSQ);
        (sq[10], sq[11]) = (1 | size, 1 | 1 << 16); // QID 1, contiguous, CQ 1
        assert_eq!(host.run(0, sq), 0, "Create I/O SQ");
        host
    }

    fn iova(&self, offset: usize) -> u64 {
        self.mem.iova() + offset as u64
    }

    /// A command of `opcode` with PRP1 at `offset`.
    fn prp_cmd(&self, opcode: u8, offset: usize) -> [u32; 16] {
        let mut cmd = [0u32; 16];
        cmd[0] = opcode as u32;
        let prp1 = self.iova(offset);
        (cmd[6], cmd[7]) = (prp1 as u32, (prp1 >> 32) as u32);
        cmd
    }

    /// Submits `cmd` on queue `qid` (0 or 1), rings its doorbell, and
    /// returns the status of its completion (15 bits, phase removed).
    fn run(&mut self, qid: usize, mut cmd: [u32; 16]) -> u16 {
        let (sq, cq) = [(ASQ, ACQ), (IOSQ, IOCQ)][qid];
        self.cid += 1;
        cmd[0] |= (self.cid as u32) << 16;
        let bytes: Vec<u8> = cmd.iter().flat_map(|d| d.to_le_bytes()).collect();
        self.mem
            .write_bytes(sq + self.tail[qid] as usize * 64, &bytes);
        self.tail[qid] = (self.tail[qid] + 1) % ENTRIES;
        let doorbell = 0x1000 + 8 * qid;
        let mut m = self.model.lock().unwrap();
        m.write(doorbell, 4, self.tail[qid] as u64);
        let at = cq + self.head[qid] as usize * 16;
        let dw3: u32 = self.mem.read(at + 12);
        assert_eq!(
            dw3 >> 16 & 1 == 1,
            self.phase[qid],
            "a completion was posted"
        );
        assert_eq!(dw3 as u16, self.cid, "for this command");
        self.head[qid] = (self.head[qid] + 1) % ENTRIES;
        if self.head[qid] == 0 {
            self.phase[qid] = !self.phase[qid];
        }
        m.write(doorbell + 4, 4, self.head[qid] as u64);
        (dw3 >> 17) as u16
    }

    /// Identify Controller's SGLS (bytes 539:536).
    fn sgls(&mut self) -> u32 {
        let mut cmd = self.prp_cmd(0x06, DATA);
        cmd[10] = 1;
        assert_eq!(self.run(0, cmd), 0, "Identify");
        self.mem.read(DATA + 536)
    }

    /// A read or write of `blocks` blocks at `slba` of namespace 1, its
    /// data described by `sgl1` with PSDT `psdt`.
    fn io(&mut self, opcode: u8, slba: u64, blocks: u32, psdt: u32, sgl1: [u8; 16]) -> u16 {
        let mut cmd = [0u32; 16];
        cmd[0] = opcode as u32 | psdt << 14;
        cmd[1] = 1;
        for i in 0..4 {
            cmd[6 + i] = u32::from_le_bytes(sgl1[4 * i..4 * i + 4].try_into().unwrap());
        }
        (cmd[10], cmd[11], cmd[12]) = (slba as u32, (slba >> 32) as u32, blocks - 1);
        self.run(1, cmd)
    }

    /// A read through an SGL (PSDT 01b).
    fn read(&mut self, slba: u64, blocks: u32, sgl1: [u8; 16]) -> u16 {
        self.io(READ, slba, blocks, 1, sgl1)
    }

    /// Writes `list` as a segment at `offset`; its (Last) Segment
    /// descriptor of `kind`.
    fn segment(&self, offset: usize, kind: u8, list: &[[u8; 16]]) -> [u8; 16] {
        self.mem.write_bytes(offset, list.concat().as_slice());
        desc(self.iova(offset), 16 * list.len() as u32, kind)
    }

    fn bytes(&self, offset: usize, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        self.mem.read_bytes(offset, &mut out);
        out
    }

    /// Namespace bytes of `blocks` blocks at `lba`.
    fn disk(&self, lba: usize, blocks: usize) -> Vec<u8> {
        let m = self.model.lock().unwrap();
        m.namespace(1)[lba * 512..(lba + blocks) * 512].to_vec()
    }
}

#[test]
fn sgls_are_reported_and_taken_only_when_configured() {
    let mut host = Host::new(false);
    assert_eq!(host.sgls(), 0, "SGLS: not supported");
    let d = desc(host.iova(DATA), 512, DATA_BLOCK);
    assert_eq!(host.read(0, 1, d), 0x02, "PSDT 01b: Invalid Field");
    assert_eq!(host.io(READ, 0, 1, 2, d), 0x02, "PSDT 10b: Invalid Field");
    // PSDT 00b: the same dwords are PRP1 and PRP2 (unused for one block).
    assert_eq!(host.io(READ, 1, 1, 0, d), 0);
    assert_eq!(host.bytes(DATA, 512), host.disk(1, 1));

    let mut host = Host::new(true);
    assert_eq!(
        host.sgls(),
        1 | 1 << 16,
        "byte-granular SGLs and Bit Buckets"
    );
    let mut identify = host.prp_cmd(0x06, DATA);
    (identify[0], identify[10]) = (0x06 | 1 << 14, 1);
    assert_eq!(host.run(0, identify), 0x02, "admin commands take PRPs only");
}

#[test]
fn one_data_block_reads_and_writes_at_any_alignment() {
    let mut host = Host::new(true);
    // 3 blocks into one Data Block at an odd address across a page boundary.
    let at = DATA + 0xf01;
    assert_eq!(host.read(2, 3, desc(host.iova(at), 1536, DATA_BLOCK)), 0);
    assert_eq!(host.bytes(at, 1536), host.disk(2, 3));
    // PSDT 10b describes the data the same way.
    assert_eq!(
        host.io(READ, 5, 1, 2, desc(host.iova(DATA), 512, DATA_BLOCK)),
        0
    );
    assert_eq!(host.bytes(DATA, 512), host.disk(5, 1));

    host.mem.write_bytes(DATA + 0x2000, &[0x5a; 1024]);
    let d = desc(host.iova(DATA + 0x2000), 1024, DATA_BLOCK);
    assert_eq!(host.io(WRITE, 10, 2, 1, d), 0);
    assert_eq!(host.disk(10, 2), [0x5a; 1024]);
}

#[test]
fn segment_chains_scatter_and_gather_across_pages() {
    let mut host = Host::new(true);
    // SGL1 a Last Segment: three Data Blocks, the first across a page boundary.
    let pieces = [
        (DATA + 0x0e00, 1000),
        (DATA + 0x3000, 2000),
        (DATA + 0x5803, 1096),
    ];
    let list: Vec<_> = pieces
        .iter()
        .map(|&(at, n)| desc(host.iova(at), n as u32, DATA_BLOCK))
        .collect();
    let sgl1 = host.segment(LISTS, LAST_SEGMENT, &list);
    assert_eq!(host.read(4, 8, sgl1), 0);
    let got: Vec<u8> = pieces
        .iter()
        .flat_map(|&(at, n)| host.bytes(at, n))
        .collect();
    assert_eq!(got, host.disk(4, 8));

    // SGL1 a Segment: a Data Block, then a Last Segment of two more.
    let last = host.segment(
        LISTS + 0x800,
        LAST_SEGMENT,
        &[
            desc(host.iova(DATA + 0x9000), 1024, DATA_BLOCK),
            desc(host.iova(DATA + 0x9c00), 512, DATA_BLOCK),
        ],
    );
    let first = desc(host.iova(DATA + 0x8000), 512, DATA_BLOCK);
    let sgl1 = host.segment(LISTS + 0x400, SEGMENT, &[first, last]);
    assert_eq!(host.read(20, 4, sgl1), 0);
    let mut got = host.bytes(DATA + 0x8000, 512);
    got.extend(host.bytes(DATA + 0x9000, 1024));
    got.extend(host.bytes(DATA + 0x9c00, 512));
    assert_eq!(got, host.disk(20, 4));

    // The same chain gathers a write: blocks 20..24 go to 40..44.
    assert_eq!(host.io(WRITE, 40, 4, 1, sgl1), 0);
    assert_eq!(host.disk(40, 4), host.disk(20, 4));
}

#[test]
fn bit_buckets_discard_read_data_and_are_ignored_on_writes() {
    let mut host = Host::new(true);
    host.mem.write_bytes(DATA, &[0xcc; 0x4000]);
    // Blocks 0..4: block 0 to A, blocks 1 and 2 discarded, block 3 to B.
    // The Bit Bucket's address (the canary at DATA) is not written.
    let (a, b) = (DATA + 0x1000, DATA + 0x2000);
    let sgl1 = host.segment(
        LISTS,
        LAST_SEGMENT,
        &[
            desc(host.iova(a), 512, DATA_BLOCK),
            desc(host.iova(DATA), 1024, BIT_BUCKET),
            desc(host.iova(b), 512, DATA_BLOCK),
        ],
    );
    assert_eq!(host.read(0, 4, sgl1), 0);
    assert_eq!(host.bytes(a, 512), host.disk(0, 1));
    assert_eq!(host.bytes(b, 512), host.disk(3, 1));
    assert_eq!(host.bytes(DATA, 0x1000), [0xcc; 0x1000]);
    assert_eq!(host.bytes(a + 512, 0x1000 - 512), [0xcc; 0x1000 - 512]);

    // A write: the Bit Bucket counts for nothing, the Data Block is the block.
    host.mem.write_bytes(a, &[0x33; 512]);
    let sgl1 = host.segment(
        LISTS + 0x400,
        LAST_SEGMENT,
        &[
            desc(0, 512, BIT_BUCKET),
            desc(host.iova(a), 512, DATA_BLOCK),
        ],
    );
    assert_eq!(host.io(WRITE, 30, 1, 1, sgl1), 0);
    assert_eq!(host.disk(30, 1), [0x33; 512]);
}

#[test]
fn malformed_sgls_are_refused_with_their_status_and_move_no_data() {
    let mut host = Host::new(true);
    let target = host.iova(DATA);
    let block = desc(target, 512, DATA_BLOCK);
    let s =
        |host: &Host, at: usize, kind: u8, list: &[[u8; 16]]| host.segment(LISTS + at, kind, list);
    let looping = {
        // A Segment whose only descriptor is a Segment descriptor for itself.
        let me = desc(host.iova(LISTS + 0x700), 16, SEGMENT);
        host.mem.write_bytes(LISTS + 0x700, &me);
        me
    };
    let cases: Vec<(&str, [u8; 16], u16)> = vec![
        ("keyed data block", desc(target, 512, 0x4), 0x11),
        ("reserved type", desc(target, 512, 0xf), 0x11),
        (
            "offset subtype",
            raw(target, 512, DATA_BLOCK << 4 | 1),
            0x11,
        ),
        (
            "transport data block in a segment",
            s(&host, 0, LAST_SEGMENT, &[desc(target, 512, 0x5)]),
            0x11,
        ),
        ("data block too short", desc(target, 511, DATA_BLOCK), 0x0f),
        ("data block too long", desc(target, 513, DATA_BLOCK), 0x0f),
        (
            "data block past the address space",
            desc(u64::MAX - 100, 512, DATA_BLOCK),
            0x0f,
        ),
        (
            "chain too short",
            s(
                &host,
                0x100,
                LAST_SEGMENT,
                &[
                    desc(target, 256, DATA_BLOCK),
                    desc(target + 256, 128, DATA_BLOCK),
                ],
            ),
            0x0f,
        ),
        (
            "more data blocks than data",
            s(&host, 0x200, LAST_SEGMENT, &[block, block]),
            0x0f,
        ),
        (
            "last segment of length 0",
            desc(host.iova(LISTS), 0, LAST_SEGMENT),
            0x0d,
        ),
        (
            "segment of length 24",
            desc(host.iova(LISTS), 24, SEGMENT),
            0x0d,
        ),
        (
            "a last segment holding a segment descriptor",
            s(
                &host,
                0x300,
                LAST_SEGMENT,
                &[desc(host.iova(LISTS + 0x100), 32, LAST_SEGMENT)],
            ),
            0x0d,
        ),
        (
            "a segment descriptor not last in its segment",
            s(
                &host,
                0x400,
                SEGMENT,
                &[desc(host.iova(LISTS + 0x100), 32, LAST_SEGMENT), block],
            ),
            0x0e,
        ),
        ("a segment chain that loops", looping, 0x0e),
        (
            "a segment not mapped",
            desc(1 << 40, 16, LAST_SEGMENT),
            0x04,
        ),
    ];
    for (name, sgl1, status) in cases {
        host.mem.write_bytes(DATA, &[0xcc; 1024]);
        assert_eq!(host.read(0, 1, sgl1), status, "{name}");
        assert_eq!(
            host.bytes(DATA, 1024),
            [0xcc; 1024],
            "{name}: no data moved"
        );
    }
    assert_eq!(host.io(READ, 0, 1, 3, block), 0x02, "PSDT 11b is reserved");
    // A refused write leaves the namespace as it was.
    let before = host.disk(0, 1);
    assert_eq!(host.io(WRITE, 0, 1, 1, desc(target, 256, DATA_BLOCK)), 0x0f);
    assert_eq!(host.disk(0, 1), before);
    // One fault counted: the unmapped segment.
    assert_eq!(host.model.lock().unwrap().dma_faults, 1);
}

#[test]
fn dword_granular_sgls_refuse_odd_data_blocks_before_moving_data() {
    let mut host = Host::with(true, true);
    assert_eq!(host.sgls(), 2 | 1 << 16, "SGLS 10b and Bit Buckets");
    // Dword aligned and sized: taken, in SGL1 or in a Last Segment list.
    assert_eq!(
        host.read(2, 1, desc(host.iova(DATA + 4), 512, DATA_BLOCK)),
        0
    );
    assert_eq!(host.bytes(DATA + 4, 512), host.disk(2, 1));
    let list = host.segment(
        LISTS,
        LAST_SEGMENT,
        &[
            desc(host.iova(DATA + 0x1000), 100, DATA_BLOCK),
            desc(host.iova(DATA + 0x2000), 412, DATA_BLOCK),
        ],
    );
    assert_eq!(host.read(3, 1, list), 0);
    let mut got = host.bytes(DATA + 0x1000, 100);
    got.extend(host.bytes(DATA + 0x2000, 412));
    assert_eq!(got, host.disk(3, 1));
    assert_eq!(host.model.lock().unwrap().sgl_list_commands, 1);

    // An odd address, or an odd length inside a list: 1Eh, nothing moved.
    host.mem.write_bytes(DATA + 0x3000, &[0xcc; 1024]);
    let odd = desc(host.iova(DATA + 0x3001), 512, DATA_BLOCK);
    assert_eq!(
        host.read(4, 1, odd),
        0x1e,
        "SGL Data Block Granularity Invalid"
    );
    let list = host.segment(
        LISTS,
        LAST_SEGMENT,
        &[
            desc(host.iova(DATA + 0x3000), 101, DATA_BLOCK),
            desc(host.iova(DATA + 0x3100), 411, DATA_BLOCK),
        ],
    );
    assert_eq!(host.read(4, 1, list), 0x1e);
    assert_eq!(host.bytes(DATA + 0x3000, 1024), [0xcc; 1024]);
    assert_eq!(host.model.lock().unwrap().sgl_list_commands, 2);
}
