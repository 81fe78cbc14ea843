//! The forwarder's wire format: a UDP payload is a 16-byte big-endian header,
//! magic `DMAF`, the datagram's sequence number (from 0) and the byte offset of
//! its data within the forwarded range, then the data. A last datagram with no
//! data and the offset equal to the total length marks the end.

/// `DMAF`.
pub const MAGIC: [u8; 4] = *b"DMAF";
/// Header length.
pub const HEADER: usize = 16;
/// Ethernet + IPv4 + UDP + DMAF header bytes in front of the data.
pub const FRAME_OVERHEAD: usize = 14 + 20 + 8 + HEADER;

/// Addresses of the stream.
#[derive(Clone, Copy, Debug)]
pub struct Endpoints {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: [u8; 4],
    pub dst_ip: [u8; 4],
    pub src_port: u16,
    pub dst_port: u16,
}

/// The 58 header bytes of a stream's datagrams with what never changes
/// (addresses, ports, protocol, flags, magic) written once: a datagram's
/// header is a copy of it with five fields set (lengths, IP ID, the UDP
/// checksum seed, sequence number and offset), ready for checksum offload
/// (the IPv4 checksum 0, the UDP checksum seeded with the pseudo-header
/// sum; the NIC completes both).
#[derive(Clone, Debug)]
pub struct HeaderTemplate {
    bytes: [u8; FRAME_OVERHEAD],
    /// The pseudo-header sum without the UDP length, unfolded.
    pseudo: u32,
}

impl HeaderTemplate {
    /// The template of the stream between `e`.
    pub fn new(e: &Endpoints) -> HeaderTemplate {
        let mut b = [0u8; FRAME_OVERHEAD];
        b[0..6].copy_from_slice(&e.dst_mac);
        b[6..12].copy_from_slice(&e.src_mac);
        b[12..14].copy_from_slice(&[0x08, 0x00]);
        // Version 4, 20-byte header; don't fragment; TTL 64; UDP.
        b[14..34].copy_from_slice(&[
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ]);
        b[26..30].copy_from_slice(&e.src_ip);
        b[30..34].copy_from_slice(&e.dst_ip);
        b[34..36].copy_from_slice(&e.src_port.to_be_bytes());
        b[36..38].copy_from_slice(&e.dst_port.to_be_bytes());
        b[42..46].copy_from_slice(&MAGIC);
        let word = |x: &[u8; 4]| {
            u16::from_be_bytes([x[0], x[1]]) as u32 + u16::from_be_bytes([x[2], x[3]]) as u32
        };
        HeaderTemplate {
            bytes: b,
            pseudo: word(&e.src_ip) + word(&e.dst_ip) + 17,
        }
    }

    /// Writes the header of datagram `seq` carrying `data_len` bytes from
    /// `offset` of the stream into the first 58 bytes of `out`.
    ///
    /// # Panics
    ///
    /// When `out` is shorter than 58 bytes.
    #[inline]
    pub fn write(&self, out: &mut [u8], seq: u32, offset: u64, data_len: usize) {
        let out: &mut [u8; FRAME_OVERHEAD] =
            (&mut out[..FRAME_OVERHEAD]).try_into().expect("58 bytes");
        *out = self.bytes;
        let udp_len = (8 + HEADER + data_len) as u16;
        out[16..18].copy_from_slice(&(20 + udp_len).to_be_bytes());
        out[18..20].copy_from_slice(&(seq as u16).to_be_bytes());
        out[38..40].copy_from_slice(&udp_len.to_be_bytes());
        out[40..42].copy_from_slice(&fold(self.pseudo + udp_len as u32).to_be_bytes());
        out[46..50].copy_from_slice(&seq.to_be_bytes());
        out[50..58].copy_from_slice(&offset.to_be_bytes());
    }
}

/// A one's-complement sum folded to 16 bits.
fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The 16-byte DMAF header alone (for programs whose socket adds the rest).
pub fn header(seq: u32, offset: u64) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&MAGIC);
    h[4..8].copy_from_slice(&seq.to_be_bytes());
    h[8..].copy_from_slice(&offset.to_be_bytes());
    h
}

/// A datagram of a stream found in an Ethernet frame: its sequence number,
/// offset in the stream, and where its data lies in the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram {
    pub seq: u32,
    pub offset: u64,
    /// Index of the data's first byte in the frame.
    pub at: usize,
    pub len: usize,
}

