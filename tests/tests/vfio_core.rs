//! vfio-core in the QEMU machine: one boot with an NVMe controller, an
//! e1000 and an edu runs every scenario; each test checks its step's output.
//!
//! What is checked comes from the devices: IDs from config space, registers
//! through the mapped BARs (values QEMU's models set), interrupts the e1000
//! raised, bytes the kernel's nvme driver read back after `devbind unbind`,
//! factorials edu computed and bytes it moved by DMA (`edu-demo`, the worked
//! example driver in examples/edu); in one container with the NVMe, edu's
//! memory below its 28-bit limit, the disk's bytes the NVMe read above it,
//! and the hugepages an NVMe controller and an e1000 take (`dma-limits`,
//! `hugepages`: guest-check's limits.rs).

use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use vfio_tests::check::{kv, kv_num, random_bytes};
use vfio_tests::machine::{Machine, Outcome};
use vfio_tests::wire::{Capture, Repeater};

const DISK_BYTES: usize = 16 << 20;
const DISK_SEED: u64 = 0x5eed_0002;
const NVME: &str = "0000:00:03.0";
const NIC: &str = "0000:00:04.0";
const MISSING: &str = "0000:00:1e.0";
/// Two NICs behind a PCI bridge: one IOMMU group.
const SHARED_A: &str = "0000:01:01.0";
const SHARED_B: &str = "0000:01:02.0";
/// QEMU's educational device, after the bridge.
const EDU: &str = "0000:00:06.0";

/// A frame the host sends the guest's NIC: broadcast, local experimental EtherType.
const PROBE_ETHERTYPE: [u8; 2] = [0x88, 0xb5];

/// The boot's results and the frames the guest's NIC put on the wire.
struct Run {
    outcome: Outcome,
    frames: Vec<Vec<u8>>,
    probes_sent: usize,
}

fn run() -> &'static Run {
    static RUN: OnceLock<Result<Run, String>> = OnceLock::new();
    vfio_tests::once(&RUN, boot)
}

fn outcome() -> &'static Outcome {
    &run().outcome
}

fn probe_frame() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f.extend_from_slice(&PROBE_ETHERTYPE);
    f.extend_from_slice(b"vfio-rs wire probe");
    f.resize(60, 0);
    f
}

