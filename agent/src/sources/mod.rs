//! Sources: one module per kind of thing the agent can read, behind one [`Source`] trait
//! and one tagged configuration enum (`type = "sim"`).
//!
//! Sources know nothing of MQTT or batches: they turn a moment into readings in SI units,
//! converting vendor units at this edge, once.

pub mod dlt645;
pub mod estimate;
pub mod hwmon;
pub mod ipmi;
pub mod modbus;
pub mod nvml;
pub mod rapl;
pub mod redfish;
pub mod redfish_pdu;
pub mod sim;
pub mod snmp;
pub mod sysinfo;

use dcwatt_common::protocol::Reading;
use dcwatt_common::settings::Problems;
use serde::Deserialize;

/// Why a read failed. The scheduler logs it (rate-limited) and carries on with the other
/// sources.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The thing to read is not there on this host.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Reading failed this time.
    #[error("read failed: {0}")]
    Read(String),
}

/// The component of a device's readings when the configuration names none.
pub(crate) fn default_component() -> String {
    "system".to_owned()
}

impl SourceError {
    /// The message without its kind, for tables that show the kind already.
    pub fn detail(&self) -> &str {
        match self {
            SourceError::Unavailable(m) | SourceError::Read(m) => m,
        }
    }
}

#[cfg(test)]
pub(crate) mod fake;

/// Something the agent can sample.
pub trait Source: Send {
    /// The source type name, as in configuration and in each reading's `source`.
    fn kind(&self) -> &'static str;

    /// Appends the readings for the instant `now_ms` to `out`.
    ///
    /// # Errors
    /// The source could not be read this time.
    fn read(&mut self, now_ms: i64, out: &mut Vec<Reading>) -> Result<(), SourceError>;

    /// GPUs this source found, for the birth inventory.
    fn gpus(&self) -> Vec<dcwatt_common::protocol::GpuInventory> {
        Vec::new()
    }

    /// What the last read found worth a warning without failing (logged once by the
    /// source; `probe` prints it).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Whether a source type can read on this host, as `dcwatt-agent probe` prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Probe {
    /// Source type name.
    #[serde(rename = "source")]
    pub kind: &'static str,
    /// True when it can read here.
    pub available: bool,
    /// What it found, or exactly what is missing and how to fix it.
    pub detail: String,
}

/// `[[sources]]` entries, tagged by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// CPU, load, memory and disk through the sysinfo crate.
    Sysinfo(sysinfo::SysinfoConfig),
    /// A deterministic simulated power meter.
    Sim(sim::SimConfig),
    /// CPU package and DRAM energy from powercap (RAPL): components, never PUE points.
    Rapl(rapl::RaplConfig),
    /// hwmon power, energy and temperatures; the ACPI power meter is whole-system power.
    Hwmon(hwmon::HwmonConfig),
    /// DCMI power reading from the BMC through ipmitool or FreeIPMI.
    Ipmi(ipmi::IpmiConfig),
    /// Whole-system power estimated from CPU utilization.
    Estimate(estimate::EstimateConfig),
    /// Whole-system power (and energy) from the BMC over Redfish.
    Redfish(redfish::RedfishConfig),
    /// NVIDIA GPUs through NVML.
    Nvml(nvml::NvmlConfig),
    /// A power meter over Modbus TCP.
    Modbus(modbus::ModbusConfig),
    /// A DL/T 645-2007 revenue meter through a serial-to-Ethernet converter.
    Dlt645(dlt645::Dlt645Config),
    /// Rack and floor PDUs over Redfish PowerEquipment.
    RedfishPdu(redfish_pdu::RedfishPduConfig),
    /// UPSs and PDUs over SNMP.
    Snmp(snmp::SnmpConfig),
}

impl SourceConfig {
    /// What a host runs when no source is configured.
    pub fn default_host() -> Self {
        SourceConfig::Sysinfo(sysinfo::SysinfoConfig::default())
    }

