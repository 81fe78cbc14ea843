//! Controller bring-up (base spec section 3.5.1), the admin queue, and the
//! admin commands: identify, number of queues, I/O queue creation, log pages.

use std::sync::Arc;

use vfio_core::dma::{Backing, Buffer, DmaMemory, DmaTarget};
use vfio_core::pci::PciAddress;
use vfio_core::vfio::{Container, Device, Interrupts, IrqKind};

use crate::admin::Admin;
use crate::config::{Config, DataPointer};
use crate::doorbell::ShadowPages;
use crate::io::IoQueuePair;
use crate::queue::QueuePair;
use crate::regs::cap;
use crate::spec::{self, cns, log_page, Command, ControllerInfo, NamespaceInfo, PAGE_SIZE};
use crate::{Error, Result};

/// An NVMe controller, enabled, with its admin queue. It is shut down
/// (CC.SHN, then disabled) once it and every I/O queue pair made from it are
/// dropped; queue pairs may outlive this value.
///
/// # Memory
///
/// The admin queue's rings and a scratch page for identify data and log
/// pages are DMA memory of the controller's container, owned by what this
/// value and its queue pairs share. When the last of them is dropped, the
/// controller is shut down and disabled (or, when it does not report
/// disabled, its bus mastering is turned off) before that memory is freed;
/// when neither works, the memory is leaked on purpose and never reused
/// (counted in [`vfio_core::dma::leaked`]).
///
/// # Admin command errors
///
/// Every method that runs admin commands fails, besides its own errors, with
/// [`Error::Command`] (an error status), [`Error::Timeout`] (no completion
/// within [`Controller::set_admin_timeout`]; every later admin command fails
/// with [`Error::InvalidArgument`] until [`Controller::reset`]), or
/// [`Error::Protocol`] (a completion no correct controller writes).
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
/// let mut buf = DmaMemory::new(&container, 1 << 20, Backing::Auto)?;
/// let len = buf.len();
/// qp.read(ns.nsid, 0, &mut buf, 0, len)?; // the first MiB, by DMA into `buf`
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Controller {
    admin: Arc<Admin>,
    info: ControllerInfo,
    io_queues: u16,
    config: Config,
    /// How I/O data is described, resolved at open: `Auto` only where
    /// the controller has SGLs.
    data_pointer: DataPointer,
    /// MSI-X vectors 0.. (0 the admin queue's) in interrupt mode.
    irqs: Option<Arc<Interrupts>>,
}

impl Controller {
    /// Opens the controller at `addr` (bound to vfio-pci) in `container` and
    /// brings it up, as [`Controller::new`].
    ///
    /// # Errors
    ///
    /// [`Error::Vfio`] when the device cannot be opened (not bound to
    /// vfio-pci, in another container's IOMMU group, no permission); then
    /// those of [`Controller::new`].
    pub fn open(container: &Arc<Container>, addr: PciAddress) -> Result<Controller> {
        Controller::open_with(container, addr, Config::new())
    }

    /// [`Controller::open`] with the optional features chosen by `config`.
    ///
    /// # Errors
    ///
    /// As [`Controller::open`].
    pub fn open_with(
        container: &Arc<Container>,
        addr: PciAddress,
        config: Config,
    ) -> Result<Controller> {
        Controller::with_config(container.open_device(addr)?, config)
    }

    /// Brings up an opened device: bus mastering on, disable, admin queue,
    /// enable, Identify Controller, and Set Features (Number of Queues)
    /// asking for as many I/O queues as the controller grants.
    ///
    /// # Errors
    ///
    /// - [`Error::Vfio`]: mapping BAR0, allocating the admin queue's DMA
    ///   memory, or the PCI command register.
    /// - [`Error::Controller`]: CAP reads all ones, or lacks the NVM command
    ///   set, a 4 KiB page size or queues of 2 entries; CSTS reads all ones,
    ///   or reports a fatal status while enabling.
    /// - [`Error::NotReady`]: the controller did not disable or become ready
    ///   within CAP.TO.
    /// - [`Error::Protocol`]: the admin queue's doorbells lie outside BAR0.
    /// - The [admin command errors](Controller#admin-command-errors).
    ///
    /// On an error after the admin queue was given to the controller, the
    /// controller is shut down and stopped as when a `Controller` is dropped.
    pub fn new(device: Device) -> Result<Controller> {
        Controller::with_config(device, Config::new())
    }

