//! Redfish against a local HTTPS server serving the DMTF public mockups from
//! `tests/fixtures/redfish/` (BSD-3, licence in `LICENSE-DMTF.md` there): real TLS, real HTTP, real JSON from the mockups.
//! Only the BMC itself is replaced, since no BMC can run here.

use super::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Normal,
    Slow,
    Malformed,
}

struct Bmc {
    port: u16,
    ca_pem: String,
    stop: Arc<AtomicBool>,
}

impl Drop for Bmc {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn fixtures() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/redfish");
    assert!(
        p.is_dir(),
        "Redfish fixtures missing at {} (they ship with the repository)",
        p.display()
    );
    p
}

/// A CA and a leaf certificate for 127.0.0.1 signed by it.
fn certs() -> (
    rustls::pki_types::CertificateDer<'static>,
    rustls::pki_types::PrivateKeyDer<'static>,
    String,
) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dcwatt test BMC CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    (leaf.der().clone(), key, ca.pem())
}

fn serve(mockup: &str, mode: Mode) -> Bmc {
    serve_dir(fixtures().join(mockup), mode)
}

/// Serves a copy of a mockup with some resources replaced (what a real service may do
/// that no mockup shows): each `(path, json)` under the copy's root.
fn serve_edited(mockup: &str, tag: &str, edits: &[(&str, serde_json::Value)]) -> (Bmc, PathBuf) {
    let copy = scratch(tag).join("service");
    let _ = std::fs::remove_dir_all(&copy);
    copy_dir(&fixtures().join(mockup), &copy);
    for (path, json) in edits {
        let file = copy.join(path).join("index.json");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, json.to_string()).unwrap();
    }
    (serve_dir(copy.clone(), Mode::Normal), copy)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn serve_dir(root: PathBuf, mode: Mode) -> Bmc {
    let (cert, key, ca_pem) = certs();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if stopping.load(Ordering::Relaxed) {
                return;
            }
            let Ok(stream) = stream else { continue };
            let (config, root) = (config.clone(), root.clone());
            std::thread::spawn(move || handle(stream, config, &root, mode));
        }
    });
    Bmc { port, ca_pem, stop }
}

