//! The forwarder in the QEMU machine: NVMe reads land in pool buffers the
//! e1000 transmits from. The host reassembles the datagrams from the NIC's
//! wire by offset and checks the hash against the image it wrote, every IPv4
//! and UDP checksum (etherparse), and every sequence number.

use std::sync::OnceLock;
use std::time::Duration;

use sha2::{Digest, Sha256};
use vfio_tests::check::{random_bytes, HOST_MAC};
use vfio_tests::dmaf;
use vfio_tests::machine::{mac_string, Machine, Outcome, VIRTIO_NET};
use vfio_tests::wire::Capture;

const NVME: &str = "0000:00:03.0";
const NIC: &str = "0000:00:04.0";
const IMAGE_BYTES: usize = 64 << 20;
const BLOCKS: u64 = (IMAGE_BYTES / 512) as u64;
const TAIL_BLOCKS: u64 = 1000;
/// A second controller whose drive QEMU throttles to 4 MiB/s: its 8 MiB take
/// 2 s, so a kill after 1 s lands mid-transfer.
const SLOW_NVME: &str = "0000:00:05.0";
const SLOW_BYTES: usize = 8 << 20;
/// Two NICs wired to each other: ours, and one on the kernel's e1000 driver
/// with a UDP socket (udp-sink) behind it.
const NIC_PAIR: &str = "0000:00:06.0";
const NIC_KERNEL: &str = "0000:00:07.0";
/// Bytes forwarded into the kernel's socket: not a multiple of the block size.
/// Paced (UDP has no flow control): under TCG the guest kernel's receive path
/// keeps up with 16 MB/s, and loses datagrams at the forwarder's full rate.
/// QEMU's e1000 takes no frame for 1 s after each RCTL write (its
/// flush_queue_timer), so the stream starts 1.2 s after the kernel set the NIC up.
const SINK_BYTES: u64 = (16 << 20) + 1001;
/// An odd range for `--bytes`: from block 7, not a multiple of the block or
/// the datagram size.
const ODD_LBA: u64 = 7;
const ODD_BYTES: u64 = 3_000_001;
/// Bytes the forwarder sends as an unprivileged user.
const USER_BYTES: usize = 1 << 20;
/// The receiver's namespace: filled with a pattern first, so the test sees
/// what the receiver wrote and what it left alone.
const RECV_NVME: &str = "0000:00:08.0";
const RECV_DISK_BYTES: usize = 8 << 20;
const RECV_LBA: u64 = 8;
/// The file the host sends to the receiver: its first MiB in 1024-byte
/// datagrams (whole blocks), the rest in 1456-byte ones, ending inside a
/// block. On the e1000 the receiver gathers every datagram from its receive
/// buffer with SGLs (QEMU's controller has no SGL alignment rule); on
/// virtio-net it is told to use PRPs (`--data-pointer prp`): whole-block
/// datagrams by DMA from the receive buffers, the rest staged.
const RECV_BYTES: usize = (3 << 20) + 777;
const RECV_ALIGNED: usize = 1 << 20;
const RECV_PORT: u16 = 9200;
/// The receivers run under this address-space limit (`ulimit -v`, KiB): 1 GiB.
const RECV_AS_LIMIT_KIB: u64 = 1 << 20;
/// The same forwarder and receiver runs on a virtio-net NIC.
const VNIC: &str = "0000:00:09.0";
const VRECV_PORT: u16 = 9201;
const VRECV_LBA: u64 = 8192 + 8;

struct Run {
    outcome: Outcome,
    frames: Vec<Vec<u8>>,
    /// The receiver's disk image after the guest stopped.
    recv_disk: Vec<u8>,
}

fn run() -> &'static Run {
    static RUN: OnceLock<Result<Run, String>> = OnceLock::new();
    vfio_tests::once(&RUN, boot)
}

fn slow_image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| random_bytes(SLOW_BYTES, 0x65))
}

fn image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| random_bytes(IMAGE_BYTES, 0x64))
}

