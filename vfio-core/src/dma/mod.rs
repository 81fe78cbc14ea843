//! DMA memory: pinned host memory mapped into the IOMMU, the IOVA allocator, and buffer pools.

pub mod iova;
mod memory;
mod pool;

pub use iova::IovaAllocator;
pub use memory::{Backing, DmaMemory, DmaWord, PageKind};
pub use pool::{Buffer, BufferPool, SharedBuffer};

/// Memory a device can reach: an IOVA and a length. Drivers take any of these
/// as the target of a transfer, so data lands where the caller wants it (a pool
/// buffer another device will use next, or a large region) with no copy.
pub trait DmaTarget {
    /// IOVA of byte 0.
    fn iova(&self) -> u64;
    /// Length in bytes.
    fn dma_len(&self) -> usize;
}

impl DmaTarget for DmaMemory {
    fn iova(&self) -> u64 {
        DmaMemory::iova(self)
    }
    fn dma_len(&self) -> usize {
        self.len()
    }
}

impl DmaTarget for Buffer {
    fn iova(&self) -> u64 {
        Buffer::iova(self)
    }
    fn dma_len(&self) -> usize {
        self.capacity()
    }
}

impl DmaTarget for SharedBuffer {
    fn iova(&self) -> u64 {
        SharedBuffer::iova(self)
    }
    fn dma_len(&self) -> usize {
        self.capacity()
    }
}