    /// [`Controller::new`] with the optional features chosen by `config`.
    ///
    /// # Errors
    ///
    /// As [`Controller::new`].
    pub fn with_config(device: Device, config: Config) -> Result<Controller> {
        let admin = Admin::new(device)?;
        admin.restart()?;
        let mut c = Controller {
            admin,
            info: ControllerInfo::parse(&[0; 4096]),
            io_queues: 0,
            config,
            data_pointer: DataPointer::Prp,
            irqs: None,
        };
        c.info = c.identify_controller()?;
        c.data_pointer = c.resolve_data_pointer()?;
        c.io_queues = c.set_number_of_queues()?;
        c.configure_shadow_doorbells(false)?;
        c.irqs = c.enable_interrupts()?;
        log::info!(
            "{}: {} ({}), MDTS {}, {} I/O queues, shadow doorbells {}, {} for data, {}",
            c.address(),
            c.info.model,
            c.info.serial,
            c.info.mdts,
            c.io_queues,
            if c.uses_shadow_doorbells() {
                "on"
            } else {
                "off"
            },
            match c.data_pointer {
                DataPointer::Auto => "PRPs or SGLs",
                DataPointer::Prp => "PRPs",
                DataPointer::Sgl => "SGLs",
            },
            match &c.irqs {
                Some(irqs) => format!("{} MSI-X vectors", irqs.len()),
                None => "polled".into(),
            }
        );
        Ok(c)
    }

    /// How long an admin command may take before it counts as failed
    /// (default [`crate::ADMIN_TIMEOUT`]); also bounds how long dropping a
    /// queue pair waits for its deletion before disabling the controller.
    /// Applies to this controller and all its queue pairs.
    pub fn set_admin_timeout(&mut self, timeout: std::time::Duration) {
        self.admin.lock().set_timeout(timeout);
    }

    /// The controller's PCI address.
    pub fn address(&self) -> PciAddress {
        self.admin.address()
    }

    /// The options this controller was opened with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What Identify Controller said.
    pub fn info(&self) -> &ControllerInfo {
        &self.info
    }

    /// The CAP register (Controller Capabilities) read at bring-up.
    pub fn capabilities(&self) -> u64 {
        self.admin.cap()
    }

    /// I/O queue pairs the controller granted (Set Features, Number of
    /// Queues), as far as their doorbells lie inside BAR0.
    pub fn io_queue_limit(&self) -> u16 {
        self.io_queues
    }

    /// The largest transfer of one command in bytes: MDTS, and at most what
    /// one PRP list page describes (2 MiB). [`IoQueuePair::read`] and
    /// [`IoQueuePair::write`] split larger transfers.
    pub fn max_transfer(&self) -> usize {
        let mdts = match self.info.mdts {
            0 => usize::MAX,
            m => PAGE_SIZE << m.min(20),
        };
        mdts.min(crate::prp::MAX_TRANSFER)
    }

    /// Identify into the scratch page; returns a copy of the page.
    fn identify(&self, name: &'static str, cns: u32, nsid: u32) -> Result<Box<[u8; 4096]>> {
        let page = self
            .admin
            .command_with_page(name, Command::identify(cns, nsid), PAGE_SIZE)?;
        let page: [u8; 4096] = page.try_into().expect("one page");
        Ok(Box::new(page))
    }

    fn identify_controller(&self) -> Result<ControllerInfo> {
        let page = self.identify("Identify Controller", cns::CONTROLLER, 0)?;
        Ok(ControllerInfo::parse(&page))
    }

    /// The active namespace IDs (Identify, Active Namespace ID list: the
    /// first 1024).
    ///
    /// # Errors
    ///
    /// The [admin command errors](Controller#admin-command-errors).
    pub fn active_namespaces(&mut self) -> Result<Vec<u32>> {
        let page = self.identify("Identify Active Namespace List", cns::ACTIVE_NAMESPACES, 0)?;
        Ok(spec::parse_namespace_list(&page))
    }

