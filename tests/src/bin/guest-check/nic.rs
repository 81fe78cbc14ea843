//! Guest checks of the e1000 driver. Frames come from `vfio_tests::check::test_frame`,
//! which the host side of the test regenerates to compare bytes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nic_driver::e1000::E1000;
use nic_driver::Config;
use nic_driver::{ChecksumOffload, NetDevice, Packet, Segment, TxFrame};
use vfio_core::vfio::Container;
use vfio_core::{Error, Result};
use vfio_tests::check::{test_frame, test_frame_id, HOST_MAC, TX_SIZES};

fn nic_err(e: nic_driver::Error) -> Error {
    match e {
        nic_driver::Error::Vfio(v) => v,
        other => Error::InvalidArgument(format!("nic: {other}")),
    }
}

/// Any NIC the drivers know, chosen by its PCI ID.
type Nic = Box<dyn NetDevice + Send>;

fn open(bdf: &str, config: Config) -> Result<(std::sync::Arc<Container>, Nic)> {
    let container = Container::new()?;
    let nic = nic_driver::open(&container, bdf.parse()?, config).map_err(nic_err)?;
    Ok((container, nic))
}

fn count(s: &str) -> Result<u32> {
    s.parse()
        .map_err(|_| Error::InvalidArgument(format!("count {s:?}")))
}

/// A packet holding `bytes`.
fn packet(nic: &mut Nic, bytes: &[u8]) -> Result<Packet> {
    let mut p = nic.alloc_packet().ok_or(Error::PoolExhausted {
        capacity: nic.pool().capacity(),
    })?;
    p.buffer_mut()[..bytes.len()].copy_from_slice(bytes);
    p.set_len(bytes.len());
    Ok(p)
}

/// Sends every frame of `frames`, waiting while the ring is full, then until all are sent.
fn send_all(nic: &mut Nic, frames: &mut VecDeque<TxFrame>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !frames.is_empty() || nic.tx_pending() > 0 {
        nic.tx_batch(frames).map_err(nic_err)?;
        nic.tx_clean();
        if Instant::now() > deadline {
            return Err(Error::InvalidArgument(format!(
                "{} frames not sent within 20 s",
                frames.len() + nic.tx_pending()
            )));
        }
    }
    Ok(())
}

/// COUNT frames of the TX sizes, in batches of 8; every third frame goes out
/// as two segments (a 14-byte header packet and the rest from another buffer).
pub fn tx(bdf: &str, n: &str) -> Result<()> {
    let (_c, mut nic) = open(bdf, Config::default())?;
    // Before anything is sent, only the receive ring holds buffers.
    println!("tx.pool_free_idle={}", nic.free_buffers());
    let mac = nic.mac();
    let mut queue = VecDeque::with_capacity(8);
    for seq in 0..count(n)? {
        let bytes = test_frame(
            1,
            seq,
            TX_SIZES[seq as usize % TX_SIZES.len()],
            mac,
            HOST_MAC,
        );
        let frame = if seq % 3 == 2 {
            let mut f = TxFrame::packet(packet(&mut nic, &bytes[..14])?);
            let rest = packet(&mut nic, &bytes[14..])?;
            // The bytes are at the packet's offset (not 0 on virtio-net).
            let (offset, len) = (rest.offset(), rest.len());
            f.push(Segment::Slice {
                buf: rest.into_buffer(),
                offset,
                len,
            })
            .map_err(|_| Error::InvalidArgument("segments".into()))?;
            f
        } else {
            TxFrame::packet(packet(&mut nic, &bytes)?)
        };
        queue.push_back(frame);
        if queue.len() == 8 {
            send_all(&mut nic, &mut queue)?;
        }
    }
    send_all(&mut nic, &mut queue)?;
    // A slice reaching past its buffer is refused, not sent.
    let mut bad = TxFrame::packet(packet(&mut nic, &[0u8; 14])?);
    let other = packet(&mut nic, &[0u8; 60])?.into_buffer();
    let past_end = other.capacity() - 10;
    bad.push(Segment::Slice {
        buf: other,
        offset: past_end,
        len: 100,
    })
    .map_err(|_| Error::InvalidArgument("segments".into()))?;
    queue.push_back(bad);
    match nic.tx_batch(&mut queue) {
        Ok(n) => println!("tx.past_end_slice=sent {n}"),
        Err(e) => println!("tx.past_end_slice={e}"),
    }
    let stats = nic.stats();
    println!("tx.sent={}", stats.tx_packets);
    println!("tx.pool_free={}", nic.free_buffers());
    println!("tx.pool_capacity={}", nic.pool().capacity());
    Ok(())
}

