//! The NVMe driver on a software controller (vfio-models): normal I/O, and
//! what a test can only arrange with a model: commands held in flight while
//! the owner gives up, a controller that will not stop, hostile completions,
//! failing flushes, and bring-up values no sane controller reports. Runs on
//! the host in milliseconds, no root, no VFIO.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nvme_driver::{Controller, Error, IoQueuePair};
use vfio_core::dma::{Backing, Buffer, BufferPool, DmaMemory};
use vfio_core::mmio::{RegisterFile, SharedModel};
use vfio_core::vfio::{Container, Device};
use vfio_models::nvme::{Injection, Namespace, NvmeConfig, NvmeModel, Readiness};
use vfio_models::StuckCommand;

type Model = Arc<Mutex<NvmeModel>>;

fn lock(m: &Model) -> MutexGuard<'_, NvmeModel> {
    m.lock().unwrap()
}

/// A namespace of `blocks` 512-byte blocks holding a known pattern (byte
/// `i` is `i % 251`), built by doubling copies: a loop over megabytes takes
/// minutes under Miri.
fn patterned(blocks: usize) -> Namespace {
    let mut ns = Namespace::zeroed(1, 512, blocks);
    let data = &mut ns.data;
    let mut done = 251.min(data.len());
    for (i, b) in data[..done].iter_mut().enumerate() {
        *b = i as u8;
    }
    // A multiple of 251 bytes copied keeps the pattern going.
    while done < data.len() {
        let n = done.min(data.len() - done);
        data.copy_within(..n, done);
        done += n;
    }
    ns
}

/// True when every byte of `bytes` is `value` (compared a page at a time).
fn all(bytes: &[u8], value: u8) -> bool {
    let page = [value; 4096];
    bytes.chunks(page.len()).all(|c| c == &page[..c.len()])
}

fn up(config: NvmeConfig) -> (Arc<Container>, Model, Controller) {
    let container = Container::unbacked();
    let (model, device) = NvmeModel::new(&container, config);
    let nvme = Controller::new(device).expect("bring-up on the model");
    (container, model, nvme)
}

fn standard() -> (Arc<Container>, Model, Controller) {
    up(NvmeConfig {
        namespaces: vec![patterned(4096)],
        ..NvmeConfig::default()
    })
}

#[test]
fn reads_and_writes_move_the_namespace_bytes_both_ways() {
    let (container, model, mut nvme) = standard();
    assert_eq!(nvme.info().model, "vfio-models");
    let mut qp = nvme.create_io_queue_pair::<Buffer>(16).unwrap();
    let mut mem = DmaMemory::new(&container, 256 << 10, Backing::Pages).unwrap();
    // 256 KiB: two commands at the model's 128 KiB MDTS, with PRP lists.
    qp.read(1, 3, &mut mem, 0, 256 << 10).unwrap();
    let mut got = vec![0u8; 256 << 10];
    mem.read_bytes(0, &mut got);
    assert_eq!(
        got,
        lock(&model).namespace(1)[3 * 512..3 * 512 + (256 << 10)]
    );
    let reads: Vec<_> = lock(&model).io.iter().map(|r| (r.slba, r.count)).collect();
    assert_eq!(reads, [(3, 256), (259, 256)]);

    mem.write_bytes(4096, &[0xab; 4096]);
    qp.write(1, 100, &mem, 4096, 4096).unwrap();
    assert!(all(&lock(&model).namespace(1)[100 * 512..108 * 512], 0xab));

    let pool = BufferPool::new(&container, 4096, 8).unwrap();
    for tag in 0..4u64 {
        qp.submit_read(1, 100 + tag, pool.alloc().unwrap(), 0, 512, tag)
            .unwrap();
    }
    qp.ring();
    let mut back = Vec::new();
    qp.poll(16, |c| back.push(c)).unwrap();
    assert_eq!(back.len(), 4);
    for c in back {
        c.result.unwrap();
        let buf = c.buf.unwrap();
        assert!(all(&buf.as_slice()[..512], 0xab), "tag {}", c.tag);
    }
    assert_eq!(pool.free_count(), 8);
}

