//! Every tool, run on the host with bad arguments: malformed PCI addresses,
//! bad MACs, durations that are not finite positive numbers of seconds or are
//! too long, zero and huge queue depths, batches and sizes, unknown flags,
//! missing arguments, an unknown user for devbind, and well-formed addresses
//! of devices this machine does not have. No root and no VFIO needed: each
//! case must be refused before anything is opened.
//!
//! The rule each case is held to:
//! - exit status 2 for what clap refuses, 1 for what the tool refuses after
//!   parsing (a device that does not exist, an output path it cannot create);
//! - stderr is one message line: `error: ...` from clap (which may add
//!   indented detail lines, such as the list of missing arguments or a
//!   `tip:`, then its usage hint: `Usage: ...` and `For more information,
//!   try '--help'.`, and blank lines), or exactly one line `<tool>: ...`;
//! - the message names the argument (or the path, or the device);
//! - "panicked" appears nowhere, and nothing is created on disk (every run
//!   happens in an empty directory, which must stay empty).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A well-formed address of a device no machine here has.
const NX: &str = "ffff:ff:1f.7";
const NX2: &str = "ffff:fe:1f.7";

/// Durations every `--seconds`-like argument refuses.
const BAD_SECONDS: [&str; 8] = ["nan", "inf", "-inf", "1e300", "-1", "0", "604801", "5s"];

fn exe(tool: &str) -> &'static str {
    match tool {
        "devbind" => env!("CARGO_BIN_EXE_devbind"),
        "nvme-io" => env!("CARGO_BIN_EXE_nvme-io"),
        "nvme-perf" => env!("CARGO_BIN_EXE_nvme-perf"),
        "nvme-copy" => env!("CARGO_BIN_EXE_nvme-copy"),
        "nic-pktgen" => env!("CARGO_BIN_EXE_nic-pktgen"),
        "nic-echo" => env!("CARGO_BIN_EXE_nic-echo"),
        "forwarder" => env!("CARGO_BIN_EXE_forwarder"),
        "receiver" => env!("CARGO_BIN_EXE_receiver"),
        "udp-sink" => env!("CARGO_BIN_EXE_udp-sink"),
        "copy-bench" => env!("CARGO_BIN_EXE_copy-bench"),
        _ => panic!("no tool {tool}"),
    }
}

/// One bad invocation: the tool, its arguments, the exit status and a piece
/// of text the message must hold (the argument's name, a path, a device).
struct Case {
    tool: &'static str,
    args: Vec<String>,
    code: i32,
    names: String,
}

fn case(tool: &'static str, args: &[&str], code: i32, names: &str) -> Case {
    Case {
        tool,
        args: args.iter().map(|a| a.to_string()).collect(),
        code,
        names: names.to_string(),
    }
}

/// `base` with `extra` appended.
fn with(base: &[&str], extra: &[&str]) -> Vec<String> {
    base.iter().chain(extra).map(|a| a.to_string()).collect()
}

