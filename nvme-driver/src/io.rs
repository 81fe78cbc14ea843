//! I/O queue pairs: the data path. One per thread; nothing on it takes a lock,
//! allocates or makes a system call.
//!
//! Two ways to use one:
//! - async and owning: [`IoQueuePair::submit_read`] takes a buffer (any
//!   [`DmaTarget`], e.g. a pool [`Buffer`]) and a tag, [`IoQueuePair::ring`]
//!   tells the controller about the batch, and [`IoQueuePair::poll`] hands each
//!   buffer back with its tag and result. The data lands in the buffer by DMA.
//! - blocking and borrowing: [`IoQueuePair::read`] / [`IoQueuePair::write`]
//!   move any number of bytes, split at the controller's transfer limit, and
//!   return when all are done.
//!
//! Every request is checked before it reaches the device (namespace, range,
//! buffer size): a bad one is an error and nothing is sent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vfio_core::dma::{Backing, Buffer, DmaMemory, DmaTarget};
use vfio_core::vfio::Container;

use crate::prp::{self, Prp2};
use crate::queue::QueuePair;
use crate::spec::{nvm, Command, ControllerInfo, NamespaceInfo, PAGE_SIZE};
use crate::{Error, Result};

/// How long a blocking call waits for its commands, unless set otherwise.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A finished asynchronous command.
#[derive(Debug)]
pub struct IoCompletion<B> {
    /// The tag given at submission.
    pub tag: u64,
    /// The buffer given at submission, back to the caller.
    pub buf: Option<B>,
    pub result: Result<()>,
}

/// Where a transfer goes: blocks of a namespace, bytes of a buffer.
#[derive(Clone, Copy, Debug)]
struct Span {
    nsid: u32,
    lba: u64,
    offset: usize,
    bytes: usize,
}

#[derive(Debug)]
struct Slot<B> {
    name: &'static str,
    tag: u64,
    buf: Option<B>,
}

/// An I/O submission/completion queue pair of one controller.
#[derive(Debug)]
pub struct IoQueuePair<B = Buffer> {
    qp: QueuePair,
    /// One PRP list page per command ID (also holds DSM ranges).
    lists: DmaMemory,
    slots: Vec<Option<Slot<B>>>,
    namespaces: Vec<NamespaceInfo>,
    controller: ControllerInfo,
    max_transfer: usize,
    timeout: Duration,
    failed: bool,
    /// When a command last completed, or the queue last went from idle to busy.
    progress: Instant,
}

impl<B: DmaTarget> IoQueuePair<B> {
    pub(crate) fn new(
        qp: QueuePair,
        container: &Arc<Container>,
        namespaces: Vec<NamespaceInfo>,
        controller: ControllerInfo,
        max_transfer: usize,
    ) -> Result<Self> {
        let lists = DmaMemory::new(container, qp.depth() * PAGE_SIZE + PAGE_SIZE, Backing::Auto)?;
        let slots = (0..=qp.depth()).map(|_| None).collect();
        Ok(IoQueuePair {
            qp,
            lists,
            slots,
            namespaces,
            controller,
            max_transfer,
            timeout: IO_TIMEOUT,
            failed: false,
            progress: Instant::now(),
        })
    }

    /// The queue ID.
    pub fn qid(&self) -> u16 {
        self.qp.qid()
    }

    /// Most commands in flight at once.
    pub fn depth(&self) -> usize {
        self.qp.depth()
    }

    /// Commands submitted and not yet returned by `poll`.
    pub fn in_flight(&self) -> usize {
        self.qp.in_flight()
    }

    /// How long the blocking calls wait for their commands (default [`IO_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// True after a blocking call timed out: the queue pair refuses work until
    /// [`crate::Controller::recreate_io_queue_pair`] after a controller reset.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// After a controller reset: every command in flight is handed to `f` as
    /// aborted (with its buffer: the disabled controller DMAs no more), and the
    /// rings start empty.
    pub(crate) fn abort_all(&mut self, mut f: impl FnMut(IoCompletion<B>)) {
        for slot in self.slots.iter_mut().filter_map(Option::take) {
            let result = Err(Error::Aborted { command: slot.name });
            f(IoCompletion {
                tag: slot.tag,
                buf: slot.buf,
                result,
            });
        }
        self.qp.reset();
        self.failed = false;
    }

    pub(crate) fn queue(&self) -> &QueuePair {
        &self.qp
    }

    /// The largest transfer of one command in bytes.
    pub fn max_transfer(&self) -> usize {
        self.max_transfer
    }

