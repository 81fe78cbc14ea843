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
//! A tool that fails prints `<tool>: <error>` with [`report`], which adds a
//! line with the `devbind` command that fixes a device that is not on
//! vfio-pci or a VFIO group file this user may not open ([`devbind_hint`]):
//! vfio-core's own messages name the library call and the kernel's files,
//! since a library user has no `devbind`.
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

use std::error::Error;
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

/// The vfio-core error an error of these tools holds, if any: the error
/// itself, or what nvme-driver's or nic-driver's `Error::Vfio` wraps, at any
/// depth of its [`source`](std::error::Error::source) chain.
///
/// ```
/// let e = nvme_driver::Error::Vfio(vfio_core::Error::NotBoundToVfio { addr: "01:00.0".parse()? });
/// let boxed: Box<dyn std::error::Error> = Box::new(e);
/// assert!(matches!(
///     examples::cli::vfio_error(&*boxed),
///     Some(vfio_core::Error::NotBoundToVfio { .. })
/// ));
/// # Ok::<(), vfio_core::Error>(())
/// ```
pub fn vfio_error<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a vfio_core::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(v) = e.downcast_ref::<vfio_core::Error>() {
            return Some(v);
        }
        if let Some(nvme_driver::Error::Vfio(v)) = e.downcast_ref::<nvme_driver::Error>() {
            return Some(v);
        }
        if let Some(nic_driver::Error::Vfio(v)) = e.downcast_ref::<nic_driver::Error>() {
            return Some(v);
        }
        next = e.source();
    }
    None
}

/// The `devbind` command that fixes `e`, for the errors it fixes: a device
/// on another driver or on none (`devbind bind <BDF>`), a group with members
/// on host drivers (`devbind bind` of each), a VFIO file this user may not
/// open (`devbind bind --user`).
///
/// ```
/// use vfio_core::Error;
///
/// let e = Error::BoundToOtherDriver { addr: "01:00.0".parse()?, driver: "nvme".into() };
/// assert_eq!(examples::cli::devbind_hint(&e).unwrap(), "run `devbind bind 0000:01:00.0` (as root)");
/// assert_eq!(examples::cli::devbind_hint(&Error::PoolExhausted { capacity: 8 }), None);
/// # Ok::<(), vfio_core::Error>(())
/// ```
pub fn devbind_hint(e: &vfio_core::Error) -> Option<String> {
    use vfio_core::Error as E;
    match e {
        E::BoundToOtherDriver { addr, .. } | E::NotBoundToVfio { addr } => {
            Some(format!("run `devbind bind {addr}` (as root)"))
        }
        E::GroupNotViable { others, .. } => {
            let addrs: String = others.iter().map(|(a, _)| format!(" {a}")).collect();
            Some(format!("run `devbind bind{addrs}` (as root)"))
        }
        E::PermissionDenied { .. } => Some(
            "have root run `devbind bind --user $USER <BDF>`, which gives this user the device's VFIO group"
                .into(),
        ),
        _ => None,
    }
}