    /// Size and block format of namespace `nsid`.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidArgument`]: `nsid` is not an active namespace.
    /// - [`Error::Controller`]: the namespace is one this driver cannot use,
    ///   and the error says why (metadata, an invalid LBA format, blocks
    ///   larger than one command can move).
    /// - The [admin command errors](Controller#admin-command-errors).
    pub fn namespace(&mut self, nsid: u32) -> Result<NamespaceInfo> {
        let active = self.active_namespaces()?;
        if nsid == 0 || !active.contains(&nsid) {
            return Err(Error::InvalidArgument(format!(
                "namespace {nsid} does not exist on {}; its active namespaces are {active:?}",
                self.address()
            )));
        }
        self.usable_namespace(nsid)
    }

    fn usable_namespace(&self, nsid: u32) -> Result<NamespaceInfo> {
        let page = self.identify("Identify Namespace", cns::NAMESPACE, nsid)?;
        let ns = NamespaceInfo::parse(nsid, &page).ok_or_else(|| {
            self.admin.error(format!(
                "namespace {nsid} reports an invalid LBA format, which this driver does not support"
            ))
        })?;
        if ns.metadata_size != 0 {
            return Err(self.admin.error(format!("namespace {nsid} uses {} metadata bytes per block, which this driver does not support", ns.metadata_size)));
        }
        if ns.block_size as usize > self.max_transfer() {
            return Err(self.admin.error(format!(
                "namespace {nsid} has {}-byte blocks, more than the {} bytes one command may move (MDTS {})",
                ns.block_size,
                self.max_transfer(),
                self.info.mdts
            )));
        }
        Ok(ns)
    }

    /// Asks for as many I/O queue pairs as the controller has; returns how
    /// many it granted whose doorbells fit in BAR0.
    fn set_number_of_queues(&mut self) -> Result<u16> {
        let wanted = u16::MAX - 1;
        let c = self.admin.command(
            "Set Features (Number of Queues)",
            Command::set_number_of_queues(wanted, wanted),
        )?;
        let (sq, cq) = ((c.result & 0xffff) as u16, (c.result >> 16) as u16);
        let granted = sq.min(cq).saturating_add(1);
        let fit =
            crate::queue::doorbell_limit(self.admin.bar().len(), cap::dstrd(self.admin.cap()));
        if fit < granted {
            log::warn!(
                "{}: {granted} I/O queues granted, but the doorbells of only {fit} lie inside the {}-byte BAR0 (stride {}); using {fit}",
                self.address(),
                self.admin.bar().len(),
                4usize << cap::dstrd(self.admin.cap())
            );
        }
        Ok(granted.min(fit))
    }

