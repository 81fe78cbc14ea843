//! Finds, and with `setup` installs, what the test machine needs: QEMU,
//! busybox, cpio, and a Debian kernel with its modules.
//!
//! Everything downloaded goes to the cache directory (`$VFIO_RS_CACHE`, else
//! `$XDG_CACHE_HOME/vfio-rs`, else `~/.cache/vfio-rs`), never into git.
//! Environment overrides for systems that are not Debian:
//! `VFIO_RS_QEMU` (qemu-system-x86_64), `VFIO_RS_BUSYBOX` (a static busybox),
//! `VFIO_RS_KERNEL` (a bzImage) with `VFIO_RS_MODULES` (its `lib/modules/<version>`).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{run_cmd, HarnessError, Result};

/// Debian packages the test machine needs.
pub const DEBIAN_PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "cpio", "kmod"];

/// A kernel image and the tree of its modules.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub version: String,
    pub image: PathBuf,
    /// `lib/modules/<version>`, with `modules.dep`.
    pub modules: PathBuf,
}

/// The tools a guest boot needs.
#[derive(Clone, Debug)]
pub struct Tools {
    pub qemu: PathBuf,
    pub busybox: PathBuf,
    pub cpio: PathBuf,
    pub kernel: Kernel,
}

/// The cache directory for downloads and unpacked kernels.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = env::var_os("VFIO_RS_CACHE") {
        return PathBuf::from(dir);
    }
    let base = env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("vfio-rs")
}

/// Finds every tool without installing anything; the error says how to get it.
pub fn find() -> Result<Tools> {
    Ok(Tools {
        qemu: tool("VFIO_RS_QEMU", "qemu-system-x86_64", "qemu-system-x86")?,
        busybox: tool("VFIO_RS_BUSYBOX", "busybox", "busybox-static")?,
        cpio: tool("VFIO_RS_CPIO", "cpio", "cpio")?,
        kernel: find_kernel()?,
    })
}

/// Installs what is missing (Debian packages with apt-get, the kernel into the
/// cache), then finds everything.
pub fn setup() -> Result<Tools> {
    install_packages()?;
    if env::var_os("VFIO_RS_KERNEL").is_none() {
        download_kernel()?;
    }
    find()
}

fn tool(var: &str, name: &str, package: &str) -> Result<PathBuf> {
    if let Some(path) = env::var_os(var) {
        return Ok(PathBuf::from(path));
    }
    which(name).ok_or_else(|| {
        HarnessError::new(format!(
            "`{name}` not found: run `cargo xtask setup` (installs the Debian package {package}), \
             or install it yourself and/or set {var} to its path"
        ))
    })
}

/// Looks a program up in PATH (and the sbin directories, which root's PATH may lack).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn install_packages() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if which("apt-get").is_none() {
        return Err(HarnessError::new(format!(
            "missing {missing:?} and this is not a Debian system: install QEMU (x86_64 system \
             emulator), a static busybox, cpio and kmod, and set VFIO_RS_QEMU / VFIO_RS_BUSYBOX / \
             VFIO_RS_KERNEL / VFIO_RS_MODULES as needed"
        )));
    }
    eprintln!("setup: installing {}", missing.join(" "));
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    Ok(())
}

fn package_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn find_kernel() -> Result<Kernel> {
    if let Some(image) = env::var_os("VFIO_RS_KERNEL") {
        let modules = env::var_os("VFIO_RS_MODULES").map(PathBuf::from).ok_or_else(|| {
            HarnessError::new("VFIO_RS_KERNEL is set but VFIO_RS_MODULES is not: point it at the kernel's lib/modules/<version> directory".to_string())
        })?;
        let version = file_name(&modules);
        return Ok(Kernel {
            version,
            image: image.into(),
            modules,
        });
    }
    newest_cached_kernel().ok_or_else(|| {
        HarnessError::new(format!(
            "no kernel in {}: run `cargo xtask setup` (downloads Debian's linux-image package), \
             or set VFIO_RS_KERNEL and VFIO_RS_MODULES",
            cache_dir().join("kernel").display()
        ))
    })
}

fn newest_cached_kernel() -> Option<Kernel> {
    let dir = cache_dir().join("kernel");
    let mut found: Vec<Kernel> = fs::read_dir(&dir)
        .ok()?
        .flatten()
        .filter_map(|e| unpacked_kernel(&e.path()))
        .collect();
    found.sort_by(|a, b| a.version.cmp(&b.version));
    found.pop()
}

