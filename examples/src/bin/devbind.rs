//! devbind: list PCI devices and hand them to vfio-pci and back — the job of
//! DPDK's dpdk-devbind and SPDK's setup.sh.
//!
//! ```text
//! devbind status                       every PCI device: class, driver, IOMMU group
//! devbind bind [--user NAME] BDF...    bind to vfio-pci (and give NAME /dev/vfio/N)
//! devbind unbind BDF...                back to the driver each had before
//! ```

use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vfio_core::pci::{PciAddress, PciDevice, Sysfs};
use vfio_core::{Error, Result};

#[derive(Parser)]
// No arguments at all is an error (with the usage hint), not the help text.
#[command(
    about = "Bind PCI devices to vfio-pci for userspace drivers, and back",
    arg_required_else_help = false
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List every PCI device with its class, driver and IOMMU group.
    Status,
    /// Bind devices to vfio-pci, remembering the driver each had.
    Bind {
        /// Give this user the devices' /dev/vfio/N, to run drivers without
        /// root: a name from /etc/passwd or a numeric UID, optionally with
        /// `:GROUP` (a name from /etc/group or a numeric GID).
        #[arg(long, value_name = "USER[:GROUP]", value_parser = owner)]
        user: Option<Owner>,
        /// PCI addresses, DDDD:BB:DD.F or BB:DD.F.
        #[arg(required = true, value_name = "BDF")]
        devices: Vec<PciAddress>,
    },
    /// Give devices back to the driver they had before `bind`.
    Unbind {
        /// PCI addresses of devices on vfio-pci.
        #[arg(required = true, value_name = "BDF")]
        devices: Vec<PciAddress>,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let sysfs = Sysfs::new();
    let result = match cli.command {
        Cmd::Status => status(&sysfs),
        Cmd::Bind { user, devices } => bind(&sysfs, user.as_ref(), &devices),
        Cmd::Unbind { devices } => unbind(&sysfs, &devices),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            examples::cli::report("devbind", &e);
            ExitCode::FAILURE
        }
    }
}

/// Looks every device up before anything is changed, so that a missing one
/// stops the command with nothing done.
fn existing(sysfs: &Sysfs, devices: &[PciAddress]) -> Result<Vec<PciDevice>> {
    devices.iter().map(|&addr| sysfs.device(addr)).collect()
}

fn status(sysfs: &Sysfs) -> Result<()> {
    println!(
        "{:<13} {:<9} {:<22} {:<10} {:<5} vfio",
        "device", "id", "class", "driver", "group"
    );
    for d in sysfs.devices()? {
        println!(
            "{:<13} {:04x}:{:04x} {:<22} {:<10} {:<5} {}",
            d.address.to_string(),
            d.vendor_id,
            d.device_id,
            class_name(d.class),
            d.driver.as_deref().unwrap_or("-"),
            d.iommu_group.map_or("-".into(), |g| g.to_string()),
            vfio_node(&d),
        );
    }
    Ok(())
}

fn vfio_node(d: &PciDevice) -> String {
    match (d.driver.as_deref(), d.iommu_group) {
        (Some("vfio-pci"), Some(g)) if std::path::Path::new(&format!("/dev/vfio/{g}")).exists() => {
            format!("/dev/vfio/{g}")
        }
        (Some("vfio-pci"), Some(g)) => format!("/dev/vfio/{g} missing"),
        _ => "-".into(),
    }
}

fn class_name(class: u32) -> String {
    match class >> 8 {
        0x0108 => "NVMe".into(),
        0x0100..=0x01ff => "mass storage".into(),
        0x0200 => "Ethernet".into(),
        0x0280 => "network".into(),
        0x0300..=0x03ff => "display".into(),
        0x0600 => "host bridge".into(),
        0x0601 => "ISA bridge".into(),
        0x0604 => "PCI bridge".into(),
        0x0c05 => "SMBus".into(),
        0x0c03 => "USB".into(),
        _ => format!("class {class:06x}"),
    }
}

fn bind(sysfs: &Sysfs, owner: Option<&Owner>, devices: &[PciAddress]) -> Result<()> {
    existing(sysfs, devices)?;
    for &addr in devices {
        let out = sysfs.bind_vfio(addr)?;
        let before = out.previous_driver.as_deref().unwrap_or("no driver");
        let what = if out.changed {
            format!("{before} -> vfio-pci")
        } else {
            "already on vfio-pci".into()
        };
        println!(
            "{addr}: {what} (IOMMU group {g}, /dev/vfio/{g})",
            g = out.iommu_group
        );
        if let Some(owner) = owner {
            sysfs.give_group_to_user(out.iommu_group, owner.uid, owner.gid)?;
            println!(
                "{addr}: /dev/vfio/{} now belongs to {owner}",
                out.iommu_group
            );
        }
    }
    Ok(())
}

