//! edu-driver, unchanged, on a software edu: a model of the registers as
//! QEMU's docs/specs/edu.rst describes them (with what edu.c of QEMU 7.2
//! adds: 32-bit factorials, a range check that stops the machine, DMA
//! addresses cut to the DMA mask), behind vfio-core's `testing` seam. What
//! is checked crossed the model: factorials it computed, bytes it moved by
//! DMA through the container, and what it refused or never saw. No root,
//! no VFIO, milliseconds.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use edu_driver::{regs, Edu, Error};
use vfio_core::dma::{Backing, DmaMemory};
use vfio_core::mmio::{RegisterFile, RegisterModel};
use vfio_core::vfio::{Container, Device, IrqKind};

/// PCI command register and its Bus Master Enable bit.
const COMMAND: usize = 0x04;
const BUS_MASTER: u64 = 1 << 2;

/// What the model does wrong, on purpose.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum Fault {
    #[default]
    None,
    /// Factorials and transfers start and never finish.
    NeverFinishes,
    /// The liveness register keeps what was written.
    NoInversion,
    /// A factorial reads one more than it is.
    WrongFactorial,
}

/// The device: its registers, its 4 KiB buffer, and a record of what it did.
#[derive(Debug)]
struct EduModel {
    container: Arc<Container>,
    config: Arc<Mutex<RegisterFile>>,
    fault: Fault,
    id: u32,
    dma_mask: u64,
    /// Reads of the status (or command) register that still show the
    /// computation (or transfer) running after it started.
    busy_reads: u32,
    liveness: u32,
    factorial: u32,
    status: u32,
    irq_status: u32,
    /// Source, destination, count, command.
    dma: [u64; 4],
    fact_left: u32,
    dma_left: u32,
    buffer: [u8; regs::BUFFER_LEN],
    factorials: u32,
    transfers: u32,
    /// What QEMU 7.2 would have stopped the machine for, or an IOMMU would
    /// have faulted: a test fails if any.
    violations: Vec<String>,
}

impl EduModel {
    fn new(container: &Arc<Container>, config: &Arc<Mutex<RegisterFile>>) -> EduModel {
        EduModel {
            container: Arc::clone(container),
            config: Arc::clone(config),
            fault: Fault::None,
            id: 0x0100_00ed,
            dma_mask: (1 << regs::DMA_ADDRESS_BITS) - 1,
            busy_reads: 3,
            liveness: 0,
            factorial: 0,
            status: 0,
            irq_status: 0,
            dma: [0; 4],
            fact_left: 0,
            dma_left: 0,
            buffer: [0; regs::BUFFER_LEN],
            factorials: 0,
            transfers: 0,
            violations: Vec::new(),
        }
    }

    fn bus_master(&self) -> bool {
        self.config.lock().unwrap().get(COMMAND, 2) & BUS_MASTER != 0
    }

    /// The computing bit, which clears on the `busy_reads`-th read.
    fn read_status(&mut self) -> u32 {
        if self.status & regs::status::COMPUTING != 0 && self.fault != Fault::NeverFinishes {
            self.fact_left = self.fact_left.saturating_sub(1);
            if self.fact_left == 0 {
                let n = self.factorial;
                self.factorial = (1..=n).fold(1u32, |a, k| a.wrapping_mul(k));
                self.factorial += (self.fault == Fault::WrongFactorial) as u32;
                self.status &= !regs::status::COMPUTING;
                if self.status & regs::status::RAISE_INTERRUPT != 0 {
                    self.irq_status |= regs::interrupt::FACTORIAL;
                }
            }
        }
        self.status
    }

    /// The start bit, which clears (the transfer done) on the
    /// `busy_reads`-th read.
    fn read_command(&mut self) -> u64 {
        if self.dma[3] & regs::dma_command::START != 0 && self.fault != Fault::NeverFinishes {
            self.dma_left = self.dma_left.saturating_sub(1);
            if self.dma_left == 0 {
                self.run_transfer();
            }
        }
        self.dma[3]
    }