    /// The namespace `nsid` as identified when this queue pair was created.
    pub fn namespace(&self, nsid: u32) -> Result<&NamespaceInfo> {
        self.namespaces
            .iter()
            .find(|n| n.nsid == nsid)
            .ok_or_else(|| {
                let known: Vec<u32> = self.namespaces.iter().map(|n| n.nsid).collect();
                Error::InvalidArgument(format!(
                    "namespace {nsid} does not exist; this controller's namespaces are {known:?}"
                ))
            })
    }

    /// Checks a transfer of `bytes` at `lba` into `offset` of a `buf_len`-byte
    /// buffer; returns the namespace's block size and the block count.
    fn check(
        &self,
        nsid: u32,
        lba: u64,
        offset: usize,
        bytes: usize,
        buf_len: usize,
    ) -> Result<(u32, u32)> {
        let ns = self.namespace(nsid)?;
        let bs = ns.block_size as usize;
        if bytes == 0 {
            return Err(Error::InvalidArgument("a transfer of zero blocks".into()));
        }
        if !bytes.is_multiple_of(bs) {
            return Err(Error::InvalidArgument(format!(
                "{bytes} bytes is not a whole number of {bs}-byte blocks"
            )));
        }
        let blocks = (bytes / bs) as u64;
        if lba.checked_add(blocks).is_none_or(|end| end > ns.blocks) {
            return Err(Error::InvalidArgument(format!(
                "blocks {lba}..{} are past the end of namespace {nsid}, which has {} blocks of {bs} bytes",
                lba.saturating_add(blocks),
                ns.blocks
            )));
        }
        if offset.checked_add(bytes).is_none_or(|end| end > buf_len) {
            return Err(Error::InvalidArgument(format!(
                "buffer too small: {bytes} bytes at offset {offset} of a {buf_len}-byte buffer"
            )));
        }
        Ok((ns.block_size, blocks as u32))
    }

    fn usable(&self) -> Result<()> {
        if self.failed {
            return Err(Error::Timeout {
                command: "an earlier command",
                timeout: self.timeout,
            });
        }
        Ok(())
    }

    /// Submits a command moving `bytes` at `iova`, recording `slot` under its command ID.
    fn submit_data(
        &mut self,
        mut cmd: Command,
        iova: u64,
        bytes: usize,
        slot: Slot<B>,
    ) -> Result<()> {
        let (prp1, prp2) = prp::plan(iova, bytes);
        let cid = self.qp.next_cid().ok_or(Error::QueueFull {
            qid: self.qid(),
            depth: self.in_flight(),
        })?;
        let prp2 = match prp2 {
            Prp2::None => 0,
            Prp2::Page(p) => p,
            Prp2::List { first, count } => self.write_list(cid, first, count),
        };
        cmd.set_prps(prp1, prp2);
        let got = self.qp.submit(cmd)?;
        debug_assert_eq!(got, cid);
        if self.in_flight() == 1 {
            self.progress = Instant::now();
        }
        self.slots[cid as usize] = Some(slot);
        Ok(())
    }

    /// Writes the PRP list of command `cid`; returns its IOVA.
    fn write_list(&mut self, cid: u16, first: u64, count: usize) -> u64 {
        let base = cid as usize * PAGE_SIZE;
        for i in 0..count {
            self.lists
                .write::<u64>(base + 8 * i, first + (i * PAGE_SIZE) as u64);
        }
        self.lists.iova() + base as u64
    }

    fn submit_rw(&mut self, op: u8, span: Span, buf: B, tag: u64) -> Result<(), (Error, B)> {
        let Span {
            nsid,
            lba,
            offset,
            bytes,
        } = span;
        let blocks = match self
            .usable()
            .and_then(|_| self.check(nsid, lba, offset, bytes, buf.dma_len()))
            .and_then(|r| dword_aligned(buf.iova() + offset as u64).map(|_| r))
        {
            Ok((_, blocks)) => blocks,
            Err(e) => return Err((e, buf)),
        };
        if bytes > self.max_transfer {
            let e = Error::InvalidArgument(format!(
                "{bytes} bytes exceed the {}-byte limit of one command; split it (read/write do)",
                self.max_transfer
            ));
            return Err((e, buf));
        }
        if self.qp.next_cid().is_none() {
            return Err((
                Error::QueueFull {
                    qid: self.qid(),
                    depth: self.in_flight(),
                },
                buf,
            ));
        }
        let iova = buf.iova() + offset as u64;
        let name = if op == nvm::READ { "Read" } else { "Write" };
        let cmd = Command::read_write(op, nsid, lba, blocks);
        self.submit_data(
            cmd,
            iova,
            bytes,
            Slot {
                name,
                tag,
                buf: Some(buf),
            },
        )
        .expect("a free command ID was checked");
        Ok(())
    }

