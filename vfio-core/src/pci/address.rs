//! PCI addresses (`DDDD:BB:DD.F`).

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A PCI function address: domain, bus, device (0..32) and function (0..8).
/// Parsed from `DDDD:BB:DD.F` or `BB:DD.F` (hex, domain 0), displayed as
/// `DDDD:BB:DD.F` (the name sysfs and VFIO use). Parsing checks the ranges; a
/// value built from its fields is not checked.
///
/// ```
/// use vfio_core::pci::PciAddress;
///
/// let a: PciAddress = "0000:01:00.1".parse()?;
/// assert_eq!((a.bus, a.device, a.function), (1, 0, 1));
/// assert_eq!("01:00.1".parse::<PciAddress>()?, a); // the short form has domain 0
/// assert!("0000:01:20.0".parse::<PciAddress>().is_err()); // device 0x20 is out of range
/// # Ok::<(), vfio_core::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    /// PCI domain (segment).
    pub domain: u16,
    /// Bus number.
    pub bus: u8,
    /// Device number, 0 to 0x1f.
    pub device: u8,
    /// Function number, 0 to 7.
    pub function: u8,
}

/// Parses `DDDD:BB:DD.F` or `BB:DD.F`: exactly 4, 2, 2 and 1 hex digits (either
/// case), device at most 0x1f, function at most 7. Any other input is
/// [`Error::InvalidPciAddress`], saying what is wrong.
impl FromStr for PciAddress {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason| Error::InvalidPciAddress {
            input: s.to_string(),
            reason,
        };
        let (head, function) = s
            .rsplit_once('.')
            .ok_or(bad("no `.` before the function number"))?;
        let parts: Vec<&str> = head.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [d, b, dev] => (
                hex(d, 4, "domain must be 4 hex digits").map_err(bad)?,
                *b,
                *dev,
            ),
            [b, dev] => (0, *b, *dev),
            _ => return Err(bad("expected 1 or 2 `:` separators")),
        };
        let bus = hex(bus, 2, "bus must be 2 hex digits").map_err(bad)?;
        let device = hex(device, 2, "device must be 2 hex digits").map_err(bad)?;
        let function = hex(function, 1, "function must be 1 hex digit").map_err(bad)?;
        if device > 0x1f {
            return Err(bad("device number out of range 00-1f"));
        }
        if function > 7 {
            return Err(bad("function number out of range 0-7"));
        }
        Ok(PciAddress {
            domain: domain as u16,
            bus: bus as u8,
            device: device as u8,
            function: function as u8,
        })
    }
}

/// Parses exactly `digits` hex digits.
fn hex(s: &str, digits: usize, reason: &'static str) -> Result<u32, &'static str> {
    if s.len() != digits || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(reason);
    }
    u32::from_str_radix(s, 16).map_err(|_| reason)
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl fmt::Debug for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<PciAddress, Error> {
        s.parse()
    }

    #[test]
    fn full_and_short_forms() {
        let a = parse("0001:3a:1f.7").unwrap();
        assert_eq!((a.domain, a.bus, a.device, a.function), (1, 0x3a, 0x1f, 7));
        assert_eq!(a.to_string(), "0001:3a:1f.7");
        assert_eq!(parse("3A:1F.7").unwrap(), PciAddress { domain: 0, ..a });
        assert_eq!(parse("ffff:ff:00.0").unwrap().to_string(), "ffff:ff:00.0");
    }

    #[test]
    fn round_trips_through_display() {
        for s in ["0000:00:00.0", "0000:00:03.0", "abcd:ef:1e.5"] {
            assert_eq!(parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn malformed_addresses_say_what_is_wrong() {
        let cases = [
            ("", "no `.`"),
            ("0000:00:03", "no `.`"),
            ("0000:00:20.0", "device number out of range"),
            ("0000:00:1f.8", "function number out of range"),
            ("00:3g.0", "device must be 2 hex digits"),
            ("0:00:03.0", "domain must be 4 hex digits"),
            ("0000:0:03.0", "bus must be 2 hex digits"),
            ("0000:00:03.00", "function must be 1 hex digit"),
            ("0000:00:00:03.0", "separators"),
            (" 0000:00:03.0", "domain must be 4 hex digits"),
            ("0000:00:03.0 ", "function must be 1 hex digit"),
            ("0000:+0:03.0", "bus must be 2 hex digits"),
            ("0000:00:03.-", "function must be 1 hex digit"),
        ];
        for (input, reason) in cases {
            let err = parse(input).unwrap_err().to_string();
            assert!(err.contains(reason), "{input:?}: {err}");
            assert!(err.contains("expected DDDD:BB:DD.F"), "{input:?}: {err}");
        }
    }

    #[test]
    fn no_input_panics() {
        let samples = [
            "..",
            ":",
            "::.",
            "ü:ü.ü",
            "0000:00:03.0.1",
            "\u{0}",
            "0x00:00.0",
            "....:..:....",
        ];
        for s in samples {
            let _ = parse(s);
        }
        // Every short string over a small alphabet.
        let alphabet = ['0', 'f', ':', '.', 'g'];
        let mut s = String::new();
        for n in 0..5u32.pow(6) {
            s.clear();
            let mut k = n;
            for _ in 0..6 {
                s.push(alphabet[(k % 5) as usize]);
                k /= 5;
            }
            let _ = parse(&s);
        }
    }
}
