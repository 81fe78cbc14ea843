//! One boot of the test machine: its devices, the script of steps the guest
//! runs, and what came back.
//!
//! The guest's kernel log goes to `console.log` (ttyS0); each step's output and
//! exit code go to `results.log` (ttyS1), framed by `@@STEP name` and
//! `@@RC name code` lines. Both files and the disk images stay in
//! `target/qemu-runs/<name>/` for a look after a failure.

use std::fmt;
use std::fs;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::image::{self, chmod_x, write, GuestImage};
use crate::{HarnessError, Result};

/// The guest ends every run by powering off; past this it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// A test machine being put together.
pub struct Machine {
    name: String,
    dir: PathBuf,
    args: Vec<String>,
    steps: String,
    next_slot: u8,
    next_id: usize,
    next_bus: u8,
    hugepages: u32,
    memory_mib: u32,
    /// How the IOMMU treats the guest kernel's own drivers.
    kernel_iommu: &'static str,
    timeout: Duration,
    nics: Vec<NicEnd>,
    files: Vec<(String, Vec<u8>)>,
}

/// The host's end of a guest NIC: a UDP socket that receives every frame the
/// NIC sends, and sends frames the NIC receives.
#[derive(Debug)]
pub struct NicEnd {
    /// The NIC's PCI address in the guest.
    pub addr: String,
    /// The MAC address QEMU gave the NIC.
    pub mac: [u8; 6],
    /// Bound to 127.0.0.1, connected to QEMU's end.
    pub socket: UdpSocket,
    /// QEMU's netdev ID, for monitor commands such as `set_link ID off`.
    pub netdev: String,
}

impl Machine {
    /// A machine with 1 GiB of memory, 64 reserved 2 MiB hugepages, no devices.
    pub fn new(name: &str) -> Machine {
        let dir = crate::workspace_root().join("target/qemu-runs").join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        Machine {
            name: name.to_string(),
            dir,
            args: Vec::new(),
            steps: String::new(),
            next_slot: 3,
            next_id: 0,
            next_bus: 1,
            hugepages: 64,
            memory_mib: 1024,
            kernel_iommu: "iommu=strict",
            timeout: DEFAULT_TIMEOUT,
            nics: Vec::new(),
            files: Vec::new(),
        }
    }

    /// The run's directory (disk images, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Hugepages reserved on the kernel command line.
    pub fn hugepages(&mut self, n: u32) -> &mut Self {
        self.hugepages = n;
        self
    }

    /// The kernel's IOMMU mode for its own drivers: `iommu=strict` (the
    /// default: every unmap flushes the IOTLB) or `iommu=pt` (identity
    /// mapped, as servers that give some devices to VFIO often run the rest).
    /// Devices on vfio-pci get their own IOMMU domain either way.
    pub fn kernel_iommu(&mut self, mode: &'static str) -> &mut Self {
        self.kernel_iommu = mode;
        self
    }

    /// Records QEMU trace events matching `pattern` (e.g. `vtd_iotlb_page_*`,
    /// the IOMMU's translation of every DMA) into `trace.log` in the run's
    /// directory: a witness of what the devices did from outside the guest.
    pub fn trace(&mut self, pattern: &str) -> &mut Self {
        let log = self.dir.join("trace.log").display().to_string();
        self.args.extend([
            "-trace".into(),
            format!("enable={pattern}"),
            "-D".into(),
            log,
        ]);
        self
    }

    /// Time the guest gets before it is killed.
    pub fn timeout(&mut self, t: Duration) -> &mut Self {
        self.timeout = t;
        self
    }