/// Unbinds the devices that are on vfio-pci and says which were not (those
/// are left as they are). An error, naming them, when none was on vfio-pci.
fn unbind(sysfs: &Sysfs, devices: &[PciAddress]) -> Result<()> {
    let mut untouched = Vec::new();
    let mut unbound = 0;
    for dev in existing(sysfs, devices)? {
        let addr = dev.address;
        if dev.driver.as_deref() != Some("vfio-pci") {
            let driver = dev
                .driver
                .map_or("no driver".into(), |d| format!("driver {d}"));
            untouched.push(format!("{addr} is not on vfio-pci ({driver})"));
            continue;
        }
        let now = sysfs.unbind_vfio(addr)?;
        println!(
            "{addr}: vfio-pci -> {}",
            now.driver.as_deref().unwrap_or("no driver")
        );
        unbound += 1;
    }
    let untouched = untouched.join("; ");
    match unbound {
        0 => Err(Error::InvalidArgument(format!(
            "{untouched}: nothing done (`devbind status` lists each device's driver)"
        ))),
        _ if !untouched.is_empty() => {
            eprintln!("devbind: {untouched}: left as it is");
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The user (and group) `devbind bind --user` gives the VFIO group to.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Owner {
    /// As given on the command line.
    name: String,
    uid: u32,
    gid: u32,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (uid {}, gid {})", self.name, self.uid, self.gid)
    }
}

/// `--user`: resolved from /etc/passwd and /etc/group read as files, not
/// through glibc's NSS (getpwnam), which in a static binary loads NSS
/// modules built for another libc and can crash (libnss_systemd does).
fn owner(spec: &str) -> std::result::Result<Owner, String> {
    let read = |path: &str| std::fs::read_to_string(Path::new(path)).unwrap_or_default();
    resolve_owner(spec, &read("/etc/passwd"), &read("/etc/group"))
}

/// `USER[:GROUP]` against the text of /etc/passwd and /etc/group: USER is a
/// name or a numeric UID, GROUP a name or a numeric GID; without GROUP, the
/// user's primary group from /etc/passwd.
fn resolve_owner(spec: &str, passwd: &str, group: &str) -> std::result::Result<Owner, String> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let numeric = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    // (name, uid, gid) of /etc/passwd, (name, gid) of /etc/group.
    let users =
        entries(passwd).filter_map(|f| Some((f[0], numeric(f.get(2)?)?, numeric(f.get(3)?)?)));
    let groups = entries(group).filter_map(|f| Some((f[0], numeric(f.get(2)?)?)));
    let fix = "give a user name from /etc/passwd or a numeric UID, optionally :GROUP (a name from /etc/group or a numeric GID), e.g. 1000:1000";
    let (uid, primary) = match numeric(user) {
        Some(uid) => (uid, users.clone().find(|u| u.1 == uid).map(|u| u.2)),
        None => match users.clone().find(|u| u.0 == user && !user.is_empty()) {
            Some((_, uid, gid)) => (uid, Some(gid)),
            None => return Err(format!("no user named {user:?} in /etc/passwd; {fix}")),
        },
    };
    let gid = match grp {
        None => primary.ok_or_else(|| {
            format!("UID {uid} has no entry in /etc/passwd to take its group from; give UID:GID")
        })?,
        Some(g) => match numeric(g) {
            Some(gid) => gid,
            None => groups
                .clone()
                .find(|e| e.0 == g && !g.is_empty())
                .map(|e| e.1)
                .ok_or_else(|| format!("no group named {g:?} in /etc/group; {fix}"))?,
        },
    };
    Ok(Owner {
        name: spec.to_string(),
        uid,
        gid,
    })
}

/// The `:`-separated fields of each entry of a passwd-style file (comments,
/// blank lines and NIS `+`/`-` lines skipped).
fn entries(text: &str) -> impl Iterator<Item = Vec<&str>> + Clone {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', '+', '-']))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "# comment\nroot:x:0:0:root:/root:/bin/sh\n+nis::::::\ndev:x:1000:1000::/tmp:/bin/sh\nodd:x:1001:notanumber::/:/bin/sh\nweb:x:33:33::/:/bin/false\n";
    const GROUP: &str = "root:x:0:\ndev:x:1000:\nvideo:x:44:dev\n";

    fn owner(spec: &str) -> std::result::Result<(u32, u32), String> {
        resolve_owner(spec, PASSWD, GROUP).map(|o| (o.uid, o.gid))
    }

    #[test]
    fn names_and_numbers_resolve_from_the_files() {
        assert_eq!(owner("dev"), Ok((1000, 1000)));
        assert_eq!(owner("root"), Ok((0, 0)));
        assert_eq!(owner("dev:video"), Ok((1000, 44)));
        assert_eq!(owner("dev:7"), Ok((1000, 7)));
        assert_eq!(
            owner("33"),
            Ok((33, 33)),
            "a UID takes its group from /etc/passwd"
        );
        assert_eq!(
            owner("4242:4243"),
            Ok((4242, 4243)),
            "UID:GID needs no entry"
        );
        assert_eq!(owner("4242:video"), Ok((4242, 44)));
    }

    #[test]
    fn unknown_or_malformed_users_are_refused_with_the_fix() {
        for bad in [
            "nobody-here",
            "",
            "dev:nogroup",
            "dev:",
            "4242",
            "odd",
            "+nis",
            "99999999999",
            "dev:99999999999",
            "-1",
        ] {
            let err = owner(bad).expect_err(bad);
            assert!(
                err.contains("/etc/passwd") || err.contains("/etc/group"),
                "{bad}: {err}"
            );
        }
    }
}