    /// One transfer as edu.c's timer does it, with QEMU 7.2's range check.
    fn run_transfer(&mut self) {
        let [src, dst, count, command] = self.dma;
        let to_ram = command & regs::dma_command::TO_RAM != 0;
        let (device, ram) = if to_ram { (src, dst) } else { (dst, src) };
        let start = regs::BUFFER_ADDRESS;
        let end = device.wrapping_add(count);
        if !(start..start + 0x1000).contains(&device) || end <= device || end > start + 0xfff {
            self.violations
                .push(format!("hardware error: DMA range {device:#x}+{count:#x}"));
        } else if !self.bus_master() {
            self.violations.push("DMA with bus mastering off".into());
        } else {
            let at = (device - start) as usize;
            let bytes = &mut self.buffer[at..at + count as usize];
            let ram = ram & self.dma_mask;
            let moved = match to_ram {
                true => self.container.dma_write(ram, bytes),
                false => self.container.dma_read(ram, bytes),
            };
            if let Err(e) = moved {
                self.violations.push(format!("IOMMU fault: {e}"));
            }
            self.transfers += 1;
        }
        self.dma[3] &= !regs::dma_command::START;
        if command & regs::dma_command::RAISE_INTERRUPT != 0 {
            self.irq_status |= regs::interrupt::DMA;
        }
    }
}

impl RegisterModel for EduModel {
    fn read(&mut self, offset: usize, size: usize) -> u64 {
        if !width_ok(offset, size) {
            self.violations
                .push(format!("{size}-byte read at {offset:#x}"));
            return u64::MAX;
        }
        match offset {
            regs::IDENTIFICATION => self.id as u64,
            regs::LIVENESS_CHECK => self.liveness as u64,
            regs::FACTORIAL_COMPUTATION => self.factorial as u64,
            regs::STATUS => self.read_status() as u64,
            regs::INTERRUPT_STATUS => self.irq_status as u64,
            regs::DMA_COMMAND => self.read_command(),
            o @ (regs::DMA_SOURCE_ADDRESS
            | regs::DMA_DESTINATION_ADDRESS
            | regs::DMA_TRANSFER_COUNT) => self.dma[(o - 0x80) / 8],
            _ => u64::MAX,
        }
    }

    fn write(&mut self, offset: usize, size: usize, value: u64) {
        if !width_ok(offset, size) {
            self.violations
                .push(format!("{size}-byte write at {offset:#x}"));
            return;
        }
        let running = self.dma[3] & regs::dma_command::START != 0;
        match offset {
            regs::LIVENESS_CHECK if self.fault == Fault::NoInversion => {
                self.liveness = value as u32
            }
            regs::LIVENESS_CHECK => self.liveness = !value as u32,
            regs::FACTORIAL_COMPUTATION if self.status & regs::status::COMPUTING == 0 => {
                self.factorial = value as u32;
                self.status |= regs::status::COMPUTING;
                self.fact_left = self.busy_reads;
                self.factorials += 1;
            }
            regs::STATUS => {
                let irq = regs::status::RAISE_INTERRUPT;
                self.status = (self.status & !irq) | (value as u32 & irq);
            }
            regs::INTERRUPT_RAISE => self.irq_status |= value as u32,
            regs::INTERRUPT_ACKNOWLEDGE => self.irq_status &= !value as u32,
            o @ (regs::DMA_SOURCE_ADDRESS
            | regs::DMA_DESTINATION_ADDRESS
            | regs::DMA_TRANSFER_COUNT)
                if !running =>
            {
                self.dma[(o - 0x80) / 8] = value
            }
            regs::DMA_COMMAND if !running && value & regs::dma_command::START != 0 => {
                self.dma[3] = value;
                self.dma_left = self.busy_reads;
            }
            _ => {}
        }
    }
}

/// "MMIO area spec": 32-bit accesses below 0x80, 32 or 64 bits from there.
fn width_ok(offset: usize, size: usize) -> bool {
    size == 4 || (offset >= 0x80 && size == 8)
}

/// A model edu with PCI IDs `ids` in a container of models.
struct Rig {
    model: Arc<Mutex<EduModel>>,
    config: Arc<Mutex<RegisterFile>>,
    device: Option<Device>,
}

fn rig_with(ids: (u16, u16), setup: impl FnOnce(&mut EduModel)) -> Rig {
    let container = Container::unbacked();
    let mut file = RegisterFile::new(256);
    file.set(0, 2, ids.0 as u64);
    file.set(2, 2, ids.1 as u64);
    let config = Arc::new(Mutex::new(file));
    let mut model = EduModel::new(&container, &config);
    setup(&mut model);
    let model = Arc::new(Mutex::new(model));
    let addr = "0000:00:06.0".parse().unwrap();
    let bars = vec![(0, regs::BAR0_LEN, model.clone() as _)];
    let device = Device::from_models(&container, addr, (256, config.clone()), bars).unwrap();
    Rig {
        model,
        config,
        device: Some(device),
    }
}

