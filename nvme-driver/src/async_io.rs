//! Awaiting I/O from an async runtime (the `async` cargo feature): an
//! [`AsyncQueuePair`] over an [`IoQueuePair`], driven by the queue's
//! interrupt eventfd through tokio's reactor in interrupt mode
//! ([`crate::Config::interrupts`]), or by polling between yields to the
//! runtime when the queue pair polls.
//!
//! # Buffers and cancellation
//!
//! A read or write moves its buffer into the queue pair, as
//! [`IoQueuePair::submit_read`] does, and the future gives it back when
//! the controller is done with it. Dropping the future before then does
//! not end the command: the buffer stays owned by the queue pair until its
//! completion is reaped (by any later call on this `AsyncQueuePair`, or
//! [`AsyncQueuePair::reap`]), and only then goes back to its pool. No
//! `unsafe` and no `mem::forget` can hand the memory back early.
//!
//! ```compile_fail
//! # async fn f(aq: &nvme_driver::AsyncQueuePair, buf: vfio_core::dma::Buffer) {
//! let reading = aq.read(1, 0, buf, 0, 4096);
//! buf.as_mut_slice()[0] = 1; // moved into the read: cannot be touched
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use vfio_core::dma::{Buffer, DmaTarget, DmaTargetMut};
use vfio_core::vfio::AsyncVector;

use crate::io::{IoCompletion, IoQueuePair};
use crate::{Error, Result};

/// How long a waiting future sleeps on the eventfd before it looks at the
/// queue again (so that a command that never completes is reported as the
/// queue pair's timeout says).
const WAKE_SLICE: Duration = Duration::from_millis(100);

/// An [`IoQueuePair`] whose reads, writes and flushes are awaited. Up to
/// [`IoQueuePair::depth`] of them may be in flight at once (join them, or
/// spawn them: the type is `Sync` when the buffer type is `Send`); one more
/// fails with [`Error::QueueFull`] and its buffer back.
///
/// ```no_run
/// # async fn f(nvme: &mut nvme_driver::Controller, pool: std::sync::Arc<vfio_core::dma::BufferPool>)
/// # -> nvme_driver::Result<()> {
/// use nvme_driver::AsyncQueuePair;
/// let aq = AsyncQueuePair::new(nvme.create_io_queue_pair(64)?)?;
/// let (a, b) = tokio::join!(
///     aq.read(1, 0, pool.alloc().unwrap(), 0, 4096),
///     aq.read(1, 8, pool.alloc().unwrap(), 0, 4096),
/// );
/// let (a, b) = (a.map_err(|(e, _)| e)?, b.map_err(|(e, _)| e)?);
/// assert_eq!(a.as_slice().len(), b.as_slice().len());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AsyncQueuePair<B: DmaTargetMut = Buffer> {
    inner: Mutex<Inner<B>>,
    /// The queue's interrupt vector in tokio's reactor, in interrupt mode.
    vector: Option<AsyncVector>,
}

/// A future's result: the buffer back, or the error and the buffer when
/// the queue pair could give it back (None: a timeout or protocol error,
/// after which the queue pair keeps it until the controller is reset).
pub type AsyncResult<B> = std::result::Result<B, (Error, Option<B>)>;

#[derive(Debug)]
struct Inner<B: DmaTarget> {
    qp: IoQueuePair<B>,
    /// Completions reaped for futures that have not looked yet.
    done: HashMap<u64, IoCompletion<B>>,
    /// Tags of dropped futures whose commands had not completed.
    abandoned: HashSet<u64>,
    next_tag: u64,
}

impl<B: DmaTarget> Inner<B> {
    /// Reaps every completion; returns `tag`'s if it is there.
    fn take(&mut self, tag: u64) -> Result<Option<IoCompletion<B>>> {
        if let Some(c) = self.done.remove(&tag) {
            return Ok(Some(c));
        }
        self.reap()?;
        Ok(self.done.remove(&tag))
    }

    fn reap(&mut self) -> Result<usize> {
        let Inner {
            qp,
            done,
            abandoned,
            ..
        } = self;
        qp.poll(usize::MAX, |c| {
            // An abandoned command's buffer goes back to its pool here:
            // the controller is done with it.
            if !abandoned.remove(&c.tag) {
                done.insert(c.tag, c);
            }
        })
    }
}

/// Marks a command abandoned when its future is dropped before it completed.
struct Pending<'a, B: DmaTargetMut> {
    owner: &'a AsyncQueuePair<B>,
    tag: u64,
    finished: bool,
}

impl<B: DmaTargetMut> Drop for Pending<'_, B> {
    fn drop(&mut self) {
        if !self.finished {
            let mut inner = self.owner.lock();
            if inner.done.remove(&self.tag).is_none() {
                inner.abandoned.insert(self.tag);
            }
        }
    }
}

