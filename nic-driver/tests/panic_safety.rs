//! Issue 29: nothing that can panic (a logger, the driver's stop step) runs
//! between "the NIC may still write this memory" and "it is stopped or the
//! memory leaked". The e1000 and virtio-net drivers are dropped on models
//! that cannot be stopped through their registers, in a process whose
//! logger panics on every warning and error: the panic must come only once
//! bus mastering is off (checked from the logger, at the moment it is
//! called), and afterwards the buffers that went back to the pool are
//! never written by the device. Where bus mastering cannot be turned off
//! either, the memory is leaked before anything is logged; a child process
//! runs that case, because the leaked regions' own drops log too and a
//! second panic while unwinding aborts the process.
//!
//! Not in a Miri lane (xtask): a wedged virtio-net waits out its 1 s reset
//! timeout, and the leak case re-executes the test binary.

use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};

use nic_driver::e1000::E1000;
use nic_driver::virtio::VirtioNet;
use nic_driver::{Config, NetDevice};
use vfio_core::dma::{Buffer, BufferPool};
use vfio_core::vfio::Container;
use vfio_models::e1000::{E1000Config, E1000Model};
use vfio_models::panicking_logger::{install, logged, panicked, set_hook};
use vfio_models::virtio_net::{VirtioNetConfig, VirtioNetModel};
use vfio_models::Wedge;

// ---- the NICs ----

/// A model's lock; its mutex is poisoned when a `Wedge::Panics` access
/// panicked inside it.
fn lock<T>(m: &Arc<Mutex<T>>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the tests need of either model.
trait Nic: Send + 'static {
    fn deliver(&mut self, frame: Vec<u8>);
    fn queued(&self) -> usize;
    fn dma_faults(&self) -> u64;
    fn bus_master(&self) -> bool;
    fn set_bus_master_stuck(&mut self, on: bool);
    fn set_wedge(&mut self, wedge: Wedge);
    fn mac(&self) -> [u8; 6];
}

macro_rules! nic {
    ($model:ty) => {
        impl Nic for $model {
            fn deliver(&mut self, frame: Vec<u8>) {
                <$model>::deliver(self, frame)
            }
            fn queued(&self) -> usize {
                <$model>::queued(self)
            }
            fn dma_faults(&self) -> u64 {
                <$model>::dma_faults(self)
            }
            fn bus_master(&self) -> bool {
                <$model>::bus_master(self)
            }
            fn set_bus_master_stuck(&mut self, on: bool) {
                <$model>::set_bus_master_stuck(self, on)
            }
            fn set_wedge(&mut self, wedge: Wedge) {
                self.wedge = wedge;
            }
            fn mac(&self) -> [u8; 6] {
                self.config.mac
            }
        }
    };
}
nic!(E1000Model);
nic!(VirtioNetModel);

fn small() -> Config {
    Config::default().rx_ring(8).tx_ring(8).spare_buffers(16)
}

fn e1000() -> (Arc<Mutex<E1000Model>>, Box<dyn NetDevice>) {
    let (model, device) = E1000Model::new(&Container::unbacked(), E1000Config::default());
    let nic = E1000::new(device, small()).expect("bring-up on the model");
    (model, Box::new(nic))
}

fn virtio() -> (Arc<Mutex<VirtioNetModel>>, Box<dyn NetDevice>) {
    let (model, device) = VirtioNetModel::new(&Container::unbacked(), VirtioNetConfig::default());
    let nic = VirtioNet::new(device, small()).expect("bring-up on the model");
    (model, Box::new(nic))
}

/// A frame to `mac` the NIC takes.
fn frame(mac: [u8; 6]) -> Vec<u8> {
    let mut f = mac.to_vec();
    f.extend([0x02, 0, 0, 0, 0, 1]);
    f.extend(0x88b5u16.to_be_bytes());
    f.resize(200, 0x5a);
    f
}

/// Drops `nic` while its model is wedged as `wedge`, with the panicking
/// logger; then checks the ordering and that no buffer that came back is
/// written by the device.
fn drop_panics_only_after_bus_mastering_is_off<M: Nic>(
    model: Arc<Mutex<M>>,
    nic: Box<dyn NetDevice>,
    wedge: Wedge,
) {
    install();
    let pool: Arc<BufferPool> = Arc::clone(nic.pool());
    let in_rings = pool.capacity() - nic.free_buffers();
    assert!(in_rings > 0, "the receive ring holds buffers");
    let m = Arc::clone(&model);
    set_hook(move || format!("bus master {}", lock(&m).bus_master()));
    lock(&model).set_wedge(wedge);

    assert!(panicked(|| drop(nic)), "the warning's logger panicked");
    let logged = logged();
    assert_eq!(logged.len(), 1, "{logged:?}");
    let (level, message, state) = &logged[0];
    assert_eq!(*level, log::Level::Warn);
    assert!(message.contains("bus mastering is off"), "{message}");
    assert_eq!(
        state, "bus master false",
        "bus mastering was off when the logger ran"
    );
    assert!(!lock(&model).bus_master());

    // Bus mastering off: the rings' buffers went back to the pool.
    assert_eq!(pool.free_count(), pool.capacity());
    let mut bufs: Vec<Buffer> = (0..pool.capacity()).map_while(|_| pool.alloc()).collect();
    assert_eq!(bufs.len(), pool.capacity());
    for b in &mut bufs {
        b.as_mut_slice().fill(0xee);
    }
    // The receiver is still on (nothing stopped it through its registers):
    // a frame arrives, and the device, without bus mastering, writes nothing.
    let mut m = lock(&model);
    m.set_wedge(Wedge::None);
    let mac = m.mac();
    m.deliver(frame(mac));
    assert_eq!(m.queued(), 1, "the frame waits in the device");
    assert_eq!(m.dma_faults(), 0, "the device touched no memory");
    drop(m);
    assert!(bufs.iter().all(|b| b.as_slice().iter().all(|&x| x == 0xee)));
}

