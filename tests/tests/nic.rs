//! The e1000 driver in the QEMU machine. One boot; the host holds the NIC's
//! wire (a UDP socket carrying raw frames), sends frames when the guest says
//! it is ready, captures everything the NIC sends, and turns the link off and
//! on through QEMU's monitor. Checksums are checked by an independent parser
//! (etherparse).

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use etherparse::{Ipv4HeaderSlice, SlicedPacket, TransportSlice};
use sha2::{Digest, Sha256};
use vfio_tests::check::{kv, kv_num, test_frame, test_frame_id, HOST_MAC, TX_SIZES};
use vfio_tests::machine::{Machine, Outcome, VIRTIO_NET};
use vfio_tests::wire::Capture;

const NIC: &str = "0000:00:03.0";
const TX_COUNT: u32 = 60;
const CSUM_COUNT: u32 = 40;
const RX_COUNT: u32 = 50;
const BURST: u32 = 200;
const PKTGEN_COUNT: u64 = 2000;

struct Run {
    outcome: Outcome,
    /// Every frame the NIC sent, in order.
    frames: Vec<Vec<u8>>,
    mac: [u8; 6],
}

/// The NICs the first boot's tests run on, one boot each.
#[derive(Clone, Copy)]
enum Model {
    E1000,
    VirtioNet,
}

impl Model {
    fn qemu_device(self) -> &'static str {
        match self {
            Model::E1000 => "e1000",
            Model::VirtioNet => VIRTIO_NET,
        }
    }
}

fn run(model: Model) -> &'static Run {
    static E1000: OnceLock<Result<Run, String>> = OnceLock::new();
    static VIRTIO: OnceLock<Result<Run, String>> = OnceLock::new();
    let (cell, name) = match model {
        Model::E1000 => (&E1000, "nic"),
        Model::VirtioNet => (&VIRTIO, "nic-virtio"),
    };
    cell.get_or_init(|| boot(name, model).map_err(|e| e.to_string()))
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs test body `$name(&Run)` on each driver: `$name::e1000`, `$name::virtio_net`.
macro_rules! on_both_drivers {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn e1000() {
                super::$name(super::run(super::Model::E1000))
            }
            #[test]
            fn virtio_net() {
                super::$name(super::run(super::Model::VirtioNet))
            }
        }
    )*};
}

on_both_drivers!(
    transmitted_frames_arrive_exactly_and_in_order,
    checksum_offload_gives_correct_ipv4_and_udp_checksums,
    received_frames_are_exactly_what_the_host_sent,
    a_burst_larger_than_the_ring_is_not_corrupted_drops_are_counted_and_the_driver_recovers,
    link_down_is_reported_and_transmit_waits_for_it,
    pktgen_sends_valid_frames_on_both_drivers_without_allocating,
    frames_for_other_macs_arrive_only_in_promiscuous_mode,
);

fn rx_size(seq: u32) -> usize {
    TX_SIZES[(seq as usize * 5) % TX_SIZES.len()]
}

