//! I/O queue pairs: the data path. One per thread; nothing on it takes a lock,
//! allocates or makes a system call.
//!
//! Two ways to use one:
//! - async and owning: [`IoQueuePair::submit_read`] takes a buffer (any
//!   [`DmaTargetMut`], e.g. a pool [`Buffer`]) and a tag, [`IoQueuePair::ring`]
//!   tells the controller about the batch, and [`IoQueuePair::poll`] hands each
//!   buffer back with its tag and result. The data lands in the buffer by DMA.
//! - blocking and borrowing: [`IoQueuePair::read`] (into `&mut` memory) /
//!   [`IoQueuePair::write`] (from `&` memory) move any number of bytes, split
//!   at the controller's transfer limit, and return when all are done.
//!
//! Every request is checked before it reaches the device (namespace, range,
//! buffer size): a bad one is an error and nothing is sent.

use std::io::Write;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vfio_core::dma::{Buffer, BytesByWriter, DmaMemory, DmaTarget, DmaTargetMut};
use vfio_core::vfio::{AbortOnUnwind, Interrupts, Wait};

use crate::admin::Admin;
use crate::config::DataPointer;
use crate::prp::{self, Prp2};
use crate::queue::QueuePair;
use crate::sgl;
use crate::spec::{nvm, Command, ControllerInfo, NamespaceInfo, Status, PAGE_SIZE};
use crate::{Error, Result};

/// How long a queue pair waits for its commands unless set otherwise with
/// [`IoQueuePair::set_timeout`]: a blocking call for all of its commands,
/// [`IoQueuePair::poll`] for the next completion while commands are in flight.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a blocking call sleeps on its interrupt before looking at
/// the completion queue again (interrupt mode).
const IDLE_SLICE: Duration = Duration::from_millis(10);

/// Most blocks one Read, Write or Write Zeroes command moves (NLB is 16 bits, 0-based).
const MAX_BLOCKS_PER_COMMAND: u64 = 1 << 16;
/// Most range entries of one Dataset Management command (base spec 7.3: NR is 8 bits, 0-based).
const MAX_DSM_RANGES: usize = 256;

/// Most pieces one [`IoQueuePair::submit_write_gather`] takes: the SGL
/// Data Block descriptors (16 bytes each) that fit the command's list page
/// of 4 KiB, 256.
pub const MAX_GATHER_PIECES: usize = PAGE_SIZE / sgl::DESCRIPTOR_BYTES;

/// One piece of a gather Write ([`IoQueuePair::submit_write_gather`]): a
/// buffer, the offset of the piece's first byte in it, and its length in
/// bytes.
pub type GatherPiece<B> = (B, usize, usize);

/// A finished command, handed to the callback of [`IoQueuePair::poll`] or
/// [`crate::Controller::recreate_io_queue_pair`]. The controller no longer
/// reaches its buffer: dropping the buffer returns it to its pool.
#[derive(Debug)]
#[non_exhaustive]
pub struct IoCompletion<B> {
    /// The tag given at submission (0 for a command of a blocking call).
    pub tag: u64,
    /// The buffer given at submission, back to the caller; for
    /// [`IoQueuePair::submit_write_gather`], the first piece's buffer (the
    /// other pieces' buffers are dropped as the command completes: a pool
    /// buffer goes back to its pool, a [`vfio_core::dma::SharedBuffer`]
    /// loses one owner). None for [`IoQueuePair::submit_flush`] and for a
    /// command of a blocking call that returned early (a timeout or a
    /// protocol error), handed back by [`crate::Controller::recreate_io_queue_pair`].
    pub buf: Option<B>,
    /// Ok when the command succeeded; else [`Error::Command`] with the
    /// controller's status, or [`Error::Aborted`] after a reset.
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

/// A command in flight: what it is, and the buffer the queue holds for it
/// (none for blocking calls, whose caller's borrow holds the memory, and
/// for a gather Write of several pieces, whose buffers are in
/// `IoQueuePair::gathers` under the same command ID).
///
/// The queue keeps one per command ID, written when the command is
/// submitted and read in place when it completes (only the buffer moves
/// out): whether one is in use is whether its command ID is in flight,
/// which [`QueuePair`] knows and checks every completion against. The
/// slot of a command ID not in flight holds no buffer.
#[derive(Debug)]
struct Slot<B> {
    name: &'static str,
    tag: u64,
    buf: Option<B>,
    /// For a read into `buf`: how to record the bytes the controller wrote
    /// ([`DmaTargetMut::device_wrote`]), and which.
    wrote: Option<DeviceWrote<B>>,
}

/// [`DmaTargetMut::device_wrote`] of a buffer type (only reads, which need
/// `B: DmaTargetMut`, have one) and the range the command writes.
#[derive(Debug)]
struct DeviceWrote<B> {
    record: fn(&mut B, usize, usize),
    offset: usize,
    bytes: usize,
}

impl<B> Slot<B> {
    /// The slot of a command ID not in flight.
    const FREE: Slot<B> = Slot {
        name: "",
        tag: 0,
        buf: None,
        wrote: None,
    };

    /// Finishes its command, which leaves the slot free: the tag, the
    /// buffer (for a gather Write, its first piece's, taken from `gather`)
    /// with a read's bytes recorded as the controller's when it succeeded,
    /// as nobody's when it did not, and the result from `status` (None:
    /// aborted).
    #[inline]
    fn finish(
        &mut self,
        gather: &mut Vec<GatherPiece<B>>,
        status: Option<Status>,
    ) -> IoCompletion<B> {
        let ok = status.is_some_and(Status::is_success);
        // Recorded while the buffer is in the slot: it then moves once,
        // from the slot into the completion.
        if let (Some(w), Some(b)) = (&self.wrote, self.buf.as_mut()) {
            let bytes = if ok { w.bytes } else { 0 };
            (w.record)(b, w.offset, bytes);
        }
        let buf = match self.buf.take() {
            Some(b) => Some(b),
            // Only a command without a buffer of its own may be a gather.
            None => first_piece(gather),
        };
        // The result made last, in place: an error is rare, and big.
        IoCompletion {
            tag: self.tag,
            buf,
            result: if ok {
                Ok(())
            } else {
                Err(self.failure(status))
            },
        }
    }

