//! Interrupt mode's errors on the software controller, which has no MSI-X
//! (the guest tests run interrupt mode on QEMU's controller).

use std::time::Duration;

use nvme_driver::{Config, Controller, Error};
use vfio_core::dma::Buffer;
use vfio_core::vfio::Container;
use vfio_models::nvme::{NvmeConfig, NvmeModel};

#[test]
fn interrupt_mode_without_msix_is_a_clear_error_and_polled_queues_refuse_to_wait() {
    let container = Container::unbacked();
    let (_model, device) = NvmeModel::new(&container, NvmeConfig::default());
    match Controller::with_config(device, Config::new().interrupts(true)) {
        Err(Error::InvalidArgument(what)) => {
            assert!(what.contains("MSI-X") && what.contains("polled"), "{what}")
        }
        other => panic!("interrupt mode without MSI-X: {other:?}"),
    }

    let (_model, device) = NvmeModel::new(&container, NvmeConfig::default());
    let mut nvme = Controller::with_config(device, Config::new()).unwrap();
    assert!(!nvme.uses_interrupts());
    let mut qp = nvme.create_io_queue_pair::<Buffer>(4).unwrap();
    assert_eq!(qp.interrupt_vector(), None);
    assert!(qp.eventfd().is_none());
    match qp.wait(Duration::from_millis(1)) {
        Err(Error::InvalidArgument(what)) => assert!(what.contains("interrupts"), "{what}"),
        other => panic!("wait on a polled queue pair: {other:?}"),
    }
}
