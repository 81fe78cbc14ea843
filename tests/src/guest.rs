//! One program of yours, in the test machine: the library side of
//! `cargo xtask guest`.
//!
//! [`run`] boots the machine with the QEMU devices you name, binds the ones
//! you choose to vfio-pci, runs a statically linked binary from the host as
//! root or as an unprivileged user, and returns what it printed and its exit
//! status. Nothing of this repository's own tests is involved: the binary can
//! be any driver built anywhere.
//!
//! In the guest the steps are, each in its own section of `results.log`:
//!
//! 1. `bind`: `devbind bind [--user user] BDF...` (when something is bound);
//! 2. `devices`: `devbind status`, every PCI device with its vendor:device
//!    ID, driver and IOMMU group: where your devices landed;
//! 3. `program`: your binary, copied to `/files/<name>` and run in `/tmp`
//!    with stdin from `/dev/null`; its stdout and stderr arrive merged, in
//!    the order it wrote them.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::machine::{Machine, DEFAULT_TIMEOUT};
use crate::{HarnessError, Result};

/// The unprivileged user of the guest image (`/etc/passwd`), for `--user`.
pub const USER: &str = "user";
/// Its UID (and GID).
pub const USER_UID: u32 = 1000;

/// The exit status the `program` step reports when the binding failed and
/// the program was not started.
pub const NOT_RUN: i32 = 125;

/// Which devices to bind to vfio-pci in the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bind {
    /// Every device of [`GuestRun::devices`] (each must have a guest address
    /// known before boot: see [`Machine::device`]).
    Auto,
    /// One PCI address, `DDDD:BB:DD.F` or `BB:DD.F`.
    Address(String),
}

/// What to run, on which devices, and how.
#[derive(Clone, Debug)]
pub struct GuestRun {
    /// The run's directory is `target/qemu-runs/<name>` (logs, initrd).
    pub name: String,
    /// A statically linked x86_64 ELF binary on the host.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// QEMU `-device` option texts (`edu`, `e1000,mac=...`); see
    /// [`Machine::device`] for where they land.
    pub devices: Vec<String>,
    /// Devices to hand to vfio-pci before the program runs.
    pub bind: Vec<Bind>,
    /// Run the program as [`USER`] (UID 1000), who is given the bound
    /// devices' `/dev/vfio/N`, instead of root.
    pub user: bool,
    /// The locked-memory limit (`ulimit -l`, KiB) the program runs with;
    /// `None`: unlimited, which covers any DMA memory the guest can give.
    pub memlock_kib: Option<u64>,
    /// 2 MiB hugepages the guest kernel reserves (of its 1 GiB).
    pub hugepages: u32,
    /// Time the whole boot gets before the guest is killed.
    pub timeout: Duration,
    /// More host files, each copied to `/files/<file name>` in the guest
    /// (executable there if it is on the host).
    pub files: Vec<PathBuf>,
    /// Environment variables for the program (e.g. `RUST_LOG=debug`).
    pub env: Vec<(String, String)>,
    /// Print the guest's output while it runs: the program's on stdout; each
    /// device's guest address (before the boot), the binding and the device
    /// listing on stderr, after `guest: `.
    pub echo: bool,
}

impl GuestRun {
    /// `program` with no arguments and no devices, as root, 64 hugepages,
    /// [`DEFAULT_TIMEOUT`], nothing echoed; the run is called
    /// `guest-<program's file name>`.
    pub fn new(program: impl Into<PathBuf>) -> GuestRun {
        let program = program.into();
        GuestRun {
            name: format!("guest-{}", file_name(&program)),
            program,
            args: Vec::new(),
            devices: Vec::new(),
            bind: Vec::new(),
            user: false,
            memlock_kib: None,
            hugepages: 64,
            timeout: DEFAULT_TIMEOUT,
            files: Vec::new(),
            env: Vec::new(),
            echo: false,
        }
    }
}

/// What came back from the guest.
#[derive(Clone, Debug)]
pub struct GuestOutput {
    /// The program's exit status as the guest's shell saw it (128 + N for
    /// a program killed by signal N).
    pub status: i32,
    /// Its stdout and stderr, merged.
    pub output: String,
    /// `devbind status` after the binding: one line per PCI device,
    /// `address vendor:device class driver group /dev/vfio/N`.
    pub devices: String,
    /// What `devbind bind` printed (empty when nothing was bound).
    pub bind: String,
    /// The guest address of each of [`GuestRun::devices`], in order
    /// (`None` for one placed with `bus=`).
    pub addresses: Vec<Option<String>>,
    /// The addresses that were bound to vfio-pci.
    pub bound: Vec<String>,
    /// The guest's kernel log (warnings and errors, such as IOMMU faults).
    pub console: String,
    /// The run's directory: `console.log`, `results.log`, `qemu.log`.
    pub dir: PathBuf,
    /// From QEMU's start to the guest's power-off.
    pub elapsed: Duration,
}

