//! Frames from the wire as the receiver sees them: any bytes.
#![no_main]

use examples::dmaf::parse_frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(d) = parse_frame(data, 9000) {
        assert!(d.at + d.len <= data.len());
    }
});
