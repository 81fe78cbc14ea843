//! udp-sink: receives a forwarder stream on an ordinary UDP socket, writes each
//! datagram's data at its offset in a file, and reports missing sequence numbers.
//!
//! ```text
//! udp-sink --port 9000 --output image.bin [--idle-seconds 5]
//! ```
//! Exits 0 once the end marker and every datagram before it have arrived; 1
//! when the stream goes idle with datagrams missing.

use std::fs::File;
use std::net::UdpSocket;
use std::os::unix::fs::FileExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use examples::dmaf;

#[derive(Parser)]
#[command(about = "Receive a forwarder (DMAF) stream into a file")]
struct Cli {
    #[arg(long)]
    port: u16,
    #[arg(long)]
    output: String,
    /// Give up this long after the last datagram.
    #[arg(long, default_value_t = 5.0)]
    idle_seconds: f64,
}

/// What has arrived.
#[derive(Default)]
struct Progress {
    seen: Vec<bool>,
    datagrams: u64,
    duplicates: u64,
    bytes: u64,
    /// (sequence number, total length) of the end marker.
    end: Option<(u32, u64)>,
}

impl Progress {
    fn missing(&self) -> Vec<u32> {
        let upto = self.end.map_or(self.seen.len(), |(seq, _)| seq as usize);
        (0..upto)
            .filter(|&s| !self.seen.get(s).copied().unwrap_or(false))
            .map(|s| s as u32)
            .collect()
    }
    fn complete(&self) -> bool {
        self.end.is_some() && self.missing().is_empty()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("udp-sink: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> std::io::Result<bool> {
    let sock = UdpSocket::bind(("0.0.0.0", cli.port))?;
    // A deep queue, so a burst is not dropped by the socket (FORCE needs root).
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(&sock, sockopt::RcvBufForce, &(64 << 20)).is_err() {
        let _ = setsockopt(&sock, sockopt::RcvBuf, &(64 << 20));
    }
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let out = File::create(&cli.output)?;
    println!("udp-sink: listening on port {}", cli.port);
    let (mut p, mut buf, mut last) = (Progress::default(), vec![0u8; 65536], Instant::now());
    while !p.complete() && last.elapsed() < Duration::from_secs_f64(cli.idle_seconds) {
        let Ok(n) = sock.recv(&mut buf) else { continue };
        last = Instant::now();
        let Some((seq, offset, data)) = dmaf::parse(&buf[..n]) else {
            continue;
        };
        record(&mut p, &out, seq, offset, data)?;
    }
    let missing = p.missing();
    println!(
        "udp-sink: {} bytes in {} datagrams ({} duplicates) to {}",
        p.bytes, p.datagrams, p.duplicates, cli.output
    );
    match p.end {
        Some((_, total)) if missing.is_empty() => println!("udp-sink: complete, {total} bytes"),
        _ => println!(
            "udp-sink: incomplete: end marker {}, {} missing: {:?}",
            if p.end.is_some() { "seen" } else { "not seen" },
            missing.len(),
            &missing[..missing.len().min(20)]
        ),
    }
    Ok(p.complete())
}

fn record(p: &mut Progress, out: &File, seq: u32, offset: u64, data: &[u8]) -> std::io::Result<()> {
    let i = seq as usize;
    if p.seen.len() <= i {
        p.seen.resize(i + 1, false);
    }
    if std::mem::replace(&mut p.seen[i], true) {
        p.duplicates += 1;
        return Ok(());
    }
    p.datagrams += 1;
    if data.is_empty() {
        p.end = Some((seq, offset));
        out.set_len(offset)?;
        return Ok(());
    }
    out.write_all_at(data, offset)?;
    p.bytes += data.len() as u64;
    Ok(())
}
