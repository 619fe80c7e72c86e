//! `ipmi`: whole-system input power from the BMC's DCMI "Get Power Reading", through
//! `ipmitool dcmi power reading` or FreeIPMI's `ipmi-dcmi --get-system-power-statistics`,
//! in-band (/dev/ipmi0) or over the LAN (lanplus).
//!
//! Only the instantaneous reading is published (`power_w`, `point = it_input`): the
//! minimum, maximum and average cover the BMC's own statistics window, often days since
//! the BMC booted, and are not current power.

use super::{Probe, Source, SourceError};
use dcwatt_common::protocol::{Point, Reading};
use dcwatt_common::secret::Secret;
use serde::Deserialize;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Source type name.
pub const KIND: &str = "ipmi";

/// Which command-line tool to run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tool {
    /// `ipmitool dcmi power reading`.
    #[default]
    Ipmitool,
    /// FreeIPMI `ipmi-dcmi --get-system-power-statistics`.
    Freeipmi,
}

/// `[[sources]] type = "ipmi"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpmiConfig {
    /// ipmitool (default) or freeipmi.
    #[serde(default)]
    pub tool: Tool,
    /// Path of the program, when not the usual name on PATH.
    pub program: Option<PathBuf>,
    /// BMC address for IPMI over LAN (lanplus); in-band through /dev/ipmi0 when absent.
    pub host: Option<String>,
    /// BMC UDP port (623 when absent).
    pub port: Option<u16>,
    /// BMC user name.
    pub username: Option<String>,
    /// File holding the BMC password; else the `IPMI_PASSWORD` environment variable.
    pub password_file: Option<PathBuf>,
    /// lanplus cipher suite (ipmitool's default is 17; many BMCs want 3).
    pub cipher_suite: Option<u8>,
    /// How long one reading may take, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Own interval, a multiple of the agent's (BMCs refresh every few seconds at best).
    pub interval_secs: Option<u64>,
}

fn default_timeout() -> u64 {
    5
}

/// Parses `ipmitool dcmi power reading`.
///
/// # Errors
/// No reading in the output, or the BMC says the measurement is deactivated.
pub fn parse_ipmitool(out: &str) -> Result<f64, SourceError> {
    for line in out.lines() {
        let line = line.trim();
        if let Some(state) = line.strip_prefix("Power reading state is:") {
            if state.trim().eq_ignore_ascii_case("deactivated") {
                return Err(SourceError::Unavailable(
                    "the BMC's DCMI power reading is deactivated (enable power monitoring in the BMC)".to_owned(),
                ));
            }
        }
    }
    watts_after(out, "Instantaneous power reading:")
}

/// Parses `ipmi-dcmi --get-system-power-statistics`.
///
/// # Errors
/// No reading in the output, or the BMC says the measurement is not active.
pub fn parse_freeipmi(out: &str) -> Result<f64, SourceError> {
    for line in out.lines() {
        if let Some((key, value)) = line.split_once(':') {
            if key.trim() == "Power Measurement" && !value.trim().eq_ignore_ascii_case("active") {
                return Err(SourceError::Unavailable(format!(
                    "the BMC's DCMI power measurement is {}",
                    value.trim()
                )));
            }
        }
    }
    watts_after(out, "Current Power")
}

fn watts_after(out: &str, key: &str) -> Result<f64, SourceError> {
    let line = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(key))
        .ok_or_else(|| {
            SourceError::Read(format!("no {key:?} line in the output: {:?}", out.trim()))
        })?;
    let value = line[key.len()..].trim_start_matches([' ', ':', '\t']);
    let mut parts = value.split_whitespace();
    let (Some(n), Some(unit)) = (parts.next(), parts.next()) else {
        return Err(SourceError::Read(format!("cannot parse {line:?}")));
    };
    if !unit.eq_ignore_ascii_case("watts") {
        return Err(SourceError::Read(format!("unexpected unit in {line:?}")));
    }
    n.parse::<f64>()
        .map_err(|e| SourceError::Read(format!("{line:?}: {e}")))
}

/// Runs a command, killing it after `timeout`.
///
/// # Errors
/// It could not start, timed out, or failed.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<String, SourceError> {
    let what = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SourceError::Unavailable(format!("cannot run {what}: {e}")))?;
    let pipe = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = p {
                let _ = p.read_to_string(&mut s);
            }
            s
        })
    };
    let out = pipe(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = pipe(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SourceError::Read(format!(
                    "{what} timed out after {timeout:?}"
                )));
            }
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if status.success() {
        Ok(stdout)
    } else {
        Err(SourceError::Read(format!(
            "{what} failed ({status}): {}",
            stderr.trim()
        )))
    }
}

