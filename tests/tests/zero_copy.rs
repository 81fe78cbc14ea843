//! Zero copy, witnessed from outside the guest: QEMU's IOMMU trace
//! (`vtd_iotlb_page_hit` / `vtd_iotlb_page_update`) names the device
//! (source id) and the IOVA of every DMA translation. One boot, three runs,
//! each on its own NVMe controller and NIC so their translations are told
//! apart by source id:
//!
//! - the forwarder: the NIC fetches every datagram's payload from pages the
//!   NVMe controller reached (its read buffers), at a distinct address each;
//! - the forwarder with `--copy-payload`: the NIC fetches nothing from such
//!   pages, and the forwarder's own figures count the copy;
//! - the receiver: the NVMe controller reads the pages the NIC wrote, for
//!   at least as many datagrams as it reports written from device memory.
//!
//! The host checks the bytes as everywhere else (stream hash, disk image).

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

use vfio_tests::check::{random_bytes, HOST_MAC};
use vfio_tests::dmaf;
use vfio_tests::machine::{mac_string, Machine, Outcome};
use vfio_tests::wire::Capture;

const IMAGE_BYTES: usize = 4 << 20;
/// The forwarder's datagram payload at MTU 1500 (IPv4, UDP, DMAF headers off).
const PAYLOAD: usize = 1500 - 20 - 8 - 16;
/// The forwarder's NVMe reads: each read's buffer is cut into datagrams.
const CHUNK: usize = 64 << 10;
/// Frame headers the forwarder writes with the CPU: Ethernet, IPv4, UDP, DMAF.
const HEADER: u64 = 14 + 20 + 8 + 16;
const FWD_NVME: &str = "0000:00:03.0";
const FWD_NIC: &str = "0000:00:04.0";
const COPY_NVME: &str = "0000:00:05.0";
const COPY_NIC: &str = "0000:00:06.0";
const RECV_NVME: &str = "0000:00:07.0";
const RECV_NIC: &str = "0000:00:08.0";
const RECV_PORT: u16 = 9700;
/// The receiver's stream: whole 1024-byte blocks, then 1456-byte datagrams
/// ending inside a block. QEMU's controller takes SGLs without an alignment
/// rule, so the receiver gathers every datagram from its receive buffer
/// (nothing staged by the CPU).
const RECV_DIRECT: usize = 512 << 10;
const RECV_BYTES: usize = RECV_DIRECT + (128 << 10) + 99;
const RECV_DISK: usize = 2 << 20;

struct Run {
    outcome: Outcome,
    frames: Vec<Vec<u8>>,
    copy_frames: Vec<Vec<u8>>,
    recv_disk: Vec<u8>,
    /// (source id, IOVA) of every translation, in order.
    trace: Vec<(u16, u64)>,
}

fn image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| random_bytes(IMAGE_BYTES, 0x70))
}

fn recv_file() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| random_bytes(RECV_BYTES, 0x71))
}

fn run() -> &'static Run {
    static RUN: OnceLock<Result<Run, String>> = OnceLock::new();
    vfio_tests::once(&RUN, boot)
}