    /// The error of a command that failed with `status` (None: aborted).
    #[cold]
    fn failure(&self, status: Option<Status>) -> Error {
        match status {
            Some(status) => Error::Command {
                command: self.name,
                status,
            },
            None => Error::Aborted { command: self.name },
        }
    }
}

/// An I/O submission/completion queue pair of one controller, made by
/// [`crate::Controller::create_io_queue_pair`], for one thread: its I/O
/// path takes no lock. `B` is the
/// type of buffer its asynchronous commands take (any [`DmaTarget`]; reads
/// need a [`DmaTargetMut`]).
///
/// # Memory the controller writes
///
/// The compiler sees to it that no code reads or reuses memory while the
/// controller may write it:
///
/// - [`IoQueuePair::submit_read`] takes its buffer by value; it comes back
///   only from [`IoQueuePair::poll`] once the command completed, or from
///   [`crate::Controller::recreate_io_queue_pair`] after a reset that came
///   after its submission.
/// - [`IoQueuePair::read`] borrows its target `&mut` and returns only once
///   the controller is done with it: on a timeout or an error with commands
///   still in flight it first disables the controller (or turns its bus
///   mastering off), so none of them moves data any more; if neither can be
///   done, the process aborts. So does a panic while its commands are in
///   flight (it would hand the borrow back early); the controller is
///   stopped before anything is logged, so a panicking logger unwinds only
///   once the memory is safe.
/// - Dropping the queue pair (or leaving a scope by `?`) deletes its queues
///   at the controller, which completes only when every command of them is
///   done, before any buffer it holds goes back to its pool; if that fails,
///   the controller is disabled; if even that fails, the buffers and rings
///   are leaked on purpose (`vfio_core::dma::leaked`), never reused. All of
///   it through vfio-core's `Device::stop_dma`, before anything is logged.
/// - [`IoQueuePair::submit_write_gather`] takes the buffers of all its
///   pieces by value and holds every one of them until the command is
///   done, as for one buffer: the first comes back from
///   [`IoQueuePair::poll`] (or [`crate::Controller::recreate_io_queue_pair`]),
///   the others are dropped then; a drop of the queue pair frees them only
///   once the controller stopped, and leaks them all if it cannot be stopped.
///
/// ```compile_fail,E0502
/// # use nvme_driver::IoQueuePair;
/// # use vfio_core::dma::Buffer;
/// // No slice of a buffer may be alive while the controller writes it.
/// fn read(qp: &mut IoQueuePair, mut buf: Buffer) -> nvme_driver::Result<u8> {
///     let v = buf.as_slice();
///     qp.read(1, 0, &mut buf, 0, 512)?;
///     Ok(v[0])
/// }
/// ```
///
/// ```compile_fail,E0382
/// # use nvme_driver::IoQueuePair;
/// # use vfio_core::dma::Buffer;
/// // A buffer given to an asynchronous read is the queue's until it comes back.
/// fn read(qp: &mut IoQueuePair, buf: Buffer) -> u8 {
///     let _ = qp.submit_read(1, 0, buf, 0, 512, 7);
///     buf.as_slice()[0]
/// }
/// ```
///
/// ```compile_fail,E0599
/// # use nvme_driver::IoQueuePair;
/// # use vfio_core::dma::SharedBuffer;
/// // The controller may read a shared (read-only) buffer, never write it.
/// fn read(qp: &mut IoQueuePair<SharedBuffer>, buf: SharedBuffer) {
///     let _ = qp.submit_read(1, 0, buf, 0, 512, 7);
/// }
/// ```
///
/// ```compile_fail,E0277
/// # use nvme_driver::IoQueuePair;
/// # use vfio_core::dma::Buffer;
/// // Nor can a queue hold a borrowed buffer: forgetting the queue would end
/// // the borrow while the controller may still write it.
/// fn queue<'a>(qp: IoQueuePair<&'a mut Buffer>) {}
/// ```
#[derive(Debug)]
pub struct IoQueuePair<B: DmaTarget = Buffer> {
    qp: QueuePair,
    /// One page per command ID for its PRP list or, for a gather Write, its
    /// SGL Data Block descriptors; and a spare page for DSM ranges.
    lists: DmaMemory,
    /// By command ID (see [`Slot`]).
    slots: Vec<Slot<B>>,
    /// By command ID: the pieces of a gather Write of more than one piece
    /// in flight (empty otherwise). Only gather commands touch it: their
    /// slot holds no buffer.
    gathers: Vec<Vec<GatherPiece<B>>>,
    namespaces: Vec<NamespaceInfo>,
    /// Index in `namespaces` of the namespace of the last request, tried
    /// first by the next.
    last_namespace: usize,
    controller: ControllerInfo,
    max_transfer: usize,
    timeout: Duration,
    failed: bool,
    /// When a command last completed, or the queue last went from idle to busy.
    progress: Instant,
    admin: Arc<Admin>,
    /// The controller's generation when the queues were created there.
    generation: u64,
    /// Deleted at the controller (or gone with a reset), memory settled.
    stopped: bool,
    /// Bytes given to Write commands, by who wrote them.
    written_from: BytesByWriter,
    /// PRPs, SGLs, or SGLs where PRPs would need a list (resolved).
    data_pointer: DataPointer,
    /// Interrupt mode: the controller's vectors and this CQ's.
    irq: Option<(Arc<Interrupts>, usize)>,
}

impl<B: DmaTarget> IoQueuePair<B> {
    /// A queue pair over `qp`, which exists at the controller since
    /// `generation`; `lists` holds a PRP list page per command ID and one more.
    pub(crate) fn new(
        qp: QueuePair,
        lists: DmaMemory,
        admin: Arc<Admin>,
        generation: u64,
        namespaces: Vec<NamespaceInfo>,
        controller: ControllerInfo,
        max_transfer: usize,
    ) -> Self {
        let slots = (0..=qp.depth()).map(|_| Slot::FREE).collect();
        let gathers = (0..=qp.depth()).map(|_| Vec::new()).collect();
        IoQueuePair {
            qp,
            lists,
            slots,
            gathers,
            namespaces,
            last_namespace: 0,
            controller,
            max_transfer,
            timeout: IO_TIMEOUT,
            failed: false,
            progress: Instant::now(),
            admin,
            generation,
            stopped: false,
            written_from: BytesByWriter::default(),
            data_pointer: DataPointer::Prp,
            irq: None,
        }
    }

    /// Interrupt mode on MSI-X vector `irq.1` (see [`crate::Config::interrupts`]).
    pub(crate) fn with_interrupts(mut self, irq: Option<(Arc<Interrupts>, usize)>) -> Self {
        self.irq = irq;
        self
    }

    /// The MSI-X vector this queue pair's completion queue raises, in
    /// interrupt mode ([`crate::Config::interrupts`]); None when polled.
    pub fn interrupt_vector(&self) -> Option<usize> {
        self.irq.as_ref().map(|(_, v)| *v)
    }

    /// The eventfd the controller's interrupts for this queue pair signal,
    /// in interrupt mode: for an event loop (epoll, an async runtime) that
    /// waits on it, then calls [`IoQueuePair::poll`]. None when polled.
    pub fn eventfd(&self) -> Option<BorrowedFd<'_>> {
        let (irqs, v) = self.irq.as_ref()?;
        irqs.eventfd(*v)
    }

