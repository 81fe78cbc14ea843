//! The NVMe driver's optional controller features in the QEMU machine, with
//! QEMU's own trace of what its NVMe model saw as the witness: shadow
//! doorbells (Doorbell Buffer Config) off and on, and across a reset.
//!
//! The steps run one after another, each creating I/O queue 1, so the
//! trace splits at each creation of SQ 1 (`pci_nvme_create_sq`): counted
//! from the end, the run with shadow doorbells off, the run with them on,
//! and the reset run before and after its reset. (The guest kernel's nvme
//! driver, which uses shadow doorbells too, ran before all of them.)

use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use vfio_tests::check::{kv, random_bytes};
use vfio_tests::machine::{Machine, Outcome};

const A: &str = "0000:00:03.0";
const A_BYTES: usize = 8 << 20;
const A_BLOCKS: u64 = (A_BYTES / 512) as u64;

/// Scattered (LBA, blocks) ranges read with SGLs and with PRPs: one block,
/// odd lengths across pages, one past a command's 128 KiB and the last block.
const RANGES: [(u64, u64); 5] = [(0, 1), (77, 255), (4097, 9), (9000, 300), (A_BLOCKS - 1, 1)];

/// Creations of CQ 1 in the interrupt steps: two nvme-io reads, nvme-perf,
/// the reset in interrupt mode (before and after) and the async copy.
const IRQ_STEPS: usize = 6;

struct Run {
    outcome: Outcome,
    trace: String,
}

fn image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| random_bytes(A_BYTES, 0x5d))
}

fn sha(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn run() -> &'static Run {
    static RUN: OnceLock<Result<Run, String>> = OnceLock::new();
    vfio_tests::once(&RUN, boot)
}

fn boot() -> vfio_tests::Result<Run> {
    let mut m = Machine::new("nvme-features");
    m.trace("pci_nvme_create_sq")
        .trace("pci_nvme_dbbuf_config")
        .trace("pci_nvme_mmio_doorbell_*")
        .trace("pci_nvme_shadow_doorbell_*")
        .trace("pci_nvme_map_sgl")
        .trace("pci_nvme_map_prp")
        .trace("pci_nvme_create_cq")
        .trace("pci_nvme_irq_msix");
    let dir = m.dir().to_path_buf();
    let disk = dir.join("a.img");
    std::fs::write(&disk, image()).expect("write a disk image");
    assert_eq!(m.nvme(&disk, ""), A);
    m.step("bind", &format!("devbind bind {A}"));
    m.step("identify", &format!("nvme-io --device {A} identify"));
    for mode in ["sgl", "prp"] {
        let lines: Vec<String> = RANGES
            .iter()
            .map(|(lba, blocks)| {
                format!(
                    "nvme-io --device {A} --data-pointer {mode} read --lba {lba} --blocks {blocks} \
                     --output - | sha256sum | sed 's/^/range {lba} {blocks} /'"
                )
            })
            .collect();
        m.step(mode, &lines.join("\n"));
    }
    // The whole image at QD 1 in 128 KiB commands, at QD 32 in 4 KiB ones.
    for (qd, io_size) in [(1, 128 << 10), (32, 4096)] {
        m.step(
            &format!("irq-qd{qd}"),
            &format!(
                "nvme-io --device {A} --interrupts --queue-depth {qd} read --lba 0 \
                 --blocks {A_BLOCKS} --io-size {io_size} --output - | sha256sum"
            ),
        );
    }
    m.step(
        "irq-perf",
        &format!(
            "nvme-perf --device {A} --interrupts --queue-depth 1 --seconds 1 --warmup 0.2 --json"
        ),
    );
    m.step(
        "reset-irq",
        &format!("guest-check nvme-reset {A} interrupts"),
    );
    m.step(
        "async-copy",
        &format!(
            "nvme-copy --device {A} --interrupts --lba 0 --blocks {A_BLOCKS} --io-size 65536 \
             --queue-depth 8 --output /tmp/copy.bin && sha256sum /tmp/copy.bin"
        ),
    );
    let read = format!("read --lba 0 --blocks {A_BLOCKS} --output - | sha256sum");
    m.step(
        "shadow-off",
        &format!("nvme-io --device {A} --no-shadow-doorbells {read}"),
    );
    m.step("shadow-on", &format!("nvme-io --device {A} {read}"));
    m.step("reset", &format!("guest-check nvme-reset {A}"));
    let outcome = m.run()?;
    let trace = std::fs::read_to_string(dir.join("trace.log")).expect("QEMU wrote its trace");
    Ok(Run { outcome, trace })
}