fn boot() -> vfio_tests::Result<Run> {
    let mut m = Machine::new("vfio-core");
    let disk = m.dir().join("disk.img");
    std::fs::write(&disk, random_bytes(DISK_BYTES, DISK_SEED)).expect("write disk image");
    assert_eq!(m.nvme(&disk, ""), NVME);
    let nic = m.e1000("e1000");
    assert_eq!(m.nics_addr(nic), NIC);
    let shared = m.e1000s_behind_bridge(2);
    assert_eq!(shared, [SHARED_A, SHARED_B]);
    assert_eq!(m.edu(), EDU);
    let netdev = "$(ls /sys/bus/pci/devices/0000:00:04.0/net)";
    m.step(
        "kernel-nic-tx",
        &format!(
            "ip link set {netdev} up && ip addr add 192.0.2.2/24 dev {netdev}\n\
             for i in $(seq 100); do [ \"$(cat /sys/class/net/{netdev}/carrier)\" = 1 ] && break; sleep 0.1; done\n\
             arping -c 2 -w 3 -I {netdev} 192.0.2.1; true"
        ),
    );
    m.step(
        "kernel-nic-rx",
        &format!(
            "f=/sys/class/net/{netdev}/statistics/rx_packets; before=$(cat $f)\n\
             for i in $(seq 100); do now=$(cat $f); [ $now -gt $before ] && break; sleep 0.1; done\n\
             echo rx_before=$before; echo rx_after=$now"
        ),
    );
    m.step("malformed", "guest-check open 00:3g.0");
    m.step("devbind-malformed", "devbind bind 0000:00:03");
    m.step("missing", &format!("guest-check open {MISSING}"));
    m.step("devbind-missing", &format!("devbind bind {MISSING}"));
    m.step("on-kernel-driver", &format!("guest-check open {NVME}"));
    m.step("status-before", "devbind status");
    m.step("bind", &format!("devbind bind {NVME} {NIC}"));
    m.step("bind-again", &format!("devbind bind {NVME}"));
    m.step("status-after", "devbind status");
    m.step("open", &format!("guest-check open {NVME} {NIC}"));
    m.step("irq", &format!("guest-check irq {NIC} {NVME}"));
    m.step(
        "dma-hugepages",
        &format!("guest-check dma {NVME} hugepages 4194304"),
    );
    m.step(
        "dma-pages",
        &format!("guest-check dma {NVME} pages 1048576"),
    );
    m.step("pool", &format!("guest-check pool {NIC}"));
    m.step(
        "dma-cycles",
        &format!("guest-check dma-cycles {NVME} {DMA_CYCLES}"),
    );
    m.step("reset", &format!("guest-check reset {NVME}"));
    m.step("hugepages", &format!("guest-check hugepages {NVME} {NIC}"));
    m.step(
        "nic-confine",
        &format!("guest-check nic-confine {NIC}; rc=$?; dmesg | grep -i 'DMAR.*fault' | tail -5; exit $rc"),
    );
    m.step(
        "hugepages-exhausted",
        &format!("echo 0 > /proc/sys/vm/nr_hugepages; guest-check dma {NVME} hugepages 4194304"),
    );
    m.step("fallback", &format!("guest-check dma {NVME} auto 4194304"));
    m.step("unbind", &format!("devbind unbind {NVME} {NIC}"));
    m.step(
        "kernel-reads",
        &format!(
            "for i in $(seq 50); do n=$(ls /sys/bus/pci/devices/{NVME}/nvme 2>/dev/null); [ -b /dev/${{n}}n1 ] && break; sleep 0.1; done\n\
             dd if=/dev/${{n}}n1 bs=65536 count=16 2>/dev/null | sha256sum"
        ),
    );
    m.step("status-end", "devbind status");
    m.step(
        "group-not-viable",
        &format!("devbind bind {SHARED_A} && guest-check open {SHARED_A}"),
    );
    m.step(
        "group-viable",
        &format!("devbind bind {SHARED_B} && guest-check open {SHARED_A} {SHARED_B}"),
    );
    edu_steps(&mut m);
    // The NVMe controller back on vfio-pci (`unbind` gave it to the
    // kernel), beside the edu bound by edu_steps.
    m.step(
        "dma-limits",
        &format!("devbind bind {NVME} && guest-check dma-limits {NVME} {EDU}"),
    );
    let running = m.start()?;
    let capture = Capture::start(&running.nics[nic].socket);
    let probes = Repeater::start(
        &running.nics[nic].socket,
        probe_frame(),
        std::time::Duration::from_millis(200),
    );
    let outcome = running.wait();
    let probes_sent = probes.stop();
    let frames = capture.stop();
    Ok(Run {
        outcome: outcome?,
        frames,
        probes_sent,
    })
}

/// edu-demo's scenarios: its errors, then a run polled, with MSI and with
/// INTx, each followed by the DMAR faults the kernel logged for the edu.
fn edu_steps(m: &mut Machine) {
    m.step("edu-malformed", "edu-demo 00:3g.0");
    m.step("edu-not-bound", &format!("edu-demo {EDU}"));
    m.step("edu-not-edu", &format!("edu-demo {NVME}"));
    m.step("edu-bind", &format!("devbind bind {EDU}"));
    for (step, irq) in [
        ("edu-poll", ""),
        ("edu-msi", " --irq msi"),
        ("edu-intx", " --irq intx"),
    ] {
        m.step(
            step,
            &format!("edu-demo {EDU}{irq} --json; rc=$?; dmesg | grep 'DMAR.*\\[00:06.0\\] fault'; exit $rc"),
        );
    }
}