    /// Sleeps until the controller has posted a completion on this queue
    /// pair or `timeout` passes, without spinning (interrupt mode only):
    /// true when a completion is ready for [`IoQueuePair::poll`]. It
    /// returns at once when one is ready already, so the usual loop is
    /// submit, [`IoQueuePair::ring`], `wait`, `poll`. An interrupt counted
    /// for completions polled before is consumed without returning.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # fn f(qp: &mut nvme_driver::IoQueuePair) -> nvme_driver::Result<()> {
    /// while qp.in_flight() > 0 {
    ///     if qp.wait(Duration::from_millis(100))? {
    ///         qp.poll(usize::MAX, |done| drop(done.buf))?;
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when this queue pair is polled (the
    /// controller was opened without [`crate::Config::interrupts`]);
    /// [`Error::Vfio`] when waiting on the eventfd fails.
    pub fn wait(&mut self, timeout: Duration) -> Result<bool> {
        let Some((irqs, v)) = self.irq.as_ref() else {
            return Err(Error::InvalidArgument(format!(
                "queue pair {} polls; open the controller with Config::interrupts(true) to wait",
                self.qid()
            )));
        };
        let deadline = Instant::now() + timeout;
        loop {
            if self.qp.completion_ready() {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if let Wait::TimedOut = irqs.wait(*v, left)? {
                return Ok(self.qp.completion_ready());
            }
        }
    }

    /// The controller's interrupts and this queue's vector, in interrupt mode.
    #[cfg(feature = "async")]
    pub(crate) fn interrupts(&self) -> Option<(&Interrupts, usize)> {
        self.irq.as_ref().map(|(irqs, v)| (&**irqs, *v))
    }

    /// In interrupt mode, sleeps until a completion is ready (at most a
    /// short slice, so a vector shared with another queue cannot stall a
    /// blocking call); polled, returns at once.
    fn idle(&mut self) -> Result<()> {
        if self.irq.is_some() {
            self.wait(IDLE_SLICE)?;
        }
        Ok(())
    }

    /// Describes I/O data as `resolved` says (see [`crate::DataPointer`]).
    pub(crate) fn describing_data(mut self, resolved: DataPointer) -> Self {
        self.data_pointer = resolved;
        self
    }

    /// Data may start at any byte: SGLs are in use and have no alignment
    /// rule (SGLS 01b).
    fn unaligned_ok(&self) -> bool {
        self.data_pointer != DataPointer::Prp && self.controller.sgl_without_alignment_rule()
    }

    /// Whether [`IoQueuePair::submit_write_gather`] can be used: this queue
    /// pair describes data with SGLs ([`IoQueuePair::data_pointer`] is
    /// [`DataPointer::Auto`] or [`DataPointer::Sgl`] on a controller that
    /// reports SGLs) and the controller sets no alignment rule for SGL Data
    /// Blocks (Identify Controller SGLS bits 1:0 are 01b). Where SGLS is
    /// 10b, every Data Block must start at a multiple of 4 bytes and be a
    /// multiple of 4 bytes long, which pieces at arbitrary byte offsets
    /// and lengths are not; where it is 00b, or PRPs were chosen, only
    /// one contiguous range per command can be described. Then the caller
    /// copies the pieces into one buffer and uses [`IoQueuePair::submit_write`].
    pub fn gather_supported(&self) -> bool {
        self.unaligned_ok()
    }

    /// Why [`IoQueuePair::gather_supported`] is false, with the fix.
    fn gather_refusal(&self) -> Option<String> {
        const COPY: &str = "copy the pieces into one buffer and use submit_write instead";
        if self.data_pointer == DataPointer::Prp {
            return Some(if self.controller.supports_sgl() {
                format!(
                    "queue pair {} describes data with PRPs (Config::data_pointer(DataPointer::Prp)), which cannot gather pieces at arbitrary byte offsets; open the controller with DataPointer::Auto or DataPointer::Sgl, or {COPY}",
                    self.qid()
                )
            } else {
                format!(
                    "this controller does not support SGLs (Identify Controller SGLS bits 1:0 are 00b) and PRPs cannot gather pieces at arbitrary byte offsets; {COPY}"
                )
            });
        }
        if !self.controller.sgl_without_alignment_rule() {
            return Some(format!(
                "this controller's SGLs require every Data Block to start at a multiple of 4 bytes and be a multiple of 4 bytes long (Identify Controller SGLS bits 1:0 are 10b), which pieces at arbitrary byte offsets and lengths are not; {COPY}"
            ));
        }
        None
    }

    /// How this queue pair describes data; see
    /// [`crate::Controller::data_pointer`].
    pub fn data_pointer(&self) -> DataPointer {
        self.data_pointer
    }

    /// Whether data at `iova` whose PRP2 would be `prp2` goes in an SGL.
    fn sgl_for(&self, iova: u64, prp2: Prp2) -> bool {
        match self.data_pointer {
            DataPointer::Prp => false,
            DataPointer::Sgl => true,
            DataPointer::Auto => !iova.is_multiple_of(4) || matches!(prp2, Prp2::List { .. }),
        }
    }

    /// Bytes of PRP list memory a queue pair of `depth` needs.
    pub(crate) fn list_bytes(depth: usize) -> usize {
        depth * PAGE_SIZE + PAGE_SIZE
    }

    /// The queue ID (1 or more; 0 is the admin queue).
    pub fn qid(&self) -> u16 {
        self.qp.qid()
    }

    /// Whether this queue pair's doorbells are shadowed in host memory
    /// (see [`crate::Config::shadow_doorbells`]).
    pub fn uses_shadow_doorbells(&self) -> bool {
        self.qp.has_shadow_doorbells()
    }

    /// Most commands in flight at once (the entries, less one).
    pub fn depth(&self) -> usize {
        self.qp.depth()
    }

    /// Commands submitted and not yet returned by [`IoQueuePair::poll`]
    /// (the queue pair holds their buffers).
    pub fn in_flight(&self) -> usize {
        self.qp.in_flight()
    }

    /// How long the blocking calls wait for their commands, and
    /// [`IoQueuePair::poll`] for the next completion (default [`IO_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// True after a command timed out, the controller vanished or wrote a
    /// completion no correct controller writes, or the controller was reset
    /// or disabled since the queue pair was (re-)created: it refuses work until
    /// [`crate::Controller::recreate_io_queue_pair`] after a controller reset.
    pub fn is_failed(&self) -> bool {
        self.failed || self.generation != self.admin.generation()
    }

    pub(crate) fn admin(&self) -> &Arc<Admin> {
        &self.admin
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn set_generation(&mut self, generation: u64) {
        self.generation = generation;
    }

    /// After a controller reset: every command in flight is handed to `f` as
    /// aborted (with its buffer: the disabled controller DMAs no more), and the
    /// rings start empty. The caller checked that the reset came after them.
    pub(crate) fn abort_all(&mut self, mut f: impl FnMut(IoCompletion<B>)) {
        let slots = self.slots.iter_mut().zip(&mut self.gathers);
        for (cid, (slot, gather)) in slots.enumerate() {
            if self.qp.is_in_flight(cid) {
                f(slot.finish(gather, None));
            }
        }
        self.qp.reset();
        self.failed = false;
    }

    pub(crate) fn queue(&self) -> &QueuePair {
        &self.qp
    }

    /// Bytes this queue pair's Write commands took from memory, by who
    /// wrote that memory ([`DmaTarget::writer`]: a device by DMA, such as a
    /// NIC's receive buffer, or the CPU), counted as each command is
    /// submitted. What a program reports as written to disk without a copy.
    pub fn written_from(&self) -> BytesByWriter {
        self.written_from
    }

    /// The largest transfer of one command in bytes (see
    /// [`crate::Controller::max_transfer`]): the limit of
    /// [`IoQueuePair::submit_read`] and [`IoQueuePair::submit_write`].
    pub fn max_transfer(&self) -> usize {
        self.max_transfer
    }

    /// The namespace `nsid` as identified when this queue pair was created.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when this queue pair does not serve
    /// `nsid` (not active, or not usable by this driver, when it was created).
    pub fn namespace(&self, nsid: u32) -> Result<&NamespaceInfo> {
        self.namespaces
            .iter()
            .find(|n| n.nsid == nsid)
            .ok_or_else(|| self.unknown_namespace(nsid))
    }

    #[cold]
    fn unknown_namespace(&self, nsid: u32) -> Error {
        let known: Vec<u32> = self.namespaces.iter().map(|n| n.nsid).collect();
        Error::InvalidArgument(format!(
            "namespace {nsid} does not exist or is not supported; this queue pair serves namespaces {known:?}"
        ))
    }

    /// Block size and size in blocks of namespace `nsid`, as
    /// [`IoQueuePair::namespace`] finds it, but the namespace of the last
    /// request is tried first, without a search: most callers use one.
    fn geometry(&mut self, nsid: u32) -> Result<(usize, u64)> {
        let ns = match self.namespaces.get(self.last_namespace) {
            Some(ns) if ns.nsid == nsid => ns,
            _ => self.find_namespace(nsid)?,
        };
        Ok((ns.block_size as usize, ns.blocks))
    }

    /// Namespace `nsid` found by a search, and remembered as the last one.
    #[cold]
    fn find_namespace(&mut self, nsid: u32) -> Result<&NamespaceInfo> {
        let Some(i) = self.namespaces.iter().position(|n| n.nsid == nsid) else {
            return Err(self.unknown_namespace(nsid));
        };
        self.last_namespace = i;
        Ok(&self.namespaces[i])
    }

    /// Checks `blocks` blocks at `lba` of namespace `nsid`; returns its block size.
    fn check_blocks(&mut self, nsid: u32, lba: u64, blocks: u64) -> Result<usize> {
        let (bs, size) = self.geometry(nsid)?;
        blocks_in_namespace(nsid, (bs, size), lba, blocks)?;
        Ok(bs)
    }

    /// Checks a transfer of `bytes` at `lba` from or into `mem` at `offset`:
    /// returns the namespace's block size and the IOVA of the data. The
    /// namespace is looked up once for all of it.
    #[inline]
    fn check(&mut self, span: Span, mem: &impl DmaTarget) -> Result<(usize, u64)> {
        let Span {
            nsid,
            lba,
            offset,
            bytes,
        } = span;
        let (bs, size) = self.geometry(nsid)?;
        // A block size is 1 << LBADS: a mask and a shift, no division.
        if bytes & (bs - 1) != 0 {
            return Err(partial_block(bytes, bs));
        }
        let blocks = bytes >> bs.trailing_zeros();
        blocks_in_namespace(nsid, (bs, size), lba, blocks as u64)?;
        let iova = mem
            .dma_range(self.admin.container(), offset, bytes)
            .map_err(unusable_buffer)?;
        // The address first: aligned data (the usual) needs no look at the rule.
        if !iova.is_multiple_of(4) && !self.unaligned_ok() {
            return Err(misaligned(iova));
        }
        Ok((bs, iova))
    }

    fn usable(&self) -> Result<()> {
        if self.generation != self.admin.generation() {
            return Err(Error::QueueGone { qid: self.qid() });
        }
        if self.failed {
            return Err(Error::Timeout {
                command: "an earlier command",
                timeout: self.timeout,
            });
        }
        Ok(())
    }

    /// How data of `bytes` at `iova` is described (PRPs or an SGL, see
    /// [`crate::DataPointer`]).
    fn data_pointer_for(&self, iova: u64, bytes: usize) -> DataPtr {
        let prp2 = prp::plan(iova, bytes).1;
        if self.sgl_for(iova, prp2) {
            let len = u32::try_from(bytes).expect("checked against max_transfer");
            DataPtr::Sgl(sgl::data_block(iova, len))
        } else {
            DataPtr::Prp(iova, prp2)
        }
    }

    /// Submits `cmd`, moving `data` (IOVA, bytes) if any, recording `slot`
    /// under its command ID.
    fn submit_data(
        &mut self,
        cmd: Command,
        data: Option<(u64, usize)>,
        slot: Slot<B>,
    ) -> Result<()> {
        let ptr = match data {
            None => DataPtr::None,
            Some((iova, bytes)) => self.data_pointer_for(iova, bytes),
        };
        let lists = &self.lists;
        let Some(cid) = self.qp.submit_with(|cid| ptr.apply(cmd, cid, lists)) else {
            return Err(self.queue_full());
        };
        self.record(cid, slot);
        Ok(())
    }

    /// Submits `cmd`, whose data pointer is set, as command `cid` (the
    /// next free one), recording `slot` under it.
    fn push(&mut self, cmd: Command, cid: u16, slot: Slot<B>) -> Result<()> {
        let got = self.qp.submit(cmd)?;
        debug_assert_eq!(got, cid);
        self.record(cid, slot);
        Ok(())
    }

    /// Keeps `slot` for command `cid`, just submitted, until it completes.
    #[inline]
    fn record(&mut self, cid: u16, slot: Slot<B>) {
        // Stored first, field by field: nothing between its making and its
        // store (the clock read, the drop of what the slot held) keeps it
        // on the stack for a copy. Only `buf` has anything to drop, and
        // holds nothing: the command ID was free.
        let Slot {
            name,
            tag,
            buf,
            wrote,
        } = slot;
        let s = &mut self.slots[cid as usize];
        s.name = name;
        s.tag = tag;
        s.wrote = wrote;
        s.buf = buf;
        if self.in_flight() == 1 {
            self.progress = Instant::now();
        }
    }

    fn queue_full(&self) -> Error {
        Error::QueueFull {
            qid: self.qid(),
            depth: self.in_flight(),
        }
    }

    /// Checks and queues a Read or Write of `span` with `buf`. Each check is
    /// paid once: the namespace looked up once, the room in the queue
    /// checked once (by the submission itself), the command and its slot
    /// written where they stay.
    ///
    /// Inline, with [`IoQueuePair::check`], into the caller's
    /// `submit_read`/`submit_write`: no call, no returned `Result` through
    /// memory, and what the caller passes as constants (the namespace, a
    /// fixed transfer size) folds into the checks.
    #[inline]
    fn submit_rw(
        &mut self,
        op: u8,
        span: Span,
        buf: B,
        tag: u64,
        wrote: Option<fn(&mut B, usize, usize)>,
    ) -> Result<(), (Error, B)> {
        let (bs, iova) = match self.usable().and_then(|()| self.check(span, &buf)) {
            Ok(r) => r,
            Err(e) => return Err((e, buf)),
        };
        if span.bytes > self.max_transfer {
            return Err((self.too_long(span.bytes), buf));
        }
        let blocks = (span.bytes >> bs.trailing_zeros()) as u32;
        let cmd = Command::read_write(op, span.nsid, span.lba, blocks);
        let ptr = self.data_pointer_for(iova, span.bytes);
        let lists = &self.lists;
        let Some(cid) = self.qp.submit_with(|cid| ptr.apply(cmd, cid, lists)) else {
            return Err((self.queue_full(), buf));
        };
        if op == nvm::WRITE {
            let writer = buf.writer(span.offset, span.bytes);
            self.written_from.add(writer, span.bytes);
        }
        self.record(
            cid,
            Slot {
                name: if op == nvm::READ { "Read" } else { "Write" },
                tag,
                buf: Some(buf),
                wrote: wrote.map(|record| DeviceWrote {
                    record,
                    offset: span.offset,
                    bytes: span.bytes,
                }),
            },
        );
        Ok(())
    }

    #[cold]
    fn too_long(&self, bytes: usize) -> Error {
        Error::InvalidArgument(format!(
            "{bytes} bytes exceed the {}-byte limit of one command; split it (read/write do)",
            self.max_transfer
        ))
    }

    /// Queues a write of `bytes` from `buf` at `offset` to `lba` of namespace
    /// `nsid`, sent at the next [`IoQueuePair::ring`]. The queue pair owns
    /// the buffer until it comes back from [`IoQueuePair::poll`] with `tag`
    /// once the controller has read it; on error it comes back at once and
    /// nothing was sent.
    ///
    /// # Errors
    ///
    /// See [`IoQueuePair::submit_read`].
    pub fn submit_write(
        &mut self,
        nsid: u32,
        lba: u64,
        buf: B,
        offset: usize,
        bytes: usize,
        tag: u64,
    ) -> Result<(), (Error, B)> {
        let span = Span {
            nsid,
            lba,
            offset,
            bytes,
        };
        self.submit_rw(nvm::WRITE, span, buf, tag, None)
    }

    /// Queues one Write of the bytes of `pieces`, in order, to consecutive
    /// blocks of namespace `nsid` from `lba`, sent at the next
    /// [`IoQueuePair::ring`]: the controller gathers the data from each
    /// piece's buffer (a buffer, the offset of the piece in it, its length),
    /// so bytes that arrived in several buffers (e.g. the payloads of UDP
    /// datagrams in NIC receive buffers) go to disk without a copy. Pieces
    /// may start and end at any byte, and several may come from the same
    /// buffer (clones of one [`vfio_core::dma::SharedBuffer`]); only their
    /// total must be a whole number of blocks.
    ///
    /// Needs SGLs without an alignment rule ([`IoQueuePair::gather_supported`]).
    /// Several pieces go as one SGL: their Data Block descriptors fill the
    /// command's list page and SGL1 is a Last Segment descriptor pointing
    /// at it; one piece goes as [`IoQueuePair::submit_write`] sends it.
    ///
    /// The queue pair owns every piece's buffer until the command is done:
    /// it comes back from [`IoQueuePair::poll`] with `tag`, carrying the
    /// first piece's buffer in [`IoCompletion::buf`], the others dropped
    /// (after a reset, from [`crate::Controller::recreate_io_queue_pair`],
    /// the same way). Each piece's bytes count in
    /// [`IoQueuePair::written_from`] by who wrote that piece.
    ///
    /// ```no_run
    /// # use vfio_core::dma::SharedBuffer;
    /// # fn f(qp: &mut nvme_driver::IoQueuePair<SharedBuffer>, a: SharedBuffer, b: SharedBuffer) {
    /// // Two blocks: the last 600 bytes of one datagram's payload (which
    /// // ends at byte 1,498 of its buffer) and the first 424 of the next
    /// // (which starts at byte 42 of another).
    /// let pieces = vec![(a, 898, 600), (b, 42, 424)];
    /// if let Err((e, pieces)) = qp.submit_write_gather(1, 100, pieces, 7) {
    ///     // Nothing was sent; the buffers are back (e.g. copy them instead).
    ///     eprintln!("{e}");
    ///     drop(pieces);
    /// }
    /// qp.ring();
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// With the pieces, nothing sent:
    /// - [`Error::InvalidArgument`]: gathers not supported (SGLs not in
    ///   use, or the controller's SGLs need dword alignment: copy instead),
    ///   no pieces or more than [`MAX_GATHER_PIECES`], a piece of zero
    ///   bytes, reaching past the end of its buffer or in another container,
    ///   a namespace this queue pair does not serve, a total that is not a
    ///   whole number of blocks or more than [`IoQueuePair::max_transfer`],
    ///   blocks past the end of the namespace.
    /// - [`Error::QueueFull`], [`Error::QueueGone`], [`Error::Timeout`]: as
    ///   for [`IoQueuePair::submit_read`].
    pub fn submit_write_gather(
        &mut self,
        nsid: u32,
        lba: u64,
        mut pieces: Vec<GatherPiece<B>>,
        tag: u64,
    ) -> Result<(), (Error, Vec<GatherPiece<B>>)> {
        let (bs, bytes) = match self.check_gather(nsid, lba, &pieces) {
            Ok(r) => r,
            Err(e) => return Err((e, pieces)),
        };
        let cmd = Command::read_write(nvm::WRITE, nsid, lba, (bytes / bs) as u32);
        let mut slot = Slot {
            name: "Write",
            tag,
            buf: None,
            wrote: None,
        };
        if pieces.len() == 1 {
            let (buf, offset, len) = pieces.pop().expect("one piece");
            self.written_from.add(buf.writer(offset, len), len);
            let iova = buf.iova() + offset as u64;
            slot.buf = Some(buf);
            self.submit_data(cmd, Some((iova, len)), slot)
                .expect("a free command ID was checked");
            return Ok(());
        }
        let mut cmd = cmd;
        let cid = self.qp.next_cid().expect("a free command ID was checked");
        // The command's own list page: a PRP list of this command ID would
        // go there, and this command has none.
        let list = cid as usize * PAGE_SIZE;
        for (i, (buf, offset, len)) in pieces.iter().enumerate() {
            let len32 = u32::try_from(*len).expect("checked against max_transfer");
            let desc = sgl::data_block(buf.iova() + *offset as u64, len32);
            let at = list + i * sgl::DESCRIPTOR_BYTES;
            for (k, dword) in desc.into_iter().enumerate() {
                self.lists.write::<u32>(at + 4 * k, dword);
            }
            self.written_from.add(buf.writer(*offset, *len), *len);
        }
        let list_bytes = (pieces.len() * sgl::DESCRIPTOR_BYTES) as u32;
        cmd.set_sgl1(sgl::last_segment(
            self.lists.iova() + list as u64,
            list_bytes,
        ));
        self.push(cmd, cid, slot)
            .expect("a free command ID was checked");
        self.gathers[cid as usize] = pieces;
        Ok(())
    }

    /// Checks a gather Write of `pieces` to `lba` of namespace `nsid` and
    /// that a command ID is free: returns the block size and the bytes.
    fn check_gather(
        &mut self,
        nsid: u32,
        lba: u64,
        pieces: &[GatherPiece<B>],
    ) -> Result<(usize, usize)> {
        self.usable()?;
        if let Some(why) = self.gather_refusal() {
            return Err(Error::InvalidArgument(why));
        }
        if pieces.is_empty() || pieces.len() > MAX_GATHER_PIECES {
            return Err(Error::InvalidArgument(format!(
                "a gather Write of {} pieces; it takes 1 to {MAX_GATHER_PIECES} (one list page of SGL descriptors): split the data over several commands",
                pieces.len()
            )));
        }
        let mut bytes = 0usize;
        for (i, (buf, offset, len)) in pieces.iter().enumerate() {
            if *len == 0 {
                return Err(Error::InvalidArgument(format!(
                    "piece {i} of the gather Write is empty (0 bytes at offset {offset}); leave it out"
                )));
            }
            buf.dma_range(self.admin.container(), *offset, *len)
                .map_err(|e| match e {
                    vfio_core::Error::InvalidArgument(what) => Error::InvalidArgument(format!(
                        "piece {i} of the gather Write: buffer too small or foreign: {what}"
                    )),
                    e => Error::Vfio(e),
                })?;
            bytes = bytes.saturating_add(*len);
        }
        let (bs, _) = self.geometry(nsid)?;
        if !bytes.is_multiple_of(bs) {
            return Err(Error::InvalidArgument(format!(
                "the {} pieces of the gather Write total {bytes} bytes, not a whole number of {bs}-byte blocks; end the last piece on a block boundary ({} bytes more or {} fewer)",
                pieces.len(),
                bs - bytes % bs,
                bytes % bs
            )));
        }
        if bytes > self.max_transfer {
            return Err(Error::InvalidArgument(format!(
                "the pieces of the gather Write total {bytes} bytes, more than the {}-byte limit of one command; split them over several commands",
                self.max_transfer
            )));
        }
        self.check_blocks(nsid, lba, (bytes / bs) as u64)?;
        if self.qp.next_cid().is_none() {
            return Err(self.queue_full());
        }
        Ok((bs, bytes))
    }

    /// Rings the doorbell once for everything submitted since the last ring:
    /// only then may the controller start on it. Does nothing when nothing
    /// was submitted.
    pub fn ring(&mut self) {
        self.qp.ring();
    }

    /// Hands up to `max` finished commands to `f`, with one doorbell write.
    /// When commands are in flight and none has completed for the timeout
    /// ([`IoQueuePair::set_timeout`]), fails: with [`Error::Removed`] if the
    /// controller reads as all ones, else [`Error::Timeout`]; the queue pair
    /// is then unusable until the controller is reset, and keeps the buffers
    /// of the commands in flight until then. So a vanished device never makes
    /// a polling loop spin forever. Returns how many commands were handed
    /// to `f`.
    ///
    /// Each [`IoCompletion`] carries the buffer of an asynchronous command:
    /// the controller is done with it.
    ///
    /// # Errors
    ///
    /// - [`Error::Timeout`] or [`Error::Removed`], as above.
    /// - [`Error::Protocol`]: the controller wrote a completion no correct
    ///   controller writes (a command ID not in flight, another SQ, an SQ
    ///   head out of range). The valid completions before it were handed to
    ///   `f`; the queue pair is unusable until the controller is reset and
    ///   the queue pair re-created.
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
        let gathers = &mut self.gathers;
        let taken = self.qp.poll(max, |c| {
            let cid = c.cid as usize;
            f(slots[cid].finish(&mut gathers[cid], Some(c.status)));
        });
        if taken.is_err() {
            self.failed = true;
        }
        taken
    }

    /// Polls until every command in flight is done or the timeout passes;
    /// returns the first error among them.
    fn drain(&mut self, what: &'static str) -> Result<()> {
        let start = Instant::now();
        let mut first_err = None;
        while self.in_flight() > 0 {
            let n = self.poll(usize::MAX, |c| {
                if let (Err(e), None) = (c.result, &first_err) {
                    first_err = Some(e);
                }
            })?;
            if n == 0 && self.in_flight() > 0 {
                self.idle()?;
            }
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
            self.idle()?;
            if start.elapsed() > self.timeout {
                self.failed = true;
                return Err(Error::Timeout {
                    command: what,
                    timeout: self.timeout,
                });
            }
        }
    }

    /// Runs `commands` (each with the data it moves, if any) as one blocking
    /// call: as many in flight as the queue holds, then waits for all. It
    /// never returns while one of them may still move data: when it must
    /// return early with commands in flight (a timeout, a protocol error),
    /// it first disables the controller, or turns its bus mastering off; if
    /// neither is possible, the process aborts rather than let the caller
    /// reuse memory the controller may still write.
    fn blocking(
        &mut self,
        name: &'static str,
        commands: impl IntoIterator<Item = (Command, Option<(u64, usize)>)>,
    ) -> Result<()> {
        self.usable()?;
        if self.in_flight() > 0 {
            return Err(Error::InvalidArgument("blocking I/O on a queue pair with asynchronous commands in flight; poll them first".into()));
        }
        // The caller's memory is borrowed, not owned: a panic that unwound
        // with commands in flight would hand it back while the controller
        // may still write it. Nothing in `run` is meant to panic or calls a
        // logger, but if it does, the process aborts.
        let guard = AbortOnUnwind::new("an NVMe blocking call had commands in flight");
        let result = self.run(name, commands);
        guard.disarm();
        let in_flight = self.in_flight();
        if in_flight > 0 {
            self.failed = true;
            // Stopped before anything is logged; the caller's memory cannot
            // be leaked (it is borrowed), so the process aborts if the
            // controller cannot be stopped.
            self.admin.quiesce(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "nvme-driver: the controller cannot be stopped while it may write memory the caller is about to reuse; aborting"
                );
                std::process::abort()
            });
            log::warn!(
                "{}: {name} ended with {in_flight} commands in flight; the controller was stopped so none of them writes memory the caller gets back",
                self.admin.address(),
            );
        }
        result
    }

