//! An interrupt vector awaited from tokio (the `tokio` feature): the
//! vector's eventfd registered with the runtime's reactor. Its one
//! `unsafe` block is tokio's registration, which needs the descriptor to
//! stay open for as long as the reactor watches it.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use tokio::io::unix::AsyncFd;

use super::Interrupts;
use crate::{Error, Result};

/// One vector of [`Interrupts`] for an async task: [`AsyncVector::wait`]
/// sleeps in the runtime until the device raises it. Holds a duplicate of
/// the eventfd (the same counter as the `Interrupts`'s: a wake-up read here
/// clears it there too); the vector stays enabled only as long as the
/// `Interrupts` lives.
///
/// ```no_run
/// # async fn f(irqs: &vfio_core::vfio::Interrupts) -> vfio_core::Result<()> {
/// let vector = vfio_core::vfio::AsyncVector::new(irqs, 1)?;
/// let fired = vector.wait().await?; // interrupts since the last wait
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AsyncVector {
    fd: AsyncFd<OwnedFd>,
}

impl AsyncVector {
    /// Registers vector `vector` of `irqs` with the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `irqs` has no such vector or no
    /// tokio runtime is current; [`Error::Io`]-like failures of
    /// duplicating or registering the eventfd as [`Error::InvalidArgument`]
    /// with the system's reason.
    ///
    /// # Panics
    ///
    /// When the current runtime was built without its IO driver
    /// (`enable_io` or `enable_all`), as tokio does.
    pub fn new(irqs: &Interrupts, vector: usize) -> Result<AsyncVector> {
        let fd = irqs.eventfd(vector).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "vector {vector} of {} {} vectors",
                irqs.len(),
                irqs.kind()
            ))
        })?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::InvalidArgument(
                "an AsyncVector is made inside a tokio runtime (with IO enabled)".into(),
            ));
        }
        let own = fd.try_clone_to_owned().map_err(|e| {
            Error::InvalidArgument(format!("duplicating vector {vector}'s eventfd: {e}"))
        })?;
        // SAFETY: `own` is an OwnedFd that the AsyncFd owns from here until
        // it is dropped: the descriptor stays open, refers to the same
        // eventfd, and `as_raw_fd` returns the same number all along.
        let fd = unsafe { AsyncFd::register(own) }.map_err(|e| {
            Error::InvalidArgument(format!(
                "registering vector {vector}'s eventfd with tokio: {e}"
            ))
        })?;
        Ok(AsyncVector { fd })
    }

    /// Sleeps until the vector fires; returns the interrupts counted since
    /// the last wait (the count is cleared). A count of 0 is a wake-up for
    /// interrupts a synchronous [`Interrupts::wait`] took meanwhile.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] with the system's reason when the reactor
    /// or the eventfd read fails.
    pub async fn wait(&self) -> Result<u64> {
        let mut guard = self
            .fd
            .readable()
            .await
            .map_err(|e| Error::InvalidArgument(format!("waiting on an eventfd: {e}")))?;
        let mut count = [0u8; 8];
        let got = match nix::unistd::read(self.fd.get_ref().as_fd(), &mut count) {
            Ok(8) => u64::from_ne_bytes(count),
            Ok(_) => 0,
            Err(nix::errno::Errno::EAGAIN) => 0,
            Err(e) => {
                let e = io::Error::from(e);
                return Err(Error::InvalidArgument(format!("reading an eventfd: {e}")));
            }
        };
        guard.clear_ready();
        Ok(got)
    }
}