fn line_with<'a>(output: &'a str, needle: &str) -> &'a str {
    output
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{output}"))
}

#[test]
fn malformed_address_is_a_clear_error() {
    let o = outcome();
    o.failed_with("malformed", "invalid PCI address \"00:3g.0\"");
    o.failed_with("devbind-malformed", "invalid PCI address");
}

#[test]
fn missing_device_is_a_clear_error() {
    let o = outcome();
    o.failed_with("missing", &format!("PCI device {MISSING} does not exist"));
    o.failed_with("devbind-missing", "does not exist");
}

#[test]
fn device_on_its_kernel_driver_is_a_clear_error() {
    outcome().failed_with(
        "on-kernel-driver",
        &format!(
            "bound to the kernel driver `nvme`, not vfio-pci; bind it to vfio-pci (vfio_core::pci::Sysfs::bind_vfio, or as root: echo vfio-pci > /sys/bus/pci/devices/{NVME}/driver_override"
        ),
    );
}

#[test]
fn devbind_binds_both_devices_and_gives_them_back() {
    let o = outcome();
    assert!(line_with(&o.ok("status-before").output, NVME).contains("nvme"));
    assert!(line_with(&o.ok("status-before").output, NIC).contains("e1000"));
    let bind = &o.ok("bind").output;
    assert!(line_with(bind, NVME).contains("vfio-pci"), "{bind}");
    assert!(line_with(bind, NIC).contains("vfio-pci"), "{bind}");
    o.ok("bind-again");
    assert!(line_with(&o.ok("status-after").output, NVME).contains("vfio-pci"));
    assert!(line_with(&o.ok("status-after").output, NIC).contains("vfio-pci"));
    o.ok("unbind");
    assert!(line_with(&o.ok("status-end").output, NVME).contains("nvme"));
    assert!(line_with(&o.ok("status-end").output, NIC).contains("e1000"));
}

#[test]
fn kernel_driver_reads_the_disk_after_unbind() {
    let out = &outcome().ok("kernel-reads").output;
    let image = random_bytes(DISK_BYTES, DISK_SEED);
    let want = format!("{:x}", Sha256::digest(&image[..1 << 20]));
    assert!(
        out.contains(&want),
        "the kernel's nvme driver read other bytes than the image holds: want {want}, got\n{out}"
    );
}

#[test]
fn both_devices_open_in_one_container_with_ids_from_config_space() {
    let out = &outcome().ok("open").output;
    assert_eq!(kv(out, &format!("{NVME}.vendor")), "1b36");
    assert_eq!(kv(out, &format!("{NVME}.device")), "0010");
    assert_eq!(kv(out, &format!("{NVME}.class")), "010802");
    assert_eq!(kv(out, &format!("{NIC}.vendor")), "8086");
    assert_eq!(kv(out, &format!("{NIC}.device")), "100e");
    assert_eq!(kv(out, &format!("{NIC}.class")), "020000");
    assert_ne!(
        kv(out, &format!("{NVME}.group")),
        kv(out, &format!("{NIC}.group")),
        "the test wants two IOMMU groups in one container"
    );
    assert_eq!(kv(out, &format!("{NVME}.shared_container")), "true");
    assert_eq!(kv(out, &format!("{NIC}.shared_container")), "true");
}

#[test]
fn nvme_registers_read_through_the_mapped_bar() {
    let out = &outcome().ok("open").output;
    let k = |f: &str| kv_num(out, &format!("{NVME}.{f}"));
    assert_eq!(k("cap.mqes"), 0x7ff, "QEMU's NVMe sets CAP.MQES to 0x7ff");
    assert_eq!(k("cap.to"), 0xf);
    assert_eq!(kv(out, &format!("{NVME}.cap.cqr")), "true");
    assert_eq!(k("cap.dstrd"), 0);
    assert_eq!(k("cap.css") & 1, 1, "NVM command set supported");
    assert_eq!(k("cap.mpsmax"), 4);
    let vs = k("vs");
    assert_eq!(vs >> 16, 1, "NVMe major version 1, VS={vs:#x}");
    assert!((vs >> 8 & 0xff) >= 2, "NVMe 1.2 or later, VS={vs:#x}");
    assert!(
        k("bar0_len") >= 0x2000,
        "BAR0 holds registers and doorbells"
    );
}