fn cases() -> Vec<Case> {
    let mut c = Vec::new();
    let mut seconds = |tool: &'static str, base: &[&str], flag: &str| {
        for bad in BAD_SECONDS {
            c.push(Case {
                tool,
                args: with(base, &[flag, bad]),
                code: 2,
                names: flag.to_string(),
            });
        }
    };
    seconds("nvme-perf", &["--device", NX], "--seconds");
    seconds("nic-echo", &["--device", NX], "--seconds");
    seconds(
        "receiver",
        &["--nic", NX, "--nvme", NX2, "--port", "9000"],
        "--idle-seconds",
    );
    seconds(
        "udp-sink",
        &["--port", "0", "--output", "out.bin"],
        "--idle-seconds",
    );
    let not_found = "does not exist";

    // devbind
    c.push(case("devbind", &[], 2, "subcommand"));
    c.push(case("devbind", &["frob"], 2, "'frob'"));
    c.push(case("devbind", &["bind"], 2, "<BDF>"));
    c.push(case(
        "devbind",
        &["bind", "0000:00:03"],
        2,
        "invalid PCI address",
    ));
    c.push(case("devbind", &["bind", "00:3g.0"], 2, "<BDF>"));
    c.push(case(
        "devbind",
        &["unbind", "0000:00:20.0"],
        2,
        "device number out of range",
    ));
    c.push(case(
        "devbind",
        &["bind", "--user", "no-such-user-here", NX],
        2,
        "--user",
    ));
    c.push(case(
        "devbind",
        &["bind", "--user", "root:no-such-group", NX],
        2,
        "/etc/group",
    ));
    c.push(case(
        "devbind",
        &["bind", "--user", "4294967296", NX],
        2,
        "--user",
    ));
    c.push(case("devbind", &["bind", "--user", "", NX], 2, "--user"));
    c.push(case("devbind", &["unbind", "--force", NX], 2, "--force"));
    c.push(case("devbind", &["status", "extra"], 2, "'extra'"));
    c.push(case("devbind", &["bind", NX], 1, not_found));
    c.push(case(
        "devbind",
        &["bind", "--user", "0:0", NX],
        1,
        not_found,
    ));
    c.push(case("devbind", &["unbind", NX, NX2], 1, not_found));

    // nvme-copy, and the NVMe options every NVMe tool shares
    let copy = |extra: &[&str]| -> Vec<String> {
        let base = ["--device", NX, "--lba", "0", "--blocks", "8"];
        with(&base, &[&["--output", "out.bin"], extra].concat())
    };
    c.push(case("nvme-copy", &[], 2, "--device"));
    for (flag, bad) in [
        ("--io-size", "100"),
        ("--queue-depth", "0"),
        ("--blocks", "0"),
        ("--data-pointer", "scattered"),
    ] {
        c.push(Case {
            tool: "nvme-copy",
            args: copy(&[flag, bad]),
            code: 2,
            names: flag.into(),
        });
    }
    c.push(Case {
        tool: "nvme-copy",
        args: copy(&["--interrupts"]),
        code: 1,
        names: not_found.into(),
    });
    c.push(case(
        "nvme-io",
        &["--device", NX, "--queue-depth", "0", "identify"],
        2,
        "--queue-depth",
    ));
    c.push(case(
        "nvme-io",
        &[
            "--device",
            NX,
            "read",
            "--lba",
            "0",
            "--blocks",
            "1",
            "--output",
            "o",
            "--io-size",
            "0",
        ],
        2,
        "--io-size",
    ));

    // nvme-io
    let read = |lba: &str, blocks: &str| -> Vec<String> {
        with(
            &["--device", NX, "read", "--lba", lba, "--blocks", blocks],
            &["--output", "out.bin"],
        )
    };
    c.push(case("nvme-io", &[], 2, "subcommand"));
    c.push(case("nvme-io", &["--device", NX], 2, "subcommand"));
    c.push(case(
        "nvme-io",
        &["--device", "0000:00:03", "identify"],
        2,
        "--device",
    ));
    c.push(case(
        "nvme-io",
        &["--device", NX, "--nsid", "0", "identify"],
        2,
        "--nsid",
    ));
    c.push(case(
        "nvme-io",
        &["--device", NX, "--nsid", "4294967295", "identify"],
        2,
        "--nsid",
    ));
    c.push(case(
        "nvme-io",
        &["--device", NX, "frobnicate"],
        2,
        "'frobnicate'",
    ));
    c.push(case(
        "nvme-io",
        &["--device", NX, "read", "--lba", "0", "--blocks", "1"],
        2,
        "--output",
    ));
    c.push(Case {
        tool: "nvme-io",
        args: read("-1", "1"),
        code: 2,
        names: "--lba".into(),
    });
    c.push(Case {
        tool: "nvme-io",
        args: read("0", "x"),
        code: 2,
        names: "--blocks".into(),
    });
    c.push(Case {
        tool: "nvme-io",
        args: read("0", "1"),
        code: 1,
        names: not_found.into(),
    });
    c.push(case(
        "nvme-io",
        &["--device", NX, "zero", "--lba", "0", "--blocks", "0"],
        2,
        "--blocks",
    ));
    c.push(case(
        "nvme-io",
        &["--device", NX, "write", "--lba", "0"],
        2,
        "--input",
    ));
    c.push(case("nvme-io", &["--device", NX, "identify"], 1, not_found));

    // nvme-perf
    let perf = |extra: &[&str]| with(&["--device", NX], extra);
    for (extra, names) in [
        (&["--queue-depth", "0"][..], "--queue-depth"),
        (&["--queue-depth", "1024"], "--queue-depth"),
        (&["--queue-depth", "70000"], "--queue-depth"),
        (&["--queue-depth", "-1"], "--queue-depth"),
        (&["--batch", "0"], "--batch"),
        (&["--batch", "99999999999999999999"], "--batch"),
        (&["--batch", "64", "--queue-depth", "32"], "--batch"),
        (&["--queues", "0"], "--queues"),
        (&["--queues", "1000"], "--queues"),
        (&["--io-size", "0"], "--io-size"),
        (&["--io-size", "4294967296"], "--io-size"),
        (&["--pattern", "sideways"], "--pattern"),
        (&["--warmup", "-0.5"], "--warmup"),
        (&["--warmup", "nan"], "--warmup"),
        (&["--nsid", "0"], "--nsid"),
        (&["--bogus"], "--bogus"),
    ] {
        c.push(Case {
            tool: "nvme-perf",
            args: perf(extra),
            code: 2,
            names: names.into(),
        });
    }
    c.push(case("nvme-perf", &[], 2, "--device"));
    c.push(case(
        "nvme-perf",
        &["--device", "0000:00:1f.8"],
        2,
        "--device",
    ));
    c.push(case("nvme-perf", &["--device", NX], 1, not_found));
    c.push(case(
        "nvme-perf",
        &["--device", NX, "--baseline"],
        1,
        not_found,
    ));

    // nic-pktgen
    let gen = |extra: &[&str]| with(&["--device", NX], extra);
    for (extra, names) in [
        (&["--dst-mac", "52:54:00:12:34"][..], "--dst-mac"),
        (&["--dst-mac", "52:54:00:12:34:zz"], "--dst-mac"),
        (&["--dst-mac", "52:54:00:12:34:56:78"], "--dst-mac"),
        (&["--dst-mac", "52:54:0:12:34:56"], "--dst-mac"),
        (&["--dst-mac", "5254.0012.3456"], "--dst-mac"),
        (&["--size", "59"], "--size"),
        (&["--size", "1515"], "--size"),
        (&["--batch", "0"], "--batch"),
        (&["--batch", "100000"], "--batch"),
        (&["--count", "0"], "--count"),
        (&["--count", "-3"], "--count"),
        (&["--path", "bogus"], "--path"),
    ] {
        c.push(Case {
            tool: "nic-pktgen",
            args: gen(extra),
            code: 2,
            names: names.into(),
        });
    }
    c.push(case("nic-pktgen", &["--device", "bogus"], 2, "--device"));
    c.push(case("nic-pktgen", &["--device", NX], 1, not_found));

    // nic-echo
    for (extra, names) in [
        (&["--batch", "0"][..], "--batch"),
        (&["--batch", "257"], "--batch"),
        (&["--count", "0"], "--count"),
        (&["--interrupts", "yes"], "'yes'"),
    ] {
        c.push(Case {
            tool: "nic-echo",
            args: with(&["--device", NX], extra),
            code: 2,
            names: names.into(),
        });
    }
    c.push(case("nic-echo", &[], 2, "--device"));
    c.push(case("nic-echo", &["--device", "02:00"], 2, "--device"));
    c.push(case(
        "nic-echo",
        &["--device", NX, "--seconds", "1"],
        1,
        not_found,
    ));

    // forwarder
    let fwd = [
        "--nvme",
        NX,
        "--nic",
        NX2,
        "--dst-mac",
        "52:54:00:12:34:56",
        "--dst-ip",
        "192.0.2.1",
        "--dst-port",
        "9000",
    ];
    for (extra, names) in [
        (&["--dst-mac", "52:54:00:12:34:5"][..], "--dst-mac"),
        (&["--dst-ip", "192.0.2"], "--dst-ip"),
        (&["--dst-port", "0"], "--dst-port"),
        (&["--dst-port", "65536"], "--dst-port"),
        (&["--src-port", "0"], "--src-port"),
        (&["--mtu", "1400"], "--mtu"),
        (&["--queue-depth", "0"], "--queue-depth"),
        (&["--queue-depth", "65535"], "--queue-depth"),
        (&["--max-mbps", "nan"], "--max-mbps"),
        (&["--max-mbps", "inf"], "--max-mbps"),
        (&["--max-mbps", "0"], "--max-mbps"),
        (&["--max-mbps", "-5"], "--max-mbps"),
        (&["--blocks", "0"], "--blocks"),
        (&["--bytes", "0"], "--bytes"),
        (&["--bytes", "1", "--blocks", "1"], "--blocks"),
        (&["--nsid", "0"], "--nsid"),
        (&["--lba", "-1"], "--lba"),
        (&["--nvme", "0000:00:03.8"], "--nvme"),
    ] {
        c.push(Case {
            tool: "forwarder",
            args: with(&fwd, extra),
            code: 2,
            names: names.into(),
        });
    }
    c.push(case("forwarder", &fwd[..8], 2, "--dst-port"));
    c.push(case("forwarder", &fwd, 1, not_found));

    // receiver
    let recv = ["--nic", NX, "--nvme", NX2, "--port", "9000"];
    for (extra, names) in [
        (&["--staging-mib", "0"][..], "--staging-mib"),
        (&["--staging-mib", "1025"], "--staging-mib"),
        (&["--staging-mib", "99999999999999999999"], "--staging-mib"),
        (&["--window", "0"], "--window"),
        (&["--window", "63"], "--window"),
        (&["--window", "4294967296"], "--window"),
        (&["--max-bytes", "0"], "--max-bytes"),
        (&["--port", "0"], "--port"),
        (&["--nic", "x"], "--nic"),
        (&["--nsid", "0"], "--nsid"),
    ] {
        c.push(Case {
            tool: "receiver",
            args: with(&recv, extra),
            code: 2,
            names: names.into(),
        });
    }
    c.push(case("receiver", &recv[..4], 2, "--port"));
    c.push(case("receiver", &recv, 1, not_found));

    // udp-sink
    let sink = ["--port", "0", "--output", "out.bin"];
    for (extra, names) in [
        (&["--max-bytes", "0"][..], "--max-bytes"),
        (&["--max-bytes", "9223372036854775808"], "--max-bytes"),
        (&["--window", "1"], "--window"),
        (&["--port", "70000"], "--port"),
    ] {
        c.push(Case {
            tool: "udp-sink",
            args: with(&sink, extra),
            code: 2,
            names: names.into(),
        });
    }
    c.push(case("udp-sink", &["--port", "0"], 2, "--output"));
    c.push(case(
        "udp-sink",
        &["--port", "0", "--output", "no-such-dir/out.bin"],
        1,
        "no-such-dir/out.bin",
    ));
    c.push(case(
        "udp-sink",
        &["--port", "0", "--output", "."],
        1,
        "cannot create .",
    ));

    // copy-bench
    let bench = [
        "--disk",
        "no-such-disk",
        "--bytes",
        "4096",
        "--dst-ip",
        "127.0.0.1",
    ];
    for (extra, names) in [
        (&["--bytes", "0"][..], "--bytes"),
        (&["--bytes", "-5"], "--bytes"),
        (&["--port", "0"], "--port"),
        (&["--port", "65532"], "--port"),
        (&["--dst-ip", "256.0.0.1"], "--dst-ip"),
    ] {
        c.push(Case {
            tool: "copy-bench",
            args: with(&bench, extra),
            code: 2,
            names: names.into(),
        });
    }
    c.push(case("copy-bench", &bench[2..], 2, "--disk"));
    c.push(case("copy-bench", &bench, 1, "no-such-disk"));
    c
}

