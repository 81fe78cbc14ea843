//! devbind: list PCI devices and bind them to vfio-pci and back.
fn main() {
    todo!()
}
