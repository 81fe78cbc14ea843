//! `cargo xtask guest`'s library side, `vfio_tests::guest::run`, as a driver
//! author outside this repository uses it: a static binary from the host, on
//! a QEMU `edu` device bound to vfio-pci, once as root and once as the
//! unprivileged user. Two boots; the other tests boot nothing (the checks
//! before the boot, and a QEMU that refuses its command line).

use std::time::Duration;

use vfio_tests::guest::{self, Bind, GuestRun, USER_UID};
use vfio_tests::image;

const EDU: &str = "0000:00:03.0";
const EDU_2: &str = "0000:00:04.0";

/// The line of `devbind status` for `addr`.
fn listed<'a>(devices: &'a str, addr: &str) -> &'a str {
    devices
        .lines()
        .find(|l| l.starts_with(addr))
        .unwrap_or_else(|| panic!("{addr} is not in the guest's device list:\n{devices}"))
}

/// A guest binary the image build leaves on the host, statically linked.
fn guest_check() -> std::path::PathBuf {
    image::get().expect("the guest image (run `cargo xtask setup`)");
    let path = image::built_binary("guest-check");
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

#[test]
fn a_static_binary_runs_as_root_on_an_edu_device_bound_to_vfio_pci() {
    let mut run = GuestRun::new(guest_check());
    run.name = "guest-tool-root".into();
    run.devices.push("edu".into());
    run.bind.push(Bind::Auto);
    run.args = vec!["open".into(), EDU.into()];
    run.timeout = Duration::from_secs(240);
    let out = guest::run(&run).expect("the run");
    assert_eq!(out.addresses, [Some(EDU.to_string())]);
    assert_eq!(out.bound, [EDU]);
    assert!(
        out.bind.contains(&format!("{EDU}: no driver -> vfio-pci")),
        "{}",
        out.bind
    );
    let line = listed(&out.devices, EDU);
    assert!(
        line.contains("1234:11e8") && line.contains("vfio-pci") && line.contains("/dev/vfio/"),
        "edu is listed with its ID, on vfio-pci, with its group file: {line}"
    );
    assert_eq!(out.status, 0, "{}", out.output);
    // What guest-check read from the device through VFIO: edu's IDs.
    assert!(
        out.output.contains(&format!("{EDU}.vendor=1234"))
            && out.output.contains(&format!("{EDU}.device=11e8")),
        "{}",
        out.output
    );
}

#[test]
fn as_the_unprivileged_user_with_files_arguments_and_the_exit_status() {
    let busybox = image::get()
        .expect("the guest image (run `cargo xtask setup`)")
        .tools
        .busybox
        .clone();
    let mut run = GuestRun::new(&busybox);
    run.name = "guest-tool-user".into();
    run.devices = vec!["edu".into(), "edu".into()];
    run.bind.push(Bind::Auto);
    run.user = true;
    run.memlock_kib = Some(65536);
    run.files.push(guest_check());
    run.env.push(("GREETING".into(), "it's me".into()));
    run.timeout = Duration::from_secs(240);
    let script = format!(
        "echo uid=$(id -u); echo memlock=$(ulimit -l); echo \"greeting=$GREETING\"; \
         ls -ln /dev/vfio; /files/guest-check open {EDU} {EDU_2}; echo open=$?; exit 7"
    );
    run.args = vec!["sh".into(), "-c".into(), script];
    let out = guest::run(&run).expect("the run");
    let o = &out.output;
    assert_eq!(out.status, 7, "the program's exit status comes back:\n{o}");
    assert!(o.contains(&format!("uid={USER_UID}\n")), "{o}");
    assert!(o.contains("memlock=65536\n"), "{o}");
    assert!(o.contains("greeting=it's me\n"), "{o}");
    assert_eq!(out.bound, [EDU, EDU_2], "auto: both devices");
    for addr in [EDU, EDU_2] {
        let line = listed(&out.devices, addr);
        assert!(
            line.contains("1234:11e8 ") && line.contains("vfio-pci"),
            "{line}"
        );
        let group = line.rsplit("/dev/vfio/").next().unwrap_or_default().trim();
        // `ls -ln`: crw------- 1 1000 1000 MAJ, MIN DATE GROUP
        assert!(
            o.lines()
                .any(|l| l.ends_with(&format!(" {group}")) && l.contains(&format!(" {USER_UID} "))),
            "/dev/vfio/{group} belongs to the user:\n{o}"
        );
        assert!(o.contains(&format!("{addr}.device=11e8")), "{o}");
    }
    assert!(o.contains("open=0\n"), "the user opened both devices:\n{o}");
}

#[test]
fn a_dynamic_binary_is_refused_before_anything_boots() {
    let Some(ls) = ["/bin/ls", "/usr/bin/ls"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
    else {
        return;
    };
    let err = guest::run(&GuestRun::new(ls))
        .expect_err("a dynamic binary cannot run in the guest")
        .to_string();
    assert!(err.contains("dynamically linked"), "{err}");
    assert!(
        err.contains("RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu"),
        "the error says how to build it: {err}"
    );
}

#[test]
fn bind_auto_needs_devices_with_known_addresses() {
    let mut run = GuestRun::new(guest_check());
    run.name = "guest-tool-no-boot".into();
    run.bind.push(Bind::Auto);
    let err = guest::run(&run).expect_err("nothing to bind").to_string();
    assert!(err.contains("--device edu"), "{err}");
    run.devices = vec![
        "pci-bridge,id=b,chassis_nr=1".into(),
        "edu,bus=b,addr=1".into(),
    ];
    let err = guest::run(&run)
        .expect_err("an unknown address")
        .to_string();
    assert!(
        err.contains("-device edu,bus=b,addr=1") && err.contains("--bind BDF"),
        "{err}"
    );
}

#[test]
fn a_device_qemu_does_not_know_is_reported_with_qemu_s_words() {
    let mut run = GuestRun::new(guest_check());
    run.name = "guest-tool-bad-device".into();
    run.devices.push("no-such-device".into());
    let err = guest::run(&run).expect_err("QEMU refuses").to_string();
    assert!(err.contains("before the guest booted"), "{err}");
    assert!(
        err.contains("'no-such-device' is not a valid device model name"),
        "{err}"
    );
}
