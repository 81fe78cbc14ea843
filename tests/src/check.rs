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