    /// Creates an I/O queue pair of `entries` (2 up to CAP.MQES + 1, at most
    /// 4096), for one thread to own: its I/O path takes no lock. It holds
    /// up to `entries - 1` commands in flight. The namespaces it serves are
    /// the active ones this driver supports; the others are skipped with a
    /// warning. `B` is the buffer type its asynchronous commands take (a
    /// pool [`Buffer`] by default).
    ///
    /// Its rings and PRP list pages are fresh DMA memory that the queue
    /// pair owns; see [`IoQueuePair`] for when they and its buffers are
    /// freed.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidArgument`]: `entries` out of range, or every I/O
    ///   queue ID the controller granted is in use.
    /// - [`Error::Vfio`]: allocating or mapping the DMA memory.
    /// - The [admin command errors](Controller#admin-command-errors) of
    ///   identifying the namespaces and of Create I/O Completion / Submission
    ///   Queue (when the second fails, the first is deleted again). The
    ///   queue ID is free again after an error.
    pub fn create_io_queue_pair<B: DmaTarget>(&mut self, entries: u16) -> Result<IoQueuePair<B>> {
        let max = (cap::mqes(self.admin.cap()) as u32 + 1).min(4096);
        if entries < 2 || entries as u32 > max {
            return Err(Error::InvalidArgument(format!(
                "queue of {entries} entries: this controller takes 2 to {max}"
            )));
        }
        let namespaces = self.supported_namespaces()?;
        let qid = self.admin.lock().take_qid(self.io_queues).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{} allows {} I/O queue pairs, all in use",
                self.address(),
                self.io_queues
            ))
        })?;
        let generation = self.admin.generation();
        let created = self
            .allocate_queue_pair(qid, entries)
            .and_then(|(qp, lists)| {
                self.create_at_controller(&qp)?;
                Ok((qp, lists))
            });
        let (qp, lists) = match created {
            Ok(parts) => parts,
            Err(e) => {
                self.admin.lock().free_qid(qid);
                return Err(e);
            }
        };
        Ok(IoQueuePair::new(
            qp,
            lists,
            Arc::clone(&self.admin),
            generation,
            namespaces,
            self.info.clone(),
            self.max_transfer(),
        )
        .describing_data(self.data_pointer)
        .with_interrupts(self.vector(qid)))
    }

    /// The rings and PRP list pages of I/O queue pair `qid`, in fresh DMA memory.
    fn allocate_queue_pair(&self, qid: u16, entries: u16) -> Result<(QueuePair, DmaMemory)> {
        let qp = QueuePair::new(
            self.admin.container(),
            Arc::clone(self.admin.bar()),
            qid,
            entries,
            cap::dstrd(self.admin.cap()),
            self.admin.lock().shadow(),
        )?;
        let bytes = IoQueuePair::<Buffer>::list_bytes(qp.depth());
        let lists = DmaMemory::new(self.admin.container(), bytes, Backing::Auto)?;
        Ok((qp, lists))
    }

    /// The active namespaces this driver can use.
    fn supported_namespaces(&mut self) -> Result<Vec<NamespaceInfo>> {
        let mut usable = Vec::new();
        for nsid in self.active_namespaces()? {
            match self.usable_namespace(nsid) {
                Ok(ns) => usable.push(ns),
                Err(e @ Error::Controller { .. }) => log::warn!("{e}; skipping it"),
                Err(e) => return Err(e),
            }
        }
        Ok(usable)
    }

    /// Create I/O Completion Queue, then Submission Queue; if the second
    /// fails, the first is deleted again.
    fn create_at_controller(&self, qp: &QueuePair) -> Result<()> {
        let (qid, entries) = (qp.qid(), qp.entries());
        let vector = self.vector(qid).map(|(_, v)| v as u16);
        self.admin.command(
            "Create I/O Completion Queue",
            Command::create_io_cq(qid, entries, qp.cq_iova(), vector),
        )?;
        let sq = self.admin.command(
            "Create I/O Submission Queue",
            Command::create_io_sq(qid, entries, qp.sq_iova(), qid),
        );
        if let Err(e) = sq {
            let cq = Command::delete_io_queue(spec::admin::DELETE_IO_CQ, qid);
            if let Err(d) = self.admin.command("Delete I/O Completion Queue", cq) {
                log::warn!("{}: {d}", self.address());
            }
            return Err(e);
        }
        Ok(())
    }

    /// Resets the controller (CC.EN 1 -> 0, which drops every queue and stops
    /// all DMA) and brings it up again with an empty admin queue. I/O queue
    /// pairs created before must each be given to
    /// [`Controller::recreate_io_queue_pair`] before use; until then they
    /// keep the buffers of their commands in flight.
    ///
    /// # Errors
    ///
    /// [`Error::NotReady`] (the controller did not disable or become ready
    /// within CAP.TO), [`Error::Controller`] (CSTS reads all ones, or a
    /// fatal status while enabling), [`Error::Vfio`] (turning bus mastering back on), and
    /// the [admin command errors](Controller#admin-command-errors) of Set
    /// Features (Number of Queues). Once the controller reported disabled,
    /// queue pairs count as reset even when a later step fails.
    pub fn reset(&mut self) -> Result<()> {
        log::warn!("{}: resetting the controller", self.address());
        self.admin.restart()?;
        self.io_queues = self.set_number_of_queues()?;
        self.configure_shadow_doorbells(true)?;
        Ok(())
    }

    /// How I/O commands describe their data: [`Config::data_pointer`]
    /// against what the controller reports (`Auto` where it has SGLs,
    /// `Prp` where it has none).
    pub fn data_pointer(&self) -> DataPointer {
        self.data_pointer
    }

    /// Whether I/O queue pairs raise interrupts ([`Config::interrupts`]).
    pub fn uses_interrupts(&self) -> bool {
        self.irqs.is_some()
    }

    /// In interrupt mode, MSI-X vectors 0 (the admin queue's, polled) to
    /// one per I/O queue the controller granted, as many as the device has.
    fn enable_interrupts(&self) -> Result<Option<Arc<Interrupts>>> {
        if !self.config.uses_interrupts() {
            return Ok(None);
        }
        let device = self.admin.device();
        let have = device.irq_count(IrqKind::Msix)?;
        if have == 0 {
            return Err(Error::InvalidArgument(format!(
                "{} has no MSI-X vectors for interrupt mode; open it polled (without Config::interrupts, or --interrupts)",
                self.address()
            )));
        }
        let count = (u32::from(self.io_queues) + 1).min(have);
        Ok(Some(Arc::new(device.enable_irqs(IrqKind::Msix, count)?)))
    }

    /// The interrupts and MSI-X vector of I/O queue `qid` in interrupt
    /// mode: its own, or shared when the device has fewer than queues.
    fn vector(&self, qid: u16) -> Option<(Arc<Interrupts>, usize)> {
        let irqs = self.irqs.as_ref()?;
        let n = irqs.len();
        let v = if n == 1 {
            0
        } else {
            1 + (qid as usize - 1) % (n - 1)
        };
        Some((Arc::clone(irqs), v))
    }

    /// [`DataPointer`] against Identify Controller's SGLS.
    fn resolve_data_pointer(&self) -> Result<DataPointer> {
        match self.config.data_pointer_choice() {
            DataPointer::Auto if self.info.supports_sgl() => Ok(DataPointer::Auto),
            DataPointer::Auto | DataPointer::Prp => Ok(DataPointer::Prp),
            DataPointer::Sgl if self.info.supports_sgl() => Ok(DataPointer::Sgl),
            DataPointer::Sgl => Err(Error::InvalidArgument(format!(
                "{} does not support SGLs for I/O data (Identify Controller SGLS = {:#x}); \
                 use DataPointer::Prp or Auto (nvme tools: --data-pointer prp or auto)",
                self.address(),
                self.info.sgls
            ))),
        }
    }

    /// Whether I/O queues use shadow doorbells: asked for in [`Config`],
    /// offered by the controller (OACS bit 8) and accepted by it.
    pub fn uses_shadow_doorbells(&self) -> bool {
        self.admin.lock().shadow().is_some()
    }

    /// Doorbell Buffer Config (base spec 5.8) when [`Config`] asks for
    /// shadow doorbells and the controller offers them. At bring-up a
    /// controller that refuses the command is used without; after a reset
    /// (`again`) the queue pairs made before rely on the shadows, so a
    /// refusal is an error.
    fn configure_shadow_doorbells(&mut self, again: bool) -> Result<()> {
        if !self.config.uses_shadow_doorbells() || !self.info.supports_shadow_doorbells() {
            return Ok(());
        }
        let pages = match self.admin.lock().shadow() {
            Some(pages) => {
                pages.clear();
                pages
            }
            None => Arc::new(ShadowPages::new(
                self.admin.container(),
                self.io_queues,
                cap::dstrd(self.admin.cap()),
            )?),
        };
        let cmd = Command::doorbell_buffer_config(pages.shadow_iova(), pages.event_idx_iova());
        match self.admin.command("Doorbell Buffer Config", cmd) {
            Ok(_) => {
                self.admin.lock().set_shadow(Some(pages));
                Ok(())
            }
            Err(e @ Error::Command { .. }) if !again => {
                log::warn!("{}: {e}; ringing MMIO doorbells only", self.address());
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// After [`Controller::reset`]: hands every command `qp` had in flight to
    /// `aborted` (with its buffer; each fails with [`Error::Aborted`]) and
    /// creates the queue pair again at the controller, same ID, same memory.
    /// Refused (and nothing handed back) unless the controller was reset
    /// after the queue pair was created or last re-created: before that, its
    /// commands may still be moving data.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidArgument`]: `qp` belongs to another controller, or
    ///   the controller was not reset since `qp` was (re-)created. Nothing
    ///   is handed back.
    /// - [`Error::Controller`]: the controller is disabled (a reset failed).
    /// - The [admin command errors](Controller#admin-command-errors) of
    ///   Create I/O Completion / Submission Queue. The commands in flight
    ///   were handed back already; `qp` stays failed.
    pub fn recreate_io_queue_pair<B: DmaTarget>(
        &mut self,
        qp: &mut IoQueuePair<B>,
        aborted: impl FnMut(crate::IoCompletion<B>),
    ) -> Result<()> {
        if !Arc::ptr_eq(&self.admin, qp.admin()) {
            return Err(Error::InvalidArgument(
                "this queue pair belongs to another controller".into(),
            ));
        }
        if qp.generation() == self.admin.generation() {
            return Err(Error::InvalidArgument(format!(
                "queue pair {} is live on {}: reset the controller before re-creating it (its commands may still move data)",
                qp.qid(),
                self.address()
            )));
        }
        if !self.admin.enabled() {
            return Err(self
                .admin
                .error("is disabled; reset it before re-creating queues"));
        }
        let generation = self.admin.generation();
        qp.abort_all(aborted);
        self.create_at_controller(qp.queue())?;
        qp.set_generation(generation);
        Ok(())
    }

    /// Deletes an I/O queue pair at the controller (its SQ, then its CQ) and
    /// frees its memory. Dropping it does the same, logging what fails.
    ///
    /// The controller completes the deletion only once every command of the
    /// queue is done; then the buffers of asynchronous commands still held
    /// go back to their pools (they are not handed to the caller). A queue
    /// pair whose controller was reset since it was (re-)created is not
    /// deleted at the controller: its queues are gone already.
    ///
    /// # Errors
    ///
    /// The [admin command errors](Controller#admin-command-errors) of Delete
    /// I/O Submission / Completion Queue. The controller is then disabled
    /// (or its bus mastering turned off) before the memory is freed, which
    /// makes every queue pair of the controller unusable until
    /// [`Controller::reset`]; when even that fails, the rings and buffers
    /// are leaked on purpose.
    pub fn delete_io_queue_pair<B: DmaTarget>(&mut self, qp: IoQueuePair<B>) -> Result<()> {
        qp.delete()
    }

    /// The SMART / Health Information log page (global).
    ///
    /// # Errors
    ///
    /// The [admin command errors](Controller#admin-command-errors).
    pub fn smart_log(&mut self) -> Result<SmartLog> {
        let page = self.log_page("Get Log Page (SMART / Health)", log_page::SMART_HEALTH, 512)?;
        Ok(SmartLog::parse(&page))
    }

    /// The number of entries in the Error Information log page the controller
    /// has logged since bring-up (the newest entry's Error Count).
    ///
    /// # Errors
    ///
    /// The [admin command errors](Controller#admin-command-errors).
    pub fn error_count(&mut self) -> Result<u64> {
        let page = self.log_page(
            "Get Log Page (Error Information)",
            log_page::ERROR_INFORMATION,
            64,
        )?;
        Ok(u64::from_le_bytes(page[0..8].try_into().expect("8 bytes")))
    }

    fn log_page(&mut self, name: &'static str, lid: u8, bytes: u32) -> Result<Vec<u8>> {
        self.admin.command_with_page(
            name,
            Command::get_log_page(lid, 0xffff_ffff, bytes),
            bytes as usize,
        )
    }
}

/// The SMART / Health Information log page (base spec figure 207), in part
/// (more fields may be added).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SmartLog {
    /// Critical Warning bits (byte 0): spare below threshold, temperature,
    /// reliability degraded, read only, volatile memory backup failed.
    pub critical_warning: u8,
    /// Composite temperature in kelvins.
    pub temperature_kelvin: u16,
    /// Available Spare, as a percentage of the spare capacity.
    pub available_spare_percent: u8,
    /// Percentage Used: the vendor's estimate of the life used (may
    /// exceed 100).
    pub percentage_used: u8,
    /// Data Units Read: thousands of 512-byte units read.
    pub data_units_read: u128,
    /// Data Units Written: thousands of 512-byte units written.
    pub data_units_written: u128,
    /// Host Read Commands completed.
    pub host_read_commands: u128,
    /// Host Write Commands completed.
    pub host_write_commands: u128,
    /// Media and Data Integrity Errors: unrecovered data integrity errors.
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
