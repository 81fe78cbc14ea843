//! Issue 29: nothing that can panic (a logger, the driver's stop step) runs
//! between "the controller may still write this memory" and "it is stopped
//! or the memory leaked". In this process the logger panics on every
//! warning and error; the paths that must give memory back with commands
//! still held by the model (dropping a queue pair whose deletion never
//! completes, a blocking read that times out) log a warning, and that
//! panic must come only after the controller was stopped: checked from the
//! logger at the moment it is called, and afterwards by filling the memory
//! that came back and letting the model run the commands it held.
//!
//! Not in a Miri lane (xtask): the admin and I/O timeouts are waited out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nvme_driver::{Controller, Error, IoQueuePair};
use vfio_core::dma::{Backing, Buffer, BufferPool, DmaMemory};
use vfio_core::mmio::{RegisterFile, RegisterModel, SharedModel};
use vfio_core::vfio::{Container, Device};
use vfio_models::nvme::{NvmeConfig, NvmeModel};
use vfio_models::panicking_logger::{install, panicked, set_hook, the_warning};

// ---- the controller ----

type Model = Arc<Mutex<NvmeModel>>;

fn lock(m: &Model) -> MutexGuard<'_, NvmeModel> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn all(bytes: &[u8], value: u8) -> bool {
    bytes.iter().all(|&b| b == value)
}

fn standard() -> (Arc<Container>, Model, Controller) {
    let container = Container::unbacked();
    let (model, device) = NvmeModel::new(&container, NvmeConfig::default());
    let nvme = Controller::new(device).expect("bring-up on the model");
    (container, model, nvme)
}

/// A pool of `n` buffers and a queue pair with `n` one-block reads into
/// them, held by the model.
fn held_reads(
    container: &Arc<Container>,
    model: &Model,
    nvme: &mut Controller,
    n: usize,
) -> (Arc<BufferPool>, IoQueuePair) {
    let pool = BufferPool::new(container, 4096, n).unwrap();
    let mut qp = nvme.create_io_queue_pair::<Buffer>(16).unwrap();
    lock(model).hold_io = true;
    for i in 0..n {
        qp.submit_read(1, i as u64, pool.alloc().unwrap(), 0, 512, i as u64)
            .unwrap();
    }
    qp.ring();
    assert_eq!(lock(model).held(), n);
    (pool, qp)
}

/// Takes every buffer of `pool`, fills it, lets the model run what it
/// still holds; true when every buffer kept the fill.
fn patterns_survive(model: &Model, pool: &Arc<BufferPool>) -> bool {
    let mut bufs: Vec<Buffer> = (0..pool.capacity()).map_while(|_| pool.alloc()).collect();
    assert_eq!(bufs.len(), pool.capacity(), "every buffer is back");
    for b in &mut bufs {
        b.as_mut_slice().fill(0xee);
    }
    lock(model).release_held();
    bufs.iter().all(|b| all(b.as_slice(), 0xee))
}

#[test]
fn dropping_a_queue_pair_whose_deletion_never_completes_panics_only_after_the_controller_stopped() {
    install();
    let (container, model, mut nvme) = standard();
    nvme.set_admin_timeout(Duration::from_millis(50));
    let (pool, qp) = held_reads(&container, &model, &mut nvme, 8);
    let m = Arc::clone(&model);
    set_hook(move || format!("disabled {} times", lock(&m).disables));
    lock(&model).ignore_delete_sq = true;

    assert!(panicked(|| drop(qp)), "the warning's logger panicked");
    let (message, state) = the_warning();
    assert!(message.contains("deleting I/O queue 1 failed"), "{message}");
    assert_eq!(state, "disabled 1 times", "stopped before the log");
    assert!(patterns_survive(&model, &pool), "a late read landed");
}

