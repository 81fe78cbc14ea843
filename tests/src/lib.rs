//! # The QEMU test machine
//!
//! A guest with an emulated Intel IOMMU, NVMe controllers and NICs, booted
//! under TCG in seconds, in which the project's binaries run exactly as on a
//! server. The host side of a test writes the disk images, holds the far end of
//! each NIC (a UDP socket on 127.0.0.1 carrying raw Ethernet frames), boots the
//! guest with a script of steps, and checks what crossed the devices.
//!
//! - [`provision`]: QEMU, busybox, a Debian kernel and its modules (cached).
//! - [`image`]: the guest's initramfs: busybox, the vfio/nvme/e1000 modules,
//!   the project's binaries built statically.
//! - [`machine`]: one boot: devices, steps, timeout, and the results.
//! - [`guest`]: one program of yours in the machine, on the devices you
//!   name (what `cargo xtask guest` runs).
//! - [`wire`]: the host end of a NIC: capture what it sends, send it frames.
//! - [`check`]: reading the guest's `key=value` output; test data.
//!
//! ```no_run
//! use vfio_tests::machine::Machine;
//!
//! let mut m = Machine::new("example");
//! let nvme = m.nvme_zeroed(16 << 20);
//! m.step("status", "devbind status");
//! m.step("bind", &format!("devbind bind {nvme}"));
//! let out = m.run().unwrap();
//! assert_eq!(out.step("bind").code, 0);
//! ```

pub mod check;
pub mod copy_bench;
pub mod dmaf;
pub mod guest;
pub mod image;
pub mod machine;
pub mod provision;
pub mod wire;

use std::fmt;
use std::path::Path;
use std::process::Command;

/// Why the harness could not set up or boot the machine.
#[derive(Debug)]
pub struct HarnessError(String);

impl HarnessError {
    /// An error with this message.
    pub fn new(msg: String) -> HarnessError {
        HarnessError(msg)
    }
    fn io(op: &str, path: &Path, e: std::io::Error) -> HarnessError {
        HarnessError(format!("{op} {}: {e}", path.display()))
    }
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

/// Result with [`HarnessError`].
pub type Result<T> = std::result::Result<T, HarnessError>;

/// Runs a command to completion; its stdout, or an error with its stderr.
pub fn run_cmd(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| HarnessError(format!("could not start {shown}: {e}")))?;
    if !out.status.success() {
        return Err(HarnessError(format!(
            "{shown} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The workspace root (where Cargo.lock is).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace root")
}

/// One guest boot per test binary: the first test to ask runs `boot`, and
/// every test of the binary gets its result; a failed boot fails each of
/// them with its error.
pub fn once<T: Send + Sync>(
    cell: &'static std::sync::OnceLock<std::result::Result<T, String>>,
    boot: impl FnOnce() -> Result<T>,
) -> &'static T {
    cell.get_or_init(|| boot().map_err(|e| e.to_string()))
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"))
}
