//! What a receiver of a DMAF stream (`udp-sink`, `receiver`) knows about it,
//! in memory that does not depend on what a peer sends.
//!
//! Sequence numbers and offsets come from the network, so nothing here sizes
//! anything by them. A [`Tracker`] accepts:
//!
//! - data (one byte or more) that lies inside the accepted range
//!   `0..max_bytes` (once the end marker has arrived, `0..total`), with no
//!   overflow of `offset + len`;
//! - sequence numbers inside a window of `window` numbers from the first one
//!   not yet received (one bit each: `window / 8` bytes, allocated once);
//!   a datagram further ahead is refused, so a sender may reorder by up to
//!   the window;
//! - one end marker, whose total is inside the range, not before data
//!   already received, and whose number is above every data datagram's.
//!
//! Everything else is refused and counted ([`Tracker::refused`]); a refused
//! datagram changes nothing. The number of datagrams missing is kept as it
//! goes (the end marker's number minus the data datagrams received), not
//! recomputed.
//!
//! ```
//! use examples::stream::{Tracker, Verdict};
//!
//! let mut t = Tracker::new(1 << 20, 1024);
//! assert_eq!(t.accept(1, 1000, 1000), Verdict::Data);
//! assert_eq!(t.accept(0xFFFF_FFF0, 0, 1000), Verdict::Refused("sequence number ahead of the window"));
//! assert_eq!(t.accept(2, u64::MAX - 10, 100), Verdict::Refused("offset + length overflows"));
//! assert_eq!(t.accept(2, 2000, 0), Verdict::End);
//! assert_eq!((t.missing(), t.complete()), (1, false));
//! assert_eq!(t.accept(0, 0, 1000), Verdict::Data);
//! assert_eq!(t.accept(0, 0, 1000), Verdict::Duplicate);
//! assert!(t.complete());
//! assert_eq!(t.refused(), 2);
//! ```

/// What to do with a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// New data inside the range: store it.
    Data,
    /// The end marker, the first time.
    End,
    /// Already received (the same sequence number, or the same end marker): ignore it.
    Duplicate,
    /// Outside what is accepted, for the reason given: drop it.
    Refused(&'static str),
}

/// The state of one stream at a receiver: see the module documentation.
#[derive(Clone, Debug)]
pub struct Tracker {
    max_bytes: u64,
    /// One bit per sequence number `base..base + window`, at `seq % window`.
    bits: Vec<u64>,
    window: u64,
    /// Every sequence number below this has been received.
    base: u64,
    /// Data datagrams received (distinct sequence numbers).
    received: u64,
    /// One past the highest data sequence number received.
    seq_end: u64,
    /// One past the last byte of data received.
    data_end: u64,
    /// (sequence number, total length) of the end marker.
    end: Option<(u32, u64)>,
    duplicates: u64,
    refused: u64,
}

impl Tracker {
    /// A stream whose data must lie in `0..max_bytes`, with sequence numbers
    /// tracked `window` ahead (rounded up to a multiple of 64, at least 64).
    pub fn new(max_bytes: u64, window: u32) -> Tracker {
        let words = (window as usize).div_ceil(64).max(1);
        Tracker {
            max_bytes,
            bits: vec![0; words],
            window: words as u64 * 64,
            base: 0,
            received: 0,
            seq_end: 0,
            data_end: 0,
            end: None,
            duplicates: 0,
            refused: 0,
        }
    }

    /// What [`Tracker::accept`] would say, without recording anything.
    pub fn check(&self, seq: u32, offset: u64, len: usize) -> Verdict {
        let seq64 = seq as u64;
        if len == 0 {
            return match self.end {
                Some(end) if end == (seq, offset) => Verdict::Duplicate,
                Some(_) => Verdict::Refused("a second, different end marker"),
                None if offset > self.max_bytes => {
                    Verdict::Refused("end marker past the accepted range")
                }
                None if offset < self.data_end => {
                    Verdict::Refused("end marker before data already received")
                }
                None if seq64 < self.seq_end => {
                    Verdict::Refused("end marker numbered before data already received")
                }
                None => Verdict::End,
            };
        }
        let Some(data_end) = offset.checked_add(len as u64) else {
            return Verdict::Refused("offset + length overflows");
        };
        let limit = self.end.map_or(self.max_bytes, |(_, total)| total);
        if data_end > limit {
            return Verdict::Refused("data past the accepted range");
        }
        if self.end.is_some_and(|(end_seq, _)| seq >= end_seq) {
            return Verdict::Refused("sequence number at or after the end marker's");
        }
        if seq64 < self.base || (seq64 < self.base + self.window && self.bit(seq64)) {
            return Verdict::Duplicate;
        }
        if seq64 >= self.base + self.window {
            return Verdict::Refused("sequence number ahead of the window");
        }
        Verdict::Data
    }