/// Prints `<tool>: <e>` to stderr, then `<tool>: hint: ...` when
/// [`devbind_hint`] has a command for the vfio-core error it holds.
///
/// ```no_run
/// # fn run() -> Result<(), nvme_driver::Error> { Ok(()) }
/// if let Err(e) = run() {
///     examples::cli::report("nvme-io", &e);
/// }
/// ```
pub fn report(tool: &str, e: &(dyn Error + 'static)) {
    eprintln!("{tool}: {e}");
    if let Some(hint) = vfio_error(e).and_then(devbind_hint) {
        eprintln!("{tool}: hint: {hint}");
    }
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
        assert!(err.contains("/sys/bus/pci/devices"), "{err}");
    }

    #[test]
    fn bind_errors_inside_the_drivers_errors_get_the_devbind_command() {
        let addr: PciAddress = "0000:01:00.0".parse().unwrap();
        let wrapped: [Box<dyn Error>; 3] = [
            Box::new(vfio_core::Error::NotBoundToVfio { addr }),
            Box::new(nvme_driver::Error::Vfio(
                vfio_core::Error::BoundToOtherDriver {
                    addr,
                    driver: "nvme".into(),
                },
            )),
            Box::new(nic_driver::Error::Vfio(vfio_core::Error::NotBoundToVfio {
                addr,
            })),
        ];
        for e in &wrapped {
            let hint = vfio_error(&**e).and_then(devbind_hint);
            assert_eq!(
                hint.as_deref(),
                Some("run `devbind bind 0000:01:00.0` (as root)"),
                "{e}"
            );
        }
        let group = vfio_core::Error::GroupNotViable {
            group: 3,
            others: vec![
                (addr, "nvme".into()),
                ("02:00.0".parse().unwrap(), "e1000".into()),
            ],
        };
        assert_eq!(
            devbind_hint(&group).unwrap(),
            "run `devbind bind 0000:01:00.0 0000:02:00.0` (as root)"
        );
        let denied = vfio_core::Error::PermissionDenied {
            path: "/dev/vfio/3".into(),
        };
        assert!(devbind_hint(&denied)
            .unwrap()
            .contains("devbind bind --user"));
        let other = nic_driver::Error::InvalidFrame("too long".into());
        assert!(vfio_error(&other).is_none());
        let missing = vfio_core::Error::DeviceNotFound {
            addr,
            path: "/sys/bus/pci/devices/0000:01:00.0".into(),
        };
        assert_eq!(
            devbind_hint(&missing),
            None,
            "its message names sysfs itself"
        );
    }
}

/// The NVMe driver's optional features, as options of every NVMe tool.
#[derive(clap::Args, Debug, Clone)]
pub struct NvmeOptions {
    /// Ring every doorbell by MMIO, even where the controller offers
    /// shadow doorbells (Doorbell Buffer Config).
    #[arg(long)]
    pub no_shadow_doorbells: bool,
    /// How I/O commands describe their data: SGLs where the controller
    /// offers them (auto), or always PRPs, or always SGLs (an error where
    /// the controller has none).
    #[arg(long, value_enum, default_value_t = DataPointerArg::Auto)]
    pub data_pointer: DataPointerArg,
    /// Interrupt mode: each I/O queue raises its own MSI-X vector and the
    /// tool sleeps until a completion comes, instead of polling.
    #[arg(long)]
    pub interrupts: bool,
}

/// `--data-pointer`: [`nvme_driver::DataPointer`] on the command line.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPointerArg {
    /// SGLs if the controller reports them, else PRPs.
    Auto,
    /// Physical Region Pages.
    Prp,
    /// Scatter Gather Lists.
    Sgl,
}

/// `blocks` blocks at `lba` of namespace `ns`, as a tool's arguments name
/// them, checked before anything is read, written or sent: the bytes they
/// hold, or what is wrong.
pub fn namespace_range(
    ns: &nvme_driver::NamespaceInfo,
    lba: u64,
    blocks: u64,
) -> Result<u64, String> {
    let inside = blocks > 0 && lba.checked_add(blocks).is_some_and(|end| end <= ns.blocks);
    inside
        .then(|| blocks.checked_mul(u64::from(ns.block_size)))
        .flatten()
        .ok_or_else(|| {
            format!(
                "blocks {lba}..{} are not inside namespace {} ({} blocks)",
                lba.saturating_add(blocks),
                ns.nsid,
                ns.blocks
            )
        })
}

/// How the tools print a resolved [`nvme_driver::DataPointer`].
pub fn data_pointer_name(d: nvme_driver::DataPointer) -> &'static str {
    match d {
        nvme_driver::DataPointer::Auto => "auto (PRPs up to two pages, SGLs above)",
        nvme_driver::DataPointer::Prp => "prp",
        nvme_driver::DataPointer::Sgl => "sgl",
    }
}

impl NvmeOptions {
    /// The driver configuration these options ask for.
    pub fn config(&self) -> nvme_driver::Config {
        let data_pointer = match self.data_pointer {
            DataPointerArg::Auto => nvme_driver::DataPointer::Auto,
            DataPointerArg::Prp => nvme_driver::DataPointer::Prp,
            DataPointerArg::Sgl => nvme_driver::DataPointer::Sgl,
        };
        nvme_driver::Config::new()
            .shadow_doorbells(!self.no_shadow_doorbells)
            .data_pointer(data_pointer)
            .interrupts(self.interrupts)
    }
}