/// The DCMI reader.
pub struct IpmiSource {
    cfg: IpmiConfig,
    password: Option<Secret>,
}

impl IpmiSource {
    /// Reads the password (file, else `IPMI_PASSWORD`).
    ///
    /// # Errors
    /// The password file cannot be read.
    pub fn new(cfg: IpmiConfig) -> Result<Self, SourceError> {
        let password = match &cfg.password_file {
            Some(f) => Some(
                Secret::from_file(f)
                    .map_err(|e| SourceError::Unavailable(format!("{}: {e}", f.display())))?,
            ),
            None => std::env::var("IPMI_PASSWORD").ok().map(Secret::new),
        };
        Ok(IpmiSource { cfg, password })
    }

    fn command(&self) -> Command {
        let c = &self.cfg;
        let default = match c.tool {
            Tool::Ipmitool => "ipmitool",
            Tool::Freeipmi => "ipmi-dcmi",
        };
        let mut cmd = Command::new(c.program.clone().unwrap_or_else(|| PathBuf::from(default)));
        match c.tool {
            Tool::Ipmitool => {
                if let Some(host) = &c.host {
                    cmd.args(["-I", "lanplus", "-H", host]);
                    if let Some(p) = c.port {
                        cmd.args(["-p", &p.to_string()]);
                    }
                    if let Some(u) = &c.username {
                        cmd.args(["-U", u]);
                    }
                    if let Some(cs) = c.cipher_suite {
                        cmd.args(["-C", &cs.to_string()]);
                    }
                    // -E: the password comes from IPMI_PASSWORD, never the command line.
                    cmd.arg("-E");
                    if let Some(p) = &self.password {
                        cmd.env("IPMI_PASSWORD", p.expose());
                    }
                }
                cmd.args(["dcmi", "power", "reading"]);
            }
            Tool::Freeipmi => {
                cmd.arg("--get-system-power-statistics");
                if let Some(host) = &c.host {
                    cmd.args(["-h", host, "-D", "LAN_2_0"]);
                    if let Some(u) = &c.username {
                        cmd.args(["-u", u]);
                    }
                    if let Some(cs) = c.cipher_suite {
                        cmd.args(["-I", &cs.to_string()]);
                    }
                    if let Some(p) = &self.password {
                        // FreeIPMI takes the password as an argument only.
                        cmd.args(["-p", p.expose()]);
                    }
                }
            }
        }
        cmd
    }
}

impl Source for IpmiSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn read(&mut self, now_ms: i64, out: &mut Vec<Reading>) -> Result<(), SourceError> {
        let text = run_with_timeout(
            self.command(),
            Duration::from_secs(self.cfg.timeout_secs.max(1)),
        )?;
        let watts = match self.cfg.tool {
            Tool::Ipmitool => parse_ipmitool(&text)?,
            Tool::Freeipmi => parse_freeipmi(&text)?,
        };
        out.push(
            Reading::gauge("power_w", watts, now_ms)
                .at(Point::ItInput)
                .from_source("ipmi_dcmi"),
        );
        Ok(())
    }
}

