//! The guest's initramfs: busybox, kernel modules, the project's static
//! binaries and an /init that runs the boot's script.
//!
//! The base image is built once per process (and shared between processes with
//! a file lock); each boot appends a small cpio with its own `/run.sh`, which
//! the kernel unpacks on top (concatenated cpio archives are allowed).

use std::env;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::provision::{self, Kernel, Tools};
use crate::{run_cmd, workspace_root, HarnessError, Result};

/// Kernel modules the guest loads at boot (their dependencies come along).
pub const GUEST_MODULES: &[&str] = &[
    "vfio_iommu_type1",
    "vfio_pci",
    "nvme",
    "e1000",
    "virtio_pci",
    "virtio_net",
];

/// Packages whose binaries go into the guest (edu-driver: `edu-demo`).
const GUEST_PACKAGES: &[&str] = &["examples", "vfio-tests", "edu-driver"];

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// A built guest image.
#[derive(Clone, Debug)]
pub struct GuestImage {
    pub tools: Tools,
    /// The base initramfs (uncompressed newc cpio).
    pub initramfs: PathBuf,
}

/// The image, built at most once per process. `VFIO_RS_GUEST_IMAGE` names one
/// built already (by `cargo xtask test`).
pub fn get() -> Result<&'static GuestImage> {
    static IMAGE: OnceLock<std::result::Result<GuestImage, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| build_or_reuse().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| HarnessError::new(e.clone()))
}

fn build_or_reuse() -> Result<GuestImage> {
    let tools = provision::find()?;
    match env::var_os("VFIO_RS_GUEST_IMAGE") {
        Some(path) => Ok(GuestImage {
            tools,
            initramfs: workspace_root().join(path),
        }),
        None => build(tools),
    }
}

/// Where guest builds and images live: `target/guest`.
pub fn guest_dir() -> PathBuf {
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("guest")
}

/// Builds the binaries statically and packs the base initramfs.
pub fn build(tools: Tools) -> Result<GuestImage> {
    let dir = guest_dir();
    fs::create_dir_all(&dir).map_err(|e| HarnessError::io("create", &dir, e))?;
    let lock =
        fs::File::create(dir.join(".lock")).map_err(|e| HarnessError::io("create", &dir, e))?;
    lock.lock().map_err(|e| HarnessError::io("lock", &dir, e))?;
    let bins = build_binaries(&dir)?;
    let root = dir.join("root");
    stage_root(&root, &tools, &bins)?;
    let initramfs = dir.join("initramfs.cpio");
    pack_cpio(&tools.cpio, &root, &initramfs)?;
    Ok(GuestImage { tools, initramfs })
}

/// `cargo build --release` of the guest packages, statically linked; returns the binaries.
fn build_binaries(dir: &Path) -> Result<Vec<PathBuf>> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--release", "--bins", "--target", TARGET])
        .args(GUEST_PACKAGES.iter().flat_map(|p| ["-p", p]))
        .env("CARGO_TARGET_DIR", dir.join("build"))
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        // Without the line tables the workspace's release profile keeps
        // (for the host profilers): 26 MB of a guest binary's 30 were
        // debug info, and the initramfs (330 MB with fourteen tools) no
        // longer unpacked in a 1 GiB guest. Symbols stay, for backtraces.
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        .stdout(Stdio::inherit());
    run_cmd(&mut cmd)?;
    let out = built_dir(dir);
    let entries = fs::read_dir(&out).map_err(|e| HarnessError::io("read", &out, e))?;
    Ok(entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| is_executable(p))
        .collect())
}

fn built_dir(guest_dir: &Path) -> PathBuf {
    guest_dir.join("build").join(TARGET).join("release")
}

/// Where [`build`] leaves the guest binary `name` (e.g. `guest-check`,
/// `devbind`), statically linked: a program to hand to [`crate::guest::run`].
pub fn built_binary(name: &str) -> PathBuf {
    built_dir(&guest_dir()).join(name)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.extension().is_none()
        && p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
}

fn stage_root(root: &Path, tools: &Tools, bins: &[PathBuf]) -> Result<()> {
    let _ = fs::remove_dir_all(root);
    for d in [
        "bin",
        "lib/modules",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "etc",
    ] {
        let p = root.join(d);
        fs::create_dir_all(&p).map_err(|e| HarnessError::io("create", &p, e))?;
    }
    copy(&tools.busybox, &root.join("bin/busybox"))?;
    for bin in bins {
        copy(
            bin,
            &root.join("bin").join(bin.file_name().unwrap_or_default()),
        )?;
    }
    let order = stage_modules(&tools.kernel, &root.join("lib/modules"))?;
    write(
        &root.join("lib/modules/load-order"),
        &(order.join("\n") + "\n"),
    )?;
    write(
        &root.join("etc/passwd"),
        "root:x:0:0:root:/:/bin/sh\nuser:x:1000:1000:user:/tmp:/bin/sh\n",
    )?;
    write(&root.join("etc/group"), "root:x:0:\nuser:x:1000:\n")?;
    write(&root.join("init"), INIT)?;
    chmod_x(&root.join("init"))
}