fn boot() -> vfio_tests::Result<Run> {
    let mut m = Machine::new("zero-copy");
    m.trace("vtd_iotlb_page_*");
    let dir = m.dir().to_path_buf();
    for (name, nvme, nic) in [("a", FWD_NVME, FWD_NIC), ("b", COPY_NVME, COPY_NIC)] {
        let disk = dir.join(format!("{name}.img"));
        std::fs::write(&disk, image()).expect("write a disk image");
        assert_eq!(m.nvme(&disk, ""), nvme);
        let n = m.e1000("e1000");
        assert_eq!(m.nics_addr(n), nic);
    }
    let recv_disk = dir.join("recv.img");
    std::fs::write(&recv_disk, vec![0u8; RECV_DISK]).expect("write the receiver's disk");
    assert_eq!(m.nvme(&recv_disk, ""), RECV_NVME);
    let rnic = m.e1000("e1000");
    assert_eq!(m.nics_addr(rnic), RECV_NIC);
    m.step(
        "bind",
        &format!("devbind bind {FWD_NVME} {FWD_NIC} {COPY_NVME} {COPY_NIC} {RECV_NVME} {RECV_NIC}"),
    );
    let fwd = |nvme: &str, nic: &str, port: u16, extra: &str| {
        format!(
            "forwarder --nvme {nvme} --nic {nic} --dst-mac {} --dst-ip 192.0.2.1 --dst-port {port} --json {extra}",
            mac_string(&HOST_MAC)
        )
    };
    // PRPs: QEMU's trace then names each 4 KiB page the controller wrote.
    // With an SGL data block (the default for reads over two pages) QEMU
    // translated each contiguous range in fewer lookups: the trace named
    // pages for 192 of the 2,944 datagrams, though the stream was intact.
    m.step(
        "forward",
        &fwd(FWD_NVME, FWD_NIC, 9000, "--data-pointer prp"),
    );
    m.step("copy", &fwd(COPY_NVME, COPY_NIC, 9001, "--copy-payload"));
    m.step(
        "receiver",
        &format!("receiver --nic {RECV_NIC} --nvme {RECV_NVME} --port {RECV_PORT} --json"),
    );
    let running = m.start()?;
    let capture = Capture::start(&running.nics[0].socket);
    let copy_capture = Capture::start(&running.nics[1].socket);
    running.wait_for(
        &format!("receiver: listening on port {RECV_PORT}"),
        Duration::from_secs(300),
    )?;
    // QEMU's e1000 takes no frame for 1 s after the driver writes RCTL.
    std::thread::sleep(Duration::from_millis(1200));
    let mac = running.nics[rnic].mac;
    for burst in recv_frames(mac).chunks(16) {
        for f in burst {
            running.nics[rnic].socket.send(f).expect("send a frame");
        }
        std::thread::sleep(Duration::from_millis(4));
    }
    let outcome = running.wait();
    let (frames, copy_frames) = (capture.stop(), copy_capture.stop());
    let outcome = outcome?;
    let text = std::fs::read_to_string(dir.join("trace.log")).expect("QEMU wrote its trace");
    Ok(Run {
        outcome,
        frames,
        copy_frames,
        recv_disk: std::fs::read(&recv_disk).expect("read the receiver's disk"),
        trace: parse_trace(&text),
    })
}

/// The receiver's stream in offset order: 1024-byte datagrams, then
/// 1456-byte ones, then the end marker.
fn recv_frames(guest_mac: [u8; 6]) -> Vec<Vec<u8>> {
    let file = recv_file();
    let mut frames = Vec::new();
    let mut offset = 0;
    let frame = |seq: usize, offset: usize, data: &[u8]| {
        let mut payload = b"DMAF".to_vec();
        payload.extend_from_slice(&(seq as u32).to_be_bytes());
        payload.extend_from_slice(&(offset as u64).to_be_bytes());
        payload.extend_from_slice(data);
        let builder = etherparse::PacketBuilder::ethernet2(HOST_MAC, guest_mac)
            .ipv4([192, 0, 2, 1], [198, 51, 100, 1], 64)
            .udp(5000, RECV_PORT);
        let mut f = Vec::with_capacity(builder.size(payload.len()));
        builder.write(&mut f, &payload).expect("a frame builds");
        f
    };
    while offset < file.len() {
        let n = if offset < RECV_DIRECT { 1024 } else { 1456 };
        let end = (offset + n).min(file.len());
        frames.push(frame(frames.len(), offset, &file[offset..end]));
        offset = end;
    }
    frames.push(frame(frames.len(), file.len(), &[]));
    frames
}

/// (source id, IOVA) of each `vtd_iotlb_page_hit/update` line.
fn parse_trace(text: &str) -> Vec<(u16, u64)> {
    let hex = |line: &str, key: &str| -> Option<u64> {
        let at = line.find(key)? + key.len();
        let digits: String = line[at..]
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        u64::from_str_radix(&digits, 16).ok()
    };
    text.lines()
        .filter(|l| l.contains("vtd_iotlb_page_"))
        .filter_map(|l| Some((hex(l, "sid 0x")? as u16, hex(l, "iova 0x")?)))
        .collect()
}

/// The source id of the device at `bdf` (bus << 8 | device << 3 | function).
fn sid(bdf: &str) -> u16 {
    let n = |s: &str| u16::from_str_radix(s, 16).expect("hex");
    let (bus, rest) = bdf[5..].split_once(':').expect("bus:dev.fn");
    let (dev, func) = rest.split_once('.').expect("dev.fn");
    n(bus) << 8 | n(dev) << 3 | n(func)
}

/// The translations of `reader` that land in 4 KiB pages `writer` also
/// reached (the others: `reader`'s own rings and buffers), and how many
/// translations `reader` made in all. Buffers are reused, so one address
/// may be fetched for several datagrams: these are counts, not sets.
fn shared_page_addresses(writer: &str, reader: &str) -> (Vec<u64>, usize) {
    let trace = &run().trace;
    let pages: HashSet<u64> = trace
        .iter()
        .filter(|t| t.0 == sid(writer))
        .map(|t| t.1 >> 12)
        .collect();
    let all: Vec<u64> = trace
        .iter()
        .filter(|t| t.0 == sid(reader))
        .map(|t| t.1)
        .collect();
    let shared = all.iter().copied().filter(|a| pages.contains(&(a >> 12)));
    (shared.collect(), all.len())
}