fn boot() -> vfio_tests::Result<Run> {
    let mut m = Machine::new("forwarder");
    let m_dir = m.dir().to_path_buf();
    let disk = m.dir().join("disk.img");
    std::fs::write(&disk, image()).expect("write the disk image");
    assert_eq!(m.nvme(&disk, ""), NVME);
    let nic = m.e1000("e1000");
    assert_eq!(m.nics_addr(nic), NIC);
    let slow = m.dir().join("slow.img");
    std::fs::write(&slow, slow_image()).expect("write the second disk image");
    let throttled =
        std::path::PathBuf::from(format!("{},throttling.bps-total=4194304", slow.display()));
    assert_eq!(m.nvme(&throttled, ""), SLOW_NVME);
    assert_eq!(
        m.nic_pair("e1000", "e1000"),
        (NIC_PAIR.to_string(), NIC_KERNEL.to_string())
    );
    let recv_disk = m.dir().join("recv.img");
    std::fs::write(&recv_disk, recv_disk_before()).expect("write the receiver's disk image");
    assert_eq!(m.nvme(&recv_disk, ""), RECV_NVME);
    let vnic = m.e1000(VIRTIO_NET);
    assert_eq!(m.nics_addr(vnic), VNIC);
    let fwd = |port: u16, extra: &str| {
        format!("forwarder --nvme {NVME} --nic {NIC} --dst-mac {} --dst-ip 192.0.2.1 --dst-port {port} --json {extra}", mac_string(&HOST_MAC))
    };
    m.step(
        "bind",
        &format!("devbind bind {NVME} {NIC} {SLOW_NVME} {NIC_PAIR} {RECV_NVME} {VNIC}"),
    );
    m.step(
        "past-end",
        &fwd(9002, &format!("--lba {} --blocks 2", BLOCKS - 1)),
    );
    m.step(
        "tail",
        &fwd(
            9001,
            &format!("--lba {} --blocks {TAIL_BLOCKS}", BLOCKS - TAIL_BLOCKS),
        ),
    );
    m.step("full", &fwd(9000, ""));
    let slow_fwd = |port: u16| {
        fwd(port, "").replace(&format!("--nvme {NVME}"), &format!("--nvme {SLOW_NVME}"))
    };
    m.step(
        "sigkill",
        &format!(
            "{} &\npid=$!\nsleep 1\nkill -9 $pid\nwait $pid\necho killed.status=$?",
            slow_fwd(9003)
        ),
    );
    m.step("restart", &slow_fwd(9004));
    m.step("link", &format!("echo link.go\n{}", slow_fwd(9005)));
    m.step(
        "odd",
        &fwd(9006, &format!("--lba {ODD_LBA} --bytes {ODD_BYTES}")),
    );
    let netdev = format!("$(ls /sys/bus/pci/devices/{NIC_KERNEL}/net)");
    m.step(
        "kernel-socket",
        &format!(
            "ip link set {netdev} up && ip addr add 198.51.100.2/24 dev {netdev}\n\
             for i in $(seq 100); do [ \"$(cat /sys/class/net/{netdev}/carrier)\" = 1 ] && break; sleep 0.1; done\n\
             udp-sink --port 9100 --output /tmp/sink.bin > /tmp/sink.out &\n\
             for i in $(seq 50); do grep -q listening /tmp/sink.out && break; sleep 0.1; done\n\
             sleep 1.2\n\
             forwarder --nvme {NVME} --nic {NIC_PAIR} --dst-mac $(cat /sys/class/net/{netdev}/address) \
             --dst-ip 198.51.100.2 --dst-port 9100 --bytes {SINK_BYTES} --max-mbps 8 --json\n\
             wait $!; echo sink.status=$?; cat /tmp/sink.out\n\
             echo sink.sha256=$(sha256sum /tmp/sink.bin)"
        ),
    );
    m.step(
        "unbind-not-vfio",
        &format!(
            "devbind unbind {NIC_KERNEL}; echo unbind.status=$?\n\
             echo driver.now=$(basename $(readlink /sys/bus/pci/devices/{NIC_KERNEL}/driver))"
        ),
    );
    let limited = |cmd: String| {
        format!("ulimit -v {RECV_AS_LIMIT_KIB} && echo as.limit=$(ulimit -v) && {cmd}")
    };
    m.step(
        "receiver",
        &limited(format!(
            "receiver --nic {NIC} --nvme {RECV_NVME} --port {RECV_PORT} --lba {RECV_LBA} --json"
        )),
    );
    let on_virtio = |cmd: String| cmd.replace(&format!("--nic {NIC}"), &format!("--nic {VNIC}"));
    m.step("virtio-full", &on_virtio(fwd(9600, "")));
    m.step(
        "virtio-tail",
        &on_virtio(fwd(
            9603,
            &format!("--lba {} --blocks {TAIL_BLOCKS}", BLOCKS - TAIL_BLOCKS),
        )),
    );
    m.step(
        "virtio-sigkill",
        &format!(
            "{} &\npid=$!\nsleep 1\nkill -9 $pid\nwait $pid\necho killed.status=$?",
            on_virtio(slow_fwd(9604))
        ),
    );
    m.step("virtio-restart", &on_virtio(slow_fwd(9605)));
    m.step(
        "virtio-odd",
        &on_virtio(fwd(9602, &format!("--lba {ODD_LBA} --bytes {ODD_BYTES}"))),
    );
    m.step(
        "virtio-link",
        &format!("echo vlink.go\n{}", on_virtio(slow_fwd(9601))),
    );
    m.step(
        "virtio-receiver",
        &limited(format!(
            "receiver --nic {VNIC} --nvme {RECV_NVME} --port {VRECV_PORT} --lba {VRECV_LBA} --data-pointer prp --json"
        )),
    );
    // Signals: each tool stops cleanly on SIGINT/SIGTERM, mid-run.
    let signal = |sig: &str, cmd: &str| {
        format!("{cmd} > /tmp/sig.out 2>&1 &\npid=$!\nsleep 1\nkill -{sig} $pid\nwait $pid\necho signal.status=$?\ncat /tmp/sig.out")
    };
    m.step("sigterm-forwarder", &signal("TERM", &slow_fwd(9007)));
    m.step(
        "sigint-receiver",
        &signal(
            "INT",
            &format!("receiver --nic {NIC} --nvme {RECV_NVME} --port 9301 --idle-seconds 60"),
        ),
    );
    m.step(
        "sigint-nvme-perf",
        &signal(
            "INT",
            &format!("nvme-perf --device {NVME} --seconds 60 --queue-depth 8"),
        ),
    );
    m.step(
        "sigterm-nic-echo",
        &signal("TERM", &format!("nic-echo --device {NIC} --seconds 60")),
    );
    // Least privilege: the same forwarder as user 1000.
    let as_user = |cmd: &str| format!("su dev -c \"{cmd}\"");
    let user_fwd = fwd(9400, &format!("--bytes {USER_BYTES}"));
    m.step(
        "users",
        "mkdir -p /etc && printf 'root:x:0:0::/root:/bin/sh\\ndev:x:1000:1000::/tmp:/bin/sh\\n' > /etc/passwd && \
         printf 'root:x:0:\\ndev:x:1000:\\n' > /etc/group",
    );
    m.step("user-no-permission", &as_user(&user_fwd));
    m.step(
        "user-bind",
        &format!("devbind bind --user dev {NVME} {NIC}"),
    );
    m.step(
        "user-low-memlock",
        &format!("ulimit -l 64; {}", as_user(&user_fwd)),
    );
    m.step("user", &as_user(&user_fwd));
    let running = m.start()?;
    let capture = Capture::start(&running.nics[nic].socket);
    let vcapture = Capture::start(&running.nics[vnic].socket);
    running.wait_for("link.go", Duration::from_secs(300))?;
    // The throttled drive makes this transfer take about 2 s: the link goes
    // down 0.8 s in and comes back 0.6 s later.
    let netdev = running.nics[nic].netdev.clone();
    std::thread::sleep(Duration::from_millis(800));
    running.monitor(&format!("set_link {netdev} off"))?;
    std::thread::sleep(Duration::from_millis(600));
    running.monitor(&format!("set_link {netdev} on"))?;
    running.wait_for("receiver: listening", Duration::from_secs(300))?;
    // QEMU's e1000 takes no frame for 1 s after the driver writes RCTL.
    std::thread::sleep(Duration::from_millis(1200));
    let guest_mac = running.nics[nic].mac;
    send_paced(
        &running.nics[nic].socket,
        &hostile_frames(guest_mac, RECV_PORT, RECV_LBA),
    );
    send_paced(
        &running.nics[nic].socket,
        &recv_frames(guest_mac, RECV_PORT),
    );
    // The same on the virtio-net NIC.
    running.wait_for("vlink.go", Duration::from_secs(300))?;
    let vnetdev = running.nics[vnic].netdev.clone();
    std::thread::sleep(Duration::from_millis(800));
    running.monitor(&format!("set_link {vnetdev} off"))?;
    std::thread::sleep(Duration::from_millis(600));
    running.monitor(&format!("set_link {vnetdev} on"))?;
    running.wait_for(
        &format!("receiver: listening on port {VRECV_PORT}"),
        Duration::from_secs(300),
    )?;
    std::thread::sleep(Duration::from_millis(1200));
    let guest_mac = running.nics[vnic].mac;
    send_paced(
        &running.nics[vnic].socket,
        &hostile_frames(guest_mac, VRECV_PORT, VRECV_LBA),
    );
    send_paced(
        &running.nics[vnic].socket,
        &recv_frames(guest_mac, VRECV_PORT),
    );
    let outcome = running.wait();
    let mut frames = capture.stop();
    frames.extend(vcapture.stop());
    let outcome = outcome?;
    let recv_disk = std::fs::read(m_dir.join("recv.img")).expect("read the receiver's disk image");
    Ok(Run {
        outcome,
        frames,
        recv_disk,
    })
}

