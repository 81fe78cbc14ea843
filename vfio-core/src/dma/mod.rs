//! DMA memory: pinned host memory mapped into the IOMMU, the IOVA allocator, and buffer pools.

pub mod iova;
mod memory;
mod pool;

pub use iova::IovaAllocator;
pub use memory::{Backing, DmaMemory, DmaWord, PageKind};
pub use pool::{Buffer, BufferPool};
