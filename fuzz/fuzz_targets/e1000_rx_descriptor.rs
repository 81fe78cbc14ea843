//! Written-back e1000 receive descriptors as a device might write them: a
//! sequence of (status, errors, length) checked for a 2048-byte buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nic_driver::e1000::{check_descriptor, RX_HEADROOM};

fuzz_target!(|data: &[u8]| {
    let mut discarding = false;
    for d in data.chunks_exact(4) {
        let len = u16::from_le_bytes([d[2], d[3]]) as usize;
        let capacity = if d[1] & 0x80 != 0 { 2048 } else { 1 };
        if check_descriptor(&mut discarding, d[0], d[1] & 0x7f, len, capacity) {
            assert!(len > 0 && RX_HEADROOM + len <= capacity);
        }
    }
});
