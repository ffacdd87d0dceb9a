//! A real headless browser: Debian's Chromium, driven by Debian's
//! chromedriver through the WebDriver HTTP API (W3C), spoken here over a
//! plain loopback socket. Nothing is downloaded: without the packages
//! `Browser::start` panics and says which one is missing (so a test that
//! needs it fails, never passes).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::daemon::{free_port, Running};

/// Where Debian puts them; PATH is searched first.
const CHROMIUM: &[&str] = &["chromium", "/usr/bin/chromium"];
const CHROMEDRIVER: &[&str] = &["chromedriver", "/usr/bin/chromedriver"];

pub struct Browser {
    port: u16,
    session: String,
    _driver: Running,
    _profile: tempfile::TempDir,
}

fn find(candidates: &[&str]) -> Option<PathBuf> {
    for c in candidates {
        if c.contains('/') {
            if Path::new(c).is_file() {
                return Some(PathBuf::from(c));
            }
        } else if let Some(p) =
            std::env::var_os("PATH").iter().flat_map(std::env::split_paths).map(|dir| dir.join(c)).find(|p| p.is_file())
        {
            return Some(p);
        }
    }
    None
}

impl Browser {
    /// chromedriver on a free loopback port and one headless Chromium
    /// session with a fresh profile.
    pub fn start() -> Browser {
        let missing = |what: &str| -> ! {
            panic!(
                "this test needs {what} (Debian: apt-get install chromium chromium-driver; .ci/run installs them); not found"
            )
        };
        let chromium = find(CHROMIUM).unwrap_or_else(|| missing("chromium"));
        let chromedriver = find(CHROMEDRIVER).unwrap_or_else(|| missing("chromedriver"));
        let profile = tempfile::tempdir().unwrap();
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let driver = Running(driver);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if request(port, "GET", "/status", None).is_ok_and(|v| v["value"]["ready"] == json!(true)) {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Flags that work as root in a container, and keep the browser
        // from reaching anything but the pages it is sent to.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,1600",
        ]
        .map(String::from)
        .into_iter()
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium.display().to_string(), "args": args},
        }}});
        let created = request(port, "POST", "/session", Some(&caps)).unwrap_or_else(|e| panic!("new session: {e}"));
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session from chromedriver: {created}"))
            .to_owned();
        Browser { port, session, _driver: driver, _profile: profile }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let v = request(self.port, method, &path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        v["value"].clone()
    }

    pub fn open(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Runs `script` (a function body: `return …`) in the page.
    pub fn eval(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", Some(&json!({ "script": script, "args": [] })))
    }

    /// A PNG of the window.
    pub fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let data = self.call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD.decode(data.as_str().expect("base64 text")).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = request(self.port, "DELETE", &format!("/session/{}", self.session), None);
    }
}

/// One WebDriver request: JSON in, JSON out; an error answer is an `Err`.
fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    // chromedriver keeps the connection open whatever the request says:
    // read the header, then the body by its length (or to the end).
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let split = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the HTTP header".into());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut payload = raw[split + 4..].to_vec();
    let length =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(length) => {
            while payload.len() < length {
                let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("connection closed in the body".into());
                }
                payload.extend_from_slice(&buf[..n]);
            }
        }
        None => {
            stream.read_to_end(&mut payload).map_err(|e| e.to_string())?;
        }
    }
    if head.contains("transfer-encoding: chunked") {
        payload = dechunk(&payload);
    }
    let v: Value = serde_json::from_slice(&payload)
        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&payload).chars().take(300).collect::<String>()))?;
    if v["value"].get("error").is_some() {
        return Err(format!("{}: {}", v["value"]["error"], v["value"]["message"]));
    }
    Ok(v)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
    out
}
