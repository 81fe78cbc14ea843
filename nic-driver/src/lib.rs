//! NIC drivers on vfio-core.
//!
//! So far this crate holds the Intel e1000 register map ([`e1000::regs`]); the
//! `NetDevice` trait and the drivers are the NIC issue's work.

pub mod e1000;