    /// Any QEMU device, given as the text of its `-device` option (`edu`,
    /// `nvme,serial=x,drive=d`, ...). One with neither `addr=` nor `bus=`
    /// is placed in the next free slot of the root bus, as every other
    /// device of this machine is (00:03.0, 00:04.0, ... in the order they
    /// are added). Returns its guest PCI address when that is known before
    /// boot: placed here, or given as `addr=SLOT[.FN]` on the root bus;
    /// `None` for one placed with `bus=` elsewhere (a bridge, a non-PCI bus).
    pub fn device(&mut self, args: &str) -> Option<String> {
        let props: Vec<&str> = args.split(',').skip(1).collect();
        let value = |key: &str| {
            props
                .iter()
                .find_map(|p| p.strip_prefix(key)?.strip_prefix('='))
        };
        let on_root_bus = value("bus").is_none_or(|b| b == "pcie.0");
        let (text, addr) = match value("addr") {
            Some(given) => (args.to_string(), root_bus_address(given)),
            None if value("bus").is_some() => (args.to_string(), None),
            None => {
                let (slot, addr) = self.slot();
                (format!("{args},{slot}"), Some(addr))
            }
        };
        self.args.extend(["-device".into(), text]);
        addr.filter(|_| on_root_bus)
    }

    fn slot(&mut self) -> (String, String) {
        let slot = self.next_slot;
        self.next_slot += 1;
        (format!("addr={slot:#x}"), format!("0000:00:{slot:02x}.0"))
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    /// An NVMe controller with one namespace backed by the raw image `disk`;
    /// `props` are extra QEMU properties (e.g. ",mdts=2"). Returns its PCI address.
    pub fn nvme(&mut self, disk: &Path, props: &str) -> String {
        let (slot, addr) = self.slot();
        let id = self.id("nvm");
        self.args.extend([
            "-drive".into(),
            format!(
                "file={},if=none,id={id},format=raw,cache=unsafe",
                disk.display()
            ),
            "-device".into(),
            format!("nvme,serial=vfio-rs-{id},drive={id},{slot}{props}"),
        ]);
        addr
    }

    /// An NVMe controller with one namespace per `(image, block size)`, NSIDs
    /// from 1; `props` are extra controller properties (e.g. ",mdts=2,max_ioqpairs=1").
    pub fn nvme_namespaces(&mut self, namespaces: &[(&Path, u32)], props: &str) -> String {
        let (slot, addr) = self.slot();
        let ctrl = self.id("ctrl");
        self.args.extend([
            "-device".into(),
            format!("nvme,id={ctrl},serial=vfio-rs-{ctrl},{slot}{props}"),
        ]);
        for (n, (disk, bs)) in namespaces.iter().enumerate() {
            let drive = self.id("nvm");
            self.args.extend([
                "-drive".into(),
                format!("file={},if=none,id={drive},format=raw,cache=unsafe", disk.display()),
                "-device".into(),
                format!("nvme-ns,drive={drive},bus={ctrl},nsid={},logical_block_size={bs},physical_block_size={bs}", n + 1),
            ]);
        }
        addr
    }

    /// A file the guest finds at `/files/<name>`.
    pub fn file(&mut self, name: &str, bytes: &[u8]) -> &mut Self {
        self.files.push((name.to_string(), bytes.to_vec()));
        self
    }

    /// An NVMe controller over a fresh zeroed image of `size` bytes.
    pub fn nvme_zeroed(&mut self, size: u64) -> String {
        let path = self.dir.join(format!("nvme{}.img", self.next_id + 1));
        let f =
            fs::File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        f.set_len(size)
            .unwrap_or_else(|e| panic!("size {}: {e}", path.display()));
        self.nvme(&path, "")
    }

    /// A NIC (`model` is QEMU's device: "e1000", "e1000-82545em",
    /// [`VIRTIO_NET`]) whose wire is a UDP socket held by the test. Returns the
    /// index of its [`NicEnd`] in [`Running::nics`] / [`Outcome::nics`].
    pub fn e1000(&mut self, model: &str) -> usize {
        let (slot, addr) = self.slot();
        let id = self.id("net");
        let n = self.nics.len() as u8;
        let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56 + n];
        let (socket, qemu_port) = udp_pair();
        let host_port = socket.local_addr().expect("bound socket").port();
        self.args.extend([
            "-netdev".into(),
            format!("dgram,id={id},local.type=inet,local.host=127.0.0.1,local.port={qemu_port},remote.type=inet,remote.host=127.0.0.1,remote.port={host_port}"),
            "-device".into(),
            format!("{model},netdev={id},mac={},{slot}", mac_string(&mac)),
        ]);
        self.nics.push(NicEnd {
            addr,
            mac,
            socket,
            netdev: id,
        });
        self.nics.len() - 1
    }

