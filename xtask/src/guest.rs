//! `cargo xtask guest`: one static binary of yours in the QEMU test machine,
//! on the devices you name (the library side is [`vfio_tests::guest`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use vfio_tests::guest::{self, Bind, GuestRun};

/// The exit status when the machine could not run the program at all
/// (bad arguments, setup, boot, binding), as `git bisect run` and container
/// runners use it; the program's own status otherwise.
const TOOL_FAILED: u8 = 125;

pub const USAGE: &str = "\
usage: cargo xtask guest [OPTIONS] <STATIC BINARY> [--] [ARGS...]

Boots the QEMU test machine (q35, emulated Intel IOMMU, 1 GiB, TCG) with the
devices you name, binds the ones you choose to vfio-pci, runs the binary in
the guest (as root, or as user 1000 with --user), prints its output and exits
with its exit status (125 if the machine could not run it).

options:
  --device <ARGS>      a QEMU device, as QEMU's -device takes it (repeat for
                       more): `edu`, `e1000`, `nvme,serial=x,drive=...`.
                       Without addr=/bus= they land at 0000:00:03.0,
                       0000:00:04.0, ... in order; the guest's device list
                       (address, vendor:device, driver) is printed first
  --bind <BDF|auto>    bind to vfio-pci before the program runs (repeat);
                       auto: every --device
  --user               run as the unprivileged user `user` (UID 1000), who is
                       given the bound devices' /dev/vfio/N
  --memlock <KIB>      its locked-memory limit, ulimit -l (default unlimited)
  --hugepages <N>      2 MiB hugepages reserved in the guest (default 64)
  --timeout <SECS>     kill the guest after this long (default 300)
  --file <PATH>        copy a host file to /files/<name> in the guest (repeat)
  --env <KEY=VALUE>    set an environment variable for the program (repeat)
  -h, --help           this text

The binary must be statically linked (the guest has no shared libraries):
  RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu
It runs as /files/<name> in /tmp, stdin /dev/null, stdout and stderr merged.
Logs of the boot: target/qemu-runs/guest-<name>/.

example:
  cargo xtask guest --device edu --bind auto --user target/x86_64-unknown-linux-gnu/release/my-driver -- --device 0000:00:03.0";

/// What the command line asked for.
#[derive(Debug)]
enum Parsed {
    Help,
    Run(Box<GuestRun>),
}

/// `cargo xtask guest ARGS`: sets the machine up (as the other commands do),
/// runs, and exits with the program's status.
pub fn guest(args: &[String]) -> ExitCode {
    let run = match parse(args) {
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Run(run)) => run,
        Err(e) => {
            eprintln!("xtask guest: {e} (see `cargo xtask guest --help`)");
            return ExitCode::from(TOOL_FAILED);
        }
    };
    match setup().and_then(|()| run_and_report(&run)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("xtask guest: {e}");
            ExitCode::from(TOOL_FAILED)
        }
    }
}

/// The provisioning half of `cargo xtask setup` (packages, kernel), quietly
/// when there is nothing to do, as the other commands set up first; the
/// guest image is built (or found current) by `image::get`.
fn setup() -> Result<(), String> {
    vfio_tests::provision::setup()
        .map(|_| ())
        .map_err(|e| format!("{e}\n(the test machine is set up by `cargo xtask setup`)"))
}

fn run_and_report(run: &GuestRun) -> Result<u8, String> {
    // Refuse a dynamic binary before the image is built and QEMU starts.
    let bytes = std::fs::read(&run.program)
        .map_err(|e| format!("cannot read {}: {e}", run.program.display()))?;
    guest::check_static(&bytes).map_err(|why| format!("{}: {why}", run.program.display()))?;
    vfio_tests::image::get().map_err(|e| e.to_string())?;
    eprintln!(
        "xtask guest: booting with {} device(s), running {} as {}",
        run.devices.len(),
        run.program.display(),
        if run.user { "user (UID 1000)" } else { "root" }
    );
    let out = guest::run(run).map_err(|e| e.to_string())?;
    eprintln!(
        "xtask guest: {} exited with status {} ({:.1?} boot to power-off; logs in {})",
        run.program.display(),
        out.status,
        out.elapsed,
        out.dir.display()
    );
    Ok(u8::try_from(out.status).unwrap_or(TOOL_FAILED))
}

