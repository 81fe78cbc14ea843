//! docs/writing-a-driver.md's "Build it outside this repository and run it in
//! the test machine", as a reader follows it: the shell block between its
//! `guide-copy-out` markers, run as it stands with `bash` and `set -euo
//! pipefail`, copies `examples/edu` out of the workspace, points it at
//! vfio-core by path, builds it static, runs its host tests and runs
//! `edu-demo` in the test machine with `cargo xtask guest` (one boot). The
//! output must show the block ran to its end and edu-demo's results: the
//! factorials and the SHA-256 of the pattern back by DMA, both computed here.
//!
//! `VFIO_RS` is the workspace root; `WORK` a directory emptied first, at
//! `target/guide-copy-out/work`: inside this workspace, so the block's own
//! `[workspace]` table is what keeps Cargo from refusing the copy. No
//! `CARGO_TARGET_DIR` or `RUSTFLAGS` reaches the block: the copy builds into
//! its own `$WORK/edu/target`, where the guide says the binary is. Only to
//! keep the suite fast, that `target` is made, before the block runs, a
//! symbolic link to `target/guide-copy-out/cache`, which outlives the run: the
//! copy's dependencies (vfio-core included) are compiled once, and the copy
//! itself every time (its sources are new).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use vfio_tests::{image, workspace_root};

const GUIDE: &str = "docs/writing-a-driver.md";
const BEGIN: &str = "<!-- guide-copy-out: begin -->";
const END: &str = "<!-- guide-copy-out: end -->";
/// Printed by this test after the block's last command.
const RAN_TO_THE_END: &str = "guide-copy-out: the block ran to its end";
/// Two cold release and debug builds on two cores, then the boot.
const TIMEOUT: Duration = Duration::from_secs(40 * 60);

/// The commands of the fenced `sh` block between the markers.
fn block(guide: &str) -> String {
    assert_eq!(guide.matches(BEGIN).count(), 1, "one {BEGIN} in {GUIDE}");
    assert_eq!(guide.matches(END).count(), 1, "one {END} in {GUIDE}");
    let start = guide.find(BEGIN).unwrap() + BEGIN.len();
    let end = guide.find(END).unwrap();
    assert!(start < end, "{BEGIN} comes before {END}");
    let inner = guide[start..end].trim();
    let body = inner
        .strip_prefix("```sh\n")
        .and_then(|b| b.strip_suffix("```"))
        .unwrap_or_else(|| panic!("a ```sh block and nothing else between the markers:\n{inner}"));
    body.to_string()
}

/// The target directory of this workspace (as the image's build finds it).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Runs `script` with bash in `cwd` and the environment given, in a process
/// group of its own (killed at the deadline); its merged stdout and stderr,
/// echoed as they come, and its exit status.
fn run_bash(script: &str, cwd: &Path, env: &[(&str, &Path)]) -> (String, Option<i32>) {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(script)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(writer.try_clone().expect("dup the pipe"))
        .stderr(writer)
        .process_group(0);
    // What a reader's shell would not have: the outer build's settings.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_BUILD_BUILD_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().expect("start bash");
    drop(cmd); // its copies of the pipe's write end
    let echo = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(reader).lines() {
            let line = line.unwrap_or_else(|e| format!("<unreadable output: {e}>"));
            println!("{line}");
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for bash") {
            break status.code();
        }
        if Instant::now() > deadline {
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    (echo.join().expect("the output"), status)
}

/// The value of the first `key=value` line for `key`.
fn kv<'a>(out: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    out.lines()
        .map(str::trim_end)
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key}= line in the output:\n{out}"))
}

fn kv_num(out: &str, key: &str) -> u64 {
    let v = kv(out, key);
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    parsed.unwrap_or_else(|e| panic!("{key}={v} is not a number ({e}):\n{out}"))
}

/// edu-demo's pattern of `len` bytes, byte i being (i * 31 + i / 256) mod
/// 256, hashed here.
fn pattern_sha256(len: usize) -> String {
    let pattern: Vec<u8> = (0..len).map(|i| ((i * 31 + i / 256) % 256) as u8).collect();
    format!("{:x}", Sha256::digest(&pattern))
}

#[test]
fn the_guide_s_copy_out_block_builds_the_edu_driver_outside_and_runs_it_in_the_test_machine() {
    image::get().expect("the guest image (run `cargo xtask setup`)");
    let root = workspace_root();
    let guide = std::fs::read_to_string(root.join(GUIDE)).expect(GUIDE);
    let block = block(&guide);

    let base = target_dir().join("guide-copy-out");
    let (work, cache) = (base.join("work"), base.join("cache"));
    if work.exists() {
        std::fs::remove_dir_all(&work).expect("empty WORK");
    }
    std::fs::create_dir_all(work.join("edu")).expect("WORK/edu");
    std::fs::create_dir_all(&cache).expect("the build cache");
    std::os::unix::fs::symlink(&cache, work.join("edu/target")).expect("WORK/edu/target");

    let script = format!("set -euo pipefail\n{block}\necho '{RAN_TO_THE_END}'\n");
    let start = Instant::now();
    let (out, status) = run_bash(&script, &work, &[("VFIO_RS", root), ("WORK", &work)]);
    eprintln!("guide-copy-out: the block took {:.1?}", start.elapsed());
    assert_eq!(status, Some(0), "the block's exit status:\n{out}");
    assert!(
        out.lines().last() == Some(RAN_TO_THE_END),
        "the block ran to its end:\n{out}"
    );

    // The copy's host tests ran, and passed.
    assert!(
        out.contains("test result: ok."),
        "cargo test's results:\n{out}"
    );
    let binary = work.join("edu/target/x86_64-unknown-linux-gnu/release/edu-demo");
    assert!(binary.is_file(), "{} was built", binary.display());

    // edu-demo in the guest, with MSI, on the edu the tool put at 03.0.
    assert!(out.contains("0000:00:03.0"), "the edu's address:\n{out}");
    assert_eq!(kv(&out, "edu.address"), "0000:00:03.0");
    assert_eq!(kv(&out, "edu.irq"), "msi");
    assert_eq!(kv(&out, "liveness"), "ok");
    let factorials: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("factorial."))
        .collect();
    let want: Vec<String> = (0..=12u64)
        .map(|n| format!("factorial.{n}={}", (1..=n).product::<u64>()))
        .collect();
    assert_eq!(factorials, want, "the factorials of 0 to 12:\n{out}");
    let len = kv_num(&out, "dma.len");
    assert_eq!(len, 4095, "all a transfer reaches on QEMU 7.2");
    assert_eq!(
        kv(&out, "dma.sha256"),
        pattern_sha256(len as usize),
        "the bytes that came back by DMA"
    );
    assert_eq!(kv(&out, "dma.match"), "true");
    for key in ["dma.to_device_iova", "dma.from_device_iova"] {
        assert!(
            kv_num(&out, key) + len <= 1 << 28,
            "{key} below edu's 28-bit limit"
        );
    }
    assert_eq!(kv_num(&out, "irq.raised_status") & 0x5a00_0000, 0x5a00_0000);
    // The raised one, 13 factorials and 2 transfers.
    assert_eq!(
        kv_num(&out, "irq.handled"),
        16,
        "interrupts handled:\n{out}"
    );
}