fn handle(stream: TcpStream, config: Arc<rustls::ServerConfig>, root: &Path, mode: Mode) {
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, stream);
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let authorized = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("authorization: Basic YWRtaW46c2VjcmV0"));
    let file = root
        .join(
            path.trim_start_matches("/redfish/v1")
                .trim_start_matches('/'),
        )
        .join("index.json");
    let (status, body) = if !authorized {
        (
            "401 Unauthorized",
            "{\"error\":\"unauthorized\"}".to_owned(),
        )
    } else if mode == Mode::Malformed {
        ("200 OK", "{\"PowerWatts\": {".to_owned())
    } else {
        match std::fs::read_to_string(&file) {
            Ok(b) => ("200 OK", b),
            Err(_) => ("404 Not Found", "{}".to_owned()),
        }
    };
    if mode == Mode::Slow {
        std::thread::sleep(Duration::from_secs(3));
    }
    let _ = write!(
        tls,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tls.flush();
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

fn config(bmc: &Bmc, dir: &Path) -> RedfishConfig {
    std::fs::create_dir_all(dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &bmc.ca_pem).unwrap();
    let pw = dir.join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    RedfishConfig {
        url: format!("https://127.0.0.1:{}", bmc.port),
        username: Some("admin".into()),
        password_file: Some(pw),
        ca_file: Some(ca),
        insecure_skip_verify: false,
        chassis: None,
        path: PowerPath::Auto,
        timeout_secs: 2,
        interval_secs: None,
    }
}

fn scratch(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dcwatt-redfish-{tag}-{}", std::process::id()))
}

#[test]
fn rackmount_mockup_environment_metrics_first_legacy_power_on_request() {
    let bmc = serve("public-rackmount1", Mode::Normal);
    let dir = scratch("rack");
    let cfg = config(&bmc, &dir);
    let mut src = RedfishSource::new(cfg.clone()).unwrap();
    let mut out = Vec::new();
    src.read(42, &mut out).unwrap();
    assert_eq!(out.len(), 1, "no energy counter in this mockup");
    assert_eq!(
        (out[0].value, out[0].point, out[0].source.as_deref()),
        (374.0, Some(Point::ItInput), Some("redfish"))
    );
    assert_eq!(
        src.found.as_ref().unwrap(),
        &(
            "/redfish/v1/Chassis/1U".to_owned(),
            PowerPath::EnvironmentMetrics
        )
    );
    let legacy = RedfishConfig {
        path: PowerPath::Power,
        ..cfg.clone()
    };
    let (r, path) = RedfishSource::new(legacy).unwrap().read_power().unwrap();
    assert_eq!((r.watts, path), (344.0, PowerPath::Power));
    let p = probe_configured(&cfg);
    assert!(
        p.available
            && p.detail
                .contains("via /redfish/v1/Chassis/1U EnvironmentMetrics")
            && p.detail.contains("374 W"),
        "{}",
        p.detail
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn liquid_cooled_mockup_power_subsystem_sums_power_supplies() {
    let bmc = serve("public-liquid-cooled-server", Mode::Normal);
    let dir = scratch("liquid");
    let cfg = config(&bmc, &dir);
    let (auto, path) = RedfishSource::new(cfg.clone())
        .unwrap()
        .read_power()
        .unwrap();
    assert_eq!((auto.watts, path), (374.0, PowerPath::EnvironmentMetrics));
    let psu = RedfishConfig {
        path: PowerPath::PowerSubsystem,
        chassis: Some("1U".into()),
        ..cfg
    };
    let (r, _) = RedfishSource::new(psu).unwrap().read_power().unwrap();
    assert_eq!(
        r.watts, 937.4,
        "Bay1's InputPowerWatts; Bay2 has no metrics"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn wrong_credentials_timeouts_bad_json_and_untrusted_certificates_are_clear_errors() {
    let bmc = serve("public-rackmount1", Mode::Normal);
    let dir = scratch("errors");
    let cfg = config(&bmc, &dir);

    std::fs::write(dir.join("wrong"), "guess\n").unwrap();
    let wrong = RedfishConfig {
        password_file: Some(dir.join("wrong")),
        ..cfg.clone()
    };
    let e = RedfishSource::new(wrong).unwrap().read_power().unwrap_err();
    assert!(e.to_string().contains("wrong username or password"), "{e}");

    let untrusted = RedfishConfig {
        ca_file: None,
        ..cfg.clone()
    };
    let e = RedfishSource::new(untrusted)
        .unwrap()
        .read_power()
        .unwrap_err();
    assert!(
        e.to_string().to_lowercase().contains("cert") || e.to_string().contains("issuer"),
        "{e}"
    );
    let insecure = RedfishConfig {
        ca_file: None,
        insecure_skip_verify: true,
        ..cfg.clone()
    };
    assert_eq!(
        RedfishSource::new(insecure)
            .unwrap()
            .read_power()
            .unwrap()
            .0
            .watts,
        374.0
    );

    let slow = serve("public-rackmount1", Mode::Slow);
    let mut slow_cfg = config(&slow, &dir.join("slow"));
    slow_cfg.timeout_secs = 1;
    let started = std::time::Instant::now();
    let e = RedfishSource::new(slow_cfg)
        .unwrap()
        .read_power()
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "timeout not honoured: {:?}",
        started.elapsed()
    );
    assert!(e.to_string().to_lowercase().contains("time"), "{e}");

    let bad = serve("public-rackmount1", Mode::Malformed);
    let e = RedfishSource::new(config(&bad, &dir.join("bad")))
        .unwrap()
        .read_power()
        .unwrap_err();
    assert!(e.to_string().contains("malformed JSON"), "{e}");

    assert!(RedfishSource::new(RedfishConfig {
        url: "bmc.example".into(),
        ..cfg
    })
    .is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_bmc_does_not_stop_other_sources() {
    use crate::scheduler::{sample, Scheduled};
    use crate::sources::sim::{SimConfig, SimSource};
    let dir = scratch("others");
    let bmc = serve("public-rackmount1", Mode::Malformed);
    let mut sources = vec![
        Scheduled::new(Box::new(RedfishSource::new(config(&bmc, &dir)).unwrap()), 1),
        Scheduled::new(
            Box::new(SimSource::new(SimConfig::constant(Point::ItInput, 100.0))),
            1,
        ),
    ];
    let order: Vec<String> = crate::sources::WHOLE_SYSTEM_ORDER
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let (readings, errors) = sample(&mut sources, 0, 1_000, &order);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, "redfish");
    assert_eq!(readings.len(), 2, "the sim source still read");
    assert!(
        readings.iter().all(|r| r.point == Some(Point::ItInput)),
        "sim keeps it_input when redfish has none"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn basic_auth_encoding() {
    assert_eq!(base64(b"admin:secret"), "YWRtaW46c2VjcmV0");
    assert_eq!(base64(b"a"), "YQ==");
    assert_eq!(base64(b"ab"), "YWI=");
    assert_eq!(base64(b""), "");
}

#[test]
fn pdu_mockup_inputs_and_outlets() {
    use crate::sources::redfish_pdu::{RedfishPduConfig, RedfishPduSource};
    let bmc = serve("public-pdu", Mode::Normal);
    let dir = scratch("pdu");
    let c = config(&bmc, &dir);
    let cfg = RedfishPduConfig {
        url: c.url,
        username: c.username,
        password_file: c.password_file,
        ca_file: c.ca_file,
        insecure_skip_verify: false,
        rack: Some("r7".into()),
        zone: None,
        outlets: true,
        count: vec!["RackPDUs".into(), "FloorPDUs".into(), "PowerShelves".into()],
        timeout_secs: 5,
        interval_secs: None,
    };
    let mut src = RedfishPduSource::new(cfg).unwrap();
    let mut out = Vec::new();
    src.read(7, &mut out).unwrap();
    let get = |component: &str, metric: &str| {
        out.iter()
            .find(|r| r.component == component && r.metric == metric)
    };
    let input = get("pdu-1", "power_w").unwrap();
    assert_eq!((input.value, input.point), (6438.0, Some(Point::PduInput)));
    let energy = get("pdu-1", "energy_j").unwrap();
    assert_eq!(
        (energy.value, energy.kind),
        (56_438.0 * 3.6e6, dcwatt_common::protocol::Kind::Counter)
    );
    let a1 = get("pdu-1.A1", "power_w").unwrap();
    assert_eq!(
        (a1.value, a1.point, a1.source.as_deref()),
        (197.4, Some(Point::PduOutput), Some("redfish_pdu"))
    );
    let outlets: f64 = out
        .iter()
        .filter(|r| r.point == Some(Point::PduOutput) && r.metric == "power_w")
        .map(|r| r.value)
        .sum();
    assert!(
        (outlets - 2714.5).abs() < 1e-9,
        "sum of the nine metered outlets: {outlets}"
    );
    assert_eq!(
        out.iter()
            .filter(|r| r.point == Some(Point::PduOutput) && r.metric == "power_w")
            .count(),
        9,
        "A4 and A5 have no meter"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn pdu_config(
    bmc: &Bmc,
    dir: &Path,
    count: &[&str],
) -> crate::sources::redfish_pdu::RedfishPduConfig {
    let c = config(bmc, dir);
    crate::sources::redfish_pdu::RedfishPduConfig {
        url: c.url,
        username: c.username,
        password_file: c.password_file,
        ca_file: c.ca_file,
        insecure_skip_verify: false,
        rack: None,
        zone: None,
        outlets: true,
        count: count.iter().map(|s| (*s).to_owned()).collect(),
        timeout_secs: 5,
        interval_secs: None,
    }
}

fn watts(out: &[Reading], point: Option<Point>, prefix: &str) -> (usize, f64) {
    let rows: Vec<&Reading> = out
        .iter()
        .filter(|r| r.metric == "power_w" && r.point == point && r.component.starts_with(prefix))
        .collect();
    (rows.len(), rows.iter().map(|r| r.value).sum())
}

#[test]
fn transfer_switches_are_read_and_counted_only_when_configured() {
    use crate::sources::redfish_pdu::RedfishPduSource;
    let bmc = serve("public-pdu", Mode::Normal);
    let dir = scratch("ats");
    let default = ["RackPDUs", "FloorPDUs", "PowerShelves"];
    let mut src = RedfishPduSource::new(pdu_config(&bmc, &dir, &default)).unwrap();
    let mut out = Vec::new();
    src.read(7, &mut out).unwrap();
    // TransferSwitches/1: Metrics 1500.1 W; outlets A1–A3, B1–B3: 435.2 + 384.5 +
    // 230.7 + 202.4 + 202.4 + 180.1 = 1635.3 W — read, but at no point.
    assert_eq!(watts(&out, None, "ats-1").0, 7);
    let input = out
        .iter()
        .find(|r| r.component == "ats-1" && r.metric == "power_w");
    assert_eq!(input.map(|r| (r.value, r.point)), Some((1500.1, None)));
    assert!((watts(&out, None, "ats-1.").1 - 1635.3).abs() < 1e-9);
    assert_eq!(
        watts(&out, Some(Point::PduOutput), "").0,
        9,
        "the rack PDU's outlets only"
    );
    let notes = src.notes();
    assert!(
        notes.iter().any(|n| n.contains("/redfish/v1/PowerEquipment/TransferSwitches: 1 member is published without a measurement point")
            && n.contains("add \"TransferSwitches\" to count")),
        "{notes:?}"
    );

    // probe --config reads it the same way, warnings included.
    let p = crate::sources::probe_configured(&crate::sources::SourceConfig::RedfishPdu(
        pdu_config(&bmc, &dir, &default),
    ))
    .unwrap();
    assert!(p.available, "{}", p.detail);
    assert!(
        p.detail.contains("pdu-1 power_w@pdu_input = 6438"),
        "{}",
        p.detail
    );
    assert!(p.detail.contains("ats-1 power_w = 1500.1"), "{}", p.detail);
    assert!(
        p.detail
            .contains("note: /redfish/v1/PowerEquipment/TransferSwitches"),
        "{}",
        p.detail
    );

    let mut counted =
        RedfishPduSource::new(pdu_config(&bmc, &dir, &["RackPDUs", "TransferSwitches"])).unwrap();
    let mut out = Vec::new();
    counted.read(7, &mut out).unwrap();
    assert_eq!(watts(&out, Some(Point::PduInput), "ats-1"), (1, 1500.1));
    let (n, w) = watts(&out, Some(Point::PduOutput), "ats-1.");
    assert!(n == 6 && (w - 1635.3).abs() < 1e-9, "{n} {w}");
    assert_eq!(
        watts(&out, Some(Point::PduInput), "pdu-Row1").0,
        0,
        "FloorPDUs not counted now"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn power_shelf_mockup_input_outlets_and_dc_bus_output() {
    use crate::sources::redfish_pdu::RedfishPduSource;
    let bmc = serve("public-power-shelf", Mode::Normal);
    let dir = scratch("shelf");
    let mut src = RedfishPduSource::new(pdu_config(
        &bmc,
        &dir,
        &["RackPDUs", "FloorPDUs", "PowerShelves"],
    ))
    .unwrap();
    let mut out = Vec::new();
    src.read(7, &mut out).unwrap();
    // PowerShelves/1/Metrics: 6438 W, 56438 kWh.
    assert_eq!(watts(&out, Some(Point::PduInput), "shelf-1"), (1, 6438.0));
    let energy = out
        .iter()
        .find(|r| r.component == "shelf-1" && r.metric == "energy_j")
        .unwrap();
    assert_eq!(energy.value, 56_438.0 * 3.6e6);
    // Outputs: outlets A1 and B1 (192.4 W each) and the DC circuit to the busbar
    // (CircuitType Bus, 816.5 W, 121666 kWh); branch circuits A and B feed the outlets
    // and are not read again.
    let (n, w) = watts(&out, Some(Point::PduOutput), "shelf-1.");
    assert!(n == 3 && (w - 1201.3).abs() < 1e-9, "{n} {w}");
    let dc = out
        .iter()
        .find(|r| r.component == "shelf-1.DC" && r.metric == "energy_j")
        .unwrap();
    assert_eq!(
        (dc.value, dc.point),
        (121_666.0 * 3.6e6, Some(Point::PduOutput))
    );
    assert!(src.notes().is_empty(), "{:?}", src.notes());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_member_listed_twice_counts_once_and_unknown_collections_are_named() {
    use crate::sources::redfish_pdu::RedfishPduSource;
    let root = serde_json::json!({
        "@odata.id": "/redfish/v1/PowerEquipment",
        "RackPDUs": {"@odata.id": "/redfish/v1/PowerEquipment/RackPDUs"},
        "ElectricalBuses": {"@odata.id": "/redfish/v1/PowerEquipment/ElectricalBuses"},
        "Generators": {"@odata.id": "/redfish/v1/PowerEquipment/Generators"},
        "Status": {"State": "Enabled"}
    });
    let pdu = "/redfish/v1/PowerEquipment/RackPDUs/1";
    let twice = collection("/redfish/v1/PowerEquipment/RackPDUs", &[pdu, pdu]);
    let buses = collection("/redfish/v1/PowerEquipment/ElectricalBuses", &[pdu]);
    let (bmc, copy) = serve_edited(
        "public-pdu",
        "twice",
        &[
            ("PowerEquipment", root),
            ("PowerEquipment/RackPDUs", twice),
            ("PowerEquipment/ElectricalBuses", buses),
        ],
    );
    let dir = scratch("twice-cfg");
    let mut src = RedfishPduSource::new(pdu_config(&bmc, &dir, &["RackPDUs"])).unwrap();
    let mut out = Vec::new();
    src.read(7, &mut out).unwrap();
    assert_eq!(
        watts(&out, Some(Point::PduInput), "pdu-1"),
        (1, 6438.0),
        "once"
    );
    assert!((watts(&out, Some(Point::PduOutput), "pdu-1.").1 - 2714.5).abs() < 1e-9);
    assert_eq!(
        watts(&out, None, "bus-").0,
        0,
        "listed by two collections: read once"
    );
    assert!(
        src.notes().iter().any(|n| n.contains("PowerEquipment lists Generators, which this dcwatt does not read")),
        "{:?}",
        src.notes()
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(copy.parent().unwrap());
}

/// The discovery's error, as the log shows it.
fn error_of(cfg: RedfishConfig) -> String {
    RedfishSource::new(cfg)
        .unwrap()
        .read_power()
        .unwrap_err()
        .to_string()
}

/// A collection resource listing `members`, in order, duplicates included.
fn collection(id: &str, members: &[&str]) -> serde_json::Value {
    let members: Vec<serde_json::Value> = members
        .iter()
        .map(|m| serde_json::json!({ "@odata.id": m }))
        .collect();
    serde_json::json!({ "@odata.id": id, "Members": members })
}

#[test]
fn a_blade_enclosure_says_which_chassis_decided_and_what_to_set() {
    let bmc = serve("public-bladed", Mode::Normal);
    let dir = scratch("bladed");
    let cfg = config(&bmc, &dir);
    let e = error_of(cfg.clone());
    assert!(e.contains("no chassis gives whole-system power"), "{e}");
    assert!(
        e.contains("/redfish/v1/Chassis/MultiBladeEncl (Enclosure): Enclosure, not a server"),
        "{e}"
    );
    assert!(
        e.contains("/redfish/v1/Chassis/Blade1 (Blade): offers no EnvironmentMetrics, PowerSubsystem or Power"),
        "{e}"
    );
    assert!(!e.contains("404"), "the cause, not the last 404: {e}");
    assert!(e.contains("set chassis"), "{e}");
    // Chosen explicitly, the enclosure's own resource decides.
    let encl = RedfishConfig {
        chassis: Some("MultiBladeEncl".into()),
        ..cfg
    };
    let e = error_of(encl);
    assert!(
        e.contains(
            "/redfish/v1/Chassis/MultiBladeEncl/Power has no PowerControl[0].PowerConsumedWatts"
        ),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_network_card_or_a_power_shelf_is_never_the_host() {
    // The SmartNIC's card chassis listed first: the server is still the one read.
    let list = collection(
        "/redfish/v1/Chassis",
        &[
            "/redfish/v1/Chassis/Card1",
            "/redfish/v1/Chassis/1U",
            "/redfish/v1/Chassis/1U",
        ],
    );
    let (bmc, copy) = serve_edited("public-smartnic", "nic", &[("Chassis", list.clone())]);
    let dir = scratch("nic-cfg");
    let mut src = RedfishSource::new(config(&bmc, &dir)).unwrap();
    let (r, path) = src.read_power().unwrap();
    assert_eq!((r.watts, path), (374.0, PowerPath::EnvironmentMetrics));
    assert_eq!(src.found.as_ref().unwrap().0, "/redfish/v1/Chassis/1U");
    drop(bmc);
    let _ = std::fs::remove_dir_all(copy.parent().unwrap());

    // Two servers behind one service: named, with the key that chooses.
    let mut card: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("public-smartnic/Chassis/Card1/index.json"))
            .unwrap(),
    )
    .unwrap();
    card["ChassisType"] = "Sled".into();
    let (bmc, copy) = serve_edited(
        "public-smartnic",
        "two",
        &[("Chassis", list), ("Chassis/Card1", card)],
    );
    let e = error_of(config(&bmc, &dir));
    assert!(
        e.contains("several chassis give whole-system power: /redfish/v1/Chassis/Card1 (Sled, EnvironmentMetrics), /redfish/v1/Chassis/1U (RackMount, EnvironmentMetrics)")
            && e.contains("set chassis"),
        "{e}"
    );
    drop(bmc);
    let _ = std::fs::remove_dir_all(copy.parent().unwrap());

    // A power shelf's chassis has power, but it is not a host's.
    let bmc = serve("public-power-shelf", Mode::Normal);
    let e = error_of(config(&bmc, &dir));
    assert!(
        e.contains("/redfish/v1/Chassis/PowerShelf (no ChassisType): power distribution equipment"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_power_supply_listed_twice_counts_once() {
    let bay = |n: u8| format!("/redfish/v1/Chassis/1U/PowerSubsystem/PowerSupplies/Bay{n}");
    let supplies = collection(
        "/redfish/v1/Chassis/1U/PowerSubsystem/PowerSupplies",
        &[&bay(1), &bay(1), &bay(2)],
    );
    let (bmc, copy) = serve_edited(
        "public-liquid-cooled-server",
        "psu-twice",
        &[("Chassis/1U/PowerSubsystem/PowerSupplies", supplies)],
    );
    let dir = scratch("psu-cfg");
    let psu = RedfishConfig {
        path: PowerPath::PowerSubsystem,
        ..config(&bmc, &dir)
    };
    let (r, _) = RedfishSource::new(psu).unwrap().read_power().unwrap();
    assert_eq!(r.watts, 937.4, "Bay1 once");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(copy.parent().unwrap());
}
