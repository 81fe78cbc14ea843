//! NIC drivers on vfio-core. Not written yet: see issue "NIC driver".