fn summary(step: &str) -> serde_json::Value {
    run().outcome.json(step)
}

fn n(s: &serde_json::Value, key: &str) -> u64 {
    s[key].as_u64().unwrap_or_else(|| panic!("no {key} in {s}"))
}

#[test]
fn the_nic_fetches_every_payload_from_pages_the_nvme_controller_wrote() {
    let r = run();
    let stream = dmaf::reassemble(&r.frames, 9000);
    assert!(stream.data == image(), "the stream is the image");
    let datagrams = IMAGE_BYTES / CHUNK * CHUNK.div_ceil(PAYLOAD);
    let (shared, nic_translations) = shared_page_addresses(FWD_NVME, FWD_NIC);
    assert!(
        shared.len() >= datagrams,
        "the NIC made {} translations in pages the NVMe controller reached, for {datagrams} datagrams ({nic_translations} NIC translations in all)",
        shared.len()
    );
    let s = summary("forward");
    assert_eq!(n(&s, "payload_bytes_copied_by_cpu"), 0, "{s}");
    assert_eq!(
        n(&s, "bytes_sent_from_device_memory"),
        IMAGE_BYTES as u64,
        "{s}"
    );
    assert_eq!(
        n(&s, "bytes_sent_from_cpu_memory"),
        n(&s, "frames_sent") * HEADER,
        "the CPU wrote only the headers: {s}"
    );
    assert_eq!(
        n(&s, "frames_sent"),
        datagrams as u64 + 1,
        "and the end marker: {s}"
    );
}

#[test]
fn a_forwarder_that_copies_is_seen_copying_by_its_figures_and_by_the_iommu() {
    let r = run();
    let stream = dmaf::reassemble(&r.copy_frames, 9001);
    assert!(stream.data == image(), "the copied stream is the image too");
    let (shared, nic_translations) = shared_page_addresses(COPY_NVME, COPY_NIC);
    assert!(
        nic_translations > IMAGE_BYTES / PAYLOAD,
        "the NIC's DMA is in the trace: {nic_translations} translations"
    );
    assert!(
        shared.is_empty(),
        "with --copy-payload the NIC reads no page the NVMe controller wrote ({} addresses did)",
        shared.len()
    );
    let s = summary("copy");
    assert_eq!(
        n(&s, "payload_bytes_copied_by_cpu"),
        IMAGE_BYTES as u64,
        "{s}"
    );
    assert_eq!(n(&s, "bytes_sent_from_device_memory"), 0, "{s}");
}

#[test]
fn the_nvme_controller_reads_the_pages_the_nic_wrote_for_every_datagram() {
    let r = run();
    let s = summary("receiver");
    assert_eq!(s["complete"], true, "{s}");
    assert!(
        r.recv_disk[..RECV_BYTES] == *recv_file(),
        "the disk holds the stream"
    );
    assert!(
        r.recv_disk[RECV_BYTES..].iter().all(|&b| b == 0),
        "and nothing past it"
    );
    assert_eq!(s["mode"], "gather", "{s}");
    assert_eq!(
        n(&s, "written_from_device_memory"),
        RECV_BYTES.div_ceil(512) as u64 * 512,
        "every block by DMA from receive buffers (and the last block's tail, read from the disk): {s}"
    );
    assert_eq!(n(&s, "written_from_cpu_memory"), 0, "{s}");
    assert_eq!(n(&s, "payload_bytes_copied"), 0, "{s}");
    let (shared, _) = shared_page_addresses(RECV_NIC, RECV_NVME);
    let datagrams = RECV_DIRECT / 1024 + (RECV_BYTES - RECV_DIRECT).div_ceil(1456);
    assert!(
        shared.len() >= datagrams,
        "the NVMe controller made {} translations in pages the NIC wrote, for {datagrams} datagrams gathered from receive buffers",
        shared.len()
    );
}

/// The source-id arithmetic the assertions rest on.
#[test]
fn source_ids_are_bus_device_function() {
    assert_eq!(sid("0000:00:04.0"), 0x20);
    assert_eq!(sid("0000:01:02.3"), 0x113);
    let t = parse_trace(
        "123@1.5:vtd_iotlb_page_hit IOTLB page hit sid 0x20 iova 0x100a40 slpte 0x3 domain 0x1\n\
         vtd_iotlb_page_update IOTLB page update sid 0x18 iova 0x200000 slpte 0x3 domain 0x1\nother line",
    );
    assert_eq!(t, [(0x20, 0x100a40), (0x18, 0x200000)]);
}