/// UDP/IPv4 frames with checksum offload: a 42-byte header buffer (IP checksum
/// 0, UDP checksum seeded with the pseudo-header sum) and a payload buffer.
pub fn tx_csum(bdf: &str, n: &str) -> Result<()> {
    let (_c, mut nic) = open(bdf, Config::default())?;
    let mac = nic.mac();
    let a = Udp {
        src_mac: mac,
        dst_mac: HOST_MAC,
        src_ip: [192, 0, 2, 2],
        dst_ip: [192, 0, 2, 1],
        dst_port: 5000,
    };
    let mut queue = VecDeque::with_capacity(8);
    for seq in 0..count(n)? {
        let payload = test_frame(2, seq, 19 + (seq as usize * 97) % 1400, mac, HOST_MAC);
        queue.push_back(udp_frame(&mut nic, &a, &payload)?);
        send_all(&mut nic, &mut queue)?;
    }
    println!("csum.sent={}", nic.stats().tx_packets);
    Ok(())
}

/// Addresses of a UDP/IPv4 frame.
struct Udp {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src_ip: [u8; 4],
    dst_ip: [u8; 4],
    dst_port: u16,
}

/// Ethernet + IPv4 (checksum 0) + UDP (from port 4000, checksum = the folded
/// pseudo-header sum), as checksum offload wants them.
fn udp_header(a: &Udp, payload: usize) -> Vec<u8> {
    let udp_len = (8 + payload) as u16;
    let mut h = Vec::with_capacity(42);
    h.extend_from_slice(&a.dst_mac);
    h.extend_from_slice(&a.src_mac);
    h.extend_from_slice(&[0x08, 0x00]);
    h.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    h[16..18].copy_from_slice(&(20 + udp_len).to_be_bytes());
    h.extend_from_slice(&a.src_ip);
    h.extend_from_slice(&a.dst_ip);
    let word = |x: &[u8; 4]| {
        u16::from_be_bytes([x[0], x[1]]) as u32 + u16::from_be_bytes([x[2], x[3]]) as u32
    };
    let mut sum = word(&a.src_ip) + word(&a.dst_ip) + 17 + udp_len as u32;
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    h.extend_from_slice(&4000u16.to_be_bytes());
    h.extend_from_slice(&a.dst_port.to_be_bytes());
    h.extend_from_slice(&udp_len.to_be_bytes());
    h.extend_from_slice(&(sum as u16).to_be_bytes());
    h
}

/// One UDP frame of `payload` with checksum offload: header and payload in two buffers.
fn udp_frame(nic: &mut Nic, a: &Udp, payload: &[u8]) -> Result<TxFrame> {
    let mut f = TxFrame::packet(packet(nic, &udp_header(a, payload.len()))?);
    let body = packet(nic, payload)?;
    let (offset, len) = (body.offset(), body.len());
    f.push(Segment::Slice {
        buf: body.into_buffer(),
        offset,
        len,
    })
    .map_err(|_| Error::InvalidArgument("segments".into()))?;
    f.offload = Some(ChecksumOffload {
        ip_start: 14,
        l4_start: 34,
        tcp: false,
    });
    Ok(f)
}