/// What QEMU's NVMe model recorded for I/O queue 1 from one creation of
/// its SQ to the next (the admin queue always rings MMIO).
#[derive(Debug, Default)]
struct Segment {
    mmio_sq: usize,
    mmio_cq: usize,
    shadow_sq: usize,
    /// Doorbell Buffer Configs (they come before the queue is created).
    configs: usize,
    /// SGLs and PRPs the controller mapped (any queue: the next process's
    /// admin commands land in the segment before its SQ 1).
    map_sgl: usize,
    map_prp: usize,
    /// CQ 1 was created with interrupts enabled.
    ien: bool,
    /// MSI-X interrupts raised on vector 1, and on others.
    msix_1: usize,
    msix_other: usize,
}

/// The trace cut at each creation of CQ 1 (one per process doing I/O),
/// the segments of this test's steps: the SGL step's ranges, the PRP
/// step's, the interrupt steps', then the shadow steps' and the reset's two.
fn all_segments(trace: &str) -> Vec<Segment> {
    let mut out = vec![Segment::default()];
    for line in trace.lines() {
        let seg = out.last_mut().expect("one at least");
        if line.contains("pci_nvme_create_cq") && line.contains("cqid=1,") {
            out.push(Segment {
                ien: line.contains("ien=1"),
                ..Segment::default()
            });
        } else if line.contains("pci_nvme_irq_msix") {
            if line.trim_end().ends_with("vector 1") {
                seg.msix_1 += 1;
            } else {
                seg.msix_other += 1;
            }
        } else if line.contains("pci_nvme_dbbuf_config") {
            seg.configs += 1;
        } else if line.contains("pci_nvme_mmio_doorbell_sq") && line.contains("sqid 1 ") {
            seg.mmio_sq += 1;
        } else if line.contains("pci_nvme_mmio_doorbell_cq") && line.contains("cqid 1 ") {
            seg.mmio_cq += 1;
        } else if line.contains("pci_nvme_shadow_doorbell_sq") && line.contains("sqid 1 ") {
            seg.shadow_sq += 1;
        } else if line.contains("pci_nvme_map_sgl") {
            seg.map_sgl += 1;
        } else if line.contains("pci_nvme_map_prp") {
            seg.map_prp += 1;
        }
    }
    // Before them: the guest kernel's nvme driver's queues, until the bind.
    let ours = 2 * RANGES.len() + IRQ_STEPS + 4;
    assert!(out.len() > ours, "creations of SQ 1 in the trace: {out:?}");
    out.split_off(out.len() - ours)
}

/// The last four segments: shadow off, on, reset run before and after.
fn segments(trace: &str) -> [Segment; 4] {
    let mut out = all_segments(trace);
    let n = out.len();
    out.drain(n - 4..)
        .collect::<Vec<_>>()
        .try_into()
        .expect("four")
}

#[test]
fn sgl_and_prp_reads_of_scattered_ranges_return_the_image() {
    let image = image();
    for step in ["sgl", "prp"] {
        let out = &run().outcome.ok(step).output;
        for (lba, blocks) in RANGES {
            let (at, n) = (lba as usize * 512, blocks as usize * 512);
            let want = format!("range {lba} {blocks} {}", sha(&image[at..at + n]));
            assert!(out.contains(&want), "{step}: no `{want}` in\n{out}");
        }
    }
}

#[test]
fn the_controller_saw_sgls_only_when_asked_and_reports_them() {
    let out = &run().outcome.ok("identify").output;
    for line in ["sgl support: true", "data pointer: auto"] {
        assert!(
            out.lines().any(|l| l.starts_with(line)),
            "no `{line}` in\n{out}"
        );
    }
    let segs = all_segments(&run().trace);
    let (sgl, prp) = segs[..2 * RANGES.len()].split_at(RANGES.len());
    for (seg, range) in sgl.iter().zip(RANGES) {
        assert!(seg.map_sgl > 0, "no SGL mapped for {range:?}: {seg:?}");
    }
    for (seg, range) in prp.iter().zip(RANGES) {
        assert_eq!(
            seg.map_sgl, 0,
            "an SGL with --data-pointer prp, {range:?}: {seg:?}"
        );
        assert!(seg.map_prp > 0, "no PRPs mapped for {range:?}: {seg:?}");
    }
}

#[test]
fn interrupt_mode_reads_at_qd1_and_qd32_return_the_image_on_raised_vectors() {
    let want = sha(image());
    for step in ["irq-qd1", "irq-qd32"] {
        let out = &run().outcome.ok(step).output;
        assert!(
            out.contains(&want),
            "{step}: other bytes than the image's:\n{out}"
        );
    }
    let segs = all_segments(&run().trace);
    let polled = &segs[2 * RANGES.len() - 1];
    assert!(
        !polled.ien && polled.msix_1 == 0,
        "a polled run: {polled:?}"
    );
    for (i, step) in ["irq-qd1", "irq-qd32", "irq-perf"].iter().enumerate() {
        let seg = &segs[2 * RANGES.len() + i];
        assert!(seg.ien, "{step}: CQ 1 created without interrupts: {seg:?}");
        assert!(seg.msix_1 > 0, "{step}: no MSI-X on vector 1: {seg:?}");
    }
    // Auto (the default): the 64 reads of 128 KiB are SGLs, the 2,048 of
    // 4 KiB PRPs.
    let [qd1, qd32] = [&segs[2 * RANGES.len()], &segs[2 * RANGES.len() + 1]];
    assert_eq!((qd1.map_sgl, qd32.map_sgl), (64, 0), "{qd1:?} {qd32:?}");
    assert!(qd32.map_prp >= 2048, "{qd32:?}");
    assert!(qd1.msix_1 >= 64, "QD 1: an interrupt per command: {qd1:?}");
}

