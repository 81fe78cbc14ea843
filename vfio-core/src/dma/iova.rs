//! An allocator of IOVA ranges inside the IOMMU's valid ranges.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use crate::{Error, Result};

/// Hands out aligned IOVA ranges from a set of valid ranges (first fit);
/// freed ranges are coalesced with their free neighbours and reused. The
/// container's: on x86 its valid ranges skip the MSI window at 0xfee00000.
#[derive(Debug, Default)]
pub(crate) struct IovaAllocator {
    /// Free ranges: start -> inclusive end; disjoint and never adjacent.
    free: BTreeMap<u64, u64>,
    allocated: u64,
}

impl IovaAllocator {
    /// An allocator over `ranges` (inclusive, as VFIO reports them; may be
    /// unsorted or overlap).
    pub(crate) fn new(ranges: &[RangeInclusive<u64>]) -> IovaAllocator {
        let mut a = IovaAllocator::default();
        for r in ranges.iter().filter(|r| !r.is_empty()) {
            a.insert_free(*r.start(), *r.end());
        }
        a
    }

    /// Allocates `size` bytes aligned to `align` (a power of two): the
    /// lowest aligned start in the first free range (lowest address first)
    /// that holds them.
    pub(crate) fn alloc(&mut self, size: u64, align: u64) -> Result<u64> {
        self.alloc_in(size, align, u64::MAX)
            .unwrap_or(Err(Error::IovaExhausted { size }))
    }

    /// As [`IovaAllocator::alloc`], but the whole range lies at or below
    /// `limit` (the highest address a device reaches, inclusive): first fit
    /// among the free ranges up to `limit`, each cut off at `limit`.
    pub(crate) fn alloc_below(&mut self, size: u64, align: u64, limit: u64) -> Result<u64> {
        self.alloc_in(size, align, limit)
            .unwrap_or(Err(Error::DmaLimitExhausted { size, limit }))
    }

    /// First fit of `size` bytes aligned to `align` ending at or below
    /// `limit`; None when nothing fits (and then nothing changed).
    fn alloc_in(&mut self, size: u64, align: u64, limit: u64) -> Option<Result<u64>> {
        if size == 0 || !align.is_power_of_two() {
            return Some(Err(Error::InvalidArgument(format!("IOVA allocation of {size} bytes aligned to {align}: size must be > 0, alignment a power of two"))));
        }
        let (start, end, iova) = self
            .free
            .range(..=limit)
            .find_map(|(&s, &e)| fit(s, e.min(limit), size, align).map(|iova| (s, e, iova)))?;
        self.free.remove(&start);
        if start < iova {
            self.free.insert(start, iova - 1);
        }
        let last = iova + (size - 1);
        if last < end {
            self.free.insert(last + 1, end);
        }
        self.allocated += size;
        Some(Ok(iova))
    }

    /// Returns a range given by [`IovaAllocator::alloc`]. A range that is not
    /// allocated (a double free) is ignored with a warning.
    pub(crate) fn free(&mut self, iova: u64, size: u64) {
        let Some(last) = size.checked_sub(1).and_then(|s| iova.checked_add(s)) else {
            log::warn!("IOVA free of {size} bytes at {iova:#x} ignored: empty or past the end of the address space");
            return;
        };
        if self.overlaps_free(iova, last) {
            log::warn!("IOVA free of {iova:#x}..={last:#x} ignored: part of it is free already");
            return;
        }
        self.insert_free(iova, last);
        self.allocated = self.allocated.saturating_sub(size);
    }

    /// Bytes allocated now.
    #[cfg(test)]
    fn allocated_bytes(&self) -> u64 {
        self.allocated
    }

    /// The free ranges, in order.
    #[cfg(test)]
    fn free_ranges(&self) -> Vec<RangeInclusive<u64>> {
        self.free.iter().map(|(&s, &e)| s..=e).collect()
    }

    fn overlaps_free(&self, start: u64, last: u64) -> bool {
        let before = self.free.range(..=last).next_back();
        before.is_some_and(|(_, &e)| e >= start)
    }

    /// Adds `start..=last` to the free set, merging with overlapping or adjacent ranges.
    fn insert_free(&mut self, mut start: u64, mut last: u64) {
        while let Some((&s, &e)) = self.free.range(..=last.saturating_add(1)).next_back() {
            if e.saturating_add(1) < start {
                break;
            }
            self.free.remove(&s);
            start = start.min(s);
            last = last.max(e);
        }
        self.free.insert(start, last);
    }
}