/// Receives `n` test frames of `phase`, printing `rx.<seq>.sha256=` for each.
fn receive(nic: &mut Nic, phase: u8, n: u32, timeout: Duration) -> Result<u32> {
    let mut got = 0;
    let mut out = Vec::with_capacity(64);
    let deadline = Instant::now() + timeout;
    while got < n && Instant::now() < deadline {
        nic.rx_batch(&mut out, 64).map_err(nic_err)?;
        for p in out.drain(..) {
            if let Some((ph, seq)) = test_frame_id(p.data()) {
                if ph == phase {
                    use sha2::Digest;
                    println!(
                        "rx.{phase}.{seq}.sha256={:x}",
                        sha2::Sha256::digest(p.data())
                    );
                    got += 1;
                }
            }
        }
    }
    Ok(got)
}

/// Prints `rx.ready`, then receives `n` frames of `phase` the host sends.
pub fn rx(bdf: &str, phase: &str, n: &str) -> Result<()> {
    let (_c, mut nic) = open(bdf, Config::default())?;
    let phase: u8 = phase
        .parse()
        .map_err(|_| Error::InvalidArgument("phase".into()))?;
    println!("rx.ready");
    let got = receive(&mut nic, phase, count(n)?, Duration::from_secs(30))?;
    println!("rx.received={got}");
    let s = nic.stats();
    println!("rx.stats_packets={}", s.rx_packets);
    println!("rx.pool_free_after={}", nic.free_buffers());
    Ok(())
}

/// A 64-descriptor ring left unpolled while the host sends 200 frames: what
/// reaches the driver is intact. Then, with every pool buffer held, frames
/// cannot be refilled and are dropped and counted; then the driver recovers.
pub fn rx_burst(bdf: &str) -> Result<()> {
    let (_c, mut nic) = open(bdf, Config::default().rx_ring(64))?;
    println!("burst.ready");
    std::thread::sleep(Duration::from_secs(4));
    let got = receive(&mut nic, 4, 200, Duration::from_secs(5))?;
    println!("burst.received={got}");
    let held: Vec<Packet> = std::iter::from_fn(|| nic.alloc_packet()).collect();
    let dropped_before = nic.stats().rx_dropped;
    println!("starve.held={}", held.len());
    println!("starve.ready");
    let mut out = Vec::with_capacity(64);
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut delivered = 0;
    while Instant::now() < deadline {
        delivered += nic.rx_batch(&mut out, 64).map_err(nic_err)?;
        out.clear();
    }
    println!("starve.delivered={delivered}");
    println!("starve.dropped={}", nic.stats().rx_dropped - dropped_before);
    drop(held);
    println!("burst.recover.ready");
    let again = receive(&mut nic, 5, 10, Duration::from_secs(30))?;
    println!("burst.recovered={again}");
    Ok(())
}

