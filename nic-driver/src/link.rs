//! The link state a transmit path checks without reading a register
//! (issue 30): a register read is a PCIe round trip of hundreds of
//! nanoseconds, so no driver reads one per batch.
//!
//! A driver keeps the link as it last read it. While that
//! link is up, transmit trusts it for [`CHECK_EVERY`] calls, then looks
//! at the clock (once per 64 calls, so the clock costs next to nothing
//! per batch) and trusts it again until [`Config::link_poll`] has passed
//! since the last register read; only then does the driver read the link
//! register again. A link that is down is read on every call (so one
//! coming back is seen at once), and so it is after a reason to doubt
//! it: a full ring (a transmitter that stopped, as one does when its link
//! is lost) or an interrupt whose cause is a link change. Every [`NetDevice::link`] call reads the
//! register and refreshes the watch.
//!
//! So in steady state a driver reads the link register at most once per
//! `link_poll` (default 5 ms), whatever the packet rate: no register read
//! per packet or batch. Frames handed over between a link going down and
//! the next read wait in the ring, owned by the NIC, until it sends them
//! or is stopped.
//!
//! [`Config::link_poll`]: crate::Config::link_poll
//! [`NetDevice::link`]: crate::NetDevice::link

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::Link;

/// Transmit calls between two looks at the clock while the link is up.
pub const CHECK_EVERY: u32 = 64;

/// The link as last read, and when it may be trusted without a read.
#[derive(Debug)]
pub(crate) struct LinkWatch {
    link: Cell<Link>,
    /// Calls that trust `link` before the clock is looked at.
    calls_left: Cell<u32>,
    /// When the register was last read; None: read it at the next call.
    read_at: Cell<Option<Instant>>,
    poll: Duration,
}

impl LinkWatch {
    /// A watch that reads the register at its first call.
    pub(crate) fn new(poll: Duration) -> LinkWatch {
        LinkWatch {
            link: Cell::new(Link::default()),
            calls_left: Cell::new(0),
            read_at: Cell::new(None),
            poll,
        }
    }

    /// The link for a transmit call when it is up and may be trusted
    /// without reading the register; None when the driver must read it
    /// (and [`LinkWatch::store`] what it read).
    #[inline]
    pub(crate) fn trusted(&self) -> Option<Link> {
        let link = self.link.get();
        if !link.up {
            return None;
        }
        match self.calls_left.get() {
            0 => self.still_fresh().then_some(link),
            left => {
                self.calls_left.set(left - 1);
                Some(link)
            }
        }
    }

    /// Whether the last read is younger than the poll interval; if so,
    /// trusts it for [`CHECK_EVERY`] more calls.
    #[cold]
    fn still_fresh(&self) -> bool {
        let fresh = self
            .read_at
            .get()
            .is_some_and(|at| at.elapsed() < self.poll);
        if fresh {
            self.calls_left.set(CHECK_EVERY);
        }
        fresh
    }

    /// The link as last read (down before the first read).
    pub(crate) fn last(&self) -> Link {
        self.link.get()
    }

    /// Records a register read.
    pub(crate) fn store(&self, link: Link) {
        self.link.set(link);
        self.calls_left.set(CHECK_EVERY);
        self.read_at.set(Some(Instant::now()));
    }

    /// Makes the next call read the register (a full ring, a link change
    /// interrupt).
    pub(crate) fn doubt(&self) {
        self.calls_left.set(0);
        self.read_at.set(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up() -> Link {
        Link {
            up: true,
            ..Link::default()
        }
    }

    #[test]
    fn an_up_link_is_trusted_until_the_poll_interval_passed() {
        let w = LinkWatch::new(Duration::from_secs(3600));
        assert_eq!(w.trusted(), None, "never read");
        w.store(up());
        for _ in 0..10 * CHECK_EVERY {
            assert_eq!(w.trusted(), Some(up()));
        }
        w.doubt();
        assert_eq!(w.trusted(), None);
        let w = LinkWatch::new(Duration::ZERO);
        w.store(up());
        for _ in 0..CHECK_EVERY {
            assert_eq!(w.trusted(), Some(up()));
        }
        assert_eq!(w.trusted(), None, "the interval has passed");
    }

    #[test]
    fn a_down_link_is_never_trusted() {
        let w = LinkWatch::new(Duration::from_secs(3600));
        w.store(Link::default());
        assert_eq!(w.trusted(), None);
    }
}
