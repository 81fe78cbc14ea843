//! The async API on the software controller (polled: the model has no
//! MSI-X; the guest test awaits QEMU's interrupts). Every byte read is
//! compared with the model's namespace; a dropped future's buffer is
//! counted back into its pool only after the controller completed it.
#![cfg(feature = "async")]

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use nvme_driver::{AsyncQueuePair, Controller, Error};
use vfio_core::dma::BufferPool;
use vfio_core::vfio::Container;
use vfio_models::nvme::{Namespace, NvmeConfig, NvmeModel};

type Model = Arc<Mutex<NvmeModel>>;

fn lock(m: &Model) -> MutexGuard<'_, NvmeModel> {
    m.lock().unwrap()
}

fn up() -> (Model, AsyncQueuePair, Arc<BufferPool>) {
    let container = Container::unbacked();
    let mut ns = Namespace::zeroed(1, 512, 256);
    for (i, b) in ns.data.iter_mut().enumerate() {
        *b = (i / 512 * 7 + i % 13) as u8;
    }
    let (model, device) = NvmeModel::new(
        &container,
        NvmeConfig {
            namespaces: vec![ns],
            ..NvmeConfig::default()
        },
    );
    let mut nvme = Controller::new(device).unwrap();
    let qp = nvme.create_io_queue_pair(8).unwrap();
    let aq = AsyncQueuePair::new(qp).unwrap();
    let pool = BufferPool::new(&container, 4096, 8).unwrap();
    (model, aq, pool)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn joined_reads_and_a_write_then_flush_move_the_namespace_bytes() {
    let (model, aq, pool) = up();
    assert!(!aq.uses_interrupts());
    runtime().block_on(async {
        let reads = (0..6u64).map(|lba| aq.read(1, lba * 9, pool.alloc().unwrap(), 0, 1024));
        let bufs = futures_join(reads).await;
        for (lba, buf) in (0..6u64).zip(bufs) {
            let buf = buf.map_err(|(e, _)| e).unwrap();
            let at = (lba * 9 * 512) as usize;
            assert_eq!(
                &buf.as_slice()[..1024],
                &lock(&model).namespace(1)[at..at + 1024]
            );
        }
        let mut buf = pool.alloc().unwrap();
        buf.as_mut_slice()[..512].fill(0xa5);
        let buf = aq
            .write(1, 200, buf, 0, 512)
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        aq.flush(1).await.unwrap();
        assert_eq!(
            &lock(&model).namespace(1)[200 * 512..201 * 512],
            &buf.as_slice()[..512]
        );
    });
    assert_eq!(aq.in_flight(), 0);
}

/// Polls each future in turn until all are done (what `join_all` does),
/// keeping this test free of a futures dependency.
async fn futures_join<F: Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                if let Poll::Ready(v) = f.as_mut().poll(cx) {
                    *o = Some(v);
                }
            }
        }
        if out.iter().all(Option::is_some) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

#[test]
fn a_dropped_read_keeps_its_buffer_until_the_controller_completes_it() {
    let (model, aq, pool) = up();
    let free = pool.free_count();
    lock(&model).hold_io = true;
    {
        let mut read = pin!(aq.read(1, 3, pool.alloc().unwrap(), 0, 512));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(
            read.as_mut().poll(&mut cx).is_pending(),
            "held by the model"
        );
    } // dropped with the command in flight
    assert_eq!(aq.in_flight(), 1);
    assert_eq!(
        pool.free_count(),
        free - 1,
        "the queue still owns the buffer"
    );
    aq.reap().unwrap();
    assert_eq!(pool.free_count(), free - 1, "not completed yet");
    lock(&model).release_held();
    assert_eq!(aq.reap().unwrap(), 1);
    assert_eq!(aq.in_flight(), 0);
    assert_eq!(pool.free_count(), free, "back in the pool once completed");
}

#[test]
fn errors_give_the_buffer_back() {
    let (_model, aq, pool) = up();
    runtime().block_on(async {
        match aq.read(1, 255, pool.alloc().unwrap(), 0, 1024).await {
            Err((Error::InvalidArgument(what), Some(_buf))) => {
                assert!(what.contains("past the end"), "{what}")
            }
            other => panic!("a read past the end: {other:?}"),
        }
        match aq.flush(9).await {
            Err(Error::InvalidArgument(_)) => {}
            other => panic!("flush of a namespace not served: {other:?}"),
        }
    });
}
