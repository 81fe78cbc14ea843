//! Issue 29: nothing that can panic (a logger, the quiesce step) runs
//! between "the edu may still write this memory" and "bus mastering is
//! off". In this process the logger panics on every warning and error. A
//! small edu model (identification and a DMA engine that never finishes
//! until the test says so, honouring Bus Master Enable) shows that the
//! panic comes only once bus mastering is off, checked from the logger at
//! the moment it is called, and that memory the caller gets back is not
//! written when the model finally runs the transfer.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use edu_driver::{regs, Edu};
use vfio_core::dma::{BufferPool, DmaTarget};
use vfio_core::mmio::{RegisterFile, RegisterModel};
use vfio_core::panicking_logger::{install, panicked, set_hook, the_warning};
use vfio_core::vfio::{Container, Device};

// ---- a small edu ----

/// PCI command register and its Bus Master Enable bit.
const COMMAND: usize = 0x04;
const BUS_MASTER: u64 = 1 << 2;

/// An edu whose transfers run only when the test calls
/// [`EduModel::finish`], and only with bus mastering on.
#[derive(Debug)]
struct EduModel {
    container: Arc<Container>,
    config: Arc<Mutex<RegisterFile>>,
    /// Source, destination, count, command.
    dma: [u64; 4],
    /// The next BAR read panics, once (the quiesce step, which reads the
    /// DMA command register, panics). Once: `Device`'s own drop quiesces
    /// again while a loan is outstanding, and a second panic while
    /// unwinding would abort the process.
    panics: bool,
    /// Transfers that ran, and those refused for bus mastering off.
    transfers: u32,
    refused: u32,
}

impl EduModel {
    fn bus_master(&self) -> bool {
        self.config.lock().unwrap().get(COMMAND, 2) & BUS_MASTER != 0
    }

    /// The transfer in flight ends now: bytes 0x5a to RAM, if the device
    /// may start DMA.
    fn finish(&mut self) {
        let [_, dst, count, command] = self.dma;
        if command & regs::dma_command::START == 0 {
            return;
        }
        if self.bus_master() {
            let bytes = vec![0x5a; count as usize];
            self.container.dma_write(dst, &bytes).unwrap();
            self.transfers += 1;
        } else {
            self.refused += 1;
        }
        self.dma[3] &= !regs::dma_command::START;
    }
}

impl RegisterModel for EduModel {
    fn read(&mut self, offset: usize, _size: usize) -> u64 {
        if std::mem::take(&mut self.panics) {
            panic!("the edu model panics on a BAR read");
        }
        match offset {
            regs::IDENTIFICATION => 0x0100_00ed,
            o @ 0x80..=0x98 => self.dma[(o - 0x80) / 8],
            _ => 0,
        }
    }

    fn write(&mut self, offset: usize, _size: usize, value: u64) {
        let running = self.dma[3] & regs::dma_command::START != 0;
        if (0x80..=0x98).contains(&offset) && !running {
            self.dma[(offset - 0x80) / 8] = value;
        }
    }
}

struct Rig {
    model: Arc<Mutex<EduModel>>,
    config: Arc<Mutex<RegisterFile>>,
}

impl Rig {
    fn model(&self) -> MutexGuard<'_, EduModel> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn bus_master(config: &Arc<Mutex<RegisterFile>>) -> bool {
    config.lock().unwrap().get(COMMAND, 2) & BUS_MASTER != 0
}

/// A model edu, and the device (not yet given to the driver).
fn rig() -> (Rig, Device) {
    let container = Container::unbacked();
    let mut file = RegisterFile::new(256);
    file.set(0, 2, regs::VENDOR_ID as u64);
    file.set(2, 2, regs::DEVICE_ID as u64);
    let config = Arc::new(Mutex::new(file));
    let model = Arc::new(Mutex::new(EduModel {
        container: Arc::clone(&container),
        config: Arc::clone(&config),
        dma: [0; 4],
        panics: false,
        transfers: 0,
        refused: 0,
    }));
    let addr = "0000:00:06.0".parse().unwrap();
    let bars = vec![(0, regs::BAR0_LEN, model.clone() as _)];
    let device = Device::from_models(&container, addr, (256, config.clone()), bars).unwrap();
    (Rig { model, config }, device)
}

#[test]
fn a_transfer_that_never_ends_panics_only_after_bus_mastering_is_off() {
    install();
    let (rig, device) = rig();
    let mut edu = Edu::new(device).unwrap();
    edu.set_timeout(Duration::from_millis(30));
    let mut memory = edu.dma_memory(4096).unwrap();
    let config = Arc::clone(&rig.config);
    set_hook(move || format!("bus master {}", bus_master(&config)));

    assert!(
        panicked(|| {
            let _ = edu.copy_from_device(0, &mut memory, 64);
        }),
        "the warning's logger panicked"
    );
    let (message, state) = the_warning();
    assert!(message.contains("bus mastering is off"), "{message}");
    assert_eq!(state, "bus master false", "off before the log");
    // The memory is the caller's again: the transfer, ending late, does
    // not reach it.
    memory.write_bytes(0, &[0x77; 64]);
    rig.model().finish();
    let mut back = [0u8; 64];
    memory.read_bytes(0, &mut back);
    assert_eq!(back, [0x77; 64], "a late transfer landed");
    let m = rig.model();
    assert_eq!(
        (m.transfers, m.refused),
        (0, 1),
        "refused: bus mastering off"
    );
}

#[test]
fn a_quiesce_step_that_panics_ends_with_bus_mastering_off_before_the_log_and_loans_end() {
    install();
    let (rig, device) = rig();
    let pool = BufferPool::new(device.container(), 4096, 2).unwrap();
    let lent = device.lend(pool.alloc().unwrap());
    let edu = Edu::new(device).unwrap();
    let config = Arc::clone(&rig.config);
    let p = Arc::clone(&pool);
    set_hook(move || {
        format!(
            "bus master {}, {} buffers free",
            bus_master(&config),
            p.free_count()
        )
    });
    rig.model().panics = true;

    assert!(panicked(|| drop(edu)), "a panic came out of the drop");
    let (message, state) = the_warning();
    assert!(message.contains("the stop step panicked"), "{message}");
    assert!(message.contains("bus mastering is off"), "{message}");
    assert_eq!(state, "bus master false, 1 buffers free");
    assert!(!bus_master(&rig.config));
    // Quiesced (bus mastering off): the loan has ended.
    let buf = lent.reclaim().expect("the loan ended with the quiesce");
    assert!(buf.dma_len() >= 4096);
    drop(buf);
    assert_eq!(pool.free_count(), 2);
}
