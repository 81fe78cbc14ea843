//! Controller bring-up (base spec section 3.5.1), the admin queue, and the
//! admin commands: identify, number of queues, I/O queue creation, log pages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vfio_core::dma::{Backing, DmaMemory, DmaTarget};
use vfio_core::mmio::Mmio;
use vfio_core::pci::PciAddress;
use vfio_core::vfio::{Container, Device};

use crate::io::IoQueuePair;
use crate::queue::QueuePair;
use crate::regs::{self, cap, cc, csts, csts_shst};
use crate::spec::{
    self, admin, cns, log_page, Command, Completion, ControllerInfo, NamespaceInfo, PAGE_SIZE,
};
use crate::{Error, Result};

/// Admin queue entries.
const ADMIN_ENTRIES: u16 = 32;
/// How long an admin command may take (QEMU under TCG is slow).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// An NVMe controller, enabled, with its admin queue; shut down (CC.SHN) on drop.
///
/// ```no_run
/// use nvme_driver::Controller;
/// use vfio_core::dma::{Backing, DmaMemory};
///
/// # fn main() -> nvme_driver::Result<()> {
/// let container = vfio_core::vfio::Container::new()?;
/// let mut nvme = Controller::open(&container, "0000:01:00.0".parse()?)?;
/// println!("{} ({})", nvme.info().model, nvme.info().serial);
/// let ns = nvme.namespace(1)?;
/// let mut qp = nvme.create_io_queue_pair::<DmaMemory>(64)?;
/// let buf = DmaMemory::new(&container, 1 << 20, Backing::Auto)?;
/// qp.read(ns.nsid, 0, &buf, 0, buf.len())?; // the first MiB, by DMA into `buf`
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Controller {
    device: Device,
    bar: Arc<Mmio>,
    cap: u64,
    ready_timeout: Duration,
    admin: QueuePair,
    /// One page for identify data and log pages.
    scratch: DmaMemory,
    info: ControllerInfo,
    io_queues: u16,
    next_qid: u16,
}

impl Controller {
    /// Opens the controller at `addr` (bound to vfio-pci) in `container` and brings it up.
    pub fn open(container: &Arc<Container>, addr: PciAddress) -> Result<Controller> {
        Controller::new(container.open_device(addr)?)
    }

    /// Brings up an opened device: disable, admin queue, enable, identify,
    /// and ask for as many I/O queues as the controller grants.
    pub fn new(device: Device) -> Result<Controller> {
        device.enable_bus_master()?;
        let bar = Arc::new(device.map_bar(0)?);
        let cap = bar.read64(regs::CAP);
        let container = Arc::clone(device.container());
        check_capabilities(device.address(), cap)?;
        let admin = QueuePair::new(
            &container,
            Arc::clone(&bar),
            0,
            ADMIN_ENTRIES,
            cap::dstrd(cap),
        )?;
        let scratch = DmaMemory::new(&container, PAGE_SIZE, Backing::Auto)?;
        let ready_timeout = Duration::from_millis(500 * cap::to(cap).max(1) as u64);
        let info = ControllerInfo::parse(&[0; 4096]);
        let mut c = Controller {
            device,
            bar,
            cap,
            ready_timeout,
            admin,
            scratch,
            info,
            io_queues: 0,
            next_qid: 1,
        };
        c.disable()?;
        c.configure_admin_queue();
        c.enable()?;
        c.info = c.identify_controller()?;
        c.io_queues = c.set_number_of_queues(u16::MAX - 1)?;
        log::info!(
            "{}: {} ({}), MDTS {}, {} I/O queues",
            c.address(),
            c.info.model,
            c.info.serial,
            c.info.mdts,
            c.io_queues
        );
        Ok(c)
    }

    /// The controller's PCI address.
    pub fn address(&self) -> PciAddress {
        self.device.address()
    }

    /// What Identify Controller said.
    pub fn info(&self) -> &ControllerInfo {
        &self.info
    }

    /// The CAP register read at bring-up.
    pub fn capabilities(&self) -> u64 {
        self.cap
    }

    /// I/O queue pairs the controller granted (Set Features, Number of Queues).
    pub fn io_queue_limit(&self) -> u16 {
        self.io_queues
    }

    /// The largest transfer of one command in bytes (MDTS, and one PRP list page).
    pub fn max_transfer(&self) -> usize {
        let mdts = match self.info.mdts {
            0 => usize::MAX,
            m => PAGE_SIZE << m.min(20),
        };
        mdts.min(crate::prp::MAX_TRANSFER)
    }

