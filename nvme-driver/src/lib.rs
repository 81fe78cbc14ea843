//! A userspace NVMe driver on vfio-core.
//!
//! So far this crate holds the controller's register map ([`regs`]); the
//! driver itself (bring-up, admin and I/O queue pairs) is the NVMe issue's work.

pub mod regs;