/// Says whether in-band IPMI is possible here.
pub fn probe() -> Probe {
    let devices = ["/dev/ipmi0", "/dev/ipmi/0", "/dev/ipmidev/0"];
    let found = devices.iter().find(|d| std::path::Path::new(d).exists());
    let tool = ["ipmitool", "ipmi-dcmi"].into_iter().find(|t| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
    });
    match (found, tool) {
        (Some(d), Some(t)) => Probe { kind: KIND, available: true, detail: format!("in-band through {d} with {t}") },
        (None, _) => Probe {
            kind: KIND,
            available: false,
            detail: "no IPMI device (/dev/ipmi0): no BMC, or the ipmi_si/ipmi_devintf modules are not loaded; a BMC over LAN needs host, username and password configured".to_owned(),
        },
        (Some(d), None) => Probe {
            kind: KIND,
            available: false,
            detail: format!("{d} exists but neither ipmitool nor ipmi-dcmi (FreeIPMI) is installed"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPMITOOL: &str = "
    Instantaneous power reading:                   144 Watts
    Minimum during sampling period:                 66 Watts
    Maximum during sampling period:                206 Watts
    Average power reading over sample period:      148 Watts
    IPMI timestamp:                           Sat Oct 23 08:25:52 2021
    Sampling period:                          01987338 Seconds.
    Power reading state is:                   activated
";

    const FREEIPMI: &str = "Current Power                        : 164 Watts
Minimum Power over sampling duration : 48 watts
Maximum Power over sampling duration : 361 watts
Average Power over sampling duration : 157 watts
Time Stamp                           : 12/29/2023 - 08:58:00
Statistics reporting time period     : 1473439000 milliseconds
Power Measurement                    : Active
";

    #[test]
    fn parses_both_tools_instantaneous_only() {
        assert_eq!(parse_ipmitool(IPMITOOL).unwrap(), 144.0);
        assert_eq!(parse_freeipmi(FREEIPMI).unwrap(), 164.0);
        assert_eq!(
            parse_ipmitool("Instantaneous power reading: 350 watts").unwrap(),
            350.0
        );
    }

    #[test]
    fn deactivated_and_garbage_are_errors() {
        let off = IPMITOOL.replace("activated", "deactivated");
        assert!(matches!(
            parse_ipmitool(&off),
            Err(SourceError::Unavailable(_))
        ));
        let inactive = FREEIPMI.replace(": Active", ": Inactive");
        assert!(matches!(
            parse_freeipmi(&inactive),
            Err(SourceError::Unavailable(_))
        ));
        assert!(parse_ipmitool("Error: Unable to establish IPMI v2 / RMCP+ session").is_err());
        assert!(parse_ipmitool("Instantaneous power reading: lots Watts").is_err());
        assert!(parse_freeipmi("Current Power : 12 Amps").is_err());
    }
}

#[cfg(test)]
mod subprocess_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in for ipmitool / ipmi-dcmi: a shell script printing a recorded output (no BMC
    /// can run here; the real ipmitool against a DCMI simulator is the e2e test's job).
    fn stand_in(dir: &std::path::Path, name: &str, body: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn cfg(tool: Tool, program: PathBuf) -> IpmiConfig {
        IpmiConfig {
            tool,
            program: Some(program),
            host: Some("10.0.0.9".into()),
            port: Some(6230),
            username: Some("admin".into()),
            password_file: None,
            cipher_suite: Some(3),
            timeout_secs: 1,
            interval_secs: None,
        }
    }

    fn dir(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("dcwatt-ipmi-{tag}-{}", std::process::id()))
    }

    #[test]
    fn ipmitool_over_lan_gets_the_password_from_the_environment() {
        let d = dir("ipmitool");
        let pw = d.join("pw");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(&pw, "s3cret\n").unwrap();
        // Prints the reading only when called as expected, with the password in IPMI_PASSWORD.
        let prog = stand_in(
            &d,
            "ipmitool",
            r#"[ "$*" = "-I lanplus -H 10.0.0.9 -p 6230 -U admin -C 3 -E dcmi power reading" ] || { echo "bad args: $*" >&2; exit 1; }
[ "$IPMI_PASSWORD" = "s3cret" ] || { echo "no password" >&2; exit 1; }
echo "    Instantaneous power reading:                   350 Watts"
echo "    Average power reading over sample period:      148 Watts"
echo "    Power reading state is:                   activated""#,
        );
        let mut c = cfg(Tool::Ipmitool, prog);
        c.password_file = Some(pw);
        let mut src = IpmiSource::new(c).unwrap();
        let mut out = Vec::new();
        src.read(9, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].value, out[0].point, out[0].source.as_deref()),
            (350.0, Some(Point::ItInput), Some("ipmi_dcmi"))
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn freeipmi_output_and_failures() {
        let d = dir("freeipmi");
        let prog = stand_in(&d, "ipmi-dcmi", "echo 'Current Power                        : 164 Watts'\necho 'Power Measurement                    : Active'");
        let mut out = Vec::new();
        IpmiSource::new(cfg(Tool::Freeipmi, prog))
            .unwrap()
            .read(1, &mut out)
            .unwrap();
        assert_eq!(out[0].value, 164.0);
        let failing = stand_in(
            &d,
            "failing",
            "echo 'Error: Unable to establish IPMI v2 / RMCP+ session' >&2; exit 1",
        );
        let e = IpmiSource::new(cfg(Tool::Ipmitool, failing))
            .unwrap()
            .read(1, &mut out)
            .unwrap_err();
        assert!(e.to_string().contains("RMCP+ session"), "{e}");
        let missing = IpmiSource::new(cfg(Tool::Ipmitool, d.join("nope")))
            .unwrap()
            .read(1, &mut out)
            .unwrap_err();
        assert!(matches!(missing, SourceError::Unavailable(_)), "{missing}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_hanging_bmc_is_cut_off_at_the_timeout() {
        let d = dir("hang");
        let prog = stand_in(&d, "ipmitool", "exec sleep 30");
        let started = Instant::now();
        let e = IpmiSource::new(cfg(Tool::Ipmitool, prog))
            .unwrap()
            .read(1, &mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("timed out"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
