//! Two devices with different DMA address limits in one container: one that
//! reaches every address, one that reaches 28 bits (as QEMU's `edu` does).
//! Runs on a container of device models (the `testing` feature), whose IOVAs
//! come from the same allocator as a real container's, 1 MiB to 2^48 - 1.
#![cfg(feature = "testing")]

use vfio_core::dma::{dma_mask, Backing, BufferPool, DmaMemory, DmaTarget};
use vfio_core::vfio::Container;
use vfio_core::Error;

const MIB: usize = 1 << 20;
const LIMIT: u64 = dma_mask(28);

fn last_byte(target: &impl DmaTarget) -> u64 {
    target.iova() + target.dma_len() as u64 - 1
}

#[test]
fn a_28_bit_device_gets_memory_below_its_limit_beside_large_unlimited_memory() {
    let c = Container::unbacked();
    // The unlimited device's large region first: 2 MiB-aligned, so it leaves
    // 1 MiB..2 MiB free and ends at 252 MiB, 4 MiB short of the limit.
    let big = DmaMemory::new(&c, 250 * MIB, Backing::Pages).unwrap();
    assert_eq!(big.iova(), 2 << 20);

    let ring = DmaMemory::new_below(&c, 4096, Backing::Auto, LIMIT).unwrap();
    assert_eq!(ring.iova(), 1 << 20, "the lowest fit: the hole below `big`");
    assert!(last_byte(&ring) <= LIMIT);

    let pool = BufferPool::new_below(&c, 2048, 1024, LIMIT).unwrap();
    let mut bufs = Vec::new();
    assert_eq!(pool.alloc_batch(1024, &mut bufs), 1024);
    for b in &bufs {
        assert!(last_byte(b) <= LIMIT, "buffer at {:#x}", b.iova());
        assert_eq!(b.dma_range_below(&c, 0, 2048, LIMIT).unwrap(), b.iova());
    }
    assert_eq!(pool.iova(), 252 << 20, "right after `big`, 2 MiB-aligned");

    // The unlimited device's next region lands above the limit.
    let more = DmaMemory::new(&c, 8 * MIB, Backing::Pages).unwrap();
    assert_eq!(more.iova(), 254 << 20);
    assert!(last_byte(&more) > LIMIT);
    assert_eq!(
        more.dma_range_below(&c, 0, 4096, LIMIT).unwrap(),
        more.iova(),
        "its first page is below the limit"
    );
    let refused = more
        .dma_range_below(&c, 0, more.len(), LIMIT)
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("0xfffffff") && refused.contains("28 address bits"),
        "{refused}"
    );
    assert!(
        more.dma_range(&c, 0, more.len()).is_ok(),
        "no limit, no error"
    );
    assert_eq!(c.mapping_count(), 4);
}

#[test]
fn no_room_below_the_limit_is_an_error_that_names_size_limit_and_fix() {
    let c = Container::unbacked();
    let big = DmaMemory::new(&c, 250 * MIB, Backing::Pages).unwrap();
    let _pool = BufferPool::new_below(&c, 2048, 1024, LIMIT).unwrap();
    let mappings = c.mapping_count();

    let e = DmaMemory::new_below(&c, 4 * MIB, Backing::Pages, LIMIT).unwrap_err();
    assert!(
        matches!(e, Error::DmaLimitExhausted { size, limit } if size == 4 << 20 && limit == LIMIT),
        "{e:?}"
    );
    let text = e.to_string();
    for part in [
        "4194304 bytes (0x400000)",
        "0xfffffff (28 address bits)",
        "before large regions and pools",
        "free some DMA memory",
    ] {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
    assert_eq!(c.mapping_count(), mappings, "nothing was mapped");
    assert!(matches!(
        BufferPool::new_below(&c, 4096, 1024, LIMIT),
        Err(Error::DmaLimitExhausted { .. })
    ));
    // Unlimited, the same request fits (above the limit).
    assert!(last_byte(&DmaMemory::new(&c, 4 * MIB, Backing::Pages).unwrap()) > LIMIT);

    // Freeing the large region makes room: its IOVAs are reused.
    drop(big);
    let low = DmaMemory::new_below(&c, 4 * MIB, Backing::Pages, LIMIT).unwrap();
    assert_eq!(low.iova(), 2 << 20);
}

#[test]
fn a_limit_below_every_iova_fits_nothing() {
    let c = Container::unbacked();
    for limit in [0, dma_mask(12), dma_mask(20)] {
        let e = DmaMemory::new_below(&c, 4096, Backing::Pages, limit).unwrap_err();
        assert!(
            matches!(e, Error::DmaLimitExhausted { size: 4096, limit: l } if l == limit),
            "{e:?}"
        );
    }
    assert_eq!(c.mapping_count(), 0);
    let m = DmaMemory::new_below(&c, 4096, Backing::Pages, dma_mask(21)).unwrap();
    assert_eq!(m.iova(), 1 << 20);
}

#[test]
fn dma_mask_is_the_highest_address_of_so_many_bits() {
    assert_eq!(dma_mask(0), 0);
    assert_eq!(dma_mask(1), 1);
    assert_eq!(dma_mask(28), 0x0fff_ffff);
    assert_eq!(dma_mask(32), 0xffff_ffff);
    assert_eq!(dma_mask(48), 0xffff_ffff_ffff);
    assert_eq!(dma_mask(63), u64::MAX >> 1);
    assert_eq!(dma_mask(64), u64::MAX);
    assert_eq!(dma_mask(200), u64::MAX);
}
