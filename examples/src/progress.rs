//! Progress of a long transfer on stderr: a bar with bytes, rate and ETA on a
//! terminal (indicatif), a plain line every second otherwise (logs, serial
//! consoles without TERM).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// A terminal a person watches: stderr is a tty with a real TERM (a serial
/// console without TERM gets plain lines).
fn interactive() -> bool {
    std::io::stderr().is_terminal()
        && std::env::var("TERM").is_ok_and(|t| !t.is_empty() && t != "dumb")
}

/// Reports how many of `total` bytes are done.
pub struct Progress {
    what: &'static str,
    total: u64,
    bar: Option<ProgressBar>,
    last_line: Instant,
}

impl Progress {
    /// A display for a transfer of `total` bytes, labelled `what`.
    pub fn new(what: &'static str, total: u64) -> Progress {
        let bar = interactive().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(what);
            bar
        });
        Progress {
            what,
            total,
            bar,
            last_line: Instant::now(),
        }
    }

    /// `done` bytes are done now. Cheap: call it every loop.
    pub fn update(&mut self, done: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None if self.last_line.elapsed() >= Duration::from_secs(1) => {
                eprintln!("{}: {done} of {} bytes", self.what, self.total);
                self.last_line = Instant::now();
            }
            None => {}
        }
    }

    /// Removes the bar (before the summary is printed).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
