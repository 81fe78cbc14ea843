//! The e1000 and virtio-net drivers, unchanged, on the software NICs of
//! vfio-models: frames sent come out of the device byte-exact (segments
//! joined, checksums inserted as the hardware does), frames delivered come
//! out of `rx_batch` byte-exact, counters, link state, and what only a
//! model can arrange: hostile write-backs and used entries, a transmitter
//! that hangs, a device on its own thread. Runs on the host in
//! milliseconds, no root, no VFIO.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};
use nic_driver::e1000::E1000;
use nic_driver::virtio::VirtioNet;
use nic_driver::{ChecksumOffload, Config, Error, NetDevice, Packet, Segment, TxFrame};
use vfio_core::dma::SharedBuffer;
use vfio_core::vfio::Container;
use vfio_models::e1000::{E1000Config, E1000Model, RxFault};
use vfio_models::virtio_net::{feature, status, UsedFault, VirtioNetConfig, VirtioNetModel};
use vfio_models::ModelThread;

/// Frames per test: a few ring's worth, fewer under Miri (which interprets
/// every byte of DMA).
const FRAMES: usize = if cfg!(miri) { 12 } else { 40 };
const RING: usize = 8;

fn lock<T>(m: &Arc<Mutex<T>>) -> MutexGuard<'_, T> {
    m.lock().unwrap()
}

/// Small rings, few spare buffers, polling.
fn small() -> Config {
    Config::default()
        .rx_ring(RING)
        .tx_ring(RING)
        .spare_buffers(16)
}

/// The device side of a test, whichever model it is.
trait Wire {
    fn deliver(&self, frame: Vec<u8>);
    fn transmitted(&self) -> Vec<Vec<u8>>;
    fn set_link(&self, up: bool);
    fn spawn(&self) -> ModelThread;
}

impl Wire for Arc<Mutex<E1000Model>> {
    fn deliver(&self, frame: Vec<u8>) {
        lock(self).deliver(frame)
    }
    fn transmitted(&self) -> Vec<Vec<u8>> {
        lock(self).transmitted()
    }
    fn set_link(&self, up: bool) {
        lock(self).set_link(up)
    }
    fn spawn(&self) -> ModelThread {
        E1000Model::spawn(self)
    }
}

impl Wire for Arc<Mutex<VirtioNetModel>> {
    fn deliver(&self, frame: Vec<u8>) {
        lock(self).deliver(frame)
    }
    fn transmitted(&self) -> Vec<Vec<u8>> {
        lock(self).transmitted()
    }
    fn set_link(&self, up: bool) {
        lock(self).set_link(up)
    }
    fn spawn(&self) -> ModelThread {
        VirtioNetModel::spawn(self)
    }
}

type E1000Rig = (Arc<Mutex<E1000Model>>, E1000);
type VirtioRig = (Arc<Mutex<VirtioNetModel>>, VirtioNet);

fn e1000_with(config: E1000Config) -> E1000Rig {
    let container = Container::unbacked();
    let (model, device) = E1000Model::new(&container, config);
    let nic = E1000::new(device, small()).expect("bring-up on the model");
    (model, nic)
}

fn e1000() -> E1000Rig {
    e1000_with(E1000Config::default())
}

fn virtio_with(config: VirtioNetConfig) -> VirtioRig {
    let container = Container::unbacked();
    let (model, device) = VirtioNetModel::new(&container, config);
    let nic = VirtioNet::new(device, small()).expect("bring-up on the model");
    (model, nic)
}

fn virtio() -> VirtioRig {
    virtio_with(VirtioNetConfig::default())
}

/// A frame of `len` bytes to `dst` whose bytes say which frame it is.
fn frame(dst: [u8; 6], id: usize, len: usize) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend([0x02, 0, 0, 0, 0, id as u8]);
    f.extend(0x88b5u16.to_be_bytes());
    f.extend((14..len).map(|i| (id * 31 + i) as u8));
    f
}

/// Lengths from the shortest to the longest frame, in turn.
fn length(i: usize) -> usize {
    [60, 61, 64, 100, 333, 512, 1000, 1513, 1514][i % 9]
}

fn packet(nic: &mut dyn NetDevice, bytes: &[u8]) -> Packet {
    let mut p = nic.alloc_packet().expect("a free buffer");
    p.buffer_mut()[..bytes.len()].copy_from_slice(bytes);
    p.set_len(bytes.len());
    p
}

/// Sends every frame (as many tx_batch calls as the ring needs) and waits
/// until the device has sent them all; panics after 10 s.
fn send_all(nic: &mut dyn NetDevice, mut frames: VecDeque<TxFrame>) {
    let start = Instant::now();
    while !frames.is_empty() || nic.tx_pending() > 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "frames stuck");
        if !frames.is_empty() {
            nic.tx_batch(&mut frames).unwrap();
        }
        if nic.tx_clean() == 0 {
            std::thread::yield_now();
        }
    }
}

/// Receives `n` frames; panics after 10 s.
fn receive(nic: &mut dyn NetDevice, n: usize) -> Vec<Vec<u8>> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut rx = Vec::with_capacity(RING);
    while got.len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} of {n} frames",
            got.len()
        );
        if nic.rx_batch(&mut rx, RING).unwrap() == 0 {
            std::thread::yield_now();
        }
        got.extend(rx.drain(..).map(|p| p.data().to_vec()));
    }
    got
}

// ---- what both drivers do on both models ----

/// Frames of every length, in batches that wrap the ring several times,
/// come out of the device in order, byte for byte; every buffer returns.
fn sends_byte_exact(nic: &mut dyn NetDevice, wire: &dyn Wire) {
    let free = nic.free_buffers();
    let expected: Vec<Vec<u8>> = (0..FRAMES)
        .map(|i| frame([0xff; 6], i, length(i)))
        .collect();
    for batch in expected.chunks(5) {
        let frames = batch
            .iter()
            .map(|f| TxFrame::packet(packet(nic, f)))
            .collect();
        send_all(nic, frames);
    }
    assert_eq!(wire.transmitted(), expected);
    assert_eq!(nic.free_buffers(), free);
}

