//! What a controller and its I/O queue pairs share: the registers, the admin
//! queue, and the reset generation.
//!
//! The generation counts how often the controller was disabled (CC.EN 1 -> 0
//! with CSTS.RDY seen 0): that drops every queue and stops all DMA (base spec
//! 3.7.2). A queue pair remembers the generation it was created in; when the
//! counter has moved on, none of its commands can move data any more, and
//! only then are their buffers handed back.
//!
//! The controller is shut down (CC.SHN, then disabled) when the last of the
//! [`crate::Controller`] and its queue pairs is dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vfio_core::dma::{Backing, DmaMemory};
use vfio_core::mmio::Mmio;
use vfio_core::pci::PciAddress;
use vfio_core::vfio::{Container, Device, Stopped};

use crate::doorbell::ShadowPages;
use crate::queue::QueuePair;
use crate::regs::{self, cap, cc, csts, csts_shst};
use crate::spec::{admin, Command, Completion, PAGE_SIZE};
use crate::{Error, Result};

/// Admin queue entries.
const ADMIN_ENTRIES: u16 = 32;
/// How long an admin command may take unless set otherwise with
/// [`crate::Controller::set_admin_timeout`] (generous: QEMU under TCG is slow).
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The registers, the admin queue and the generation of one controller.
#[derive(Debug)]
pub(crate) struct Admin {
    // Field order is drop order: the queue's memory goes after `Drop` has
    // shut the controller down, and before the device.
    queue: Mutex<AdminQueue>,
    bar: Arc<Mmio>,
    cap: u64,
    ready_timeout: Duration,
    generation: AtomicU64,
    device: Device,
}

/// The admin queue and what goes with it, behind one lock.
#[derive(Debug)]
pub(crate) struct AdminQueue {
    qp: QueuePair,
    /// One page for identify data and log pages.
    scratch: DmaMemory,
    /// I/O queue IDs held by queue pairs (index = queue ID).
    qids: Vec<bool>,
    /// The controller was disabled, or an admin command timed out: no admin
    /// command until [`Admin::restart`].
    broken: Option<&'static str>,
    timeout: Duration,
    /// The shadow doorbell and EventIdx pages the controller was given, if
    /// it took them (I/O queues only: the admin queue rings MMIO).
    shadow: Option<Arc<ShadowPages>>,
}

impl Admin {
    /// Maps BAR0, checks CAP, and allocates the admin queue (not yet given
    /// to the controller: see [`Admin::restart`]).
    pub(crate) fn new(device: Device) -> Result<Arc<Admin>> {
        device.enable_bus_master()?;
        let bar = Arc::new(device.map_bar(0)?);
        let cap = bar.read64(regs::CAP);
        check_capabilities(device.address(), cap)?;
        let container = Arc::clone(device.container());
        let qp = QueuePair::new(
            &container,
            Arc::clone(&bar),
            0,
            ADMIN_ENTRIES,
            cap::dstrd(cap),
            None,
        )?;
        let scratch = DmaMemory::new(&container, PAGE_SIZE, Backing::Auto)?;
        Ok(Arc::new(Admin {
            queue: Mutex::new(AdminQueue {
                qp,
                scratch,
                qids: vec![true],
                broken: Some("not yet enabled"),
                timeout: ADMIN_TIMEOUT,
                shadow: None,
            }),
            bar,
            cap,
            ready_timeout: Duration::from_millis(500 * cap::to(cap).max(1) as u64),
            generation: AtomicU64::new(0),
            device,
        }))
    }

    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    pub(crate) fn address(&self) -> PciAddress {
        self.device.address()
    }

    #[inline]
    pub(crate) fn container(&self) -> &Arc<Container> {
        self.device.container()
    }

    pub(crate) fn bar(&self) -> &Arc<Mmio> {
        &self.bar
    }

    pub(crate) fn cap(&self) -> u64 {
        self.cap
    }

    /// How often the controller has been disabled.
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, AdminQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn csts(&self) -> u32 {
        self.bar.read32(regs::CSTS)
    }

    pub(crate) fn enabled(&self) -> bool {
        self.bar.read32(regs::CC) & cc::EN != 0
    }

    pub(crate) fn error(&self, what: impl Into<String>) -> Error {
        Error::Controller {
            addr: self.address(),
            what: what.into(),
        }
    }

