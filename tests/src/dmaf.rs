//! The host's receiver of the forwarder's stream: reassembles DMAF datagrams
//! (see the forwarder's wire format) from captured frames by offset, checking
//! every IPv4 and UDP checksum on the way.

use std::collections::BTreeMap;

use crate::check::{ipv4_checksum_ok, udp_checksum_ok};

/// One stream, reassembled.
#[derive(Debug, Default)]
pub struct Stream {
    pub data: Vec<u8>,
    /// The end marker's offset (the total length), if it came.
    pub end: Option<u64>,
    /// Datagrams received per sequence number.
    pub seqs: BTreeMap<u32, u32>,
    /// Frames whose IPv4 or UDP checksum was wrong, or that were not DMAF.
    pub bad: u32,
}

impl Stream {
    /// Sequence numbers missing below the highest one seen.
    pub fn missing(&self) -> Vec<u32> {
        let top = self.seqs.keys().next_back().copied().unwrap_or(0);
        (0..top).filter(|s| !self.seqs.contains_key(s)).collect()
    }
}

/// The datagrams among `frames` (raw Ethernet) that go to UDP port `port`.
pub fn reassemble<'a>(frames: impl IntoIterator<Item = &'a Vec<u8>>, port: u16) -> Stream {
    let mut s = Stream::default();
    for f in frames {
        let Some((ip, udp)) = ipv4_udp(f) else {
            continue;
        };
        if u16::from_be_bytes([udp[2], udp[3]]) != port {
            continue;
        }
        let (src, dst) = (
            ip[12..16].try_into().expect("4 bytes"),
            ip[16..20].try_into().expect("4 bytes"),
        );
        let payload = &udp[8..];
        if !ipv4_checksum_ok(ip)
            || !udp_checksum_ok(src, dst, udp)
            || payload.len() < 16
            || &payload[..4] != b"DMAF"
        {
            s.bad += 1;
            continue;
        }
        let seq = u32::from_be_bytes(payload[4..8].try_into().expect("4 bytes"));
        let offset = u64::from_be_bytes(payload[8..16].try_into().expect("8 bytes")) as usize;
        *s.seqs.entry(seq).or_insert(0) += 1;
        let body = &payload[16..];
        if body.is_empty() {
            s.end = Some(offset as u64);
            continue;
        }
        if s.data.len() < offset + body.len() {
            s.data.resize(offset + body.len(), 0);
        }
        s.data[offset..offset + body.len()].copy_from_slice(body);
    }
    s
}

/// The IPv4 header and the UDP datagram of an Ethernet frame, if it is one.
fn ipv4_udp(f: &[u8]) -> Option<(&[u8], &[u8])> {
    if f.len() < 14 + 20 + 8 || f[12..14] != [0x08, 0x00] || f[14] >> 4 != 4 || f[23] != 17 {
        return None;
    }
    let ihl = (f[14] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([f[16], f[17]]) as usize;
    if ihl < 20 || total < ihl + 8 || f.len() < 14 + total {
        return None;
    }
    Some((&f[14..14 + ihl], &f[14 + ihl..14 + total]))
}
