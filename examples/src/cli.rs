//! Argument types and value parsers the tools share, so that clap refuses a
//! bad argument (exit status 2, one `error:` line naming the argument) before
//! a tool opens anything, and no value reaches a tool that could make it
//! panic, truncate or allocate without bound.
//!
//! - PCI addresses are parsed as [`vfio_core::pci::PciAddress`] (its
//!   `FromStr`, which says what is wrong and what the form is).
//! - MAC addresses are [`MacAddress`]: exactly six two-digit hex octets.
//! - Durations go through [`seconds`] (finite, above zero, at most
//!   [`MAX_SECONDS`]) or [`seconds_or_zero`].
//! - Counts and sizes are ranges: [`usize_in`], [`u64_in`], [`u32_in`], and
//!   [`NSID`] for namespace IDs.
//!
//! What clap cannot know (whether a device exists, a namespace's size) is
//! checked next, still before anything is opened: [`require_devices`].
//!
//! ```
//! use clap::Parser;
//! use examples::cli::{self, MacAddress};
//! use std::time::Duration;
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[arg(long)]
//!     device: vfio_core::pci::PciAddress,
//!     #[arg(long)]
//!     dst_mac: MacAddress,
//!     #[arg(long, default_value = "5", value_parser = cli::seconds)]
//!     seconds: Duration,
//! }
//!
//! let ok = Cli::try_parse_from(["t", "--device", "0000:01:00.0", "--dst-mac", "52:54:00:12:34:56"]);
//! assert_eq!(ok.unwrap().seconds, Duration::from_secs(5));
//! let bad = Cli::try_parse_from(["t", "--device", "0000:01:00.0", "--dst-mac", "52:54:00:12:34", "--seconds", "nan"]);
//! assert!(bad.is_err());
//! ```

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use vfio_core::pci::{PciAddress, Sysfs};

/// The longest duration any tool accepts: a week, in seconds.
pub const MAX_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

/// Valid namespace IDs: 0 is no namespace and 0xFFFFFFFF means all of them.
pub const NSID: RangeInclusive<u64> = 1..=0xFFFF_FFFE;

/// A duration in seconds: a finite number above zero and at most
/// [`MAX_SECONDS`] (so `nan`, `inf`, `1e300`, `-1` and `0` are refused).
pub fn seconds(s: &str) -> Result<Duration, String> {
    parse_seconds(s, false)
}

/// A duration in seconds that may be zero (a warm-up that can be skipped):
/// finite, not negative, at most [`MAX_SECONDS`].
pub fn seconds_or_zero(s: &str) -> Result<Duration, String> {
    parse_seconds(s, true)
}

fn parse_seconds(s: &str, zero: bool) -> Result<Duration, String> {
    let fix = format!(
        "give a number of seconds from {} to {MAX_SECONDS} (a week), e.g. 5 or 0.5",
        if zero { "0" } else { "0.000001" }
    );
    let x: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number; {fix}"))?;
    if !(0.0..=MAX_SECONDS).contains(&x) {
        return Err(format!("{s:?} is out of range; {fix}"));
    }
    // Whole microseconds: no tool needs a finer duration, and a value below
    // one microsecond is zero rather than a busy loop.
    let d = Duration::from_micros((x * 1e6).round() as u64);
    if d.is_zero() && !zero {
        return Err(format!("{s:?} is not above zero; {fix}"));
    }
    Ok(d)
}

/// A rate in MB/s (10^6 bytes per second): finite, above zero, at most 10^6
/// (a terabyte per second, far past any NIC).
pub fn megabytes_per_second(s: &str) -> Result<f64, String> {
    let fix = "give a rate in MB/s from 0.001 to 1000000, e.g. 8";
    let x: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number; {fix}"))?;
    if !(0.001..=1e6).contains(&x) {
        return Err(format!("{s:?} is out of range; {fix}"));
    }
    Ok(x)
}

/// A `usize` argument within `range` (clap says which range when it is not).
pub fn usize_in(range: RangeInclusive<u64>) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(range)
}

/// A `u64` argument within `range`.
pub fn u64_in(range: RangeInclusive<u64>) -> RangedU64ValueParser<u64> {
    RangedU64ValueParser::new().range(range)
}