/// Boots the test machine with `run`'s devices, binds the chosen ones to
/// vfio-pci, runs `run.program` in the guest and returns its output and exit
/// status. One boot: about 10–20 s under TCG plus what the program takes.
///
/// The program must be a statically linked x86_64 Linux binary (the guest
/// has busybox and no shared libraries); for a Rust crate:
///
/// ```text
/// RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu
/// ```
///
/// gives `target/x86_64-unknown-linux-gnu/release/<name>`. The guest image
/// must have been built (`cargo xtask setup`, or [`crate::image::get`] builds
/// it). An error is returned, before anything boots, for a binary that is
/// not static or a `Bind::Auto` that cannot be resolved; after, for a
/// binding that failed (with devbind's message and the device listing), or a
/// guest that did not boot, hung or crashed (with its logs). A program that
/// exits nonzero is not an error: see [`GuestOutput::status`].
///
/// ```no_run
/// use vfio_tests::guest::{self, Bind, GuestRun};
///
/// let mut run = GuestRun::new("target/x86_64-unknown-linux-gnu/release/my-driver");
/// run.devices.push("edu".into());
/// run.bind.push(Bind::Auto);
/// run.args = vec!["--device".into(), "0000:00:03.0".into()];
/// run.user = true;
/// let out = guest::run(&run).unwrap();
/// assert_eq!(out.status, 0, "{}", out.output);
/// ```
pub fn run(run: &GuestRun) -> Result<GuestOutput> {
    let program = read_program(&run.program)?;
    let name = file_name(&run.program);
    let mut m = Machine::new(&run.name);
    m.hugepages(run.hugepages).timeout(run.timeout);
    let addresses: Vec<Option<String>> = run.devices.iter().map(|d| m.device(d)).collect();
    let bound = resolve_binds(&run.bind, &run.devices, &addresses)?;
    if run.echo {
        for (device, addr) in run.devices.iter().zip(&addresses) {
            let addr = addr.as_deref().unwrap_or("placed by bus= (see the list)");
            eprintln!("guest: -device {device}: {addr}");
        }
    }
    m.file(&name, &program);
    let mut executable = vec![name.clone()];
    for path in &run.files {
        let file = file_name(path);
        if file == name {
            return Err(HarnessError::new(format!(
                "--file {}: the program is already /files/{name} in the guest; rename one of them",
                path.display()
            )));
        }
        let bytes = fs::read(path).map_err(|e| HarnessError::io("read", path, e))?;
        m.file(&file, &bytes);
        if is_executable(path) {
            executable.push(file);
        }
    }
    if !bound.is_empty() {
        let owner = if run.user {
            format!("--user {USER} ")
        } else {
            String::new()
        };
        m.step(
            "bind",
            &format!(
                "devbind bind {owner}{}; rc=$?\n[ $rc = 0 ] || touch {BIND_FAILED}\nexit $rc",
                bound.join(" ")
            ),
        );
    }
    m.step("devices", "devbind status");
    m.step("program", &program_step(run, &name, &executable));
    let dir = m.dir().to_path_buf();
    let running = m.start()?;
    let echo = run.echo.then(|| Echo::start(dir.join("results.log")));
    let outcome = running.wait();
    if let Some(echo) = echo {
        echo.stop();
    }
    let outcome = outcome?;
    let step = |name: &str| outcome.steps.iter().find(|s| s.name == name);
    let devices = step("devices")
        .map(|s| s.output.clone())
        .unwrap_or_default();
    let bind = step("bind").map(|s| s.output.clone()).unwrap_or_default();
    if let Some(failed) = step("bind").filter(|s| s.code != 0) {
        if run.echo {
            return Err(HarnessError::new(format!(
                "binding {} to vfio-pci in the guest failed (exit {}): devbind's message is above",
                bound.join(" "),
                failed.code
            )));
        }
        return Err(HarnessError::new(format!(
            "binding {} to vfio-pci in the guest failed (exit {}):\n{}\nthe guest's PCI devices:\n{devices}",
            bound.join(" "),
            failed.code,
            failed.output
        )));
    }
    let program = step("program").ok_or_else(|| {
        HarnessError::new(format!(
            "the program did not finish in guest `{}`\n{}",
            outcome.name,
            outcome.diagnostics()
        ))
    })?;
    Ok(GuestOutput {
        status: program.code,
        output: program.output.clone(),
        devices,
        bind,
        addresses,
        bound,
        console: outcome.console.clone(),
        dir,
        elapsed: outcome.elapsed,
    })
}