/// The first `align`-aligned start of `size` bytes inside `start..=end`.
fn fit(start: u64, end: u64, size: u64, align: u64) -> Option<u64> {
    let iova = start.checked_add(align - 1)? & !(align - 1);
    let last = iova.checked_add(size - 1)?;
    (last <= end).then_some(iova)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    /// x86 with its MSI window as a hole.
    fn x86() -> IovaAllocator {
        IovaAllocator::new(&[MIB..=0xfedf_ffff, 0xfef0_0000..=0xffff_ffff_ffff])
    }

    #[test]
    fn aligned_and_in_range() {
        let mut a = x86();
        let x = a.alloc(4096, 4096).unwrap();
        assert_eq!(x, MIB);
        let y = a.alloc(2 * MIB, 2 * MIB).unwrap();
        assert_eq!(y % (2 * MIB), 0);
        assert!(y >= x + 4096);
        assert_eq!(a.allocated_bytes(), 4096 + 2 * MIB);
    }

    #[test]
    fn nothing_lands_in_a_hole() {
        let mut a = IovaAllocator::new(&[0x1000..=0x3fff, 0x8000..=0xbfff]);
        let x = a.alloc(0x4000, 0x1000).unwrap();
        assert_eq!(
            x, 0x8000,
            "0x1000..=0x3fff is too small, the hole 0x4000..0x7fff is skipped"
        );
        assert!(matches!(
            a.alloc(0x4000, 0x1000),
            Err(Error::IovaExhausted { size: 0x4000 })
        ));
        assert_eq!(a.alloc(0x3000, 0x1000).unwrap(), 0x1000);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let mut a = x86();
        assert!(matches!(a.alloc(0, 4096), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            a.alloc(4096, 3000),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            a.alloc(u64::MAX, 4096),
            Err(Error::IovaExhausted { .. })
        ));
    }

    #[test]
    fn free_coalesces_back_to_the_start() {
        let mut a = x86();
        let before = a.free_ranges();
        let xs: Vec<u64> = (0..8).map(|i| a.alloc(4096 << i, 4096).unwrap()).collect();
        for (i, x) in xs.iter().enumerate().rev().step_by(2) {
            a.free(*x, 4096 << i);
        }
        for (i, x) in xs.iter().enumerate().step_by(2) {
            a.free(*x, 4096 << i);
        }
        assert_eq!(a.free_ranges(), before);
        assert_eq!(a.allocated_bytes(), 0);
    }

    #[test]
    fn double_free_is_ignored() {
        let mut a = x86();
        let x = a.alloc(8192, 4096).unwrap();
        a.free(x, 8192);
        let ranges = a.free_ranges();
        a.free(x, 8192);
        a.free(x + 4096, 4096);
        assert_eq!(a.free_ranges(), ranges);
    }

    #[test]
    fn top_of_the_address_space() {
        let mut a = IovaAllocator::new(&[u64::MAX - 0xffff..=u64::MAX]);
        let x = a.alloc(0x10000, 0x1000).unwrap();
        assert_eq!(x, u64::MAX - 0xffff);
        a.free(x, 0x10000);
        assert_eq!(a.free_ranges(), vec![u64::MAX - 0xffff..=u64::MAX]);
    }

    #[test]
    fn overlapping_input_ranges_merge() {
        let a = IovaAllocator::new(&[0x5000..=0x8fff, 0x1000..=0x5fff, 0x9000..=0x9fff]);
        assert_eq!(a.free_ranges(), vec![0x1000..=0x9fff]);
    }

    #[test]
    fn below_a_limit_a_straddling_range_is_cut_at_the_limit() {
        let mut a = IovaAllocator::new(&[0x1000..=0x3fff, 0x8000..=0xffff]);
        let limit = 0x9fff;
        assert_eq!(a.alloc_below(0x2000, 0x1000, limit).unwrap(), 0x1000);
        assert_eq!(
            a.alloc_below(0x2000, 0x1000, limit).unwrap(),
            0x8000,
            "0x3000..=0x3fff is too small; 0x8000..=0x9fff is the part of the next range under the limit"
        );
        assert_eq!(a.alloc_below(0x1000, 0x1000, limit).unwrap(), 0x3000);
        assert!(matches!(
            a.alloc_below(0x1000, 0x1000, limit),
            Err(Error::DmaLimitExhausted {
                size: 0x1000,
                limit: 0x9fff
            })
        ));
        assert_eq!(
            a.free_ranges(),
            vec![0xa000..=0xffff],
            "what lies above the limit stays free"
        );
        assert_eq!(a.alloc(0x1000, 0x1000).unwrap(), 0xa000);
    }

    #[test]
    fn below_a_limit_an_exact_fit_ends_at_the_limit() {
        let mut a = IovaAllocator::new(&[0x1000..=0x4fff]);
        assert!(matches!(
            a.alloc_below(0x4000, 0x1000, 0x4ffe),
            Err(Error::DmaLimitExhausted { .. })
        ));
        assert_eq!(a.alloc_below(0x4000, 0x1000, 0x4fff).unwrap(), 0x1000);
        assert!(a.free_ranges().is_empty());
        a.free(0x1000, 0x4000);
        assert_eq!(a.free_ranges(), vec![0x1000..=0x4fff]);
    }

    #[test]
    fn a_limit_below_every_range_fits_nothing_and_changes_nothing() {
        let mut a = x86();
        let before = a.free_ranges();
        for limit in [0, 0xfff, MIB - 1] {
            assert!(matches!(
                a.alloc_below(4096, 4096, limit),
                Err(Error::DmaLimitExhausted { size: 4096, limit: l }) if l == limit
            ));
        }
        assert_eq!(a.free_ranges(), before);
        assert_eq!(a.allocated_bytes(), 0);
        assert_eq!(a.alloc_below(4096, 4096, MIB + 4095).unwrap(), MIB);
    }

    #[test]
    fn below_4_gib_the_msi_window_is_skipped() {
        let mut a = x86();
        a.alloc(0xfed0_0000 - MIB, 4096).unwrap();
        let x = a.alloc_below(2 * MIB, 2 * MIB, 0xffff_ffff).unwrap();
        assert_eq!(
            x, 0xff00_0000,
            "the first 2 MiB-aligned fit past the window"
        );
        assert!(a.alloc_below(16 * MIB, 4096, 0xffff_ffff).is_err());
        let y = a.alloc(16 * MIB, 4096).unwrap();
        assert_eq!(y, 0xff20_0000, "without the limit: the same free range");
        assert!(y + 16 * MIB - 1 > 0xffff_ffff, "which reaches past 4 GiB");
    }

    #[test]
    fn alloc_is_alloc_below_the_top_of_the_address_space() {
        let (mut a, mut b) = (x86(), x86());
        for i in 0..64u64 {
            let (size, align) = (4096 * (1 + i % 7), 4096 << (i % 3));
            let x = a.alloc(size, align).unwrap();
            assert_eq!(b.alloc_below(size, align, u64::MAX).unwrap(), x);
            if i % 4 == 0 {
                a.free(x, size);
                b.free(x, size);
            }
        }
        assert_eq!(a.free_ranges(), b.free_ranges());
        assert!(matches!(
            a.alloc(1 << 60, 4096),
            Err(Error::IovaExhausted { size }) if size == 1 << 60
        ));
        assert!(matches!(
            a.alloc_below(0, 4096, u64::MAX),
            Err(Error::InvalidArgument(_))
        ));
    }

    /// Random allocs and frees against a model: allocations never overlap,
    /// never leave the valid ranges, and all frees restore the start.
    #[test]
    fn random_sequence_matches_a_model() {
        let valid = [MIB..=64 * MIB - 1, 80 * MIB..=128 * MIB - 1];
        let mut a = IovaAllocator::new(&valid);
        let start = a.free_ranges();
        let mut live: Vec<(u64, u64)> = Vec::new();
        let mut x = 0x1234_5678_9abc_def1u64;
        // Miri interprets every step: fewer of them there (the allocator has
        // no unsafe code; Miri runs it for the pool's sake).
        let steps = if cfg!(miri) { 300 } else { 5000 };
        for _ in 0..steps {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(3) && !live.is_empty() {
                let (iova, size) = live.swap_remove((x >> 8) as usize % live.len());
                a.free(iova, size);
                continue;
            }
            let size = 4096 * (1 + (x >> 20) % 64);
            let align = 4096 << ((x >> 40) % 4);
            if let Ok(iova) = a.alloc(size, align) {
                assert_eq!(iova % align, 0);
                assert!(valid
                    .iter()
                    .any(|r| r.contains(&iova) && r.contains(&(iova + size - 1))));
                assert!(
                    live.iter().all(|&(o, s)| iova + size <= o || o + s <= iova),
                    "overlap at {iova:#x}"
                );
                live.push((iova, size));
            }
        }
        for (iova, size) in live.drain(..) {
            a.free(iova, size);
        }
        assert_eq!(a.free_ranges(), start);
    }
}
