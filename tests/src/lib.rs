//! The QEMU test machine.