fn check_stream(port: u16, want: &[u8]) {
    check_stream_with(port, want, false);
}

/// `duplicates`: a datagram may arrive more than once (sent again after the
/// link went down).
fn check_stream_with(port: u16, want: &[u8], duplicates: bool) {
    let s = dmaf::reassemble(&run().frames, port);
    assert_eq!(s.bad, 0, "frames with a bad IPv4/UDP checksum or not DMAF");
    assert_eq!(
        s.end,
        Some(want.len() as u64),
        "the end marker carries the total length"
    );
    let n = s.seqs.len() as u32;
    assert!(
        s.seqs.keys().copied().eq(0..n),
        "sequence numbers run from 0 with none missing: {:?}",
        s.missing()
    );
    assert!(
        duplicates || s.seqs.values().all(|&c| c == 1),
        "no sequence number twice"
    );
    assert_eq!(s.data.len(), want.len());
    assert_eq!(
        format!("{:x}", Sha256::digest(&s.data)),
        format!("{:x}", Sha256::digest(want)),
        "the reassembled bytes are the image's"
    );
}

/// The system calls a tool measured (a perf counter on
/// raw_syscalls:sys_enter); the tools run as root here, which may count.
fn measured_syscalls(s: &serde_json::Value) -> u64 {
    s["syscalls"].as_u64().unwrap_or_else(|| {
        panic!(
            "system calls not measured as root: {}",
            s["syscalls_not_measured"]
        )
    })
}

