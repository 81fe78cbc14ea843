//! nvme-copy: copies a range of an NVMe namespace to a file with the async
//! API ([`nvme_driver::AsyncQueuePair`] on tokio), up to `--queue-depth`
//! reads in flight, with a progress bar.
//!
//! ```text
//! nvme-copy --device BDF [--nsid N] --lba L --blocks N --output FILE
//!           [--io-size BYTES] [--queue-depth N] [--interrupts]
//! ```
//!
//! Each read lands in a pool buffer by DMA and is written to the file at
//! its offset from that buffer (a positioned write, no staging copy); with
//! `--interrupts` the tasks sleep on the queue's MSI-X eventfd in tokio's
//! reactor, else they poll between yields.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use examples::cli;
use examples::progress::Progress;
use nvme_driver::{AsyncQueuePair, Controller, Error, Result};
use vfio_core::dma::BufferPool;
use vfio_core::pci::PciAddress;
use vfio_core::vfio::Container;

#[derive(Parser)]
#[command(
    name = "nvme-copy",
    about = "Copy a range of an NVMe namespace to a file with the async API (userspace driver)"
)]
struct Cli {
    /// PCI address of the controller, bound to vfio-pci.
    #[arg(long, value_name = "BDF")]
    device: PciAddress,
    /// Namespace ID.
    #[arg(long, default_value_t = 1, value_parser = cli::u32_in(cli::NSID))]
    nsid: u32,
    /// First block.
    #[arg(long)]
    lba: u64,
    /// Blocks to copy.
    #[arg(long, value_parser = cli::u64_in(1..=u64::MAX))]
    blocks: u64,
    /// The file to write (created or truncated).
    #[arg(long)]
    output: String,
    /// Bytes per read (whole blocks).
    #[arg(long, default_value_t = 128 << 10, value_parser = cli::u64_in(512..=1 << 24))]
    io_size: u64,
    /// Reads in flight at most.
    #[arg(long, default_value_t = 16, value_parser = cli::u64_in(1..=1023))]
    queue_depth: u64,
    #[command(flatten)]
    nvme: cli::NvmeOptions,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            cli::report("nvme-copy", &e);
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    cli::require_devices(&[cli.device]).map_err(Error::Vfio)?;
    let container = Container::new()?;
    let mut nvme = Controller::open_with(&container, cli.device, cli.nvme.config())?;
    let ns = nvme.namespace(cli.nsid)?;
    let bs = u64::from(ns.block_size);
    if !cli.io_size.is_multiple_of(bs) || cli.io_size as usize > nvme.max_transfer() {
        return Err(Error::InvalidArgument(format!(
            "--io-size {} must be whole {bs}-byte blocks and at most the controller's {} bytes",
            cli.io_size,
            nvme.max_transfer()
        )));
    }
    let total = cli::namespace_range(&ns, cli.lba, cli.blocks).map_err(Error::InvalidArgument)?;
    let depth = cli.queue_depth as usize;
    let pool = BufferPool::new(&container, cli.io_size as usize, depth)?;
    let qp = nvme.create_io_queue_pair(cli.queue_depth as u16 + 1)?;
    let file = File::create(&cli.output).map_err(|e| io_err(&cli.output, e))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::InvalidArgument(format!("starting tokio: {e}")))?;
    let started = Instant::now();
    let copy = Copy {
        aq: runtime.block_on(async { AsyncQueuePair::new(qp) })?,
        pool,
        file,
        nsid: cli.nsid,
        lba: cli.lba,
        bs,
        total,
        io_size: cli.io_size,
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
    };
    let copy = Arc::new(copy);
    let interrupts = copy.aq.uses_interrupts();
    runtime.block_on(copy_all(&copy, depth, &cli.output))?;
    let secs = started.elapsed().as_secs_f64();
    let total = copy.total;
    println!(
        "copied {total} bytes in {secs:.2} s ({:.1} MiB/s), {depth} reads in flight at most, completions {}",
        total as f64 / secs / f64::from(1 << 20),
        if interrupts { "by interrupt" } else { "polled" }
    );
    Ok(())
}

/// What the copying tasks share.
struct Copy {
    aq: AsyncQueuePair,
    pool: Arc<BufferPool>,
    file: File,
    nsid: u32,
    lba: u64,
    bs: u64,
    total: u64,
    io_size: u64,
    /// The next byte offset to read.
    next: AtomicU64,
    /// Bytes in the file.
    done: AtomicU64,
}

/// `depth` tasks, each reading the next piece and writing it out, with a
/// progress bar fed from the bytes written.
async fn copy_all(copy: &Arc<Copy>, depth: usize, output: &str) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..depth {
        let copy = Arc::clone(copy);
        let output = output.to_string();
        tasks.spawn(async move { copy.lane(&output).await });
    }
    let mut progress = Progress::new("copied", copy.total);
    let mut first_err = None;
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => drop(first_err.get_or_insert(e)),
                Some(Err(e)) => drop(first_err.get_or_insert(Error::InvalidArgument(format!("a copy task failed: {e}")))),
            },
            () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
        }
        progress.update(copy.done.load(Ordering::Relaxed));
    }
    progress.update(copy.done.load(Ordering::Relaxed));
    progress.finish();
    first_err.map_or(Ok(()), Err)
}

impl Copy {
    /// Copies pieces until none is left.
    async fn lane(&self, output: &str) -> Result<()> {
        loop {
            let at = self.next.fetch_add(self.io_size, Ordering::Relaxed);
            if at >= self.total {
                return Ok(());
            }
            let n = self.io_size.min(self.total - at) as usize;
            let buf = self.pool.alloc().ok_or_else(|| {
                Error::InvalidArgument("no free buffer: more tasks than buffers".into())
            })?;
            let lba = self.lba + at / self.bs;
            let buf = self
                .aq
                .read(self.nsid, lba, buf, 0, n)
                .await
                .map_err(|(e, _)| e)?;
            self.file
                .write_all_at(&buf.as_slice()[..n], at)
                .map_err(|e| io_err(output, e))?;
            self.done.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

fn io_err(path: &str, e: std::io::Error) -> Error {
    Error::InvalidArgument(format!("{path}: {e}"))
}
