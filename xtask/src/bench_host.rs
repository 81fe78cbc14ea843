//! `cargo xtask bench-host`: the instructions the drivers execute per I/O on
//! the host, on the software device models, counted by callgrind.
//!
//! The bench (`bench/`, binary `bench-host`) runs each measurement inside
//! one function, `bench_host::bench_host_measured`; callgrind zeroes its
//! counters when that function is entered and dumps them when it returns
//! (`--zero-before`, `--dump-after`), one dump per measurement. The device
//! models are reached only through their registers
//! (`RegisterModel::read` / `write`, where they also do all their work,
//! synchronously), so toggling collection inside those calls
//! (`--toggle-collect`) counts the driver without the model (mode
//! "driver"), or only the model (mode "model"); a third run counts both
//! ("all"), and every dump must satisfy driver + model = all exactly.
//!
//! Each figure is the difference of two measurements of the same batch size
//! (2,048 and 4,096 operations; forwarding 16 and 32 chunks of 64 KiB)
//! divided by the difference of their operations, which cancels whatever a
//! call costs once. Callgrind counts instructions, not time: the result is
//! the same on every run and every machine with the same build.
//!
//! MMIO: the bench run natively with `--count-mmio` counts the driver's
//! reads and writes of the devices' BARs (config space left out: it is no
//! MMIO, and no data path touches it) inside the measured function, with
//! the same measurements; per operation they are the difference of two
//! measurements divided by the difference of operations, as instructions.
//! Run twice: the counts must be the same.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::{json, Value};
use vfio_tests::workspace_root;

/// The bench's measured function (callgrind takes the name as it is; its
/// `--dump-after` and `--zero-before` take no wildcards).
const MEASURED: &str = "bench_host::bench_host_measured";
/// Every device model's register accessors.
const MODELS: &str = "*as vfio_core::mmio::RegisterModel>::*";
/// Batch sizes of the sweep (the plot).
const BATCHES: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];
/// Operations of the two measurements at each batch size.
const OPS: [u64; 2] = [2048, 4096];
/// 64 KiB chunks of the two forwarder measurements.
const FORWARD_CHUNKS: [u64; 2] = [16, 32];
/// Functions of each figure's split printed and stored.
const TOP: usize = 10;
/// Instructions driver + model may differ from all in one measurement.
const SPLIT_SLACK: u64 = 4;

/// A figure of `target/bench-host.json`.
struct Figure {
    key: &'static str,
    what: &'static str,
    workload: &'static str,
    /// Batch size of the figure (0: the forwarder's own batching).
    batch: usize,
    /// Instructions per operation the drivers are to stay within.
    budget: f64,
    unit: &'static str,
    /// JSON keys of its MMIO reads and writes per operation.
    mmio_keys: [&'static str; 2],
    /// MMIO writes per operation the drivers are to stay within (reads: 0).
    mmio_write_budget: f64,
}

const FIGURES: [Figure; 5] = [
    Figure {
        key: "nvme_read_4k_instructions_per_io",
        what: "NVMe 4 KiB read, batch 32 (submit + complete)",
        workload: "nvme",
        batch: 32,
        budget: 400.0,
        unit: "I/O",
        mmio_keys: [
            "nvme_read_4k_mmio_reads_per_io",
            "nvme_read_4k_mmio_writes_per_io",
        ],
        mmio_write_budget: 0.07,
    },
    Figure {
        key: "nic_tx_60b_instructions_per_packet",
        what: "e1000 60-byte TX, batch 32",
        workload: "nic",
        batch: 32,
        budget: 120.0,
        unit: "packet",
        mmio_keys: [
            "nic_tx_60b_mmio_reads_per_packet",
            "nic_tx_60b_mmio_writes_per_packet",
        ],
        mmio_write_budget: 0.07,
    },
    Figure {
        key: "forward_datagram_instructions",
        what: "forwarded 1,456-byte datagram (its share of NVMe and e1000 work)",
        workload: "forward",
        batch: 0,
        budget: 600.0,
        unit: "datagram",
        mmio_keys: [
            "forward_datagram_mmio_reads",
            "forward_datagram_mmio_writes",
        ],
        mmio_write_budget: 0.1,
    },
    Figure {
        key: "virtio_tx_60b_instructions_per_packet",
        what: "virtio-net 60-byte TX, batch 32",
        workload: "virtio-tx",
        batch: 32,
        budget: 150.0,
        unit: "packet",
        mmio_keys: [
            "virtio_tx_60b_mmio_reads_per_packet",
            "virtio_tx_60b_mmio_writes_per_packet",
        ],
        mmio_write_budget: 0.07,
    },
    Figure {
        key: "nic_echo_60b_instructions_per_packet",
        what: "e1000 60-byte echo (RX, MACs swapped, TX), batch 32",
        workload: "echo",
        batch: 32,
        budget: 200.0,
        unit: "packet",
        mmio_keys: [
            "nic_echo_60b_mmio_reads_per_packet",
            "nic_echo_60b_mmio_writes_per_packet",
        ],
        mmio_write_budget: 0.07,
    },
];

/// Workloads measured at every batch size of [`BATCHES`] (the plot); the
/// others at their figure's batch only.
const SWEPT: [&str; 2] = ["nvme", "nic"];

/// What callgrind counts in a run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Everything in the measured function but the models.
    Driver,
    /// Only the models' register calls (from the measured function).
    Model,
    /// Everything in the measured function.
    All,
}