fn boot(name: &str, model: Model) -> vfio_tests::Result<Run> {
    let mut m = Machine::new(name);
    let nic = m.e1000(model.qemu_device());
    assert_eq!(m.nics_addr(nic), NIC);
    m.step("bind", &format!("devbind bind {NIC}"));
    m.step("tx", &format!("guest-check nic-tx {NIC} {TX_COUNT}"));
    m.step(
        "tx-csum",
        &format!("guest-check nic-tx-csum {NIC} {CSUM_COUNT}"),
    );
    m.step("rx", &format!("guest-check nic-rx {NIC} 3 {RX_COUNT}"));
    m.step("rx-burst", &format!("guest-check nic-rx-burst {NIC}"));
    m.step("promisc", &format!("guest-check nic-promisc {NIC}"));
    m.step("link", &format!("guest-check nic-link {NIC}"));
    m.step("pktgen", &format!("nic-pktgen --device {NIC} --size 60 --count {PKTGEN_COUNT} --batch 32 --baseline --json"));
    m.step("pktgen-packets", &format!("nic-pktgen --device {NIC} --size 60 --count {PKTGEN_COUNT} --batch 32 --path packets --json"));
    let running = m.start()?;
    let end = &running.nics[nic];
    let (mac, netdev) = (end.mac, end.netdev.clone());
    let capture = Capture::start(&end.socket);
    let send = |phase: u8, seq: u32, len: usize| {
        end.socket
            .send(&test_frame(phase, seq, len, HOST_MAC, mac))
            .map(drop)
    };
    let wait = |marker: &str| running.wait_for(marker, Duration::from_secs(120));
    wait("rx.ready")?;
    for seq in 0..RX_COUNT {
        send(3, seq, rx_size(seq)).expect("send a frame to the guest");
        std::thread::sleep(Duration::from_millis(5));
    }
    wait("burst.ready")?;
    for seq in 0..BURST {
        send(4, seq, 1000).expect("send a frame to the guest");
    }
    wait("starve.ready")?;
    for seq in 0..50 {
        send(7, seq, 300).expect("send a frame to the guest");
        std::thread::sleep(Duration::from_millis(10));
    }
    wait("burst.recover.ready")?;
    for seq in 0..10 {
        send(5, seq, 200).expect("send a frame to the guest");
        std::thread::sleep(Duration::from_millis(20));
    }
    wait("promisc.ready")?;
    let other = [0x02, 0, 0, 0, 0, 0x99];
    for seq in 0..5 {
        end.socket
            .send(&test_frame(11, seq, 80, HOST_MAC, other))
            .expect("send a frame to the guest");
    }
    wait("promisc.on")?;
    for seq in 0..5 {
        end.socket
            .send(&test_frame(12, seq, 80, HOST_MAC, other))
            .expect("send a frame to the guest");
        std::thread::sleep(Duration::from_millis(20));
    }
    wait("link.ready")?;
    running.monitor(&format!("set_link {netdev} off"))?;
    wait("link.down.done")?;
    running.monitor(&format!("set_link {netdev} on"))?;
    let outcome = running.wait();
    let frames = capture.stop();
    Ok(Run {
        outcome: outcome?,
        frames,
        mac,
    })
}

/// The test frames of `phase` the NIC of `run` sent, with their sequence numbers.
fn frames_of(run: &'static Run, phase: u8) -> Vec<(u32, &'static Vec<u8>)> {
    run.frames
        .iter()
        .filter_map(|f| {
            test_frame_id(f)
                .filter(|(p, _)| *p == phase)
                .map(|(_, s)| (s, f))
        })
        .collect()
}

fn transmitted_frames_arrive_exactly_and_in_order(r: &'static Run) {
    let out = &r.outcome.ok("tx").output;
    assert_eq!(kv_num(out, "tx.sent"), TX_COUNT as u64);
    assert!(
        kv(out, "tx.past_end_slice").contains("past the end of its buffer"),
        "a slice reaching past its buffer is refused: {out}"
    );
    let got = frames_of(r, 1);
    assert_eq!(
        got.len(),
        TX_COUNT as usize,
        "the host received {} of {TX_COUNT} frames",
        got.len()
    );
    for (i, (seq, f)) in got.iter().enumerate() {
        assert_eq!(*seq, i as u32, "frames out of order");
        let want = test_frame(1, *seq, TX_SIZES[i % TX_SIZES.len()], r.mac, HOST_MAC);
        assert_eq!(
            **f,
            want,
            "frame {seq} ({} bytes, {} segments) differs",
            want.len(),
            if seq % 3 == 2 { 2 } else { 1 }
        );
    }
    // Measured in the guest: the pool's free buffers when the NIC was
    // opened (only the RX ring holding buffers) and after every frame was
    // sent and cleaned.
    let (idle, free, cap) = (
        kv_num(out, "tx.pool_free_idle"),
        kv_num(out, "tx.pool_free"),
        kv_num(out, "tx.pool_capacity"),
    );
    assert_eq!(
        free, idle,
        "every transmitted buffer went back to the pool: {out}"
    );
    assert_eq!(
        cap - idle,
        256,
        "while idle the driver holds a buffer on each of the 256 receive descriptors asked for: {out}"
    );
}

