//! Pinned host memory mapped into the IOMMU.
#![allow(unsafe_code)]

use std::sync::Arc;

use crate::vfio::Container;
use crate::Result;

/// Which pages back DMA memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// Hugepages (1 GiB where the size and the system allow, else 2 MiB);
    /// ordinary pages with a logged warning when none are free.
    Auto,
    /// Hugepages or an error.
    Hugepages,
    /// Ordinary 4 KiB pages.
    Pages,
}

/// The pages actually used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageKind {
    Huge1G,
    Huge2M,
    Normal,
}

/// Plain integer types that may be read from device-written memory with any bit pattern.
pub trait DmaWord: Copy + sealed::Sealed {}
mod sealed {
    pub trait Sealed {}
}
macro_rules! dma_word {
    ($($t:ty),*) => { $(impl sealed::Sealed for $t {} impl DmaWord for $t {})* };
}
dma_word!(u8, u16, u32, u64);

/// Pinned memory mapped into a container's IOMMU at an IOVA. Unmapped and freed on drop.
#[derive(Debug)]
pub struct DmaMemory {}

impl DmaMemory {
    /// Allocates `size` bytes (rounded up to the page size) and maps them for DMA.
    pub fn new(_container: &Arc<Container>, _size: usize, _backing: Backing) -> Result<DmaMemory> {
        todo!()
    }
    /// The IOVA devices use for byte 0.
    pub fn iova(&self) -> u64 {
        todo!()
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        todo!()
    }
    /// True when empty (never, for an allocated region).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The pages backing this memory.
    pub fn page_kind(&self) -> PageKind {
        todo!()
    }
    /// The virtual address of byte 0.
    pub fn as_ptr(&self) -> *const u8 {
        todo!()
    }
    /// Volatile read of a word at `offset` (aligned). Panics when out of range.
    pub fn read<T: DmaWord>(&self, _offset: usize) -> T {
        todo!()
    }
    /// Volatile write of a word at `offset` (aligned). Panics when out of range.
    pub fn write<T: DmaWord>(&self, _offset: usize, _value: T) {
        todo!()
    }
    /// Volatile copy out of the memory.
    pub fn read_bytes(&self, _offset: usize, _out: &mut [u8]) {
        todo!()
    }
    /// Volatile copy into the memory.
    pub fn write_bytes(&self, _offset: usize, _data: &[u8]) {
        todo!()
    }
}
