//! NVMe data structures: what a controller reports ([`ControllerInfo`],
//! [`NamespaceInfo`], the [`Status`] of a failed command), and, inside the
//! driver, submission and completion queue entries and opcodes. Sections
//! refer to the NVM Express Base Specification 2.0 and the NVM Command Set
//! Specification 1.0.

use std::fmt;

/// Submission queue entry size (64 bytes).
pub(crate) const SQE_SIZE: usize = 64;
/// Completion queue entry size (16 bytes).
pub(crate) const CQE_SIZE: usize = 16;
/// The memory page size this driver configures (CC.MPS = 0).
pub(crate) const PAGE_SIZE: usize = 4096;

/// Admin command opcodes (base spec figure 138), those this driver sends.
pub(crate) mod admin {
    pub const DELETE_IO_SQ: u8 = 0x00;
    pub const CREATE_IO_SQ: u8 = 0x01;
    pub const GET_LOG_PAGE: u8 = 0x02;
    pub const DELETE_IO_CQ: u8 = 0x04;
    pub const CREATE_IO_CQ: u8 = 0x05;
    pub const IDENTIFY: u8 = 0x06;
    pub const SET_FEATURES: u8 = 0x09;
    /// Doorbell Buffer Config (base spec 5.8): shadow doorbells and EventIdx.
    pub const DOORBELL_BUFFER_CONFIG: u8 = 0x7c;
}

/// Optional Admin Command Support (OACS, Identify Controller bytes 257:256,
/// base spec figure 275), the bits this driver uses.
pub(crate) mod oacs {
    /// Bit 8: the Doorbell Buffer Config command is supported.
    pub const DOORBELL_BUFFER_CONFIG: u16 = 1 << 8;
}

/// SGL Support (SGLS, Identify Controller bytes 539:536, base spec figure
/// 275) and SGL descriptors (base spec 4.1.2, figures 116 to 122).
pub(crate) mod sgl {
    /// SGLS bits 1:0: 00b SGLs not supported for NVM commands.
    pub const SGLS_SUPPORT_MASK: u32 = 0b11;
    /// SGLS bits 1:0 = 01b: supported, no alignment or granularity rule.
    pub const SGLS_ANY_ALIGNMENT: u32 = 0b01;
    /// SGLS bits 1:0 = 10b: supported, data blocks dword aligned and of dword granularity.
    pub const SGLS_DWORD_ALIGNMENT: u32 = 0b10;
    /// PSDT (CDW0 bits 15:14) = 01b: SGLs for data, MPTR a contiguous buffer.
    pub const PSDT_SGL: u32 = 0b01 << 14;
    /// SGL Identifier (byte 15): SGL Data Block, subtype Address (type 0h, figure 118).
    pub const DATA_BLOCK: u8 = 0x00;
    /// SGL Identifier (byte 15): SGL Last Segment, subtype Address (type 3h,
    /// figure 121): the descriptor points at the last segment of the list,
    /// one that holds no further segment descriptor.
    pub const LAST_SEGMENT: u8 = 0x30;
}

/// NVM command set opcodes (NVM command set spec figure 18).
pub(crate) mod nvm {
    pub const FLUSH: u8 = 0x00;
    pub const WRITE: u8 = 0x01;
    pub const READ: u8 = 0x02;
    pub const WRITE_ZEROES: u8 = 0x08;
    pub const DATASET_MANAGEMENT: u8 = 0x09;
}

/// Identify CNS values (base spec figure 273).
pub(crate) mod cns {
    pub const NAMESPACE: u32 = 0x00;
    pub const CONTROLLER: u32 = 0x01;
    pub const ACTIVE_NAMESPACES: u32 = 0x02;
}

/// Feature identifiers (base spec figure 317).
pub(crate) mod feature {
    pub const NUMBER_OF_QUEUES: u32 = 0x07;
}

/// Log page identifiers (base spec figure 202).
pub(crate) mod log_page {
    pub const ERROR_INFORMATION: u8 = 0x01;
    pub const SMART_HEALTH: u8 = 0x02;
}

