//! Identify Controller, Identify Namespace and the active namespace list, as
//! a controller might write them: any 4096 bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvme_driver::spec::{parse_namespace_list, ControllerInfo, NamespaceInfo};

fuzz_target!(|data: &[u8]| {
    let mut page = [0u8; 4096];
    let n = data.len().min(4096);
    page[..n].copy_from_slice(&data[..n]);
    let c = ControllerInfo::parse(&page);
    let _ = (
        c.supports_deallocate(),
        c.supports_write_zeroes(),
        c.model.len(),
    );
    if let Some(ns) = NamespaceInfo::parse(1, &page) {
        assert!((512..=65536).contains(&ns.block_size));
        let _ = ns.bytes();
    }
    assert!(parse_namespace_list(&page).len() <= 1024);
});
