//! `Interrupts::wait` is on drivers' receive paths (nic-echo in interrupt
//! mode waits between bursts), which must not allocate: counted here by
//! allocation_counter's global allocator, on interrupts backed by plain
//! eventfds (the `testing` feature), for a wait that fires and one that
//! times out. (`wait_any` is tested in the module's own tests.)
#![cfg(feature = "testing")]

use std::time::Duration;
use vfio_core::vfio::{Interrupts, IrqKind, Wait};

/// Allocations made by `f` (allocation_counter counts this thread's).
fn allocations(f: impl FnOnce()) -> u64 {
    allocation_counter::measure(f).count_total
}

#[test]
fn wait_does_not_allocate_when_it_fires_or_times_out() {
    let irqs = Interrupts::unbacked("00:04.0".parse().unwrap(), IrqKind::Msix, 2).unwrap();
    irqs.trigger(1, 3).unwrap();
    let mut results = [Wait::TimedOut; 3];
    let n = allocations(|| {
        results[0] = irqs.wait(1, Duration::from_millis(50)).unwrap();
        results[1] = irqs.wait(1, Duration::ZERO).unwrap();
        results[2] = irqs.wait(0, Duration::from_micros(200)).unwrap();
    });
    assert_eq!(results, [Wait::Fired(3), Wait::TimedOut, Wait::TimedOut]);
    assert_eq!(n, 0, "Interrupts::wait allocated {n} times");
}