/// A 64-byte submission queue entry, as sixteen command dwords (section 4.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Command {
    pub cdw: [u32; 16],
}

impl Command {
    /// A command with `opcode` for namespace `nsid` (0 for none).
    #[inline]
    pub fn new(opcode: u8, nsid: u32) -> Command {
        let mut c = Command::default();
        c.cdw[0] = opcode as u32;
        c.cdw[1] = nsid;
        c
    }

    /// Sets the command identifier (CDW0 bits 31:16).
    #[inline]
    pub fn set_cid(&mut self, cid: u16) {
        self.cdw[0] = (self.cdw[0] & 0xffff) | (cid as u32) << 16;
    }

    /// The entry as eight quadwords, CDW(2i) in the low half of the i-th:
    /// stored one after the other they lay out the same bytes as the
    /// sixteen dwords on a little-endian host (as the dword stores of the
    /// entries always assumed), with half the stores.
    #[inline]
    pub fn qwords(&self) -> [u64; 8] {
        std::array::from_fn(|i| u64::from(self.cdw[2 * i]) | u64::from(self.cdw[2 * i + 1]) << 32)
    }

    /// Sets PRP entry 1 and 2 (data pointer, CDW6..9).
    #[inline]
    pub fn set_prps(&mut self, prp1: u64, prp2: u64) {
        self.cdw[6] = prp1 as u32;
        self.cdw[7] = (prp1 >> 32) as u32;
        self.cdw[8] = prp2 as u32;
        self.cdw[9] = (prp2 >> 32) as u32;
    }

    /// Sets SGL1 (DPTR, CDW6..9) to the 16-byte descriptor `desc` and PSDT to
    /// 01b (CDW0 bits 15:14): the data is described by an SGL (base spec 4.2).
    #[inline]
    pub fn set_sgl1(&mut self, desc: [u32; 4]) {
        self.cdw[0] = (self.cdw[0] & !(0b11 << 14)) | sgl::PSDT_SGL;
        self.cdw[6..10].copy_from_slice(&desc);
    }

    /// Doorbell Buffer Config (base spec 5.8): PRP1 the shadow doorbell
    /// page, PRP2 the EventIdx page.
    pub fn doorbell_buffer_config(shadow: u64, event_idx: u64) -> Command {
        let mut c = Command::new(admin::DOORBELL_BUFFER_CONFIG, 0);
        c.set_prps(shadow, event_idx);
        c
    }

    /// Identify (CNS in CDW10), data into one 4 KiB page.
    pub fn identify(cns: u32, nsid: u32) -> Command {
        let mut c = Command::new(admin::IDENTIFY, nsid);
        c.cdw[10] = cns;
        c
    }

    /// Create I/O Completion Queue `qid` of `entries`, physically
    /// contiguous (base spec 5.4, figure 151): polled when `vector` is None,
    /// else interrupts enabled (IEN, CDW11 bit 1) on that MSI-X vector
    /// (IV, CDW11 bits 31:16).
    pub fn create_io_cq(qid: u16, entries: u16, iova: u64, vector: Option<u16>) -> Command {
        let mut c = Command::new(admin::CREATE_IO_CQ, 0);
        c.set_prps(iova, 0);
        c.cdw[10] = (entries as u32 - 1) << 16 | qid as u32;
        c.cdw[11] = match vector {
            None => 1, // PC; IEN = 0: polled.
            Some(iv) => (iv as u32) << 16 | 1 << 1 | 1,
        };
        c
    }

    /// Create I/O Submission Queue `qid` of `entries`, completing on CQ `cqid`.
    pub fn create_io_sq(qid: u16, entries: u16, iova: u64, cqid: u16) -> Command {
        let mut c = Command::new(admin::CREATE_IO_SQ, 0);
        c.set_prps(iova, 0);
        c.cdw[10] = (entries as u32 - 1) << 16 | qid as u32;
        c.cdw[11] = (cqid as u32) << 16 | 1; // PC
        c
    }