/// A frame of a header packet, a slice of another buffer and slices of a
/// buffer two frames share goes out as their bytes joined.
fn sends_segments_joined(nic: &mut dyn NetDevice, wire: &dyn Wire) {
    let free = nic.free_buffers();
    let whole = frame([0xff; 6], 7, 1200);
    let mut shared = nic.pool().alloc().unwrap();
    shared.as_mut_slice()[..758].copy_from_slice(&whole[442..]);
    let shared = shared.into_shared();
    let mut frames = VecDeque::new();
    for _ in 0..2 {
        let mut f = TxFrame::packet(packet(nic, &whole[..42]));
        let mut slice = nic.pool().alloc().unwrap();
        slice.as_mut_slice()[100..500].copy_from_slice(&whole[42..442]);
        f.push(Segment::Slice {
            buf: slice,
            offset: 100,
            len: 400,
        })
        .unwrap();
        f.push(Segment::Shared {
            buf: shared.clone(),
            offset: 0,
            len: 300,
        })
        .unwrap();
        f.push(Segment::Shared {
            buf: shared.clone(),
            offset: 300,
            len: 458,
        })
        .unwrap();
        assert_eq!(f.segment_count(), 4);
        frames.push_back(f);
    }
    drop(shared);
    send_all(nic, frames);
    assert_eq!(wire.transmitted(), [whole.clone(), whole]);
    assert_eq!(nic.free_buffers(), free);
}

/// An Ethernet/IPv4/UDP (or TCP) frame with correct checksums, built by
/// etherparse.
fn l4_frame(tcp: bool, payload_len: usize, seed: u8) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [0xff; 6]).ipv4(
        [10, 0, 0, 1],
        [10, 0, 0, seed],
        64,
    );
    let payload: Vec<u8> = (0..payload_len)
        .map(|i| (i as u8).wrapping_mul(seed))
        .collect();
    let mut out = Vec::new();
    if tcp {
        let b = b.tcp(1000, 2000 + seed as u16, 7, 512);
        b.write(&mut out, &payload).unwrap();
    } else {
        let b = b.udp(1000, 2000 + seed as u16);
        b.write(&mut out, &payload).unwrap();
    }
    out
}

/// True when the frame's IPv4 header and UDP/TCP checksums are right.
fn checksums_right(frame: &[u8]) -> bool {
    let p = PacketHeaders::from_ethernet_slice(frame).unwrap();
    let Some(NetHeaders::Ipv4(ip, _)) = &p.net else {
        return false;
    };
    let payload = p.payload.slice();
    let l4 = match &p.transport {
        Some(TransportHeader::Udp(u)) => u.checksum == u.calc_checksum_ipv4(ip, payload).unwrap(),
        Some(TransportHeader::Tcp(t)) => t.checksum == t.calc_checksum_ipv4(ip, payload).unwrap(),
        _ => false,
    };
    ip.header_checksum == ip.calc_header_checksum() && l4
}

/// What software hands a NIC for checksum offload: the IPv4 checksum field
/// 0, the UDP/TCP checksum field the pseudo-header sum (folded, not
/// complemented).
fn offload_input(frame: &[u8], tcp: bool) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[24..26].copy_from_slice(&[0, 0]);
    let mut sum = 0u32;
    for w in f[26..34].chunks(2) {
        sum += u16::from_be_bytes([w[0], w[1]]) as u32;
    }
    sum += if tcp { 6 } else { 17 } + (f.len() - 34) as u32;
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let at = 34 + if tcp { 16 } else { 6 };
    f[at..at + 2].copy_from_slice(&(sum as u16).to_be_bytes());
    f
}

/// UDP and TCP frames sent with checksum offload, their headers in one
/// segment and the payload in another, come out with the checksums a
/// correct stack would have computed (checked by etherparse).
fn sends_with_checksum_offload(nic: &mut dyn NetDevice, wire: &dyn Wire) {
    let kinds = [false, true, true, false, false];
    let expected: Vec<Vec<u8>> = kinds
        .iter()
        .enumerate()
        .map(|(i, &tcp)| l4_frame(tcp, 100 + 200 * i, 3 + i as u8))
        .collect();
    let mut frames = VecDeque::new();
    for (f, &tcp) in expected.iter().zip(&kinds) {
        assert!(checksums_right(f));
        let input = offload_input(f, tcp);
        assert!(!checksums_right(&input));
        let headers = if tcp { 54 } else { 42 };
        let mut tx = TxFrame::packet(packet(nic, &input[..headers]));
        let mut payload = nic.pool().alloc().unwrap();
        payload.as_mut_slice()[..input.len() - headers].copy_from_slice(&input[headers..]);
        tx.push(Segment::Slice {
            buf: payload,
            offset: 0,
            len: input.len() - headers,
        })
        .unwrap();
        tx.offload = Some(ChecksumOffload {
            ip_start: 14,
            l4_start: 34,
            tcp,
        });
        frames.push_back(tx);
    }
    send_all(nic, frames);
    let sent = wire.transmitted();
    assert!(sent.iter().all(|f| checksums_right(f)));
    assert_eq!(sent, expected);
}

/// Frames of every length, more than the ring holds at once, come out of
/// rx_batch in order, byte for byte.
fn receives_byte_exact(nic: &mut dyn NetDevice, wire: &dyn Wire) {
    let free = nic.free_buffers();
    let mac = nic.mac();
    let frames: Vec<Vec<u8>> = (0..FRAMES).map(|i| frame(mac, i, length(i))).collect();
    let mut got = Vec::new();
    for batch in frames.chunks(2 * RING) {
        for f in batch {
            wire.deliver(f.clone());
        }
        got.extend(receive(nic, batch.len()));
    }
    assert_eq!(got, frames);
    assert_eq!(nic.free_buffers(), free);
}

/// Sends every packet with `tx_packets` (as many calls as the ring needs)
/// and waits until the device has sent them all; panics after 10 s.
fn send_all_packets(nic: &mut dyn NetDevice, packets: &mut Vec<Packet>) {
    let start = Instant::now();
    while !packets.is_empty() || nic.tx_pending() > 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "packets stuck");
        if !packets.is_empty() {
            nic.tx_packets(packets).unwrap();
        }
        if nic.tx_clean() == 0 {
            std::thread::yield_now();
        }
    }
}

/// Issue 30: packets of every length, allocated in batches and sent with
/// `tx_packets` in batches larger than the ring, come out in order, byte
/// for byte; every buffer returns.
fn sends_packets_byte_exact(nic: &mut dyn NetDevice, wire: &dyn Wire) {
    let free = nic.free_buffers();
    let expected: Vec<Vec<u8>> = (0..FRAMES)
        .map(|i| frame([0xff; 6], i, length(i)))
        .collect();
    let mut packets = Vec::new();
    for batch in expected.chunks(3 * RING) {
        assert_eq!(nic.alloc_packets(batch.len(), &mut packets), batch.len());
        for (p, f) in packets.iter_mut().zip(batch) {
            p.buffer_mut()[..f.len()].copy_from_slice(f);
            p.set_len(f.len());
        }
        send_all_packets(nic, &mut packets);
    }
    assert_eq!(wire.transmitted(), expected);
    assert_eq!(nic.free_buffers(), free);
}