/// One dump: the instructions of one measurement, in all and by function
/// (each function's own instructions, not those of what it calls).
struct Dump {
    total: u64,
    functions: BTreeMap<String, u64>,
}

/// One run of the bench under callgrind: the operations each measurement
/// did and its dump.
struct Counted {
    ops: Vec<u64>,
    dumps: Vec<Dump>,
}

/// A workload measured in the three modes.
struct Workload {
    name: &'static str,
    /// The batch size of each pair of measurements.
    batches: Vec<usize>,
    ops: Vec<u64>,
    driver: Vec<Dump>,
    model: Vec<Dump>,
    /// BAR reads and writes of each measurement (`--count-mmio`).
    mmio: Vec<(u64, u64)>,
    /// Largest |driver + model - all| of a measurement, in instructions.
    mismatch: u64,
}

/// Per operation, at one batch size.
struct PerOp {
    batch: usize,
    driver: f64,
    model: f64,
    mmio_reads: f64,
    mmio_writes: f64,
    /// Driver instructions per operation by function, largest first.
    functions: Vec<(String, f64)>,
}

impl Workload {
    /// Pair `i` (measurements 2i and 2i + 1) per operation.
    fn per_op(&self, i: usize) -> PerOp {
        let (a, b) = (2 * i, 2 * i + 1);
        let ops = (self.ops[b] - self.ops[a]) as f64;
        let per = |d: &[Dump]| (d[b].total as f64 - d[a].total as f64) / ops;
        let (da, db) = (&self.driver[a].functions, &self.driver[b].functions);
        let mut functions: Vec<(String, f64)> = db
            .keys()
            .chain(da.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|f| {
                let n =
                    db.get(f).copied().unwrap_or(0) as f64 - da.get(f).copied().unwrap_or(0) as f64;
                (f.clone(), n / ops)
            })
            .filter(|(_, n)| *n != 0.0)
            .collect();
        functions.sort_by(|x, y| y.1.total_cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
        PerOp {
            batch: self.batches[i],
            driver: per(&self.driver),
            model: per(&self.model),
            mmio_reads: (self.mmio[b].0 as f64 - self.mmio[a].0 as f64) / ops,
            mmio_writes: (self.mmio[b].1 as f64 - self.mmio[a].1 as f64) / ops,
            functions,
        }
    }

    fn at_batch(&self, batch: usize) -> Option<PerOp> {
        let i = self.batches.iter().position(|&b| b == batch)?;
        Some(self.per_op(i))
    }

    fn sweep(&self) -> Vec<PerOp> {
        (0..self.batches.len()).map(|i| self.per_op(i)).collect()
    }
}

pub fn bench_host() -> Result<(), String> {
    let start = Instant::now();
    let valgrind = valgrind()?;
    let target = target_dir();
    let dir = target.join("bench-host");
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let bin = build(&target)?;

    let mut specs_sweep = Vec::new();
    for &b in &BATCHES {
        for ops in OPS {
            specs_sweep.push(format!("{b}:{}", ops / b as u64));
        }
    }
    let specs_32: Vec<String> = OPS.iter().map(|ops| format!("32:{}", ops / 32)).collect();
    let forward_specs: Vec<String> = FORWARD_CHUNKS.iter().map(u64::to_string).collect();
    let mut workloads = Vec::new();
    for (name, specs, batches) in [
        ("nvme", &specs_sweep, BATCHES.to_vec()),
        ("nic", &specs_sweep, BATCHES.to_vec()),
        ("forward", &forward_specs, vec![0]),
        ("virtio-tx", &specs_32, vec![32]),
        ("echo", &specs_32, vec![32]),
    ] {
        workloads.push(measure(&valgrind, &bin, &dir, name, specs, batches)?);
    }
    let timing = wall_clock(&bin)?;

    let mut json = serde_json::Map::new();
    json.insert(
        "measured_with".into(),
        json!(format!(
            "{} --tool=callgrind, instructions (Ir) of the drivers on the vfio-models devices, the models' own left out; MMIO: the drivers' reads and writes of the devices' BARs (config space not counted), counted natively in the bench (--count-mmio); per operation from two measurements (difference of counts / difference of operations)",
            version(&valgrind)
        )),
    );
    let mut figures = serde_json::Map::new();
    let mut splits = serde_json::Map::new();
    let mut rows = Vec::new();
    for f in &FIGURES {
        let w = workloads
            .iter()
            .find(|w| w.name == f.workload)
            .expect("every figure's workload is measured");
        let p = w.at_batch(f.batch).expect("the figure's batch is measured");
        json.insert(f.key.into(), json!(round1(p.driver)));
        json.insert(f.mmio_keys[0].into(), json!(round4(p.mmio_reads)));
        json.insert(f.mmio_keys[1].into(), json!(round4(p.mmio_writes)));
        let ns = timing.get(f.workload).copied();
        figures.insert(
            f.key.into(),
            json!({
                "what": f.what,
                "instructions_per_op": round1(p.driver),
                "budget": f.budget,
                "over_budget_by": round1((p.driver - f.budget).max(0.0)),
                "model_instructions_per_op_left_out": round1(p.model),
                "mmio_reads_per_op": round4(p.mmio_reads),
                "mmio_writes_per_op": round4(p.mmio_writes),
                "mmio_reads_budget": 0.0,
                "mmio_writes_budget": f.mmio_write_budget,
                "wall_clock_ns_per_op_driver_and_model": ns.map(round1),
                "unit": f.unit,
            }),
        );
        splits.insert(f.key.into(), split_json(&p));
        rows.push((f, p, ns));
    }
    json.insert("figures".into(), Value::Object(figures));
    json.insert("functions".into(), Value::Object(splits));
    let mut sweep = serde_json::Map::new();
    for w in workloads.iter().filter(|w| SWEPT.contains(&w.name)) {
        let points: Vec<Value> = w
            .sweep()
            .iter()
            .map(|p| {
                json!({
                    "batch": p.batch,
                    "instructions_per_op": round1(p.driver),
                    "model_instructions_per_op_left_out": round1(p.model),
                    "mmio_reads_per_op": round4(p.mmio_reads),
                    "mmio_writes_per_op": round4(p.mmio_writes),
                })
            })
            .collect();
        sweep.insert(w.name.into(), Value::Array(points));
    }
    json.insert("batch_sweep".into(), Value::Object(sweep));
    let split: serde_json::Map<String, Value> = workloads
        .iter()
        .map(|w| (w.name.to_string(), json!(w.mismatch)))
        .collect();
    json.insert(
        "split_check_largest_difference".into(),
        json!({"note": "per measurement, |driver + model - both counted together| in instructions", "by_workload": split}),
    );
    let wall: serde_json::Map<String, Value> = timing
        .iter()
        .map(|(k, v)| (format!("{k}_ns_per_op"), json!(round1(*v))))
        .collect();
    json.insert(
        "wall_clock_driver_and_model".into(),
        json!({"note": "native run on this machine, for information: includes the models' work (copies of every payload), not only the driver's", "figures": wall}),
    );

    let svg = target.join("bench-host.svg");
    let series: Vec<(&str, Vec<(usize, f64)>)> = workloads
        .iter()
        .filter(|w| SWEPT.contains(&w.name))
        .map(|w| {
            let label = if w.name == "nvme" {
                "NVMe 4 KiB read (per I/O)"
            } else {
                "e1000 60-byte TX (per packet)"
            };
            (
                label,
                w.sweep().iter().map(|p| (p.batch, p.driver)).collect(),
            )
        })
        .collect();
    let budgets = [
        ("NVMe budget (400)", FIGURES[0].budget),
        ("e1000 TX budget (120)", FIGURES[1].budget),
    ];
    plot(&svg, &series, &budgets)?;

    let out = target.join("bench-host.json");
    let text = serde_json::to_string_pretty(&Value::Object(json)).expect("JSON");
    std::fs::write(&out, text + "\n").map_err(|e| format!("write {}: {e}", out.display()))?;

    print_report(&rows, &workloads);
    println!(
        "bench-host: wrote {} and {} in {:.0?}",
        out.display(),
        svg.display(),
        start.elapsed()
    );
    Ok(())
}

/// valgrind from the distribution; installed with apt-get when missing and
/// this is root on a Debian-like system.
fn valgrind() -> Result<PathBuf, String> {
    let found = || {
        Command::new("valgrind")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !found() {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if root && Path::new("/usr/bin/apt-get").exists() {
            eprintln!("xtask: apt-get install -y valgrind");
            let ok = Command::new("apt-get")
                .args(["install", "-y", "valgrind"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err("installing valgrind failed (`apt-get update` first?)".into());
            }
        }
    }
    if !found() {
        return Err("bench-host needs valgrind (callgrind): `apt-get install valgrind`".into());
    }
    Ok(PathBuf::from("valgrind"))
}

fn version(valgrind: &Path) -> String {
    Command::new(valgrind)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "valgrind".into())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The bench in release (the workspace's release profile keeps the debug
/// information callgrind names functions with).
fn build(target: &Path) -> Result<PathBuf, String> {
    crate::run_cargo(&["build", "--release", "--quiet", "-p", "vfio-bench"], &[])?;
    Ok(target.join("release/bench-host"))
}

/// `workload` with `specs` under callgrind in the three modes.
fn measure(
    valgrind: &Path,
    bin: &Path,
    dir: &Path,
    name: &'static str,
    specs: &[String],
    batches: Vec<usize>,
) -> Result<Workload, String> {
    let driver = callgrind(valgrind, bin, dir, name, specs, Mode::Driver)?;
    let model = callgrind(valgrind, bin, dir, name, specs, Mode::Model)?;
    let all = callgrind(valgrind, bin, dir, name, specs, Mode::All)?;
    let (mmio_ops, mmio) = mmio_counts(bin, name, specs)?;
    if driver.ops != model.ops || driver.ops != all.ops || driver.ops != mmio_ops {
        return Err(format!(
            "{name}: the runs did different numbers of operations ({:?}, {:?}, {:?}, {mmio_ops:?})",
            driver.ops, model.ops, all.ops
        ));
    }
    let mut mismatch = 0;
    for (k, spec) in specs.iter().enumerate() {
        let (d, m, a) = (
            driver.dumps[k].total,
            model.dumps[k].total,
            all.dumps[k].total,
        );
        let off = (d + m).abs_diff(a);
        // Callgrind's toggles at a model call's entry and exit can land an
        // instruction to one side or the other; more than that means the
        // models were not cleanly left out.
        if off > SPLIT_SLACK {
            return Err(format!(
                "{name} {spec}: driver {d} + model {m} instructions is not the {a} counted with both: the models are not cleanly left out"
            ));
        }
        mismatch = mismatch.max(off);
    }
    Ok(Workload {
        name,
        batches,
        ops: driver.ops,
        driver: driver.dumps,
        model: model.dumps,
        mmio,
        mismatch,
    })
}

/// Each measurement's operations, and its MMIO (reads, writes).
type MmioCounted = (Vec<u64>, Vec<(u64, u64)>);

/// `workload` with `specs` run natively with `--count-mmio`, twice: the
/// operations and the (reads, writes) of each measurement, the same in
/// both runs.
fn mmio_counts(bin: &Path, name: &str, specs: &[String]) -> Result<MmioCounted, String> {
    let once = || -> Result<MmioCounted, String> {
        let stdout = run_bench(bin, &["--count-mmio", name], specs)?;
        let ops = measured_ops(&stdout, specs.len())?
            .into_iter()
            .map(|(ops, _)| ops)
            .collect();
        Ok((ops, mmio_lines(&stdout, specs.len())?))
    };
    eprintln!(
        "xtask: MMIO counts of {name} (native, twice) {}",
        specs.join(" ")
    );
    let first = once()?;
    let second = once()?;
    if first != second {
        return Err(format!(
            "{name}: two runs counted different MMIO accesses or operations ({first:?}, {second:?})"
        ));
    }
    Ok(first)
}

/// The bench's `mmio WORKLOAD BATCH ITERATIONS READS WRITES` lines.
fn mmio_lines(stdout: &str, n: usize) -> Result<Vec<(u64, u64)>, String> {
    tagged_pairs(stdout, "mmio", "MMIO counts", n)
}

/// The last two numbers of each of the bench's `TAG WORKLOAD BATCH
/// ITERATIONS A B` lines; `n` of them, else an error naming `what`.
fn tagged_pairs(stdout: &str, tag: &str, what: &str, n: usize) -> Result<Vec<(u64, u64)>, String> {
    let got: Vec<(u64, u64)> = stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [t, _, _, _, a, b] if *t == tag => Some((a.parse().ok()?, b.parse().ok()?)),
                _ => None,
            }
        })
        .collect();
    if got.len() != n {
        return Err(format!(
            "bench-host printed {} {what}, {n} asked for:\n{stdout}",
            got.len()
        ));
    }
    Ok(got)
}

fn callgrind(
    valgrind: &Path,
    bin: &Path,
    dir: &Path,
    name: &str,
    specs: &[String],
    mode: Mode,
) -> Result<Counted, String> {
    let out = dir.join(format!("{name}.{mode:?}.callgrind").to_lowercase());
    clear_dumps(&out, specs.len())?;
    let mut cmd = Command::new(valgrind);
    cmd.args([
        "--tool=callgrind",
        "--compress-strings=no",
        "--compress-pos=no",
        &format!("--zero-before={MEASURED}"),
        &format!("--dump-after={MEASURED}"),
    ])
    .arg(format!("--callgrind-out-file={}", out.display()));
    // --toggle-collect implies --collect-atstart=no unless given after it.
    match mode {
        Mode::Driver => cmd.args([
            format!("--toggle-collect={MODELS}"),
            "--collect-atstart=yes".into(),
        ]),
        Mode::Model => cmd.args([
            format!("--toggle-collect={MODELS}"),
            "--collect-atstart=no".into(),
        ]),
        Mode::All => &mut cmd,
    };
    cmd.arg(bin).arg(name).args(specs);
    eprintln!("xtask: callgrind {name} ({mode:?}) {}", specs.join(" "));
    let o = cmd
        .output()
        .map_err(|e| format!("start {}: {e}", valgrind.display()))?;
    if !o.status.success() {
        return Err(format!(
            "bench-host {name} under callgrind failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let ops = measured_ops(&String::from_utf8_lossy(&o.stdout), specs.len())?
        .into_iter()
        .map(|(ops, _)| ops)
        .collect();
    let dumps = (1..=specs.len())
        .map(|k| parse_dump(&PathBuf::from(format!("{}.{k}", out.display()))))
        .collect::<Result<_, _>>()?;
    Ok(Counted { ops, dumps })
}

/// Removes dumps of an earlier run, so that a missing dump is noticed.
fn clear_dumps(out: &Path, n: usize) -> Result<(), String> {
    for k in 0..=n {
        let p = if k == 0 {
            out.to_path_buf()
        } else {
            PathBuf::from(format!("{}.{k}", out.display()))
        };
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("remove {}: {e}", p.display())),
        }
    }
    Ok(())
}

/// The bench's `measured WORKLOAD BATCH ITERATIONS OPS NS` lines: (ops, ns).
fn measured_ops(stdout: &str, n: usize) -> Result<Vec<(u64, u64)>, String> {
    tagged_pairs(stdout, "measured", "measurements", n)
}

/// A callgrind dump (`--compress-strings=no`): its total, and each
/// function's own instructions (cost lines under `fn=`, but not the
/// inclusive cost line that follows each `calls=`).
fn parse_dump(path: &Path) -> Result<Dump, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let mut functions = BTreeMap::new();
    let mut total = None;
    let mut function: Option<String> = None;
    let mut after_calls = false;
    for line in text.lines() {
        if let Some(f) = line.strip_prefix("fn=") {
            function = Some(f.to_string());
        } else if line.starts_with("calls=") {
            after_calls = true;
        } else if let Some(t) = line.strip_prefix("totals:") {
            total = t.trim().parse::<u64>().ok();
        } else if line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c)) {
            if std::mem::take(&mut after_calls) {
                continue;
            }
            let cost = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse::<u64>().ok());
            if let (Some(f), Some(cost)) = (&function, cost) {
                *functions.entry(f.clone()).or_insert(0u64) += cost;
            }
        }
    }
    let total = total.ok_or_else(|| format!("{}: no totals line", path.display()))?;
    let sum: u64 = functions.values().sum();
    if sum != total {
        return Err(format!(
            "{}: the functions' instructions add up to {sum}, the dump's total is {total}",
            path.display()
        ));
    }
    Ok(Dump { total, functions })
}

