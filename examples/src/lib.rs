//! Shared pieces of the example programs: workloads and reports for the
//! benchmarks, and the kernel baselines they are compared with.

pub mod cli;
pub mod dmaf;
pub mod kernel_copy;
pub mod packet;
pub mod perf;
pub mod progress;
pub mod signals;
pub mod stream;
pub mod uring;
pub mod usage;
