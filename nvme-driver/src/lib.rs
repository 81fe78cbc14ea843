//! A userspace NVMe driver on vfio-core. Not written yet: see issue "NVMe driver".
