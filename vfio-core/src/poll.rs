//! Waiting for a device to get somewhere: poll a condition until it holds or
//! a timeout passes.
//!
//! Drivers wait for registers all the time (a reset bit to clear, a ready bit
//! to set, an EEPROM read to finish). [`until`] and [`try_until`] are that
//! loop, written once:
//!
//! - **Schedule.** The condition is checked back to back (with a spin-loop
//!   hint) for the first 10 µs, since many waits end within microseconds; then
//!   the thread sleeps between checks, 10 µs at first and twice as long each
//!   time, at most 1 ms, and never past the deadline. A wait of a second
//!   costs about a thousand checks, not a core.
//! - **The deadline.** The last check starts after the deadline: a thread
//!   that was descheduled past it looks once more before failing, so a
//!   condition that came true in time is not reported as a timeout.
//! - **Timeout.** [`until`] fails with [`Error::Timeout`], which names what
//!   was awaited and how long; [`try_until`] returns `Ok(None)`, for a driver
//!   that reports a timeout in its own error type (with the last value it
//!   read, say), and lets the condition fail early (a register reading all
//!   ones: the device is gone).
//!
//! [`Mmio::poll32`](crate::mmio::Mmio::poll32) waits for bits of a register.
//!
//! ```
//! use std::time::Duration;
//!
//! # fn main() -> vfio_core::Result<()> {
//! let mut status = 0u32; // a register that sets bit 0 on the third read
//! let value = vfio_core::poll::until("the ready bit", Duration::from_millis(100), || {
//!     status += 1;
//!     (status >= 3).then_some(status)
//! })?;
//! assert_eq!(value, 3);
//!
//! let err = vfio_core::poll::until("the ready bit", Duration::ZERO, || None::<()>).unwrap_err();
//! assert!(err.to_string().starts_with("timed out after 0ns waiting for the ready bit"));
//! # Ok(()) }
//! ```

use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How long the condition is checked back to back before the first sleep.
const SPIN: Duration = Duration::from_micros(10);
/// The first sleep between checks; each next one is twice as long.
const FIRST_SLEEP: Duration = Duration::from_micros(10);
/// The longest sleep between checks.
const MAX_SLEEP: Duration = Duration::from_millis(1);

/// Calls `f` until it returns `Some`, for at most `timeout` (see [the module
/// docs](self) for how often); returns what it returned. `what` names the
/// awaited condition in the error ("CSTS.RDY = 1", "the reset to complete").
///
/// ```
/// use std::time::{Duration, Instant};
///
/// # fn main() -> vfio_core::Result<()> {
/// let done_at = Instant::now() + Duration::from_millis(2);
/// vfio_core::poll::until("the clock", Duration::from_secs(1), || {
///     (Instant::now() >= done_at).then_some(())
/// })?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Timeout`] when `f` still returns `None` at its last call, which
/// starts after the timeout passed.
pub fn until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    try_until(timeout, || Ok::<_, Error>(f()))?.ok_or_else(|| Error::Timeout {
        what: what.to_string(),
        after: timeout,
    })
}