/// A pool of `buffers` and a queue pair with `reads` one-block reads into
/// them, which the model holds in flight.
fn held_reads(
    container: &Arc<Container>,
    model: &Model,
    nvme: &mut Controller,
    buffers: usize,
    reads: usize,
) -> (Arc<BufferPool>, IoQueuePair) {
    let pool = BufferPool::new(container, 4096, buffers).unwrap();
    let mut qp = nvme.create_io_queue_pair::<Buffer>(16).unwrap();
    lock(model).hold_io = true;
    for i in 0..reads {
        qp.submit_read(1, i as u64, pool.alloc().unwrap(), 0, 512, i as u64)
            .unwrap();
    }
    qp.ring();
    assert_eq!(lock(model).held(), reads);
    (pool, qp)
}

/// Takes every buffer of `pool` and fills it with a pattern; true when all
/// still hold it after the model ran whatever it still had.
fn patterns_survive(model: &Model, pool: &Arc<BufferPool>) -> bool {
    let mut bufs: Vec<Buffer> = (0..pool.capacity()).map_while(|_| pool.alloc()).collect();
    assert_eq!(
        bufs.len(),
        pool.capacity(),
        "every buffer is back in the pool"
    );
    for b in &mut bufs {
        b.as_mut_slice().fill(0xee);
    }
    lock(model).release_held();
    bufs.iter().all(|b| all(b.as_slice(), 0xee))
}

#[test]
fn dropping_a_queue_pair_deletes_it_before_its_buffers_go_back() {
    let (container, model, mut nvme) = standard();
    let (pool, qp) = held_reads(&container, &model, &mut nvme, 8, 8);

    assert_eq!(pool.free_count(), 0);
    drop(qp);
    assert!(
        lock(&model).io_queue_ids().is_empty(),
        "deleted at the controller"
    );
    assert_eq!(
        lock(&model).held(),
        0,
        "the deletion aborted the held reads"
    );
    assert!(patterns_survive(&model, &pool));
    assert_eq!(lock(&model).disables, 0, "deleted, not disabled");
    // The queue ID is free again.
    let qp = nvme.create_io_queue_pair::<Buffer>(16).unwrap();
    assert_eq!(qp.qid(), 1);
}

#[test]
fn a_deletion_that_never_completes_disables_the_controller_first() {
    let (container, model, mut nvme) = standard();
    nvme.set_admin_timeout(Duration::from_millis(50));
    let (pool, qp) = held_reads(&container, &model, &mut nvme, 8, 8);

    lock(&model).ignore_delete_sq = true;
    drop(qp);
    assert_eq!(lock(&model).disables, 1, "the drop disabled it");
    assert!(patterns_survive(&model, &pool));
    // The admin queue is unusable until a reset, then everything works.
    assert!(nvme.create_io_queue_pair::<Buffer>(16).is_err());
    lock(&model).ignore_delete_sq = false;
    lock(&model).hold_io = false;
    nvme.reset().unwrap();
    let mut qp = nvme.create_io_queue_pair::<DmaMemory>(16).unwrap();
    let mut mem = DmaMemory::new(&container, 4096, Backing::Pages).unwrap();
    qp.read(1, 0, &mut mem, 0, 512).unwrap();
}

/// An NVMe function's config space as plain registers: IDs, and memory space
/// and bus mastering enabled.
fn nvme_config_space() -> RegisterFile {
    let mut cfg = RegisterFile::new(256);
    cfg.set(0, 2, 0x1b36);
    cfg.set(2, 2, 0x0010);
    cfg.set(4, 2, 0x0006);
    cfg
}

/// A controller model whose device has `config` as its config space.
fn with_config(
    container: &Arc<Container>,
    config: NvmeConfig,
    space: SharedModel,
) -> (Model, Device) {
    let (model, _) = NvmeModel::new(container, config);
    let bar: SharedModel = model.clone();
    let addr = "0000:00:04.0".parse().unwrap();
    let device = Device::from_models(container, addr, (256, space), vec![(0, 0x4000, bar)]);
    (model, device.unwrap())
}