    /// Two NICs wired to each other (each one's frames arrive at the other),
    /// with no host end. Returns their PCI addresses.
    pub fn nic_pair(&mut self, model_a: &str, model_b: &str) -> (String, String) {
        let (a, pa) = udp_pair();
        let (b, pb) = udp_pair();
        let (port_a, port_b) = (
            a.local_addr().expect("bound").port(),
            b.local_addr().expect("bound").port(),
        );
        drop((a, b, pa, pb));
        let mut add = |model: &str, local: u16, remote: u16| {
            let (slot, addr) = self.slot();
            let id = self.id("net");
            self.args.extend([
                "-netdev".into(),
                format!("dgram,id={id},local.type=inet,local.host=127.0.0.1,local.port={local},remote.type=inet,remote.host=127.0.0.1,remote.port={remote}"),
                "-device".into(),
                format!("{model},netdev={id},{slot}"),
            ]);
            addr
        };
        let first = add(model_a, port_a, port_b);
        (first, add(model_b, port_b, port_a))
    }

    /// QEMU's educational device, `edu` (1234:11e8: registers, DMA through
    /// a 4 KiB device buffer with 28-bit addresses, MSI and INTx; QEMU's
    /// docs/specs/edu.rst), for `edu-demo`. Returns its PCI address.
    pub fn edu(&mut self) -> String {
        let (slot, addr) = self.slot();
        self.args.extend(["-device".into(), format!("edu,{slot}")]);
        addr
    }

    /// The guest PCI address of NIC `index`.
    pub fn nics_addr(&self, index: usize) -> String {
        self.nics[index].addr.clone()
    }

    /// A conventional PCI bridge with `count` e1000 NICs (no wire) behind it:
    /// they share one IOMMU group with the bridge. NIC n gets the MAC
    /// 52:54:00:ab:BB:NN (BB its bus). Returns their addresses.
    pub fn e1000s_behind_bridge(&mut self, count: u8) -> Vec<String> {
        let (slot, _) = self.slot();
        let bridge = self.id("bridge");
        let bus = self.next_bus;
        self.next_bus += 1;
        self.args.extend([
            "-device".into(),
            format!("pci-bridge,id={bridge},chassis_nr={bus},{slot}"),
        ]);
        (1..=count)
            .map(|n| {
                self.args.extend([
                    "-device".into(),
                    format!("e1000,bus={bridge},addr={n:#x},mac=52:54:00:ab:{bus:02x}:{n:02x}"),
                ]);
                format!("0000:{bus:02x}:{n:02x}.0")
            })
            .collect()
    }

    /// Adds a step: a shell command line (or several) run in a subshell in the
    /// guest, its output and exit code recorded under `name`.
    pub fn step(&mut self, name: &str, command: &str) -> &mut Self {
        self.steps += &format!("echo '@@STEP {name}'\n(\n{command}\n)\necho \"@@RC {name} $?\"\n");
        self
    }

    /// Boots, runs every step, and waits for the guest to power off.
    pub fn run(self) -> Result<Outcome> {
        self.start()?.wait()
    }

