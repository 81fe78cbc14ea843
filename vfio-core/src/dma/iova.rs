//! An allocator of IOVA ranges inside the IOMMU's valid ranges.

use std::ops::RangeInclusive;

use crate::Result;

/// Hands out aligned IOVA ranges from a set of valid ranges; freed ranges are reused.
#[derive(Debug)]
pub struct IovaAllocator {}

impl IovaAllocator {
    /// An allocator over `ranges` (inclusive, as VFIO reports them).
    pub fn new(_ranges: &[RangeInclusive<u64>]) -> IovaAllocator {
        todo!()
    }
    /// Allocates `size` bytes aligned to `align` (a power of two).
    pub fn alloc(&mut self, _size: u64, _align: u64) -> Result<u64> {
        todo!()
    }
    /// Returns a range given by `alloc`.
    pub fn free(&mut self, _iova: u64, _size: u64) {
        todo!()
    }
}