#[test]
fn a_controller_that_does_not_decode_memory_is_not_believed_and_loses_bus_mastering() {
    let container = Container::unbacked();
    let space = Arc::new(Mutex::new(nvme_config_space()));
    let (model, device) = with_config(&container, NvmeConfig::default(), space.clone());
    let mut nvme = Controller::new(device).unwrap();
    nvme.set_admin_timeout(Duration::from_millis(50));
    let (pool, qp) = held_reads(&container, &model, &mut nvme, 4, 4);
    lock(&model).ignore_delete_sq = true;
    space.lock().unwrap().set(4, 2, 0x0004); // memory decoding off: CSTS would read 0
    drop(qp);
    assert_eq!(
        space.lock().unwrap().get(4, 2) & 0x4,
        0,
        "bus mastering off"
    );
    assert_eq!(lock(&model).disables, 0, "its registers were not trusted");
    assert_eq!(
        pool.free_count(),
        4,
        "with bus mastering off the buffers are free"
    );
}

#[test]
fn a_controller_that_will_not_stop_loses_bus_mastering_and_then_its_memory_is_leaked() {
    // Will not stop, but bus mastering can be turned off: memory is reused.
    let config = NvmeConfig {
        readiness: Readiness::NeverStops,
        ..NvmeConfig::default()
    };
    let container = Container::unbacked();
    let (model, device) = NvmeModel::new(&container, config.clone());
    let mut nvme = Controller::new(device).unwrap();
    nvme.set_admin_timeout(Duration::from_millis(50));
    let (pool, qp) = held_reads(&container, &model, &mut nvme, 4, 4);

    lock(&model).ignore_delete_sq = true;
    let leaked = vfio_core::dma::leaked();
    drop(qp);
    assert_eq!(
        pool.free_count(),
        4,
        "bus mastering off: the buffers are free"
    );
    assert_eq!(vfio_core::dma::leaked(), leaked);
    drop(nvme); // its PCI function is open until then

    // Neither stops nor lets go of bus mastering: nothing is reused.
    let stuck: SharedModel = Arc::new(Mutex::new(StuckCommand(nvme_config_space())));
    let (model, device) = with_config(&container, config, stuck);
    let mut nvme = Controller::new(device).unwrap();
    nvme.set_admin_timeout(Duration::from_millis(50));
    let (pool, qp) = held_reads(&container, &model, &mut nvme, 4, 4);

    lock(&model).ignore_delete_sq = true;
    drop(qp);
    assert_eq!(pool.free_count(), 0, "the held buffers never return");
    assert!(
        vfio_core::dma::leaked() >= leaked + 4 + 3,
        "4 buffers, 2 rings, the PRP lists counted as leaked"
    );
    lock(&model).release_held();
    assert_eq!(
        lock(&model).dma_faults,
        0,
        "late writes land in leaked memory, still mapped"
    );
}

#[test]
fn a_timed_out_blocking_read_returns_only_after_the_controller_stopped() {
    let (container, model, mut nvme) = standard();
    let mut qp = nvme.create_io_queue_pair::<DmaMemory>(16).unwrap();
    qp.set_timeout(Duration::from_millis(50));
    let mut mem = DmaMemory::new(&container, 8192, Backing::Pages).unwrap();
    lock(&model).hold_io = true;
    let err = qp.read(1, 0, &mut mem, 0, 8192).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert_eq!(lock(&model).disables, 1, "disabled before returning");
    mem.write_bytes(0, &[0x77; 8192]);
    lock(&model).release_held();
    let mut back = vec![0u8; 8192];
    mem.read_bytes(0, &mut back);
    assert!(all(&back, 0x77), "nothing landed after the return");
    assert!(qp.is_failed());
    assert!(matches!(
        qp.read(1, 0, &mut mem, 0, 512),
        Err(Error::QueueGone { qid: 1 })
    ));
    lock(&model).hold_io = false;
    nvme.reset().unwrap();
    let mut aborted = 0;
    nvme.recreate_io_queue_pair(&mut qp, |c| {
        assert!(matches!(c.result, Err(Error::Aborted { .. })));
        aborted += 1;
    })
    .unwrap();
    assert_eq!(aborted, 1);
    qp.read(1, 0, &mut mem, 0, 8192).unwrap();
    mem.read_bytes(0, &mut back);
    assert_eq!(back, lock(&model).namespace(1)[..8192]);
}