/// Wall-clock nanoseconds per operation of each figure's workload, run
/// natively (the models' work included): the larger of two measurements.
fn wall_clock(bin: &Path) -> Result<BTreeMap<&'static str, f64>, String> {
    let mut out = BTreeMap::new();
    for (name, specs) in [
        ("nvme", ["32:1000", "32:20000"]),
        ("nic", ["32:1000", "32:20000"]),
        ("forward", ["16", "256"]),
        ("virtio-tx", ["32:1000", "32:20000"]),
        // Its frames are delivered up front, into the model's 16 MiB FIFO.
        ("echo", ["32:100", "32:2000"]),
    ] {
        let m = measured_ops(&run_bench(bin, &[name], &specs)?, specs.len())?;
        let (ops, ns) = m[specs.len() - 1];
        out.insert(name, ns as f64 / ops as f64);
    }
    Ok(out)
}

/// Runs the bench natively with `args` and `specs`; its standard output.
fn run_bench(
    bin: &Path,
    args: &[&str],
    specs: &[impl AsRef<std::ffi::OsStr>],
) -> Result<String, String> {
    let o = Command::new(bin)
        .args(args)
        .args(specs)
        .output()
        .map_err(|e| format!("start {}: {e}", bin.display()))?;
    if !o.status.success() {
        return Err(format!(
            "bench-host {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn split_json(p: &PerOp) -> Value {
    let mut top: Vec<Value> = p
        .functions
        .iter()
        .take(TOP)
        .map(|(f, n)| json!({"function": f, "instructions_per_op": round1(*n)}))
        .collect();
    let rest: f64 = p.functions.iter().skip(TOP).map(|(_, n)| n).sum();
    if p.functions.len() > TOP {
        top.push(json!({"function": "(all others)", "instructions_per_op": round1(rest)}));
    }
    Value::Array(top)
}

fn print_report(rows: &[(&Figure, PerOp, Option<f64>)], workloads: &[Workload]) {
    println!("== bench-host: driver instructions per operation on the software device models (callgrind; the models' own instructions left out)");
    println!("| figure | instructions | budget | against budget | MMIO reads/op | against 0 | MMIO writes/op | against budget | model's instructions (left out) | wall-clock ns/op, driver + model |");
    println!("|---|---:|---:|---|---:|---|---:|---|---:|---:|");
    for (f, p, ns) in rows {
        let verdict = if p.driver <= f.budget {
            "met".to_string()
        } else {
            format!(
                "over by {:.1} ({:.2}x)",
                p.driver - f.budget,
                p.driver / f.budget
            )
        };
        // As in the JSON (0.03125 is 0.0313 there, not `{:.4}`'s 0.0312).
        let within = |x: f64, budget: f64| {
            if x <= budget {
                format!("within {budget}")
            } else {
                format!("over {budget}")
            }
        };
        println!(
            "| {} | {:.1} per {} | {} | {verdict} | {:.4} | {} | {:.4} | {} | {:.1} | {} |",
            f.what,
            p.driver,
            f.unit,
            f.budget,
            round4(p.mmio_reads),
            within(p.mmio_reads, 0.0),
            round4(p.mmio_writes),
            within(p.mmio_writes, f.mmio_write_budget),
            p.model,
            ns.map_or("-".into(), |n| format!("{n:.0}"))
        );
    }
    for (f, p, _) in rows {
        println!(
            "\n-- {} ({:.1} per {}): where they go",
            f.key, p.driver, f.unit
        );
        for (func, n) in p.functions.iter().take(TOP) {
            println!("{n:10.1}  {func}");
        }
        let rest: f64 = p.functions.iter().skip(TOP).map(|(_, n)| n).sum();
        if p.functions.len() > TOP {
            println!("{rest:10.1}  (all others)");
        }
    }
    for w in workloads.iter().filter(|w| SWEPT.contains(&w.name)) {
        println!(
            "\n-- {} by batch size (driver instructions per operation)",
            w.name
        );
        let points: Vec<String> = w
            .sweep()
            .iter()
            .map(|p| format!("{}: {:.1}", p.batch, p.driver))
            .collect();
        println!("{}", points.join(", "));
        let mmio: Vec<String> = w
            .sweep()
            .iter()
            .map(|p| {
                format!(
                    "{}: {:.4}/{:.4}",
                    p.batch,
                    round4(p.mmio_reads),
                    round4(p.mmio_writes)
                )
            })
            .collect();
        println!("MMIO reads/writes per operation: {}", mmio.join(", "));
    }
}

/// The sweep as an SVG line plot: instructions per operation against the
/// batch size (log2 axis).
fn plot(
    path: &Path,
    series: &[(&str, Vec<(usize, f64)>)],
    budgets: &[(&str, f64)],
) -> Result<(), String> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    let ymax = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.1))
        .chain(budgets.iter().map(|b| b.1))
        .fold(0.0f64, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Driver instructions per operation on the device models (callgrind)",
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.2f64..6.2f64, 0f64..ymax.max(1.0))
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("batch size")
        .y_desc("instructions per operation")
        .x_labels(7)
        .x_label_formatter(&|x| format!("{}", 2f64.powf(x.round()) as u64))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .light_line_style(WHITE)
        .draw()
        .map_err(|e| err(&e))?;
    let colors = [BLUE, RED];
    for ((&(label, budget), _), color) in budgets.iter().zip(series).zip(colors) {
        chart
            .draw_series(LineSeries::new(
                [(-0.2, budget), (6.2, budget)],
                color.mix(0.5).stroke_width(1),
            ))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.mix(0.5)));
    }
    for ((label, points), color) in series.iter().zip(colors) {
        let xy: Vec<(f64, f64)> = points
            .iter()
            .map(|&(b, v)| ((b as f64).log2(), v))
            .collect();
        chart
            .draw_series(LineSeries::new(xy.clone(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(xy.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
