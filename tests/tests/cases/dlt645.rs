//! The dlt645 source against a DL/T 645-2007 meter bus behind a simulated
//! serial-to-Ethernet converter (tests/peers/dlt645_meters.py, written from the
//! standard's frame definition): exact SI values from BCD registers by meter address,
//! an answer split across TCP segments, a negative combined energy and an implausible
//! power rejected with their reasons, a damaged frame, and a meter that is not on the bus.

use dcwatt_e2e::*;
use std::process::Command;
use std::time::Duration;

fn bus(dir: &TempDir) -> Option<(Proc, u16)> {
    let py = find_program("python3")?;
    let port = free_port();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join("dlt645_meters.py");
    let mut cmd = Command::new(py);
    cmd.arg(script).arg(port.to_string());
    let mut p = Proc::spawn("dlt645", cmd, dir.0.join("dlt645.log"));
    wait_for("the DL/T 645 bus", Duration::from_secs(20), || {
        assert!(p.running(), "the bus exited:\n{}", p.log());
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
    Some((p, port))
}

fn meter(port: u16, address: &str, component: &str, extra: &str) -> String {
    format!("[[sources]]\ntype = \"dlt645\"\nhost = \"127.0.0.1\"\nport = {port}\naddress = \"{address}\"\ncomponent = \"{component}\"\ntimeout_secs = 1\n{extra}\n")
}

fn value(r: &[dcwatt_common::protocol::Reading], component: &str, metric: &str) -> Option<f64> {
    r.iter()
        .find(|x| x.component == component && x.metric == metric)
        .map(|x| x.value)
}

#[test]
fn revenue_meters_read_by_address_give_exact_si_values_and_say_what_is_wrong() {
    let dir = TempDir::new("dlt645");
    let Some((_bus, port)) = bus(&dir) else {
        return skip_or_fail("dlt645", "python3 is not installed");
    };
    let sources = [
        meter(
            port,
            "123456789012",
            "incomer",
            "point = \"facility_input\"",
        ),
        meter(port, "5678", "ups", "point = \"ups_output\"\nratio = 40.0"),
        meter(port, "5678", "ups-combined", "energy = \"combined_active\""),
        meter(port, "42", "overrated", "max_power_w = 50000.0"),
        meter(port, "666", "damaged", ""),
        meter(port, "999999999999", "absent", ""),
    ]
    .concat();
    let (_, r, err) = agent_once(&dir, "meters", &sources);
    // 123456.78 kWh and 12.3456 kW, from BCD 12 34 56 78 and 12 34 56; the answer came
    // in two segments.
    assert_eq!(
        value(&r, "incomer", "energy_j"),
        Some(12_345_678.0 / 100.0 * 3.6e6)
    );
    let w = value(&r, "incomer", "power_w").expect("incomer power");
    assert!((w - 12_345.6).abs() < 1e-9, "{w}");
    let incomer = r
        .iter()
        .find(|x| x.component == "incomer" && x.metric == "energy_j")
        .expect("incomer energy");
    assert_eq!(
        incomer.point,
        Some(dcwatt_common::protocol::Point::FacilityInput)
    );
    // The register wraps at 1,000,000 kWh: the collector unwraps it.
    assert_eq!(incomer.wraps_at, Some(1e6 * 3.6e6));
    assert_eq!(value(&r, "incomer", "device_up"), Some(1.0));
    // A short address is the nameplate's with leading zeros: 7654.32 kWh and 8.7654 kW
    // on the secondary side of 200/5 A CTs (ratio 40).
    let kwh = value(&r, "ups", "energy_j").expect("ups energy") / 3.6e6;
    assert!((kwh - 7_654.32 * 40.0).abs() < 1e-6, "{kwh}");
    let w = value(&r, "ups", "power_w").expect("ups power");
    assert!((w - 8_765.4 * 40.0).abs() < 1e-6, "{w}");
    // Combined active energy of −12.34 kWh is refused as negative; the power stays.
    assert_eq!(value(&r, "ups-combined", "energy_j"), None);
    assert!(value(&r, "ups-combined", "power_w").is_some());
    assert!(err.contains("negative energy"), "{err}");
    // 99.9999 kW from a meter rated 50 kW: rejected, its energy kept.
    assert_eq!(value(&r, "overrated", "power_w"), None);
    assert_eq!(value(&r, "overrated", "energy_j"), Some(0.01 * 3.6e6));
    assert!(err.contains("above this device's 50000 W"), "{err}");
    // A damaged frame and a silent meter: nothing read, device_up 0, and why.
    for c in ["damaged", "absent"] {
        assert_eq!(value(&r, c, "energy_j"), None, "{c}");
        assert_eq!(value(&r, c, "device_up"), Some(0.0), "{c}");
    }
    assert!(err.contains("checksum"), "{err}");
    assert!(
        err.contains("meter 999999999999") && err.contains("no answer within 1 s"),
        "{err}"
    );
}
