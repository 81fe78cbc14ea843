//! How a [`Controller`](crate::Controller) is brought up: which optional
//! controller features the driver uses when the controller offers them.

/// Options for [`Controller::open_with`](crate::Controller::open_with) and
/// [`Controller::with_config`](crate::Controller::with_config). The default
/// uses every feature the controller offers.
///
/// ```
/// let config = nvme_driver::Config::new().shadow_doorbells(false);
/// assert!(!config.uses_shadow_doorbells());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    shadow_doorbells: bool,
    data_pointer: DataPointer,
    interrupts: bool,
}

/// How I/O commands describe their data (the command's PSDT field, base
/// spec 4.2): chosen by [`Config::data_pointer`], resolved against what the
/// controller reports when it is opened ([`crate::Controller::data_pointer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataPointer {
    /// Where Identify Controller's SGLS reports SGLs: PRPs for data that
    /// PRP1 and PRP2 describe alone (at most two pages), an SGL for data
    /// that would need a PRP list page, or that is not dword aligned where
    /// SGLs have no alignment rule (the choice Linux makes with its
    /// `sgl_threshold`: small PRP commands are the cheapest for a
    /// controller to fetch). PRPs only otherwise.
    #[default]
    Auto,
    /// Physical Region Page entries and lists (base spec 4.1.1), which
    /// every controller takes.
    Prp,
    /// Scatter Gather Lists for every command with data (base spec 4.1.2);
    /// opening a controller that does not report SGL support fails.
    Sgl,
}

impl Default for Config {
    fn default() -> Config {
        Config::new()
    }
}

impl Config {
    /// Every optional feature on where the controller has it; I/O
    /// completions polled (see [`Config::interrupts`]).
    pub fn new() -> Config {
        Config {
            shadow_doorbells: true,
            data_pointer: DataPointer::Auto,
            interrupts: false,
        }
    }

    /// Shadow doorbells (Doorbell Buffer Config, base spec 5.8): when on
    /// (the default) and Identify Controller's OACS bit 8 offers them, I/O
    /// queue doorbells are written to a page in host memory and the MMIO
    /// doorbell is written only when the controller's event index says it
    /// is waiting for one. Off: every doorbell is an MMIO write.
    pub fn shadow_doorbells(mut self, on: bool) -> Config {
        self.shadow_doorbells = on;
        self
    }

    /// Whether shadow doorbells are asked for.
    pub fn uses_shadow_doorbells(&self) -> bool {
        self.shadow_doorbells
    }

    /// PRPs or SGLs for I/O data (default [`DataPointer::Auto`]).
    ///
    /// ```
    /// use nvme_driver::{Config, DataPointer};
    /// let config = Config::new().data_pointer(DataPointer::Prp);
    /// assert_eq!(config.data_pointer_choice(), DataPointer::Prp);
    /// ```
    pub fn data_pointer(mut self, choice: DataPointer) -> Config {
        self.data_pointer = choice;
        self
    }

    /// The data pointer asked for.
    pub fn data_pointer_choice(&self) -> DataPointer {
        self.data_pointer
    }

    /// Interrupt mode (default off: completions are polled): each I/O
    /// queue pair's completion queue raises its own MSI-X vector, routed by
    /// VFIO to an eventfd, so a thread can sleep in
    /// [`IoQueuePair::wait`](crate::IoQueuePair::wait) (and the blocking
    /// calls sleep instead of spinning) until the controller posts a
    /// completion. Vector 0 is the admin queue's, which the driver polls;
    /// a device with fewer vectors than queues shares them.
    ///
    /// ```
    /// let config = nvme_driver::Config::new().interrupts(true);
    /// assert!(config.uses_interrupts());
    /// ```
    pub fn interrupts(mut self, on: bool) -> Config {
        self.interrupts = on;
        self
    }

    /// Whether interrupt mode is asked for.
    pub fn uses_interrupts(&self) -> bool {
        self.interrupts
    }
}