    /// Queues a read of `bytes` at `lba` of namespace `nsid` into `buf` at
    /// `offset`. The buffer comes back from [`IoQueuePair::poll`] with `tag`;
    /// on error it comes back at once and nothing was sent.
    pub fn submit_read(
        &mut self,
        nsid: u32,
        lba: u64,
        buf: B,
        offset: usize,
        bytes: usize,
        tag: u64,
    ) -> Result<(), (Error, B)> {
        self.submit_rw(
            nvm::READ,
            Span {
                nsid,
                lba,
                offset,
                bytes,
            },
            buf,
            tag,
        )
    }

    /// Queues a write of `bytes` from `buf` at `offset` to `lba`, like [`IoQueuePair::submit_read`].
    pub fn submit_write(
        &mut self,
        nsid: u32,
        lba: u64,
        buf: B,
        offset: usize,
        bytes: usize,
        tag: u64,
    ) -> Result<(), (Error, B)> {
        self.submit_rw(
            nvm::WRITE,
            Span {
                nsid,
                lba,
                offset,
                bytes,
            },
            buf,
            tag,
        )
    }

    /// Rings the doorbell once for everything submitted since the last ring.
    pub fn ring(&mut self) {
        self.qp.ring();
    }

    /// Hands up to `max` finished commands to `f`, with one doorbell write.
    /// When commands are in flight and none has completed for the timeout
    /// ([`IoQueuePair::set_timeout`]), fails: with [`Error::Removed`] if the
    /// controller reads as all ones, else [`Error::Timeout`]; the queue pair
    /// is then unusable until the controller is reset. So a vanished device
    /// never makes a polling loop spin forever.
    pub fn poll(&mut self, max: usize, f: impl FnMut(IoCompletion<B>)) -> Result<usize> {
        let n = self.take(max, f)?;
        if n > 0 {
            self.progress = Instant::now();
        } else if self.in_flight() > 0 && self.progress.elapsed() > self.timeout {
            self.failed = true;
            if self.qp.device_gone() {
                return Err(Error::Removed {
                    pending: self.in_flight(),
                });
            }
            return Err(Error::Timeout {
                command: "a queued command",
                timeout: self.timeout,
            });
        }
        Ok(n)
    }

    fn take(&mut self, max: usize, mut f: impl FnMut(IoCompletion<B>)) -> Result<usize> {
        let slots = &mut self.slots;
        self.qp.poll(max, |c| {
            let Some(slot) = slots[c.cid as usize].take() else {
                return;
            };
            let result = if c.status.is_success() {
                Ok(())
            } else {
                Err(Error::Command {
                    command: slot.name,
                    status: c.status,
                })
            };
            f(IoCompletion {
                tag: slot.tag,
                buf: slot.buf,
                result,
            });
        })
    }