fn rig(setup: impl FnOnce(&mut EduModel)) -> (Rig, Edu) {
    let mut rig = rig_with((regs::VENDOR_ID, regs::DEVICE_ID), setup);
    let edu = Edu::new(rig.device.take().unwrap()).expect("bring-up on the model");
    (rig, edu)
}

impl Rig {
    fn model(&self) -> MutexGuard<'_, EduModel> {
        self.model.lock().unwrap()
    }
    fn bus_master(&self) -> bool {
        self.config.lock().unwrap().get(COMMAND, 2) & BUS_MASTER != 0
    }
    fn assert_clean(&self) {
        assert_eq!(self.model().violations, Vec::<String>::new());
    }
}

/// The demo's pattern: byte i is (i * 31 + i / 256) mod 256.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 256) as u8).collect()
}

#[test]
fn identification_and_liveness_come_from_the_device() {
    let (rig, edu) = rig(|_| {});
    assert_eq!(edu.version(), (1, 0));
    for v in [0, 1, 0x1234_5678, u32::MAX] {
        edu.check_liveness(v).unwrap();
        assert_eq!(
            rig.model().liveness,
            !v,
            "the model inverted what the driver wrote"
        );
    }
    assert!(rig.bus_master(), "bus mastering on after bring-up");
    rig.assert_clean();
}

#[test]
fn factorials_are_the_devices_and_correct() {
    let (rig, mut edu) = rig(|_| {});
    for n in 0..=12u32 {
        let want: u64 = (1..=n as u64).product();
        assert_eq!(edu.factorial(n).unwrap() as u64, want, "{n}!");
    }
    assert_eq!(rig.model().factorials, 13, "each one computed by the model");
    rig.assert_clean();
}

#[test]
fn a_factorial_that_does_not_fit_is_refused_before_the_device_sees_it() {
    let (rig, mut edu) = rig(|_| {});
    let e = edu.factorial(13).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    assert!(e.to_string().contains("at most 12"), "{e}");
    assert_eq!(rig.model().factorials, 0);
}

#[test]
fn a_wrong_factorial_is_an_error() {
    let (_rig, mut edu) = rig(|m| m.fault = Fault::WrongFactorial);
    let e = edu.factorial(5).unwrap_err();
    assert!(e.to_string().contains("reads 121, not 120"), "{e}");
}

#[test]
fn a_liveness_register_that_does_not_invert_is_an_error() {
    let (_rig, edu) = rig(|m| m.fault = Fault::NoInversion);
    let e = edu.check_liveness(0x55).unwrap_err();
    assert!(matches!(e, Error::Device(..)), "{e}");
}

#[test]
fn a_hostile_identification_is_refused_and_bus_mastering_is_off_again() {
    for (id, says) in [
        (0xffff_ffff, "reads 0xffffffff"),
        (0x0000_0000, "not 0xRRrr00ed"),
        (0x0100_00ee, "not 0xRRrr00ed"),
        (0x0100_12ed, "not 0xRRrr00ed"),
        (0x0201_00ed, "version 2.1"),
    ] {
        let mut rig = rig_with((regs::VENDOR_ID, regs::DEVICE_ID), |m| m.id = id);
        let e = Edu::new(rig.device.take().unwrap()).unwrap_err();
        assert!(
            matches!(e, Error::Device(..)) && e.to_string().contains(says),
            "{id:#x}: {e}"
        );
        assert!(
            !rig.bus_master(),
            "{id:#x}: the failed bring-up turned bus mastering off"
        );
    }
}

#[test]
fn another_device_is_refused_by_its_ids() {
    let mut rig = rig_with((0x8086, 0x100e), |_| {});
    let e = Edu::new(rig.device.take().unwrap()).unwrap_err();
    assert!(matches!(e, Error::NotEdu(_, 0x8086, 0x100e)), "{e}");
    assert!(e.to_string().contains("not QEMU's edu (1234:11e8)"), "{e}");
    assert!(!rig.bus_master(), "refused before anything was turned on");
}