/// Issue 30: an empty or too long packet is refused after the packets
/// before it were sent, taken off and its buffer returned; the packets
/// after it stay with the caller.
fn refuses_bad_packets_after_the_good_ones(nic: &mut dyn NetDevice, wire: &dyn Wire) {
    let free = nic.free_buffers();
    let (a, b) = (frame([0xff; 6], 1, 60), frame([0xff; 6], 2, 60));
    let mut empty = packet(nic, &[]);
    empty.set_len(0);
    let mut long = packet(nic, &frame([0xff; 6], 3, 1514));
    long.set_len(1515);
    for (bad, what) in [(empty, "an empty frame"), (long, "1515 bytes")] {
        let mut q = vec![packet(nic, &a), bad, packet(nic, &b)];
        match nic.tx_packets(&mut q) {
            Err(Error::InvalidFrame(m)) => assert!(m.contains(what), "{m}"),
            other => panic!("expected InvalidFrame, got {other:?}"),
        }
        assert_eq!(q.len(), 1, "the bad one taken off, the next kept");
        send_all_packets(nic, &mut q);
    }
    assert_eq!(wire.transmitted(), [a.clone(), b.clone(), a, b]);
    assert_eq!(nic.free_buffers(), free);
}

/// Issue 30: frames built in place with `tx_fill` (in batches larger than
/// the ring: each call sends what fits) come out in order, byte for byte;
/// every buffer returns.
fn fills_in_place_byte_exact(nic: &mut dyn NetDevice, wire: &dyn Wire) {
    let free = nic.free_buffers();
    let expected: Vec<Vec<u8>> = (0..FRAMES)
        .map(|i| frame([0xff; 6], i, length(i)))
        .collect();
    let mut next = 0;
    let start = Instant::now();
    while next < expected.len() || nic.tx_pending() > 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "frames stuck");
        let want = (expected.len() - next).min(3 * RING);
        let mut filled = next;
        let sent = nic
            .tx_fill(want, &mut |room| {
                let f = &expected[filled];
                room[..f.len()].copy_from_slice(f);
                filled += 1;
                f.len()
            })
            .unwrap();
        assert_eq!(filled - next, sent, "one fill per frame sent");
        assert!(sent <= RING, "no more than the ring holds");
        next += sent;
        if nic.tx_clean() == 0 {
            std::thread::yield_now();
        }
    }
    assert_eq!(wire.transmitted(), expected);
    assert_eq!(nic.free_buffers(), free);
}

/// Issue 30: `fill` returning 0 ends a `tx_fill` batch, and a length past
/// the room it was given is refused after the frames before it went out;
/// neither buffer is sent or lost.
fn fill_ends_on_zero_and_refuses_too_long(nic: &mut dyn NetDevice, wire: &dyn Wire) {
    let free = nic.free_buffers();
    let a = frame([0xff; 6], 1, 60);
    let mut calls = 0;
    let sent = nic
        .tx_fill(4, &mut |room| {
            calls += 1;
            if calls > 2 {
                return 0;
            }
            room[..a.len()].copy_from_slice(&a);
            a.len()
        })
        .unwrap();
    assert_eq!((sent, calls), (2, 3));
    let mut rooms = Vec::new();
    match nic.tx_fill(4, &mut |room| {
        rooms.push(room.len());
        if rooms.len() == 1 {
            room[..a.len()].copy_from_slice(&a);
            return a.len();
        }
        room.len() + 1
    }) {
        Err(Error::InvalidFrame(m)) => assert!(m.contains("1515 bytes"), "{m}"),
        other => panic!("expected InvalidFrame, got {other:?}"),
    }
    assert_eq!(rooms, [1514, 1514], "the room is the largest frame");
    let start = Instant::now();
    while nic.tx_pending() > 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "frames stuck");
        nic.tx_clean();
    }
    assert_eq!(wire.transmitted(), [a.clone(), a.clone(), a]);
    assert_eq!(nic.free_buffers(), free);
}

/// A UDP frame with correct checksums carrying `payload`, built by
/// etherparse.
fn udp_frame(payload: &[u8], seed: u8) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [0xff; 6])
        .ipv4([10, 0, 0, 1], [10, 0, 0, seed], 64)
        .udp(1000, 2000 + seed as u16);
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

const UDP_OFFLOAD: ChecksumOffload = ChecksumOffload {
    ip_start: 14,
    l4_start: 34,
    tcp: false,
};

/// A shared buffer of `nic`'s pool holding a byte pattern, and its bytes.
fn shared_payload(nic: &mut dyn NetDevice) -> (SharedBuffer, Vec<u8>) {
    let mut buf = nic.pool().alloc().unwrap();
    for (i, b) in buf.as_mut_slice().iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    let bytes = buf.as_slice().to_vec();
    (buf.into_shared(), bytes)
}

/// Issue 30: frames of a header built in place and a slice of a shared
/// buffer (`tx_fill_payload`, the forwarder's path), UDP checksums
/// offloaded, in calls larger than the ring: each comes out as its header
/// and its slice joined, in order, checksums right; a header alone goes
/// out alone; every buffer returns.
fn fills_headers_before_a_shared_payload(nic: &mut dyn NetDevice, wire: &dyn Wire) {
    let free = nic.free_buffers();
    let (payload, bytes) = shared_payload(nic);
    let ranges: Vec<Range<usize>> = (0..FRAMES)
        .map(|k| {
            let len = [18, 1, 100, 0, 1472, 700][k % 6];
            let start = (k * 37) % (bytes.len() - len + 1);
            start..start + len
        })
        .collect();
    let expected: Vec<Vec<u8>> = ranges
        .iter()
        .enumerate()
        .map(|(k, r)| udp_frame(&bytes[r.clone()], k as u8 + 1))
        .collect();
    let headers: Vec<Vec<u8>> = expected
        .iter()
        .map(|f| offload_input(f, false)[..42].to_vec())
        .collect();
    let (mut next, start) = (0, Instant::now());
    while next < FRAMES || nic.tx_pending() > 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "frames stuck");
        let want = (FRAMES - next).min(3 * RING);
        let mut k = next;
        let sent = nic
            .tx_fill_payload(&payload, Some(UDP_OFFLOAD), want, &mut |room| {
                room[..42].copy_from_slice(&headers[k]);
                k += 1;
                (42, ranges[k - 1].clone())
            })
            .unwrap();
        assert_eq!(k - next, sent, "one fill per frame sent");
        assert!(sent <= RING, "no more than the ring holds");
        next += sent;
        if nic.tx_clean() == 0 {
            std::thread::yield_now();
        }
    }
    let sent = wire.transmitted();
    assert!(sent.iter().all(|f| checksums_right(f)));
    assert_eq!(sent, expected);
    drop(payload);
    assert_eq!(nic.free_buffers(), free);
}

