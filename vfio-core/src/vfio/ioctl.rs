//! The raw VFIO ioctls (linux/vfio.h), each wrapped in a safe function that
//! returns `io::Result`. Callers add the context (which device, which group).
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use vfio_bindings::bindings::vfio::{
    vfio_device_info, vfio_iommu_type1_dma_map, vfio_iommu_type1_dma_unmap, vfio_irq_info,
    vfio_irq_set, vfio_region_info, VFIO_BASE, VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE,
    VFIO_TYPE,
};

/// The ioctl numbers, `_IO(VFIO_TYPE, VFIO_BASE + n)` in linux/vfio.h.
mod nr {
    pub const GET_API_VERSION: u32 = 0;
    pub const CHECK_EXTENSION: u32 = 1;
    pub const SET_IOMMU: u32 = 2;
    pub const GROUP_GET_STATUS: u32 = 3;
    pub const GROUP_SET_CONTAINER: u32 = 4;
    pub const GROUP_GET_DEVICE_FD: u32 = 6;
    pub const DEVICE_GET_INFO: u32 = 7;
    pub const DEVICE_GET_REGION_INFO: u32 = 8;
    pub const DEVICE_GET_IRQ_INFO: u32 = 9;
    pub const DEVICE_SET_IRQS: u32 = 10;
    pub const DEVICE_RESET: u32 = 11;
    pub const IOMMU_GET_INFO: u32 = 12;
    pub const IOMMU_MAP_DMA: u32 = 13;
    pub const IOMMU_UNMAP_DMA: u32 = 14;
}

fn request(n: u32) -> libc::c_ulong {
    nix::request_code_none!(VFIO_TYPE, VFIO_BASE + n) as libc::c_ulong
}

