//! The forwarder's loop (`examples::forward`) on the software NVMe
//! controller and e1000 of vfio-models: the frames the NIC model put on
//! the wire, parsed as a receiver would, carry the namespace's bytes
//! exactly, numbered in order, then the end marker; with the cable pulled
//! mid-run (the NIC losing what it sends meanwhile, as QEMU's does), the
//! datagrams that may have been lost are sent again and the stream still
//! arrives whole. Every chunk and NIC buffer is back after.
//! Host speed, no root, no VFIO (the guest suite runs the same loop on
//! QEMU's devices behind the IOMMU).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use examples::dmaf::{self, Endpoints};
use examples::forward::{self, Forwarder, Options, CHUNK};
use nic_driver::e1000::E1000;
use nic_driver::NetDevice;
use nvme_driver::Controller;
use vfio_core::dma::{Buffer, BufferPool};
use vfio_core::vfio::Container;
use vfio_models::e1000::{E1000Config, E1000Model};
use vfio_models::nvme::{Namespace, NvmeConfig, NvmeModel};

const NSID: u32 = 1;
const BLOCK: usize = 512;
const DEPTH: usize = 4;
const PORT: u16 = 9000;

struct Rig {
    f: Forwarder,
    nic: Arc<Mutex<E1000Model>>,
    image: Vec<u8>,
    _nvme: (Controller, Arc<Mutex<NvmeModel>>),
}

/// A forwarder on models: a namespace of `bytes` bytes of a pattern,
/// chunks of 64 KiB (a pool of 4 x DEPTH), MTU 1500; the NIC loses what
/// it sends while its link is down, as QEMU's e1000 does.
fn rig(bytes: usize) -> Rig {
    let container = Container::unbacked();
    let image: Vec<u8> = (0..bytes).map(|i| (i * 131 + i / 4099) as u8).collect();
    let mut ns = Namespace::zeroed(NSID, BLOCK as u32, bytes / BLOCK);
    ns.data.copy_from_slice(&image);
    let config = NvmeConfig {
        namespaces: vec![ns],
        ..NvmeConfig::default()
    };
    let (nvme_model, device) = NvmeModel::new(&container, config);
    let mut nvme = Controller::new(device).expect("NVMe bring-up on the model");
    let qp = nvme
        .create_io_queue_pair::<Buffer>(DEPTH as u16 + 1)
        .unwrap();
    let chunk = CHUNK.min(qp.max_transfer()) / BLOCK * BLOCK;
    let chunks = BufferPool::new(&container, chunk, DEPTH * 4).unwrap();
    let config = E1000Config {
        lose_while_down: true,
        ..E1000Config::default()
    };
    let (nic_model, device) = E1000Model::new(&container, config);
    let nic = E1000::new(device, forward::nic_config(1500)).expect("e1000 bring-up");
    let ends = Endpoints {
        src_mac: nic.mac(),
        dst_mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x57],
        src_ip: [198, 51, 100, 1],
        dst_ip: [192, 0, 2, 1],
        src_port: 4000,
        dst_port: PORT,
    };
    let options = Options {
        queue_depth: DEPTH,
        payload: forward::payload(1500),
        max_bytes_per_second: None,
        copy_payload: false,
        progress: false,
    };
    Rig {
        f: Forwarder::new(qp, Box::new(nic), chunks, ends, NSID, BLOCK as u64, options),
        nic: nic_model,
        image,
        _nvme: (nvme, nvme_model),
    }
}

/// The stream in `frames`, as a receiver reassembles it: data by offset
/// (a datagram sent twice must carry the same bytes), the end marker's
/// offset and number, and how many datagrams were duplicates.
fn reassemble(frames: &[Vec<u8>]) -> (Vec<u8>, Option<(u64, u32)>, usize) {
    let mut by_offset: BTreeMap<u64, (u32, Vec<u8>)> = BTreeMap::new();
    let (mut end, mut duplicates) = (None, 0);
    for f in frames {
        let d = dmaf::parse_frame(f, PORT).expect("every frame a checked DMAF datagram");
        if d.len == 0 {
            end = Some((d.offset, d.seq));
            continue;
        }
        let data = f[d.at..d.at + d.len].to_vec();
        if let Some((seq, old)) = by_offset.insert(d.offset, (d.seq, data.clone())) {
            assert_eq!((seq, old), (d.seq, data), "a datagram sent again differs");
            duplicates += 1;
        }
    }
    let mut stream = Vec::new();
    let mut last_seq = None;
    for (offset, (seq, data)) in by_offset {
        assert_eq!(offset, stream.len() as u64, "a gap or overlap at {offset}");
        assert!(last_seq < Some(seq), "numbers grow with offsets");
        last_seq = Some(seq);
        stream.extend(data);
    }
    (stream, end, duplicates)
}