/// Calls `f` until it returns `Ok(Some(_))` or an error, for at most
/// `timeout` (the schedule of [`until`]); `Ok(None)` when the timeout passed.
/// For drivers whose own error type reports the timeout, and whose
/// condition can fail at once.
///
/// ```
/// use std::time::Duration;
///
/// let mut reads = [0x0000_0001u32, 0xffff_ffff].into_iter(); // then the device vanishes
/// let outcome = vfio_core::poll::try_until(Duration::from_secs(1), || {
///     match reads.next().unwrap_or(0xffff_ffff) {
///         0xffff_ffff => Err("the register reads all ones: the device is gone"),
///         v if v & 0x2 != 0 => Ok(Some(v)),
///         _ => Ok(None),
///     }
/// });
/// assert_eq!(outcome, Err("the register reads all ones: the device is gone"));
/// ```
///
/// # Errors
///
/// The first error `f` returns.
pub fn try_until<T, E>(
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>, E>,
) -> Result<Option<T>, E> {
    let start = Instant::now();
    // None: too far away to add to the clock, so never.
    let deadline = start.checked_add(timeout);
    let mut sleep = FIRST_SLEEP;
    loop {
        // Taken before the check, so that the last check begins after the
        // deadline.
        let now = Instant::now();
        let past = deadline.is_some_and(|d| now >= d);
        if let Some(v) = f()? {
            return Ok(Some(v));
        }
        if past {
            return Ok(None);
        }
        if now.duration_since(start) < SPIN {
            std::hint::spin_loop();
            continue;
        }
        let left = deadline.map_or(sleep, |d| d.saturating_duration_since(Instant::now()));
        std::thread::sleep(sleep.min(left));
        sleep = (sleep * 2).min(MAX_SLEEP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_is_returned_as_soon_as_there_is_one() {
        let mut calls = 0;
        let got = until("three calls", Duration::from_secs(10), || {
            calls += 1;
            (calls == 3).then_some("done")
        });
        assert_eq!(got.unwrap(), "done");
        assert_eq!(calls, 3);
    }

    #[test]
    fn a_timeout_names_what_and_how_long_and_comes_in_time() {
        let timeout = Duration::from_millis(30);
        let start = Instant::now();
        let err = until("CSTS.RDY = 1", timeout, || None::<()>).unwrap_err();
        let took = start.elapsed();
        assert!(took >= timeout, "gave up after {took:?}");
        assert!(took < Duration::from_secs(2), "gave up after {took:?}");
        match &err {
            Error::Timeout { what, after } => {
                assert_eq!((what.as_str(), *after), ("CSTS.RDY = 1", timeout));
            }
            other => panic!("not a timeout: {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.starts_with("timed out after 30ms waiting for CSTS.RDY = 1"),
            "{text}"
        );
    }

    #[test]
    fn the_last_check_starts_after_the_deadline() {
        let timeout = Duration::from_millis(5);
        let start = Instant::now();
        let mut calls = Vec::new();
        let got = try_until(timeout, || {
            calls.push(start.elapsed());
            Ok::<Option<()>, ()>(None)
        });
        assert_eq!(got, Ok(None));
        assert!(calls.len() > 2, "checked only {} times", calls.len());
        assert!(calls.last().unwrap() >= &timeout, "{calls:?}");
    }

    #[test]
    fn a_check_that_overran_the_deadline_is_followed_by_exactly_one_more() {
        // The first check takes longer than the whole timeout (a thread
        // descheduled, a slow register): one more check, then the timeout.
        let mut calls = 0;
        let got = try_until(Duration::from_millis(2), || {
            calls += 1;
            if calls == 1 {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok::<Option<()>, ()>(None)
        });
        assert_eq!((got, calls), (Ok(None), 2));
    }

    #[test]
    fn a_condition_that_holds_at_the_last_check_is_not_a_timeout() {
        // True only once the deadline passed: the check after it sees it.
        let timeout = Duration::from_millis(3);
        let start = Instant::now();
        let got = until("the late bit", timeout, || {
            (start.elapsed() >= timeout).then_some(7)
        });
        assert_eq!(got.unwrap(), 7);
    }

    #[test]
    fn a_zero_timeout_checks_once() {
        let mut calls = 0;
        let got = try_until(Duration::ZERO, || {
            calls += 1;
            Ok::<Option<()>, ()>(None)
        });
        assert_eq!((got, calls), (Ok(None), 1));
    }

    #[test]
    fn an_error_of_f_ends_the_wait_at_once() {
        let start = Instant::now();
        let mut calls = 0;
        let got: Result<Option<()>, &str> = try_until(Duration::from_secs(10), || {
            calls += 1;
            if calls == 2 {
                Err("gone")
            } else {
                Ok(None)
            }
        });
        assert_eq!((got, calls), (Err("gone"), 2));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn sleeps_grow_to_the_cap_so_a_long_wait_checks_rarely() {
        // 50 ms at 1 ms per sleep at most: about 60 checks, not millions.
        let mut calls = 0u32;
        let _ = try_until(Duration::from_millis(50), || {
            calls += 1;
            Ok::<Option<()>, ()>(None)
        });
        assert!(calls < 10_000, "{calls} checks in 50 ms");
        assert!(calls > 10, "{calls} checks in 50 ms");
    }
}