    /// Polls until every command in flight is done or the timeout passes;
    /// returns the first error among them.
    fn drain(&mut self, what: &'static str) -> Result<()> {
        let start = Instant::now();
        let mut first_err = None;
        while self.in_flight() > 0 {
            self.poll(usize::MAX, |c| {
                if let (Err(e), None) = (c.result, &first_err) {
                    first_err = Some(e);
                }
            })?;
            if start.elapsed() > self.timeout {
                self.failed = true;
                return Err(Error::Timeout {
                    command: what,
                    timeout: self.timeout,
                });
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn blocking_rw(
        &mut self,
        op: u8,
        nsid: u32,
        lba: u64,
        mem: &impl DmaTarget,
        offset: usize,
        bytes: usize,
    ) -> Result<()> {
        self.usable()?;
        if self.in_flight() > 0 {
            return Err(Error::InvalidArgument("blocking I/O on a queue pair with asynchronous commands in flight; poll them first".into()));
        }
        let (bs, _) = self.check(nsid, lba, offset, bytes, mem.dma_len())?;
        dword_aligned(mem.iova() + offset as u64)?;
        let name = if op == nvm::READ { "Read" } else { "Write" };
        let chunk = self.max_transfer / bs as usize * bs as usize;
        let mut done = 0;
        while done < bytes {
            let n = chunk.min(bytes - done);
            let cmd = Command::read_write(
                op,
                nsid,
                lba + (done / bs as usize) as u64,
                (n / bs as usize) as u32,
            );
            match self.submit_data(
                cmd,
                mem.iova() + (offset + done) as u64,
                n,
                Slot {
                    name,
                    tag: 0,
                    buf: None,
                },
            ) {
                Ok(()) => done += n,
                Err(Error::QueueFull { .. }) => {
                    self.qp.ring();
                    self.poll_some(name)?;
                }
                Err(e) => return Err(e),
            }
        }
        self.qp.ring();
        self.drain(name)
    }

    /// Waits for at least one completion, failing fast on an error status.
    fn poll_some(&mut self, what: &'static str) -> Result<()> {
        let start = Instant::now();
        loop {
            let mut err = None;
            let n = self.poll(usize::MAX, |c| {
                if let Err(e) = c.result {
                    err.get_or_insert(e);
                }
            })?;
            if let Some(e) = err {
                self.drain(what)?;
                return Err(e);
            }
            if n > 0 {
                return Ok(());
            }
            if start.elapsed() > self.timeout {
                self.failed = true;
                return Err(Error::Timeout {
                    command: what,
                    timeout: self.timeout,
                });
            }
        }
    }

    /// Reads `bytes` at `lba` into `mem` at `offset`, by DMA, and waits.
    pub fn read(
        &mut self,
        nsid: u32,
        lba: u64,
        mem: &impl DmaTarget,
        offset: usize,
        bytes: usize,
    ) -> Result<()> {
        self.blocking_rw(nvm::READ, nsid, lba, mem, offset, bytes)
    }

    /// Writes `bytes` from `mem` at `offset` to `lba`, by DMA, and waits.
    pub fn write(
        &mut self,
        nsid: u32,
        lba: u64,
        mem: &impl DmaTarget,
        offset: usize,
        bytes: usize,
    ) -> Result<()> {
        self.blocking_rw(nvm::WRITE, nsid, lba, mem, offset, bytes)
    }

    /// Runs one command without data and waits.
    fn blocking_plain(
        &mut self,
        name: &'static str,
        cmd: Command,
        data: Option<(u64, usize)>,
    ) -> Result<()> {
        self.usable()?;
        if self.in_flight() > 0 {
            return Err(Error::InvalidArgument("blocking I/O on a queue pair with asynchronous commands in flight; poll them first".into()));
        }
        let (iova, len) = data.unwrap_or((0, 0));
        let mut cmd = cmd;
        if data.is_none() {
            cmd.set_prps(0, 0);
            self.qp.submit(cmd)?;
        } else {
            self.submit_data(
                cmd,
                iova,
                len,
                Slot {
                    name,
                    tag: 0,
                    buf: None,
                },
            )?;
        }
        self.qp.ring();
        self.drain(name)
    }

    /// Flush: everything written is on non-volatile media when this returns.
    pub fn flush(&mut self, nsid: u32) -> Result<()> {
        self.namespace(nsid)?;
        self.blocking_plain("Flush", Command::new(nvm::FLUSH, nsid), None)
    }

    /// Write Zeroes on `blocks` blocks at `lba`, where the controller supports it.
    pub fn write_zeroes(&mut self, nsid: u32, lba: u64, blocks: u32) -> Result<()> {
        if !self.controller.supports_write_zeroes() {
            return Err(Error::InvalidArgument(
                "this controller does not support Write Zeroes (ONCS bit 3)".into(),
            ));
        }
        let bs = self.namespace(nsid)?.block_size as usize;
        self.check(nsid, lba, 0, blocks as usize * bs, usize::MAX)?;
        self.blocking_plain(
            "Write Zeroes",
            Command::read_write(nvm::WRITE_ZEROES, nsid, lba, blocks),
            None,
        )
    }

    /// Dataset Management, deallocate (trim) `blocks` blocks at `lba`.
    pub fn deallocate(&mut self, nsid: u32, lba: u64, blocks: u32) -> Result<()> {
        if !self.controller.supports_deallocate() {
            return Err(Error::InvalidArgument(
                "this controller does not support Dataset Management (ONCS bit 2)".into(),
            ));
        }
        let bs = self.namespace(nsid)?.block_size as usize;
        self.check(nsid, lba, 0, blocks as usize * bs, usize::MAX)?;
        // One range entry (context attributes, length, starting LBA) in the spare last page.
        let page = self.qp.depth() * PAGE_SIZE;
        self.lists.write::<u32>(page, 0);
        self.lists.write::<u32>(page + 4, blocks);
        self.lists.write::<u64>(page + 8, lba);
        let iova = self.lists.iova() + page as u64;
        self.blocking_plain(
            "Dataset Management",
            Command::deallocate(nsid, 1),
            Some((iova, 16)),
        )
    }
}

/// PRP entries address dwords (base spec 4.1.1: bits 1:0 of the offset are 0).
fn dword_aligned(iova: u64) -> Result<()> {
    if !iova.is_multiple_of(4) {
        return Err(Error::InvalidArgument(format!(
            "data at IOVA {iova:#x} is not 4-byte aligned, which NVMe PRP entries need"
        )));
    }
    Ok(())
}
