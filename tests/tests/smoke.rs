use vfio_tests::machine::Machine;
#[test]
fn boots() {
    let mut m = Machine::new("smoke");
    let nvme = m.nvme_zeroed(16 << 20);
    m.e1000("e1000");
    m.step("lspci", "for d in /sys/bus/pci/devices/*; do echo $d $(cat $d/vendor $d/device $d/class) $(basename $(readlink $d/driver)) $(basename $(readlink $d/iommu_group)); done; ls /dev/vfio; grep -i huge /proc/meminfo; lsmod");
    m.step("e1000", "insmod /lib/modules/e1000.ko; dmesg | tail -5; lsmod | head -3");
    let out = m.run().unwrap();
    println!("{}", out.results);
    println!("{}", out.console);
}
