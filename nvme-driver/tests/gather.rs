//! Gather Writes (`IoQueuePair::submit_write_gather`) on the software
//! controller: one Write whose data comes from pieces of several pool
//! buffers at any byte offset and length, as a receiver writes UDP payloads
//! straight from NIC receive buffers. Every byte is compared with the
//! model's namespace; the model counts the commands whose SGL1 pointed at a
//! descriptor list.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nvme_driver::{
    Config, Controller, DataPointer, Error, GatherPiece, IoCompletion, IoQueuePair,
    MAX_GATHER_PIECES,
};
use vfio_core::dma::{BufferPool, BytesByWriter, SharedBuffer};
use vfio_core::mmio::{RegisterFile, SharedModel};
use vfio_core::vfio::{Container, Device};
use vfio_models::nvme::{Namespace, NvmeConfig, NvmeModel, Readiness};
use vfio_models::StuckCommand;

type Model = Arc<Mutex<NvmeModel>>;
type Pieces = Vec<GatherPiece<SharedBuffer>>;

const BLOCKS: usize = 1024;
/// A UDP payload of the receiver, and where it starts in its buffer.
const PAYLOAD: usize = 1456;
const AT: usize = 2;

fn lock(m: &Model) -> MutexGuard<'_, NvmeModel> {
    m.lock().unwrap()
}

/// A namespace of 1024 blocks of 512 bytes, zeroed; SGLs without an
/// alignment rule (SGLS 01b).
fn sgl_model() -> NvmeConfig {
    NvmeConfig {
        namespaces: vec![Namespace::zeroed(1, 512, BLOCKS)],
        sgl: true,
        ..NvmeConfig::default()
    }
}

fn up(config: NvmeConfig, choice: DataPointer) -> (Arc<Container>, Model, Controller) {
    let container = Container::unbacked();
    let (model, device) = NvmeModel::new(&container, config);
    let nvme = Controller::with_config(device, Config::new().data_pointer(choice)).unwrap();
    (container, model, nvme)
}

fn queue(nvme: &mut Controller, entries: u16) -> IoQueuePair<SharedBuffer> {
    let mut qp = nvme.create_io_queue_pair::<SharedBuffer>(entries).unwrap();
    qp.set_timeout(Duration::from_millis(500));
    qp
}

/// A pool buffer the CPU filled with bytes that differ from those of every
/// other `seed`, shared.
fn filled(pool: &Arc<BufferPool>, seed: u8) -> SharedBuffer {
    let mut buf = pool.alloc().expect("a free buffer");
    for (i, b) in buf.as_mut_slice().iter_mut().enumerate() {
        *b = (i as u8)
            .wrapping_mul(7)
            .wrapping_add(seed.wrapping_mul(31))
            ^ seed;
    }
    buf.into_shared()
}

/// The bytes of `pieces`, in order.
fn concat(pieces: &[GatherPiece<SharedBuffer>]) -> Vec<u8> {
    pieces
        .iter()
        .flat_map(|(b, at, n)| b.as_slice()[*at..*at + *n].to_vec())
        .collect()
}

/// What identifies each piece: its buffer's IOVA, offset and length.
fn ids(pieces: &[GatherPiece<SharedBuffer>]) -> Vec<(u64, usize, usize)> {
    pieces
        .iter()
        .map(|(b, at, n)| (b.iova(), *at, *n))
        .collect()
}

fn submit(qp: &mut IoQueuePair<SharedBuffer>, lba: u64, pieces: Pieces, tag: u64) {
    qp.submit_write_gather(1, lba, pieces, tag)
        .map_err(|(e, _)| e)
        .unwrap();
}

/// Rings and waits for the next completion.
fn complete(qp: &mut IoQueuePair<SharedBuffer>) -> IoCompletion<SharedBuffer> {
    qp.ring();
    let mut back = None;
    while back.is_none() {
        qp.poll(1, |c| back = Some(c)).unwrap();
    }
    back.unwrap()
}

fn on_disk(model: &Model, lba: u64, bytes: usize) -> Vec<u8> {
    let at = lba as usize * 512;
    lock(model).namespace(1)[at..at + bytes].to_vec()
}

