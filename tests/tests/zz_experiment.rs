use std::time::Duration;
use vfio_tests::check::{test_frame, HOST_MAC};
use vfio_tests::machine::Machine;
use vfio_tests::wire::Capture;

#[test]
fn experiment() {
    let mut m = Machine::new("exp");
    let nic = m.e1000("virtio-net-pci,disable-legacy=on,iommu_platform=on");
    let addr = m.nics_addr(nic);
    m.step(
        "lspci",
        "cat /sys/bus/pci/devices/*/device; ls /sys/bus/pci/devices/",
    );
    m.step("bind", &format!("devbind bind {addr}"));
    m.step(
        "pktgen",
        &format!("RUST_LOG=debug nic-pktgen --device {addr} --size 60 --count 2000 --batch 32"),
    );
    m.step(
        "echo",
        &format!("nic-echo --device {addr} --seconds 6 --count 20"),
    );
    let running = m.start().unwrap();
    let cap = Capture::start(&running.nics[nic].socket);
    running
        .wait_for("echo.ready", Duration::from_secs(120))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    for seq in 0..20 {
        running.nics[nic]
            .socket
            .send(&test_frame(9, seq, 100, HOST_MAC, running.nics[nic].mac))
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = running.wait().unwrap();
    let frames = cap.stop();
    for s in ["lspci", "bind", "pktgen", "echo"] {
        println!("=== {s}\n{}", o.step(s).output);
    }
    println!(
        "host got {} frames; first {:02x?}",
        frames.len(),
        frames.first().map(|f| &f[..f.len().min(40)])
    );
}