    /// Delete I/O Submission or Completion Queue `qid`.
    pub fn delete_io_queue(opcode: u8, qid: u16) -> Command {
        let mut c = Command::new(opcode, 0);
        c.cdw[10] = qid as u32;
        c
    }

    /// Set Features: Number of Queues (zero-based counts in CDW11).
    pub fn set_number_of_queues(sq: u16, cq: u16) -> Command {
        let mut c = Command::new(admin::SET_FEATURES, 0);
        c.cdw[10] = feature::NUMBER_OF_QUEUES;
        c.cdw[11] = (cq as u32 - 1) << 16 | (sq as u32 - 1);
        c
    }

    /// Get Log Page `lid` of `bytes` (a multiple of 4) for `nsid`.
    pub fn get_log_page(lid: u8, nsid: u32, bytes: u32) -> Command {
        let mut c = Command::new(admin::GET_LOG_PAGE, nsid);
        let numd = bytes / 4 - 1;
        c.cdw[10] = (numd & 0xffff) << 16 | lid as u32;
        c.cdw[11] = numd >> 16;
        c
    }

    /// Read, Write or Write Zeroes of `blocks` (1..=65536) logical blocks at
    /// `lba`: NLB is the low 16 bits of CDW12, 0-based; callers split larger
    /// counts (a count out of range would set other fields of CDW12).
    #[inline]
    pub fn read_write(opcode: u8, nsid: u32, lba: u64, blocks: u32) -> Command {
        if !(1..=1 << 16).contains(&blocks) {
            too_many_blocks(blocks);
        }
        let mut c = Command::new(opcode, nsid);
        c.cdw[10] = lba as u32;
        c.cdw[11] = (lba >> 32) as u32;
        c.cdw[12] = blocks - 1;
        c
    }

    /// Dataset Management with `ranges` (1..=256) range entries, deallocate.
    pub fn deallocate(nsid: u32, ranges: u32) -> Command {
        let mut c = Command::new(nvm::DATASET_MANAGEMENT, nsid);
        c.cdw[10] = ranges - 1;
        c.cdw[11] = 1 << 2; // AD: attribute deallocate
        c
    }
}

#[cold]
#[track_caller]
fn too_many_blocks(blocks: u32) -> ! {
    panic!("{blocks} blocks in one command")
}

/// A completion queue entry (section 4.6).
// Public but hidden: the fuzz target `nvme_completion` parses and validates
// entries as a controller might write them. Not part of the API.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Command specific (DW0).
    pub result: u32,
    /// SQ Head Pointer: the controller's head of the submission queue.
    pub sq_head: u16,
    /// SQ Identifier: the submission queue of the command.
    pub sq_id: u16,
    /// Command Identifier.
    pub cid: u16,
    /// Status field, DW3 bits 31:17 (the phase bit removed).
    pub status: Status,
}

impl Completion {
    /// Parses the four dwords of an entry; returns it with its phase bit.
    pub fn parse(dw: [u32; 4]) -> (Completion, bool) {
        let c = Completion {
            result: dw[0],
            sq_head: dw[2] as u16,
            sq_id: (dw[2] >> 16) as u16,
            cid: dw[3] as u16,
            status: Status((dw[3] >> 17) as u16),
        };
        (c, dw[3] >> 16 & 1 == 1)
    }

    /// Checks an entry a controller wrote to queue `qid` (of `entries`
    /// entries, `in_flight[cid]` true for the commands outstanding) before the
    /// driver acts on it: a completion for a command that is not in flight, for
    /// another submission queue, or with an SQ head beyond the queue is a
    /// protocol error, whatever the device meant.
    #[inline]
    pub fn validate(&self, qid: u16, entries: u16, in_flight: &[bool]) -> crate::Result<()> {
        // Every completion pays these three compares; only a bad one pays
        // for finding which check it fails.
        let known = in_flight.get(self.cid as usize).copied().unwrap_or(false);
        if known && self.sq_id == qid && self.sq_head < entries {
            return Ok(());
        }
        Err(self.invalid(qid, entries, known))
    }

