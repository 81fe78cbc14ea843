//! Shadow doorbells (Doorbell Buffer Config, base spec 5.8) on the software
//! controller: the model takes I/O SQ tails only from the shadow page once
//! it was given one, so a driver that skipped the shadow write would see no
//! command run; it sets each event index to the tail it took, as QEMU does.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nvme_driver::{Config, Controller, IoQueuePair};
use vfio_core::dma::{Buffer, BufferPool};
use vfio_core::vfio::Container;
use vfio_models::nvme::{Namespace, NvmeConfig, NvmeModel};

type Model = Arc<Mutex<NvmeModel>>;

fn lock(m: &Model) -> MutexGuard<'_, NvmeModel> {
    m.lock().unwrap()
}

/// A namespace whose block `b` is filled with `b % 251`.
fn numbered(blocks: usize) -> Namespace {
    let mut ns = Namespace::zeroed(1, 512, blocks);
    for (b, block) in ns.data.chunks_mut(512).enumerate() {
        block.fill((b % 251) as u8);
    }
    ns
}

fn up(offer: bool, config: Config) -> (Arc<Container>, Model, Controller) {
    let container = Container::unbacked();
    let (model, device) = NvmeModel::new(
        &container,
        NvmeConfig {
            namespaces: vec![numbered(1024)],
            dbbuf: offer,
            ..NvmeConfig::default()
        },
    );
    let nvme = Controller::with_config(device, config).expect("bring-up on the model");
    (container, model, nvme)
}

/// `rounds` batches of four one-block reads (LBAs walking the namespace),
/// each batch one doorbell, polled back; every block's bytes checked.
fn batches(qp: &mut IoQueuePair<Buffer>, pool: &Arc<BufferPool>, rounds: u64) {
    for round in 0..rounds {
        for i in 0..4 {
            let lba = (round * 4 + i) % 1024;
            qp.submit_read(1, lba, pool.alloc().unwrap(), 0, 512, lba)
                .unwrap();
        }
        qp.ring();
        let mut back = Vec::new();
        while back.len() < 4 {
            qp.poll(4, |c| back.push(c)).unwrap();
        }
        for c in back {
            c.result.unwrap();
            let buf = c.buf.unwrap();
            let want = (c.tag % 251) as u8;
            assert!(
                buf.as_slice()[..512].iter().all(|&b| b == want),
                "LBA {}",
                c.tag
            );
        }
    }
}

fn queue(container: &Arc<Container>, nvme: &mut Controller) -> (Arc<BufferPool>, IoQueuePair) {
    let pool = BufferPool::new(container, 4096, 8).unwrap();
    let mut qp = nvme.create_io_queue_pair::<Buffer>(16).unwrap();
    // The model completes at the doorbell; a missed one fails fast.
    qp.set_timeout(Duration::from_millis(200));
    (pool, qp)
}

#[test]
fn shadow_doorbells_carry_every_tail_and_spare_the_cq_head_writes() {
    let (container, model, mut nvme) = up(true, Config::new());
    assert!(nvme.uses_shadow_doorbells());
    let (pool, mut qp) = queue(&container, &mut nvme);
    assert!(qp.uses_shadow_doorbells());
    batches(&mut qp, &pool, 40);
    let m = lock(&model);
    assert_eq!(m.dbbuf_configs, 1);
    assert!(
        m.shadow_tails >= 40,
        "{} tails from the shadow",
        m.shadow_tails
    );
    // The model sets the event index to each tail it took, so each batch
    // finds it waiting: one MMIO write per batch.
    assert_eq!(m.mmio_sq_doorbells, 40);
    // It never sets a CQ event index (0): only a head passing 0 again, once
    // per lap of the 16-entry ring (160 completions), is written to MMIO.
    assert!(
        m.mmio_cq_doorbells <= 10,
        "{} CQ head writes",
        m.mmio_cq_doorbells
    );
    assert!(
        m.mmio_cq_doorbells >= 9,
        "{} CQ head writes",
        m.mmio_cq_doorbells
    );
}

#[test]
fn with_shadow_doorbells_off_every_doorbell_is_an_mmio_write() {
    let (container, model, mut nvme) = up(true, Config::new().shadow_doorbells(false));
    assert!(!nvme.uses_shadow_doorbells());
    let (pool, mut qp) = queue(&container, &mut nvme);
    assert!(!qp.uses_shadow_doorbells());
    batches(&mut qp, &pool, 40);
    let m = lock(&model);
    assert_eq!((m.dbbuf_configs, m.shadow_tails), (0, 0));
    assert_eq!((m.mmio_sq_doorbells, m.mmio_cq_doorbells), (40, 40));
}

#[test]
fn a_controller_without_doorbell_buffer_config_is_used_with_mmio_doorbells() {
    let (container, model, mut nvme) = up(false, Config::new());
    assert!(!nvme.uses_shadow_doorbells());
    let (pool, mut qp) = queue(&container, &mut nvme);
    batches(&mut qp, &pool, 5);
    let m = lock(&model);
    assert_eq!((m.dbbuf_configs, m.shadow_tails), (0, 0));
    assert_eq!((m.mmio_sq_doorbells, m.mmio_cq_doorbells), (5, 5));
}

#[test]
fn after_a_reset_the_controller_is_given_the_shadow_pages_again() {
    let (container, model, mut nvme) = up(true, Config::new());
    let (pool, mut qp) = queue(&container, &mut nvme);
    batches(&mut qp, &pool, 3);
    nvme.reset().unwrap();
    nvme.recreate_io_queue_pair(&mut qp, |_| ()).unwrap();
    let before = lock(&model).shadow_tails;
    // 5 batches after the reset: the tails start again from 0.
    batches(&mut qp, &pool, 5);
    let m = lock(&model);
    assert_eq!(m.dbbuf_configs, 2);
    assert!(m.shadow_tails >= before + 5);
    assert!(nvme.uses_shadow_doorbells() && qp.uses_shadow_doorbells());
}