#[test]
fn buffers_come_back_from_recreate_only_after_a_reset() {
    let (container, model, mut nvme) = standard();
    let (pool, mut qp) = held_reads(&container, &model, &mut nvme, 4, 4);

    let mut handed = 0;
    let err = nvme
        .recreate_io_queue_pair(&mut qp, |_| handed += 1)
        .unwrap_err();
    assert!(err.to_string().contains("reset the controller"), "{err}");
    assert_eq!(handed, 0);
    assert_eq!(qp.in_flight(), 4);
    nvme.reset().unwrap();
    let mut back = Vec::new();
    nvme.recreate_io_queue_pair(&mut qp, |c| back.push(c.buf.unwrap()))
        .unwrap();
    assert_eq!(back.len(), 4);
    drop(back);
    assert!(patterns_survive(&model, &pool));
}

#[test]
fn an_asynchronous_timeout_keeps_the_buffers_until_a_reset() {
    let (container, model, mut nvme) = standard();
    let (pool, mut qp) = held_reads(&container, &model, &mut nvme, 4, 2);
    qp.set_timeout(Duration::from_millis(20));
    std::thread::sleep(Duration::from_millis(30));
    let err = qp.poll(8, |_| panic!("nothing completed")).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert_eq!(pool.free_count(), 2, "the queue still owns the two buffers");
    let (e, buf) = qp
        .submit_read(1, 0, pool.alloc().unwrap(), 0, 512, 9)
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }));
    drop(buf);
    nvme.reset().unwrap();
    let mut n = 0;
    nvme.recreate_io_queue_pair(&mut qp, |_| n += 1).unwrap();
    assert_eq!((n, pool.free_count()), (2, 4));
}

/// One read into a pool buffer, with `injection` on its completion; what
/// `poll` returned and how often the buffer came back.
fn hostile(injection: Injection) -> (nvme_driver::Result<usize>, usize, bool) {
    let (container, model, mut nvme) = standard();
    let pool = BufferPool::new(&container, 4096, 2).unwrap();
    let mut qp = nvme.create_io_queue_pair::<Buffer>(8).unwrap();
    lock(&model).inject.push_back(injection);
    qp.submit_read(1, 0, pool.alloc().unwrap(), 0, 512, 1)
        .unwrap();
    qp.ring();
    let mut back = 0;
    let r = qp.poll(8, |_| back += 1);
    (r, back, qp.is_failed())
}

#[test]
fn hostile_completions_are_protocol_errors_and_no_buffer_comes_back_twice() {
    for injection in [
        Injection::Cid(999),
        Injection::Cid(5),
        Injection::SqId(3),
        Injection::SqHead(40),
    ] {
        let (r, back, failed) = hostile(injection);
        assert!(matches!(r, Err(Error::Protocol(_))), "{injection:?}: {r:?}");
        assert_eq!(back, 0, "{injection:?}");
        assert!(
            failed,
            "{injection:?}: the queue pair refuses work after it"
        );
    }
    let (r, back, _) = hostile(Injection::Twice);
    assert!(matches!(r, Err(Error::Protocol(_))), "{r:?}");
    assert_eq!(back, 1, "the duplicate did not hand the buffer out again");
    let (r, back, _) = hostile(Injection::Status(0x281));
    assert_eq!(r.unwrap(), 1);
    assert_eq!(back, 1);
}

