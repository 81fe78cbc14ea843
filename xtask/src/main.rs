//! The README's commands.
//!
//! - `cargo xtask demo`: set up, boot the QEMU machine and run the main job.
//! - `cargo xtask test`: set up, then every check and test (format, clippy,
//!   rustdoc, the packaging check, fuzzing, Miri, host unit tests and the
//!   guest tests in the QEMU machine).
//! - `cargo xtask bench`: the benchmarks beside their kernel baselines, in the
//!   QEMU machine (emulator numbers: compare the ratios); `bench-copy` only
//!   the copy-bench (the forwarder beside the kernel's copy paths).
//! - `cargo xtask bench-host`: instructions per I/O of the drivers on the
//!   host, on the software device models, under callgrind (no QEMU):
//!   `target/bench-host.json` and the plot `target/bench-host.svg`.
//! - `cargo xtask fuzz`: only the bounded fuzz runs (part of `test`).
//! - `cargo xtask package`: only the packaging check (part of `test`):
//!   `cargo package` of vfio-core, nvme-driver and nic-driver, each built
//!   from its packaged form as crates.io would have it.
//! - `cargo xtask miri`: only the Miri run of the host tests that reach
//!   `unsafe` code or DMA memory (part of `test`).
//! - `cargo xtask setup`: only install/download what the machine needs.
//! - `cargo xtask guest [OPTIONS] BINARY [-- ARGS]`: any static binary in
//!   the QEMU machine, on the QEMU devices named, bound to vfio-pci, as root
//!   or an unprivileged user; exits with its status (see `guest.rs`).

use std::process::{Command, ExitCode};
use std::time::Instant;

mod bench_host;
mod guest;

use vfio_tests::{check, image, machine::Machine, provision, wire, workspace_root};