    /// The source type name.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Sysinfo(_) => sysinfo::KIND,
            SourceConfig::Sim(_) => sim::KIND,
            SourceConfig::Rapl(_) => rapl::KIND,
            SourceConfig::Hwmon(_) => hwmon::KIND,
            SourceConfig::Ipmi(_) => ipmi::KIND,
            SourceConfig::Estimate(_) => estimate::KIND,
            SourceConfig::Redfish(_) => redfish::KIND,
            SourceConfig::Nvml(_) => nvml::KIND,
            SourceConfig::Modbus(_) => modbus::KIND,
            SourceConfig::Dlt645(_) => dlt645::KIND,
            SourceConfig::RedfishPdu(_) => redfish_pdu::KIND,
            SourceConfig::Snmp(_) => snmp::KIND,
        }
    }

    /// The source's own interval, when it has one.
    pub fn interval_secs(&self) -> Option<u64> {
        match self {
            SourceConfig::Sysinfo(c) => c.interval_secs,
            SourceConfig::Sim(c) => c.interval_secs,
            SourceConfig::Rapl(c) => c.interval_secs,
            SourceConfig::Hwmon(c) => c.interval_secs,
            SourceConfig::Ipmi(c) => c.interval_secs,
            SourceConfig::Estimate(c) => c.interval_secs,
            SourceConfig::Redfish(c) => c.interval_secs,
            SourceConfig::Nvml(c) => c.interval_secs,
            SourceConfig::Modbus(c) => c.interval_secs,
            SourceConfig::Dlt645(c) => c.interval_secs,
            SourceConfig::RedfishPdu(c) => c.interval_secs,
            SourceConfig::Snmp(c) => c.interval_secs,
        }
    }

    /// Records every problem with this entry under `path`.
    pub fn validate(&self, path: &str, agent_interval_secs: u64, p: &mut Problems) {
        if let Some(i) = self.interval_secs() {
            if i == 0 || agent_interval_secs == 0 || i % agent_interval_secs != 0 {
                p.push(
                    format!("{path}.interval_secs"),
                    format!("must be a positive multiple of the agent's interval_secs ({agent_interval_secs})"),
                );
            }
        }
        match self {
            SourceConfig::Sim(c) => c.validate(path, p),
            SourceConfig::Estimate(c) => c.validate(path, p),
            SourceConfig::Modbus(c) => c.validate(path, p),
            SourceConfig::Dlt645(c) => c.validate(path, p),
            SourceConfig::Snmp(c) => c.validate(path, p),
            SourceConfig::Ipmi(c) if c.timeout_secs == 0 || c.timeout_secs > 120 => {
                p.push(format!("{path}.timeout_secs"), "must be 1..=120");
            }
            SourceConfig::Redfish(c) if c.timeout_secs == 0 || c.timeout_secs > 120 => {
                p.push(format!("{path}.timeout_secs"), "must be 1..=120");
            }
            _ => {}
        }
        // Every file a source will read (passwords, CA certificates) must be readable now,
        // so that check-config catches a missing secret before the agent starts.
        for (key, file) in self.files() {
            if let Err(e) = std::fs::File::open(file) {
                p.push(
                    format!("{path}.{key}"),
                    format!("cannot read {}: {e}", file.display()),
                );
            }
        }
    }

    /// What is valid but will not do what an operator likely wants: a facility device
    /// whose power and energy have no measurement point never counts towards PUE.
    pub fn warnings(&self, path: &str) -> Vec<String> {
        let unplaced = match self {
            SourceConfig::Snmp(c) => {
                c.point.is_none()
                    && c.oid_map().iter().any(|e| {
                        e.point.is_none()
                            && matches!(e.metric.as_str(), "power_w" | "energy_j")
                            && !c.disable.contains(&e.name())
                    })
            }
            SourceConfig::Modbus(c) => c.point.is_none(),
            SourceConfig::Dlt645(c) => c.point.is_none(),
            _ => false,
        };
        if unplaced {
            vec![format!(
                "{path}: its power and energy have no point, so they never count towards PUE (set point, e.g. point = \"pdu_input\")"
            )]
        } else {
            Vec::new()
        }
    }

    /// The files this source reads, by key.
    fn files(&self) -> Vec<(&'static str, &std::path::Path)> {
        let named: Vec<(&'static str, Option<&std::path::PathBuf>)> = match self {
            SourceConfig::Redfish(c) => vec![
                ("password_file", c.password_file.as_ref()),
                ("ca_file", c.ca_file.as_ref()),
            ],
            SourceConfig::RedfishPdu(c) => vec![
                ("password_file", c.password_file.as_ref()),
                ("ca_file", c.ca_file.as_ref()),
            ],
            SourceConfig::Snmp(c) => vec![
                ("auth_password_file", c.auth_password_file.as_ref()),
                ("privacy_password_file", c.privacy_password_file.as_ref()),
            ],
            SourceConfig::Ipmi(c) => vec![("password_file", c.password_file.as_ref())],
            _ => Vec::new(),
        };
        named
            .into_iter()
            .filter_map(|(k, f)| f.map(|f| (k, f.as_path())))
            .collect()
    }

    /// Builds the source.
    ///
    /// # Errors
    /// The source cannot start on this host.
    pub fn build(&self) -> Result<Box<dyn Source>, SourceError> {
        Ok(match self {
            SourceConfig::Sysinfo(_) => Box::new(sysinfo::SysinfoSource::new()?),
            SourceConfig::Sim(c) => Box::new(sim::SimSource::new(c.clone())),
            SourceConfig::Rapl(c) => Box::new(rapl::RaplSource::new(c)?),
            SourceConfig::Hwmon(c) => Box::new(hwmon::HwmonSource::new(c)?),
            SourceConfig::Ipmi(c) => Box::new(ipmi::IpmiSource::new(c.clone())?),
            SourceConfig::Estimate(c) => Box::new(estimate::EstimateSource::new(c.clone())?),
            SourceConfig::Redfish(c) => Box::new(redfish::RedfishSource::new(c.clone())?),
            SourceConfig::Nvml(_) => Box::new(nvml::NvmlSource::new()),
            SourceConfig::Modbus(c) => Box::new(modbus::ModbusSource::new(c.clone())?),
            SourceConfig::Dlt645(c) => Box::new(dlt645::Dlt645Source::new(c.clone())?),
            SourceConfig::RedfishPdu(c) => Box::new(redfish_pdu::RedfishPduSource::new(c.clone())?),
            SourceConfig::Snmp(c) => Box::new(snmp::SnmpSource::new(c.clone())?),
        })
    }
}