#[test]
fn a_reset_with_interrupts_and_sgls_keeps_the_queue_on_its_vector() {
    let out = &run().outcome.ok("reset-irq").output;
    let want = sha(&image()[..4096]);
    assert_eq!(kv(out, "reset.before_sha256"), want, "{out}");
    assert_eq!(kv(out, "reset.after_reset_sha256"), want, "{out}");
    assert_eq!(kv(out, "reset.interrupt_vector"), "Some(1)", "{out}");
    assert_eq!(
        kv(out, "reset.interrupt_vector_after_reset"),
        "Some(1)",
        "{out}"
    );
    assert_eq!(kv(out, "reset.data_pointer"), "Sgl", "{out}");
    let segs = all_segments(&run().trace);
    for (i, when) in ["before", "after"].iter().enumerate() {
        let seg = &segs[2 * RANGES.len() + 3 + i];
        assert!(seg.ien && seg.msix_1 > 0, "{when} the reset: {seg:?}");
        assert!(seg.map_sgl > 0, "{when} the reset, SGLs: {seg:?}");
    }
}

#[test]
fn the_async_copy_writes_the_image_woken_by_interrupts() {
    let out = &run().outcome.ok("async-copy").output;
    assert!(
        out.contains(&sha(image())),
        "other bytes than the image's:\n{out}"
    );
    assert!(out.contains("completions by interrupt"), "{out}");
    let seg = &all_segments(&run().trace)[2 * RANGES.len() + 5];
    // 8 MiB in 64 KiB reads: 128 commands, each one SGL.
    assert_eq!(seg.map_sgl, 128, "{seg:?}");
    assert!(seg.ien && seg.msix_1 > 0, "{seg:?}");
}

#[test]
fn nvme_perf_in_interrupt_mode_reports_its_cpu_time() {
    let out = &run().outcome.ok("irq-perf").output;
    let json = out
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    let v: serde_json::Value = serde_json::from_str(json).expect("JSON");
    assert_eq!(v["interrupts"], true, "{json}");
    let total = v["userspace"]
        .as_array()
        .and_then(|r| r.last())
        .expect("rows");
    assert!(total["ios"].as_u64().unwrap_or(0) > 0, "{json}");
    let cpu = total["cpu_percent"].as_f64().expect("cpu_percent measured");
    assert!(
        cpu > 0.0 && cpu <= 100.5,
        "one thread's CPU time: {cpu}\n{json}"
    );
}

#[test]
fn shadow_doorbells_on_and_off_read_the_same_bytes_as_the_image() {
    let want = sha(image());
    for step in ["shadow-off", "shadow-on"] {
        let out = &run().outcome.ok(step).output;
        assert!(
            out.contains(&want),
            "{step}: other bytes than the image's:\n{out}"
        );
    }
}

#[test]
fn the_controller_takes_tails_from_the_shadow_page_only_when_on() {
    let [off, on, ..] = segments(&run().trace);
    assert!(off.mmio_sq > 0 && off.mmio_cq > 0, "{off:?}");
    assert_eq!(
        off.shadow_sq, 0,
        "shadow tails read with shadow doorbells off: {off:?}"
    );
    assert!(
        on.shadow_sq > 0,
        "no tail read from the shadow page: {on:?}"
    );
}

#[test]
fn a_reset_gives_the_controller_the_shadow_pages_again() {
    let out = &run().outcome.ok("reset").output;
    let want = sha(&image()[..4096]);
    assert_eq!(kv(out, "reset.before_sha256"), want, "{out}");
    assert_eq!(kv(out, "reset.after_reset_sha256"), want, "{out}");
    assert_eq!(kv(out, "reset.shadow_doorbells"), "true", "{out}");
    assert_eq!(
        kv(out, "reset.shadow_doorbells_after_reset"),
        "true",
        "{out}"
    );
    let [off, on, before, after] = segments(&run().trace);
    // A Doorbell Buffer Config comes before its run creates SQ 1, so it
    // falls in the segment before: the on run's bring-up, the reset run's
    // bring-up, and the one after its reset; none in the last.
    let configs = [off.configs, on.configs, before.configs, after.configs];
    assert_eq!(configs, [1, 1, 1, 0], "{off:?} {on:?} {before:?} {after:?}");
    assert!(before.shadow_sq > 0, "before the reset: {before:?}");
    assert!(after.shadow_sq > 0, "after the reset: {after:?}");
}