fn parse(args: &[String]) -> Result<Parsed, String> {
    let mut run = GuestRun::new(PathBuf::new());
    run.echo = true;
    let mut program = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |what: &str| {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value: {flag} <{what}>"))
        };
        match flag {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--device" => run.devices.push(value("qemu -device args")?),
            "--bind" => run.bind.push(match value("BDF|auto")?.as_str() {
                "auto" => Bind::Auto,
                bdf => Bind::Address(bdf.to_string()),
            }),
            "--user" => run.user = true,
            "--memlock" => {
                let v = value("KIB")?;
                run.memlock_kib = match v.as_str() {
                    "unlimited" => None,
                    n => Some(number(flag, n)?),
                };
            }
            "--hugepages" => run.hugepages = number(flag, &value("N")?)?,
            "--timeout" => run.timeout = Duration::from_secs(number(flag, &value("SECS")?)?),
            "--file" => run.files.push(PathBuf::from(value("PATH")?)),
            "--env" => {
                let v = value("KEY=VALUE")?;
                let (k, v) = v
                    .split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| format!("--env {v}: give KEY=VALUE"))?;
                run.env.push((k.to_string(), v.to_string()));
            }
            "--" => {
                program = it.next().cloned();
                break;
            }
            f if f.starts_with('-') => return Err(format!("unknown option {arg}")),
            _ => {
                program = Some(arg.clone());
                break;
            }
        }
    }
    let program =
        program.ok_or("no program given: name the static binary to run after the options")?;
    let rest: Vec<String> = it.cloned().collect();
    run.args = match rest.first().map(String::as_str) {
        Some("--") => rest[1..].to_vec(),
        _ => rest,
    };
    let name = GuestRun::new(&program).name;
    run.program = PathBuf::from(program);
    run.name = name;
    Ok(Parsed::Run(Box::new(run)))
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{flag} {text}: not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> GuestRun {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&args) {
            Ok(Parsed::Run(r)) => *r,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn err(args: &[&str]) -> String {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(&args).expect_err("an error")
    }

    #[test]
    fn options_then_program_then_its_arguments() {
        let r = run(&[
            "--device",
            "edu",
            "--device=e1000,mac=52:54:00:00:00:01",
            "--bind",
            "auto",
            "--bind=00:05.0",
            "--user",
            "--hugepages",
            "8",
            "--timeout",
            "60",
            "--memlock",
            "4096",
            "--file",
            "data.bin",
            "--env",
            "RUST_LOG=debug",
            "./drv",
            "--",
            "--device",
            "0000:00:03.0",
        ]);
        assert_eq!(r.devices, ["edu", "e1000,mac=52:54:00:00:00:01"]);
        assert_eq!(r.bind, [Bind::Auto, Bind::Address("00:05.0".into())]);
        assert!(r.user && r.echo);
        assert_eq!(
            (r.hugepages, r.timeout, r.memlock_kib),
            (8, Duration::from_secs(60), Some(4096))
        );
        assert_eq!(r.files, [PathBuf::from("data.bin")]);
        assert_eq!(r.env, [("RUST_LOG".to_string(), "debug".to_string())]);
        assert_eq!(r.program, PathBuf::from("./drv"));
        assert_eq!(r.name, "guest-drv");
        assert_eq!(r.args, ["--device", "0000:00:03.0"]);
    }

    #[test]
    fn everything_after_the_program_is_its_own() {
        let r = run(&["drv", "--user", "-x"]);
        assert!(!r.user);
        assert_eq!(r.args, ["--user", "-x"]);
        let r = run(&["--", "-odd-name", "a"]);
        assert_eq!(
            (r.program.to_str(), r.args.as_slice()),
            (Some("-odd-name"), &["a".to_string()][..])
        );
        assert!(matches!(parse(&["--help".into()]), Ok(Parsed::Help)));
    }

    #[test]
    fn mistakes_say_what_is_wrong() {
        assert!(err(&[]).contains("no program given"));
        assert!(err(&["--device"]).contains("--device needs a value"));
        assert!(err(&["--hugepages", "many", "drv"]).contains("not a number"));
        assert!(err(&["--env", "NOEQUALS", "drv"]).contains("KEY=VALUE"));
        assert!(err(&["--frobnicate", "drv"]).contains("unknown option --frobnicate"));
    }
}