/// Marks, in the guest, that `bind` failed, so that `program` is not run.
const BIND_FAILED: &str = "/run/vfio-rs-bind-failed";

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// The addresses to bind, in order, without repeats.
fn resolve_binds(
    binds: &[Bind],
    devices: &[String],
    addresses: &[Option<String>],
) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for bind in binds {
        let add: Vec<String> = match bind {
            Bind::Address(a) => vec![a.clone()],
            Bind::Auto if devices.is_empty() => {
                return Err(HarnessError::new(
                    "--bind auto binds the devices added with --device, and there are none: \
                     add one (e.g. --device edu) or give --bind BDF"
                        .into(),
                ))
            }
            Bind::Auto => devices
                .iter()
                .zip(addresses)
                .map(|(d, a)| {
                    a.clone().ok_or_else(|| {
                        HarnessError::new(format!(
                            "--bind auto: the guest address of `-device {d}` is not known before boot \
                             (it names bus=); run once without --bind to see it in the device \
                             listing, then give --bind BDF"
                        ))
                    })
                })
                .collect::<Result<_>>()?,
        };
        for a in add {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    Ok(out)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

/// The guest shell lines that run the program `name`; `executable`: the
/// files in /files to make executable (the program, and the `--file`s that
/// are on the host).
fn program_step(run: &GuestRun, name: &str, executable: &[String]) -> String {
    let mut lines = vec![format!(
        "[ -e {BIND_FAILED} ] && {{ echo 'guest: not run: binding to vfio-pci failed'; exit {NOT_RUN}; }}"
    )];
    for file in executable {
        lines.push(format!("chmod 755 /files/{}", shell_quote(file)));
    }
    lines.push("cd /tmp".to_string());
    for (k, v) in &run.env {
        lines.push(format!("export {k}={}", shell_quote(v)));
    }
    if let Some(kib) = run.memlock_kib {
        lines.push(format!("ulimit -l {kib}"));
    }
    let command: Vec<String> = std::iter::once(format!("/files/{name}"))
        .chain(run.args.iter().cloned())
        .map(|a| shell_quote(&a))
        .collect();
    let command = command.join(" ");
    lines.push(if run.user {
        format!("su {USER} -c {} < /dev/null", shell_quote(&command))
    } else {
        format!("{command} < /dev/null")
    });
    lines.join("\n")
}

/// `text` as one word for the guest's shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The program's bytes, if it is a static x86_64 ELF executable.
fn read_program(path: &Path) -> Result<Vec<u8>> {
    let bytes = fs::read(path).map_err(|e| {
        HarnessError::new(format!(
            "cannot read the program {}: {e} (give the path of a binary built on the host)",
            path.display()
        ))
    })?;
    check_static(&bytes).map_err(|why| HarnessError::new(format!("{}: {why}", path.display())))?;
    Ok(bytes)
}

/// How to build a Rust binary the guest can run.
pub const STATIC_BUILD: &str = "RUSTFLAGS='-C target-feature=+crt-static' cargo build --release \
     --target x86_64-unknown-linux-gnu (the binary is then in \
     target/x86_64-unknown-linux-gnu/release/)";

/// Ok if `elf` is a 64-bit little-endian x86_64 ELF executable with no
/// program interpreter (`PT_INTERP`), i.e. statically linked (a static PIE
/// included); else why not, with how to build one.
pub fn check_static(elf: &[u8]) -> std::result::Result<(), String> {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    if elf.get(..4) != Some(b"\x7fELF") {
        return Err(format!(
            "not an ELF binary: the guest runs static x86_64 Linux binaries (a Rust crate: {STATIC_BUILD})"
        ));
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) || u16_at(18) != Some(0x3e) {
        return Err(format!(
            "not a 64-bit x86_64 ELF binary: the guest is x86_64 (a Rust crate: {STATIC_BUILD})"
        ));
    }
    let truncated = || "a truncated ELF header".to_string();
    let phoff = u64_at(0x20).ok_or_else(truncated)? as usize;
    let phentsize = u16_at(0x36).ok_or_else(truncated)? as usize;
    let phnum = u16_at(0x38).ok_or_else(truncated)? as usize;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(ph).ok_or_else(truncated)? != PT_INTERP {
            continue;
        }
        let off = u64_at(ph + 8).ok_or_else(truncated)? as usize;
        let len = u64_at(ph + 32).ok_or_else(truncated)? as usize;
        let interp = elf
            .get(off..off.saturating_add(len))
            .map(|b| {
                String::from_utf8_lossy(b)
                    .trim_end_matches('\0')
                    .to_string()
            })
            .unwrap_or_default();
        return Err(format!(
            "dynamically linked (it needs the loader {interp}), and the guest has no shared \
             libraries: link it statically (a Rust crate: {STATIC_BUILD})"
        ));
    }
    Ok(())
}

/// Prints results.log's new lines while the guest runs.
struct Echo {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Echo {
    fn start(path: PathBuf) -> Echo {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut printer = EchoPrinter::default();
            let mut file = None;
            let mut buf = Vec::new();
            loop {
                let last = flag.load(Ordering::Acquire);
                // QEMU creates the file when it starts; read on from where
                // the last look ended.
                if file.is_none() {
                    file = fs::File::open(&path).ok();
                }
                if let Some(f) = file.as_mut() {
                    buf.clear();
                    if std::io::Read::read_to_end(f, &mut buf).is_ok() && !buf.is_empty() {
                        print_lines(printer.feed(&buf));
                    }
                }
                if last {
                    print_lines(printer.finish());
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Echo { stop, thread }
    }

    /// Prints what is left and waits for the thread.
    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.thread.join();
    }
}

/// Where an echoed line goes.
#[derive(Debug, PartialEq, Eq)]
enum Stream {
    /// The program's output: the host's stdout, as it is.
    Out,
    /// The other steps' (binding, device listing): stderr, after `guest: `.
    Err,
}

/// Splits the results port's bytes into lines and says where each goes.
#[derive(Default)]
struct EchoPrinter {
    partial: Vec<u8>,
    step: Option<String>,
}

impl EchoPrinter {
    /// The complete lines of what has arrived, for the host to print.
    fn feed(&mut self, bytes: &[u8]) -> Vec<(Stream, String)> {
        self.partial.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).replace('\r', "");
            lines.extend(self.route(line));
        }
        lines
    }

    /// The last line, if it had no newline.
    fn finish(&mut self) -> Option<(Stream, String)> {
        let rest = std::mem::take(&mut self.partial);
        if rest.is_empty() {
            return None;
        }
        self.route(String::from_utf8_lossy(&rest).replace('\r', ""))
    }

    fn route(&mut self, line: String) -> Option<(Stream, String)> {
        if let Some(name) = line.strip_prefix("@@STEP ") {
            self.step = Some(name.trim().to_string());
            None
        } else if line.starts_with("@@RC ") {
            self.step = None;
            None
        } else {
            match self.step.as_deref()? {
                "program" => Some((Stream::Out, line)),
                _ => Some((Stream::Err, line)),
            }
        }
    }
}

fn print_lines(lines: impl IntoIterator<Item = (Stream, String)>) {
    let mut out = std::io::stdout().lock();
    for (stream, line) in lines {
        match stream {
            Stream::Out => {
                let _ = writeln!(out, "{line}");
            }
            Stream::Err => {
                let _ = out.flush();
                eprintln!("guest: {line}");
            }
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-bit x86_64 ELF header with the given program header types (and
    /// for PT_INTERP the loader's name after the headers).
    fn elf(types: &[u32]) -> Vec<u8> {
        let mut e = vec![0u8; 64];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 2;
        e[5] = 1;
        e[18..20].copy_from_slice(&0x3eu16.to_le_bytes());
        e[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        e[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        e[0x38..0x3a].copy_from_slice(&(types.len() as u16).to_le_bytes());
        let interp = b"/lib64/ld-linux-x86-64.so.2\0";
        let interp_at = 64 + 56 * types.len();
        for &t in types {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&t.to_le_bytes());
            ph[8..16].copy_from_slice(&(interp_at as u64).to_le_bytes());
            ph[32..40].copy_from_slice(&(interp.len() as u64).to_le_bytes());
            e.extend(ph);
        }
        e.extend_from_slice(interp);
        e
    }

    #[test]
    fn static_binaries_pass_and_static_pie_too() {
        // PT_LOAD, PT_DYNAMIC (a static PIE has one), PT_GNU_STACK.
        assert_eq!(check_static(&elf(&[1, 2, 0x6474e551])), Ok(()));
    }

    #[test]
    fn a_dynamic_binary_is_refused_with_how_to_build_it_static() {
        let err = check_static(&elf(&[6, 3, 1, 2])).unwrap_err();
        assert!(err.contains("dynamically linked"), "{err}");
        assert!(err.contains("/lib64/ld-linux-x86-64.so.2"), "{err}");
        assert!(err.contains("+crt-static"), "{err}");
        assert!(err.contains("--target x86_64-unknown-linux-gnu"), "{err}");
    }

    #[test]
    fn not_elf_other_machines_and_truncated_headers_are_refused() {
        assert!(check_static(b"#!/bin/sh\necho hi\n")
            .unwrap_err()
            .contains("not an ELF"));
        let mut arm = elf(&[1]);
        arm[18..20].copy_from_slice(&0xb7u16.to_le_bytes());
        assert!(check_static(&arm).unwrap_err().contains("x86_64"));
        let mut short = elf(&[3]);
        short.truncate(80);
        assert!(check_static(&short).unwrap_err().contains("truncated"));
        assert!(check_static(&elf(&[1])[..40])
            .unwrap_err()
            .contains("truncated"));
    }

    #[test]
    fn the_host_system_s_own_programs_are_dynamic() {
        // Debian's /bin/ls needs ld-linux: a real dynamic binary, refused.
        let Ok(ls) = fs::read("/bin/ls") else { return };
        assert!(check_static(&ls)
            .unwrap_err()
            .contains("dynamically linked"));
    }

    #[test]
    fn arguments_are_quoted_for_the_guest_shell() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        let mut run = GuestRun::new("/x/drv");
        run.args = vec!["--name".into(), "it's $HOME".into()];
        run.user = true;
        run.memlock_kib = Some(65536);
        run.env = vec![("RUST_LOG".into(), "debug".into())];
        let step = program_step(&run, "drv", &["drv".into()]);
        assert!(step.contains("export RUST_LOG='debug'"), "{step}");
        assert!(step.contains("ulimit -l 65536"), "{step}");
        let command = r"'/files/drv' '--name' 'it'\''s $HOME'";
        let su = format!("su user -c {} < /dev/null", shell_quote(command));
        assert!(step.ends_with(&su), "{step}");
        run.user = false;
        let root = program_step(&run, "drv", &["drv".into()]);
        assert!(
            root.ends_with(&format!("\n{command} < /dev/null")),
            "{root}"
        );
    }

    #[test]
    fn quoted_words_come_back_whole_from_a_shell() {
        let words = ["plain", "two words", "it's", r#"$HOME `id` \n "q""#, ""];
        let line: Vec<String> = words.iter().map(|w| shell_quote(w)).collect();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf '[%s]' {}", line.join(" ")))
            .output()
            .expect("run sh");
        let want: String = words.iter().map(|w| format!("[{w}]")).collect();
        assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    }

    #[test]
    fn auto_binds_every_device_with_a_known_address_once() {
        let devices = ["edu".to_string(), "e1000".to_string()];
        let addrs = [
            Some("0000:00:03.0".to_string()),
            Some("0000:00:04.0".to_string()),
        ];
        let binds = [Bind::Address("0000:00:04.0".into()), Bind::Auto];
        assert_eq!(
            resolve_binds(&binds, &devices, &addrs).unwrap(),
            ["0000:00:04.0", "0000:00:03.0"]
        );
        let err = resolve_binds(&[Bind::Auto], &devices, &[addrs[0].clone(), None]).unwrap_err();
        assert!(err.to_string().contains("--bind BDF"), "{err}");
        let err = resolve_binds(&[Bind::Auto], &[], &[]).unwrap_err();
        assert!(err.to_string().contains("--device edu"), "{err}");
    }

    #[test]
    fn echo_sorts_lines_by_step() {
        let mut p = EchoPrinter::default();
        let lines = p.feed(b"@@BOOTED 1.0\r\n@@STEP devices\r\n0000:00:03.0 1234:11e8\r\n@@RC devices 0\r\n@@STEP program\r\nhal");
        assert_eq!(lines, [(Stream::Err, "0000:00:03.0 1234:11e8".to_string())]);
        let lines = p.feed(b"f\r\nall\r\n@@RC program 0\r\n@@EXIT 0\r\n");
        assert_eq!(
            lines,
            [
                (Stream::Out, "half".to_string()),
                (Stream::Out, "all".to_string())
            ]
        );
        assert_eq!(p.finish(), None);
        p.feed(b"@@STEP program\nno newline");
        assert_eq!(p.finish(), Some((Stream::Out, "no newline".to_string())));
    }
}
