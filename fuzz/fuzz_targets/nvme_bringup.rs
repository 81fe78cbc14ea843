//! NVMe bring-up and a few reads against a software controller whose every
//! reported value comes from the fuzzer: CAP (queue size, doorbell stride,
//! command sets, page sizes), BAR size, MDTS, ONCS, the number of queues,
//! the namespaces' sizes, block formats and metadata, whether the controller
//! is fatal or gone, whether it offers SGLs and shadow doorbells, and
//! hostile fields in the I/O completions. The driver
//! must answer each with an error, never a panic, a hang or a buffer handed
//! out twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvme_driver::Controller;
use vfio_core::dma::{Buffer, BufferPool};
use vfio_core::vfio::Container;
use vfio_models::nvme::{Injection, Namespace, NvmeConfig, NvmeModel, Readiness};

/// Reads bytes off the front of the input, zeros when it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
}

fn config(input: &mut Input) -> NvmeConfig {
    let mqes = input.u16() as u64;
    let dstrd = (input.u8() & 0xf) as u64;
    let css = input.u8() as u64;
    let mps = (input.u8() & 0x3) as u64;
    let namespaces = (0..input.u8() % 4)
        .map(|i| {
            let lbads = 8 + input.u8() % 10; // 256 B (invalid) up to 128 KiB (invalid)
            let blocks = (input.u16() % 64) as usize;
            let mut ns = Namespace::zeroed(i as u32 + 1, 1 << lbads.min(16), blocks);
            ns.block_size = 1 << lbads;
            ns.metadata = if input.u8() % 4 == 0 { 8 } else { 0 };
            ns
        })
        .collect();
    NvmeConfig {
        cap: mqes | 1 << 16 | 1 << 24 | dstrd << 32 | css << 37 | mps << 48,
        bar_len: [0x2000, 0x4000, 0x10000][input.u8() as usize % 3],
        mdts: input.u8() % 8,
        oncs: input.u16(),
        io_queues: input.u16(),
        namespaces,
        readiness: [
            Readiness::Prompt,
            Readiness::Prompt,
            Readiness::Fatal,
            Readiness::Gone,
        ][input.u8() as usize % 4],
        // SGLs and shadow doorbells offered or not: the driver then takes
        // the other data pointer and doorbell paths.
        sgl: input.u8() & 1 == 1,
        sgl_dword_alignment: input.u8() & 1 == 1,
        dbbuf: input.u8() & 1 == 1,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let config = config(&mut input);
    let container = Container::unbacked();
    let (model, device) = NvmeModel::new(&container, config);
    let Ok(mut nvme) = Controller::new(device) else {
        return;
    };
    let Ok(mut qp) = nvme.create_io_queue_pair::<Buffer>(2 + input.u8() as u16 % 32) else {
        return;
    };
    let pool = BufferPool::new(&container, 4096, 8).expect("pool");
    let leaked = vfio_core::dma::leaked();
    for step in 0..8u64 {
        let injection = match input.u8() % 8 {
            0 => Some(Injection::Cid(input.u16())),
            1 => Some(Injection::SqId(input.u16())),
            2 => Some(Injection::SqHead(input.u16())),
            3 => Some(Injection::Status(input.u16())),
            4 => Some(Injection::Twice),
            _ => None,
        };
        model.lock().unwrap().inject.extend(injection);
        let (nsid, lba, bytes) = (
            input.u8() as u32 % 5,
            input.u8() as u64,
            512 << (input.u8() % 4),
        );
        if let Some(buf) = pool.alloc() {
            let _ = qp.submit_read(nsid, lba, buf, 0, bytes, step);
        }
        qp.ring();
        let _ = qp.poll(8, |c| drop(c.buf));
    }
    drop(qp);
    drop(nvme);
    if vfio_core::dma::leaked() == leaked {
        assert_eq!(
            pool.free_count(),
            pool.capacity(),
            "every buffer came back once"
        );
    }
});
