//! SGLs (base spec 4.1.2) against PRPs on the software controller: which
//! one the driver chose is read from the commands the model received (their
//! PSDT), and every byte read is compared with the model's namespace.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nvme_driver::{Config, Controller, DataPointer, Error, IoQueuePair};
use vfio_core::dma::{Buffer, BufferPool};
use vfio_core::vfio::Container;
use vfio_models::nvme::{Namespace, NvmeConfig, NvmeModel};

type Model = Arc<Mutex<NvmeModel>>;

const BLOCKS: usize = 1024;

fn lock(m: &Model) -> MutexGuard<'_, NvmeModel> {
    m.lock().unwrap()
}

/// A namespace of distinct bytes: byte `i` is a hash of `i`.
fn patterned() -> Namespace {
    let mut ns = Namespace::zeroed(1, 512, BLOCKS);
    for (i, b) in ns.data.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
    }
    ns
}

fn up(offer_sgl: bool, choice: DataPointer) -> (Arc<Container>, Model, Result<Controller, Error>) {
    let container = Container::unbacked();
    let (model, device) = NvmeModel::new(
        &container,
        NvmeConfig {
            namespaces: vec![patterned()],
            sgl: offer_sgl,
            ..NvmeConfig::default()
        },
    );
    let nvme = Controller::with_config(device, Config::new().data_pointer(choice));
    (container, model, nvme)
}

fn queue(nvme: &mut Controller) -> IoQueuePair {
    let mut qp = nvme.create_io_queue_pair::<Buffer>(16).unwrap();
    qp.set_timeout(Duration::from_millis(200));
    qp
}

/// (LBA, blocks, buffer offset) triples spread over the namespace: one
/// block to 64 KiB (a PRP list's worth), at page, block and dword offsets.
fn scattered() -> Vec<(u64, usize, usize)> {
    let mut x: u64 = 0x9e37_79b9;
    (0..40)
        .map(|i| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            // Every third one small: at most 8 KiB.
            let most = if i % 3 == 0 { 16 } else { 128 };
            let blocks = 1 + (x >> 33) as usize % most;
            let lba = (x >> 7) % (BLOCKS - blocks) as u64;
            let offset = [0, 512, 4, 3584][i % 4];
            (lba, blocks, offset)
        })
        .collect()
}

/// Reads every scattered range and checks it against the namespace.
/// Returns the PRP and SGL commands the model saw while doing so.
fn read_scattered(model: &Model, qp: &mut IoQueuePair, pool: &Arc<BufferPool>) -> (u64, u64) {
    let before = {
        let m = lock(model);
        (m.prp_commands, m.sgl_commands)
    };
    for (lba, blocks, offset) in scattered() {
        let mut buf = pool.alloc().unwrap();
        let bytes = blocks * 512;
        qp.read(1, lba, &mut buf, offset, bytes).unwrap();
        let m = lock(model);
        let at = lba as usize * 512;
        assert!(
            buf.as_slice()[offset..offset + bytes] == m.namespace(1)[at..at + bytes],
            "{blocks} blocks at LBA {lba} into offset {offset}"
        );
    }
    let m = lock(model);
    (m.prp_commands - before.0, m.sgl_commands - before.1)
}

fn buffers(container: &Arc<Container>) -> Arc<BufferPool> {
    BufferPool::new(container, 128 * 1024, 4).unwrap()
}

/// How many of the scattered reads span more than two pages (a PRP list's
/// worth): those `Auto` sends as SGLs.
fn beyond_two_pages() -> u64 {
    let n = scattered()
        .iter()
        .filter(|(_, blocks, offset)| (offset % 4096 + blocks * 512).div_ceil(4096) > 2)
        .count() as u64;
    assert!(n > 0 && n < 40, "the ranges take both paths: {n}");
    n
}

#[test]
fn every_choice_reads_the_same_bytes_and_sends_what_it_says() {
    for (choice, want) in [
        (DataPointer::Sgl, (0, 40)),
        (DataPointer::Prp, (40, 0)),
        (
            DataPointer::Auto,
            (40 - beyond_two_pages(), beyond_two_pages()),
        ),
    ] {
        let (container, model, nvme) = up(true, choice);
        let mut nvme = nvme.unwrap();
        assert_eq!(nvme.data_pointer(), choice);
        let mut qp = queue(&mut nvme);
        assert_eq!(qp.data_pointer(), choice);
        let pool = buffers(&container);
        let got = read_scattered(&model, &mut qp, &pool);
        assert_eq!(got, want, "{choice:?}: (PRP, SGL) commands");
    }
}

#[test]
fn a_controller_without_sgls_gets_prps_or_a_clear_error() {
    let (container, model, nvme) = up(false, DataPointer::Auto);
    let mut nvme = nvme.unwrap();
    assert_eq!(nvme.data_pointer(), DataPointer::Prp);
    let mut qp = queue(&mut nvme);
    let pool = buffers(&container);
    assert_eq!(read_scattered(&model, &mut qp, &pool), (40, 0));

    let (_c, model, nvme) = up(false, DataPointer::Sgl);
    match nvme {
        Err(Error::InvalidArgument(what)) => {
            assert!(what.contains("SGL") && what.contains("prp"), "{what}")
        }
        other => panic!("forced SGLs without support: {other:?}"),
    }
    assert_eq!(lock(&model).sgl_commands, 0);
}

#[test]
fn sgl_writes_land_as_written() {
    let (container, model, nvme) = up(true, DataPointer::Sgl);
    let mut nvme = nvme.unwrap();
    let mut qp = queue(&mut nvme);
    let pool = buffers(&container);
    let mut buf = pool.alloc().unwrap();
    for (i, b) in buf.as_mut_slice().iter_mut().enumerate() {
        *b = (i % 253) as u8;
    }
    // 9 blocks from offset 4 (crossing three pages): one data block.
    qp.write(1, 100, &buf, 4, 9 * 512).unwrap();
    let m = lock(&model);
    assert_eq!(
        &m.namespace(1)[100 * 512..109 * 512],
        &buf.as_slice()[4..4 + 9 * 512]
    );
    assert!(m.sgl_commands >= 1);
}

#[test]
fn sgls_without_an_alignment_rule_take_odd_addresses_and_prps_refuse_them() {
    for choice in [DataPointer::Sgl, DataPointer::Auto] {
        let (container, model, nvme) = up(true, choice);
        let mut nvme = nvme.unwrap();
        let mut qp = queue(&mut nvme);
        let pool = buffers(&container);
        let mut buf = pool.alloc().unwrap();
        qp.read(1, 7, &mut buf, 1, 1024).unwrap();
        let m = lock(&model);
        assert_eq!(&buf.as_slice()[1..1025], &m.namespace(1)[7 * 512..9 * 512]);
        assert_eq!(m.sgl_commands, 1, "{choice:?}: an odd address needs an SGL");
    }

    let (container, model, nvme) = up(true, DataPointer::Prp);
    let mut nvme = nvme.unwrap();
    let mut qp = queue(&mut nvme);
    let pool = buffers(&container);
    let mut buf = pool.alloc().unwrap();
    let before = lock(&model).prp_commands;
    match qp.read(1, 7, &mut buf, 1, 1024) {
        Err(Error::InvalidArgument(what)) => assert!(what.contains("aligned"), "{what}"),
        other => panic!("odd address with PRPs: {other:?}"),
    }
    assert_eq!(lock(&model).prp_commands, before, "nothing was sent");
}