/// A configured device read once now, for `probe --config`: what it gave and every
/// problem; `None` for the source types that are probed on the host instead.
pub fn probe_configured(cfg: &SourceConfig) -> Option<Probe> {
    let kind = cfg.kind();
    match cfg {
        SourceConfig::Redfish(r) => return Some(redfish::probe_configured(r)),
        SourceConfig::Snmp(_)
        | SourceConfig::RedfishPdu(_)
        | SourceConfig::Modbus(_)
        | SourceConfig::Dlt645(_) => {}
        _ => return None,
    }
    let mut source = match cfg.build() {
        Ok(s) => s,
        Err(e) => {
            return Some(Probe {
                kind,
                available: false,
                detail: e.detail().to_owned(),
            })
        }
    };
    let mut out = Vec::new();
    let result = source.read(dcwatt_common::now_ms(), &mut out);
    let answered = out
        .iter()
        .any(|r| r.metric == "device_up" && r.value == 1.0);
    let values: Vec<String> = out
        .iter()
        .filter(|r| r.metric != "device_up")
        .map(|r| match r.point {
            Some(p) => format!("{} {}@{} = {}", r.component, r.metric, p.as_str(), r.value),
            None => format!("{} {} = {}", r.component, r.metric, r.value),
        })
        .collect();
    let mut detail = if values.is_empty() {
        "nothing read".to_owned()
    } else {
        values.join(", ")
    };
    if let Err(e) = result {
        detail = format!("{detail}; {}", e.detail());
    }
    for note in source.notes() {
        detail = format!("{detail}; note: {note}");
    }
    Some(Probe {
        kind,
        available: answered && !values.is_empty(),
        detail,
    })
}