fn checksum_offload_gives_correct_ipv4_and_udp_checksums(r: &'static Run) {
    // UDP to 192.0.2.1: the checksum test's frames (pktgen's go to 198.51.100.2).
    r.outcome.ok("tx-csum");
    let udp: Vec<&Vec<u8>> = r
        .frames
        .iter()
        .filter(|f| f.len() > 42 && f[12..14] == [0x08, 0x00] && f[30..34] == [192, 0, 2, 1])
        .collect();
    assert_eq!(udp.len(), CSUM_COUNT as usize);
    for (seq, f) in udp.iter().enumerate() {
        let p = SlicedPacket::from_ethernet(f).expect("a well-formed frame");
        let ip = Ipv4HeaderSlice::from_slice(&f[14..]).expect("an IPv4 header");
        assert_eq!(
            ip.header_checksum(),
            ip.to_header().calc_header_checksum(),
            "frame {seq}: IPv4 header checksum"
        );
        let Some(TransportSlice::Udp(u)) = p.transport else {
            panic!("frame {seq} is not UDP")
        };
        let payload = u.payload();
        let want = u
            .to_header()
            .calc_checksum_ipv4(&ip.to_header(), payload)
            .expect("checksum computable");
        assert_eq!(u.checksum(), want, "frame {seq}: UDP checksum");
        assert_ne!(u.checksum(), 0, "frame {seq}: the checksum was inserted");
        assert_eq!(
            payload,
            test_frame(2, seq as u32, payload.len(), r.mac, HOST_MAC),
            "frame {seq}: payload"
        );
    }
}

/// The frames of `phase` the guest printed, in the order it received them.
fn received_lines(out: &str, phase: u8) -> Vec<(u32, String)> {
    let prefix = format!("rx.{phase}.");
    out.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter_map(|l| l.split_once(".sha256="))
        .map(|(seq, sha)| (seq.parse().expect("a sequence number"), sha.to_string()))
        .collect()
}

fn received(out: &str, phase: u8) -> BTreeMap<u32, String> {
    received_lines(out, phase).into_iter().collect()
}

fn sha(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

fn received_frames_are_exactly_what_the_host_sent(r: &'static Run) {
    let out = &r.outcome.ok("rx").output;
    let got = received(out, 3);
    assert_eq!(got.len(), RX_COUNT as usize, "{out}");
    for (seq, digest) in got {
        assert_eq!(
            digest,
            sha(&test_frame(3, seq, rx_size(seq), HOST_MAC, r.mac)),
            "frame {seq}"
        );
    }
    assert!(kv_num(out, "rx.stats_packets") >= RX_COUNT as u64);
}

fn a_burst_larger_than_the_ring_is_not_corrupted_drops_are_counted_and_the_driver_recovers(
    r: &'static Run,
) {
    let out = &r.outcome.ok("rx-burst").output;
    // QEMU's e1000 takes no frame from its backend while its ring is full
    // (backpressure), so the overflow shows as frames held back, not as drops
    // by the device; every frame that reached the driver must be intact.
    let got = received_lines(out, 4);
    assert!(!got.is_empty(), "{out}");
    for (seq, digest) in &got {
        assert!(*seq < BURST, "burst frame {seq} was never sent");
        assert_eq!(
            *digest,
            sha(&test_frame(4, *seq, 1000, HOST_MAC, r.mac)),
            "burst frame {seq} corrupt"
        );
    }
    let mut seqs: Vec<u32> = got.iter().map(|(seq, _)| *seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(
        seqs.len(),
        got.len(),
        "a burst frame was delivered twice: {out}"
    );
    // With every pool buffer held, no descriptor can be refilled: frames are
    // dropped, counted, and none is delivered.
    assert!(kv_num(out, "starve.held") > 0);
    assert_eq!(kv_num(out, "starve.delivered"), 0, "{out}");
    assert!(
        kv_num(out, "starve.dropped") > 0,
        "drops were not counted: {out}"
    );
    assert_eq!(
        kv_num(out, "burst.recovered"),
        10,
        "the driver received again after the drops"
    );
    assert_eq!(received(out, 5).len(), 10);
}

fn link_down_is_reported_and_transmit_waits_for_it(r: &'static Run) {
    let out = &r.outcome.ok("link").output;
    assert_eq!(kv(out, "link.up_at_start"), "true");
    assert_eq!(kv(out, "link.went_down"), "true", "set_link off was seen");
    assert!(
        kv(out, "link.send_while_down").contains("link is down"),
        "{out}"
    );
    assert_eq!(
        kv_num(out, "link.kept"),
        1,
        "the frame stayed with the caller"
    );
    assert_eq!(kv(out, "link.came_back"), "true");
    let sent = frames_of(r, 6);
    assert_eq!(
        sent.len(),
        1,
        "the frame kept while the link was down went out once it was up"
    );
    assert_eq!(*sent[0].1, test_frame(6, 0, 100, r.mac, HOST_MAC));
}

// A second boot: an e1000-82545em (the other PCI ID) for interrupt-mode echo
// and jumbo frames, and two NICs wired to each other, one on this driver and
// one on the kernel's e1000 with an IP address.

const NIC_A: &str = "0000:00:03.0";
const NIC_B: &str = "0000:00:04.0";
const NIC_KERNEL: &str = "0000:00:05.0";
const ECHO_COUNT: u32 = 20;
const UDP_COUNT: u32 = 20;
const JUMBO_COUNT: u32 = 6;

fn run2(model: Model) -> &'static Run {
    static E1000: OnceLock<Result<Run, String>> = OnceLock::new();
    static VIRTIO: OnceLock<Result<Run, String>> = OnceLock::new();
    let (cell, name) = match model {
        Model::E1000 => (&E1000, "nic-2"),
        Model::VirtioNet => (&VIRTIO, "nic-2-virtio"),
    };
    cell.get_or_init(|| boot2(name, model).map_err(|e| e.to_string()))
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Like `on_both_drivers!`, for the second boot.
macro_rules! on_both_drivers_2 {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn e1000() {
                super::$name(super::run2(super::Model::E1000), "e1000")
            }
            #[test]
            fn virtio_net() {
                super::$name(super::run2(super::Model::VirtioNet), "virtio-net")
            }
        }
    )*};
}