#[test]
fn e1000_registers_read_through_the_mapped_bar() {
    let out = &outcome().ok("open").output;
    // STATUS.LU is left as the kernel driver left the link when it let go; bringing
    // the link up is the NIC driver's job.
    assert_eq!(kv(out, &format!("{NIC}.status.full_duplex")), "true");
    assert_eq!(
        kv_num(out, &format!("{NIC}.status.speed_bits")) & 2,
        2,
        "1000 Mb/s"
    );
    assert_eq!(
        kv(out, &format!("{NIC}.mac")),
        "52:54:00:12:34:56",
        "RAL0/RAH0 hold the MAC QEMU was given"
    );
    assert_eq!(kv(out, &format!("{NIC}.rah.valid")), "true");
    assert_eq!(kv_num(out, &format!("{NIC}.bar0_len")), 128 << 10);
}

#[test]
fn interrupts_reach_eventfds() {
    let out = &outcome().ok("irq").output;
    assert_eq!(kv_num(out, "e1000.irq_count.Intx"), 1);
    assert_eq!(
        kv_num(out, "e1000.quiet_interrupts"),
        0,
        "no interrupt before one was raised"
    );
    for round in ["round1", "round2"] {
        assert!(
            kv_num(out, &format!("e1000.{round}.fired")) >= 1,
            "{round}: the ICS-raised interrupt did not arrive:\n{out}"
        );
        assert_eq!(kv(out, &format!("e1000.{round}.icr_txdw")), "true");
    }
    assert!(kv_num(out, "nvme.irq_count.Msix") >= 2);
    assert_eq!(kv_num(out, "nvme.msix_enabled"), 4);
    assert_eq!(kv(out, "nvme.msix_too_many"), "true");
}

/// Allocate/map/unmap cycles that must leave no mapping and no locked memory behind.
const DMA_CYCLES: usize = 10_000;

#[test]
fn ten_thousand_map_unmap_cycles_leave_no_mapping_and_no_locked_memory() {
    let out = &outcome().ok("dma-cycles").output;
    assert_eq!(kv_num(out, "cycles.done"), DMA_CYCLES as u64);
    assert_eq!(
        kv(out, "cycles.kernel_mappings_available_after"),
        kv(out, "cycles.kernel_mappings_available_before"),
        "the kernel's count of free DMA mappings is back where it started"
    );
    assert_ne!(kv(out, "cycles.kernel_mappings_available_before"), "None");
    assert_eq!(
        kv_num(out, "cycles.container_mappings_after"),
        kv_num(out, "cycles.container_mappings_before")
    );
    assert_eq!(
        kv_num(out, "cycles.vmlck_kib_after"),
        kv_num(out, "cycles.vmlck_kib_before"),
        "locked memory is back where it started"
    );
    assert_eq!(kv_num(out, "cycles.pool_buffers_unaccounted"), 0);
}

fn check_dma(step: &str, page_kind: &str) -> String {
    let out = outcome().ok(step).output.clone();
    assert_eq!(kv(&out, "dma.page_kind"), page_kind);
    assert_eq!(kv_num(&out, "dma.mappings"), 1);
    assert_eq!(kv_num(&out, "dma.pattern_mismatches"), 0);
    assert_eq!(kv(&out, "dma.iova_in_valid_range"), "true");
    assert_eq!(kv_num(&out, "dma.mappings_after_drop"), 0);
    assert!(kv_num(&out, "dma.iova") >= 1 << 20, "no IOVA below 1 MiB");
    out
}

