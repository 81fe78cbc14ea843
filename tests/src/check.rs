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