/// Most system calls a polling loop of `s["seconds"]` may make: the
/// counter's read, a few at start and end, a progress line a second (the
/// drivers make none per I/O, and the TSC clock is read through the vDSO).
fn quiet_loop_bound(s: &serde_json::Value) -> u64 {
    10 + 5 * s["seconds"].as_f64().unwrap_or(0.0).ceil() as u64
}

/// The NIC driver was given every payload byte from memory the NVMe
/// controller wrote (`bytes` of them, and as many again for datagrams sent
/// twice), and from memory the CPU wrote only the frames' headers.
fn sent_without_a_copy(s: &serde_json::Value, bytes: u64) {
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("no {k} in {s}"));
    assert_eq!(n("payload_bytes_copied_by_cpu"), 0, "{s}");
    if n("resent") == 0 {
        assert_eq!(n("bytes_sent_from_device_memory"), bytes, "{s}");
    } else {
        assert!(n("bytes_sent_from_device_memory") > bytes, "{s}");
    }
    let header = (14 + 20 + 8 + 16) as u64;
    assert_eq!(
        n("bytes_sent_from_cpu_memory"),
        n("frames_sent") * header,
        "the CPU wrote the headers and nothing else: {s}"
    );
    assert!(n("frames_sent") >= n("datagrams"), "{s}");
}

fn summary(step: &str) -> serde_json::Value {
    run().outcome.json(step)
}

#[test]
fn a_64_mib_image_arrives_whole_with_correct_checksums_and_no_cpu_copy() {
    check_stream(9000, image());
    let s = summary("full");
    assert_eq!(s["bytes"].as_u64(), Some(IMAGE_BYTES as u64));
    sent_without_a_copy(&s, IMAGE_BYTES as u64);
    assert_eq!(
        s["chunk_buffers_outstanding"].as_u64(),
        Some(0),
        "every chunk buffer is back in its pool"
    );
    let seqs = dmaf::reassemble(&run().frames, 9000).seqs.len() as u64;
    assert_eq!(
        s["datagrams"].as_u64(),
        Some(seqs),
        "the host received every datagram the forwarder sent"
    );
    // The drivers make no system call per I/O or datagram, and the guest's
    // clock (the TSC) is read through the vDSO: what the loop makes is a
    // progress line a second and the counter's own read.
    let syscalls = measured_syscalls(&s);
    assert!(
        syscalls <= quiet_loop_bound(&s),
        "{syscalls} system calls for {seqs} datagrams: {s}"
    );
}