/// Copies the wanted modules and their dependencies; returns their load order.
fn stage_modules(kernel: &Kernel, dest: &Path) -> Result<Vec<String>> {
    let dep_file = kernel.modules.join("modules.dep");
    let deps = fs::read_to_string(&dep_file).map_err(|e| HarnessError::io("read", &dep_file, e))?;
    // Modules built into the kernel (Debian 13's has virtio_pci so); a
    // kernel without the list has none.
    let builtin = fs::read_to_string(kernel.modules.join("modules.builtin")).unwrap_or_default();
    let order = module_load_order(&deps, &builtin, GUEST_MODULES)?;
    let mut names = Vec::new();
    for rel in &order {
        let name = Path::new(rel)
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let name = stage_module(&kernel.modules.join(rel), dest, &name)?;
        names.push(name);
    }
    Ok(names)
}

/// Copies one module into `dest` as a plain `.ko` (returns its name there):
/// Debian 13's kernel ships `.ko.xz`, which busybox insmod does not take
/// (and the kernel only with CONFIG_MODULE_DECOMPRESS), so compressed modules
/// are decompressed on the host (`xz`, `zstd` or `gzip`).
fn stage_module(from: &Path, dest: &Path, name: &str) -> Result<String> {
    let compressed = [(".xz", "xz"), (".zst", "zstd"), (".gz", "gzip")]
        .into_iter()
        .find_map(|(ext, tool)| name.strip_suffix(ext).map(|plain| (plain, tool)));
    let Some((plain, tool)) = compressed else {
        copy(from, &dest.join(name))?;
        return Ok(name.to_string());
    };
    let out = dest.join(plain);
    let file = fs::File::create(&out).map_err(|e| HarnessError::io("create", &out, e))?;
    let status = Command::new(tool)
        .arg("-dc")
        .arg(from)
        .stdout(file)
        .status()
        .map_err(|e| {
            HarnessError::new(format!(
                "module {} is compressed and `{tool}` could not be started ({e}): install it (Debian: {})",
                from.display(),
                if tool == "xz" { "xz-utils" } else { tool }
            ))
        })?;
    if !status.success() {
        return Err(HarnessError::new(format!(
            "{tool} -dc {} failed ({status})",
            from.display()
        )));
    }
    Ok(plain.to_string())
}

/// Orders `wanted` and their dependencies (from modules.dep) so that each
/// comes after what it needs; those built into the kernel (listed in
/// `modules_builtin`, the kernel's modules.builtin) are left out.
pub fn module_load_order(
    modules_dep: &str,
    modules_builtin: &str,
    wanted: &[&str],
) -> Result<Vec<String>> {
    let table: Vec<(String, Vec<String>)> = modules_dep
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| {
            (
                m.trim().to_string(),
                d.split_whitespace().map(str::to_string).collect(),
            )
        })
        .collect();
    let mut order = Vec::new();
    for want in wanted {
        let name = want.replace('-', "_");
        if modules_builtin.lines().any(|m| module_name(m) == name) {
            continue;
        }
        let path = table
            .iter()
            .map(|(m, _)| m)
            .find(|m| module_name(m) == name)
            .ok_or_else(|| {
                HarnessError::new(format!("kernel module {want} not found in modules.dep"))
            })?;
        visit(path, &table, &mut order, 0)?;
    }
    Ok(order)
}

fn visit(
    path: &str,
    table: &[(String, Vec<String>)],
    order: &mut Vec<String>,
    depth: usize,
) -> Result<()> {
    if order.iter().any(|o| o == path) {
        return Ok(());
    }
    if depth > 64 {
        return Err(HarnessError::new(format!(
            "module dependency loop at {path}"
        )));
    }
    let deps = table
        .iter()
        .find(|(m, _)| m == path)
        .map(|(_, d)| d.clone())
        .unwrap_or_default();
    for d in deps.iter().rev() {
        visit(d, table, order, depth + 1)?;
    }
    order.push(path.to_string());
    Ok(())
}

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split('.').next().unwrap_or(file).replace('-', "_")
}

/// Packs `root` into an uncompressed newc cpio.
pub fn pack_cpio(cpio: &Path, root: &Path, out: &Path) -> Result<()> {
    let mut list = String::new();
    collect_paths(root, root, &mut list)?;
    let outfile = fs::File::create(out).map_err(|e| HarnessError::io("create", out, e))?;
    let mut child = Command::new(cpio)
        .args(["--quiet", "-o", "-H", "newc", "-R", "0:0"])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(outfile)
        .spawn()
        .map_err(|e| HarnessError::io("start", cpio, e))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(list.as_bytes())
        .map_err(|e| HarnessError::io("write to", cpio, e))?;
    drop(stdin);
    let status = child
        .wait()
        .map_err(|e| HarnessError::io("wait for", cpio, e))?;
    if !status.success() {
        return Err(HarnessError::new(format!(
            "cpio failed packing {}",
            root.display()
        )));
    }
    Ok(())
}