/// An ioctl whose argument is an integer, not a pointer.
fn ioctl_val(fd: BorrowedFd, n: u32, arg: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: the VFIO ioctls called through here take their argument by value
    // (an extension or IOMMU type number) or none; no memory is passed.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request(n), arg) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

/// An ioctl whose argument points at `len` bytes at `ptr` that the kernel reads and may write.
///
/// # Safety
/// `ptr` must be valid for reads and writes of the struct the ioctl `n` expects,
/// including the `argsz` it states.
unsafe fn ioctl_ptr(fd: BorrowedFd, n: u32, ptr: *mut libc::c_void) -> io::Result<libc::c_int> {
    // SAFETY: the caller guarantees `ptr` is valid for the ioctl's argument.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request(n), ptr) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

/// Calls ioctl `n` on a plain struct whose first field is `argsz`.
fn ioctl_struct<T>(fd: BorrowedFd, n: u32, arg: &mut T) -> io::Result<libc::c_int> {
    // SAFETY: `arg` is a live, exclusively borrowed `T`, the struct ioctl `n`
    // reads and fills; its argsz field is set by the caller to size_of::<T>().
    unsafe { ioctl_ptr(fd, n, (arg as *mut T).cast()) }
}

/// VFIO_GET_API_VERSION.
pub fn get_api_version(container: BorrowedFd) -> io::Result<i32> {
    ioctl_val(container, nr::GET_API_VERSION, 0)
}

/// VFIO_CHECK_EXTENSION: true when the extension (e.g. an IOMMU type) is supported.
pub fn check_extension(container: BorrowedFd, ext: u32) -> io::Result<bool> {
    ioctl_val(container, nr::CHECK_EXTENSION, ext.into()).map(|r| r > 0)
}

/// VFIO_SET_IOMMU.
pub fn set_iommu(container: BorrowedFd, iommu_type: u32) -> io::Result<()> {
    ioctl_val(container, nr::SET_IOMMU, iommu_type.into()).map(drop)
}

/// VFIO_GROUP_GET_STATUS: the group's flags (VIABLE, CONTAINER_SET).
pub fn group_status(group: BorrowedFd) -> io::Result<u32> {
    let mut status = vfio_bindings::bindings::vfio::vfio_group_status {
        argsz: size_of::<vfio_bindings::bindings::vfio::vfio_group_status>() as u32,
        flags: 0,
    };
    ioctl_struct(group, nr::GROUP_GET_STATUS, &mut status)?;
    Ok(status.flags)
}

/// VFIO_GROUP_SET_CONTAINER.
pub fn group_set_container(group: BorrowedFd, container: BorrowedFd) -> io::Result<()> {
    let mut fd: RawFd = container.as_raw_fd();
    // SAFETY: the ioctl reads one int, the container fd, from `&mut fd`.
    unsafe {
        ioctl_ptr(
            group,
            nr::GROUP_SET_CONTAINER,
            (&mut fd as *mut RawFd).cast(),
        )
    }
    .map(drop)
}

/// VFIO_GROUP_GET_DEVICE_FD for the device named `name` (its PCI address).
pub fn group_get_device_fd(group: BorrowedFd, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: the ioctl reads the NUL-terminated string `name`, which outlives the call.
    let fd = unsafe {
        ioctl_ptr(
            group,
            nr::GROUP_GET_DEVICE_FD,
            name.as_ptr() as *mut libc::c_void,
        )
    }?;
    // SAFETY: on success the ioctl returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// VFIO_DEVICE_GET_INFO.
pub fn device_info(device: BorrowedFd) -> io::Result<vfio_device_info> {
    let mut info = vfio_device_info {
        argsz: size_of::<vfio_device_info>() as u32,
        ..Default::default()
    };
    ioctl_struct(device, nr::DEVICE_GET_INFO, &mut info)?;
    Ok(info)
}

/// VFIO_DEVICE_GET_REGION_INFO for region `index` (capabilities not read).
pub fn region_info(device: BorrowedFd, index: u32) -> io::Result<vfio_region_info> {
    let mut info = vfio_region_info {
        argsz: size_of::<vfio_region_info>() as u32,
        index,
        ..Default::default()
    };
    ioctl_struct(device, nr::DEVICE_GET_REGION_INFO, &mut info)?;
    Ok(info)
}

/// VFIO_DEVICE_GET_IRQ_INFO for interrupt index `index`.
pub fn irq_info(device: BorrowedFd, index: u32) -> io::Result<vfio_irq_info> {
    let mut info = vfio_irq_info {
        argsz: size_of::<vfio_irq_info>() as u32,
        index,
        ..Default::default()
    };
    ioctl_struct(device, nr::DEVICE_GET_IRQ_INFO, &mut info)?;
    Ok(info)
}

/// VFIO_DEVICE_SET_IRQS: `flags` (DATA_* | ACTION_*) on vectors `start..start+count`
/// of `index`; with DATA_EVENTFD, `eventfds` holds one fd per vector (-1 to unset).
pub fn set_irqs(
    device: BorrowedFd,
    index: u32,
    flags: u32,
    start: u32,
    count: u32,
    eventfds: &[RawFd],
) -> io::Result<()> {
    let header = size_of::<vfio_irq_set>();
    let argsz = header + size_of_val(eventfds);
    // u32 words keep the buffer aligned for the header and the i32 fds. Up to
    // 64 vectors fit on the stack, so unmasking INTx after each interrupt
    // allocates nothing.
    let words = argsz.div_ceil(4);
    let mut stack = [0u32; 5 + 64];
    let mut heap = Vec::new();
    let buf: &mut [u32] = if words <= stack.len() {
        &mut stack[..words]
    } else {
        heap.resize(words, 0);
        &mut heap
    };
    buf[0] = argsz as u32;
    buf[1] = flags;
    buf[2] = index;
    buf[3] = start;
    buf[4] = count;
    for (slot, fd) in buf[header / 4..].iter_mut().zip(eventfds) {
        *slot = *fd as u32;
    }
    // SAFETY: `buf` holds a vfio_irq_set header (argsz, flags, index, start,
    // count: five u32 in that order) followed by `eventfds`, `argsz` bytes in all.
    unsafe { ioctl_ptr(device, nr::DEVICE_SET_IRQS, buf.as_mut_ptr().cast()) }.map(drop)
}

/// VFIO_DEVICE_RESET.
pub fn device_reset(device: BorrowedFd) -> io::Result<()> {
    ioctl_val(device, nr::DEVICE_RESET, 0).map(drop)
}

/// VFIO_IOMMU_GET_INFO with its capability chain: the raw bytes, `argsz` long.
pub fn iommu_info(container: BorrowedFd) -> io::Result<Vec<u8>> {
    let mut len = size_of::<vfio_bindings::bindings::vfio::vfio_iommu_type1_info>();
    for _ in 0..4 {
        let mut buf = vec![0u64; len.div_ceil(8)];
        // argsz is the first u32 of the struct (little-endian x86_64).
        buf[0] = len as u64;
        // SAFETY: `buf` is `len` bytes (rounded up), zeroed, starting with
        // argsz = len; the kernel writes at most argsz bytes.
        unsafe { ioctl_ptr(container, nr::IOMMU_GET_INFO, buf.as_mut_ptr().cast()) }?;
        let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).take(len).collect();
        let wanted = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if wanted <= len {
            return Ok(bytes);
        }
        len = wanted;
    }
    Err(io::Error::other(
        "VFIO_IOMMU_GET_INFO kept asking for a larger buffer",
    ))
}

/// VFIO_IOMMU_MAP_DMA, readable and writable by devices.
pub fn map_dma(container: BorrowedFd, vaddr: u64, iova: u64, size: u64) -> io::Result<()> {
    let mut map = vfio_iommu_type1_dma_map {
        argsz: size_of::<vfio_iommu_type1_dma_map>() as u32,
        flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        vaddr,
        iova,
        size,
    };
    ioctl_struct(container, nr::IOMMU_MAP_DMA, &mut map).map(drop)
}

/// VFIO_IOMMU_UNMAP_DMA; returns the number of bytes unmapped.
pub fn unmap_dma(container: BorrowedFd, iova: u64, size: u64) -> io::Result<u64> {
    let mut unmap = vfio_iommu_type1_dma_unmap {
        argsz: size_of::<vfio_iommu_type1_dma_unmap>() as u32,
        iova,
        size,
        ..Default::default()
    };
    ioctl_struct(container, nr::IOMMU_UNMAP_DMA, &mut unmap)?;
    Ok(unmap.size)
}
