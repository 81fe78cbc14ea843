//! A logger that panics on every warning and error, for tests of the rule
//! that nothing that can panic runs between "a device may still write this
//! memory" and "it is stopped or the memory leaked" (issue 29). The logger
//! is code of the program's, so a driver must not call it inside that
//! window; a test installs this one and checks, at the moment it is called
//! ([`set_hook`]), what state the device is in.
//!
//! A logger is process-wide and set once: each test file that uses this is
//! its own process, and every test in it calls [`install`] first.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

/// What the logger saw: the level, the message, and what the test's hook
/// reported at that moment.
pub type Logged = (log::Level, String, String);

thread_local! {
    /// Called by the logger before it panics: the state of the device and
    /// memory at the moment a warning or an error is logged.
    static HOOK: RefCell<Option<Box<dyn Fn() -> String>>> = const { RefCell::new(None) };
    static LOGGED: RefCell<Vec<Logged>> = const { RefCell::new(Vec::new()) };
}

/// Panics on every warning and error, after recording it (and printing it
/// with the hook's report to stderr, which a parent process reads).
struct PanickingLogger;

impl log::Log for PanickingLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let state = HOOK.with(|h| h.borrow().as_ref().map_or_else(String::new, |f| f()));
        let message = record.args().to_string();
        eprintln!("logger: {} {message} [{state}]", record.level());
        LOGGED.with(|l| l.borrow_mut().push((record.level(), message, state)));
        panic!("the test's logger panics on every {}", record.level());
    }

    fn flush(&self) {}
}

/// Installs the panicking logger (once per process) and clears this
/// thread's hook and record.
pub fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&PanickingLogger).expect("the only logger");
        log::set_max_level(log::LevelFilter::Trace);
    });
    HOOK.with(|h| *h.borrow_mut() = None);
    LOGGED.with(|l| l.borrow_mut().clear());
}

/// What the logger reports, on this thread, with each record from now on.
pub fn set_hook(f: impl Fn() -> String + 'static) {
    HOOK.with(|h| *h.borrow_mut() = Some(Box::new(f)));
}

/// Everything logged on this thread since [`install`].
pub fn logged() -> Vec<Logged> {
    LOGGED.with(|l| l.borrow().clone())
}

/// The one warning logged so far, and what the hook said then.
///
/// # Panics
///
/// When anything else, or nothing, was logged.
pub fn the_warning() -> (String, String) {
    let logged = logged();
    assert_eq!(logged.len(), 1, "{logged:?}");
    let (level, message, state) = logged.into_iter().next().expect("one record");
    assert_eq!(level, log::Level::Warn, "{message}");
    (message, state)
}

/// Runs `f`; true when it panicked.
pub fn panicked(f: impl FnOnce()) -> bool {
    panic::catch_unwind(AssertUnwindSafe(f)).is_err()
}