#[test]
fn a_range_ending_at_the_last_block_and_not_a_multiple_of_the_datagram() {
    let start = (BLOCKS - TAIL_BLOCKS) as usize * 512;
    check_stream(9001, &image()[start..]);
}

#[test]
fn a_range_past_the_end_is_refused_and_nothing_is_sent() {
    let o = &run().outcome;
    let out = &o.failed_with("past-end", "not inside namespace 1").output;
    assert!(out.contains("nothing sent"), "{out}");
    let s = dmaf::reassemble(&run().frames, 9002);
    assert!(
        s.seqs.is_empty() && s.end.is_none(),
        "no datagram went to the refused run's port"
    );
}

#[test]
fn killed_mid_transfer_and_started_again_it_runs_to_completion() {
    let o = &run().outcome;
    let out = &o.ok("sigkill").output;
    assert!(
        out.contains("killed.status=137"),
        "the first run died of SIGKILL: {out}"
    );
    let partial = dmaf::reassemble(&run().frames, 9003);
    assert!(
        partial.end.is_none(),
        "the killed run did not finish (it was killed mid-transfer)"
    );
    check_stream(9004, slow_image());
    sent_without_a_copy(&summary("restart"), SLOW_BYTES as u64);
}

#[test]
fn the_link_goes_down_mid_transfer_and_the_stream_completes_with_nothing_missing() {
    let s = summary("link");
    assert!(
        s["link_down_events"].as_u64() >= Some(1),
        "the forwarder saw the link go down and come back: {s}"
    );
    assert!(
        s["link_down_seconds"].as_f64() > Some(0.0),
        "and measured how long it waited: {s}"
    );
    assert!(
        s["link_down_waits"].as_u64() > Some(0),
        "the forwarder saw the link down and waited: {s}"
    );
    assert!(
        s["syscalls"].as_u64() >= s["link_down_waits"].as_u64(),
        "each wait for the link is a sleep, a system call the counter sees: {s}"
    );
    check_stream_with(9005, slow_image(), true);
}

#[test]
fn a_byte_count_that_is_no_multiple_of_the_block_or_datagram_size() {
    let start = (ODD_LBA * 512) as usize;
    check_stream(9006, &image()[start..start + ODD_BYTES as usize]);
    assert_eq!(summary("odd")["bytes"].as_u64(), Some(ODD_BYTES));
}

#[test]
fn forwarded_into_a_kernel_udp_socket_on_a_second_nic_the_file_matches() {
    let out = &run().outcome.ok("kernel-socket").output;
    assert!(out.contains("sink.status=0"), "udp-sink got it all:\n{out}");
    // Paced to 8 MB/s, the loop sleeps while held back: system calls the
    // unpaced run of four times the bytes does not make.
    let (paced, full) = (summary("kernel-socket"), summary("full"));
    assert!(
        measured_syscalls(&paced) > measured_syscalls(&full),
        "paced {paced}, unpaced {full}"
    );
    let want = format!("{:x}", Sha256::digest(&image()[..SINK_BYTES as usize]));
    assert!(
        out.contains(&format!("sink.sha256={want}")),
        "the file udp-sink wrote has the image's hash {want}:\n{out}"
    );
}

fn recv_file() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| random_bytes(RECV_BYTES, 0x67))
}

fn recv_disk_before() -> &'static [u8] {
    static DISK: OnceLock<Vec<u8>> = OnceLock::new();
    DISK.get_or_init(|| random_bytes(RECV_DISK_BYTES, 0x68))
}

/// Frames of the shuffled stream the receiver must refuse: 3 malformed, 1
/// past the namespace.
const RECV_MALFORMED: u64 = 4;
/// Of [`hostile_frames`]: not DMAF at all, and outside the range or window.
const HOSTILE_MALFORMED: u64 = 3;
const HOSTILE_OUT_OF_RANGE: u64 = 7;
/// Every 13th datagram is sent twice.
const RECV_DUP_EVERY: usize = 13;

/// The file as DMAF datagrams (sequence numbers in offset order), the end
/// marker, duplicates and malformed frames, shuffled.
/// Sends `frames` to the guest in bursts of 16, 4 ms apart (QEMU's socket
/// buffer holds about 90 frames while the guest catches up).
fn send_paced(socket: &std::net::UdpSocket, frames: &[Vec<u8>]) {
    for burst in frames.chunks(16) {
        for f in burst {
            socket.send(f).expect("send a frame to the guest");
        }
        std::thread::sleep(Duration::from_millis(4));
    }
}

