//! Completion queue entries as a controller might write them, checked
//! against the commands in flight: the first 8 bytes say which of 64 command
//! IDs are outstanding, then 16-byte entries follow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvme_driver::spec::Completion;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let mask = u64::from_le_bytes(data[..8].try_into().unwrap());
    let in_flight: Vec<bool> = (0..64).map(|i| mask >> i & 1 == 1).collect();
    for entry in data[8..].chunks_exact(16) {
        let dw: [u32; 4] = std::array::from_fn(|i| {
            u32::from_le_bytes(entry[4 * i..4 * i + 4].try_into().unwrap())
        });
        let (c, _phase) = Completion::parse(dw);
        let _ = (c.status.name(), c.status.kind(), format!("{}", c.status));
        if c.validate(1, 64, &in_flight).is_ok() {
            assert!(in_flight[c.cid as usize] && c.sq_id == 1 && c.sq_head < 64);
        }
    }
});