    /// The error of an entry that [`Completion::validate`] refuses
    /// (`known`: whether its command ID is in flight), the first check it
    /// fails.
    #[cold]
    fn invalid(&self, qid: u16, entries: u16, known: bool) -> crate::Error {
        let protocol = |what: String| crate::Error::Protocol(format!("queue {qid}: {what}"));
        if !known {
            return protocol(format!(
                "completion for command ID {} that is not in flight",
                self.cid
            ));
        }
        if self.sq_id != qid {
            return protocol(format!("completion names SQ {}", self.sq_id));
        }
        debug_assert!(self.sq_head >= entries);
        protocol(format!("SQ head {} beyond {entries} entries", self.sq_head))
    }
}

/// The 15-bit status field of a completion (section 4.6.1.2): the status
/// code (bits 7:0), its type (bits 10:8), More (bit 13) and Do Not Retry
/// (bit 14). Displayed with its name in the specification, e.g. "LBA Out of
/// Range (Generic status 0x80)".
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16);

/// Status Code Type (SCT, bits 10:8 of the status field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusType {
    /// 0: Generic Command Status.
    Generic,
    /// 1: Command Specific Status.
    CommandSpecific,
    /// 2: Media and Data Integrity Errors.
    MediaAndDataIntegrity,
    /// 3: Path Related Status.
    Path,
    /// 7: Vendor Specific.
    Vendor,
    /// 4 to 6, reserved: the value.
    Reserved(u8),
}

impl Status {
    /// Successful completion (status code and type both 0).
    pub fn is_success(self) -> bool {
        self.0 & 0x7ff == 0
    }
    /// Status Code (SC).
    pub fn code(self) -> u8 {
        self.0 as u8
    }
    /// Status Code Type (SCT).
    pub fn kind(self) -> StatusType {
        match (self.0 >> 8) & 7 {
            0 => StatusType::Generic,
            1 => StatusType::CommandSpecific,
            2 => StatusType::MediaAndDataIntegrity,
            3 => StatusType::Path,
            7 => StatusType::Vendor,
            t => StatusType::Reserved(t as u8),
        }
    }
    /// Do Not Retry (DNR): the same command would fail again.
    pub fn do_not_retry(self) -> bool {
        self.0 >> 14 & 1 == 1
    }
    /// The name of the status code in the specification, when this driver knows it.
    pub fn name(self) -> &'static str {
        match (self.kind(), self.code()) {
            (StatusType::Generic, 0x00) => "Successful Completion",
            (StatusType::Generic, 0x01) => "Invalid Command Opcode",
            (StatusType::Generic, 0x02) => "Invalid Field in Command",
            (StatusType::Generic, 0x03) => "Command ID Conflict",
            (StatusType::Generic, 0x04) => "Data Transfer Error",
            (StatusType::Generic, 0x06) => "Internal Error",
            (StatusType::Generic, 0x07) => "Command Abort Requested",
            (StatusType::Generic, 0x0b) => "Invalid Namespace or Format",
            (StatusType::Generic, 0x0d) => "Invalid SGL Segment Descriptor",
            (StatusType::Generic, 0x0e) => "Invalid Number of SGL Descriptors",
            (StatusType::Generic, 0x0f) => "Data SGL Length Invalid",
            (StatusType::Generic, 0x11) => "SGL Descriptor Type Invalid",
            (StatusType::Generic, 0x13) => "PRP Offset Invalid",
            (StatusType::Generic, 0x1e) => "SGL Data Block Granularity Invalid",
            (StatusType::Generic, 0x80) => "LBA Out of Range",
            (StatusType::Generic, 0x81) => "Capacity Exceeded",
            (StatusType::Generic, 0x82) => "Namespace Not Ready",
            (StatusType::CommandSpecific, 0x00) => "Completion Queue Invalid",
            (StatusType::CommandSpecific, 0x01) => "Invalid Queue Identifier",
            (StatusType::CommandSpecific, 0x02) => "Invalid Queue Size",
            (StatusType::CommandSpecific, 0x09) => "Invalid Log Page",
            (StatusType::CommandSpecific, 0x0c) => "Invalid Queue Deletion",
            (StatusType::CommandSpecific, 0x0d) => "Feature Identifier Not Saveable",
            (StatusType::CommandSpecific, 0x80) => "Conflicting Attributes",
            (StatusType::MediaAndDataIntegrity, 0x80) => "Write Fault",
            (StatusType::MediaAndDataIntegrity, 0x81) => "Unrecovered Read Error",
            (StatusType::MediaAndDataIntegrity, 0x82) => "End-to-end Guard Check Error",
            (StatusType::MediaAndDataIntegrity, 0x86) => "Access Denied",
            (StatusType::MediaAndDataIntegrity, 0x87) => "Deallocated or Unwritten Logical Block",
            _ => "unknown status",
        }
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:?} status {:#04x}{})",
            self.name(),
            self.kind(),
            self.code(),
            if self.do_not_retry() {
                ", do not retry"
            } else {
                ""
            }
        )
    }
}