/// Issue 30: the ring holds the payload buffer of `tx_fill_payload` until
/// the NIC is done with the frames: the caller's share dropped at once,
/// the buffer is not back in the pool (where it could be handed out and
/// written) before `tx_clean` has seen them sent.
fn fill_payload_holds_the_payload_until_sent(nic: &mut dyn NetDevice, wire: &dyn Wire) {
    let (payload, bytes) = shared_payload(nic);
    let header = offload_input(&udp_frame(&bytes[..100], 9), false)[..42].to_vec();
    let iova = payload.iova();
    // Whether the payload buffer is on the pool's free list now.
    let in_pool = |nic: &mut dyn NetDevice| {
        let free: Vec<_> = std::iter::from_fn(|| nic.pool().alloc()).collect();
        free.iter().any(|b| b.iova() == iova)
    };
    let sent = nic
        .tx_fill_payload(&payload, Some(UDP_OFFLOAD), 2, &mut |room| {
            room[..42].copy_from_slice(&header);
            (42, 0..100)
        })
        .unwrap();
    assert_eq!(sent, 2);
    drop(payload);
    assert!(
        !in_pool(nic),
        "the payload buffer went back while the NIC held it"
    );
    let start = Instant::now();
    while nic.tx_pending() > 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "frames stuck");
        nic.tx_clean();
    }
    assert!(in_pool(nic), "back once sent");
    assert_eq!(wire.transmitted().len(), 2);
}

/// Issue 30: `tx_fill_payload` ends a batch on a header of 0, and refuses
/// (after the frames before it went out) a header longer than its room or
/// too short for the offload, a slice outside the payload buffer and a
/// frame longer than the NIC sends; no buffer is lost.
fn fill_payload_refuses_bad_frames(nic: &mut dyn NetDevice, wire: &dyn Wire) {
    let free = nic.free_buffers();
    let (payload, bytes) = shared_payload(nic);
    let good = udp_frame(&bytes[..60], 5);
    let header = offload_input(&good, false)[..42].to_vec();
    let cap = bytes.len();
    #[allow(clippy::reversed_empty_ranges)]
    let bad: [(usize, Range<usize>, &str); 11] = [
        (0, 0..0, ""),
        (1600, 0..10, "header written into"),
        (20, 0..10, "IP and L4 headers"),
        (20, 5..5, "IP and L4 headers"),
        // One byte short of the UDP header the offload names.
        (41, 0..10, "IP and L4 headers"),
        (42, cap - 10..cap + 1, "not inside"),
        (42, 10..5, "not inside"),
        (42, 0..1473, "1515 bytes"),
        // Each at its limit (the whole room, the buffer's last byte, the
        // largest frame), refused for the next reason.
        (1514, 0..10, "1524 bytes"),
        (42, cap - 1473..cap, "1515 bytes"),
        (20, 0..1494, "IP and L4 headers"),
    ];
    for (len, range, words) in bad {
        let mut calls = 0;
        let result = nic.tx_fill_payload(&payload, Some(UDP_OFFLOAD), 4, &mut |room| {
            calls += 1;
            if calls == 1 {
                room[..42].copy_from_slice(&header);
                return (42, 0..60);
            }
            (len, range.clone())
        });
        match (words, result) {
            ("", Ok(sent)) => assert_eq!((sent, calls), (1, 2)),
            (words, Err(Error::InvalidFrame(m))) => assert!(m.contains(words), "{m}"),
            (_, other) => panic!("expected InvalidFrame ({words}), got {other:?}"),
        }
        assert_eq!(calls, 2, "no call after the end or the refusal");
    }
    let start = Instant::now();
    while nic.tx_pending() > 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "frames stuck");
        nic.tx_clean();
    }
    assert_eq!(wire.transmitted(), vec![good; 11]);
    drop(payload);
    assert_eq!(nic.free_buffers(), free);
}

/// Issue 30: what `rx_batch` received goes back out with `tx_packets` from
/// the same buffers (an echo), byte for byte.
fn echoes_received_packets(nic: &mut dyn NetDevice, wire: &dyn Wire) {
    let free = nic.free_buffers();
    let mac = nic.mac();
    let frames: Vec<Vec<u8>> = (0..RING).map(|i| frame(mac, i, length(i))).collect();
    for f in &frames {
        wire.deliver(f.clone());
    }
    let mut rx = Vec::with_capacity(RING);
    let start = Instant::now();
    while rx.len() < frames.len() {
        assert!(start.elapsed() < Duration::from_secs(10), "frames stuck");
        nic.rx_batch(&mut rx, RING).unwrap();
    }
    send_all_packets(nic, &mut rx);
    assert_eq!(wire.transmitted(), frames);
    assert_eq!(nic.free_buffers(), free);
}

/// With the link down the driver sends nothing (and keeps the frame) and
/// nothing arrives; once it is up again both work.
fn link_down_and_up(nic: &mut dyn NetDevice, wire: &dyn Wire) {
    assert!(nic.link().up);
    wire.set_link(false);
    assert!(!nic.link().up);
    let f = frame([0xff; 6], 1, 100);
    let mut q = VecDeque::from([TxFrame::packet(packet(nic, &f))]);
    assert!(matches!(nic.tx_batch(&mut q), Err(Error::LinkDown { .. })));
    assert_eq!(q.len(), 1, "the frame stays queued");
    wire.deliver(frame(nic.mac(), 2, 100));
    let mut rx = Vec::new();
    assert_eq!(nic.rx_batch(&mut rx, 8).unwrap(), 0);
    wire.set_link(true);
    assert!(nic.link().up);
    send_all(nic, q);
    assert_eq!(wire.transmitted(), [f]);
    let g = frame(nic.mac(), 3, 100);
    wire.deliver(g.clone());
    assert_eq!(receive(nic, 1), [g]);
}