#[test]
fn a_blocking_read_that_times_out_panics_only_after_the_controller_stopped() {
    install();
    let (container, model, mut nvme) = standard();
    let mut qp = nvme.create_io_queue_pair::<DmaMemory>(16).unwrap();
    qp.set_timeout(Duration::from_millis(50));
    let mut mem = DmaMemory::new(&container, 8192, Backing::Pages).unwrap();
    let m = Arc::clone(&model);
    set_hook(move || format!("disabled {} times", lock(&m).disables));
    lock(&model).hold_io = true;

    assert!(
        panicked(|| {
            let _ = qp.read(1, 0, &mut mem, 0, 8192);
        }),
        "the warning's logger panicked"
    );
    let (message, state) = the_warning();
    assert!(message.contains("commands in flight"), "{message}");
    assert_eq!(state, "disabled 1 times", "stopped before the log");
    // The read's memory is the caller's again: nothing lands in it.
    mem.write_bytes(0, &[0x77; 8192]);
    lock(&model).release_held();
    let mut back = vec![0u8; 8192];
    mem.read_bytes(0, &mut back);
    assert!(all(&back, 0x77), "a late read landed");
    assert!(matches!(
        qp.read(1, 0, &mut mem, 0, 512),
        Err(Error::QueueGone { .. })
    ));
}

/// BAR0 of the controller model, except that a write of CC panics while
/// `armed`: the driver's stop step (disable) panics.
#[derive(Debug)]
struct PanickingDisable {
    model: Model,
    armed: Arc<AtomicBool>,
}

impl RegisterModel for PanickingDisable {
    fn read(&mut self, offset: usize, size: usize) -> u64 {
        lock(&self.model).read(offset, size)
    }
    fn write(&mut self, offset: usize, size: usize, value: u64) {
        if offset == 0x14 && self.armed.load(Ordering::Relaxed) {
            panic!("the stop step panics (a write of CC)");
        }
        lock(&self.model).write(offset, size, value)
    }
}

#[test]
fn a_stop_step_that_panics_still_ends_with_bus_mastering_off_before_the_log() {
    install();
    let container = Container::unbacked();
    let (model, _) = NvmeModel::new(&container, NvmeConfig::default());
    let armed = Arc::new(AtomicBool::new(false));
    let bar: SharedModel = Arc::new(Mutex::new(PanickingDisable {
        model: Arc::clone(&model),
        armed: Arc::clone(&armed),
    }));
    let mut space = RegisterFile::new(256);
    space.set(0, 2, 0x1b36);
    space.set(2, 2, 0x0010);
    let space = Arc::new(Mutex::new(space));
    let addr = "0000:00:04.0".parse().unwrap();
    let config: SharedModel = space.clone();
    let device = Device::from_models(&container, addr, (256, config), vec![(0, 0x4000, bar)]);
    let mut nvme = Controller::new(device.unwrap()).unwrap();
    nvme.set_admin_timeout(Duration::from_millis(50));
    let (pool, qp) = held_reads(&container, &model, &mut nvme, 4);
    let bus_master = move || space.lock().unwrap().get(4, 2) & 0x4 != 0;
    assert!(bus_master());
    let bm = bus_master.clone();
    set_hook(move || format!("bus master {}", bm()));
    lock(&model).ignore_delete_sq = true;
    armed.store(true, Ordering::Relaxed);

    let dropped = panicked(|| drop(qp));
    armed.store(false, Ordering::Relaxed);
    assert!(dropped, "a panic came out of the drop");
    let (message, state) = the_warning();
    assert!(message.contains("the stop step panicked"), "{message}");
    assert!(message.contains("bus mastering is off"), "{message}");
    assert_eq!(state, "bus master false", "off before the log");
    assert!(!bus_master());
    assert_eq!(lock(&model).disables, 0, "the step never ran to the end");
    // The model still holds the reads, but cannot start DMA: the buffers
    // are free. (The model does not look at Bus Master Enable, so its held
    // reads are not run here.)
    assert_eq!(pool.free_count(), 4);
}
