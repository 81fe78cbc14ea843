//! udp-sink: receives a forwarder stream on an ordinary UDP socket, writes each
//! datagram's data at its offset in a file, and reports missing sequence numbers.
//!
//! ```text
//! udp-sink --port 9000 --output image.bin [--max-bytes N] [--window N]
//!          [--idle-seconds 5] [--json]
//! ```
//! Exits 0 once the end marker and every datagram before it have arrived; 1
//! when the stream goes idle with datagrams missing.
//!
//! Datagrams are untrusted: the file only ever holds bytes `0..--max-bytes`
//! (or up to the end marker's total), memory does not grow with what peers
//! send (sequence numbers are tracked in a fixed window, see
//! `examples::stream`), and what is outside is refused and counted.

use std::fs::File;
use std::net::UdpSocket;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use examples::stream::{Tracker, Verdict};
use examples::{cli, dmaf};

/// The default --max-bytes: 1 GiB.
const DEFAULT_MAX_BYTES: u64 = 1 << 30;

#[derive(Parser)]
#[command(
    about = "Receive a forwarder (DMAF) stream into a file",
    allow_negative_numbers = true
)]
struct Cli {
    /// UDP port to listen on (0: any free port, printed when listening).
    #[arg(long)]
    port: u16,
    /// The file to write (created, or emptied if it exists).
    #[arg(long)]
    output: PathBuf,
    /// Accept data only in bytes 0..N of the stream: the file never grows
    /// past N, and datagrams beyond it are refused.
    #[arg(long, default_value_t = DEFAULT_MAX_BYTES, value_parser = cli::u64_in(1..=i64::MAX as u64))]
    max_bytes: u64,
    /// Sequence numbers tracked ahead of the first one missing (64 to 2^28;
    /// window/8 bytes of memory): a datagram further ahead is refused, so a
    /// stream may arrive reordered by up to this many datagrams.
    #[arg(long, default_value_t = 1 << 20, value_parser = cli::u32_in(64..=1 << 28))]
    window: u32,
    /// Give up this long after the last datagram of the stream (above 0, at
    /// most a week).
    #[arg(long, default_value = "5", value_parser = cli::seconds, allow_hyphen_values = true)]
    idle_seconds: Duration,
    /// Print the summary as one line of JSON.
    #[arg(long)]
    json: bool,
}

/// What a run received.
#[derive(serde::Serialize)]
struct Summary {
    complete: bool,
    /// The stream's length, from its end marker.
    total: Option<u64>,
    /// Data bytes written to the file.
    bytes: u64,
    /// Data datagrams received (each sequence number once).
    datagrams: u64,
    duplicates: u64,
    /// Datagrams dropped: `malformed` plus `out_of_range`.
    refused: u64,
    /// Not a DMAF datagram (short, wrong magic).
    malformed: u64,
    /// Outside --max-bytes or the window, overflowing, or contradicting the
    /// end marker.
    out_of_range: u64,
    missing: u64,
    first_missing: Vec<u32>,
    output: PathBuf,
    /// Peak address space of this process, KiB.
    vm_peak_kib: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            examples::cli::report("udp-sink", &*e);
            ExitCode::FAILURE
        }
    }
}

type Error = Box<dyn std::error::Error>;

/// An I/O error on the output file, naming it.
fn on(path: &Path, what: &str) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.display().to_string();
    let what = what.to_string();
    move |e| format!("{what} {path}: {e}").into()
}

fn run(cli: &Cli) -> Result<bool, Error> {
    let sock = UdpSocket::bind(("0.0.0.0", cli.port))
        .map_err(|e| format!("cannot listen on UDP port {}: {e}", cli.port))?;
    // A deep queue, so a burst is not dropped by the socket (FORCE needs root).
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(&sock, sockopt::RcvBufForce, &(64 << 20)).is_err() {
        let _ = setsockopt(&sock, sockopt::RcvBuf, &(64 << 20));
    }
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let out = File::create(&cli.output).map_err(on(&cli.output, "cannot create"))?;
    println!("udp-sink: listening on port {}", sock.local_addr()?.port());
    let mut t = Tracker::new(cli.max_bytes, cli.window);
    let (mut bytes, mut malformed) = (0u64, 0u64);
    let (mut buf, mut last) = (vec![0u8; 65536], Instant::now());
    while !t.complete() && last.elapsed() < cli.idle_seconds {
        let Ok(n) = sock.recv(&mut buf) else { continue };
        let Some((seq, offset, data)) = dmaf::parse(&buf[..n]) else {
            malformed += 1;
            continue;
        };
        match t.accept(seq, offset, data.len()) {
            Verdict::Data => {
                out.write_all_at(data, offset)
                    .map_err(on(&cli.output, "cannot write"))?;
                bytes += data.len() as u64;
            }
            Verdict::End | Verdict::Duplicate => {}
            Verdict::Refused(_) => continue,
        }
        last = Instant::now();
    }
    if let Some((_, total)) = t.end().filter(|_| t.complete()) {
        // A stream whose datagrams stop short of its total: the rest is
        // zeros, still inside the range the end marker was accepted for.
        let len = out
            .metadata()
            .map_err(on(&cli.output, "cannot stat"))?
            .len();
        if len < total {
            out.set_len(total)
                .map_err(on(&cli.output, "cannot extend"))?;
        }
    }
    let s = Summary {
        complete: t.complete(),
        total: t.end().map(|(_, total)| total),
        bytes,
        datagrams: t.received(),
        duplicates: t.duplicates(),
        refused: malformed + t.refused(),
        malformed,
        out_of_range: t.refused(),
        missing: t.missing(),
        first_missing: t.first_missing(20),
        output: cli.output.clone(),
        vm_peak_kib: examples::usage::vm_peak_kib(),
    };
    report(cli, &s);
    Ok(s.complete)
}

fn report(cli: &Cli, s: &Summary) {
    if cli.json {
        examples::perf::print_json(s);
        return;
    }
    println!(
        "udp-sink: {} bytes in {} datagrams ({} duplicates, {} refused: {} malformed, {} out of range) to {}",
        s.bytes,
        s.datagrams,
        s.duplicates,
        s.refused,
        s.malformed,
        s.out_of_range,
        cli.output.display()
    );
    match s.total {
        Some(total) if s.complete => println!("udp-sink: complete, {total} bytes"),
        _ => println!(
            "udp-sink: incomplete: end marker {}, {} missing: {:?}",
            if s.total.is_some() {
                "seen"
            } else {
                "not seen"
            },
            s.missing,
            s.first_missing
        ),
    }
}