on_both_drivers_2!(
    a_kernel_udp_socket_on_a_second_nic_receives_what_the_driver_sends,
    echo_in_interrupt_mode_swaps_the_macs,
    jumbo_frames_go_out_whole,
);

fn boot2(name: &str, model: Model) -> vfio_tests::Result<Run> {
    let mut m = Machine::new(name);
    let (a_model, b_model) = match model {
        Model::E1000 => ("e1000-82545em", "e1000"),
        Model::VirtioNet => (VIRTIO_NET, VIRTIO_NET),
    };
    let a = m.e1000(a_model);
    assert_eq!(m.nics_addr(a), NIC_A);
    assert_eq!(
        m.nic_pair(b_model, "e1000"),
        (NIC_B.to_string(), NIC_KERNEL.to_string())
    );
    let netdev = format!("$(ls /sys/bus/pci/devices/{NIC_KERNEL}/net)");
    m.step("bind", &format!("devbind bind {NIC_A} {NIC_B}"));
    m.step(
        "kernel-nic",
        &format!(
            "ip link set {netdev} up && ip addr add 198.51.100.2/24 dev {netdev}\n\
             for i in $(seq 100); do [ \"$(cat /sys/class/net/{netdev}/carrier)\" = 1 ] && break; sleep 0.1; done\n\
             echo kernel.mac=$(cat /sys/class/net/{netdev}/address)"
        ),
    );
    m.step(
        "udp",
        &format!(
            "guest-check udp-recv 5000 {UDP_COUNT} 30 > /tmp/udp.out &\n\
             for i in $(seq 50); do grep -q udp.listening /tmp/udp.out && break; sleep 0.1; done\n\
             guest-check nic-udp-send {NIC_B} $(cat /sys/class/net/{netdev}/address) {UDP_COUNT}\nwait\ncat /tmp/udp.out"
        ),
    );
    m.step(
        "echo",
        &format!("nic-echo --device {NIC_A} --interrupts --count {ECHO_COUNT} --seconds 60"),
    );
    m.step(
        "jumbo",
        &format!("guest-check nic-tx-jumbo {NIC_A} {JUMBO_COUNT}"),
    );
    let running = m.start()?;
    let end = &running.nics[a];
    let mac = end.mac;
    let capture = Capture::start(&end.socket);
    running.wait_for("echo.ready", Duration::from_secs(120))?;
    std::thread::sleep(Duration::from_millis(300));
    for seq in 0..ECHO_COUNT {
        end.socket
            .send(&test_frame(9, seq, rx_size(seq), HOST_MAC, mac))
            .expect("send a frame to the guest");
        std::thread::sleep(Duration::from_millis(10));
    }
    let outcome = running.wait();
    let frames = capture.stop();
    Ok(Run {
        outcome: outcome?,
        frames,
        mac,
    })
}