    fn csts(&self) -> u32 {
        self.bar.read32(regs::CSTS)
    }

    /// Clears CC.EN and waits for CSTS.RDY = 0.
    fn disable(&mut self) -> Result<()> {
        let cc_now = self.bar.read32(regs::CC);
        if cc_now & cc::EN != 0 {
            self.bar.write32(regs::CC, cc_now & !cc::EN);
        }
        self.wait_ready(false, "disable")
    }

    /// Admin queue sizes and addresses (AQA, ASQ, ACQ).
    fn configure_admin_queue(&self) {
        let n = ADMIN_ENTRIES as u32 - 1;
        self.bar.write32(regs::AQA, n << 16 | n);
        self.bar.write64(regs::ASQ, self.admin.sq_iova());
        self.bar.write64(regs::ACQ, self.admin.cq_iova());
    }

    /// Sets CC (NVM command set, 4 KiB pages, 64/16-byte entries, EN) and waits for RDY.
    fn enable(&mut self) -> Result<()> {
        let value = cc::CSS_NVM | 6 << cc::IOSQES_SHIFT | 4 << cc::IOCQES_SHIFT | cc::EN;
        self.bar.write32(regs::CC, value);
        self.wait_ready(true, "become ready")
    }

    /// Polls CSTS.RDY until it is `ready`, within CAP.TO; a fatal status or a
    /// vanished device (all ones) ends the wait with an error.
    fn wait_ready(&self, ready: bool, what: &'static str) -> Result<()> {
        let start = Instant::now();
        loop {
            let csts_now = self.csts();
            if csts_now == u32::MAX {
                return Err(self.error("reads as all ones: the device is gone (surprise removal?)"));
            }
            if csts_now & csts::CFS != 0 {
                return Err(self.error(&format!(
                    "Controller Fatal Status while waiting to {what}; reset it"
                )));
            }
            if (csts_now & csts::RDY != 0) == ready {
                return Ok(());
            }
            if start.elapsed() > self.ready_timeout {
                return Err(Error::NotReady {
                    addr: self.address(),
                    what,
                    timeout: self.ready_timeout,
                    csts: csts_now,
                });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn error(&self, what: &str) -> Error {
        Error::Controller {
            addr: self.address(),
            what: what.to_string(),
        }
    }

    /// Runs one admin command to completion; `data` is its one-page buffer.
    fn admin_command(
        &mut self,
        name: &'static str,
        mut cmd: Command,
        data: Option<u64>,
    ) -> Result<Completion> {
        if let Some(iova) = data {
            cmd.set_prps(iova, 0);
        }
        let cid = self.admin.submit(cmd)?;
        self.admin.ring();
        let start = Instant::now();
        let mut done = None;
        while done.is_none() {
            self.admin.poll(usize::MAX, |c| {
                if c.cid == cid {
                    done = Some(c);
                }
            })?;
            if done.is_none() && start.elapsed() > ADMIN_TIMEOUT {
                return Err(Error::Timeout {
                    command: name,
                    timeout: ADMIN_TIMEOUT,
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

    /// Identify into the scratch page; returns a copy of the page.
    fn identify(&mut self, name: &'static str, cns: u32, nsid: u32) -> Result<Box<[u8; 4096]>> {
        self.scratch.write_bytes(0, &[0; PAGE_SIZE]);
        let iova = self.scratch.iova();
        self.admin_command(name, Command::identify(cns, nsid), Some(iova))?;
        let mut page = Box::new([0u8; 4096]);
        self.scratch.read_bytes(0, &mut page[..]);
        Ok(page)
    }

    fn identify_controller(&mut self) -> Result<ControllerInfo> {
        let page = self.identify("Identify Controller", cns::CONTROLLER, 0)?;
        Ok(ControllerInfo::parse(&page))
    }

    /// The active namespace IDs.
    pub fn active_namespaces(&mut self) -> Result<Vec<u32>> {
        let page = self.identify("Identify Active Namespace List", cns::ACTIVE_NAMESPACES, 0)?;
        Ok(spec::parse_namespace_list(&page))
    }

    /// Size and block format of namespace `nsid`.
    pub fn namespace(&mut self, nsid: u32) -> Result<NamespaceInfo> {
        let active = self.active_namespaces()?;
        if nsid == 0 || !active.contains(&nsid) {
            return Err(Error::InvalidArgument(format!(
                "namespace {nsid} does not exist on {}; its active namespaces are {active:?}",
                self.address()
            )));
        }
        let page = self.identify("Identify Namespace", cns::NAMESPACE, nsid)?;
        let ns = NamespaceInfo::parse(nsid, &page).ok_or_else(|| {
            self.error(&format!("namespace {nsid} reports an invalid LBA format"))
        })?;
        if ns.metadata_size != 0 {
            return Err(self.error(&format!("namespace {nsid} uses {} metadata bytes per block, which this driver does not support", ns.metadata_size)));
        }
        Ok(ns)
    }

    /// Asks for `wanted` I/O queue pairs; returns how many were granted.
    fn set_number_of_queues(&mut self, wanted: u16) -> Result<u16> {
        let c = self.admin_command(
            "Set Features (Number of Queues)",
            Command::set_number_of_queues(wanted, wanted),
            None,
        )?;
        let (sq, cq) = ((c.result & 0xffff) as u16, (c.result >> 16) as u16);
        Ok(sq.min(cq).saturating_add(1))
    }

    /// Creates an I/O queue pair of `entries` (2 up to CAP.MQES + 1), for one
    /// thread to own: its I/O path takes no lock.
    pub fn create_io_queue_pair<B: DmaTarget>(&mut self, entries: u16) -> Result<IoQueuePair<B>> {
        let max = cap::mqes(self.cap) as u32 + 1;
        if entries < 2 || entries as u32 > max.min(4096) {
            return Err(Error::InvalidArgument(format!(
                "queue of {entries} entries: this controller takes 2 to {}",
                max.min(4096)
            )));
        }
        if self.next_qid > self.io_queues {
            return Err(Error::InvalidArgument(format!(
                "{} allows {} I/O queue pairs, all created",
                self.address(),
                self.io_queues
            )));
        }
        let qid = self.next_qid;
        let container = Arc::clone(self.device.container());
        let qp = QueuePair::new(
            &container,
            Arc::clone(&self.bar),
            qid,
            entries,
            cap::dstrd(self.cap),
        )?;
        self.admin_command(
            "Create I/O Completion Queue",
            Command::create_io_cq(qid, entries, qp.cq_iova()),
            None,
        )?;
        self.admin_command(
            "Create I/O Submission Queue",
            Command::create_io_sq(qid, entries, qp.sq_iova(), qid),
            None,
        )?;
        self.next_qid += 1;
        let namespaces = self.all_namespaces()?;
        IoQueuePair::new(
            qp,
            &container,
            namespaces,
            self.info.clone(),
            self.max_transfer(),
        )
    }

    fn all_namespaces(&mut self) -> Result<Vec<NamespaceInfo>> {
        self.active_namespaces()?
            .into_iter()
            .map(|n| self.namespace(n))
            .collect()
    }

    /// Resets the controller (CC.EN 1 -> 0, which drops every queue and stops
    /// all DMA) and brings it up again with an empty admin queue. I/O queue
    /// pairs created before must each be given to
    /// [`Controller::recreate_io_queue_pair`] before use.
    pub fn reset(&mut self) -> Result<()> {
        log::warn!("{}: resetting the controller", self.address());
        self.disable()?;
        self.admin.reset();
        self.configure_admin_queue();
        self.enable()?;
        let granted = self.set_number_of_queues(u16::MAX - 1)?;
        self.io_queues = granted;
        Ok(())
    }

    /// After [`Controller::reset`]: hands every command `qp` had in flight to
    /// `aborted` (with its buffer; each fails with [`Error::Aborted`]) and
    /// creates the queue pair again at the controller, same ID, same memory.
    pub fn recreate_io_queue_pair<B: DmaTarget>(
        &mut self,
        qp: &mut IoQueuePair<B>,
        aborted: impl FnMut(crate::IoCompletion<B>),
    ) -> Result<()> {
        if self.bar.read32(regs::CC) & cc::EN == 0 {
            return Err(self.error("is disabled; reset it before re-creating queues"));
        }
        qp.abort_all(aborted);
        let q = qp.queue();
        let (qid, entries, cq, sq) = (q.qid(), q.entries(), q.cq_iova(), q.sq_iova());
        self.admin_command(
            "Create I/O Completion Queue",
            Command::create_io_cq(qid, entries, cq),
            None,
        )?;
        self.admin_command(
            "Create I/O Submission Queue",
            Command::create_io_sq(qid, entries, sq, qid),
            None,
        )?;
        Ok(())
    }

    /// Deletes an I/O queue pair (its SQ, then its CQ).
    pub fn delete_io_queue_pair<B: DmaTarget>(&mut self, qp: IoQueuePair<B>) -> Result<()> {
        let qid = qp.qid();
        self.admin_command(
            "Delete I/O Submission Queue",
            Command::delete_io_queue(admin::DELETE_IO_SQ, qid),
            None,
        )?;
        self.admin_command(
            "Delete I/O Completion Queue",
            Command::delete_io_queue(admin::DELETE_IO_CQ, qid),
            None,
        )?;
        Ok(())
    }

    /// The SMART / Health Information log page (global).
    pub fn smart_log(&mut self) -> Result<SmartLog> {
        let page = self.log_page("Get Log Page (SMART / Health)", log_page::SMART_HEALTH, 512)?;
        Ok(SmartLog::parse(&page))
    }

    /// The number of entries in the Error Information log page the controller
    /// has logged since bring-up (the newest entry's Error Count).
    pub fn error_count(&mut self) -> Result<u64> {
        let page = self.log_page(
            "Get Log Page (Error Information)",
            log_page::ERROR_INFORMATION,
            64,
        )?;
        Ok(u64::from_le_bytes(page[0..8].try_into().expect("8 bytes")))
    }

    fn log_page(&mut self, name: &'static str, lid: u8, bytes: u32) -> Result<Vec<u8>> {
        self.scratch.write_bytes(0, &[0; PAGE_SIZE]);
        let iova = self.scratch.iova();
        self.admin_command(
            name,
            Command::get_log_page(lid, 0xffff_ffff, bytes),
            Some(iova),
        )?;
        let mut page = vec![0u8; bytes as usize];
        self.scratch.read_bytes(0, &mut page);
        Ok(page)
    }

    /// Normal shutdown: CC.SHN, then wait for CSTS.SHST = complete.
    fn shutdown(&mut self) -> Result<()> {
        let value = self.bar.read32(regs::CC) | cc::SHN_NORMAL;
        self.bar.write32(regs::CC, value);
        let start = Instant::now();
        while self.csts() & csts_shst::MASK != csts_shst::COMPLETE {
            if start.elapsed() > self.ready_timeout || self.csts() == u32::MAX {
                return Err(Error::NotReady {
                    addr: self.address(),
                    what: "shut down",
                    timeout: self.ready_timeout,
                    csts: self.csts(),
                });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            log::warn!("{e}");
        }
    }
}

/// The controller must speak the NVM command set with 4 KiB pages.
fn check_capabilities(addr: PciAddress, cap_value: u64) -> Result<()> {
    if cap_value == u64::MAX {
        return Err(Error::Controller {
            addr,
            what: "CAP reads as all ones: the device is gone".into(),
        });
    }
    if cap::css(cap_value) & 1 == 0 {
        return Err(Error::Controller {
            addr,
            what: "does not support the NVM command set (CAP.CSS)".into(),
        });
    }
    if cap::mpsmin(cap_value) != 0 {
        return Err(Error::Controller {
            addr,
            what: format!(
                "minimum page size {} KiB; this driver uses 4 KiB pages",
                4 << cap::mpsmin(cap_value)
            ),
        });
    }
    Ok(())
}

/// The SMART / Health Information log page (base spec figure 207), in part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmartLog {
    pub critical_warning: u8,
    /// Composite temperature in kelvins.
    pub temperature_kelvin: u16,
    pub available_spare_percent: u8,
    pub percentage_used: u8,
    /// Thousands of 512-byte units read / written.
    pub data_units_read: u128,
    pub data_units_written: u128,
    pub host_read_commands: u128,
    pub host_write_commands: u128,
    pub media_errors: u128,
}

impl SmartLog {
    fn parse(p: &[u8]) -> SmartLog {
        let u128_at = |at: usize| u128::from_le_bytes(p[at..at + 16].try_into().expect("16 bytes"));
        SmartLog {
            critical_warning: p[0],
            temperature_kelvin: u16::from_le_bytes([p[1], p[2]]),
            available_spare_percent: p[3],
            percentage_used: p[5],
            data_units_read: u128_at(32),
            data_units_written: u128_at(48),
            host_read_commands: u128_at(64),
            host_write_commands: u128_at(80),
            media_errors: u128_at(160),
        }
    }
}