/// An Ethernet frame from the host to the guest NIC carrying `payload` to
/// UDP `port`, with valid IPv4 and UDP checksums.
fn udp_frame(guest_mac: [u8; 6], port: u16, payload: &[u8]) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ethernet2(HOST_MAC, guest_mac)
        .ipv4([192, 0, 2, 1], [198, 51, 100, 1], 64)
        .udp(5000, port);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).expect("a frame builds");
    out
}

/// A DMAF datagram in a valid frame.
fn dmaf_frame(guest_mac: [u8; 6], port: u16, seq: u32, offset: u64, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(16 + data.len());
    payload.extend_from_slice(b"DMAF");
    payload.extend_from_slice(&seq.to_be_bytes());
    payload.extend_from_slice(&offset.to_be_bytes());
    payload.extend_from_slice(data);
    udp_frame(guest_mac, port, &payload)
}

/// What a hostile peer sends before the stream (every frame's checksums
/// valid): sequence numbers near 2^32, an offset near 2^63, offset + length
/// overflowing, data just past the namespace, end markers with huge totals
/// ([`HOSTILE_OUT_OF_RANGE`]), and payloads too short or not DMAF
/// ([`HOSTILE_MALFORMED`]). The receiver must refuse each, allocate nothing
/// by them, and write none of them.
fn hostile_frames(guest_mac: [u8; 6], port: u16, lba: u64) -> Vec<Vec<u8>> {
    let dmaf = |seq, offset, data: &[u8]| dmaf_frame(guest_mac, port, seq, offset, data);
    let capacity = RECV_DISK_BYTES as u64 - lba * 512;
    let frames = vec![
        dmaf(0xFFFF_FFF0, 0, &[0xee; 1024]),
        dmaf(u32::MAX, 1024, &[0xee; 512]),
        dmaf(5, (1 << 63) - 512, &[0xee; 1024]),
        dmaf(6, u64::MAX - 100, &[0xee; 1024]),
        dmaf(7, capacity - 10, &[0xee; 100]),
        dmaf(8, u64::MAX, &[]),
        dmaf(9, 1 << 62, &[]),
        udp_frame(guest_mac, port, b"DMAF\0\0"),
        udp_frame(guest_mac, port, &random_bytes(1200, 0x69)),
        udp_frame(guest_mac, port, &[]),
    ];
    assert_eq!(
        frames.len() as u64,
        HOSTILE_MALFORMED + HOSTILE_OUT_OF_RANGE
    );
    frames
}

fn recv_frames(guest_mac: [u8; 6], port: u16) -> Vec<Vec<u8>> {
    let frame = |seq: u32, offset: u64, data: &[u8]| dmaf_frame(guest_mac, port, seq, offset, data);
    let file = recv_file();
    let mut frames = Vec::new();
    let mut offset = 0;
    while offset < file.len() {
        let n = if offset < RECV_ALIGNED { 1024 } else { 1456 };
        let end = (offset + n).min(file.len());
        frames.push(frame(
            frames.len() as u32,
            offset as u64,
            &file[offset..end],
        ));
        offset = end;
    }
    frames.push(frame(frames.len() as u32, file.len() as u64, &[]));
    let dups: Vec<Vec<u8>> = frames.iter().step_by(RECV_DUP_EVERY).cloned().collect();
    frames.extend(dups);
    // Malformed: a bad UDP checksum, a wrong magic, data past the namespace,
    // and a frame cut short of its IPv4 length.
    let mut bad_sum = frame(1, 0, &[0xee; 1024]);
    let last = bad_sum.len() - 1;
    bad_sum[last] ^= 0xff;
    let mut bad_magic = frame(2, 1024, &file[1024..2048]);
    bad_magic[42] = b'X';
    let past_end = frame(3, (RECV_DISK_BYTES as u64) * 2, &[0xee; 512]);
    let mut short = frame(4, 4096, &file[4096..5120]);
    short.truncate(200);
    frames.extend([bad_sum, bad_magic, past_end, short]);
    // Fisher-Yates with a fixed xorshift sequence.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..frames.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        frames.swap(i, (x % (i as u64 + 1)) as usize);
    }
    frames
}

/// How the receiver wrote what it received.
#[derive(PartialEq)]
enum Mode {
    /// Every byte gathered from receive buffers with SGLs: nothing copied.
    Gather,
    /// PRPs: whole blocks from receive buffers, the rest staged by copies.
    Staging,
}

