//! edu-demo: drives QEMU's edu device through edu-driver and prints what
//! came back, as `key=value` lines (and, with `--json`, one JSON line).
//!
//! ```text
//! edu-demo <BDF> [--irq msi|intx] [--json]
//! ```
//!
//! Runs the liveness check, the factorials of 0 to 12, and a DMA round trip
//! of a pattern: RAM -> the device buffer -> other RAM. Without `--irq` it
//! polls; with it, a raised interrupt comes first and every factorial and
//! transfer ends with an interrupt. The pattern's byte i is
//! `(i * 31 + i / 256) mod 256`; `dma.sha256` is the SHA-256 of the bytes
//! that came back, for a test to compare with its own hash of the pattern.

use std::process::ExitCode;

use edu_driver::{regs, Edu, Result, MAX_FACTORIAL};
use sha2::{Digest, Sha256};
use vfio_core::pci::PciAddress;
use vfio_core::vfio::IrqKind;

const USAGE: &str = "usage: edu-demo <BDF> [--irq msi|intx] [--json]";
/// Written to the interrupt raise register: no cause the device raises itself.
const RAISED: u32 = 0x5a00_0000;
/// Bytes of the round trip: all a transfer may reach (QEMU 7.2).
const LEN: usize = regs::BUFFER_USABLE;

struct Args {
    addr: PciAddress,
    irq: Option<IrqKind>,
    json: bool,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let result =
        parse(std::env::args().skip(1)).and_then(|args| run(&args).map_err(|e| e.to_string()));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("edu-demo: the bytes that came back differ from those sent");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("edu-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut addr, mut irq, mut json) = (None, None, false);
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--irq" => {
                irq = Some(match argv.next().as_deref() {
                    Some("msi") => IrqKind::Msi,
                    Some("intx") => IrqKind::Intx,
                    other => {
                        let got = other.unwrap_or("nothing");
                        return Err(format!("--irq takes msi or intx, not {got:?}; {USAGE}"));
                    }
                })
            }
            _ if addr.is_none() && !arg.starts_with('-') => {
                addr = Some(arg.parse::<PciAddress>().map_err(|e| e.to_string())?)
            }
            _ => return Err(format!("unexpected argument {arg:?}; {USAGE}")),
        }
    }
    let addr = addr.ok_or_else(|| format!("no device address; {USAGE}"))?;
    Ok(Args { addr, irq, json })
}

/// Runs every check; true when the DMA'd bytes came back as sent.
fn run(args: &Args) -> Result<bool> {
    let mut edu = Edu::open(args.addr)?;
    let (major, minor) = edu.version();
    println!("edu.address={}", edu.address());
    println!("edu.version={major}.{minor}");
    let mode = match args.irq {
        Some(IrqKind::Msi) => "msi",
        Some(_) => "intx",
        None => "poll",
    };
    println!("edu.irq={mode}");
    edu.check_liveness(0x1234_5678)?;
    println!("liveness=ok");
    let mut raised = 0;
    if let Some(kind) = args.irq {
        edu.enable_interrupts(kind)?;
        raised = edu.raise_interrupt(RAISED)?;
        println!("irq.raised_status={raised:#x}");
    }
    let mut factorials = Vec::new();
    for n in 0..=MAX_FACTORIAL {
        let f = edu.factorial(n)?;
        println!("factorial.{n}={f}");
        factorials.push(format!("\"{n}\":{f}"));
    }
    let (sha, same) = round_trip(&mut edu)?;
    println!("dma.len={LEN}");
    println!("dma.sha256={sha}");
    println!("dma.match={same}");
    println!("irq.handled={}", edu.interrupts_handled());
    if args.json {
        println!(
            "{{\"address\":\"{}\",\"version\":\"{major}.{minor}\",\"irq\":\"{mode}\",\"liveness\":true,\"raised_status\":{raised},\"factorials\":{{{}}},\"dma_len\":{LEN},\"dma_sha256\":\"{sha}\",\"dma_match\":{same},\"interrupts\":{}}}",
            edu.address(),
            factorials.join(","),
            edu.interrupts_handled()
        );
    }
    Ok(same)
}

/// The pattern into the device from one buffer and back into another;
/// the SHA-256 of what came back, and whether it is the pattern.
fn round_trip(edu: &mut Edu) -> Result<(String, bool)> {
    let pattern: Vec<u8> = (0..LEN).map(|i| (i * 31 + i / 256) as u8).collect();
    let (out, mut back) = (edu.dma_memory(LEN)?, edu.dma_memory(LEN)?);
    out.write_bytes(0, &pattern);
    println!("dma.to_device_iova={:#x}", out.iova());
    println!("dma.from_device_iova={:#x}", back.iova());
    edu.copy_to_device(&out, 0, LEN)?;
    edu.copy_from_device(0, &mut back, LEN)?;
    let mut got = vec![0u8; LEN];
    back.read_bytes(0, &mut got);
    let sha: String = Sha256::digest(&got)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((sha, got == pattern))
}