#[test]
fn a_completion_with_a_stale_phase_is_not_taken_and_the_queue_times_out() {
    let (container, model, mut nvme) = standard();
    let pool = BufferPool::new(&container, 4096, 2).unwrap();
    let mut qp = nvme.create_io_queue_pair::<Buffer>(8).unwrap();
    lock(&model).inject.push_back(Injection::Phase);
    qp.submit_read(1, 0, pool.alloc().unwrap(), 0, 512, 1)
        .unwrap();
    qp.ring();
    let mut back = 0;
    assert_eq!(qp.poll(8, |_| back += 1).unwrap(), 0, "not a completion");
    assert_eq!((back, qp.in_flight(), pool.free_count()), (0, 1, 1));
    assert!(!qp.is_failed());

    qp.set_timeout(Duration::from_millis(20));
    std::thread::sleep(Duration::from_millis(30));
    let err = qp.poll(8, |_| back += 1).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(qp.is_failed());
    assert_eq!(
        (back, pool.free_count()),
        (0, 1),
        "the queue keeps the buffer"
    );

    nvme.reset().unwrap();
    let mut aborted = Vec::new();
    nvme.recreate_io_queue_pair(&mut qp, |c| aborted.push(c))
        .unwrap();
    assert_eq!(aborted.len(), 1, "handed back once");
    let c = aborted.pop().unwrap();
    assert_eq!(c.tag, 1);
    assert!(
        matches!(c.result, Err(Error::Aborted { .. })),
        "{:?}",
        c.result
    );
    drop(c.buf.expect("the buffer"));
    assert_eq!(pool.free_count(), 2);

    // The new queue takes completions again.
    qp.submit_read(1, 3, pool.alloc().unwrap(), 0, 512, 2)
        .unwrap();
    qp.ring();
    let mut done = Vec::new();
    assert_eq!(qp.poll(8, |c| done.push(c)).unwrap(), 1);
    let c = done.pop().unwrap();
    c.result.unwrap();
    assert_eq!(c.tag, 2);
    assert_eq!(
        c.buf.unwrap().as_slice()[..512],
        lock(&model).namespace(1)[3 * 512..4 * 512]
    );
    assert!(!qp.is_failed());
}

#[test]
fn every_status_is_checked_flush_media_and_range_errors_surface() {
    let (container, model, mut nvme) = standard();
    let mut qp = nvme.create_io_queue_pair::<DmaMemory>(8).unwrap();
    qp.flush(1).unwrap();
    lock(&model).fail_flush = true;
    let err = qp.flush(1).unwrap_err();
    assert!(err.to_string().contains("Flush failed"), "{err}");
    lock(&model).media_errors.insert(7);
    let mut mem = DmaMemory::new(&container, 8192, Backing::Pages).unwrap();
    let err = qp.read(1, 0, &mut mem, 0, 8192).unwrap_err();
    assert!(err.to_string().contains("Unrecovered Read Error"), "{err}");
    qp.read(1, 8, &mut mem, 0, 4096).unwrap();
    assert!(!qp.is_failed());
}

#[test]
fn write_zeroes_and_deallocate_split_what_one_command_cannot_hold() {
    let (_, model, mut nvme) = up(NvmeConfig {
        namespaces: vec![patterned(80_000)],
        ..NvmeConfig::default()
    });
    let mut qp = nvme.create_io_queue_pair::<DmaMemory>(8).unwrap();
    qp.write_zeroes(1, 1000, 70_000).unwrap();
    let m = lock(&model);
    let zeroes: Vec<_> =
        m.io.iter()
            .filter(|r| r.opcode == 0x08)
            .map(|r| (r.slba, r.count))
            .collect();
    assert_eq!(zeroes, [(1000, 65_536), (66_536, 4_464)]);
    let want = patterned(80_000).data;
    let got = m.namespace(1);
    assert!(all(&got[1000 * 512..71_000 * 512], 0));
    assert_eq!(got[..1000 * 512], want[..1000 * 512]);
    assert_eq!(got[71_000 * 512..], want[71_000 * 512..]);
    drop(m);
    qp.deallocate(1, 0, 80_000).unwrap();
    assert!(all(lock(&model).namespace(1), 0));
    assert!(qp.write_zeroes(1, 79_999, 2).is_err(), "past the end");
}

