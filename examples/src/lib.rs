//! Shared pieces of the example programs: workloads and reports for the
//! benchmarks, and the kernel baselines they are compared with.
//!
//! The crate is compiled under the workspace's `unsafe_code = "deny"`; the
//! one module allowed `unsafe` is [`sys`] (io_uring submission and mapping a
//! block device for the baselines), each use behind a safe type.

pub mod cli;
pub mod dmaf;
pub mod forward;
pub mod gather;
pub mod kernel_copy;
pub mod packet;
pub mod perf;
pub mod progress;
pub mod signals;
pub mod stream;
pub mod sys;
pub mod syscount;
pub mod uring;
pub mod usage;