#[test]
fn hugepage_memory_is_mapped_written_and_unmapped() {
    let out = check_dma("dma-hugepages", "Huge2M");
    assert_eq!(kv_num(&out, "dma.len"), 4 << 20);
    assert_eq!(
        kv_num(&out, "dma.iova") % (2 << 20),
        0,
        "2 MiB-aligned IOVA"
    );
    assert_eq!(kv(&out, "dma.locked_kib_after_drop"), "0");
}

#[test]
fn ordinary_page_memory_is_mapped_written_and_unmapped() {
    let out = check_dma("dma-pages", "Normal");
    assert_eq!(kv_num(&out, "dma.len"), 1 << 20);
    assert_eq!(kv(&out, "dma.locked_kib_after_drop"), "0");
}

#[test]
fn without_hugepages_memory_falls_back_with_a_warning() {
    let o = outcome();
    o.failed_with("hugepages-exhausted", "hugepages exhausted");
    o.failed_with("hugepages-exhausted", "nr_hugepages");
    let out = check_dma("fallback", "Normal");
    assert!(
        out.contains("nr_hugepages"),
        "the fallback's warning names the fix:\n{out}"
    );
}

#[test]
fn pool_hands_out_every_buffer_once_and_takes_them_back() {
    let out = &outcome().ok("pool").output;
    let cap = kv_num(out, "pool.capacity");
    assert_eq!(cap, 1024);
    assert_eq!(kv_num(out, "pool.allocated"), cap);
    assert_eq!(kv_num(out, "pool.distinct_iovas"), cap);
    assert_eq!(kv(out, "pool.contents_intact"), "true");
    assert_eq!(kv_num(out, "pool.free_when_all_held"), 0);
    assert_eq!(kv_num(out, "pool.free_after_drop"), cap);
}

#[test]
fn bus_master_and_device_reset() {
    let out = &outcome().ok("reset").output;
    assert_eq!(kv(out, "command.memory_space"), "true");
    assert_eq!(kv(out, "command.bus_master"), "true");
    assert_eq!(
        kv_num(out, "cc.written"),
        0x46_0000,
        "CC holds IOSQES=6, IOCQES=4"
    );
    assert_eq!(
        kv_num(out, "cc.after_reset"),
        0,
        "VFIO_DEVICE_RESET put CC back to its reset value"
    );
}

#[test]
fn nic_wire_carries_frames_out_to_the_host() {
    let run = run();
    run.outcome.ok("kernel-nic-tx");
    // ARP request (EtherType 0x0806, opcode 1) from the NIC's MAC for 192.0.2.1.
    let arp = run
        .frames
        .iter()
        .find(|f| f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 1]);
    let arp = arp.unwrap_or_else(|| {
        panic!(
            "no ARP request among the {} frames the host received",
            run.frames.len()
        )
    });
    assert_eq!(
        arp[6..12],
        [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
        "source MAC"
    );
    assert_eq!(arp[28..32], [192, 0, 2, 2], "sender IP");
    assert_eq!(arp[38..42], [192, 0, 2, 1], "target IP");
}

#[test]
fn nic_wire_carries_frames_in_from_the_host() {
    let run = run();
    let out = &run.outcome.ok("kernel-nic-rx").output;
    assert!(run.probes_sent > 0);
    assert!(
        kv_num(out, "rx_after") > kv_num(out, "rx_before"),
        "the guest's NIC received none of the {} frames the host sent:\n{out}",
        run.probes_sent
    );
}

#[test]
fn group_with_a_member_on_a_host_driver_is_not_viable_and_says_which() {
    let o = outcome();
    let out = &o.failed_with("group-not-viable", "is not viable").output;
    assert!(
        out.contains(&format!("{SHARED_B} (driver `e1000`)")),
        "the error names the member still on e1000:\n{out}"
    );
    assert!(
        out.contains(&format!("bind {SHARED_B} to vfio-pci too")),
        "{out}"
    );
    let out = &o.ok("group-viable").output;
    assert_eq!(
        kv(out, &format!("{SHARED_A}.group")),
        kv(out, &format!("{SHARED_B}.group")),
        "both NICs are in one group"
    );
    assert_eq!(
        kv(out, &format!("{SHARED_B}.mac")),
        "52:54:00:ab:01:02",
        "the MAC the test gave it"
    );
}