/// What Identify Controller says that this driver uses (figure 275), as
/// [`crate::Controller::info`] returns it. More fields may be added.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ControllerInfo {
    /// PCI Vendor ID (VID).
    pub vendor_id: u16,
    /// Serial Number (SN): ASCII, spaces trimmed (and bytes that are not
    /// printable ASCII at the end); other such bytes read as `?`.
    pub serial: String,
    /// Model Number (MN), trimmed as the serial number.
    pub model: String,
    /// Firmware Revision (FR), trimmed as the serial number.
    pub firmware: String,
    /// Maximum Data Transfer Size as a power of two of the minimum page size; 0 = no limit.
    pub mdts: u8,
    /// Controller ID (CNTLID).
    pub controller_id: u16,
    /// Optional Admin Command Support (OACS; bit 8: Doorbell Buffer Config).
    pub oacs: u16,
    /// Optional NVM Command Support (bit 2: Dataset Management, bit 3: Write Zeroes).
    pub oncs: u16,
    /// Volatile Write Cache present (VWC bit 0).
    pub volatile_write_cache: bool,
    /// SGL Support (SGLS), 0 when not supported.
    pub sgls: u32,
    /// Number of Namespaces (the largest valid NSID).
    pub namespaces: u32,
}

impl ControllerInfo {
    /// Parses the 4096-byte Identify Controller data structure.
    // Public but hidden: the fuzz target `nvme_identify` feeds it any bytes.
    #[doc(hidden)]
    pub fn parse(d: &[u8; 4096]) -> ControllerInfo {
        ControllerInfo {
            vendor_id: le16(d, 0),
            serial: ascii(&d[4..24]),
            model: ascii(&d[24..64]),
            firmware: ascii(&d[64..72]),
            mdts: d[77],
            controller_id: le16(d, 78),
            oacs: le16(d, 256),
            oncs: le16(d, 520),
            volatile_write_cache: d[525] & 1 == 1,
            sgls: le32(d, 536),
            namespaces: le32(d, 516),
        }
    }
    /// Dataset Management (deallocate) supported.
    pub fn supports_deallocate(&self) -> bool {
        self.oncs & (1 << 2) != 0
    }
    /// Write Zeroes supported.
    pub fn supports_write_zeroes(&self) -> bool {
        self.oncs & (1 << 3) != 0
    }
    /// Doorbell Buffer Config (shadow doorbells) supported: OACS bit 8.
    pub fn supports_shadow_doorbells(&self) -> bool {
        self.oacs & oacs::DOORBELL_BUFFER_CONFIG != 0
    }
    /// SGLs supported for NVM command data (SGLS bits 1:0 are 01b or 10b).
    pub fn supports_sgl(&self) -> bool {
        matches!(
            self.sgls & sgl::SGLS_SUPPORT_MASK,
            sgl::SGLS_ANY_ALIGNMENT | sgl::SGLS_DWORD_ALIGNMENT
        )
    }
    /// SGL data blocks may have any address and length (SGLS bits 1:0 are
    /// 01b); with 10b they must be dword aligned and of dword granularity.
    pub fn sgl_without_alignment_rule(&self) -> bool {
        self.sgls & sgl::SGLS_SUPPORT_MASK == sgl::SGLS_ANY_ALIGNMENT
    }
}