#[test]
fn the_stream_on_the_wire_is_the_namespace_and_everything_comes_back() {
    // 5 chunks and a piece: more chunks than the pool has, a short last one.
    let bytes = 20 * CHUNK + 7 * BLOCK;
    let mut r = rig(bytes);
    let free = r.f.nic().free_buffers();
    assert!(r.f.forward(0, bytes as u64).unwrap());
    let frames = r.nic.lock().unwrap().transmitted();
    let (stream, end, duplicates) = reassemble(&frames);
    assert!(
        stream == r.image,
        "the bytes on the wire are the namespace's"
    );
    assert_eq!(duplicates, 0, "nothing sent twice with the link up");
    let datagrams = frames.len() as u32 - 1;
    assert_eq!(end, Some((bytes as u64, datagrams)), "the end marker last");
    let s = r.f.summary();
    assert_eq!(
        (s.bytes, s.datagrams, s.resent),
        (bytes as u64, datagrams as u64 + 1, 0)
    );
    assert_eq!(s.frames_sent, s.datagrams);
    let pool = r.f.chunks();
    assert_eq!(pool.free_count(), pool.capacity(), "every chunk back");
    assert_eq!(r.f.nic().free_buffers(), free, "every header buffer back");
}

#[test]
fn with_the_cable_pulled_mid_run_what_may_be_lost_is_sent_again() {
    // The cable is put back 20 ms after the forwarder has read the link
    // down.
    cable_pulled_mid_run(true);
}

#[test]
fn a_link_that_went_down_and_came_back_between_two_reports_is_seen() {
    // The cable is put back at once, before the forwarder reads anything:
    // STATUS shows the link up again, and only the change the NIC latched
    // (ICR.LSC, which raised the link interrupt) tells what happened.
    cable_pulled_mid_run(false);
}

/// Forwards 40 chunks with the cable pulled at the 300th frame, in the
/// middle of a batch, and put back `after_a_read` (20 ms after the
/// forwarder's first STATUS read that found it down) or at once; the
/// stream must arrive whole.
fn cable_pulled_mid_run(after_a_read: bool) {
    let bytes = 40 * CHUNK;
    let mut r = rig(bytes);
    r.nic.lock().unwrap().pull_cable_at = Some(300);
    let model = Arc::clone(&r.nic);
    // No deadline here: the run is longer than 300 frames, so the cable
    // is pulled (and read), and a plugger that gave up would leave the
    // forwarder waiting for the link for good.
    let plugger = thread::spawn(move || {
        let pulled_at = loop {
            let m = model.lock().unwrap();
            // The cable itself (the model's STATUS is computed on a read,
            // not kept in its register file).
            if !m.config.link_up {
                break m.link_reads;
            }
            drop(m);
            thread::yield_now();
        };
        if after_a_read {
            while model.lock().unwrap().link_reads == pulled_at {
                thread::yield_now();
            }
            thread::sleep(Duration::from_millis(20));
        }
        model.lock().unwrap().set_link(true);
    });
    assert!(r.f.forward(0, bytes as u64).unwrap());
    plugger.join().unwrap();
    let frames = r.nic.lock().unwrap().transmitted();
    let (stream, end, duplicates) = reassemble(&frames);
    assert!(
        stream == r.image,
        "the bytes on the wire are the namespace's"
    );
    assert!(end.is_some_and(|(offset, _)| offset == bytes as u64));
    let s = r.f.summary();
    assert!(
        s.link_down_events >= 1,
        "the forwarder saw the link go down"
    );
    assert!(s.resent > 0, "and sent again what was in flight");
    assert_eq!(s.bytes, bytes as u64, "bytes count each datagram once");
    // The NIC lost what it sent while the link was down; of the datagrams
    // sent again, those it had sent before the cable was pulled arrived
    // twice.
    assert!((duplicates as u64) < s.resent, "{duplicates} duplicates");
    let pool = r.f.chunks();
    assert_eq!(pool.free_count(), pool.capacity(), "every chunk back");
}
