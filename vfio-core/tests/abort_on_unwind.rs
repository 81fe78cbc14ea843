//! Issue 29: when a device can be neither proven stopped nor kept from bus
//! mastering, `Device::stop_dma` runs the driver's leak step behind
//! `AbortOnUnwind`: a panic there would free memory the device may still
//! write, so the process aborts instead. A child process (this test binary
//! run again, on a device model whose Bus Master Enable bit sticks) runs
//! the scenario; the parent checks that it died of SIGABRT with the guard's
//! message. Runs on a container of device models (the `testing` feature).
#![cfg(feature = "testing")]

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::{Arc, Mutex};

use vfio_core::dma::{Backing, DmaMemory};
use vfio_core::mmio::{RegisterFile, RegisterModel, SharedModel};
use vfio_core::vfio::{Container, Device};

/// The environment variable that makes the test run its scenario as the child.
const CHILD: &str = "VFIO_CORE_ABORT_ON_UNWIND_CHILD";

/// Config space whose command register ignores writes: memory decoding and
/// bus mastering stay on.
#[derive(Debug)]
struct StuckMaster(RegisterFile);

impl RegisterModel for StuckMaster {
    fn read(&mut self, offset: usize, size: usize) -> u64 {
        self.0.read(offset, size)
    }
    fn write(&mut self, offset: usize, size: usize, value: u64) {
        if !(4..6).contains(&offset) {
            self.0.write(offset, size, value);
        }
    }
}

fn child() {
    let container = Container::unbacked();
    let mut space = RegisterFile::new(256);
    space.set(4, 2, 0x6);
    let config: SharedModel = Arc::new(Mutex::new(StuckMaster(space)));
    let addr = "00:04.0".parse().unwrap();
    let device = Device::from_models(&container, addr, (256, config), vec![]).unwrap();
    let ring = DmaMemory::new(&container, 4096, Backing::Pages).unwrap();
    device.stop_dma(
        "a device that cannot be stopped",
        || Err::<(), _>("its reset does not complete"),
        || {
            ring.leak_on_drop();
            panic!("the leak step panics");
        },
    );
    eprintln!("child: stop_dma returned");
}

#[test]
fn a_leak_step_that_panics_aborts_the_process() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_leak_step_that_panics_aborts_the_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .expect("run the test binary again");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(6), "SIGABRT; stderr:\n{stderr}");
    assert!(stderr.contains("the leak step panics"), "{stderr}");
    assert!(
        stderr.contains("a panic while leaking the memory of a device that could not be stopped")
            && stderr.contains("aborting"),
        "the guard's message; stderr:\n{stderr}"
    );
    assert!(!stderr.contains("child: stop_dma returned"), "{stderr}");
}
