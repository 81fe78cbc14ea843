//! The copy-bench machine: two NVMe controllers holding the same image and two
//! e1000 NICs wired to the host; one of each on vfio for the forwarder, one of
//! each on the kernel's drivers for the kernel's copy paths. `copy-bench`
//! sends route k's stream to UDP port [`PORT`] + k (4: the forwarder).

use crate::check::HOST_MAC;
use crate::machine::{mac_string, Machine};

/// Port of the first route's stream.
pub const PORT: u16 = 9300;
/// The routes, in port order.
pub const ROUTES: [&str; 5] = [
    "read+send",
    "mmap+send",
    "sendfile",
    "O_DIRECT read+send",
    "forwarder",
];

/// A machine set up to run copy-bench over the first `bytes` of `image`.
pub struct CopyBench {
    pub machine: Machine,
    /// Index (in `Running::nics`) of the forwarder's NIC.
    pub nic_vfio: usize,
    /// Index of the kernel's NIC.
    pub nic_kernel: usize,
}

pub fn machine(name: &str, image: &[u8], bytes: u64) -> CopyBench {
    let mut m = Machine::new(name);
    let disk = |m: &Machine, file: &str| {
        let path = m.dir().join(file);
        std::fs::write(&path, image).expect("write a disk image");
        path
    };
    let (a, b) = (disk(&m, "vfio.img"), disk(&m, "kernel.img"));
    let nvme = m.nvme(&a, "");
    let nic_vfio = m.e1000("e1000");
    let kernel_nvme = m.nvme(&b, "");
    let nic_kernel = m.e1000("e1000");
    let (nic, kernel_nic) = (m.nics_addr(nic_vfio), m.nics_addr(nic_kernel));
    let host = mac_string(&HOST_MAC);
    m.step("bind", &format!("devbind bind {nvme} {nic}"));
    let netdev = format!("$(ls /sys/bus/pci/devices/{kernel_nic}/net)");
    m.step(
        "kernel-net",
        &format!(
            "ip link set {netdev} up && ip addr add 192.0.2.2/24 dev {netdev} && \
             arp -i {netdev} -s 192.0.2.1 {host}\n\
             for i in $(seq 100); do [ \"$(cat /sys/class/net/{netdev}/carrier)\" = 1 ] && break; sleep 0.1; done"
        ),
    );
    m.step(
        "copy-bench",
        &format!(
            "copy-bench --disk /dev/$(ls /sys/bus/pci/devices/{kernel_nvme}/nvme)n1 --bytes {bytes} \
             --dst-ip 192.0.2.1 --port {PORT} --json \
             --forwarder \"--nvme {nvme} --nic {nic} --dst-mac {host} --dst-ip 192.0.2.1\""
        ),
    );
    CopyBench {
        machine: m,
        nic_vfio,
        nic_kernel,
    }
}