/// `link_news`: quiet while the link stays up; a link that is down is
/// reported down (and as gone down) at every call until it is back.
fn link_news_reports_a_link_down(nic: &mut dyn NetDevice, wire: &dyn Wire) {
    let news = nic.link_news().unwrap();
    assert!(
        news.link.up && !news.went_down,
        "bring-up is no news: {news:?}"
    );
    assert!(!nic.link_news().unwrap().went_down);
    wire.set_link(false);
    for _ in 0..2 {
        let news = nic.link_news().unwrap();
        assert!(!news.link.up && news.went_down, "{news:?}");
    }
    wire.set_link(true);
    assert!(nic.link_news().unwrap().link.up);
    assert!(!nic.link_news().unwrap().went_down, "reported once");
}

/// The device on its own thread: the driver polls until descriptors come
/// back, and frames delivered arrive some time later.
fn round_trip_on_a_thread(nic: &mut dyn NetDevice, wire: &dyn Wire) {
    let thread = wire.spawn();
    let n = FRAMES / 2;
    let out: Vec<Vec<u8>> = (0..n).map(|i| frame([0xff; 6], i, length(i))).collect();
    let frames = out
        .iter()
        .map(|f| TxFrame::packet(packet(nic, f)))
        .collect();
    send_all(nic, frames);
    let mac = nic.mac();
    let inbound: Vec<Vec<u8>> = (0..n).map(|i| frame(mac, i, length(i + 3))).collect();
    let mut got = Vec::new();
    for batch in inbound.chunks(RING / 2) {
        for f in batch {
            wire.deliver(f.clone());
        }
        got.extend(receive(nic, batch.len()));
    }
    drop(thread);
    assert_eq!(wire.transmitted(), out);
    assert_eq!(got, inbound);
}

/// Issue 29: `other` is a NIC of the same kind in another container, whose
/// pool (allocated in the same order) has buffers at the IOVAs of `nic`'s.
/// A frame holding a buffer of `other`'s container is refused with
/// [`Error::ForeignMemory`] before any descriptor points at it: nothing goes
/// on the wire, neither its bytes nor the never-sent private frame `nic`'s
/// container holds at the same IOVA. The refused frame is taken off the
/// queue and dropped, its buffers back to their pool; the frames before it
/// go out and the one after it waits, as for any refused frame.
fn refuses_memory_of_another_container(
    nic: &mut dyn NetDevice,
    wire: &dyn Wire,
    other: &mut dyn NetDevice,
) {
    assert!(!Arc::ptr_eq(
        nic.pool().container(),
        other.pool().container()
    ));
    let free = nic.free_buffers();
    let secret = frame([0xff; 6], 0x5e, 200);
    let private = packet(nic, &secret);
    let foreign = packet(other, &frame([0xff; 6], 0xf0, 200));
    assert_eq!(foreign.iova(), private.iova(), "the IOVAs collide");
    let other_free = other.pool().free_count();

    // A lone frame of the other container's buffer.
    let mut q = VecDeque::from([TxFrame::packet(foreign)]);
    let result = nic.tx_batch(&mut q);
    let start = Instant::now();
    while nic.tx_pending() > 0 && start.elapsed() < Duration::from_secs(1) {
        nic.tx_clean();
    }
    let sent = wire.transmitted();
    assert!(
        !sent.contains(&secret),
        "the private frame at the colliding IOVA went out"
    );
    assert!(
        sent.is_empty(),
        "nothing on the wire: {} frames",
        sent.len()
    );
    match result {
        Err(Error::ForeignMemory { iova, .. }) => assert_eq!(iova, private.iova()),
        other => panic!("expected Error::ForeignMemory, got {other:?}"),
    }
    assert!(q.is_empty(), "the refused frame was taken off the queue");
    assert_eq!(nic.tx_pending(), 0);
    assert_eq!(
        other.pool().free_count(),
        other_free + 1,
        "its buffer is back"
    );

    // The second segment of a frame between two good ones.
    let (before, after) = (frame([0xff; 6], 1, 100), frame([0xff; 6], 2, 100));
    let mut mixed = TxFrame::packet(packet(nic, &before[..14]));
    let slice = other.pool().alloc().unwrap();
    mixed
        .push(Segment::Slice {
            buf: slice,
            offset: 0,
            len: 86,
        })
        .unwrap();
    let mut q = VecDeque::from([
        TxFrame::packet(packet(nic, &before)),
        mixed,
        TxFrame::packet(packet(nic, &after)),
    ]);
    let e = nic.tx_batch(&mut q).unwrap_err();
    assert!(matches!(e, Error::ForeignMemory { .. }), "{e:?}");
    let message = e.to_string();
    for words in [
        "segment 2 of 2",
        "another VFIO container",
        "not sent",
        "one Container",
    ] {
        assert!(message.contains(words), "{message}");
    }
    assert_eq!(q.len(), 1, "the refused frame was taken off, the next kept");
    send_all(nic, q);
    assert_eq!(wire.transmitted(), [before, after]);
    assert_eq!(other.pool().free_count(), other_free + 1);

    // A packet of the other container's buffer, on the packet path.
    let other_free = other.free_buffers();
    let foreign = packet(other, &frame([0xff; 6], 0xf1, 200));
    let foreign_iova = foreign.iova();
    let mut q = vec![foreign];
    match nic.tx_packets(&mut q) {
        Err(Error::ForeignMemory { iova, .. }) => assert_eq!(iova, foreign_iova),
        other => panic!("expected Error::ForeignMemory, got {other:?}"),
    }
    assert!(q.is_empty(), "the refused packet was taken off");
    assert!(wire.transmitted().is_empty(), "nothing more on the wire");
    assert_eq!(other.free_buffers(), other_free, "its buffer is back");

    // A payload buffer of the other container: refused before any call.
    let foreign = other.pool().alloc().unwrap().into_shared();
    let mut calls = 0;
    match nic.tx_fill_payload(&foreign, None, 4, &mut |_| {
        calls += 1;
        (14, 0..100)
    }) {
        Err(Error::ForeignMemory { iova, .. }) => assert_eq!(iova, foreign.iova()),
        other => panic!("expected Error::ForeignMemory, got {other:?}"),
    }
    assert_eq!(calls, 0, "nothing built");
    assert!(wire.transmitted().is_empty(), "nothing more on the wire");
    drop(foreign);
    drop(private);
    assert_eq!(nic.free_buffers(), free);
}

#[test]
fn e1000_refuses_memory_of_another_container() {
    let (model, mut nic) = e1000();
    let (other_model, mut other) = e1000();
    refuses_memory_of_another_container(&mut nic, &model, &mut other);
    assert!(other_model.transmitted().is_empty());
}