    fn run(
        &mut self,
        name: &'static str,
        commands: impl IntoIterator<Item = (Command, Option<(u64, usize)>)>,
    ) -> Result<()> {
        for (cmd, data) in commands {
            loop {
                let slot = Slot {
                    name,
                    tag: 0,
                    buf: None,
                    wrote: None,
                };
                match self.submit_data(cmd, data, slot) {
                    Ok(()) => break,
                    Err(Error::QueueFull { .. }) => {
                        self.qp.ring();
                        self.poll_some(name)?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        self.qp.ring();
        self.drain(name)
    }

    /// Read or Write commands moving `bytes` at `lba` from or to `iova`, each
    /// at most the controller's transfer limit.
    fn rw_commands(
        &self,
        op: u8,
        span: Span,
        bs: usize,
        iova: u64,
    ) -> impl Iterator<Item = (Command, Option<(u64, usize)>)> {
        let per_command = (self.max_transfer / bs).min(MAX_BLOCKS_PER_COMMAND as usize) * bs;
        (0..span.bytes).step_by(per_command).map(move |done| {
            let n = per_command.min(span.bytes - done);
            let lba = span.lba + (done / bs) as u64;
            let cmd = Command::read_write(op, span.nsid, lba, (n / bs) as u32);
            (cmd, Some((iova + done as u64, n)))
        })
    }

    /// Reads `bytes` (a whole number of blocks) at `lba` of namespace `nsid`
    /// into `mem` at `offset`, by DMA, and waits: `mem` is borrowed
    /// exclusively until the controller is done with it. Transfers larger
    /// than [`IoQueuePair::max_transfer`] are split into several commands,
    /// as many in flight at once as the queue holds.
    ///
    /// It never returns while one of its commands may still write `mem`:
    /// when it must return early with commands in flight (a timeout, a
    /// protocol error), it first disables the controller, or turns its bus
    /// mastering off, which leaves every queue pair of the controller
    /// unusable until [`crate::Controller::reset`]; if neither is possible,
    /// the process aborts.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidArgument`] (nothing sent): a namespace this queue
    ///   pair does not serve, a length that is zero or not a whole number of
    ///   blocks, blocks past the end of the namespace, `mem` too small or of
    ///   another container, data not 4-byte aligned, or asynchronous
    ///   commands in flight on the queue pair.
    /// - [`Error::QueueGone`]: the controller was reset since the queue pair
    ///   was (re-)created; [`Error::Timeout`] for "an earlier command" when a
    ///   command timed out before.
    /// - [`Error::Command`]: a command failed (the first error). None of the
    ///   call's commands is in flight any more; part of `mem` may hold data.
    /// - [`Error::Timeout`], [`Error::Removed`], [`Error::Protocol`]: as for
    ///   [`IoQueuePair::poll`].
    pub fn read(
        &mut self,
        nsid: u32,
        lba: u64,
        mem: &mut impl DmaTargetMut,
        offset: usize,
        bytes: usize,
    ) -> Result<()> {
        self.usable()?;
        let span = Span {
            nsid,
            lba,
            offset,
            bytes,
        };
        let (bs, iova) = self.check(span, &*mem)?;
        let commands = self.rw_commands(nvm::READ, span, bs, iova);
        let result = self.blocking("Read", commands);
        let wrote = if result.is_ok() { bytes } else { 0 };
        mem.device_wrote(offset, wrote);
        result
    }

    /// Writes `bytes` (a whole number of blocks) from `mem` at `offset` to
    /// `lba` of namespace `nsid`, by DMA, and waits. `mem` is borrowed until
    /// the controller is done reading it, as for [`IoQueuePair::read`].
    ///
    /// # Errors
    ///
    /// As for [`IoQueuePair::read`]; after an [`Error::Command`] some of the
    /// blocks may have been written.
    pub fn write(
        &mut self,
        nsid: u32,
        lba: u64,
        mem: &impl DmaTarget,
        offset: usize,
        bytes: usize,
    ) -> Result<()> {
        self.usable()?;
        let span = Span {
            nsid,
            lba,
            offset,
            bytes,
        };
        let (bs, iova) = self.check(span, mem)?;
        self.written_from.add(mem.writer(offset, bytes), bytes);
        let commands = self.rw_commands(nvm::WRITE, span, bs, iova);
        self.blocking("Write", commands)
    }

    /// Flush: everything written is on non-volatile media when this returns
    /// successfully.
    ///
    /// # Errors
    ///
    /// As for [`IoQueuePair::read`] (the namespace is checked; no memory is
    /// involved).
    pub fn flush(&mut self, nsid: u32) -> Result<()> {
        self.namespace(nsid)?;
        self.blocking("Flush", [(Command::new(nvm::FLUSH, nsid), None)])
    }

    /// Write Zeroes on `blocks` blocks at `lba`, where the controller supports
    /// it; as many commands as the count needs (one holds 65,536 blocks).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the controller does not support Write
    /// Zeroes (ONCS bit 3), for a namespace not served, a count of zero or
    /// blocks past the end;
    /// otherwise as for [`IoQueuePair::read`] (no memory is involved).
    pub fn write_zeroes(&mut self, nsid: u32, lba: u64, blocks: u64) -> Result<()> {
        if !self.controller.supports_write_zeroes() {
            return Err(Error::InvalidArgument(
                "this controller does not support Write Zeroes (ONCS bit 3)".into(),
            ));
        }
        self.check_blocks(nsid, lba, blocks)?;
        let commands = pieces(lba, blocks, MAX_BLOCKS_PER_COMMAND).map(|(at, n)| {
            let cmd = Command::read_write(nvm::WRITE_ZEROES, nsid, at, n as u32);
            (cmd, None)
        });
        self.blocking("Write Zeroes", commands)
    }

    /// Dataset Management, deallocate (trim) `blocks` blocks at `lba`, where
    /// the controller supports it: ranges of up to 2^32 - 1 blocks, up to 256
    /// of them per command, one command at a time (the range list lives in
    /// the queue pair's own DMA memory).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the controller does not support
    /// Dataset Management (ONCS bit 2), for a namespace not served, a count
    /// of zero or blocks past the end; otherwise as for [`IoQueuePair::read`]. After an error, the
    /// ranges of earlier commands may already be deallocated.
    pub fn deallocate(&mut self, nsid: u32, lba: u64, blocks: u64) -> Result<()> {
        if !self.controller.supports_deallocate() {
            return Err(Error::InvalidArgument(
                "this controller does not support Dataset Management (ONCS bit 2)".into(),
            ));
        }
        self.check_blocks(nsid, lba, blocks)?;
        let ranges: Vec<(u64, u64)> = pieces(lba, blocks, u32::MAX as u64).collect();
        // The range list lives in the spare last page, so one command at a time.
        let page = self.qp.depth() * PAGE_SIZE;
        for chunk in ranges.chunks(MAX_DSM_RANGES) {
            for (i, &(at, n)) in chunk.iter().enumerate() {
                // Context attributes, length in blocks, starting LBA (figure 373).
                self.lists.write::<u32>(page + 16 * i, 0);
                self.lists.write::<u32>(page + 16 * i + 4, n as u32);
                self.lists.write::<u64>(page + 16 * i + 8, at);
            }
            let iova = self.lists.iova() + page as u64;
            let cmd = Command::deallocate(nsid, chunk.len() as u32);
            self.blocking(
                "Dataset Management",
                [(cmd, Some((iova, 16 * chunk.len())))],
            )?;
        }
        Ok(())
    }

    /// Deletes the queues at the controller, which completes only when none
    /// of their commands moves data any more; failing that, disables the
    /// controller; failing that too, leaks what the controller may still
    /// write. Then the memory is settled and the queue ID free. Once only.
    fn stop(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.stopped, true) {
            return Ok(());
        }
        let qid = self.qid();
        let mut result = Ok(());
        if self.generation == self.admin.generation() {
            let guard = AbortOnUnwind::new("deleting an NVMe I/O queue pair");
            let deleted = self.admin.delete_io_queue(qid);
            guard.disarm();
            if let Err(e) = deleted {
                // Stopped (or everything leaked) before anything is logged.
                let admin = Arc::clone(&self.admin);
                let reusable = admin.quiesce(|| self.leak());
                log::warn!(
                    "{}: deleting I/O queue {qid} failed ({e}); the controller was stopped instead",
                    admin.address()
                );
                if !reusable {
                    return Err(e);
                }
                result = Err(e);
            }
        }
        self.admin.lock().free_qid(qid);
        result
    }

    /// Leaves every buffer the controller may still write, and the rings,
    /// allocated and mapped for good.
    fn leak(&mut self) {
        for buf in self.slots.iter_mut().filter_map(|s| s.buf.take()) {
            buf.leak();
        }
        for gather in &mut self.gathers {
            for (buf, _, _) in gather.drain(..) {
                buf.leak();
            }
        }
        self.qp.leak_on_drop();
        self.lists.leak_on_drop();
    }

    /// Deletes the queues at the controller and frees everything; see
    /// [`crate::Controller::delete_io_queue_pair`].
    pub(crate) fn delete(mut self) -> Result<()> {
        self.stop()
    }
}

impl<B: DmaTargetMut> IoQueuePair<B> {
    /// Queues a read of `bytes` at `lba` of namespace `nsid` into `buf` at
    /// `offset`, sent at the next [`IoQueuePair::ring`]. The queue pair owns
    /// the buffer until it comes back from [`IoQueuePair::poll`] with `tag`,
    /// the data in it (or from [`crate::Controller::recreate_io_queue_pair`]
    /// after a reset); on error it comes back at once and nothing was sent.
    ///
    /// # Errors
    ///
    /// With the buffer:
    /// - [`Error::InvalidArgument`]: a namespace this queue pair does not
    ///   serve, a length that is zero, not a whole number of blocks or more
    ///   than [`IoQueuePair::max_transfer`], blocks past the end of the
    ///   namespace, a buffer too small or of another container, data not
    ///   4-byte aligned.
    /// - [`Error::QueueFull`]: [`IoQueuePair::depth`] commands are in
    ///   flight; poll and submit again.
    /// - [`Error::QueueGone`]: the controller was reset since the queue pair
    ///   was (re-)created; [`Error::Timeout`] when a command timed out before.
    pub fn submit_read(
        &mut self,
        nsid: u32,
        lba: u64,
        buf: B,
        offset: usize,
        bytes: usize,
        tag: u64,
    ) -> Result<(), (Error, B)> {
        let span = Span {
            nsid,
            lba,
            offset,
            bytes,
        };
        self.submit_rw(nvm::READ, span, buf, tag, Some(B::device_wrote))
    }

    /// Queues a Flush of namespace `nsid`, sent at the next
    /// [`IoQueuePair::ring`]; it comes back from [`IoQueuePair::poll`] with
    /// `tag` and no buffer.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`], [`Error::QueueFull`],
    /// [`Error::QueueGone`], [`Error::Timeout`] as for
    /// [`IoQueuePair::submit_read`]; nothing was sent.
    pub fn submit_flush(&mut self, nsid: u32, tag: u64) -> Result<()> {
        self.usable()?;
        self.namespace(nsid)?;
        let slot = Slot {
            name: "Flush",
            tag,
            buf: None,
            wrote: None,
        };
        self.submit_data(Command::new(nvm::FLUSH, nsid), None, slot)
    }
}

impl<B: DmaTarget> Drop for IoQueuePair<B> {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            log::warn!(
                "{}: I/O queue pair {}: {e}",
                self.admin.address(),
                self.qid()
            );
        }
    }
}

/// `count` items from `start` in pieces of at most `max`: (first, length).
fn pieces(start: u64, count: u64, max: u64) -> impl Iterator<Item = (u64, u64)> {
    (0..count.div_ceil(max)).map(move |k| {
        let at = k * max;
        (start + at, max.min(count - at))
    })
}

/// The first piece's buffer of the gather `pieces` (taken, leaving it
/// empty); the other buffers are dropped. None when there is none.
fn first_piece<B>(pieces: &mut Vec<GatherPiece<B>>) -> Option<B> {
    if pieces.is_empty() {
        return None;
    }
    std::mem::take(pieces)
        .into_iter()
        .next()
        .map(|(buf, _, _)| buf)
}

/// Checks that `blocks` blocks at `lba` lie in namespace `nsid` of
/// `geometry` (block size, blocks).
#[inline]
fn blocks_in_namespace(nsid: u32, geometry: (usize, u64), lba: u64, blocks: u64) -> Result<()> {
    if blocks == 0 || lba.checked_add(blocks).is_none_or(|end| end > geometry.1) {
        return Err(blocks_outside(nsid, geometry, lba, blocks));
    }
    Ok(())
}

/// The error of `blocks` blocks at `lba` that [`blocks_in_namespace`] refuses.
#[cold]
fn blocks_outside(nsid: u32, geometry: (usize, u64), lba: u64, blocks: u64) -> Error {
    let (bs, size) = geometry;
    if blocks == 0 {
        return Error::InvalidArgument("a transfer of zero blocks".into());
    }
    Error::InvalidArgument(format!(
        "blocks {lba}..{} are past the end of namespace {nsid}, which has {size} blocks of {bs} bytes",
        lba.saturating_add(blocks),
    ))
}

#[cold]
fn partial_block(bytes: usize, bs: usize) -> Error {
    Error::InvalidArgument(format!(
        "{bytes} bytes is not a whole number of {bs}-byte blocks"
    ))
}

/// The error for memory `dma_range` refused.
#[cold]
fn unusable_buffer(e: vfio_core::Error) -> Error {
    match e {
        vfio_core::Error::InvalidArgument(what) => {
            Error::InvalidArgument(format!("buffer too small or foreign: {what}"))
        }
        e => Error::Vfio(e),
    }
}

/// PRP entries address dwords (base spec 4.1.1: bits 1:0 of the offset are
/// 0), and so do SGL data blocks when SGLS is 10b: the error for data at
/// `iova` that is not dword aligned where that rule holds.
#[cold]
fn misaligned(iova: u64) -> Error {
    Error::InvalidArgument(format!(
        "data at IOVA {iova:#x} is not 4-byte aligned, which NVMe PRP entries need (SGLs without an alignment rule do not; see DataPointer)"
    ))
}

/// A command's data pointer, decided before its command ID is known: only
/// a PRP list needs that (it goes in the command ID's list page).
#[derive(Clone, Copy, Debug)]
enum DataPtr {
    /// No data.
    None,
    /// PRP1, and what PRP2 must be.
    Prp(u64, Prp2),
    /// SGL1, one Data Block descriptor.
    Sgl([u32; 4]),
}

impl DataPtr {
    /// `cmd` with this data pointer, as command `cid`, whose PRP list (if
    /// any) is written to its page of `lists`.
    #[inline]
    fn apply(self, mut cmd: Command, cid: u16, lists: &DmaMemory) -> Command {
        match self {
            DataPtr::None => cmd.set_prps(0, 0),
            DataPtr::Sgl(desc) => cmd.set_sgl1(desc),
            DataPtr::Prp(prp1, prp2) => {
                let prp2 = match prp2 {
                    Prp2::None => 0,
                    Prp2::Page(p) => p,
                    Prp2::List { first, count } => write_prp_list(lists, cid, first, count),
                };
                cmd.set_prps(prp1, prp2);
            }
        }
        cmd
    }
}

/// Writes the PRP list of command `cid` (`count` pages from `first`) to
/// its page of `lists`; returns its IOVA.
fn write_prp_list(lists: &DmaMemory, cid: u16, first: u64, count: usize) -> u64 {
    let base = cid as usize * PAGE_SIZE;
    for i in 0..count {
        lists.write::<u64>(base + 8 * i, first + (i * PAGE_SIZE) as u64);
    }
    lists.iova() + base as u64
}