#[test]
fn nic_writes_to_unmapped_iovas_are_blocked_and_the_driver_recovers() {
    let out = &outcome().ok("nic-confine").output;
    let iova = kv(out, "nic_confine.iova");
    assert!(
        out.lines().any(|l| l.contains("DMAR")
            && l.contains("[00:04.0] fault addr")
            && l.contains(&format!("fault addr {iova} "))),
        "the guest kernel logged a DMAR fault for the NIC's write to {iova}:\n{out}"
    );
    assert_eq!(kv(out, "nic_confine.canary_intact"), "true");
    let frame = kv(out, "nic_confine.after_reset_frame");
    assert_eq!(
        frame,
        format!("{:02x?}", probe_frame()),
        "after a reset the driver receives the host's probe frame intact"
    );
}

#[test]
fn edu_demo_refuses_a_bad_address_an_unbound_device_and_another_device() {
    let o = outcome();
    o.failed_with("edu-malformed", "invalid PCI address \"00:3g.0\"");
    o.failed_with(
        "edu-not-bound",
        // vfio-core's own text: edu-demo is self-contained (it can be
        // copied out of the repository) and prints no devbind hint.
        &format!(
            "{EDU} is not bound to vfio-pci (it has no driver); bind it to vfio-pci (vfio_core::pci::Sysfs::bind_vfio, or as root: echo vfio-pci > /sys/bus/pci/devices/{EDU}/driver_override"
        ),
    );
    o.failed_with(
        "edu-not-edu",
        &format!("PCI device {NVME} is 1b36:0010, not QEMU's edu (1234:11e8)"),
    );
    o.ok("edu-bind");
}

/// What edu-demo's DMA round trip must bring back: its pattern, whose byte
/// i is (i * 31 + i / 256) mod 256, 4095 bytes (all a transfer reaches on
/// QEMU 7.2), hashed here.
fn edu_pattern_sha256() -> String {
    let pattern: Vec<u8> = (0..4095usize)
        .map(|i| ((i * 31 + i / 256) % 256) as u8)
        .collect();
    format!("{:x}", Sha256::digest(&pattern))
}

/// One edu-demo run: identification, factorials equal to the host's, the
/// pattern back by DMA through a real IOMMU at IOVAs below 256 MiB, no DMAR
/// fault; with interrupts, exactly the raised one and one per factorial and
/// transfer.
fn check_edu(step: &str, irq: &str) {
    let o = outcome();
    let out = &o.ok(step).output;
    assert_eq!(
        kv(out, "edu.version"),
        "1.0",
        "QEMU 7.2's identification 0x010000ed"
    );
    assert_eq!(kv(out, "edu.irq"), irq);
    assert_eq!(kv(out, "liveness"), "ok");
    for n in 0..=12u64 {
        let want: u64 = (1..=n).product();
        assert_eq!(
            kv_num(out, &format!("factorial.{n}")),
            want,
            "{n}! from the device"
        );
    }
    assert_eq!(kv_num(out, "dma.len"), 4095);
    assert_eq!(
        kv(out, "dma.sha256"),
        edu_pattern_sha256(),
        "the bytes that came back by DMA"
    );
    assert_eq!(kv(out, "dma.match"), "true");
    for key in ["dma.to_device_iova", "dma.from_device_iova"] {
        assert!(
            kv_num(out, key) + 4095 <= 1 << 28,
            "{key} below edu's 28-bit limit:\n{out}"
        );
    }
    assert!(
        !out.contains("fault"),
        "the IOMMU faulted the edu's DMA:\n{out}"
    );
    let handled = kv_num(out, "irq.handled");
    if irq == "poll" {
        assert_eq!(handled, 0);
    } else {
        let raised = kv_num(out, "irq.raised_status");
        assert_eq!(
            raised & 0x5a00_0000,
            0x5a00_0000,
            "the raised value in the interrupt status"
        );
        // One each for the raised value, 13 factorials and 2 transfers, no
        // more: INTx unmasked before its acknowledgement fires again at once
        // (19 in a run with the two swapped), and no fewer, or a wait would
        // have timed out.
        assert_eq!(handled, 16, "interrupts handled:\n{out}");
    }
    let json = o.json(step);
    assert_eq!(json["irq"], irq);
    assert_eq!(json["dma_sha256"], edu_pattern_sha256());
    assert_eq!(json["factorials"]["12"], 479_001_600);
    assert_eq!(json["interrupts"], handled);
}