/// Datagram payloads at offset 2 of their buffers, the head of the first
/// cut off and the tail of the last: 13 blocks from 8 pieces of 6 buffers,
/// two pieces from clones of one buffer.
fn datagrams(pool: &Arc<BufferPool>) -> Pieces {
    let b: Vec<SharedBuffer> = (0..6).map(|i| filled(pool, i + 1)).collect();
    let pieces = vec![
        (b[0].clone(), AT + 1000, PAYLOAD - 1000),
        (b[1].clone(), AT, 700),
        (b[1].clone(), AT + 700, PAYLOAD - 700),
        (b[2].clone(), AT, PAYLOAD),
        (b[3].clone(), AT, PAYLOAD),
        (b[4].clone(), AT, PAYLOAD),
        (b[5].clone(), AT, 375),
        (b[5].clone(), AT + 375, 1),
    ];
    let total: usize = pieces.iter().map(|p| p.2).sum();
    assert_eq!(total, 13 * 512);
    pieces
}

#[test]
fn a_gather_of_datagram_payloads_lands_byte_exact_from_one_sgl_list() {
    let (container, model, mut nvme) = up(sgl_model(), DataPointer::Auto);
    let mut qp = queue(&mut nvme, 16);
    assert!(qp.gather_supported());
    let pool = BufferPool::new(&container, 2048, 8).unwrap();
    let pieces = datagrams(&pool);
    let want = concat(&pieces);
    let first = pieces[0].0.iova();
    let before = {
        let m = lock(&model);
        (m.sgl_commands, m.sgl_list_commands)
    };
    submit(&mut qp, 77, pieces, 5);
    assert_eq!(pool.free_count(), 2, "the queue pair holds six buffers");
    let done = complete(&mut qp);
    done.result.as_ref().unwrap();
    assert_eq!(done.tag, 5);
    assert_eq!(
        done.buf.as_ref().map(SharedBuffer::iova),
        Some(first),
        "the first piece's buffer comes back"
    );
    assert_eq!(pool.free_count(), 7, "the others were dropped");
    drop(done);
    assert_eq!(pool.free_count(), 8);

    assert!(
        on_disk(&model, 77, 13 * 512) == want,
        "the pieces, in order"
    );
    let m = lock(&model);
    assert_eq!(
        m.namespace(1)[76 * 512..77 * 512],
        [0; 512],
        "nothing before"
    );
    assert_eq!(
        m.namespace(1)[90 * 512..91 * 512],
        [0; 512],
        "nothing after"
    );
    assert_eq!(m.io.last().map(|r| (r.slba, r.count)), Some((77, 13)));
    assert_eq!(m.sgl_commands - before.0, 1, "one SGL command");
    assert_eq!(m.sgl_list_commands - before.1, 1, "its SGL1 a segment");
    assert_eq!(m.dma_faults, 0);
}

#[test]
fn a_full_list_page_of_two_byte_pieces_makes_one_block() {
    let (container, model, mut nvme) = up(sgl_model(), DataPointer::Sgl);
    let mut qp = queue(&mut nvme, 16);
    let pool = BufferPool::new(&container, 2048, 8).unwrap();
    let bufs: Vec<SharedBuffer> = (0..8).map(|i| filled(&pool, 40 + i)).collect();
    // 256 pieces of 2 bytes at odd offsets, round robin over 8 buffers.
    let pieces: Pieces = (0..MAX_GATHER_PIECES)
        .map(|i| (bufs[i % 8].clone(), 1 + 2 * i, 2))
        .collect();
    assert_eq!(MAX_GATHER_PIECES, 256);
    let want = concat(&pieces);
    drop(bufs);
    submit(&mut qp, 3, pieces, 1);
    complete(&mut qp).result.unwrap();
    assert_eq!(on_disk(&model, 3, 512), want);
    assert_eq!(lock(&model).sgl_list_commands, 1);
    assert_eq!(pool.free_count(), 8);
}