/// The receiver's run `step` wrote the file at `lba` and nothing else
/// between `region.0` and `region.1` (bytes of the disk) changed.
fn check_received(step: &str, lba: u64, region: (usize, usize), mode: Mode) {
    let r = run();
    let s = summary(step);
    assert_eq!(s["complete"], true, "{s}");
    assert_eq!(s["staging_buffers_outstanding"].as_u64(), Some(0), "{s}");
    assert_eq!(s["total"].as_u64(), Some(RECV_BYTES as u64));
    let datagrams = RECV_BYTES.div_ceil(1456) as u64 + 1; // upper bound
    assert!(s["duplicates"].as_u64() > Some(0));
    assert_eq!(
        s["refused"].as_u64(),
        Some(RECV_MALFORMED + HOSTILE_MALFORMED + HOSTILE_OUT_OF_RANGE),
        "every hostile and malformed frame is refused and counted: {s}"
    );
    assert_eq!(
        s["out_of_range"].as_u64(),
        Some(1 + HOSTILE_OUT_OF_RANGE),
        "{s}"
    );
    assert_eq!(s["no_staging_room"].as_u64(), Some(0), "{s}");
    let out = &r.outcome.ok(step).output;
    assert!(
        out.contains(&format!("as.limit={RECV_AS_LIMIT_KIB}")),
        "the receiver ran under the 1 GiB address-space limit: {out}"
    );
    let peak = s["vm_peak_kib"]
        .as_u64()
        .expect("the receiver reports its peak");
    assert!(peak < RECV_AS_LIMIT_KIB, "peak address space {peak} KiB");
    let unaligned = ((RECV_BYTES - RECV_ALIGNED) as u64).div_ceil(512) * 512;
    if mode == Mode::Gather {
        assert_eq!(s["mode"], "gather", "{s}");
        assert_eq!(
            s["written_from_device_memory"].as_u64(),
            Some(RECV_ALIGNED as u64 + unaligned),
            "every byte went to the NVMe by DMA from memory a device wrote: the receive buffers, and the last block's tail read from the disk (counted by the NVMe driver from the buffers its writes were given): {s}"
        );
        assert_eq!(s["written_from_cpu_memory"].as_u64(), Some(0), "{s}");
        assert_eq!(s["payload_bytes_copied"].as_u64(), Some(0), "{s}");
    } else {
        assert_eq!(s["mode"], "staging", "{s}");
        assert_eq!(
            s["written_from_device_memory"].as_u64(),
            Some(RECV_ALIGNED as u64),
            "every whole-block datagram went to the NVMe by DMA from its receive buffer (counted by the NVMe driver from the buffers its writes were given): {s}"
        );
        assert_eq!(
            s["written_from_cpu_memory"].as_u64(),
            Some(unaligned),
            "the rest from staging buffers, in whole blocks: {s}"
        );
        assert_eq!(
            s["payload_bytes_copied"].as_u64(),
            Some((RECV_BYTES - RECV_ALIGNED) as u64),
            "the unaligned datagrams' payload, copied once: {s}"
        );
    }
    assert!(s["datagrams"].as_u64() < Some(datagrams * 2));
    // Measured as root: the receive loop polls and reads the clock through
    // the vDSO (TSC), so however long it waited for the host's frames it
    // makes no system call per pass or per datagram.
    let syscalls = measured_syscalls(&s);
    assert!(
        syscalls <= quiet_loop_bound(&s),
        "{syscalls} system calls: {s}"
    );
    let at = lba as usize * 512;
    let before = recv_disk_before();
    assert_eq!(r.recv_disk.len(), before.len());
    assert_eq!(
        format!("{:x}", Sha256::digest(&r.recv_disk[at..at + RECV_BYTES])),
        format!("{:x}", Sha256::digest(recv_file())),
        "the namespace holds the file at block {lba}"
    );
    assert!(
        r.recv_disk[region.0..at] == before[region.0..at],
        "the blocks before --lba are untouched"
    );
    let end = at + RECV_BYTES;
    assert!(
        r.recv_disk[end..region.1] == before[end..region.1],
        "the bytes after the file, in its last block and beyond, are untouched"
    );
}

#[test]
fn devbind_unbind_of_a_device_not_on_vfio_pci_says_so_and_changes_nothing() {
    let out = &run().outcome.ok("unbind-not-vfio").output;
    assert!(out.contains("unbind.status=1"), "exit status 1: {out}");
    assert!(
        out.contains(&format!(
            "{NIC_KERNEL} is not on vfio-pci (driver e1000): nothing done"
        )),
        "{out}"
    );
    assert!(!out.contains("vfio-pci ->"), "no change is claimed: {out}");
    assert!(out.contains("driver.now=e1000"), "still on e1000: {out}");
}