#[test]
fn edu_demo_polled_computes_factorials_and_round_trips_dma() {
    check_edu("edu-poll", "poll");
}

#[test]
fn edu_demo_with_msi_ends_every_factorial_and_transfer_with_an_interrupt() {
    check_edu("edu-msi", "msi");
}

#[test]
fn edu_demo_with_intx_acknowledges_then_unmasks_each_interrupt_once() {
    check_edu("edu-intx", "intx");
}

/// What QEMU's edu reaches: 28 bits of bus address.
const EDU_LIMIT: u64 = (1 << 28) - 1;
/// The seed of dma-limits' edu pattern (guest-check's `limits::EDU_SEED`).
const EDU_SEED: u64 = 0xed0_0028;

/// An IOVA range `<key>.iova`..=`<key>.last` of dma-limits' output.
fn iova_range(out: &str, key: &str) -> (u64, u64) {
    let (first, last) = (
        kv_num(out, &format!("{key}.iova")),
        kv_num(out, &format!("{key}.last")),
    );
    assert_eq!(
        last + 1 - first,
        kv_num(out, &format!("{key}.len")),
        "{key}: its range is its length:\n{out}"
    );
    assert!(first >= 1 << 20, "{key}: no IOVA below 1 MiB:\n{out}");
    (first, last)
}

fn overlap(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

fn dma_limits_output() -> &'static str {
    &outcome().ok("dma-limits").output
}

#[test]
fn dma_limits_a_large_unlimited_region_takes_the_low_iovas() {
    let out = dma_limits_output();
    assert_eq!(kv_num(out, "limits.limit"), EDU_LIMIT);
    let low = iova_range(out, "limits.low");
    assert_eq!(low.1 + 1 - low.0, 241 << 20);
    assert!(
        low.1 < EDU_LIMIT && EDU_LIMIT - low.1 < 64 << 20,
        "the 241 MiB region lies below 2^28 and leaves less than 64 MiB above it:\n{out}"
    );
}

#[test]
fn dma_limits_a_limited_request_that_no_longer_fits_is_refused() {
    let out = dma_limits_output();
    let refusal = kv(out, "limits.limited");
    assert!(
        refusal.starts_with("DmaLimitExhausted: ")
            && refusal.contains(
                "no free IOVA range of 67108864 bytes (0x4000000) at or below the DMA limit 0xfffffff (28 address bits)"
            ),
        "64 MiB below 2^28 after 241 MiB were taken:\n{out}"
    );
    assert_eq!(
        kv(out, "limits.limited.mappings_delta"),
        "0",
        "the refused request mapped nothing"
    );
}

#[test]
fn dma_limits_edu_memory_still_comes_from_below_its_limit_and_moves_bytes() {
    let out = dma_limits_output();
    let low = iova_range(out, "limits.low");
    let src = iova_range(out, "limits.edu_src");
    let dst = iova_range(out, "limits.edu_dst");
    for (name, r) in [("src", src), ("dst", dst)] {
        assert!(r.1 <= EDU_LIMIT, "edu {name} memory below 2^28:\n{out}");
        assert!(
            !overlap(r, low),
            "edu {name} memory apart from the large region:\n{out}"
        );
    }
    assert!(!overlap(src, dst), "{out}");
    let pattern = random_bytes(4095, EDU_SEED);
    let want = format!("{:x}", Sha256::digest(&pattern));
    assert_eq!(
        kv(out, "limits.edu_sha256"),
        want,
        "the pattern back from RAM -> edu -> RAM:\n{out}"
    );
}

