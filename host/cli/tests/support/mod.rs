//! A server process for tests, and a minimal HTTP/1.1 client (requests with Connection: close,
//! chunked or sized responses), so the tests need no HTTP client dependency.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

pub fn golden(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("golden.json")).unwrap()).unwrap()
}

pub struct Server {
    child: Child,
    pub addr: String,
    /// The server's stderr so far (the first 4 MiB).
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// Starts `mlahost serve` on a free port with extra flags and waits until /health is 200.
    /// Without `--model` it serves the tiny-v2-lite fixture under that name (the tests' numbers
    /// are checked against its transformers goldens), not the built-in model.
    pub fn start(args: &[&str]) -> Server {
        Self::start_logging(args, "warn")
    }

    /// Like `start`, with the server's log filter (`MLAHOST_LOG`).
    pub fn start_logging(args: &[&str], filter: &str) -> Server {
        let fixture_model = fixture("tiny-v2-lite").to_string_lossy().into_owned();
        let mut defaults: Vec<&str> = Vec::new();
        // a model named by flag or as a positional checkpoint directory
        let names_model = args.iter().any(|a| *a == "--model" || std::path::Path::new(a).join("config.json").is_file());
        if !names_model {
            defaults.extend(["--model", &fixture_model]);
            if !args.contains(&"--served-model-name") {
                defaults.extend(["--served-model-name", "tiny-v2-lite"]);
            }
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_mlahost"))
            .args(["serve", "--port", "0"])
            .args(&defaults)
            .args(args)
            .env("MLAHOST_LOG", filter)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start mlahost");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let addr = loop {
            line.clear();
            if stderr.read_line(&mut line).unwrap() == 0 {
                panic!("server exited before listening");
            }
            if let Some(rest) = line.trim().strip_prefix("mlahost listening on http://") {
                break rest.to_string();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while stderr.read_line(&mut line).unwrap_or(0) > 0 {
                let mut log = sink.lock().unwrap();
                if log.len() < 4 << 20 {
                    log.push_str(&line);
                }
                line.clear();
            }
        });
        let server = Server { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.get("/health").0 != 200 {
            assert!(Instant::now() < deadline, "server not healthy in time");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// A request with `Authorization: Bearer key`.
    pub fn post_with_key(&self, path: &str, body: &str, key: &str) -> Response {
        request_with(&self.addr, "POST", path, Some(body), &[("Authorization", &format!("Bearer {key}"))])
    }

    /// The server process's resident memory in KiB.
    pub fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status.lines().find(|l| l.starts_with("VmRSS")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        let r = request(&self.addr, "GET", path, None);
        (r.status, r.body)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = request(&self.addr, "POST", path, Some(&body.to_string()));
        let v = serde_json::from_str(&r.body).unwrap_or_else(|_| panic!("not JSON: {:?}", r.body));
        (r.status, v)
    }

    pub fn post_raw(&self, path: &str, body: &str) -> Response {
        request(&self.addr, "POST", path, Some(body))
    }

    /// A metric's value summed over its label sets.
    pub fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// A metric's value for one replica (`replica="i"` label).
    pub fn metric_for(&self, name: &str, replica: usize) -> f64 {
        let (_, text) = self.get("/metrics");
        let label = format!("replica=\"{replica}\"");
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until a metric reaches `want` (gauges settle after the engine's next step).
    pub fn wait_metric(&self, name: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.metric(name) != want {
            assert!(Instant::now() < deadline, "{name} stayed at {} (want {want})", self.metric(name));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The `data:` payloads of an SSE body.
    pub fn sse_data(&self) -> Vec<String> {
        self.body.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_string).collect()
    }
}

pub fn open(addr: &str, method: &str, path: &str, body: Option<&str>) -> TcpStream {
    open_with(addr, method, path, body, &[])
}

/// Sends a request with extra headers; the response is left on the stream.
pub fn open_with(addr: &str, method: &str, path: &str, body: Option<&str>, headers: &[(&str, &str)]) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    let body = body.unwrap_or("");
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

pub fn request(addr: &str, method: &str, path: &str, body: Option<&str>) -> Response {
    request_with(addr, method, path, body, &[])
}

pub fn request_with(addr: &str, method: &str, path: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Response {
    let mut s = open_with(addr, method, path, body, headers);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    parse(&raw)
}

/// Parses a whole HTTP/1.1 response (status, headers, sized or chunked body).
pub fn parse_response(raw: &[u8]) -> Response {
    parse(raw)
}

/// `sha256:<hex>` of a key, as `mlahost hash-key` prints it.
pub fn hash_key(key: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mlahost")).args(["hash-key", key]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn parse(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw);
    let (head, rest) = text.split_once("\r\n\r\n").expect("header end");
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { dechunk(rest) } else { rest.to_string() };
    Response { status, headers, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// Builds the example and hostile plugins once per test binary (plugins/build.sh --hostile)
/// and returns the plugins directory.
pub fn plugins_dir() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins");
            let out = Command::new("bash").arg(dir.join("build.sh")).arg("--hostile").output().expect("run plugins/build.sh");
            assert!(out.status.success(), "plugins/build.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
            dir
        })
        .clone()
}

pub fn plugin(name: &str) -> String {
    plugins_dir().join(format!("{name}.wasm")).display().to_string()
}

pub fn hostile(name: &str) -> String {
    plugins_dir().join("target/hostile").join(format!("{name}.wasm")).display().to_string()
}

/// Starts `mlahost serve` expecting it to refuse to start; returns its stderr.
pub fn refuse_to_start(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mlahost"))
        .args(["serve", "--port", "0"])
        .args(args)
        .env("MLAHOST_LOG", "warn")
        .output()
        .expect("run mlahost");
    assert!(!out.status.success(), "the server started");
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Whether python3 imports `modules` (comma-separated). Where it does not, the caller skips with
/// a note, except under MLAHOST_CI=1 (CI installs them: .ci/run), where this fails instead.
pub fn python_has(modules: &str, install: &str) -> bool {
    let ok = Command::new("python3").args(["-c", &format!("import {modules}")]).status().is_ok_and(|s| s.success());
    if !ok {
        assert!(std::env::var("MLAHOST_CI").as_deref() != Ok("1"), "CI must install {modules}: pip install {install}");
        eprintln!("skipped: python3 with {modules} is not available (pip install {install})");
    }
    ok
}

/// Runs a check script of tests/ against `server` at `base_path` (e.g. "/v1") with a served model
/// name; returns its stdout after checking it exited 0 (`what` names the checks in the message).
pub fn run_python_check(script: &str, server: &Server, base_path: &str, model: &str, what: &str) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests").join(script);
    let out = Command::new("python3")
        .arg(&script)
        .args(["--base-url", &format!("http://{}{base_path}", server.addr), "--model", model])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed");
    stdout
}