fn a_kernel_udp_socket_on_a_second_nic_receives_what_the_driver_sends(r: &'static Run, _: &str) {
    let k = &r.outcome.ok("kernel-nic").output;
    let out = &r.outcome.ok("udp").output;
    assert_eq!(kv_num(out, "udp.sent"), UDP_COUNT as u64);
    let got: BTreeMap<u32, String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("udp."))
        .filter_map(|l| l.split_once(".sha256="))
        .map(|(s, d)| (s.parse().expect("seq"), d.to_string()))
        .collect();
    assert_eq!(
        got.len(),
        UDP_COUNT as usize,
        "the kernel (which drops bad checksums) delivered {} of {UDP_COUNT}:\n{out}",
        got.len()
    );
    let src = mac_of(kv(out, "udp.src_mac"));
    let dst = mac_of(kv(k, "kernel.mac"));
    for (seq, digest) in got {
        // Each payload is a test frame carrying the sender's and the kernel NIC's MACs.
        let want = test_frame(8, seq, 100 + seq as usize * 61 % 1300, src, dst);
        assert_eq!(digest, sha(&want), "datagram {seq}");
    }
}

fn mac_of(text: &str) -> [u8; 6] {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("a hex MAC"))
        .collect();
    bytes.try_into().expect("6 bytes")
}

fn echo_in_interrupt_mode_swaps_the_macs(r: &'static Run, driver: &str) {
    let out = &r.outcome.ok("echo").output;
    assert!(out.contains(&format!("driver={driver}")), "{out}");
    assert_eq!(kv_num(out, "echo.frames"), ECHO_COUNT as u64);
    assert!(
        kv_num(out, "echo.interrupt_wakeups") > 0,
        "the NIC woke the echo loop: {out}"
    );
    assert_eq!(
        kv_num(out, "echo.allocations"),
        0,
        "no heap allocation on the receive/transmit path"
    );
    let back = frames_of(r, 9);
    assert_eq!(back.len(), ECHO_COUNT as usize);
    for (seq, f) in back {
        assert_eq!(
            *f,
            test_frame(9, seq, rx_size(seq), r.mac, HOST_MAC),
            "frame {seq} came back with the MACs swapped"
        );
    }
}

fn jumbo_frames_go_out_whole(r: &'static Run, _: &str) {
    let out = &r.outcome.ok("jumbo").output;
    assert!(
        kv(out, "jumbo.too_big").contains("9015 bytes is more than the 9014-byte frames"),
        "{out}"
    );
    let got = frames_of(r, 10);
    assert_eq!(got.len(), JUMBO_COUNT as usize);
    for (seq, f) in got {
        let len = [9014, 5000, 1514][seq as usize % 3];
        assert_eq!(
            *f,
            test_frame(10, seq, len, r.mac, HOST_MAC),
            "jumbo frame {seq}"
        );
    }
}