#[test]
fn gathers_take_turns_with_single_buffer_commands_on_the_same_slots() {
    // Command IDs are reused: a gather's list page must not disturb the
    // PRP list a later command of the same ID writes there, nor the reverse.
    let (container, model, mut nvme) = up(sgl_model(), DataPointer::Auto);
    let mut qp = queue(&mut nvme, 4);
    let pool = BufferPool::new(&container, 16384, 12).unwrap();
    for round in 0..6u64 {
        let big = filled(&pool, round as u8);
        let pieces: Pieces = vec![
            (filled(&pool, 100 + round as u8), 3, 509),
            (filled(&pool, 200 + round as u8), 1, 515),
        ];
        let want = concat(&pieces);
        // 12 KiB from offset 4: three pages and more, a PRP list.
        qp.submit_write(1, 500 + 40 * round, big.clone(), 4, 12288, 0)
            .map_err(|(e, _)| e)
            .unwrap();
        submit(&mut qp, 100 + 2 * round, pieces, 1);
        qp.ring();
        let mut n = 0;
        while n < 2 {
            n += qp.poll(2, |c| c.result.unwrap()).unwrap();
        }
        assert_eq!(on_disk(&model, 100 + 2 * round, 1024), want, "{round}");
        let big_on_disk = on_disk(&model, 500 + 40 * round, 12288);
        assert!(big_on_disk == big.as_slice()[4..4 + 12288], "{round}");
    }
    assert_eq!(pool.free_count(), 12);
}

#[test]
fn a_single_piece_gather_is_a_plain_write() {
    for choice in [DataPointer::Auto, DataPointer::Sgl] {
        let (container, model, mut nvme) = up(sgl_model(), choice);
        let mut qp = queue(&mut nvme, 16);
        let pool = BufferPool::new(&container, 4096, 2).unwrap();
        let buf = filled(&pool, 9);
        let want = buf.as_slice()[AT + 1..AT + 1 + 1024].to_vec();
        submit(&mut qp, 40, vec![(buf.clone(), AT + 1, 1024)], 3);
        let done = complete(&mut qp);
        done.result.unwrap();
        assert_eq!(done.buf.map(|b| b.iova()), Some(buf.iova()));
        assert_eq!(on_disk(&model, 40, 1024), want, "{choice:?}");
        let m = lock(&model);
        assert_eq!(m.sgl_list_commands, 0, "{choice:?}: SGL1 a Data Block");
        assert_eq!(m.sgl_commands, 1, "{choice:?}: an odd address takes an SGL");
    }
}

/// Asserts that `pieces` came back refused with an InvalidArgument naming
/// all of `words`, the same pieces as `sent`, and that nothing was sent.
#[track_caller]
fn refused(
    model: &Model,
    got: Result<(), (Error, Pieces)>,
    sent: &[(u64, usize, usize)],
    words: &[&str],
) {
    let io = lock(model).io.len();
    match got {
        Err((Error::InvalidArgument(what), back)) => {
            for w in words {
                assert!(what.contains(w), "{w:?} not in {what:?}");
            }
            assert_eq!(ids(&back), sent, "the pieces come back");
        }
        Err((e, _)) => panic!("{words:?}: {e}"),
        Ok(()) => panic!("{words:?}: accepted"),
    }
    assert_eq!(lock(model).io.len(), io);
}

/// Submits `pieces` and asserts their refusal ([`refused`]).
#[track_caller]
fn check(
    model: &Model,
    qp: &mut IoQueuePair<SharedBuffer>,
    (nsid, lba): (u32, u64),
    pieces: Pieces,
    words: &[&str],
) {
    let sent = ids(&pieces);
    refused(
        model,
        qp.submit_write_gather(nsid, lba, pieces, 0),
        &sent,
        words,
    );
}