#[test]
fn dma_round_trip_crosses_the_device_buffer() {
    let (rig, mut edu) = rig(|_| {});
    let len = regs::BUFFER_USABLE;
    let (out, mut back) = (edu.dma_memory(len).unwrap(), edu.dma_memory(len).unwrap());
    out.write_bytes(0, &pattern(len));
    edu.copy_to_device(&out, 0, len).unwrap();
    assert_eq!(
        rig.model().buffer[..len],
        pattern(len),
        "the device holds the pattern"
    );
    edu.copy_from_device(0, &mut back, len).unwrap();
    let mut got = vec![0; len];
    back.read_bytes(0, &mut got);
    assert_eq!(
        got,
        pattern(len),
        "the other buffer got it back from the device"
    );

    // A part, at an offset into the device buffer.
    out.write_bytes(0, b"edu at 1000");
    edu.copy_to_device(&out, 1000, 11).unwrap();
    assert_eq!(&rig.model().buffer[1000..1011], b"edu at 1000");
    edu.copy_from_device(1000, &mut back, 11).unwrap();
    back.read_bytes(0, &mut got[..11]);
    assert_eq!(&got[..11], b"edu at 1000");
    assert_eq!(rig.model().transfers, 4);
    rig.assert_clean();
}

#[test]
fn memory_past_the_dma_address_limit_is_refused() {
    let (rig, mut edu) = rig(|m| m.dma_mask = (1 << 20) - 1);
    edu.set_dma_address_bits(20);
    // The container's IOVAs start at 1 MiB: nothing is free below 2^20.
    let e = edu.dma_memory(4096).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Vfio(vfio_core::Error::DmaLimitExhausted {
                limit: 0xf_ffff,
                ..
            })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("20 address bits"), "{e}");
    // Memory from elsewhere is checked on every transfer, too.
    let mut high = DmaMemory::new(edu.container(), 4096, Backing::Pages).unwrap();
    assert!(high.iova() >= 1 << 20);
    let e = edu.copy_to_device(&high, 0, 16).unwrap_err();
    assert!(
        e.to_string()
            .contains("above the device's DMA limit 0xfffff"),
        "{e}"
    );
    let e = edu.copy_from_device(0, &mut high, 16).unwrap_err();
    assert!(
        e.to_string()
            .contains("above the device's DMA limit 0xfffff"),
        "{e}"
    );
    assert_eq!(
        rig.model().transfers,
        0,
        "the device was never told an address it would cut"
    );
    rig.assert_clean();
}

#[test]
fn memory_from_dma_memory_lies_below_256_mib() {
    let (_rig, edu) = rig(|_| {});
    let memory = edu.dma_memory(4096).unwrap();
    assert!(memory.iova() + 4096 <= 1 << 28, "{:#x}", memory.iova());
}

#[test]
fn transfers_outside_what_qemu_7_2_lets_them_reach_are_refused() {
    let (rig, mut edu) = rig(|_| {});
    let memory = edu.dma_memory(8192).unwrap();
    for (at, len) in [(0, 0), (0, 4096), (4000, 96), (4095, 1), (usize::MAX, 2)] {
        let e = edu.copy_to_device(&memory, at, len).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{at}+{len}: {e}");
    }
    edu.copy_to_device(&memory, 4094, 1).unwrap();
    assert_eq!(rig.model().transfers, 1);
    rig.assert_clean();
}

#[test]
fn a_device_that_never_finishes_times_out_and_its_dma_is_stopped() {
    let (rig, mut edu) = rig(|m| m.fault = Fault::NeverFinishes);
    edu.set_timeout(Duration::from_millis(30));
    let start = Instant::now();
    let e = edu.factorial(4).unwrap_err();
    assert!(matches!(e, Error::Timeout(..)), "{e}");
    assert!(e.to_string().contains("a factorial did not finish"), "{e}");

    let mut memory = edu.dma_memory(4096).unwrap();
    let e = edu.copy_from_device(0, &mut memory, 64).unwrap_err();
    assert!(matches!(e, Error::Timeout(..)), "{e}");
    assert!(
        !rig.bus_master(),
        "bus mastering is off before the memory goes back"
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let e = edu.copy_to_device(&memory, 0, 64).unwrap_err();
    assert!(e.to_string().contains("open the device again"), "{e}");
    assert_eq!(rig.model().transfers, 0);
}

#[test]
fn dropping_the_driver_turns_bus_mastering_off() {
    let (rig, edu) = rig(|_| {});
    assert!(rig.bus_master());
    drop(edu);
    assert!(!rig.bus_master());
}

#[test]
fn interrupts_need_a_device_that_has_them() {
    let (_rig, mut edu) = rig(|_| {});
    let e = edu.raise_interrupt(1).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    let e = edu.enable_interrupts(IrqKind::Msi).unwrap_err();
    assert!(e.to_string().contains("has no MSI interrupts"), "{e}");
}