/// Waits for the host to take the link down; a send is then refused and the
/// frame kept; when the link is back, the kept frame goes out.
pub fn link(bdf: &str) -> Result<()> {
    let (_c, mut nic) = open(bdf, Config::default())?;
    println!("link.up_at_start={}", nic.link().up);
    println!("link.ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    while nic.link().up && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("link.went_down={}", !nic.link().up);
    let mac = nic.mac();
    let mut queue = VecDeque::new();
    queue.push_back(TxFrame::packet(packet(
        &mut nic,
        &test_frame(6, 0, 100, mac, HOST_MAC),
    )?));
    let refused = nic.tx_batch(&mut queue);
    println!(
        "link.send_while_down={}",
        refused.map_or_else(|e| e.to_string(), |n| format!("queued {n}"))
    );
    println!("link.kept={}", queue.len());
    println!("link.down.done");
    while !nic.link().up && Instant::now() < deadline + Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("link.came_back={}", nic.link().up);
    send_all(&mut nic, &mut queue)?;
    println!("link.sent_after={}", nic.stats().tx_packets);
    Ok(())
}

/// Jumbo frames (the NIC opened with jumbo on): 9014, 5000 and 1514 bytes.
pub fn tx_jumbo(bdf: &str, n: &str) -> Result<()> {
    let (_c, mut nic) = open(bdf, Config::default().jumbo(true))?;
    let mac = nic.mac();
    let mut queue = VecDeque::new();
    for seq in 0..count(n)? {
        let len = [9014, 5000, 1514][seq as usize % 3];
        queue.push_back(TxFrame::packet(packet(
            &mut nic,
            &test_frame(10, seq, len, mac, HOST_MAC),
        )?));
    }
    send_all(&mut nic, &mut queue)?;
    let too_big = TxFrame::packet(packet(&mut nic, &test_frame(10, 999, 9015, mac, HOST_MAC))?);
    let mut q = VecDeque::from([too_big]);
    println!(
        "jumbo.too_big={}",
        nic.tx_batch(&mut q)
            .err()
            .map_or("accepted".into(), |e| e.to_string())
    );
    println!("jumbo.sent={}", nic.stats().tx_packets);
    Ok(())
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<u8> = s
        .split(':')
        .filter_map(|p| u8::from_str_radix(p, 16).ok())
        .collect();
    parts
        .try_into()
        .map_err(|_| Error::InvalidArgument(format!("MAC {s:?}")))
}

/// COUNT UDP datagrams (198.51.100.1 -> 198.51.100.2:5000) to `dst_mac`, with
/// checksum offload; their payloads are test frames of phase 8.
pub fn udp_send(bdf: &str, dst_mac: &str, n: &str) -> Result<()> {
    let (_c, mut nic) = open(bdf, Config::default())?;
    let a = Udp {
        src_mac: nic.mac(),
        dst_mac: parse_mac(dst_mac)?,
        src_ip: [198, 51, 100, 1],
        dst_ip: [198, 51, 100, 2],
        dst_port: 5000,
    };
    println!(
        "udp.src_mac={}",
        a.src_mac.map(|b| format!("{b:02x}")).join(":")
    );
    let mut queue = VecDeque::new();
    for seq in 0..count(n)? {
        let payload = test_frame(8, seq, 100 + seq as usize * 61 % 1300, a.src_mac, a.dst_mac);
        queue.push_back(udp_frame(&mut nic, &a, &payload)?);
        send_all(&mut nic, &mut queue)?;
    }
    println!("udp.sent={}", nic.stats().tx_packets);
    Ok(())
}

/// A kernel UDP socket on PORT: prints `udp.<seq>.sha256=` for each test-frame payload.
pub fn udp_recv(port: &str, n: &str, seconds: &str) -> Result<()> {
    let secs: u64 = seconds
        .parse()
        .map_err(|_| Error::InvalidArgument("seconds".into()))?;
    let sock = std::net::UdpSocket::bind((
        "0.0.0.0",
        port.parse::<u16>()
            .map_err(|_| Error::InvalidArgument("port".into()))?,
    ))
    .map_err(|e| Error::io("bind", "udp socket", e))?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| Error::io("configure", "udp socket", e))?;
    println!("udp.listening");
    let (want, deadline) = (count(n)?, Instant::now() + Duration::from_secs(secs));
    let mut buf = vec![0u8; 65536];
    let mut got = 0;
    while got < want && Instant::now() < deadline {
        if let Ok(len) = sock.recv(&mut buf) {
            if let Some((_, seq)) = test_frame_id(&buf[..len]) {
                use sha2::Digest;
                println!("udp.{seq}.sha256={:x}", sha2::Sha256::digest(&buf[..len]));
                got += 1;
            }
        }
    }
    println!("udp.received={got}");
    Ok(())
}