#[test]
fn refused_gathers_hand_every_piece_back_and_send_nothing() {
    let (container, model, mut nvme) = up(sgl_model(), DataPointer::Auto);
    let mut qp = queue(&mut nvme, 4);
    let pool = BufferPool::new(&container, 2048, 8).unwrap();
    let a = filled(&pool, 1);
    let b = filled(&pool, 2);
    let two = || vec![(a.clone(), 0, 300), (b.clone(), 5, 724)];
    check(&model, &mut qp, (1, 0), vec![], &["0 pieces", "256"]);
    let many: Pieces = (0..=MAX_GATHER_PIECES).map(|i| (a.clone(), i, 2)).collect();
    check(&model, &mut qp, (1, 0), many, &["257 pieces", "split"]);
    let empty = vec![(a.clone(), 0, 512), (b.clone(), 7, 0)];
    check(&model, &mut qp, (1, 0), empty, &["piece 1", "empty"]);
    let past = vec![(a.clone(), 0, 300), (b.clone(), 1900, 212)];
    check(&model, &mut qp, (1, 0), past, &["piece 1", "past the end"]);
    let other = Container::unbacked();
    let foreign_pool = BufferPool::new(&other, 2048, 1).unwrap();
    let foreign = vec![(a.clone(), 0, 12), (filled(&foreign_pool, 3), 0, 500)];
    check(
        &model,
        &mut qp,
        (1, 0),
        foreign,
        &["piece 1", "another VFIO container"],
    );
    let ragged = vec![(a.clone(), 0, 300), (b.clone(), 5, 725)];
    check(
        &model,
        &mut qp,
        (1, 0),
        ragged,
        &["1025 bytes", "511 bytes more or 1 fewer"],
    );
    // 65 pieces of 2 KiB: 130 KiB, over the model's 128 KiB MDTS.
    let huge: Pieces = (0..65).map(|_| (a.clone(), 0, 2048)).collect();
    check(
        &model,
        &mut qp,
        (1, 0),
        huge,
        &["133120 bytes", "131072-byte limit"],
    );
    check(
        &model,
        &mut qp,
        (1, BLOCKS as u64 - 1),
        two(),
        &["past the end of namespace 1"],
    );
    check(&model, &mut qp, (2, 0), two(), &["namespace 2"]);

    // Queue full: three held in flight (four entries), the fourth refused.
    lock(&model).hold_io = true;
    for lba in 0..3 {
        submit(&mut qp, lba, two(), lba);
    }
    qp.ring();
    let sent = ids(&two());
    match qp.submit_write_gather(1, 9, two(), 9) {
        Err((Error::QueueFull { qid: 1, depth: 3 }, back)) => assert_eq!(ids(&back), sent),
        other => panic!("a full queue: {:?}", other.map_err(|(e, _)| e)),
    }
    assert_eq!(lock(&model).held(), 3);

    // Unusable after a reset until re-created; the held gathers come back
    // aborted, each with its first piece's buffer, the others dropped.
    nvme.reset().unwrap();
    match qp.submit_write_gather(1, 9, two(), 9) {
        Err((Error::QueueGone { qid: 1 }, back)) => assert_eq!(ids(&back), sent),
        other => panic!("a reset queue: {:?}", other.map_err(|(e, _)| e)),
    }
    lock(&model).hold_io = false;
    let mut aborted = Vec::new();
    nvme.recreate_io_queue_pair(&mut qp, |c| {
        assert!(matches!(c.result, Err(Error::Aborted { command: "Write" })));
        aborted.push((c.tag, c.buf.map(|b| b.iova())));
    })
    .unwrap();
    aborted.sort();
    assert_eq!(
        aborted,
        [0, 1, 2].map(|t| (t, Some(a.iova()))),
        "first pieces back"
    );
    drop((a, b));
    assert_eq!(pool.free_count(), 8, "every other buffer was dropped");
    assert_eq!(lock(&model).namespace(1)[..4096], [0; 4096]);
}

#[test]
fn controllers_without_byte_granular_sgls_refuse_gathers_and_say_to_copy() {
    let dword = NvmeConfig {
        sgl_dword_alignment: true,
        ..sgl_model()
    };
    let none = NvmeConfig {
        sgl: false,
        ..sgl_model()
    };
    for (config, choice, words) in [
        (dword, DataPointer::Auto, &["4 bytes", "10b", "copy"][..]),
        (
            none,
            DataPointer::Auto,
            &["does not support SGLs", "copy"][..],
        ),
        (
            sgl_model(),
            DataPointer::Prp,
            &["PRPs", "DataPointer::Auto", "copy"][..],
        ),
    ] {
        let (container, model, mut nvme) = up(config, choice);
        let mut qp = queue(&mut nvme, 4);
        assert!(!qp.gather_supported(), "{words:?}");
        let pool = BufferPool::new(&container, 2048, 2).unwrap();
        // Dword aligned and sized, and still refused: the rule is the
        // controller's, not the pieces'.
        let pieces = vec![(filled(&pool, 1), 0, 256), (filled(&pool, 2), 4, 256)];
        let sent = ids(&pieces);
        refused(
            &model,
            qp.submit_write_gather(1, 0, pieces, 0),
            &sent,
            words,
        );
        assert_eq!(pool.free_count(), 2);
    }
}

