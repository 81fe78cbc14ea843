//! copy-bench in the QEMU machine: every route (the kernel's four copy paths
//! and the forwarder) delivers the same bytes to the host, and the program's
//! report has a row for each. Speed is the benchmark's business (`cargo xtask
//! bench`), not this test's.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use vfio_tests::check::random_bytes;
use vfio_tests::copy_bench::{self, PORT, ROUTES};
use vfio_tests::dmaf;
use vfio_tests::machine::Outcome;
use vfio_tests::wire::Capture;

const BYTES: usize = (8 << 20) + 3 * 512;

struct Run {
    outcome: Outcome,
    /// Frames from the forwarder's NIC, then from the kernel's.
    vfio: Vec<Vec<u8>>,
    kernel: Vec<Vec<u8>>,
}

fn image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| random_bytes(BYTES + (1 << 20), 0x70))
}

fn run() -> &'static Run {
    static RUN: OnceLock<Result<Run, String>> = OnceLock::new();
    vfio_tests::once(&RUN, boot)
}

fn boot() -> vfio_tests::Result<Run> {
    let b = copy_bench::machine("copy-bench", image(), BYTES as u64);
    let running = b.machine.start()?;
    let vfio = Capture::start(&running.nics[b.nic_vfio].socket);
    let kernel = Capture::start(&running.nics[b.nic_kernel].socket);
    let outcome = running.wait();
    Ok(Run {
        vfio: vfio.stop(),
        kernel: kernel.stop(),
        outcome: outcome?,
    })
}

#[test]
fn every_route_delivers_the_same_bytes_and_is_reported() {
    let r = run();
    let out = &r.outcome.ok("copy-bench").output;
    let line = out
        .lines()
        .find(|l| l.starts_with('['))
        .unwrap_or_else(|| panic!("no JSON report:\n{out}"));
    let rows: Vec<serde_json::Value> = serde_json::from_str(line).expect("copy-bench --json");
    assert_eq!(rows.len(), ROUTES.len(), "{line}");
    let want = format!("{:x}", Sha256::digest(&image()[..BYTES]));
    for (k, (name, row)) in ROUTES.iter().zip(&rows).enumerate() {
        assert!(
            row["route"].as_str().is_some_and(|r| r.starts_with(name)),
            "{row}"
        );
        assert_eq!(row["bytes"].as_u64(), Some(BYTES as u64), "{row}");
        assert!(row["mb_per_s"].as_f64() > Some(0.0), "{row}");
        assert!(row["forwarder_speedup"].as_f64() > Some(0.0), "{row}");
        let frames = if *name == "forwarder" {
            &r.vfio
        } else {
            &r.kernel
        };
        let s = dmaf::reassemble(frames, PORT + k as u16);
        assert_eq!(s.bad, 0, "{name}: frames with bad checksums");
        assert_eq!(s.end, Some(BYTES as u64), "{name}: the end marker");
        assert!(s.missing().is_empty(), "{name}: missing {:?}", s.missing());
        assert_eq!(
            format!("{:x}", Sha256::digest(&s.data)),
            want,
            "{name}: the bytes that arrived are the image's"
        );
        assert_eq!(
            row["datagrams"].as_u64(),
            Some(s.seqs.len() as u64),
            "{name}: every datagram the route counted arrived once"
        );
    }
    // System calls, measured (copy-bench and the forwarder run as root): the
    // kernel routes make at least one per datagram (sendfile two: the header
    // with MSG_MORE, then the data) plus one read per 64 KiB chunk for
    // read+send and O_DIRECT; the forwarder's loop none per datagram (a
    // handful in all: the guest's TSC clock is read through the vDSO).
    let syscalls = |row: &serde_json::Value| {
        row["syscalls"]
            .as_u64()
            .unwrap_or_else(|| panic!("system calls not measured as root: {row}"))
    };
    let chunks = (BYTES as u64).div_ceil(64 << 10);
    for (name, row) in ROUTES.iter().zip(&rows) {
        let (n, datagrams) = (syscalls(row), row["datagrams"].as_u64().unwrap_or(0));
        let least = match *name {
            "read+send" | "O_DIRECT read+send" => datagrams + chunks,
            "mmap+send" => datagrams,
            "sendfile" => 2 * datagrams - 1,
            _ => 0,
        };
        assert!(n >= least, "{n} system calls, at least {least}: {row}");
        if *name == "forwarder" {
            assert!(n < 32, "the forwarder: a handful, none per datagram: {row}");
        }
    }
    // Copies: measured for the forwarder (0: it sent every payload byte
    // from memory the NVMe controller wrote), stated as design for the
    // kernel's routes, never mixed.
    assert_eq!(rows[4]["payload_bytes_copied_by_cpu"].as_u64(), Some(0));
    assert!(rows[4]["cpu_copies_by_design"].is_null(), "{}", rows[4]);
    for row in &rows[..4] {
        assert!(row["payload_bytes_copied_by_cpu"].is_null(), "{row}");
        assert!(
            row["cpu_copies_by_design"]
                .as_str()
                .is_some_and(|d| d.contains("by construction")),
            "{row}"
        );
    }
}