    /// Boots and returns while the guest runs (for tests that talk to its NICs).
    pub fn start(self) -> Result<Running> {
        let image = image::get()?;
        let initrd = self.write_initrd(image)?;
        let args = self.qemu_args(image, &initrd);
        let qemu_log = fs::File::create(self.dir.join("qemu.log"))
            .map_err(|e| HarnessError::new(format!("create qemu.log: {e}")))?;
        let child = Command::new(&image.tools.qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(
                qemu_log
                    .try_clone()
                    .map_err(|e| HarnessError::new(e.to_string()))?,
            )
            .stderr(qemu_log)
            .spawn()
            .map_err(|e| HarnessError::new(format!("start {}: {e}", image.tools.qemu.display())))?;
        Ok(Running {
            child,
            started: Instant::now(),
            timeout: self.timeout,
            dir: self.dir,
            name: self.name,
            nics: self.nics,
        })
    }

    /// The base image with this run's `/run.sh` appended as a second cpio.
    fn write_initrd(&self, image: &GuestImage) -> Result<PathBuf> {
        let overlay = self.dir.join("overlay");
        let _ = fs::remove_dir_all(&overlay);
        fs::create_dir_all(&overlay)
            .map_err(|e| HarnessError::new(format!("create overlay: {e}")))?;
        write(&overlay.join("run.sh"), &format!("set +e\n{}", self.steps))?;
        let files = overlay.join("files");
        fs::create_dir_all(&files)
            .map_err(|e| HarnessError::new(format!("create {}: {e}", files.display())))?;
        for (name, bytes) in &self.files {
            fs::write(files.join(name), bytes)
                .map_err(|e| HarnessError::new(format!("write {name}: {e}")))?;
        }
        chmod_x(&overlay.join("run.sh"))?;
        let extra = self.dir.join("overlay.cpio");
        image::pack_cpio(&image.tools.cpio, &overlay, &extra)?;
        let initrd = self.dir.join("initrd.cpio");
        let mut bytes = fs::read(&image.initramfs)
            .map_err(|e| HarnessError::new(format!("read {}: {e}", image.initramfs.display())))?;
        bytes
            .extend(fs::read(&extra).map_err(|e| HarnessError::new(format!("read overlay: {e}")))?);
        fs::write(&initrd, bytes).map_err(|e| HarnessError::new(format!("write initrd: {e}")))?;
        Ok(initrd)
    }

    fn qemu_args(&self, image: &GuestImage, initrd: &Path) -> Vec<String> {
        let accel: &[&str] = if std::env::var_os("VFIO_RS_KVM").is_some() {
            &["-accel", "kvm", "-cpu", "host"]
        } else {
            &["-accel", "tcg", "-cpu", "max"]
        };
        // clocksource=tsc: the TSC, which the vDSO reads without a system
        // call, as on a server; the emulated machine would otherwise pick
        // hpet, where every clock read is a clock_gettime system call.
        // tsc=reliable: no watchdog (under TCG the TSC follows host time).
        let append = format!(
            "console=ttyS0 intel_iommu=on {} clocksource=tsc tsc=reliable quiet loglevel=4 panic=-1 hugepages={}",
            self.kernel_iommu, self.hugepages
        );
        let mut args: Vec<String> = accel.iter().map(|s| s.to_string()).collect();
        args.extend(
            [
                "-machine",
                "q35,kernel-irqchip=split",
                "-device",
                "intel-iommu,intremap=on",
                "-smp",
                "2",
                "-nodefaults",
                "-display",
                "none",
                "-no-reboot",
            ]
            .map(String::from),
        );
        args.extend(["-m".into(), self.memory_mib.to_string()]);
        args.extend([
            "-serial".into(),
            format!("file:{}", self.dir.join("console.log").display()),
        ]);
        args.extend([
            "-serial".into(),
            format!("file:{}", self.dir.join("results.log").display()),
        ]);
        args.extend([
            "-monitor".into(),
            format!(
                "unix:{},server,nowait",
                self.dir.join("monitor.sock").display()
            ),
        ]);
        args.extend([
            "-kernel".into(),
            image.tools.kernel.image.display().to_string(),
        ]);
        args.extend([
            "-initrd".into(),
            initrd.display().to_string(),
            "-append".into(),
            append,
        ]);
        args.extend(self.args.iter().cloned());
        args
    }
}

/// `0000:00:SS.F` for a QEMU `addr=` value on the root bus (`3`, `0x3`,
/// `03.1`, `0x1e.0`), or `None` if it is not one.
fn root_bus_address(addr: &str) -> Option<String> {
    let (slot, func) = addr.split_once('.').unwrap_or((addr, "0"));
    let hex = |t: &str| u8::from_str_radix(t.trim_start_matches("0x"), 16).ok();
    let (slot, func) = (hex(slot)?, hex(func)?);
    (slot < 32 && func < 8).then(|| format!("0000:00:{slot:02x}.{func}"))
}

/// A host UDP socket for the test and a free port for QEMU's end.
fn udp_pair() -> (UdpSocket, u16) {
    let host = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket on 127.0.0.1");
    let probe = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket on 127.0.0.1");
    let qemu_port = probe.local_addr().expect("bound").port();
    drop(probe);
    host.connect(("127.0.0.1", qemu_port))
        .expect("connect UDP socket");
    (host, qemu_port)
}

/// QEMU's virtio-net as a modern (1.x only) device behind the IOMMU.
pub const VIRTIO_NET: &str = "virtio-net-pci,disable-legacy=on,iommu_platform=on";

/// `52:54:00:12:34:56`.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A guest that is running.
pub struct Running {
    child: Child,
    started: Instant,
    timeout: Duration,
    dir: PathBuf,
    name: String,
    /// The host ends of the guest's NICs, in the order they were added.
    pub nics: Vec<NicEnd>,
}

impl Running {
    /// Waits for the guest to power off (killing it after the timeout) and reads the results.
    pub fn wait(mut self) -> Result<Outcome> {
        let status = loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(|e| HarnessError::new(e.to_string()))?
            {
                break Some(status);
            }
            if self.started.elapsed() > self.timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let nics = std::mem::take(&mut self.nics);
        let name = std::mem::take(&mut self.name);
        let outcome = Outcome::read(&self.dir, name, self.started.elapsed(), nics)?;
        match status {
            None => Err(HarnessError::new(format!(
                "guest `{}` hung: killed after {:?}\n{}",
                outcome.name,
                self.timeout,
                outcome.diagnostics()
            ))),
            Some(status) if !outcome.results.contains("@@BOOTED") => {
                Err(HarnessError::new(format!(
                    "guest `{}`: QEMU stopped ({status}) before the guest booted; QEMU said:\n{}\n--- console tail ---\n{}",
                    outcome.name,
                    tail(&outcome.qemu_log, 20),
                    tail(&outcome.console, 20)
                )))
            }
            Some(_) if outcome.exit.is_none() => Err(HarnessError::new(format!(
                "guest `{}` stopped before its script finished\n{}",
                outcome.name,
                outcome.diagnostics()
            ))),
            Some(_) => Ok(outcome),
        }
    }