fn pktgen_sends_valid_frames_on_both_drivers_without_allocating(r: &'static Run) {
    // Both transmit paths (tx_fill, then tx_packets), each PKTGEN_COUNT
    // frames from the userspace driver's port.
    let packets = r.outcome.json("pktgen-packets");
    assert_eq!(packets["path"].as_str(), Some("packets"), "{packets}");
    for key in ["sent", "completed", "nic_tx_packets"] {
        assert_eq!(
            packets["userspace"][key].as_u64(),
            Some(PKTGEN_COUNT),
            "{key}: {packets}"
        );
    }
    assert_eq!(
        packets["userspace"]["allocations"].as_u64(),
        Some(0),
        "{packets}"
    );
    let json = r.outcome.json("pktgen");
    assert_eq!(json["path"].as_str(), Some("fill"), "{json}");
    assert_eq!(
        json["userspace"]["sent"].as_u64(),
        Some(PKTGEN_COUNT),
        "{json}"
    );
    // The driver took PKTGEN_COUNT frames by construction (the loop stops
    // there); what shows they went out: the driver's completions (e1000:
    // descriptors the NIC marked done; virtio-net: chains the device gave
    // back), the NIC's counter (e1000: GPTC; virtio-net: the same
    // completions, counted in the driver) and the frames the host received.
    assert_eq!(
        json["userspace"]["completed"].as_u64(),
        Some(PKTGEN_COUNT),
        "the driver reported every frame sent: {json}"
    );
    assert_eq!(
        json["userspace"]["nic_tx_packets"].as_u64(),
        Some(PKTGEN_COUNT),
        "the NIC counted every frame: {json}"
    );
    assert_eq!(
        json["userspace"]["allocations"].as_u64(),
        Some(0),
        "no heap allocation on the send path: {json}"
    );
    assert_eq!(
        json["kernel"]["sent"].as_u64(),
        Some(PKTGEN_COUNT),
        "the kernel baseline sent them all: {json}"
    );
    assert!(
        json["kernel"]["nic_tx_packets"].as_u64() >= Some(PKTGEN_COUNT),
        "the kernel's interface counted them (and any frames of its own): {json}"
    );
    // On the wire: nic-pktgen's frames, from UDP port 4000 (the userspace
    // driver) or 4001 (the kernel's), each side's exactly once.
    let on_wire = |port: u16| {
        r.frames
            .iter()
            .filter(|f| {
                f.len() == 60
                    && f[12..14] == [0x08, 0x00]
                    && f[30..34] == [198, 51, 100, 2]
                    && f[34..36] == port.to_be_bytes()
            })
            .count() as u64
    };
    assert_eq!(
        on_wire(4000),
        2 * PKTGEN_COUNT,
        "frames from the userspace driver (both paths) the host received: {json}"
    );
    assert_eq!(
        on_wire(4001),
        PKTGEN_COUNT,
        "frames from the kernel's driver the host received: {json}"
    );
    // System calls of the send loops, counted by the kernel (as root): one
    // sendmmsg per batch of at most 32 frames for AF_PACKET; the userspace
    // driver's loop makes none per frame or batch (descriptor writes and a
    // doorbell), fewer than one per batch all told.
    let syscalls = |side: &str| {
        json[side]["syscalls"]
            .as_u64()
            .unwrap_or_else(|| panic!("{side}: system calls not measured as root: {json}"))
    };
    let batches = PKTGEN_COUNT.div_ceil(32);
    assert!(syscalls("kernel") >= batches, "{json}");
    assert!(syscalls("userspace") < batches, "{json}");
    assert!(json["ratio"].as_f64().is_some());
    let frame = r
        .frames
        .iter()
        .find(|f| f.len() == 60 && f[12..14] == [0x08, 0x00] && f[30..34] == [198, 51, 100, 2]);
    let frame = frame.expect("the host received pktgen frames");
    let ip = Ipv4HeaderSlice::from_slice(&frame[14..]).expect("an IPv4 header");
    assert_eq!(ip.header_checksum(), ip.to_header().calc_header_checksum());
    let p = SlicedPacket::from_ethernet(frame).expect("a well-formed frame");
    let Some(TransportSlice::Udp(u)) = p.transport else {
        panic!("not UDP")
    };
    assert_eq!(
        u.checksum(),
        u.to_header()
            .calc_checksum_ipv4(&ip.to_header(), u.payload())
            .expect("checksum")
    );
}

fn frames_for_other_macs_arrive_only_in_promiscuous_mode(r: &'static Run) {
    let out = &r.outcome.ok("promisc").output;
    assert_eq!(
        kv_num(out, "promisc.off_received"),
        0,
        "the NIC filtered frames for another MAC"
    );
    assert_eq!(
        kv_num(out, "promisc.on_received"),
        5,
        "in promiscuous mode it took them"
    );
}