    /// Clears CC.EN and waits for CSTS.RDY = 0: the controller has dropped
    /// every queue and moves no more data. Then the generation moves on.
    fn disable(&self) -> Result<()> {
        let cc_now = self.bar.read32(regs::CC);
        if cc_now & cc::EN != 0 {
            self.bar.write32(regs::CC, cc_now & !cc::EN);
        }
        self.wait_ready(false, "disable")?;
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Disable, admin queue emptied and given to the controller again,
    /// enable (base spec 3.5.1). Bus mastering is turned back on, in case
    /// [`Admin::quiesce`] had turned it off.
    pub(crate) fn restart(&self) -> Result<()> {
        let mut q = self.lock();
        q.broken = Some("the controller was disabled");
        self.disable()?;
        self.device.enable_bus_master()?;
        q.qp.reset();
        let n = ADMIN_ENTRIES as u32 - 1;
        self.bar.write32(regs::AQA, n << 16 | n);
        self.bar.write64(regs::ASQ, q.qp.sq_iova());
        self.bar.write64(regs::ACQ, q.qp.cq_iova());
        let value = cc::CSS_NVM | 6 << cc::IOSQES_SHIFT | 4 << cc::IOCQES_SHIFT | cc::EN;
        self.bar.write32(regs::CC, value);
        self.wait_ready(true, "become ready")?;
        q.broken = None;
        Ok(())
    }

    /// Makes sure the controller moves no more data, for a caller whose
    /// memory it may still be writing: disable it; if it does not report
    /// disabled within CAP.TO (or its registers cannot be believed: memory
    /// decoding off), turn its bus mastering off; if neither can be done,
    /// run `leak`, which leaves the caller's memory allocated and mapped
    /// for good (vfio-core's [`Device::stop_dma`], which logs only after
    /// that). False when the controller could not be stopped.
    pub(crate) fn quiesce(&self, leak: impl FnOnce()) -> bool {
        self.stop(&mut self.lock().broken, leak)
    }

    /// [`Admin::quiesce`], with the admin queue's `broken` already locked.
    fn stop(&self, broken: &mut Option<&'static str>, leak: impl FnOnce()) -> bool {
        *broken = Some("the controller was disabled");
        let stopped = self
            .device
            .stop_dma("NVMe controller", || self.disable(), leak);
        if stopped != Stopped::Proven {
            *broken = Some("the controller could not be disabled");
        }
        if stopped == Stopped::BusMasterOff {
            // Bus mastering off drops no queue, but no command moves data.
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        stopped.memory_reusable()
    }

    /// Polls CSTS.RDY until it is `ready`, within CAP.TO; a fatal status or a
    /// vanished device (all ones) ends the wait with an error.
    fn wait_ready(&self, ready: bool, what: &'static str) -> Result<()> {
        let mut csts_now = 0;
        let done = vfio_core::poll::try_until(self.ready_timeout, || {
            csts_now = self.csts();
            if csts_now == u32::MAX {
                return Err(self.error("reads as all ones: the device is gone (surprise removal?)"));
            }
            if csts_now & csts::CFS != 0 && ready {
                return Err(self.error(format!(
                    "Controller Fatal Status while waiting to {what}; reset it"
                )));
            }
            Ok(((csts_now & csts::RDY != 0) == ready).then_some(()))
        })?;
        done.ok_or_else(|| Error::NotReady {
            addr: self.address(),
            what,
            timeout: self.ready_timeout,
            csts: csts_now,
        })
    }

    /// Runs one admin command without data to completion.
    pub(crate) fn command(&self, name: &'static str, cmd: Command) -> Result<Completion> {
        self.lock().command(name, cmd, false)
    }

    /// Runs an admin command whose data is one page; returns the page.
    pub(crate) fn command_with_page(
        &self,
        name: &'static str,
        cmd: Command,
        bytes: usize,
    ) -> Result<Vec<u8>> {
        let mut q = self.lock();
        q.scratch.write_bytes(0, &[0; PAGE_SIZE]);
        q.command(name, cmd, true)?;
        let mut page = vec![0u8; bytes.min(PAGE_SIZE)];
        q.scratch.read_bytes(0, &mut page);
        Ok(page)
    }

    /// Deletes I/O queue `qid` (its SQ, then its CQ) at the controller. The
    /// controller completes Delete I/O Submission Queue only once every
    /// command of that queue has completed or been aborted (base spec
    /// 5.6): then none of them moves data any more.
    pub(crate) fn delete_io_queue(&self, qid: u16) -> Result<()> {
        let mut q = self.lock();
        q.command(
            "Delete I/O Submission Queue",
            Command::delete_io_queue(admin::DELETE_IO_SQ, qid),
            false,
        )?;
        q.command(
            "Delete I/O Completion Queue",
            Command::delete_io_queue(admin::DELETE_IO_CQ, qid),
            false,
        )?;
        Ok(())
    }

    /// Normal shutdown: CC.SHN, then wait for CSTS.SHST = complete.
    fn shutdown(&self) -> Result<()> {
        let value = self.bar.read32(regs::CC) | cc::SHN_NORMAL;
        self.bar.write32(regs::CC, value);
        let not_done = |csts| Error::NotReady {
            addr: self.address(),
            what: "shut down",
            timeout: self.ready_timeout,
            csts,
        };
        let mut csts_now = 0;
        let done = vfio_core::poll::try_until(self.ready_timeout, || {
            csts_now = self.csts();
            if csts_now == u32::MAX {
                return Err(not_done(csts_now)); // gone: no use waiting
            }
            Ok((csts_now & csts_shst::MASK == csts_shst::COMPLETE).then_some(()))
        })?;
        done.ok_or_else(|| not_done(csts_now))
    }
}

impl AdminQueue {
    fn command(&mut self, name: &'static str, mut cmd: Command, page: bool) -> Result<Completion> {
        if let Some(why) = self.broken {
            return Err(Error::InvalidArgument(format!(
                "{name}: the admin queue is unusable ({why}); reset the controller"
            )));
        }
        if page {
            cmd.set_prps(self.scratch.iova(), 0);
        }
        let cid = self.qp.submit(cmd)?;
        self.qp.ring();
        let start = Instant::now();
        let mut done = None;
        while done.is_none() {
            self.qp.poll(usize::MAX, |c| {
                if c.cid == cid {
                    done = Some(c);
                }
            })?;
            if done.is_none() && start.elapsed() > self.timeout {
                // It may still complete, and write the scratch page: no
                // admin command until a reset.
                self.broken = Some("an admin command timed out");
                return Err(Error::Timeout {
                    command: name,
                    timeout: self.timeout,
                });
            }
        }
        let c = done.expect("loop ends with a completion");
        if !c.status.is_success() {
            return Err(Error::Command {
                command: name,
                status: c.status,
            });
        }
        Ok(c)
    }

    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The shadow doorbell pages the controller uses, for new I/O queues.
    pub(crate) fn shadow(&self) -> Option<Arc<ShadowPages>> {
        self.shadow.clone()
    }

    /// Records the shadow doorbell pages the controller was given (or none).
    pub(crate) fn set_shadow(&mut self, pages: Option<Arc<ShadowPages>>) {
        self.shadow = pages;
    }

    /// Takes the lowest free I/O queue ID up to `limit`.
    pub(crate) fn take_qid(&mut self, limit: u16) -> Option<u16> {
        let qid = (1..=limit).find(|&q| !self.qids.get(q as usize).copied().unwrap_or(false))?;
        if self.qids.len() <= qid as usize {
            self.qids.resize(qid as usize + 1, false);
        }
        self.qids[qid as usize] = true;
        Some(qid)
    }

    pub(crate) fn free_qid(&mut self, qid: u16) {
        if let Some(q) = self.qids.get_mut(qid as usize) {
            *q = false;
        }
    }
}

impl Drop for Admin {
    /// Shuts the controller down, then stops it (the admin rings, the
    /// scratch page and the shadow doorbell pages leaked if it cannot be);
    /// a failed shutdown is logged only after that.
    fn drop(&mut self) {
        let shutdown = self.shutdown();
        let mut q = self.lock();
        let AdminQueue {
            qp,
            scratch,
            shadow,
            broken,
            ..
        } = &mut *q;
        self.stop(broken, || {
            // The admin rings may still be written: keep them.
            qp.leak_on_drop();
            scratch.leak_on_drop();
            if let Some(pages) = shadow {
                pages.leak_on_drop();
            }
        });
        drop(q);
        if let Err(e) = shutdown {
            log::warn!("{e}");
        }
    }
}

/// The controller must speak the NVM command set with 4 KiB pages, and have
/// room for queues of at least 2 entries.
pub(crate) fn check_capabilities(addr: PciAddress, cap_value: u64) -> Result<()> {
    let fail = |what: String| Err(Error::Controller { addr, what });
    if cap_value == u64::MAX {
        return fail("CAP reads as all ones: the device is gone".into());
    }
    if cap::css(cap_value) & 1 == 0 {
        return fail("does not support the NVM command set (CAP.CSS)".into());
    }
    if cap::mpsmin(cap_value) != 0 {
        return fail(format!(
            "minimum page size {} KiB; this driver uses 4 KiB pages",
            4u64 << cap::mpsmin(cap_value)
        ));
    }
    if cap::mqes(cap_value) == 0 {
        return fail("CAP.MQES is 0 (queues of 1 entry), which the specification forbids".into());
    }
    Ok(())
}