/// Lines clap adds after its message: details (indented), the usage hint
/// and blank lines.
fn clap_hint(line: &str) -> bool {
    line.is_empty()
        || line.starts_with("  ")
        || line.starts_with("Usage: ")
        || line == "For more information, try '--help'."
}

/// Runs one case in the empty directory `dir`; returns what is wrong with
/// the result, if anything.
fn check(c: &Case, dir: &Path) -> Result<(), String> {
    let start = Instant::now();
    let mut child = Command::new(exe(c.tool))
        .args(&c.args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run: {e}"))?;
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            return Err("still running after 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let seen = format!(
        "exit {:?}\nstderr:\n{stderr}stdout:\n{stdout}",
        out.status.code()
    );
    if stderr.contains("panicked") || stdout.contains("panicked") {
        return Err(format!("panicked: {seen}"));
    }
    if out.status.code() != Some(c.code) {
        return Err(format!("expected exit status {}: {seen}", c.code));
    }
    let mut lines = stderr.lines();
    let first = lines.next().unwrap_or_default();
    let rest: Vec<&str> = lines.collect();
    let message = match c.code {
        2 => {
            if !first.starts_with("error: ") || !rest.iter().all(|l| clap_hint(l)) {
                return Err(format!("not one `error:` line and clap's hint: {seen}"));
            }
            let details = rest.iter().filter(|l| l.starts_with("  ")).copied();
            std::iter::once(first)
                .chain(details)
                .collect::<Vec<_>>()
                .join("\n")
        }
        _ => {
            if !first.starts_with(&format!("{}: ", c.tool)) || !rest.is_empty() {
                return Err(format!("not exactly one line `{}: ...`: {seen}", c.tool));
            }
            first.to_string()
        }
    };
    if !message.contains(&c.names) {
        return Err(format!("the message does not name {:?}: {seen}", c.names));
    }
    let created: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    if !created.is_empty() {
        return Err(format!("created {created:?}: {seen}"));
    }
    Ok(())
}

#[test]
fn every_tool_refuses_bad_arguments_with_one_clear_line_and_touches_nothing() {
    let cases = cases();
    let mut tools: Vec<&str> = cases.iter().map(|c| c.tool).collect();
    tools.dedup();
    assert_eq!(
        tools,
        [
            "nvme-perf",
            "nic-echo",
            "receiver",
            "udp-sink",
            "devbind",
            "nvme-copy",
            "nvme-io",
            "nvme-perf",
            "nic-pktgen",
            "nic-echo",
            "forwarder",
            "receiver",
            "udp-sink",
            "copy-bench"
        ],
        "every tool is in the table"
    );
    let start = Instant::now();
    let mut failures = Vec::new();
    for c in &cases {
        let dir = tempfile::tempdir().expect("a temporary directory");
        if let Err(e) = check(c, dir.path()) {
            failures.push(format!("{} {}: {e}", c.tool, c.args.join(" ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    eprintln!(
        "{} bad invocations refused in {:?}",
        cases.len(),
        start.elapsed()
    );
}

/// A device of this machine that is not on vfio-pci, from sysfs.
fn device_not_on_vfio() -> Option<String> {
    std::fs::read_dir("/sys/bus/pci/devices")
        .ok()?
        .flatten()
        .find(|e| {
            std::fs::read_link(e.path().join("driver")).map_or(true, |d| !d.ends_with("vfio-pci"))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
}

#[test]
fn devbind_unbind_of_a_device_not_on_vfio_pci_changes_nothing_and_says_so() {
    let Some(dev) = device_not_on_vfio() else {
        // Containers without PCI devices: the guest test covers this too.
        eprintln!("no PCI device here; skipped");
        return;
    };
    let driver = |dev: &str| std::fs::read_link(format!("/sys/bus/pci/devices/{dev}/driver")).ok();
    let before = driver(&dev);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let c = case("devbind", &["unbind", &dev], 1, "is not on vfio-pci");
    check(&c, dir.path()).unwrap_or_else(|e| panic!("devbind unbind {dev}: {e}"));
    assert_eq!(driver(&dev), before, "{dev} keeps its driver");
}