#[test]
fn virtio_refuses_memory_of_another_container() {
    let (model, mut nic) = virtio();
    let (other_model, mut other) = virtio();
    refuses_memory_of_another_container(&mut nic, &model, &mut other);
    assert!(other_model.transmitted().is_empty());
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod e1000_model {
            $(#[test]
            fn $name() {
                let (model, mut nic) = super::e1000();
                super::$name(&mut nic, &model);
            })*
        }
        mod virtio_model {
            $(#[test]
            fn $name() {
                let (model, mut nic) = super::virtio();
                super::$name(&mut nic, &model);
            })*
        }
    };
}

on_both!(
    sends_byte_exact,
    sends_segments_joined,
    sends_with_checksum_offload,
    receives_byte_exact,
    link_down_and_up,
    link_news_reports_a_link_down,
    sends_packets_byte_exact,
    refuses_bad_packets_after_the_good_ones,
    echoes_received_packets,
    fills_in_place_byte_exact,
    fill_ends_on_zero_and_refuses_too_long,
    fills_headers_before_a_shared_payload,
    fill_payload_holds_the_payload_until_sent,
    fill_payload_refuses_bad_frames,
);

// A device's DMA from another thread and the driver's volatile reads of
// the same descriptors race in Rust's memory model, as DMA does; Miri
// reports that, so these run outside Miri only (the synchronous tests run
// the same code on one thread).
#[test]
#[cfg_attr(
    miri,
    ignore = "the model thread's DMA races with the driver, as DMA does"
)]
fn e1000_round_trip_on_a_thread() {
    let (model, mut nic) = e1000();
    round_trip_on_a_thread(&mut nic, &model);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "the model thread's DMA races with the driver, as DMA does"
)]
fn virtio_round_trip_on_a_thread() {
    let (model, mut nic) = virtio();
    round_trip_on_a_thread(&mut nic, &model);
}

// ---- e1000 ----

/// The e1000's `link_news` reads no STATUS while the link stays up (ICR
/// only), and reports a link that went down and came back between two
/// calls (ICR.LSC latched it; STATUS shows the link up again).
#[test]
fn e1000_link_news_reads_no_status_while_up_and_sees_a_flap() {
    let (model, mut nic) = e1000();
    assert!(!nic.link_news().unwrap().went_down);
    let reads = lock(&model).link_reads;
    for _ in 0..100 {
        let news = nic.link_news().unwrap();
        assert!(news.link.up && !news.went_down);
    }
    assert_eq!(lock(&model).link_reads, reads, "no STATUS read while up");
    lock(&model).set_link(false);
    lock(&model).set_link(true);
    let news = nic.link_news().unwrap();
    assert!(news.link.up && news.went_down, "the flap is seen: {news:?}");
    assert!(!nic.link_news().unwrap().went_down, "and reported once");
}

/// Interrupt mode on the model's INTx line: `wait_rx` sleeps while
/// nothing arrives, wakes for a frame (the model raises the line for
/// RXT0) and for a link change, which `link_news` then reports.
#[test]
#[cfg_attr(
    miri,
    ignore = "waiting on an eventfd (ppoll) is a system call Miri does not run"
)]
fn e1000_interrupt_mode_wakes_for_a_frame_and_a_link_change() {
    let container = Container::unbacked();
    let (model, device) = E1000Model::new(&container, E1000Config::default());
    let mut nic = E1000::new(device, small().interrupts(true)).expect("bring-up");
    assert!(
        !nic.wait_rx(Duration::from_millis(20)).unwrap(),
        "nothing came"
    );
    let f = frame(nic.mac(), 1, 100);
    lock(&model).deliver(f.clone());
    assert!(nic.wait_rx(Duration::from_secs(5)).unwrap());
    assert_eq!(receive(&mut nic, 1), [f]);
    // The first wait saw the frame in the ring and left the interrupt
    // unread: this one takes it (and acknowledges it), then all is quiet.
    nic.wait_rx(Duration::ZERO).unwrap();
    assert!(
        !nic.wait_rx(Duration::from_millis(20)).unwrap(),
        "acknowledged"
    );
    lock(&model).set_link(false);
    assert!(nic.wait_rx(Duration::from_secs(5)).unwrap(), "woken by LSC");
    lock(&model).set_link(true);
    let news = nic.link_news().unwrap();
    assert!(news.link.up && news.went_down, "{news:?}");
}