/// Each command and what it does, for `cargo xtask help` and mistakes.
const COMMANDS: &str = "\
usage: cargo xtask <COMMAND>

  demo        set up, boot the QEMU machine and run the main job
  test        every check and test, guest tests included (what CI runs)
  guest       run a static binary of yours in the QEMU machine on the devices
              you name, bound to vfio-pci (`cargo xtask guest --help`)
  bench       the benchmarks beside their kernel baselines, in the machine
  bench-nvme  only the NVMe benchmark
  bench-nic   only the NIC benchmarks (e1000, virtio-net)
  bench-copy  only copy-bench (the forwarder beside the kernel's copy paths)
  bench-host  instructions per I/O of the drivers on the host, under callgrind
  fuzz        only the bounded fuzz runs
  miri        only the Miri run of the host tests that reach unsafe code
  package     only the packaging check of the three library crates
  setup       only install/download what the machine needs, build its image
  help        this list";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let task = args.get(1).cloned().unwrap_or_default();
    let result = match task.as_str() {
        // Its own exit status: the guest program's.
        "guest" => return guest::guest(&args[2..]),
        "help" | "--help" | "-h" => {
            println!("{COMMANDS}");
            return ExitCode::SUCCESS;
        }
        "setup" => setup().map(|_| ()),
        "test" => test(),
        "demo" => demo(),
        "fuzz" => setup().and_then(|image| fuzz(&image)),
        "miri" => miri(),
        "package" => package(),
        "bench" => bench(),
        "bench-nvme" => setup().and_then(|_| bench_nvme()),
        "bench-nic" => setup()
            .and_then(|_| bench_nic("e1000"))
            .and_then(|_| bench_nic(vfio_tests::machine::VIRTIO_NET)),
        "bench-copy" => setup()
            .and_then(|_| bench_copy("iommu=strict"))
            .and_then(|_| bench_copy("iommu=pt")),
        "bench-host" => bench_host::bench_host(),
        "" => {
            eprintln!("{COMMANDS}");
            return ExitCode::FAILURE;
        }
        other => Err(format!("unknown command `{other}`\n{COMMANDS}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn setup() -> Result<image::GuestImage, String> {
    let tools = provision::setup().map_err(|e| e.to_string())?;
    eprintln!(
        "setup: QEMU {}, kernel {}",
        tools.qemu.display(),
        tools.kernel.version
    );
    let start = Instant::now();
    let img = image::build(tools).map_err(|e| e.to_string())?;
    eprintln!(
        "setup: guest image {} built in {:.1?}",
        img.initramfs.display(),
        start.elapsed()
    );
    Ok(img)
}

fn cargo(args: &[&str], image: &image::GuestImage) -> Result<(), String> {
    cargo_env(args, image, &[])
}

fn cargo_env(args: &[&str], image: &image::GuestImage, env: &[(&str, &str)]) -> Result<(), String> {
    let image = image.initramfs.as_os_str();
    let env: Vec<(&str, &std::ffi::OsStr)> = std::iter::once(("VFIO_RS_GUEST_IMAGE", image))
        .chain(env.iter().map(|(k, v)| (*k, std::ffi::OsStr::new(v))))
        .collect();
    run_cargo(args, &env)
}

/// Runs cargo (the one running xtask) in the workspace with `args` and the
/// extra environment `env`; an error unless it succeeds.
fn run_cargo(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Result<(), String> {
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(args)
        .current_dir(workspace_root())
        .envs(env.iter().copied())
        .status()
        .map_err(|e| format!("start cargo: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("cargo {} failed", args.join(" ")))
}

/// Seconds each fuzz target runs in `cargo xtask test`.
const FUZZ_SECONDS: u32 = 10;

/// Every cargo-fuzz target (fuzz/fuzz_targets) for a bounded run, from its
/// committed seeds (`fuzz/seeds/<target>`) plus what earlier runs found.
/// libFuzzer without a sanitizer (`-s none`) builds with the stable
/// toolchain; Rust's own checks (bounds, overflow in debug assertions) and
/// the targets' assertions are what fail. cargo-fuzz is installed into
/// ~/.cargo/bin when missing.
fn fuzz(image: &image::GuestImage) -> Result<(), String> {
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        cargo(&["install", "cargo-fuzz", "--locked"], image)?;
    }
    cargo(
        &["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"],
        image,
    )?;
    let list = Command::new("cargo")
        .args(["fuzz", "list"])
        .current_dir(workspace_root())
        .output()
        .map_err(|e| format!("cargo fuzz list: {e}"))?;
    let targets = String::from_utf8_lossy(&list.stdout).into_owned();
    for t in targets.split_whitespace() {
        let (corpus, seeds) = (format!("fuzz/corpus/{t}"), format!("fuzz/seeds/{t}"));
        // libFuzzer wants the corpus directory to exist (not in git: it grows).
        std::fs::create_dir_all(workspace_root().join(&corpus))
            .map_err(|e| format!("create {corpus}: {e}"))?;
        let time = format!("-max_total_time={FUZZ_SECONDS}");
        let mut args = vec![
            "fuzz",
            "run",
            "-s",
            "none",
            "--debug-assertions",
            t,
            &corpus,
        ];
        if workspace_root().join(&seeds).is_dir() {
            args.push(&seeds);
        }
        args.extend(["--", &time]);
        cargo(&args, image)?;
    }
    Ok(())
}

/// The host tests that reach vfio-core's `unsafe` code or DMA memory, under
/// Miri (nightly), which reports undefined behaviour on the paths they take:
/// vfio-core's DMA memory, pool, MMIO and IOVA tests, and the drivers' tests
/// on software devices (which reach driver memory through the container as a
/// device would). The component is installed when missing; without the
/// nightly toolchain this fails, it does not skip. Miri interprets one thread
/// at a time, so the suites run in two processes side by side (one per core).
fn miri() -> Result<(), String> {
    let start = Instant::now();
    let installed = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .map_err(|e| format!("run rustup: {e}"))?;
    if !installed.status.success() {
        return Err("Miri needs the nightly toolchain: `rustup toolchain install nightly --component miri,rust-src`".into());
    }
    if !String::from_utf8_lossy(&installed.stdout).contains("miri") {
        run_rustup(&[
            "component",
            "add",
            "--toolchain",
            "nightly",
            "miri",
            "rust-src",
        ])?;
    }
    // Two lanes of about equal length: the NIC tests (the drivers' own, and
    // the drivers on the e1000 and virtio-net models, about 45 s); the NVMe
    // model and vfio-core.
    let suites: [&[&str]; 5] = [
        &["-p", "nic-driver", "--lib"],
        &["-p", "nic-driver", "--test", "models"],
        &["-p", "nvme-driver", "--test", "model"],
        &["-p", "nvme-driver", "--test", "shadow"],
        &[
            "-p",
            "vfio-core",
            "--lib",
            "--",
            "dma::",
            "mmio",
            "vfio::container",
            "vfio::lend",
        ],
    ];
    // Two cargos at once: the build directory's lock lets one build at a
    // time, then both run.
    let lanes = [&suites[..2], &suites[2..]];
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = lanes
            .iter()
            .map(|lane| scope.spawn(move || miri_lane(lane)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a Miri lane panicked".into()))
            })
            .collect()
    });
    results.into_iter().collect::<Result<(), String>>()?;
    eprintln!("xtask: Miri found nothing, in {:.0?}", start.elapsed());
    Ok(())
}

/// Runs `suites` one after the other under Miri, printing each one's output
/// whole when it ends (the two lanes would interleave line by line).
fn miri_lane(suites: &[&[&str]]) -> Result<(), String> {
    for suite in suites {
        let mut args = vec!["+nightly", "miri", "test"];
        args.extend_from_slice(suite);
        let line = format!("cargo {}", args.join(" "));
        let out = miri_cargo(&args)
            .output()
            .map_err(|e| format!("start {line}: {e}"))?;
        eprintln!(
            "xtask: {line}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            return Err(format!("{line} failed"));
        }
    }
    Ok(())
}

/// `cargo` from PATH (rustup's proxy), so that `+nightly` picks the toolchain.
///
/// Miri's weak-memory emulation is off (`-Zmiri-disable-weak-memory-emulation`,
/// added to any `MIRIFLAGS` given): DMA memory is read and written with
/// relaxed atomics of several widths (a model's byte copy moves 8-byte words,
/// a driver reads 2- and 4-byte fields of them), and its store buffers do not
/// handle atomic accesses of different sizes to the same bytes, even on one
/// thread: Miri panics ("cannot have partially overlapping store buffer",
/// rust-lang/miri#5185). Data races, and races of different widths, are still
/// reported; only the extra weak behaviours of relaxed loads are not explored.
fn miri_cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new("cargo");
    let flags = std::env::var("MIRIFLAGS").unwrap_or_default();
    let flags = format!("{flags} -Zmiri-disable-weak-memory-emulation");
    cmd.args(args)
        .env("MIRIFLAGS", flags.trim())
        .current_dir(workspace_root());
    cmd
}

/// The library crates a Rust user depends on, as crates.io would get them:
/// `cargo package` lists each one's files (no test data, no path-only
/// dependency) and builds it from that list, the drivers against the packaged
/// vfio-core, in the workspace's target directory (about 15 s the first time,
/// 3 s after). It checks the working tree, committed or not (`--allow-dirty`).
fn package() -> Result<(), String> {
    let start = Instant::now();
    forget_extracted_packages(&["vfio-core", "nvme-driver", "nic-driver"])?;
    let args = [
        "package",
        "-p",
        "vfio-core",
        "-p",
        "nvme-driver",
        "-p",
        "nic-driver",
        "--allow-dirty",
        "--quiet",
    ];
    run_cargo(&args, &[])?;
    eprintln!(
        "xtask: the three crates package and build, in {:.1?}",
        start.elapsed()
    );
    Ok(())
}

/// Removes cargo's extracted sources of `crates` (any version, any
/// registry) from `$CARGO_HOME/registry/src`. `cargo package` verifies each
/// crate against the others through a temporary registry in
/// `target/package/tmp-registry`, whose sources cargo extracts once per
/// registry path and version and never refreshes: a checkout at the same
/// path as an earlier one (CI's) would verify against the earlier code.
/// Cargo extracts them again from the `.crate` files it keeps.
fn forget_extracted_packages(crates: &[&str]) -> Result<(), String> {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")));
    let Some(src) = home.map(|h| h.join("registry/src")) else {
        return Ok(());
    };
    let Ok(registries) = std::fs::read_dir(&src) else {
        return Ok(()); // nothing extracted yet
    };
    for registry in registries.flatten() {
        let Ok(entries) = std::fs::read_dir(registry.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = crates.iter().any(|c| {
                name.strip_prefix(c)
                    .and_then(|v| v.strip_prefix('-'))
                    .is_some_and(|v| v.starts_with(|ch: char| ch.is_ascii_digit()))
            });
            if ours {
                std::fs::remove_dir_all(entry.path())
                    .map_err(|e| format!("remove {}: {e}", entry.path().display()))?;
            }
        }
    }
    Ok(())
}

fn run_rustup(args: &[&str]) -> Result<(), String> {
    eprintln!("xtask: rustup {}", args.join(" "));
    let ok = Command::new("rustup")
        .args(args)
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(())
        .ok_or_else(|| format!("rustup {} failed", args.join(" ")))
}

fn test() -> Result<(), String> {
    let start = Instant::now();
    let image = setup()?;
    cargo(&["fmt", "--all", "--", "--check"], &image)?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ],
        &image,
    )?;
    cargo_env(
        &["doc", "--no-deps", "--workspace", "--quiet"],
        &image,
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    package()?;
    fuzz(&image)?;
    miri()?;
    cargo(&["test", "--workspace", "--", "--test-threads=2"], &image)?;
    eprintln!("xtask test: everything passed in {:.0?}", start.elapsed());
    Ok(())
}

/// The main job: a generated 64 MiB disk image is forwarded by the guest from
/// its NVMe controller to its NIC by DMA; the host reassembles the datagrams
/// from the NIC's wire and checks the hash.
fn demo() -> Result<(), String> {
    setup()?;
    let mut m = Machine::new("demo");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let image = check::random_bytes(64 << 20, seed);
    let disk = m.dir().join("disk.img");
    std::fs::write(&disk, &image).map_err(|e| format!("write {}: {e}", disk.display()))?;
    let nvme = m.nvme(&disk, "");
    let nic = m.e1000("e1000");
    let addr = m.nics_addr(nic);
    m.step("devbind bind", &format!("devbind bind {nvme} {addr}"));
    let dst = vfio_tests::machine::mac_string(&check::HOST_MAC);
    m.step("forwarder", &format!("forwarder --nvme {nvme} --nic {addr} --dst-mac {dst} --dst-ip 192.0.2.1 --dst-port 9000"));
    let running = m.start().map_err(|e| e.to_string())?;
    let capture = wire::Capture::start(&running.nics[nic].socket);
    let out = running.wait().map_err(|e| e.to_string())?;
    let frames = capture.stop();
    print_steps(&out.steps);
    let stream = vfio_tests::dmaf::reassemble(&frames, 9000);
    let (want, got) = (sha256(&image), sha256(&stream.data));
    println!(
        "host: {} datagrams received, {} missing, {} with bad checksums, end marker {:?}",
        stream.seqs.len(),
        stream.missing().len(),
        stream.bad,
        stream.end
    );
    println!("host: image    sha256 {want}");
    println!("host: received sha256 {got}");
    all_ok(&out.steps, "a demo step failed")?;
    if want != got || stream.end != Some(image.len() as u64) {
        return Err("the bytes the host received are not the image's".into());
    }
    println!("demo: the 64 MiB image crossed NVMe -> memory -> e1000 by DMA and arrived intact (QEMU TCG guest, {:.1?} in all)", out.elapsed);
    Ok(())
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

fn bench() -> Result<(), String> {
    setup()?;
    bench_nvme()?;
    bench_nic("e1000")?;
    bench_nic(vfio_tests::machine::VIRTIO_NET)?;
    bench_copy("iommu=strict")?;
    bench_copy("iommu=pt")
}

/// nvme-perf, 4 KiB random reads on one queue, beside the kernel's io_uring
/// (interrupt-driven and polled): queue depth 32 (refilled per completion,
/// and in batches of 8 and 16) and 1, each with shadow doorbells (the
/// default) and again with MMIO doorbells only, with an SGL for every
/// command (the default's 4 KiB reads take PRPs), and in interrupt mode
/// (with each thread's CPU time).
fn bench_nvme() -> Result<(), String> {
    let mut m = Machine::new("bench");
    m.timeout(std::time::Duration::from_secs(900));
    let nvme = m.nvme_zeroed(256 << 20);
    m.step("bind", &format!("devbind bind {nvme}"));
    let perf = |args: &str| format!("nvme-perf --device {nvme} --seconds 5 --baseline {args}");
    let qd32 = "--pattern randread --queue-depth 32 --queues 1";
    let qd1 = "--pattern randread --queue-depth 1 --queues 1";
    // Not reported: the first run in a fresh guest measured 10-25% below
    // the same configuration run later (TCG translating the code paths the
    // first time, the guest's page cache and allocations warming up).
    m.step(
        "warm-up (not a result)",
        &format!("nvme-perf --device {nvme} --seconds 3 {qd32}"),
    );
    m.step("nvme randread qd32", &perf(qd32));
    m.step(
        "nvme randread qd32 mmio doorbells",
        &perf(&format!("{qd32} --no-shadow-doorbells")),
    );
    for batch in [8, 16] {
        let args = format!("--pattern randread --queue-depth 32 --batch {batch} --queues 1");
        m.step(&format!("nvme randread qd32 batch {batch}"), &perf(&args));
    }
    m.step(
        "nvme randread qd32 sgl",
        &perf(&format!("{qd32} --data-pointer sgl")),
    );
    m.step(
        "nvme randread qd32 interrupts",
        &perf(&format!("{qd32} --interrupts")),
    );
    m.step("nvme randread qd1", &perf(qd1));
    m.step(
        "nvme randread qd1 mmio doorbells",
        &perf(&format!("{qd1} --no-shadow-doorbells")),
    );
    m.step(
        "nvme randread qd1 interrupts",
        &perf(&format!("{qd1} --interrupts")),
    );
    let out = m.run().map_err(|e| e.to_string())?;
    print_steps(&out.steps);
    all_ok(&out.steps, "an NVMe benchmark failed")
}

/// copy-bench over 64 MiB: the kernel's copy paths beside the forwarder. The
/// kernel's drivers run with `iommu` (strict: each DMA unmap flushes the
/// emulated IOTLB; pt: no translation for them), the forwarder behind the
/// IOMMU either way. Each stream is checked on the host.
fn bench_copy(iommu: &'static str) -> Result<(), String> {
    let bytes = 64u64 << 20;
    let image = check::random_bytes(bytes as usize, 0xbe);
    let mut b = vfio_tests::copy_bench::machine("bench-copy", &image, bytes);
    b.machine
        .kernel_iommu(iommu)
        .timeout(std::time::Duration::from_secs(900));
    let running = b.machine.start().map_err(|e| e.to_string())?;
    let vfio = wire::Capture::start(&running.nics[b.nic_vfio].socket);
    let kernel = wire::Capture::start(&running.nics[b.nic_kernel].socket);
    let out = running.wait().map_err(|e| e.to_string())?;
    let (vfio, kernel) = (vfio.stop(), kernel.stop());
    let step = out
        .steps
        .iter()
        .find(|s| s.name == "copy-bench")
        .ok_or("copy-bench did not run")?;
    let line = step
        .output
        .lines()
        .find(|l| l.starts_with('['))
        .ok_or_else(|| format!("copy-bench failed:\n{}", step.output))?;
    let rows: Vec<serde_json::Value> = serde_json::from_str(line).map_err(|e| e.to_string())?;
    println!("== copy-bench, 64 MiB, kernel drivers with {iommu} (QEMU TCG guest; speedup = forwarder MB/s / route MB/s)");
    println!("| route | MB/s | CPU s/GB | syscalls | context switches | payload bytes copied by CPU | forwarder speedup | arrived intact |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    let want = sha256(&image);
    for (k, r) in rows.iter().enumerate() {
        let frames = if k == 4 { &vfio } else { &kernel };
        let s = vfio_tests::dmaf::reassemble(frames, vfio_tests::copy_bench::PORT + k as u16);
        println!(
            "| {} | {:.1} | {:.1} | {} | {} | {} | {:.2}x | {} |",
            r["route"].as_str().unwrap_or("?"),
            r["mb_per_s"].as_f64().unwrap_or(0.0),
            r["cpu_seconds_per_gb"].as_f64().unwrap_or(0.0),
            r["syscalls"].as_u64().map_or_else(
                || format!(
                    "not measured ({})",
                    r["syscalls_not_measured"]
                        .as_str()
                        .unwrap_or("no reason given")
                ),
                |n| n.to_string()
            ),
            r["context_switches"],
            r["payload_bytes_copied_by_cpu"].as_u64().map_or_else(
                || format!(
                    "not measured ({})",
                    r["cpu_copies_by_design"].as_str().unwrap_or("?")
                ),
                |n| format!("{n} (measured)")
            ),
            r["forwarder_speedup"].as_f64().unwrap_or(0.0),
            if sha256(&s.data) == want { "yes" } else { "NO" }
        );
    }
    Ok(())
}

fn print_steps(steps: &[vfio_tests::machine::StepResult]) {
    for s in steps {
        println!("== guest$ {} (exit {})\n{}", s.name, s.code, s.output);
    }
}

fn all_ok(steps: &[vfio_tests::machine::StepResult], what: &str) -> Result<(), String> {
    steps
        .iter()
        .all(|s| s.code == 0)
        .then_some(())
        .ok_or_else(|| what.to_string())
}

/// nic-pktgen beside the kernel's AF_PACKET, and nic-echo while the host
/// floods the NIC with 60-byte frames, on QEMU NIC `model`.
fn bench_nic(model: &str) -> Result<(), String> {
    let mut m = Machine::new("bench-nic");
    m.timeout(std::time::Duration::from_secs(900));
    println!("== NIC: {model}");
    let nic = m.e1000(model);
    let addr = m.nics_addr(nic);
    m.step("bind", &format!("devbind bind {addr}"));
    m.step(
        "nic-pktgen 60 bytes batch 32",
        &format!("nic-pktgen --device {addr} --size 60 --count 200000 --batch 32 --baseline"),
    );
    // The same frames through the driver's other transmit path, same boot.
    m.step(
        "nic-pktgen 60 bytes batch 32, path packets",
        &format!("nic-pktgen --device {addr} --size 60 --count 200000 --batch 32 --path packets"),
    );
    m.step(
        "nic-echo 60 bytes",
        &format!("nic-echo --device {addr} --seconds 5"),
    );
    let running = m.start().map_err(|e| e.to_string())?;
    let end = &running.nics[nic];
    let capture = wire::Capture::start(&end.socket);
    running
        .wait_for("echo.ready", std::time::Duration::from_secs(300))
        .map_err(|e| e.to_string())?;
    let frame = check::test_frame(1, 0, 60, check::HOST_MAC, end.mac);
    let start = std::time::Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < std::time::Duration::from_secs(5) {
        if end.socket.send(&frame).is_ok() {
            sent += 1;
        }
    }
    let out = running.wait().map_err(|e| e.to_string())?;
    let back = capture
        .stop()
        .iter()
        .filter(|f| check::test_frame_id(f).is_some())
        .count();
    print_steps(&out.steps);
    println!("host: sent {sent} frames to the echo in 5 s, {back} came back");
    all_ok(&out.steps, "a NIC benchmark failed")
}