/// Checks an Ethernet frame from the wire (IPv4 and UDP headers and
/// checksums, not a fragment, UDP port `port`, the DMAF header) and finds its
/// data; None for anything else. Frames are untrusted input: any bytes are
/// handled, and `at + len` never exceeds the frame.
pub fn parse_frame(frame: &[u8], port: u16) -> Option<Datagram> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(udp))) = (&p.net, &p.transport) else {
        return None;
    };
    let header = ip.header();
    if ip.is_payload_fragmented()
        || udp.destination_port() != port
        || header.to_header().calc_header_checksum() != header.header_checksum()
    {
        return None;
    }
    if udp.checksum() != 0 {
        let sum = udp
            .to_header()
            .calc_checksum_ipv4_raw(header.source(), header.destination(), udp.payload())
            .ok()?;
        if sum != udp.checksum() {
            return None;
        }
    }
    let (seq, offset, data) = parse(udp.payload())?;
    Some(Datagram {
        seq,
        offset,
        at: data.as_ptr() as usize - frame.as_ptr() as usize,
        len: data.len(),
    })
}

/// A parsed DMAF header: (sequence number, offset, data).
pub fn parse(payload: &[u8]) -> Option<(u32, u64, &[u8])> {
    if payload.len() < HEADER || payload[..4] != MAGIC {
        return None;
    }
    let seq = u32::from_be_bytes(payload[4..8].try_into().ok()?);
    let offset = u64::from_be_bytes(payload[8..16].try_into().ok()?);
    Some((seq, offset, &payload[HEADER..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_has_valid_lengths() {
        let e = Endpoints {
            src_mac: [2; 6],
            dst_mac: [4; 6],
            src_ip: [198, 51, 100, 1],
            dst_ip: [198, 51, 100, 2],
            src_port: 4000,
            dst_port: 9000,
        };
        let t = HeaderTemplate::new(&e);
        let mut f = vec![0u8; FRAME_OVERHEAD];
        // Another datagram's header first: nothing of it may stay.
        t.write(&mut f, 0x1234_5678, 9, 1456);
        t.write(&mut f, 7, 1 << 40, 100);
        assert_eq!(f[..12], [[4; 6], [2; 6]].concat(), "destination, source");
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 20 + 8 + 16 + 100);
        assert_eq!(
            u16::from_be_bytes([f[18], f[19]]),
            7,
            "IP ID: the sequence number"
        );
        assert_eq!(f[22..24], [64, 17], "TTL, UDP");
        assert_eq!(f[24..26], [0, 0], "IPv4 checksum left to the NIC");
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 8 + 16 + 100);
        // The pseudo-header sum: addresses, protocol, UDP length, folded.
        let sum: u32 = 198 * 256 + 51 + 100 * 256 + 1 + 198 * 256 + 51 + 100 * 256 + 2 + 17 + 124;
        assert_eq!(u16::from_be_bytes([f[40], f[41]]), fold(sum));
        assert!(sum > 0xffff, "the fold is exercised");
        assert_eq!(parse(&f[42..]), Some((7, 1 << 40, &[][..])));
        assert_eq!(parse(b"DMAX0000000000000000"), None);
        assert_eq!(parse(b"DMAF"), None, "too short");
    }

    #[test]
    fn parse_frame_finds_the_data_and_refuses_damage() {
        let mut payload = header(3, 1024).to_vec();
        payload.extend_from_slice(&[7u8; 100]);
        let builder = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([192, 0, 2, 1], [198, 51, 100, 1], 64)
            .udp(5000, 9000);
        let mut f = Vec::new();
        builder.write(&mut f, &payload).expect("a frame builds");
        let d = parse_frame(&f, 9000).expect("a valid datagram");
        assert_eq!((d.seq, d.offset, d.at, d.len), (3, 1024, 58, 100));
        assert_eq!(parse_frame(&f, 9001), None, "another port");
        let mut bad = f.clone();
        bad[100] ^= 1;
        assert_eq!(parse_frame(&bad, 9000), None, "a bad UDP checksum");
        assert_eq!(parse_frame(&f[..90], 9000), None, "cut short");
    }
}