/// What Identify Namespace says that this driver uses (NVM command set spec
/// figure 97), as [`crate::Controller::namespace`] returns it. More fields
/// may be added.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NamespaceInfo {
    /// The namespace ID.
    pub nsid: u32,
    /// Namespace Size in logical blocks.
    pub blocks: u64,
    /// Logical block size in bytes, from the LBA format in use.
    pub block_size: u32,
    /// Metadata bytes per block in the format in use (this driver supports 0).
    pub metadata_size: u16,
}

impl NamespaceInfo {
    /// Parses the 4096-byte Identify Namespace data structure. None if the
    /// LBA format in use is invalid (a block size under 512 bytes or over 64 KiB).
    // Public but hidden: the fuzz target `nvme_identify` feeds it any bytes.
    #[doc(hidden)]
    pub fn parse(nsid: u32, d: &[u8; 4096]) -> Option<NamespaceInfo> {
        let flbas = d[26];
        let format = ((flbas & 0x0f) | ((flbas >> 1) & 0x30)) as usize;
        let lbaf = le32(d, 128 + 4 * format.min(63));
        let lbads = (lbaf >> 16) as u8;
        if !(9..=16).contains(&lbads) {
            return None;
        }
        Some(NamespaceInfo {
            nsid,
            blocks: le64(d, 0),
            block_size: 1 << lbads,
            metadata_size: lbaf as u16,
        })
    }
    /// Size in bytes (saturating: the count comes from the device).
    pub fn bytes(&self) -> u64 {
        self.blocks.saturating_mul(self.block_size as u64)
    }
}

/// Parses an Active Namespace ID list (up to 1024 NSIDs, ended by 0).
// Public but hidden: the fuzz target `nvme_identify` feeds it any bytes.
#[doc(hidden)]
pub fn parse_namespace_list(d: &[u8; 4096]) -> Vec<u32> {
    (0..1024)
        .map(|i| le32(d, i * 4))
        .take_while(|&n| n != 0)
        .collect()
}

fn le16(d: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([d[at], d[at + 1]])
}