/// Frames to another MAC are filtered until promiscuous mode is on.
pub fn promisc(bdf: &str) -> Result<()> {
    let (_c, mut nic) = open(bdf, Config::default())?;
    println!("promisc.ready");
    let filtered = receive(&mut nic, 11, 5, Duration::from_secs(3))?;
    println!("promisc.off_received={filtered}");
    nic.set_promiscuous(true);
    println!("promisc.on");
    let got = receive(&mut nic, 12, 5, Duration::from_secs(30))?;
    println!("promisc.on_received={got}");
    Ok(())
}

/// Points every receive descriptor of the e1000 at an IOVA that is not mapped
/// (the top of the IOVA space), with a mapped canary buffer beside the ring,
/// programming the registers directly as
/// a buggy driver might, and waits for the host's probe frames: the NIC's
/// writes must be blocked by the IOMMU. Then the driver opens the NIC afresh
/// and receives a probe frame normally. Prints what happened.
pub fn confine(bdf: &str) -> Result<()> {
    use nic_driver::e1000::regs::{ctrl, rctl, rxd, CTRL, RCTL, RDBAH, RDBAL, RDH, RDLEN, RDT};
    use vfio_core::dma::{Backing, DmaMemory};
    let container = Container::new()?;
    {
        let dev = container.open_device(bdf.parse()?)?;
        dev.enable_bus_master()?;
        let bar = dev.map_bar(0)?;
        bar.write32(CTRL, ctrl::RST);
        std::thread::sleep(Duration::from_millis(20));
        bar.write32(CTRL, ctrl::SLU | ctrl::ASDE);
        let canary = DmaMemory::new(&container, 64 << 10, Backing::Auto)?;
        canary.write_bytes(0, &[0xa5; 64 << 10]);
        let ring = DmaMemory::new(&container, 8 * rxd::SIZE, Backing::Auto)?;
        // The top 1 MiB of the usable IOVA space: nothing here maps it.
        let top = container
            .iova_ranges()
            .iter()
            .map(|r| *r.end())
            .max()
            .unwrap_or(0);
        let unmapped = (top + 1).saturating_sub(1 << 20);
        for i in 0..8 {
            ring.write::<u64>(i * rxd::SIZE, unmapped + (i * 2048) as u64);
            ring.write::<u64>(i * rxd::SIZE + 8, 0);
        }
        bar.write32(RDBAL, ring.iova() as u32);
        bar.write32(RDBAH, (ring.iova() >> 32) as u32);
        bar.write32(RDLEN, (8 * rxd::SIZE) as u32);
        bar.write32(RDH, 0);
        bar.write32(RDT, 7);
        bar.write32(
            RCTL,
            rctl::EN | rctl::UPE | rctl::MPE | rctl::BAM | rctl::SECRC | rctl::BSIZE_2048,
        );
        println!("nic_confine.iova={unmapped:#x}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while ring.read::<u8>(rxd::STATUS) & rxd::DD == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        println!(
            "nic_confine.descriptor_written_back={}",
            ring.read::<u8>(rxd::STATUS) & rxd::DD != 0
        );
        let mut back = vec![0u8; 64 << 10];
        canary.read_bytes(0, &mut back);
        println!(
            "nic_confine.canary_intact={}",
            back.iter().all(|&b| b == 0xa5)
        );
        bar.write32(RCTL, 0);
        bar.write32(CTRL, ctrl::RST);
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut nic = E1000::open(&container, bdf.parse()?, Config::default()).map_err(nic_err)?;
    nic.set_promiscuous(true);
    let mut got = Vec::with_capacity(8);
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.is_empty() && Instant::now() < deadline {
        nic.rx_batch(&mut got, 8).map_err(nic_err)?;
        std::thread::sleep(Duration::from_millis(10));
    }
    match got.first() {
        Some(p) => println!("nic_confine.after_reset_frame={:02x?}", p.data()),
        None => println!("nic_confine.after_reset_frame=none"),
    }
    Ok(())
}
