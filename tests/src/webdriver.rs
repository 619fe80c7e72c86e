//! A minimal W3C WebDriver client over plain HTTP, driving headless Chromium through
//! Debian's `chromedriver`, for the dashboard tests.

use crate::{free_port, wait_for, Proc, TempDir};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A body-less request with extra headers; returns (status, body).
pub fn http_request_with(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    http_request_full(port, method, path, None, headers)
}

/// One HTTP/1.1 request with an optional JSON body; returns (status, body).
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Option<(u16, String)> {
    http_request_full(port, method, path, body, &[])
}

/// One HTTP/1.1 request with an optional JSON body and extra headers; returns (status,
/// body).
pub fn http_request_full(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let body = body.unwrap_or("");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    // Read the head, then exactly the body: chromedriver may keep the connection open.
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    loop {
        let have = raw.len() - head_end;
        let done = match length {
            Some(len) => have >= len,
            None => raw.ends_with(b"0\r\n\r\n"),
        };
        if done {
            break;
        }
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&raw[head_end..]).into_owned();
    Some((status, body))
}

/// A browser session.
pub struct Browser {
    _driver: Proc,
    port: u16,
    session: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session, or `None` when they are not
    /// installed.
    pub fn start(dir: &TempDir) -> Option<Browser> {
        let driver = crate::find_program("chromedriver")?;
        let chromium = ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .find_map(|n| crate::find_program(n))?;
        let port = free_port();
        let mut cmd = Command::new(driver);
        cmd.arg(format!("--port={port}"));
        let mut proc = Proc::spawn("chromedriver", cmd, dir.0.join("chromedriver.log"));
        wait_for("chromedriver to answer", Duration::from_secs(20), || {
            assert!(proc.running(), "chromedriver exited:\n{}", proc.log());
            http_request(port, "GET", "/status", None)
                .filter(|(s, _)| *s == 200)
                .map(|_| ())
        });
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1100",
                         "--no-first-run", "--disable-extensions",
                         format!("--user-data-dir={}", dir.0.join("chromium-profile").display())]
            },
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let (status, body) = http_request(port, "POST", "/session", Some(&caps.to_string()))
            .expect("chromedriver answers");
        let v: Value = serde_json::from_str(&body).expect("session JSON");
        assert_eq!(status, 200, "cannot start a browser session: {v}");
        let session = v["value"]["sessionId"]
            .as_str()
            .expect("session id")
            .to_owned();
        Some(Browser {
            _driver: proc,
            port,
            session,
        })
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let body = body.map(|b| b.to_string());
        let (status, text) = http_request(self.port, method, &path, body.as_deref())
            .unwrap_or_else(|| panic!("no answer from chromedriver to {method} {path}"));
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(status, 200, "{method} {path}: {v}");
        v["value"].clone()
    }

    /// Opens a URL.
    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs JavaScript in the page and returns what it returns.
    pub fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Waits until `script` returns something other than null/false/empty.
    pub fn wait_js(&self, what: &str, script: &str) -> Value {
        wait_for(what, Duration::from_secs(30), || {
            let v = self.js(script);
            match &v {
                Value::Null | Value::Bool(false) => None,
                Value::String(s) if s.is_empty() => None,
                _ => Some(v),
            }
        })
    }

    /// Clicks the first element matching a CSS selector.
    pub fn click(&self, css: &str) {
        let el = self.call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        let id = el[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {el}"))
            .to_owned();
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    /// The browser console's entries since the last call: (level, message).
    pub fn console(&self) -> Vec<(String, String)> {
        let v = self.call("POST", "/se/log", Some(json!({ "type": "browser" })));
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (
                            e["level"].as_str().unwrap_or_default().to_owned(),
                            e["message"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Saves a PNG screenshot of the viewport to `path`.
    pub fn screenshot(&self, path: &PathBuf) {
        let b64 = self.call("GET", "/screenshot", None);
        let png = decode_base64(b64.as_str().expect("base64 screenshot"));
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http_request(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
    }
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter_map(val) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes() {
        assert_eq!(super::decode_base64("aGVsbG8gd29ybGQ="), b"hello world");
        assert_eq!(super::decode_base64("AAEC/w=="), vec![0, 1, 2, 255]);
    }
}