    /// Checks a datagram (`len` bytes of data at `offset`; 0 for the end
    /// marker), records it, and says what to do with it.
    pub fn accept(&mut self, seq: u32, offset: u64, len: usize) -> Verdict {
        let verdict = self.check(seq, offset, len);
        self.record(seq, offset, len, verdict);
        verdict
    }

    /// Records a datagram [`Tracker::check`] judged `verdict` (a caller that
    /// cannot store accepted data after all passes [`Verdict::Refused`]).
    pub fn record(&mut self, seq: u32, offset: u64, len: usize, verdict: Verdict) {
        let seq64 = seq as u64;
        match verdict {
            Verdict::Refused(_) => self.refused += 1,
            Verdict::Duplicate => self.duplicates += 1,
            Verdict::End => self.end = Some((seq, offset)),
            Verdict::Data => {
                self.set(seq64, true);
                self.received += 1;
                self.seq_end = self.seq_end.max(seq64 + 1);
                self.data_end = self.data_end.max(offset + len as u64);
                while self.bit(self.base) {
                    self.set(self.base, false);
                    self.base += 1;
                }
            }
        }
    }

    fn bit(&self, seq: u64) -> bool {
        let i = seq % self.window;
        self.bits[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, seq: u64, on: bool) {
        let i = seq % self.window;
        let word = &mut self.bits[(i / 64) as usize];
        if on {
            *word |= 1 << (i % 64);
        } else {
            *word &= !(1 << (i % 64));
        }
    }

    fn has(&self, seq: u64) -> bool {
        seq < self.base || (seq < self.base + self.window && self.bit(seq))
    }

    /// Sequence numbers before the end marker's (or, without it, before the
    /// highest one received) that have not arrived.
    pub fn missing(&self) -> u64 {
        let upto = self.end.map_or(self.seq_end, |(seq, _)| seq as u64);
        upto.saturating_sub(self.received)
    }

    /// The first `n` missing sequence numbers (at most `window + n` steps).
    pub fn first_missing(&self, n: usize) -> Vec<u32> {
        let upto = self.end.map_or(self.seq_end, |(seq, _)| seq as u64);
        (self.base..upto)
            .filter(|&s| !self.has(s))
            .take(n)
            .map(|s| s as u32)
            .collect()
    }

    /// The end marker and every datagram before it have arrived.
    pub fn complete(&self) -> bool {
        self.end.is_some() && self.missing() == 0
    }

    /// (sequence number, total length) of the end marker, once it has arrived.
    pub fn end(&self) -> Option<(u32, u64)> {
        self.end
    }

    /// Data datagrams received (each sequence number once).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Datagrams that had arrived before.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Datagrams refused: outside the range or the window, or contradicting
    /// the stream so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Bytes of memory the tracker holds (its window), whatever arrives.
    pub fn memory(&self) -> usize {
        self.bits.len() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_numbers_are_refused_and_change_nothing() {
        let mut t = Tracker::new(1 << 20, 4096);
        let before = t.memory();
        for (seq, offset, len) in [
            (0xFFFF_FFF0, 0, 1456),
            (u32::MAX, 0, 1),
            (4096, 0, 1),
            (1, 1 << 63, 1456),
            (1, u64::MAX - 10, 100),
            (1, (1 << 20) - 10, 11),
            (1, u64::MAX, 0),
            (u32::MAX, 1 << 62, 0),
            (7, (1 << 20) + 1, 0),
        ] {
            assert!(
                matches!(t.accept(seq, offset, len), Verdict::Refused(_)),
                "{seq} {offset} {len}"
            );
        }
        assert_eq!(t.refused(), 9);
        assert_eq!(t.memory(), before, "nothing grew");
        assert_eq!((t.received(), t.missing(), t.end()), (0, 0, None));
        // The range's last byte is accepted.
        assert_eq!(t.accept(0, (1 << 20) - 1, 1), Verdict::Data);
    }

    #[test]
    fn a_shuffled_stream_with_duplicates_completes_and_missing_is_kept_as_it_goes() {
        let n = 10_000u32;
        let mut order: Vec<u32> = (0..=n).collect();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for i in (1..order.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut t = Tracker::new(n as u64 * 100, 16_384);
        for (k, &seq) in order.iter().enumerate() {
            let v = if seq == n {
                t.accept(seq, n as u64 * 100, 0)
            } else {
                t.accept(seq, seq as u64 * 100, 100)
            };
            assert!(matches!(v, Verdict::Data | Verdict::End), "{seq}: {v:?}");
            if t.end().is_some() {
                let got = order[..=k].iter().filter(|&&s| s != n).count() as u64;
                assert_eq!(t.missing(), n as u64 - got);
            }
        }
        assert!(t.complete());
        assert!(t.first_missing(5).is_empty());
        for seq in (0..n).step_by(7) {
            assert_eq!(t.accept(seq, seq as u64 * 100, 100), Verdict::Duplicate);
        }
        assert_eq!(t.duplicates(), n.div_ceil(7) as u64);
        assert_eq!((t.received(), t.refused()), (n as u64, 0));
    }

    #[test]
    fn the_window_refuses_what_is_too_far_ahead_and_slides() {
        let mut t = Tracker::new(u64::MAX, 64);
        assert_eq!(
            t.accept(64, 0, 1),
            Verdict::Refused("sequence number ahead of the window")
        );
        assert_eq!(t.accept(63, 0, 1), Verdict::Data);
        for s in 0..63 {
            assert_eq!(t.accept(s, 0, 1), Verdict::Data);
        }
        // 0..64 received: the window now starts at 64.
        assert_eq!(t.accept(64 + 63, 0, 1), Verdict::Data);
        assert_eq!(t.accept(5, 0, 1), Verdict::Duplicate);
        assert_eq!(t.first_missing(3), [64, 65, 66]);
        assert_eq!(t.missing(), 63);
    }

    #[test]
    fn the_end_marker_must_agree_with_the_data() {
        let mut t = Tracker::new(1000, 64);
        assert_eq!(t.accept(3, 500, 100), Verdict::Data);
        assert!(
            matches!(t.accept(9, 599, 0), Verdict::Refused(_)),
            "before data"
        );
        assert!(
            matches!(t.accept(3, 600, 0), Verdict::Refused(_)),
            "numbered before data"
        );
        assert!(
            matches!(t.accept(9, 1001, 0), Verdict::Refused(_)),
            "past the range"
        );
        assert_eq!(t.accept(4, 600, 0), Verdict::End);
        assert_eq!(t.accept(4, 600, 0), Verdict::Duplicate);
        assert!(
            matches!(t.accept(5, 700, 0), Verdict::Refused(_)),
            "a second end"
        );
        assert!(
            matches!(t.accept(2, 590, 20), Verdict::Refused(_)),
            "past the end"
        );
        assert!(
            matches!(t.accept(4, 0, 1), Verdict::Refused(_)),
            "numbered at the end"
        );
        assert_eq!((t.missing(), t.first_missing(10)), (3, vec![0, 1, 2]));
        assert_eq!(t.refused(), 6);
    }

    #[test]
    fn random_hostile_traffic_keeps_the_counts_consistent() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut t = Tracker::new(1 << 24, 1024);
        let memory = t.memory();
        let (mut data, mut dups, mut refused) = (0u64, 0u64, 0u64);
        let (mut seen, mut end) = (std::collections::HashSet::new(), None);
        for _ in 0..5_000 {
            let r = next();
            // Mostly near the stream, sometimes anywhere.
            let seq = match r % 4 {
                0 => next() as u32,
                _ => (next() % 2048) as u32,
            };
            let offset = match (r >> 8) % 4 {
                0 => next(),
                _ => next() % (1 << 24),
            };
            let len = match (r >> 16) % 8 {
                0 => 0,
                _ => (next() % 9000) as usize,
            };
            match t.accept(seq, offset, len) {
                Verdict::Data => {
                    assert!(seen.insert(seq), "{seq} accepted twice");
                    data += 1;
                }
                Verdict::Duplicate => dups += 1,
                Verdict::Refused(_) => refused += 1,
                Verdict::End => end = Some(seq),
            }
            // Against a model that remembers every accepted number.
            let highest = seen.iter().max().map_or(0, |&m| m as u64 + 1);
            let upto = end.map_or(highest, |e| e as u64);
            assert!(seen.iter().all(|&s| (s as u64) < upto));
            assert_eq!(t.missing(), upto - seen.len() as u64);
            let first: Vec<u32> = (0..upto as u32)
                .filter(|s| !seen.contains(s))
                .take(3)
                .collect();
            assert_eq!(t.first_missing(3), first);
        }
        assert_eq!(
            (t.received(), t.duplicates(), t.refused()),
            (data, dups, refused)
        );
        assert!(data > 0 && refused > 0, "both kinds happened");
        assert_eq!(t.memory(), memory, "memory never grew");
    }
}