#[test]
fn e1000_that_ignores_its_registers_loses_bus_mastering_before_anything_is_logged() {
    let (model, nic) = e1000();
    drop_panics_only_after_bus_mastering_is_off(model, nic, Wedge::IgnoresWrites);
}

#[test]
fn e1000_whose_stop_step_panics_loses_bus_mastering_before_anything_is_logged() {
    let (model, nic) = e1000();
    drop_panics_only_after_bus_mastering_is_off(model, nic, Wedge::Panics);
}

#[test]
fn virtio_that_ignores_its_registers_loses_bus_mastering_before_anything_is_logged() {
    let (model, nic) = virtio();
    drop_panics_only_after_bus_mastering_is_off(model, nic, Wedge::IgnoresWrites);
}

#[test]
fn virtio_whose_stop_step_panics_loses_bus_mastering_before_anything_is_logged() {
    let (model, nic) = virtio();
    drop_panics_only_after_bus_mastering_is_off(model, nic, Wedge::Panics);
}

// ---- bus mastering stuck: the leak path, in a child process ----

/// The environment variable that makes a test run its scenario as the child.
const CHILD: &str = "NIC_PANIC_SAFETY_CHILD";

/// Re-runs the test `name` in a child process with [`CHILD`] set; returns
/// its exit status and stderr.
fn run_child(name: &str) -> (std::process::ExitStatus, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("run the test binary again");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The child: drops `nic` on a model that neither stops nor lets go of bus
/// mastering. The logger reports, when it is first called, how many of the
/// pool's buffers are free and how many regions were leaked.
fn leak_child<M: Nic>(model: Arc<Mutex<M>>, nic: Box<dyn NetDevice>) {
    install();
    let pool: Arc<BufferPool> = Arc::clone(nic.pool());
    let free = nic.free_buffers();
    let leaked = vfio_core::dma::leaked();
    let m = Arc::clone(&model);
    let p = Arc::clone(&pool);
    set_hook(move || {
        format!(
            "bus master {}, free {} of {free} before, leaked {}",
            lock(&m).bus_master(),
            p.free_count(),
            vfio_core::dma::leaked() - leaked
        )
    });
    {
        let mut m = lock(&model);
        m.set_wedge(Wedge::IgnoresWrites);
        m.set_bus_master_stuck(true);
    }
    let _ = panicked(|| drop(nic));
    // Reached only if nothing aborted: the memory must still be out of use.
    eprintln!(
        "child: after the drop, free {} of {free} before",
        pool.free_count()
    );
}

/// The parent: the child's logger was first called with the rings'
/// buffers still out of the pool and regions counted as leaked; then the
/// leaked regions' drops logged again while unwinding, and the process
/// aborted (a panic in a destructor during unwinding) rather than free
/// anything.
fn leak_parent(name: &str) {
    let (status, stderr) = run_child(name);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(6), "SIGABRT; stderr:\n{stderr}");
    let first = stderr
        .lines()
        .find(|l| l.starts_with("logger: "))
        .unwrap_or_else(|| panic!("the logger ran; stderr:\n{stderr}"));
    assert!(first.starts_with("logger: ERROR"), "{first}");
    assert!(first.contains("never reused"), "{first}");
    let state = first.rsplit_once('[').expect("the hook's report").1;
    let numbers: Vec<usize> = state
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let [free_now, free_before, leaked] = numbers[..] else {
        panic!("{state}");
    };
    assert!(state.starts_with("bus master true"), "{state}");
    assert_eq!(
        free_now, free_before,
        "no ring buffer went back to the pool: {state}"
    );
    assert!(
        leaked >= 3,
        "the receive buffers and the rings leaked: {state}"
    );
    assert!(
        stderr.contains("panic in a destructor during cleanup"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("child: after the drop"),
        "the process did not go on: {stderr}"
    );
}

#[test]
fn e1000_that_keeps_bus_mastering_leaks_its_memory_before_anything_is_logged() {
    if std::env::var_os(CHILD).is_some() {
        let (model, nic) = e1000();
        return leak_child(model, nic);
    }
    leak_parent("e1000_that_keeps_bus_mastering_leaks_its_memory_before_anything_is_logged");
}

#[test]
fn virtio_that_keeps_bus_mastering_leaks_its_memory_before_anything_is_logged() {
    if std::env::var_os(CHILD).is_some() {
        let (model, nic) = virtio();
        return leak_child(model, nic);
    }
    leak_parent("virtio_that_keeps_bus_mastering_leaks_its_memory_before_anything_is_logged");
}