fn le32(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

fn le64(d: &[u8], at: usize) -> u64 {
    le32(d, at) as u64 | (le32(d, at + 4) as u64) << 32
}

/// A space-padded ASCII field, trimmed; anything not printable becomes `?`.
fn ascii(bytes: &[u8]) -> String {
    let s: String = bytes
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect();
    s.trim_end_matches([' ', '?']).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_first_check_an_entry_fails() {
        let in_flight = [false, true, false, false];
        let entry = |cid: u16, sq_id: u16, sq_head: u16| {
            Completion::parse([
                0,
                0,
                u32::from(sq_id) << 16 | u32::from(sq_head),
                cid.into(),
            ])
            .0
        };
        let error = |c: Completion| match c.validate(1, 4, &in_flight) {
            Err(crate::Error::Protocol(what)) => what,
            other => panic!("{other:?}"),
        };
        assert!(entry(1, 1, 3).validate(1, 4, &in_flight).is_ok());
        // Each check alone, then all failing: the command ID is named first.
        assert_eq!(
            error(entry(0, 1, 3)),
            "queue 1: completion for command ID 0 that is not in flight"
        );
        assert_eq!(
            error(entry(9, 1, 3)),
            "queue 1: completion for command ID 9 that is not in flight"
        );
        assert_eq!(error(entry(1, 2, 3)), "queue 1: completion names SQ 2");
        assert_eq!(error(entry(1, 1, 4)), "queue 1: SQ head 4 beyond 4 entries");
        assert_eq!(
            error(entry(2, 2, 4)),
            "queue 1: completion for command ID 2 that is not in flight"
        );
        assert_eq!(error(entry(1, 2, 4)), "queue 1: completion names SQ 2");
    }

    #[test]
    fn qwords_lay_out_the_dwords_in_order() {
        let mut c = Command::read_write(nvm::READ, 1, 0x1_0000_0002, 8);
        c.set_cid(0x1234);
        let bytes: Vec<u8> = c.qwords().iter().flat_map(|q| q.to_le_bytes()).collect();
        let dwords: Vec<u8> = c.cdw.iter().flat_map(|d| d.to_le_bytes()).collect();
        assert_eq!(bytes, dwords);
    }

    #[test]
    fn completion_fields_and_phase() {
        let (c, phase) = Completion::parse([7, 0, 0x0003_0005, 0x0001_002a | (0x0281 << 17)]);
        assert_eq!((c.result, c.sq_head, c.sq_id, c.cid), (7, 5, 3, 42));
        assert!(phase);
        assert_eq!(c.status.kind(), StatusType::MediaAndDataIntegrity);
        assert_eq!(c.status.code(), 0x81);
        assert_eq!(c.status.name(), "Unrecovered Read Error");
        assert!(!c.status.is_success());
    }

    #[test]
    fn status_decoding() {
        assert!(Status(0).is_success());
        let s = Status(0x4080);
        assert_eq!(
            (s.kind(), s.name(), s.do_not_retry()),
            (StatusType::Generic, "LBA Out of Range", true)
        );
        assert!(s.to_string().contains("LBA Out of Range"), "{s}");
        assert_eq!(Status(0x0101).kind(), StatusType::CommandSpecific);
        assert_eq!(Status(0x0501).kind(), StatusType::Reserved(5));
        assert_eq!(Status(0x00ff).name(), "unknown status");
        assert_eq!(Status(0x000f).name(), "Data SGL Length Invalid");
        assert_eq!(Status(0x001e).name(), "SGL Data Block Granularity Invalid");
    }

    #[test]
    fn read_command_layout() {
        let mut c = Command::read_write(nvm::READ, 1, 0x1_0000_0002, 8);
        c.set_cid(9);
        c.set_prps(0x1000, 0x2000_0000_3000);
        assert_eq!(c.cdw[0], 0x0009_0002);
        assert_eq!((c.cdw[1], c.cdw[10], c.cdw[11], c.cdw[12]), (1, 2, 1, 7));
        assert_eq!(
            (c.cdw[6], c.cdw[7], c.cdw[8], c.cdw[9]),
            (0x1000, 0, 0x3000, 0x2000)
        );
    }

    #[test]
    fn identify_parsing_validates_the_format() {
        let mut d = [0u8; 4096];
        d[0..8].copy_from_slice(&1000u64.to_le_bytes());
        d[26] = 1; // format 1
        d[132..136].copy_from_slice(&(12u32 << 16).to_le_bytes());
        let ns = NamespaceInfo::parse(1, &d).unwrap();
        assert_eq!(
            (ns.blocks, ns.block_size, ns.bytes()),
            (1000, 4096, 4_096_000)
        );
        d[132..136].copy_from_slice(&(3u32 << 16).to_le_bytes());
        assert_eq!(
            NamespaceInfo::parse(1, &d),
            None,
            "an 8-byte block is not believed"
        );
        let mut c = [0u8; 4096];
        c[24..40].copy_from_slice(b"QEMU NVMe Ctrl  ");
        c[4..7].copy_from_slice(&[b'a', 0xff, b'b']);
        c[77] = 7;
        let info = ControllerInfo::parse(&c);
        assert_eq!(
            (info.model.as_str(), info.serial.as_str(), info.mdts),
            ("QEMU NVMe Ctrl", "a?b", 7)
        );
        let mut l = [0u8; 4096];
        l[0..12].copy_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse_namespace_list(&l), vec![1, 2]);
    }
}