/// A kernel unpacked by `download_kernel` in `dir`, if complete.
fn unpacked_kernel(dir: &Path) -> Option<Kernel> {
    let version = file_name(dir);
    let image = dir.join(format!("boot/vmlinuz-{version}"));
    let modules = dir.join(format!("lib/modules/{version}"));
    let complete = image.is_file() && modules.join("modules.dep").is_file();
    complete.then_some(Kernel {
        version,
        image,
        modules,
    })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// Moves `usr/lib/modules` of an unpacked kernel package to `lib/modules`,
/// where depmod `-b` and this harness look: Debian 13's packages put the
/// modules under /usr (merged /usr), Debian 12's under /lib. A symlink is
/// left at `usr/lib/modules`, for a depmod that looks there.
fn modules_under_lib(root: &Path) -> Result<()> {
    let (usr, lib) = (root.join("usr/lib/modules"), root.join("lib/modules"));
    if !usr.is_dir() || usr.is_symlink() || lib.exists() {
        return Ok(());
    }
    fs::create_dir_all(root.join("lib")).map_err(|e| HarnessError::io("create", &lib, e))?;
    fs::rename(&usr, &lib).map_err(|e| HarnessError::io("move", &usr, e))?;
    std::os::unix::fs::symlink("../../lib/modules", &usr)
        .map_err(|e| HarnessError::io("link", &usr, e))
}

/// The package `linux-image-amd64` depends on now, e.g. `linux-image-6.1.0-56-amd64`.
fn current_kernel_package() -> Result<String> {
    let query = || run_cmd(Command::new("apt-cache").args(["depends", "linux-image-amd64"]));
    let out = match query() {
        Ok(out) if out.contains("Depends:") => out,
        _ => {
            run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
            query()?
        }
    };
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .ok_or_else(|| {
            HarnessError::new(format!(
                "apt-cache depends linux-image-amd64 named no kernel package:\n{out}"
            ))
        })
}

fn download_kernel() -> Result<Kernel> {
    let package = current_kernel_package()?;
    let version = package
        .trim_start_matches("linux-image-")
        .trim_end_matches("-unsigned")
        .to_string();
    let dir = cache_dir().join("kernel").join(&version);
    if let Some(kernel) = unpacked_kernel(&dir) {
        return Ok(kernel);
    }
    eprintln!("setup: downloading {package} into {}", dir.display());
    let debs = cache_dir().join("debs");
    fs::create_dir_all(&debs).map_err(|e| HarnessError::io("create", &debs, e))?;
    run_cmd(
        Command::new("apt-get")
            .args(["download", "-qq", &package])
            .current_dir(&debs),
    )?;
    let deb = fs::read_dir(&debs)
        .map_err(|e| HarnessError::io("read", &debs, e))?
        .flatten()
        .map(|e| e.path())
        .find(|p| file_name(p).starts_with(&format!("{package}_")))
        .ok_or_else(|| {
            HarnessError::new(format!(
                "apt-get download {package} left no .deb in {}",
                debs.display()
            ))
        })?;
    let staging = cache_dir()
        .join("kernel")
        .join(format!(".{version}.partial"));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(|e| HarnessError::io("create", &staging, e))?;
    run_cmd(Command::new("dpkg").arg("-x").arg(&deb).arg(&staging))?;
    modules_under_lib(&staging)?;
    let depmod = which("depmod")
        .ok_or_else(|| HarnessError::new("depmod not found: install kmod".into()))?;
    run_cmd(Command::new(depmod).arg("-b").arg(&staging).arg(&version))?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&staging, &dir).map_err(|e| HarnessError::io("rename", &staging, e))?;
    unpacked_kernel(&dir).ok_or_else(|| {
        HarnessError::new(format!(
            "{} has no boot/vmlinuz-{version} or modules.dep after unpacking",
            dir.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_of_a_merged_usr_package_move_under_lib() {
        let root = env::temp_dir().join(format!("vfio-rs-usrmerge-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let module = "usr/lib/modules/6.12.0-1-amd64/kernel/e1000.ko.xz";
        fs::create_dir_all(root.join(module).parent().unwrap()).unwrap();
        fs::write(root.join(module), b"ko").unwrap();
        modules_under_lib(&root).unwrap();
        let moved = root.join("lib/modules/6.12.0-1-amd64/kernel/e1000.ko.xz");
        assert_eq!(fs::read(&moved).unwrap(), b"ko");
        assert_eq!(
            fs::read(root.join(module)).unwrap(),
            b"ko",
            "through the link"
        );
        // Debian 12's layout (and a second run) is left as it is.
        modules_under_lib(&root).unwrap();
        assert_eq!(fs::read(&moved).unwrap(), b"ko");
        fs::remove_dir_all(&root).unwrap();
    }
}
