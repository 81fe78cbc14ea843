//! devbind: list PCI devices and hand them to vfio-pci and back — the job of
//! DPDK's dpdk-devbind and SPDK's setup.sh.
//!
//! ```text
//! devbind status                       every PCI device: class, driver, IOMMU group
//! devbind bind [--user NAME] BDF...    bind to vfio-pci (and give NAME /dev/vfio/N)
//! devbind unbind BDF...                back to the driver each had before
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vfio_core::pci::{PciAddress, PciDevice, Sysfs};
use vfio_core::{Error, Result};

#[derive(Parser)]
#[command(about = "Bind PCI devices to vfio-pci for userspace drivers, and back")]
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
        /// Give this user the devices' /dev/vfio/N, to run drivers without root.
        #[arg(long)]
        user: Option<String>,
        /// PCI addresses, DDDD:BB:DD.F or BB:DD.F.
        #[arg(required = true)]
        devices: Vec<String>,
    },
    /// Give devices back to the driver they had before `bind`.
    Unbind {
        #[arg(required = true)]
        devices: Vec<String>,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let sysfs = Sysfs::new();
    let result = match Cli::parse().command {
        Cmd::Status => status(&sysfs),
        Cmd::Bind { user, devices } => bind(&sysfs, user.as_deref(), &devices),
        Cmd::Unbind { devices } => unbind(&sysfs, &devices),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("devbind: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Parses every address before anything is changed.
fn addresses(devices: &[String]) -> Result<Vec<PciAddress>> {
    devices.iter().map(|d| d.parse()).collect()
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

fn bind(sysfs: &Sysfs, user: Option<&str>, devices: &[String]) -> Result<()> {
    let owner = user.map(lookup_user).transpose()?;
    for addr in addresses(devices)? {
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
        if let Some((name, uid, gid)) = &owner {
            sysfs.give_group_to_user(out.iommu_group, *uid, *gid)?;
            println!(
                "{addr}: /dev/vfio/{} now belongs to {name}",
                out.iommu_group
            );
        }
    }
    Ok(())
}

fn lookup_user(name: &str) -> Result<(String, u32, u32)> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok((name.to_string(), u.uid.as_raw(), u.gid.as_raw())),
        _ => Err(Error::InvalidArgument(format!(
            "no user named {name:?} in /etc/passwd"
        ))),
    }
}

fn unbind(sysfs: &Sysfs, devices: &[String]) -> Result<()> {
    for addr in addresses(devices)? {
        let now = sysfs.unbind_vfio(addr)?;
        println!(
            "{addr}: vfio-pci -> {}",
            now.as_deref().unwrap_or("no driver")
        );
    }
    Ok(())
}