fn collect_paths(root: &Path, dir: &Path, list: &mut String) -> Result<()> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| HarnessError::io("read", dir, e))?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        let rel = p.strip_prefix(root).unwrap_or(&p);
        list.push_str(&rel.to_string_lossy());
        list.push('\n');
        if p.is_dir() {
            collect_paths(root, &p, list)?;
        }
    }
    Ok(())
}

pub(crate) fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| HarnessError::new(format!("copy {} to {}: {e}", from.display(), to.display())))
}

pub(crate) fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(|e| HarnessError::io("write", path, e))
}

pub(crate) fn chmod_x(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .map_err(|e| HarnessError::io("chmod", path, e))
}

/// The guest's /init: mounts (tracefs too, for the tools' system call
/// counts), modules, then /run.sh with its output on the results port
/// (ttyS1), then power off. The kernel log stays on ttyS0.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# The tools count their system calls on the raw_syscalls:sys_enter tracepoint.
mount -t tracefs nodev /sys/kernel/tracing
mount -t devtmpfs devtmpfs /dev
exec < /dev/console > /dev/console 2>&1
mkdir -p /dev/hugepages && mount -t hugetlbfs none /dev/hugepages
mount -t tmpfs tmpfs /tmp
while read -r m; do insmod "/lib/modules/$m" || echo "init: insmod $m failed"; done < /lib/modules/load-order
ulimit -l unlimited
# The results port is read by the host harness, not by a person: no progress bars.
export TERM=dumb
echo "@@BOOTED $(cat /proc/uptime)" > /dev/ttyS1
cd /tmp
sh /run.sh > /dev/ttyS1 2>&1
echo "@@EXIT $?" > /dev/ttyS1
echo "init: done" > /dev/console
poweroff -f
"#;

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/pci/vfio-pci-core.ko kernel/drivers/vfio/vfio.ko kernel/virt/lib/irqbypass.ko\n\
kernel/drivers/vfio/pci/vfio-pci-core.ko: kernel/drivers/vfio/vfio.ko kernel/virt/lib/irqbypass.ko\n\
kernel/drivers/vfio/vfio.ko:\n\
kernel/virt/lib/irqbypass.ko:\n\
kernel/drivers/net/ethernet/intel/e1000/e1000.ko:\n";

    #[test]
    fn compressed_module_is_staged_plain() {
        if crate::provision::which("xz").is_none() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("vfio-rs-stage-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("out")).expect("mkdir");
        let plain = dir.join("vfio.ko");
        fs::write(&plain, b"\x7fELF module bytes").expect("write");
        let status = Command::new("xz")
            .arg("-k")
            .arg(&plain)
            .status()
            .expect("xz");
        assert!(status.success());
        let name =
            stage_module(&dir.join("vfio.ko.xz"), &dir.join("out"), "vfio.ko.xz").expect("staged");
        assert_eq!(name, "vfio.ko");
        assert_eq!(
            fs::read(dir.join("out/vfio.ko")).expect("read"),
            b"\x7fELF module bytes"
        );
        assert_eq!(
            stage_module(&plain, &dir.join("out"), "plain.ko").expect("copied"),
            "plain.ko"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn load_order_with_xz_names() {
        let dep = "kernel/drivers/vfio/pci/vfio-pci.ko.xz: kernel/drivers/vfio/vfio.ko.xz\nkernel/drivers/vfio/vfio.ko.xz:\n";
        let order = module_load_order(dep, "", &["vfio_pci"]).expect("order");
        assert_eq!(
            order,
            [
                "kernel/drivers/vfio/vfio.ko.xz",
                "kernel/drivers/vfio/pci/vfio-pci.ko.xz"
            ]
        );
    }

    #[test]
    fn built_in_modules_are_not_loaded() {
        let builtin = "kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/vfio/vfio.ko\n";
        let order = module_load_order(DEP, builtin, &["virtio_pci", "e1000"]).unwrap();
        assert_eq!(order, ["kernel/drivers/net/ethernet/intel/e1000/e1000.ko"]);
    }

    #[test]
    fn dependencies_load_first() {
        let order = module_load_order(DEP, "", &["vfio_pci", "e1000"]).unwrap();
        let pos = |m: &str| order.iter().position(|o| o.ends_with(m)).unwrap();
        assert!(pos("irqbypass.ko") < pos("vfio-pci-core.ko"));
        assert!(pos("/vfio.ko") < pos("vfio-pci-core.ko"));
        assert!(pos("vfio-pci-core.ko") < pos("vfio-pci.ko"));
        assert_eq!(order.len(), 5);
    }

    #[test]
    fn unknown_module_is_an_error() {
        let err = module_load_order(DEP, "", &["nosuch"]).unwrap_err();
        assert!(err.to_string().contains("nosuch"));
    }
}