#[test]
fn memory_of_another_container_is_refused() {
    let (_, _model, mut nvme) = standard();
    let other = Container::unbacked();
    let mut mem = DmaMemory::new(&other, 4096, Backing::Pages).unwrap();
    let mut qp = nvme.create_io_queue_pair::<DmaMemory>(8).unwrap();
    let err = qp.read(1, 0, &mut mem, 0, 512).unwrap_err();
    assert!(err.to_string().contains("another VFIO container"), "{err}");
    let (err, _) = qp.submit_read(1, 0, mem, 0, 512, 0).unwrap_err();
    assert!(err.to_string().contains("another VFIO container"), "{err}");
}

fn bring_up(config: NvmeConfig) -> nvme_driver::Result<Controller> {
    let container = Container::unbacked();
    let (_, device) = NvmeModel::new(&container, config);
    Controller::new(device)
}

#[test]
fn hostile_bring_up_values_are_errors_that_name_the_value() {
    let base = NvmeConfig::default();
    let cases: Vec<(&str, NvmeConfig, &str)> = vec![
        (
            "gone",
            NvmeConfig {
                readiness: Readiness::Gone,
                ..base.clone()
            },
            "all ones",
        ),
        (
            "fatal",
            NvmeConfig {
                readiness: Readiness::Fatal,
                ..base.clone()
            },
            "Fatal",
        ),
        (
            "never ready",
            NvmeConfig {
                readiness: Readiness::NeverReady,
                ..base.clone()
            },
            "become ready",
        ),
        (
            "mqes 0",
            NvmeConfig {
                cap: base.cap & !0xffff,
                ..base.clone()
            },
            "MQES",
        ),
        (
            "no nvm set",
            NvmeConfig {
                cap: base.cap & !(1 << 37),
                ..base.clone()
            },
            "NVM command set",
        ),
        (
            "big pages",
            NvmeConfig {
                cap: base.cap | 2 << 48,
                ..base.clone()
            },
            "page size",
        ),
    ];
    for (name, config, says) in cases {
        let err = bring_up(config).unwrap_err().to_string();
        assert!(err.contains(says), "{name}: {err}");
    }
}

#[test]
fn doorbells_past_the_bar_limit_the_queues_instead_of_panicking() {
    // Stride 4 << 10 = 4 KiB: in a 16 KiB BAR, doorbells of queues 0 and 1 fit.
    let mut nvme = bring_up(NvmeConfig {
        cap: NvmeConfig::default().cap | 10 << 32,
        ..NvmeConfig::default()
    })
    .unwrap();
    assert_eq!(nvme.io_queue_limit(), 0);
    let err = nvme.create_io_queue_pair::<Buffer>(8).unwrap_err();
    assert!(err.to_string().contains("all in use"), "{err}");
    // Stride 2 KiB: three doorbell pairs fit, the admin queue's and two more.
    let nvme = bring_up(NvmeConfig {
        cap: NvmeConfig::default().cap | 9 << 32,
        ..NvmeConfig::default()
    })
    .unwrap();
    assert_eq!(nvme.io_queue_limit(), 2);
}

#[test]
fn unusable_namespaces_are_skipped_and_usable_ones_served() {
    let mut with_metadata = Namespace::zeroed(1, 512, 64);
    with_metadata.metadata = 8;
    let mut bad_format = Namespace::zeroed(2, 512, 64);
    bad_format.block_size = 256;
    let big_blocks = Namespace::zeroed(3, 65536, 4);
    let good = Namespace::zeroed(4, 4096, 64);
    let (container, _model, mut nvme) = up(NvmeConfig {
        namespaces: vec![with_metadata, bad_format, big_blocks, good],
        mdts: 2, // 16 KiB: smaller than namespace 3's blocks
        ..NvmeConfig::default()
    });
    let mut qp = nvme.create_io_queue_pair::<DmaMemory>(8).unwrap();
    let mut mem = DmaMemory::new(&container, 4096, Backing::Pages).unwrap();
    qp.read(4, 0, &mut mem, 0, 4096).unwrap();
    for nsid in 1..=3 {
        let err = qp.read(nsid, 0, &mut mem, 0, 512).unwrap_err();
        assert!(err.to_string().contains("not supported"), "{nsid}: {err}");
        assert!(nvme.namespace(nsid).is_err());
    }
}