/// Takes every buffer of `pool`, fills it with 0xee, lets the model run
/// whatever it still held; true when no 0xee reached the namespace.
fn late_writes_miss(model: &Model, pool: &Arc<BufferPool>) -> bool {
    let mut bufs: Vec<_> = (0..pool.capacity()).map_while(|_| pool.alloc()).collect();
    assert_eq!(bufs.len(), pool.capacity(), "every buffer is back");
    for b in &mut bufs {
        b.as_mut_slice().fill(0xee);
    }
    lock(model).release_held();
    !lock(model).namespace(1).contains(&0xee)
}

#[test]
fn dropping_a_queue_pair_with_a_held_gather_deletes_it_before_the_buffers_go_back() {
    let (container, model, mut nvme) = up(sgl_model(), DataPointer::Auto);
    let mut qp = queue(&mut nvme, 4);
    let pool = BufferPool::new(&container, 2048, 8).unwrap();
    lock(&model).hold_io = true;
    submit(&mut qp, 10, datagrams(&pool), 1);
    qp.ring();
    assert_eq!(lock(&model).held(), 1);
    assert_eq!(pool.free_count(), 2, "the queue pair holds six buffers");
    drop(qp);
    assert!(lock(&model).io_queue_ids().is_empty(), "deleted first");
    assert_eq!(lock(&model).held(), 0, "the deletion aborted the gather");
    assert!(late_writes_miss(&model, &pool));
}

#[test]
fn a_held_gather_on_a_controller_that_cannot_be_stopped_leaks_every_piece() {
    let container = Container::unbacked();
    let config = NvmeConfig {
        readiness: Readiness::NeverStops,
        ..sgl_model()
    };
    let (model, _) = NvmeModel::new(&container, config);
    let mut space = RegisterFile::new(256);
    space.set(0, 2, 0x1b36);
    space.set(2, 2, 0x0010);
    space.set(4, 2, 0x0006);
    let space: SharedModel = Arc::new(Mutex::new(StuckCommand(space)));
    let bar: SharedModel = model.clone();
    let addr = "0000:00:04.0".parse().unwrap();
    let device = Device::from_models(&container, addr, (256, space), vec![(0, 0x4000, bar)]);
    let mut nvme = Controller::new(device.unwrap()).unwrap();
    nvme.set_admin_timeout(Duration::from_millis(50));
    let mut qp = queue(&mut nvme, 4);
    let pool = BufferPool::new(&container, 2048, 8).unwrap();
    lock(&model).hold_io = true;
    submit(&mut qp, 10, datagrams(&pool), 1);
    qp.ring();

    lock(&model).ignore_delete_sq = true;
    let leaked = vfio_core::dma::leaked();
    drop(qp);
    assert_eq!(pool.free_count(), 2, "the six held buffers never return");
    assert!(
        vfio_core::dma::leaked() >= leaked + 8,
        "8 pieces (6 buffers), 2 rings, the list pages counted as leaked"
    );
    lock(&model).release_held();
    assert_eq!(
        lock(&model).dma_faults,
        0,
        "the late gather reads leaked memory"
    );
}

#[test]
fn written_from_counts_each_piece_by_its_writer() {
    let (container, model, mut nvme) = up(sgl_model(), DataPointer::Auto);
    // Something on disk for the device to write into a buffer.
    lock(&model).config.namespaces[0].data[..4096].fill(0x3c);
    let mut qp = queue(&mut nvme, 4);
    let pool = BufferPool::new(&container, 2048, 4).unwrap();
    // A buffer the controller wrote 1,536 bytes of from offset 2 (a read),
    // as a NIC writes a receive buffer; another the CPU wrote.
    let mut rx = pool.alloc().unwrap();
    qp.read(1, 0, &mut rx, AT, 1536).unwrap();
    let rx = rx.into_shared();
    let cpu = filled(&pool, 5);
    let pieces = vec![
        (rx.clone(), AT, PAYLOAD),   // device-written
        (cpu.clone(), 0, 100),       // CPU-written
        (rx.clone(), AT + 1456, 80), // device-written
        (rx.clone(), 0, 412),        // bytes 0 and 1 the CPU's: all CPU
    ];
    submit(&mut qp, 20, pieces, 1);
    complete(&mut qp).result.unwrap();
    assert_eq!(
        qp.written_from(),
        BytesByWriter {
            device: 1456 + 80,
            cpu: 100 + 412
        }
    );
    assert_eq!(on_disk(&model, 20, 1456), [0x3c; 1456]);
}
