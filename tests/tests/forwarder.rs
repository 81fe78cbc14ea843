//! The forwarder in the QEMU machine: NVMe reads land in pool buffers the
//! e1000 transmits from. The host reassembles the datagrams from the NIC's
//! wire by offset and checks the hash against the image it wrote, every IPv4
//! and UDP checksum (etherparse), and every sequence number.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use etherparse::{Ipv4HeaderSlice, SlicedPacket, TransportSlice};
use sha2::{Digest, Sha256};
use vfio_tests::check::{ipv4_checksum_ok, random_bytes, udp_checksum_ok, HOST_MAC};
use vfio_tests::machine::{mac_string, Machine, Outcome};
use vfio_tests::wire::Capture;

const NVME: &str = "0000:00:03.0";
const NIC: &str = "0000:00:04.0";
const IMAGE_BYTES: usize = 64 << 20;
const BLOCKS: u64 = (IMAGE_BYTES / 512) as u64;
const TAIL_BLOCKS: u64 = 1000;

struct Run {
    outcome: Outcome,
    frames: Vec<Vec<u8>>,
}

fn run() -> &'static Run {
    static RUN: OnceLock<Result<Run, String>> = OnceLock::new();
    RUN.get_or_init(|| boot().map_err(|e| e.to_string()))
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| random_bytes(IMAGE_BYTES, 0x64))
}

fn boot() -> vfio_tests::Result<Run> {
    let mut m = Machine::new("forwarder");
    let disk = m.dir().join("disk.img");
    std::fs::write(&disk, image()).expect("write the disk image");
    assert_eq!(m.nvme(&disk, ""), NVME);
    let nic = m.e1000("e1000");
    assert_eq!(m.nics_addr(nic), NIC);
    let fwd = |port: u16, extra: &str| {
        format!("forwarder --nvme {NVME} --nic {NIC} --dst-mac {} --dst-ip 192.0.2.1 --dst-port {port} --json {extra}", mac_string(&HOST_MAC))
    };
    m.step("bind", &format!("devbind bind {NVME} {NIC}"));
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
    let running = m.start()?;
    let capture = Capture::start(&running.nics[nic].socket);
    let outcome = running.wait();
    let frames = capture.stop();
    Ok(Run {
        outcome: outcome?,
        frames,
    })
}

/// The stream to `port`: data reassembled by offset, the end marker's offset,
/// and how many datagrams each sequence number had. Checks every checksum.
fn stream(port: u16) -> (Vec<u8>, Option<u64>, BTreeMap<u32, u32>) {
    let mut data = Vec::new();
    let (mut end, mut seqs) = (None, BTreeMap::new());
    for f in &run().frames {
        let Ok(p) = SlicedPacket::from_ethernet(f) else {
            continue;
        };
        let Some(TransportSlice::Udp(u)) = p.transport else {
            continue;
        };
        if u.destination_port() != port {
            continue;
        }
        let ip = Ipv4HeaderSlice::from_slice(&f[14..]).expect("an IPv4 header");
        // Checked by summing: 0x0000 and 0xFFFF are both one's-complement zero.
        let ip_len = ip.slice().len();
        assert!(ipv4_checksum_ok(&f[14..14 + ip_len]), "IPv4 checksum");
        let udp = &f[14 + ip_len..14 + ip.total_len() as usize];
        assert!(
            udp_checksum_ok(ip.source(), ip.destination(), udp),
            "UDP checksum"
        );
        let payload = u.payload();
        assert_eq!(&payload[..4], b"DMAF", "magic");
        let seq = u32::from_be_bytes(payload[4..8].try_into().unwrap());
        let offset = u64::from_be_bytes(payload[8..16].try_into().unwrap()) as usize;
        *seqs.entry(seq).or_insert(0) += 1;
        let body = &payload[16..];
        if body.is_empty() {
            end = Some(offset as u64);
            continue;
        }
        if data.len() < offset + body.len() {
            data.resize(offset + body.len(), 0);
        }
        data[offset..offset + body.len()].copy_from_slice(body);
    }
    (data, end, seqs)
}

fn check_stream(port: u16, want: &[u8]) {
    let (data, end, seqs) = stream(port);
    assert_eq!(
        end,
        Some(want.len() as u64),
        "the end marker carries the total length"
    );
    let n = seqs.len() as u32;
    assert!(
        seqs.keys().copied().eq(0..n),
        "sequence numbers run from 0 with none missing"
    );
    assert!(seqs.values().all(|&c| c == 1), "no sequence number twice");
    assert_eq!(data.len(), want.len());
    assert_eq!(
        format!("{:x}", Sha256::digest(&data)),
        format!("{:x}", Sha256::digest(want)),
        "the reassembled bytes are the image's"
    );
}

fn summary(step: &str) -> serde_json::Value {
    let out = &run().outcome.ok(step).output;
    let line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON summary:\n{out}"));
    serde_json::from_str(line).expect("the forwarder's --json summary")
}

#[test]
fn a_64_mib_image_arrives_whole_with_correct_checksums_and_no_cpu_copy() {
    check_stream(9000, image());
    let s = summary("full");
    assert_eq!(s["bytes"].as_u64(), Some(IMAGE_BYTES as u64));
    assert_eq!(s["payload_bytes_copied_by_cpu"].as_u64(), Some(0));
    let (_, _, seqs) = stream(9000);
    assert_eq!(
        s["datagrams"].as_u64(),
        Some(seqs.len() as u64),
        "the host received every datagram the forwarder sent"
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
    let (_, end, seqs) = stream(9002);
    assert!(
        seqs.is_empty() && end.is_none(),
        "no datagram went to the refused run's port"
    );
}