#[test]
fn e1000_bring_up_reads_the_mac_from_the_eeprom_or_receive_address_0() {
    for mac_in_ral in [true, false] {
        let config = E1000Config {
            mac: [0x02, 0x11, 0x22, 0x33, 0x44, 0x55],
            mac_in_ral,
            ..E1000Config::default()
        };
        let (model, nic) = e1000_with(config);
        assert_eq!(nic.mac(), [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
        let link = nic.link();
        assert_eq!(
            (link.up, link.speed_mbps, link.full_duplex),
            (true, 1000, true)
        );
        let m = lock(&model);
        assert_eq!(m.reg(0x5404), 0x5544 | 1 << 31, "RAH0 valid");
        assert_eq!(m.reg(0x0100) & 2, 2, "RCTL.EN");
        assert_eq!(m.reg(0x0400) & 2, 2, "TCTL.EN");
        assert_eq!(m.resets, 1);
        assert_eq!((m.dma_faults(), m.driver_errors), (0, 0));
    }
}

#[test]
fn e1000_counts_what_it_sent_and_received_with_padding_and_fcs() {
    let (model, mut nic) = e1000();
    let sizes = [60, 100, 1514];
    let frames = sizes
        .iter()
        .map(|&n| TxFrame::packet(packet(&mut nic, &frame([0xff; 6], 0, n))))
        .collect();
    send_all(&mut nic, frames);
    for n in [60, 1000] {
        model.deliver(frame(nic.mac(), 0, n));
    }
    receive(&mut nic, 2);
    let s = nic.stats();
    assert_eq!((s.tx_packets, s.tx_bytes), (3, 64 + 104 + 1518));
    assert_eq!((s.rx_packets, s.rx_bytes), (2, 64 + 1004));
    assert_eq!((s.rx_dropped, s.rx_errors), (0, 0));
    assert_eq!(
        nic.stats().tx_packets,
        3,
        "counters read once, cleared in the NIC"
    );
    assert_eq!(lock(&model).sent, 3);
}

#[test]
fn e1000_frames_beyond_ring_and_fifo_are_missed_and_counted() {
    let config = E1000Config {
        rx_fifo: 4000,
        ..E1000Config::default()
    };
    let (model, mut nic) = e1000_with(config);
    let mac = nic.mac();
    for i in 0..10 {
        model.deliver(frame(mac, i, 1514));
    }
    // 7 descriptors are the NIC's; 2 frames wait in the FIFO (1518 bytes
    // each); the 10th does not fit.
    assert_eq!(lock(&model).queued(), 2);
    let got = receive(&mut nic, 9);
    let want: Vec<Vec<u8>> = (0..9).map(|i| frame(mac, i, 1514)).collect();
    assert_eq!(got, want);
    let s = nic.stats();
    assert_eq!(s.rx_packets, 9);
    // MPC (1) + RNBC (2: the frames that found no descriptor), as the driver adds them.
    assert_eq!(s.rx_dropped, 3);
}

#[test]
fn e1000_takes_frames_for_its_address_and_broadcast_unless_promiscuous() {
    let (model, mut nic) = e1000();
    let mac = nic.mac();
    let other = [0x02, 9, 9, 9, 9, 9];
    let multicast = [0x01, 0, 0x5e, 0, 0, 1];
    for dst in [other, multicast, [0xff; 6], mac] {
        model.deliver(frame(dst, 1, 80));
    }
    let got = receive(&mut nic, 2);
    assert_eq!(got, [frame([0xff; 6], 1, 80), frame(mac, 1, 80)]);
    assert_eq!(lock(&model).dropped, 2);
    nic.set_promiscuous(true);
    model.deliver(frame(other, 2, 80));
    model.deliver(frame(multicast, 3, 80));
    assert_eq!(
        receive(&mut nic, 2),
        [frame(other, 2, 80), frame(multicast, 3, 80)]
    );
}

#[test]
fn e1000_drops_frames_whose_write_back_is_bad_and_goes_on() {
    let (model, mut nic) = e1000();
    let mac = nic.mac();
    let faults = [
        RxFault::Length(0),
        RxFault::Length(2047), // more than the buffer holds after the headroom
        RxFault::Errors(0x01), // CRC error
    ];
    for (i, f) in faults.into_iter().enumerate() {
        lock(&model).rx_faults.push_back(f);
        model.deliver(frame(mac, i, 200));
    }
    // No EOP: the driver takes the next descriptor as the rest of that
    // frame and drops it too.
    lock(&model).rx_faults.push_back(RxFault::NoEop);
    model.deliver(frame(mac, 3, 200));
    model.deliver(frame(mac, 4, 200));
    model.deliver(frame(mac, 5, 200));
    assert_eq!(receive(&mut nic, 1), [frame(mac, 5, 200)]);
    let s = nic.stats();
    assert_eq!(
        s.rx_errors,
        5 + 1,
        "five refused by the driver, one CRC error counted by the NIC"
    );
}

#[test]
fn e1000_dd_on_every_descriptor_takes_at_most_the_ring_and_then_stops() {
    let (model, mut nic) = e1000();
    let free = nic.free_buffers();
    lock(&model).rx_done_everywhere(100);
    let mut rx = Vec::new();
    // The 7 descriptors the NIC owned, then the one it never had, then none.
    assert_eq!(nic.rx_batch(&mut rx, 64).unwrap(), 7);
    assert_eq!(nic.rx_batch(&mut rx, 64).unwrap(), 1);
    assert_eq!(nic.rx_batch(&mut rx, 64).unwrap(), 0);
    assert!(rx.iter().all(|p| p.len() == 100));
    rx.clear();
    assert_eq!(nic.free_buffers(), free);
    // The ring and the NIC agree again: a real frame comes through.
    let f = frame(nic.mac(), 1, 300);
    model.deliver(f.clone());
    assert_eq!(receive(&mut nic, 1), [f]);
}

#[test]
fn e1000_a_hung_transmitter_fills_the_ring_and_dd_written_early_is_taken_at_its_word() {
    let (model, mut nic) = e1000();
    lock(&model).tx_stalled = true;
    let frames: Vec<Vec<u8>> = (0..10).map(|i| frame([0xff; 6], i, 200)).collect();
    let mut q: VecDeque<TxFrame> = frames
        .iter()
        .map(|f| TxFrame::packet(packet(&mut nic, f)))
        .collect();
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 7, "all descriptors but one");
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 0, "the ring is full");
    assert_eq!((nic.tx_pending(), nic.tx_clean()), (7, 0));
    // DD on every descriptor, including the one never given: the driver
    // releases the 7 in flight, no more.
    lock(&model).tx_done_everywhere();
    assert_eq!(nic.tx_clean(), 7);
    assert_eq!(nic.tx_pending(), 0);
    {
        let mut m = lock(&model);
        m.tx_stalled = false;
        m.poll();
        assert_eq!(m.transmitted().len(), 7, "it sends them after all");
    }
    send_all(&mut nic, q);
    assert_eq!(model.transmitted(), frames[7..]);
}

#[test]
fn e1000_benchmark_mode_consumes_descriptors_without_keeping_frames() {
    let config = E1000Config {
        record: false,
        ..E1000Config::default()
    };
    let (model, mut nic) = e1000_with(config);
    let free = nic.free_buffers();
    for batch in 0..FRAMES / 4 {
        let frames = (0..4)
            .map(|i| TxFrame::packet(packet(&mut nic, &frame([0xff; 6], 4 * batch + i, 60))))
            .collect();
        send_all(&mut nic, frames);
    }
    let mut m = lock(&model);
    assert_eq!((m.sent, m.transmitted().len()), (FRAMES as u64, 0));
    drop(m);
    assert_eq!(nic.free_buffers(), free);
    assert_eq!(nic.stats().tx_packets, FRAMES as u64);
}

#[test]
fn e1000_dropping_the_driver_stops_the_nic() {
    let (model, nic) = e1000();
    drop(nic);
    let mut m = lock(&model);
    assert_eq!(m.resets, 2);
    assert_eq!((m.reg(0x0100) & 2, m.reg(0x0400) & 2), (0, 0));
    let mac = m.config.mac;
    m.deliver(frame(mac, 0, 100));
    assert_eq!((m.dropped, m.dma_faults()), (1, 0));
}

// ---- virtio-net ----

#[test]
fn virtio_bring_up_negotiates_the_features_and_reads_the_mac() {
    let (model, nic) = virtio();
    let m = lock(&model);
    assert_eq!(
        m.driver_features(),
        feature::VERSION_1
            | feature::ACCESS_PLATFORM
            | feature::MAC
            | feature::STATUS
            | feature::CSUM
    );
    let ok = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;
    assert_eq!(m.status(), ok);
    assert_eq!(nic.mac(), m.config.mac);
    assert_eq!(m.notifications[0], 1, "the receive queue, once filled");
    assert_eq!((m.dma_faults(), m.driver_errors), (0, 0));
}

