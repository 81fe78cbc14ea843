//! SIGINT and SIGTERM as a flag the tools' loops poll, so that a signal stops
//! a run cleanly: I/O in flight is drained or aborted, the devices are shut
//! down by their drivers' `Drop`, and DMA mappings are undone before the
//! process exits (signal-hook: the well-kept way to do this without `unsafe`).
//!
//! ```no_run
//! examples::signals::install()?;
//! while examples::signals::requested().is_none() {
//!     // one batch of work
//! }
//! # Ok::<(), std::io::Error>(())
//! ```

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use signal_hook::consts::{SIGINT, SIGTERM};

static GOT: OnceLock<Arc<AtomicUsize>> = OnceLock::new();

/// Installs the handlers (once per process). A second signal ends the process
/// at once, for a tool stuck where it does not poll.
pub fn install() -> std::io::Result<()> {
    if GOT.get().is_some() {
        return Ok(());
    }
    let got = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // The conditional default looks at `seen` before this signal sets it.
        signal_hook::flag::register_conditional_default(sig, Arc::clone(&seen))?;
        signal_hook::flag::register(sig, Arc::clone(&seen))?;
        signal_hook::flag::register_usize(sig, Arc::clone(&got), sig as usize)?;
    }
    let _ = GOT.set(got);
    Ok(())
}

fn got() -> i32 {
    GOT.get().map_or(0, |g| g.load(Ordering::Relaxed) as i32)
}

/// The signal that asked to stop, if one did.
pub fn requested() -> Option<&'static str> {
    match got() {
        0 => None,
        SIGINT => Some("SIGINT"),
        _ => Some("SIGTERM"),
    }
}

/// The exit code a shell expects after that signal (128 + its number).
pub fn exit_code() -> u8 {
    128 + got() as u8
}

/// `code`, unless a signal stopped the run: then says so on stderr (after
/// the devices were shut down, which has happened by the time `main` returns)
/// and gives 128 + the signal's number.
pub fn exit_code_or(tool: &str, code: std::process::ExitCode) -> std::process::ExitCode {
    match requested() {
        Some(signal) => {
            eprintln!("{tool}: stopped by {signal}; I/O in flight finished, devices shut down");
            std::process::ExitCode::from(exit_code())
        }
        None => code,
    }
}