#[test]
fn dma_limits_the_unlimited_nvme_reaches_above_the_limit() {
    let out = dma_limits_output();
    let (first, last) = iova_range(out, "limits.high");
    assert!(
        first <= EDU_LIMIT && last > EDU_LIMIT,
        "the 64 MiB region allocated after the edu's lies partly above 2^28:\n{out}"
    );
    let target = kv_num(out, "limits.nvme_iova");
    assert!(
        target > EDU_LIMIT && target == first + kv_num(out, "limits.nvme_offset"),
        "the NVMe read went above 2^28:\n{out}"
    );
    assert_eq!(kv_num(out, "limits.nvme_block_size"), 512);
    let at = kv_num(out, "limits.nvme_lba") as usize * 512;
    let len = kv_num(out, "limits.nvme_bytes") as usize;
    assert!(len > 0 && target + len as u64 - 1 <= last);
    let image = random_bytes(DISK_BYTES, DISK_SEED);
    let want = format!("{:x}", Sha256::digest(&image[at..at + len]));
    assert_eq!(
        kv(out, "limits.nvme_sha256"),
        want,
        "the disk's bytes, read by the NVMe into IOVAs above 2^28:\n{out}"
    );
}

#[test]
fn dma_limits_the_edu_driver_refuses_memory_above_its_limit() {
    let out = dma_limits_output();
    let (first, _) = iova_range(out, "limits.outside");
    assert!(first > EDU_LIMIT, "wholly above 2^28:\n{out}");
    for key in [
        "limits.edu_to_device_outside",
        "limits.edu_from_device_outside",
    ] {
        let e = kv(out, key);
        assert!(
            e.contains(&format!("at IOVA {first:#x}"))
                && e.contains("above the device's DMA limit 0xfffffff (28 address bits)"),
            "{key}:\n{out}"
        );
    }
    assert_eq!(kv(out, "limits.outside_intact"), "true");
    assert_eq!(
        kv(out, "limits.edu_after_refusal_sha256"),
        kv(out, "limits.edu_sha256"),
        "the edu's buffer still holds the pattern: the refused copy never ran"
    );
}

#[test]
fn dma_limits_no_iommu_fault_is_logged() {
    let out = dma_limits_output();
    assert_eq!(
        kv_num(out, "limits.dmar_faults_new"),
        0,
        "the kernel logged DMAR faults during the step:\n{out}"
    );
}

#[test]
fn an_nvme_controller_and_an_e1000_take_two_hugepages() {
    let out = &outcome().ok("hugepages").output;
    // The e1000's pool: (2 x 256 RX + 256 TX + 1024 spare) buffers of
    // 2 KiB, 3.5 MiB: two 2 MiB hugepages. Everything else is at most
    // 1 MiB and on ordinary pages: the NVMe admin SQ (2 KiB), CQ (512 B) and
    // identify page, the I/O SQ (1 KiB), CQ (256 B) and PRP lists (64 KiB),
    // the e1000's RX and TX descriptor rings (4 KiB each). Before small
    // Backing::Auto requests went to ordinary pages, each of those 8 took
    // a hugepage of its own: 10 in all (measured with the threshold set
    // back).
    assert_eq!(kv_num(out, "hugepages.nic_pool_bytes"), 3584 << 10);
    assert_eq!(
        kv(out, "hugepages.used"),
        "2",
        "2 MiB hugepages taken while both were open:\n{out}"
    );
    assert_eq!(
        kv_num(out, "hugepages.free_after_close"),
        kv_num(out, "hugepages.free_before"),
        "all given back:\n{out}"
    );
}