/// A `u32` argument within `range`.
pub fn u32_in(range: RangeInclusive<u64>) -> RangedU64ValueParser<u32> {
    RangedU64ValueParser::new().range(range)
}

/// An Ethernet MAC address written as exactly six two-digit hex octets
/// separated by `:`, e.g. `52:54:00:12:34:56` (either case).
///
/// ```
/// use examples::cli::MacAddress;
///
/// let mac: MacAddress = "52:54:00:AB:cd:0f".parse().unwrap();
/// assert_eq!(mac.octets(), [0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f]);
/// assert_eq!(mac.to_string(), "52:54:00:ab:cd:0f");
/// for bad in ["52:54:00:12:34", "52:54:00:12:34:56:78", "52:54:0:12:34:56", "52:54:00:12:34:zz", "52-54-00-12-34-56"] {
///     assert!(bad.parse::<MacAddress>().is_err(), "{bad}");
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacAddress([u8; 6]);

impl MacAddress {
    /// The six octets, first on the wire first.
    pub fn octets(self) -> [u8; 6] {
        self.0
    }
}

impl FromStr for MacAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("{s:?} is not a MAC address ({why}); write six two-digit hex octets separated by `:`, e.g. 52:54:00:12:34:56")
        };
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(bad(&format!("{} octets", parts.len())));
        }
        let mut mac = [0u8; 6];
        for (out, part) in mac.iter_mut().zip(&parts) {
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(&format!("octet {part:?}")));
            }
            *out = u8::from_str_radix(part, 16).map_err(|_| bad(&format!("octet {part:?}")))?;
        }
        Ok(MacAddress(mac))
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Checks that every device exists in sysfs, before a tool opens VFIO, so a
/// well-formed address of a device this machine does not have is reported as
/// such (with the command that lists the devices), and nothing is opened.
pub fn require_devices(addrs: &[PciAddress]) -> vfio_core::Result<()> {
    let sysfs = Sysfs::new();
    for &addr in addrs {
        sysfs.device(addr)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_must_be_finite_positive_and_at_most_a_week() {
        assert_eq!(seconds("5"), Ok(Duration::from_secs(5)));
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(seconds("604800"), Ok(Duration::from_secs(604_800)));
        for bad in [
            "nan",
            "NaN",
            "inf",
            "-inf",
            "1e300",
            "-1",
            "0",
            "0.0000001",
            "",
            "5s",
            "604801",
        ] {
            let err = seconds(bad).expect_err(bad);
            assert!(err.contains("seconds from"), "{bad}: {err}");
        }
        assert_eq!(seconds_or_zero("0"), Ok(Duration::ZERO));
        assert!(seconds_or_zero("-0.1").is_err());
    }

    #[test]
    fn rates_are_bounded() {
        assert_eq!(megabytes_per_second("8"), Ok(8.0));
        for bad in ["0", "-1", "nan", "inf", "1e7", "x"] {
            assert!(megabytes_per_second(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn macs_are_six_two_digit_octets_and_nothing_is_dropped() {
        let ok: MacAddress = "ff:FF:00:01:02:03".parse().unwrap();
        assert_eq!(ok.octets(), [0xff, 0xff, 0, 1, 2, 3]);
        // Each of these was accepted or silently shortened by the old parser.
        for bad in [
            "",
            "ff:ff:ff:ff:ff:ff:",
            "ff:ff:ff:ff:ff:ff:ff",
            "ff:ff:ff:ff:ff:xx:ff",
            "f:ff:ff:ff:ff:ff",
            "fff:ff:ff:ff:ff:ff",
            "+f:ff:ff:ff:ff:ff",
            " ff:ff:ff:ff:ff:ff",
            "ff::ff:ff:ff:ff",
        ] {
            let err = bad.parse::<MacAddress>().expect_err(bad);
            assert!(err.contains("e.g. 52:54:00:12:34:56"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_missing_device_is_reported_by_sysfs() {
        let addr: PciAddress = "ffff:ff:1f.7".parse().unwrap();
        let err = require_devices(&[addr]).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        assert!(err.contains("devbind status"), "{err}");
    }
}