#[test]
fn virtio_without_csum_the_driver_computes_the_checksums_itself() {
    let config = VirtioNetConfig {
        features: VirtioNetConfig::default().features & !feature::CSUM,
        ..VirtioNetConfig::default()
    };
    let (model, mut nic) = virtio_with(config);
    assert_eq!(lock(&model).driver_features() & feature::CSUM, 0);
    sends_with_checksum_offload(&mut nic, &model);
    assert_eq!(lock(&model).checksums, 0);
    let (model, mut nic) = virtio();
    sends_with_checksum_offload(&mut nic, &model);
    assert_eq!(
        lock(&model).checksums,
        5,
        "with CSUM the device completed them"
    );
}

#[test]
fn virtio_a_device_without_access_platform_is_refused() {
    let container = Container::unbacked();
    let config = VirtioNetConfig {
        features: VirtioNetConfig::default().features & !feature::ACCESS_PLATFORM,
        ..VirtioNetConfig::default()
    };
    let (model, device) = VirtioNetModel::new(&container, config);
    let e = VirtioNet::new(device, small()).unwrap_err().to_string();
    assert!(e.contains("ACCESS_PLATFORM"), "{e}");
    assert_eq!(lock(&model).status() & status::DRIVER_OK, 0);
}

#[test]
fn virtio_counts_frames_and_bytes() {
    let (model, mut nic) = virtio();
    let frames = [60, 1514]
        .iter()
        .map(|&n| TxFrame::packet(packet(&mut nic, &frame([0xff; 6], 0, n))))
        .collect();
    send_all(&mut nic, frames);
    model.deliver(frame(nic.mac(), 1, 100));
    receive(&mut nic, 1);
    let s = nic.stats();
    assert_eq!((s.tx_packets, s.tx_bytes), (2, 60 + 1514));
    assert_eq!((s.rx_packets, s.rx_bytes), (1, 100));
    assert_eq!(lock(&model).sent, 2);
}

#[test]
fn virtio_a_receive_entry_for_no_chain_is_an_error() {
    let (model, mut nic) = virtio();
    lock(&model).rx_faults.push_back(UsedFault::Id(999));
    model.deliver(frame(nic.mac(), 1, 100));
    let mut rx = Vec::new();
    let e = nic.rx_batch(&mut rx, 8).unwrap_err().to_string();
    assert!(e.contains("999"), "{e}");
}

#[test]
fn virtio_a_receive_length_past_the_buffer_drops_that_frame_only() {
    let (model, mut nic) = virtio();
    let mac = nic.mac();
    lock(&model).rx_faults.push_back(UsedFault::Len(5000));
    model.deliver(frame(mac, 1, 100));
    model.deliver(frame(mac, 2, 100));
    assert_eq!(receive(&mut nic, 1), [frame(mac, 2, 100)]);
    assert_eq!(nic.stats().rx_errors, 1);
}

#[test]
fn virtio_a_transmit_entry_for_no_chain_leaves_that_frame_in_flight() {
    let (model, mut nic) = virtio();
    lock(&model).tx_faults.push_back(UsedFault::Id(999));
    let frames: Vec<Vec<u8>> = (0..3).map(|i| frame([0xff; 6], i, 100)).collect();
    let mut q = frames
        .iter()
        .map(|f| TxFrame::packet(packet(&mut nic, f)))
        .collect();
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 3);
    assert_eq!(nic.tx_clean(), 2);
    assert_eq!(nic.tx_pending(), 1, "its used entry named no chain");
    assert_eq!(model.transmitted(), frames);
}

#[test]
fn virtio_a_used_index_ahead_of_the_chains_breaks_transmit() {
    let (model, mut nic) = virtio();
    lock(&model).tx_faults.push_back(UsedFault::IndexAhead(5));
    let mut q = VecDeque::from([TxFrame::packet(packet(&mut nic, &frame([0xff; 6], 0, 100)))]);
    assert_eq!(nic.tx_batch(&mut q).unwrap(), 1);
    q.push_back(TxFrame::packet(packet(&mut nic, &frame([0xff; 6], 1, 100))));
    let e = nic.tx_batch(&mut q).unwrap_err().to_string();
    assert!(e.contains("used index jumped"), "{e}");
}

#[test]
fn virtio_benchmark_mode_uses_chains_without_keeping_frames() {
    let config = VirtioNetConfig {
        record: false,
        ..VirtioNetConfig::default()
    };
    let (model, mut nic) = virtio_with(config);
    for batch in 0..FRAMES / 4 {
        let frames = (0..4)
            .map(|i| TxFrame::packet(packet(&mut nic, &frame([0xff; 6], 4 * batch + i, 60))))
            .collect();
        send_all(&mut nic, frames);
    }
    let mut m = lock(&model);
    assert_eq!((m.sent, m.transmitted().len()), (FRAMES as u64, 0));
}

#[test]
fn virtio_dropping_the_driver_resets_the_device() {
    let (model, nic) = virtio();
    drop(nic);
    let mut m = lock(&model);
    assert_eq!((m.status(), m.resets), (0, 2));
    let mac = m.config.mac;
    m.deliver(frame(mac, 0, 100));
    assert_eq!((m.dropped, m.dma_faults()), (1, 0));
}

/// Issue 30: transmit checks a cached link state (no STATUS read per
/// batch), read again once the poll interval (LINK_POLL) has passed, the
/// clock looked at every CHECK_EVERY calls: a cable pulled after a batch
/// went out is noticed by transmit then, without any `link()` call, and
/// the frame stays with the caller.
#[test]
fn e1000_transmit_notices_a_pulled_cable_within_link_refresh() {
    let (model, mut nic) = e1000();
    let f = frame([0xff; 6], 1, 100);
    let first = VecDeque::from([TxFrame::packet(packet(&mut nic, &f))]);
    send_all(&mut nic, first);
    assert_eq!(model.transmitted(), [f]);
    model.set_link(false);
    std::thread::sleep(nic_driver::LINK_POLL);
    let noticed =
        (0..=nic_driver::link::CHECK_EVERY).find(|_| nic.tx_batch(&mut VecDeque::new()).is_err());
    assert!(
        noticed.is_some(),
        "within CHECK_EVERY calls after LINK_POLL"
    );
    let g = frame([0xff; 6], 2, 100);
    let mut q = VecDeque::from([TxFrame::packet(packet(&mut nic, &g))]);
    assert!(matches!(nic.tx_batch(&mut q), Err(Error::LinkDown { .. })));
    assert_eq!(q.len(), 1);
    model.set_link(true);
    send_all(&mut nic, q);
    assert_eq!(model.transmitted(), [g]);
}
