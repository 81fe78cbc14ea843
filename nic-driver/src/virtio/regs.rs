//! virtio 1.x over PCI and the network device: where the registers are and
//! what their bits mean. Sections refer to the virtio specification v1.2.

/// Red Hat, Inc.: virtio's PCI vendor.
pub const VENDOR: u16 = 0x1af4;
/// Network device, modern (1.x) PCI ID: 0x1040 + device type 1 (4.1.2.1).
pub const DEVICE_IDS: &[u16] = &[0x1041];

/// PCI configuration space: status register, its capability-list bit, the
/// capability pointer, and the vendor-specific capability ID (4.1.4).
pub mod pci {
    pub const STATUS: u16 = 0x06;
    pub const STATUS_CAP_LIST: u16 = 1 << 4;
    pub const CAP_PTR: u16 = 0x34;
    pub const CAP_ID_VNDR: u8 = 0x09;
}

/// A `virtio_pci_cap` (4.1.4): where a configuration structure lives.
pub mod cap {
    /// `cap_len`: bytes of the capability (16; 20 for the notification one).
    pub const CAP_LEN: u16 = 2;
    pub const CFG_TYPE: u16 = 3;
    pub const BAR: u16 = 4;
    pub const OFFSET: u16 = 8;
    pub const LENGTH: u16 = 12;
    /// `notify_off_multiplier`, after the notification capability (4.1.4.4).
    pub const NOTIFY_OFF_MULTIPLIER: u16 = 16;
    /// `cap_len` of a `virtio_pci_cap` and of a `virtio_pci_notify_cap`.
    pub const SIZE: u8 = 16;
    pub const NOTIFY_SIZE: u8 = 20;
    /// `cfg_type` values.
    pub const COMMON: u8 = 1;
    pub const NOTIFY: u8 = 2;
    pub const DEVICE: u8 = 4;
}

/// `virtio_pci_common_cfg` (4.1.4.3), offsets in the common structure.
pub mod common {
    pub const DEVICE_FEATURE_SELECT: usize = 0x00;
    pub const DEVICE_FEATURE: usize = 0x04;
    pub const DRIVER_FEATURE_SELECT: usize = 0x08;
    pub const DRIVER_FEATURE: usize = 0x0c;
    pub const MSIX_CONFIG: usize = 0x10;
    pub const NUM_QUEUES: usize = 0x12;
    pub const DEVICE_STATUS: usize = 0x14;
    /// Changes whenever the device configuration changes (4.1.4.3, 2.5.1).
    pub const CONFIG_GENERATION: usize = 0x15;
    pub const QUEUE_SELECT: usize = 0x16;
    pub const QUEUE_SIZE: usize = 0x18;
    pub const QUEUE_MSIX_VECTOR: usize = 0x1a;
    pub const QUEUE_ENABLE: usize = 0x1c;
    /// "No vector" for the MSI-X vector fields.
    pub const NO_VECTOR: u16 = 0xffff;
    pub const QUEUE_NOTIFY_OFF: usize = 0x1e;
    pub const QUEUE_DESC: usize = 0x20;
    pub const QUEUE_DRIVER: usize = 0x28;
    pub const QUEUE_DEVICE: usize = 0x30;
    /// Bytes of the structure up to the end of QUEUE_DEVICE.
    pub const SIZE: usize = 0x38;
}

/// Device status bits (2.1).
pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const NEEDS_RESET: u8 = 0x40;
    pub const FAILED: u8 = 0x80;
}

/// Feature bits (5.1.3, 6).
pub mod feature {
    /// The device completes a partial checksum the driver asks for.
    pub const CSUM: u64 = 1 << 0;
    /// The device has a MAC address in its configuration.
    pub const MAC: u64 = 1 << 5;
    /// The configuration has a link status.
    pub const STATUS: u64 = 1 << 16;
    /// virtio 1.x (little-endian, the 12-byte net header).
    pub const VERSION_1: u64 = 1 << 32;
    /// The device's DMA goes through the platform's IOMMU.
    pub const ACCESS_PLATFORM: u64 = 1 << 33;
}

/// `virtio_net_config` (5.1.4).
pub mod net_config {
    pub const MAC: usize = 0;
    pub const STATUS: usize = 6;
    pub const LINK_UP: u16 = 1;
    /// Bytes the driver reads: up to the end of MAC, and of STATUS.
    pub const MAC_END: usize = 6;
    pub const STATUS_END: usize = 8;
}

/// `virtio_net_hdr` in front of every frame (5.1.6), 12 bytes with VERSION_1.
pub mod hdr {
    pub const SIZE: usize = 12;
    pub const FLAGS: usize = 0;
    pub const NEEDS_CSUM: u8 = 1;
    pub const CSUM_START: usize = 6;
    pub const CSUM_OFFSET: usize = 8;
}

/// Split virtqueues (2.7): descriptors, and the flags of the rings.
pub mod ring {
    pub const DESC_SIZE: usize = 16;
    pub const DESC_F_NEXT: u16 = 1;
    pub const DESC_F_WRITE: u16 = 2;
    /// In the driver (available) ring: do not interrupt me.
    pub const AVAIL_F_NO_INTERRUPT: u16 = 1;
    /// In the device (used) ring: no need to notify me.
    pub const USED_F_NO_NOTIFY: u16 = 1;
}

/// Queue numbers of a single-queue-pair network device (5.1.2).
pub const RX_QUEUE: u16 = 0;
pub const TX_QUEUE: u16 = 1;
