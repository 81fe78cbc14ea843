//! A fixed-size buffer pool (the mempool of DPDK and ixy).

use std::sync::Arc;

use crate::vfio::Container;
use crate::Result;

/// `count` buffers of `buf_size` bytes in one DMA region; alloc and free are O(1)
/// with no system call and no heap allocation.
#[derive(Debug)]
pub struct BufferPool {}

/// One buffer of a pool. Goes back to its pool when dropped.
#[derive(Debug)]
pub struct Buffer {}

impl BufferPool {
    /// Allocates the pool's memory and maps it for DMA.
    pub fn new(
        _container: &Arc<Container>,
        _buf_size: usize,
        _count: usize,
    ) -> Result<Arc<BufferPool>> {
        todo!()
    }
    /// Takes a free buffer, or None when all are in use.
    pub fn alloc(self: &Arc<Self>) -> Option<Buffer> {
        todo!()
    }
    /// Free buffers now.
    pub fn free_count(&self) -> usize {
        todo!()
    }
    /// Total buffers.
    pub fn capacity(&self) -> usize {
        todo!()
    }
    /// Bytes per buffer.
    pub fn buf_size(&self) -> usize {
        todo!()
    }
}

impl Buffer {
    /// IOVA of byte 0 of this buffer.
    pub fn iova(&self) -> u64 {
        todo!()
    }
    /// Virtual address of byte 0.
    pub fn as_ptr(&self) -> *const u8 {
        todo!()
    }
    /// The buffer's bytes.
    pub fn as_slice(&self) -> &[u8] {
        todo!()
    }
    /// The buffer's bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        todo!()
    }
}