impl<B: DmaTargetMut> AsyncQueuePair<B> {
    /// Wraps `qp`. In interrupt mode its vector is registered with the
    /// tokio runtime this is called from.
    ///
    /// # Errors
    ///
    /// [`Error::Vfio`] in interrupt mode outside a tokio runtime, or when
    /// the eventfd cannot be registered (see [`AsyncVector::new`]).
    ///
    /// # Panics
    ///
    /// In interrupt mode, in a runtime built without its IO driver.
    pub fn new(qp: IoQueuePair<B>) -> Result<AsyncQueuePair<B>> {
        let vector = match qp.interrupts() {
            None => None,
            Some((irqs, v)) => Some(AsyncVector::new(irqs, v)?),
        };
        Ok(AsyncQueuePair {
            inner: Mutex::new(Inner {
                qp,
                done: HashMap::new(),
                abandoned: HashSet::new(),
                next_tag: 0,
            }),
            vector,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner<B>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether futures sleep on the queue's interrupt (else they poll).
    pub fn uses_interrupts(&self) -> bool {
        self.vector.is_some()
    }

    /// Reads `bytes` at `lba` of namespace `nsid` into `buf` at `offset`;
    /// the buffer comes back with the data once the controller wrote it.
    ///
    /// # Errors
    ///
    /// As [`IoQueuePair::submit_read`] (with the buffer) and
    /// [`IoQueuePair::poll`] (without it: the queue pair keeps it).
    pub async fn read(
        &self,
        nsid: u32,
        lba: u64,
        buf: B,
        offset: usize,
        bytes: usize,
    ) -> AsyncResult<B> {
        let tag = self
            .submit(|qp, tag| qp.submit_read(nsid, lba, buf, offset, bytes, tag))
            .map_err(|(e, b)| (e, Some(b)))?;
        self.finish(tag).await
    }

    /// Writes `bytes` from `buf` at `offset` to `lba` of namespace `nsid`;
    /// the buffer comes back once the controller read it.
    ///
    /// # Errors
    ///
    /// As [`AsyncQueuePair::read`].
    pub async fn write(
        &self,
        nsid: u32,
        lba: u64,
        buf: B,
        offset: usize,
        bytes: usize,
    ) -> AsyncResult<B> {
        let tag = self
            .submit(|qp, tag| qp.submit_write(nsid, lba, buf, offset, bytes, tag))
            .map_err(|(e, b)| (e, Some(b)))?;
        self.finish(tag).await
    }

    /// Flushes namespace `nsid` (its volatile write cache, if any).
    ///
    /// # Errors
    ///
    /// As [`IoQueuePair::submit_flush`] and [`IoQueuePair::poll`].
    pub async fn flush(&self, nsid: u32) -> Result<()> {
        let tag = self.submit(|qp, tag| qp.submit_flush(nsid, tag))?;
        self.complete(tag).await?.result
    }

    /// Reaps the completions of commands whose futures were dropped,
    /// returning their buffers to their pools; how many completions came.
    ///
    /// # Errors
    ///
    /// As [`IoQueuePair::poll`].
    pub fn reap(&self) -> Result<usize> {
        self.lock().reap()
    }

    /// Commands in flight, those of dropped futures included.
    pub fn in_flight(&self) -> usize {
        self.lock().qp.in_flight()
    }

    /// The queue pair back, once no future borrows this. Completions reaped
    /// for no future are dropped (their buffers go back to their pools);
    /// commands still in flight stay the queue pair's.
    pub fn into_inner(self) -> IoQueuePair<B> {
        self.inner
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .qp
    }

    /// Submits with `f` under the next tag and rings; returns the tag.
    fn submit<E>(
        &self,
        f: impl FnOnce(&mut IoQueuePair<B>, u64) -> std::result::Result<(), E>,
    ) -> std::result::Result<u64, E> {
        let mut inner = self.lock();
        let tag = inner.next_tag;
        f(&mut inner.qp, tag)?;
        inner.next_tag += 1;
        inner.qp.ring();
        Ok(tag)
    }

    async fn finish(&self, tag: u64) -> AsyncResult<B> {
        match self.complete(tag).await {
            Ok(IoCompletion {
                result: Ok(()),
                buf: Some(buf),
                ..
            }) => Ok(buf),
            Ok(c) => Err((
                c.result.err().unwrap_or(Error::Protocol(
                    "a completed read or write without its buffer".into(),
                )),
                c.buf,
            )),
            Err(e) => Err((e, None)),
        }
    }

    /// Waits for command `tag`'s completion.
    async fn complete(&self, tag: u64) -> Result<IoCompletion<B>> {
        let mut pending = Pending {
            owner: self,
            tag,
            finished: false,
        };
        loop {
            if let Some(c) = self.lock().take(tag)? {
                pending.finished = true;
                return Ok(c);
            }
            match &self.vector {
                None => tokio::task::yield_now().await,
                Some(vector) => {
                    // On a timeout, look again: poll reports a stalled queue.
                    if let Ok(woken) = tokio::time::timeout(WAKE_SLICE, vector.wait()).await {
                        woken?;
                    }
                }
            }
        }
    }
}