/// Why a meter's value is not believable, if it is not: the check that turns a wrong
/// word order or scale in the configuration into a rejection with its likely cause.
pub fn implausible(metric: &str, value: f64, max_power_w: f64) -> Option<String> {
    if !value.is_finite() {
        return Some(format!(
            "{metric} = {value}: not a number (wrong type or word order?)"
        ));
    }
    let bad = |what: &str| {
        Some(format!(
            "{metric} = {value}: {what} (wrong scale or word order?)"
        ))
    };
    match metric {
        m if m.ends_with("_w") && value < 0.0 => bad("negative power"),
        m if m.ends_with("_w") && value > max_power_w => {
            bad(&format!("above this device's {max_power_w} W"))
        }
        m if m.ends_with("_j") && value < 0.0 => bad("negative energy"),
        m if m.ends_with("_m3") && value < 0.0 => bad("negative volume"),
        // Mains voltage decodes to roughly 120–480 V; far outside is a decoding error (a
        // dead phase reading 0 V is reported too, which is worth a look anyway).
        m if m.ends_with("_v") && !(50.0..=1_000.0).contains(&value) => {
            bad("voltage outside 50–1000 V")
        }
        m if m.ends_with("_hz") && !(40.0..=70.0).contains(&value) => {
            bad("frequency outside 40–70 Hz")
        }
        m if m.ends_with("_a") && !(0.0..=100_000.0).contains(&value) => {
            bad("current outside 0–100 kA")
        }
        _ => None,
    }
}

/// Probes every source type this build knows, reading sysfs under `sysfs_root`.
pub fn probe_all(sysfs_root: &std::path::Path) -> Vec<Probe> {
    vec![
        sysinfo::probe(),
        rapl::probe(sysfs_root),
        hwmon::probe(sysfs_root),
        ipmi::probe(),
        redfish::probe(),
        nvml::probe(),
        modbus::probe(),
        dlt645::probe(),
        redfish_pdu::probe(),
        snmp::probe(),
        estimate::probe(),
        sim::probe(),
    ]
}

/// The default order in which whole-system (`it_input`) power is taken when several
/// sources offer it: a host is counted once, from its best source.
pub const WHOLE_SYSTEM_ORDER: [&str; 5] = ["redfish", "ipmi", "hwmon", "estimate", "sim"];

/// Keeps `it_input` only on the readings of the best-ranked source that has it; the
/// others keep their values as components (no point), so nothing is counted twice.
/// `produced` pairs each source kind with the range of `readings` it produced.
pub fn keep_one_whole_system(
    readings: &mut [Reading],
    produced: &[(&str, std::ops::Range<usize>)],
    order: &[String],
) {
    use dcwatt_common::protocol::Point;
    let rank = |kind: &str| order.iter().position(|o| o == kind).unwrap_or(usize::MAX);
    let offering = |range: &std::ops::Range<usize>| {
        readings[range.clone()]
            .iter()
            .any(|r| r.point == Some(Point::ItInput))
    };
    let Some(best) = produced
        .iter()
        .filter(|(_, r)| offering(r))
        .min_by_key(|(k, _)| rank(k))
        .map(|(k, r)| (*k, r.clone()))
    else {
        return;
    };
    for (_, range) in produced
        .iter()
        .filter(|(k, r)| *k != best.0 || *r != best.1)
    {
        for r in &mut readings[range.clone()] {
            if r.point == Some(Point::ItInput) {
                r.point = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dcwatt_common::protocol::Point;

    #[test]
    fn one_whole_system_reading_per_host() {
        let p = |src: &str| {
            Reading::gauge("power_w", 1.0, 0)
                .at(Point::ItInput)
                .from_source(src)
        };
        let mut readings = vec![
            p("estimate"),
            Reading::gauge("cpu_util", 0.5, 0),
            p("hwmon"),
            p("ipmi_dcmi"),
        ];
        let produced = [
            ("estimate", 0..1),
            ("sysinfo", 1..2),
            ("hwmon", 2..3),
            ("ipmi", 3..4),
        ];
        let order: Vec<String> = WHOLE_SYSTEM_ORDER.iter().map(|s| (*s).to_owned()).collect();
        keep_one_whole_system(&mut readings, &produced, &order);
        let points: Vec<Option<Point>> = readings.iter().map(|r| r.point).collect();
        assert_eq!(
            points,
            vec![None, None, None, Some(Point::ItInput)],
            "ipmi wins over hwmon and estimate"
        );
        // Without ipmi, the ACPI power meter wins over the estimate.
        let mut readings = vec![p("estimate"), p("hwmon")];
        keep_one_whole_system(
            &mut readings,
            &[("estimate", 0..1), ("hwmon", 1..2)],
            &order,
        );
        assert_eq!(
            readings.iter().map(|r| r.point).collect::<Vec<_>>(),
            vec![None, Some(Point::ItInput)]
        );
    }
}
