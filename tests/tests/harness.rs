//! The test machine itself fails loudly: a guest that hangs is killed after its
//! timeout and the run is an error that says so, with the guest's logs.

use std::time::Duration;

use vfio_tests::machine::Machine;

#[test]
fn hung_guest_is_killed_and_reported() {
    let mut m = Machine::new("harness-hang");
    m.timeout(Duration::from_secs(20));
    m.step("before", "echo still alive");
    m.step("hang", "sleep 600");
    let err = m
        .run()
        .expect_err("a guest that sleeps forever must not pass")
        .to_string();
    assert!(err.contains("hung: killed after 20s"), "{err}");
    assert!(
        err.contains("still alive"),
        "the error carries the guest's output:\n{err}"
    );
}