    /// Waits until the guest has printed `marker` on the results port.
    pub fn wait_for(&self, marker: &str, timeout: Duration) -> Result<()> {
        let path = self.dir.join("results.log");
        let start = Instant::now();
        loop {
            let text = fs::read(&path)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            if text.contains(marker) {
                return Ok(());
            }
            if start.elapsed() > timeout {
                let console = fs::read_to_string(self.dir.join("console.log")).unwrap_or_default();
                return Err(HarnessError::new(format!(
                    "guest `{}` did not print {marker:?} within {timeout:?}\n--- results ---\n{}\n--- console tail ---\n{}",
                    self.name,
                    tail(&text, 40),
                    tail(&console, 40)
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a command in QEMU's human monitor (e.g. `set_link net1 off`) and
    /// returns its output, after QEMU has printed its next prompt.
    pub fn monitor(&self, command: &str) -> Result<String> {
        use std::io::{Read, Write};
        use std::os::unix::net::UnixStream;
        let path = self.dir.join("monitor.sock");
        let err = |e: std::io::Error| HarnessError::new(format!("monitor {}: {e}", path.display()));
        let mut s = UnixStream::connect(&path).map_err(err)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(err)?;
        let mut seen = String::new();
        let read_prompt = |s: &mut UnixStream, seen: &mut String| -> Result<()> {
            let mut buf = [0u8; 4096];
            while !seen.ends_with("(qemu) ") {
                let n = s.read(&mut buf).map_err(err)?;
                if n == 0 {
                    return Err(HarnessError::new(
                        "the QEMU monitor closed the connection".into(),
                    ));
                }
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            Ok(())
        };
        read_prompt(&mut s, &mut seen)?;
        seen.clear();
        s.write_all(format!("{command}\n").as_bytes())
            .map_err(err)?;
        read_prompt(&mut s, &mut seen)?;
        Ok(seen)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One step's output and exit code.
#[derive(Clone, Debug)]
pub struct StepResult {
    pub name: String,
    pub code: i32,
    pub output: String,
}

/// What a boot produced.
pub struct Outcome {
    pub name: String,
    pub steps: Vec<StepResult>,
    /// The exit code of the whole script, if it finished.
    pub exit: Option<i32>,
    pub console: String,
    pub results: String,
    /// What QEMU itself printed (`qemu.log`): its errors about the command
    /// line, such as an unknown device.
    pub qemu_log: String,
    pub elapsed: Duration,
    pub nics: Vec<NicEnd>,
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Outcome({}, {} steps, exit {:?})",
            self.name,
            self.steps.len(),
            self.exit
        )
    }
}

impl Outcome {
    fn read(dir: &Path, name: String, elapsed: Duration, nics: Vec<NicEnd>) -> Result<Outcome> {
        let read = |f: &str| {
            fs::read(dir.join(f))
                .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
                .unwrap_or_default()
        };
        let (console, results) = (read("console.log"), read("results.log"));
        let qemu_log = read("qemu.log");
        let (steps, exit) = parse_results(&results);
        Ok(Outcome {
            name,
            steps,
            exit,
            console,
            results,
            qemu_log,
            elapsed,
            nics,
        })
    }

    /// The step called `name`; panics (with the guest's logs) if it did not run.
    pub fn step(&self, name: &str) -> &StepResult {
        self.steps
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "step `{name}` did not run in guest `{}`\n{}",
                    self.name,
                    self.diagnostics()
                )
            })
    }

    /// The step `name`, asserting it exited 0.
    pub fn ok(&self, name: &str) -> &StepResult {
        let s = self.step(name);
        assert_eq!(
            s.code,
            0,
            "step `{name}` failed with exit code {}:\n{}\n--- console tail ---\n{}",
            s.code,
            s.output,
            tail(&self.console, 60)
        );
        s
    }

    /// The `--json` summary a tool printed in step `name` (which must have
    /// succeeded): its first line that starts with `{`, parsed. Panics,
    /// with the step's output, when there is none or it is not JSON.
    pub fn json(&self, name: &str) -> serde_json::Value {
        let out = &self.ok(name).output;
        let line = out
            .lines()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("step `{name}` printed no JSON summary:\n{out}"));
        serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("step `{name}`: {e} in its JSON summary {line}"))
    }

    /// The step `name`, asserting it failed and printed `needle`.
    pub fn failed_with(&self, name: &str, needle: &str) -> &StepResult {
        let s = self.step(name);
        assert_ne!(
            s.code, 0,
            "step `{name}` should have failed but exited 0:\n{}",
            s.output
        );
        assert!(
            s.output.contains(needle),
            "step `{name}` failed without saying {needle:?}:\n{}",
            s.output
        );
        s
    }

    /// The results, the end of the kernel log and what QEMU printed, for
    /// failure messages.
    pub fn diagnostics(&self) -> String {
        let qemu = if self.qemu_log.trim().is_empty() {
            String::new()
        } else {
            format!("\n--- qemu.log tail ---\n{}", tail(&self.qemu_log, 20))
        };
        format!(
            "--- results ---\n{}\n--- console tail ---\n{}{qemu}",
            tail(&self.results, 80),
            tail(&self.console, 80)
        )
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Splits results.log into steps.
pub fn parse_results(text: &str) -> (Vec<StepResult>, Option<i32>) {
    let mut steps = Vec::new();
    let mut current: Option<StepResult> = None;
    let mut exit = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("@@STEP ") {
            current = Some(StepResult {
                name: name.trim().to_string(),
                code: -1,
                output: String::new(),
            });
        } else if let Some(rest) = line.strip_prefix("@@RC ") {
            let code = rest
                .rsplit(' ')
                .next()
                .and_then(|c| c.trim().parse().ok())
                .unwrap_or(-1);
            if let Some(mut s) = current.take() {
                s.code = code;
                steps.push(s);
            }
        } else if let Some(code) = line.strip_prefix("@@EXIT ") {
            exit = code.trim().parse().ok();
        } else if let Some(s) = current.as_mut() {
            s.output.push_str(line);
            s.output.push('\n');
        }
    }
    (steps, exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_split_into_steps() {
        let log = "@@BOOTED 1.0\n@@STEP a\nhello\r\n@@RC a 0\n@@STEP b\nno\n@@RC b 3\n@@EXIT 0\n"
            .replace('\r', "");
        let (steps, exit) = parse_results(&log);
        assert_eq!(exit, Some(0));
        assert_eq!(steps.len(), 2);
        assert_eq!(
            (
                steps[0].name.as_str(),
                steps[0].code,
                steps[0].output.as_str()
            ),
            ("a", 0, "hello\n")
        );
        assert_eq!((steps[1].name.as_str(), steps[1].code), ("b", 3));
    }

    #[test]
    fn root_bus_addresses_from_qemu_addr_values() {
        assert_eq!(root_bus_address("3").as_deref(), Some("0000:00:03.0"));
        assert_eq!(root_bus_address("0x1e").as_deref(), Some("0000:00:1e.0"));
        assert_eq!(root_bus_address("0x04.2").as_deref(), Some("0000:00:04.2"));
        assert_eq!(root_bus_address("0x20"), None);
        assert_eq!(root_bus_address("3.8"), None);
        assert_eq!(root_bus_address("x"), None);
    }

    #[test]
    fn devices_are_placed_in_free_slots_unless_told_where() {
        let mut m = Machine::new("unit-device-slots");
        assert_eq!(m.device("edu").as_deref(), Some("0000:00:03.0"));
        assert_eq!(m.device("e1000,addr=0x10").as_deref(), Some("0000:00:10.0"));
        assert_eq!(m.device("e1000,bus=bridge1,addr=1"), None);
        assert_eq!(m.device("nvme-ns,drive=d,bus=ctrl"), None);
        assert_eq!(
            m.device("edu,bus=pcie.0").as_deref(),
            None,
            "bus= given without addr=: QEMU chooses"
        );
        assert_eq!(
            m.device("edu,dma_mask=0xffffffff").as_deref(),
            Some("0000:00:04.0")
        );
        let devices: Vec<&String> = m.args.iter().skip(1).step_by(2).collect();
        assert_eq!(
            devices,
            [
                "edu,addr=0x3",
                "e1000,addr=0x10",
                "e1000,bus=bridge1,addr=1",
                "nvme-ns,drive=d,bus=ctrl",
                "edu,bus=pcie.0",
                "edu,dma_mask=0xffffffff,addr=0x4"
            ]
        );
        let _ = fs::remove_dir_all(m.dir());
    }

    #[test]
    fn unfinished_step_is_not_reported() {
        let (steps, exit) = parse_results("@@STEP a\npartial\n");
        assert!(steps.is_empty());
        assert_eq!(exit, None);
    }
}
