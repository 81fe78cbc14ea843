//! Helpers for host-side checks of guest output and disk images.

/// The value of `key=value` in a step's output; panics (showing the output) if absent.
pub fn kv<'a>(output: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    output
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no `{key}=` in the guest's output:\n{output}"))
}

/// `kv` parsed as a number (decimal, or hex with 0x).
pub fn kv_num(output: &str, key: &str) -> u64 {
    let v = kv(output, key);
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("`{key}={v}` is not a number:\n{output}"))
}

/// Deterministic pseudo-random bytes (xorshift64*), for disk images a test can recreate.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// EtherType of the test frames (IEEE local experimental).
pub const TEST_ETHERTYPE: [u8; 2] = [0x88, 0xb5];

/// A test frame of `len` bytes (at least 19): Ethernet header, the test
/// EtherType, `phase`, `seq` (big-endian) and bytes that depend on both.
pub fn test_frame(phase: u8, seq: u32, len: usize, src: [u8; 6], dst: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&TEST_ETHERTYPE);
    f.push(phase);
    f.extend_from_slice(&seq.to_be_bytes());
    let mut i = 0u32;
    while f.len() < len {
        f.push(
            (seq.wrapping_mul(31)
                .wrapping_add(i)
                .wrapping_add(phase as u32 * 7)) as u8,
        );
        i += 1;
    }
    f
}

/// The phase and sequence number of a test frame.
pub fn test_frame_id(f: &[u8]) -> Option<(u8, u32)> {
    if f.len() < 19 || f[12..14] != TEST_ETHERTYPE {
        return None;
    }
    Some((f[14], u32::from_be_bytes([f[15], f[16], f[17], f[18]])))
}

/// The frame sizes the TX test cycles through, 60 to 1514 bytes.
pub const TX_SIZES: &[usize] = &[
    60, 61, 64, 100, 128, 255, 256, 512, 1000, 1024, 1400, 1500, 1513, 1514,
];

/// The host's MAC in test frames.
pub const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// The 16-bit one's-complement sum of `parts`, folded.
fn ones_sum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        sum += chunks
            .by_ref()
            .map(|w| u16::from_be_bytes([w[0], w[1]]) as u64)
            .sum::<u64>();
        if let [last] = chunks.remainder() {
            sum += (*last as u64) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// True when an IPv4 header's checksum is valid (its one's-complement sum,
/// checksum included, is all ones: 0x0000 and 0xFFFF both stand for zero).
pub fn ipv4_checksum_ok(header: &[u8]) -> bool {
    ones_sum(&[header]) == 0xffff
}

/// True when a UDP datagram (`udp`: header and payload) over IPv4 between
/// `src` and `dst` has a valid, present checksum.
pub fn udp_checksum_ok(src: [u8; 4], dst: [u8; 4], udp: &[u8]) -> bool {
    let len = (udp.len() as u16).to_be_bytes();
    let pseudo = [
        src[0], src[1], src[2], src[3], dst[0], dst[1], dst[2], dst[3], 0, 17, len[0], len[1],
    ];
    udp.len() >= 8 && udp[6..8] != [0, 0] && ones_sum(&[&pseudo, udp]) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_zeros_of_ones_complement_are_valid() {
        // A header whose sum without the checksum is 0xFFFF: 0x0000 and 0xFFFF both valid.
        let mut h = [
            0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2,
        ];
        let rest = ones_sum(&[&h]);
        let fix = 0xffff - rest;
        h[4..6].copy_from_slice(&fix.to_be_bytes());
        assert!(ipv4_checksum_ok(&h), "checksum field 0");
        h[10..12].copy_from_slice(&[0xff, 0xff]);
        assert!(ipv4_checksum_ok(&h), "checksum field 0xFFFF");
        h[10..12].copy_from_slice(&[0x12, 0x34]);
        assert!(!ipv4_checksum_ok(&h));
    }
}