#[test]
fn reads_record_what_the_controller_wrote_and_writes_count_their_source() {
    use vfio_core::dma::{BytesByWriter, Writer};
    let (container, model, mut nvme) = standard();
    let pool = BufferPool::new(&container, 8192, 4).unwrap();
    let mut qp = nvme.create_io_queue_pair::<Buffer>(8).unwrap();
    // Asynchronous: the read's range is the controller's once it completes.
    let buf = pool.alloc().unwrap();
    qp.submit_read(1, 2, buf, 512, 4096, 1)
        .map_err(|(e, _)| e)
        .unwrap();
    qp.ring();
    let mut back = None;
    while back.is_none() {
        qp.poll(1, |c| back = c.buf).unwrap();
    }
    let buf = back.unwrap();
    assert_eq!(buf.writer(512, 4096), Writer::Device);
    assert_eq!(buf.writer(0, 513), Writer::Cpu, "byte 0 was not read into");
    assert_eq!(
        buf.writer(512, 4097),
        Writer::Cpu,
        "nor the byte after the read"
    );
    // Writing it back sends device-written bytes; a header the CPU wrote
    // in another buffer is counted as the CPU's.
    qp.submit_write(1, 50, buf, 512, 4096, 2)
        .map_err(|(e, _)| e)
        .unwrap();
    let mut header = pool.alloc().unwrap();
    header.as_mut_slice()[..512].fill(7);
    qp.submit_write(1, 60, header, 0, 512, 3)
        .map_err(|(e, _)| e)
        .unwrap();
    qp.ring();
    let mut done = 0;
    while done < 2 {
        done += qp.poll(2, |c| c.result.unwrap()).unwrap();
    }
    assert_eq!(
        qp.written_from(),
        BytesByWriter {
            device: 4096,
            cpu: 512
        }
    );
    let ns = lock(&model).namespace(1).to_vec();
    assert!(
        ns[50 * 512..58 * 512] == ns[2 * 512..10 * 512],
        "the device-written bytes went back to disk"
    );
    // Blocking: the same record; the CPU writing the buffer ends it.
    let mut buf = pool.alloc().unwrap();
    qp.read(1, 0, &mut buf, 0, 8192).unwrap();
    assert_eq!(buf.writer(0, 8192), Writer::Device);
    qp.write(1, 70, &buf, 0, 1024).unwrap();
    buf.as_mut_slice()[0] = 1;
    qp.write(1, 80, &buf, 0, 1024).unwrap();
    assert_eq!(
        qp.written_from(),
        BytesByWriter {
            device: 4096 + 1024,
            cpu: 512 + 1024
        }
    );
    // A failed read records nothing, whatever the buffer held before.
    qp.read(1, 0, &mut buf, 0, 8192).unwrap();
    lock(&model).media_errors.insert(3);
    assert!(qp.read(1, 0, &mut buf, 0, 8192).is_err());
    assert_eq!(buf.writer(0, 512), Writer::Cpu);
    let failed = pool.alloc().unwrap();
    qp.submit_read(1, 0, failed, 0, 4096, 9)
        .map_err(|(e, _)| e)
        .unwrap();
    qp.ring();
    let mut back = None;
    while back.is_none() {
        qp.poll(1, |c| {
            assert!(c.result.is_err());
            back = c.buf;
        })
        .unwrap();
    }
    assert_eq!(back.unwrap().writer(0, 512), Writer::Cpu);
}
