//! The split virtqueue's used ring as a device might write it: arbitrary used
//! entries (any id, any length) and index moves (any jump), interleaved with
//! the driver adding chains, publishing and popping. The first byte picks the
//! queue size; then 4-byte operations. A reference model of the chains in
//! flight checks that the driver never panics, never hands a chain back
//! twice, never frees a descriptor that is not in flight (so no descriptor is
//! ever in two chains at once), and that a broken queue stays broken. The
//! queue is the driver's, behind `UsedRingHarness`, which gives no device
//! a raw IOVA (every descriptor points at IOVA 0).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nic_driver::virtio::{Used, UsedError, UsedRingHarness, MAX_CHAIN};
use vfio_core::vfio::Container;

/// A chain in flight: its head, descriptors (as the device follows them)
/// and writable bytes.
struct Chain {
    head: u16,
    descs: Vec<u16>,
    writable: u32,
}

fn read<const N: usize>(c: &Container, iova: u64) -> [u8; N] {
    let mut b = [0; N];
    c.dma_read(iova, &mut b).unwrap();
    b
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, ops)) = data.split_first() else {
        return;
    };
    let size = 1u16 << (first % 6);
    let c = Container::unbacked();
    let mut vq = UsedRingHarness::new(&c, size).unwrap();
    let (desc, used) = (vq.desc_iova(), vq.device_iova());
    let mut flight: Vec<Chain> = Vec::new();
    let mut used_idx = 0u16;
    let mut broken: Option<UsedError> = None;
    for op in ops.chunks_exact(4) {
        match op[0] % 5 {
            0 => {
                let n = 1 + op[1] as usize % MAX_CHAIN;
                let write = op[2] & 1 == 1;
                let len = op[3] as u32 * 8;
                let free = vq.free();
                let Some(head) = vq.add(n, len, write) else {
                    assert!(n > free, "refused a chain of {n} with {free} free");
                    continue;
                };
                // Follow the chain as the device does, through the table.
                let mut descs = vec![head];
                loop {
                    let at = desc + 16 * *descs.last().unwrap() as u64;
                    let flags = u16::from_le_bytes(read(&c, at + 12));
                    if flags & 1 == 0 {
                        break;
                    }
                    descs.push(u16::from_le_bytes(read(&c, at + 14)));
                    assert!(descs.len() <= n, "a chain longer than what was added");
                }
                assert_eq!(descs.len(), n);
                for d in &descs {
                    assert!(*d < size);
                    assert!(
                        flight.iter().all(|f| !f.descs.contains(d)),
                        "descriptor {d} handed out while in flight"
                    );
                }
                assert_eq!(vq.free(), free - n);
                let writable = if write { len * n as u32 } else { 0 };
                flight.push(Chain {
                    head,
                    descs,
                    writable,
                });
            }
            1 => vq.publish(),
            2 => {
                // A used entry: a head in flight, or any id at all.
                let id = match flight.get(op[1] as usize % flight.len().max(1)) {
                    Some(f) if op[2] & 1 == 1 => f.head as u32,
                    _ => u32::from_le_bytes([op[1], op[2] >> 1, 0, op[2] & 0x80]),
                };
                let len = op[3] as u32 * 16;
                let at = used + 4 + 8 * (used_idx % size) as u64;
                c.dma_write(at, &id.to_le_bytes()).unwrap();
                c.dma_write(at + 4, &len.to_le_bytes()).unwrap();
                used_idx = used_idx.wrapping_add(1);
                c.dma_write(used + 2, &used_idx.to_le_bytes()).unwrap();
            }
            3 => {
                // The index moves by any amount, entries or not.
                used_idx = used_idx.wrapping_add(u16::from_le_bytes([op[1], op[2]]));
                c.dma_write(used + 2, &used_idx.to_le_bytes()).unwrap();
            }
            _ => {
                let free = vq.free();
                let got = vq.pop_used();
                if let Some(e) = broken {
                    assert_eq!(got, Some(Err(e)), "a broken queue stays broken");
                }
                match got {
                    None => assert_eq!(vq.free(), free),
                    Some(Ok(Used { head, len })) => {
                        let k = flight.iter().position(|f| f.head == head);
                        let chain =
                            flight.swap_remove(k.expect("handed back a chain not in flight"));
                        assert!(len <= chain.writable);
                        assert_eq!(vq.free(), free + chain.descs.len());
                    }
                    Some(Err(UsedError::TooLong { head, len, max })) => {
                        let k = flight.iter().position(|f| f.head == head);
                        let chain = flight.swap_remove(k.expect("freed a chain not in flight"));
                        assert!(len > max && max == chain.writable);
                        assert_eq!(vq.free(), free + chain.descs.len());
                    }
                    Some(Err(UsedError::NotInFlight { id })) => {
                        assert!(flight.iter().all(|f| f.head as u32 != id));
                        assert_eq!(vq.free(), free);
                    }
                    Some(Err(e @ UsedError::IndexJump { .. })) => {
                        assert_eq!(vq.free(), free);
                        assert_eq!(vq.broken(), Some(e));
                        broken = Some(e);
                    }
                }
            }
        }
        assert_eq!(vq.in_flight(), flight.len());
        let held: usize = flight.iter().map(|f| f.descs.len()).sum();
        assert_eq!(vq.free() + held, size as usize);
    }
});