#[test]
fn the_receiver_refuses_hostile_datagrams_then_writes_a_shuffled_duplicated_stream() {
    check_received(
        "receiver",
        RECV_LBA,
        (0, VRECV_LBA as usize * 512),
        Mode::Gather,
    );
}

#[test]
fn on_virtio_net_the_receiver_writes_the_stream_too() {
    check_received(
        "virtio-receiver",
        VRECV_LBA,
        (VRECV_LBA as usize * 512, RECV_DISK_BYTES),
        Mode::Staging,
    );
}

#[test]
fn on_virtio_net_a_64_mib_image_arrives_whole_and_survives_the_link_going_down() {
    check_stream(9600, image());
    let s = summary("virtio-full");
    assert_eq!(s["bytes"].as_u64(), Some(IMAGE_BYTES as u64));
    sent_without_a_copy(&s, IMAGE_BYTES as u64);
    let link = summary("virtio-link");
    assert!(
        link["link_down_events"].as_u64() >= Some(1),
        "the forwarder saw the virtio link go down and come back: {link}"
    );
    assert!(
        link["link_down_seconds"].as_f64() > Some(0.0),
        "and measured how long it waited: {link}"
    );
    assert!(
        link["link_down_waits"].as_u64() > Some(0),
        "the forwarder saw the virtio link down and waited: {link}"
    );
    check_stream_with(9601, slow_image(), true);
    let start = (ODD_LBA * 512) as usize;
    check_stream(9602, &image()[start..start + ODD_BYTES as usize]);
}

#[test]
fn an_unprivileged_user_forwards_once_given_the_group_and_the_memlock_limit() {
    let o = &run().outcome;
    let denied = &o
        .failed_with("user-no-permission", "permission denied")
        .output;
    assert!(
        denied.contains("/dev/vfio/") && denied.contains("devbind bind --user"),
        "the error names the device file and the command that fixes it: {denied}"
    );
    let memlock = &o
        .failed_with("user-low-memlock", "locked-memory limit")
        .output;
    assert!(
        memlock.contains("ulimit -l"),
        "the error names the fix: {memlock}"
    );
    check_stream(9400, &image()[..USER_BYTES]);
    // The guest's kernel lets only root count (tracefs is root's, and
    // Debian's perf_event_paranoid is 3): said, not given as a number.
    let s = summary("user");
    assert!(s["syscalls"].is_null(), "{s}");
    let why = s["syscalls_not_measured"].as_str().unwrap_or_default();
    assert!(
        why.to_lowercase().contains("permission denied"),
        "the reason is the kernel's refusal: {s}"
    );
}

#[test]
fn sigint_and_sigterm_stop_every_tool_cleanly_mid_run() {
    let o = &run().outcome;
    for (step, signal, code) in [
        ("sigterm-forwarder", "SIGTERM", 143),
        ("sigint-receiver", "SIGINT", 130),
        ("sigint-nvme-perf", "SIGINT", 130),
        ("sigterm-nic-echo", "SIGTERM", 143),
    ] {
        let out = &o.ok(step).output;
        assert_eq!(
            vfio_tests::check::kv_num(out, "signal.status"),
            code,
            "{step}: exit status 128 + the signal: {out}"
        );
        assert!(
            out.contains(&format!("stopped by {signal}")),
            "{step}: says it stopped and shut down: {out}"
        );
    }
    let s = summary("sigterm-forwarder");
    assert!(
        s["bytes"].as_u64() < Some(SLOW_BYTES as u64),
        "stopped mid-transfer: {s}"
    );
    assert!(
        dmaf::reassemble(&run().frames, 9007).end.is_none(),
        "no end marker for a stopped transfer"
    );
}

#[test]
fn on_virtio_net_a_tail_range_and_a_restart_after_sigkill() {
    let start = (BLOCKS - TAIL_BLOCKS) as usize * 512;
    check_stream(9603, &image()[start..]);
    let out = &run().outcome.ok("virtio-sigkill").output;
    assert!(out.contains("killed.status=137"), "{out}");
    assert!(
        dmaf::reassemble(&run().frames, 9604).end.is_none(),
        "the killed run did not finish"
    );
    check_stream(9605, slow_image());
}
