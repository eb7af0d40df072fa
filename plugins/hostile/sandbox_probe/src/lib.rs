//! A router that probes its sandbox on every `route` and rejects the request with a report of
//! exactly what happened (nothing in it is hard-coded):
//!
//! `file=denied socket=denied env=0 home=unset clock=0 stdout=ok stderr=ok errors=[...]`
//!
//! - `file`: reads `/etc/hostname` and `/etc/passwd` with `std::fs`: `denied` when neither can be
//!   read, else `read:<path>(<bytes>),...` for those that could.
//! - `socket`: `std::net::TcpStream::connect("127.0.0.1:1")`: `connected`, `refused` (the
//!   network was reachable, nothing listens), or `denied` (any other error).
//! - `env`: `std::env::vars().count()`; `home`: `set` or `unset` (`std::env::var("HOME")`; the
//!   value is never printed).
//! - `clock`: `SystemTime::now()` as whole seconds since the Unix epoch, or `denied` when it is
//!   before the epoch.
//! - `stdout` / `stderr`: `ok` when a line could be written, else `error:<kind>`.
//! - `errors`: the error kind and message of each failed probe, for the test's log.
//!
//! `init` always succeeds.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use mlahost_sdk::{ReplicaState, RequestSummary, Route, Router};

struct Probe;

impl Router for Probe {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Probe)
    }

    fn route(&mut self, _request: &RequestSummary, _replicas: &[ReplicaState]) -> Route {
        Route::Reject(report())
    }
}

mlahost_sdk::export_router!(Probe);

/// Runs every probe and writes the report.
fn report() -> String {
    let mut errors: Vec<String> = Vec::new();

    let mut read = Vec::new();
    for path in ["/etc/hostname", "/etc/passwd"] {
        match std::fs::read(path) {
            Ok(bytes) => read.push(format!("read:{path}({})", bytes.len())),
            Err(e) => errors.push(format!("file {path}: {:?}: {e}", e.kind())),
        }
    }
    let file = if read.is_empty() {
        "denied".to_string()
    } else {
        read.join(",")
    };

    let socket = match std::net::TcpStream::connect("127.0.0.1:1") {
        Ok(_) => "connected",
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "refused",
        Err(e) => {
            errors.push(format!("socket: {:?}: {e}", e.kind()));
            "denied"
        }
    };

    let env = std::env::vars_os().count();
    let home = if std::env::var_os("HOME").is_some() {
        "set"
    } else {
        "unset"
    };

    let clock = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs().to_string(),
        Err(e) => {
            errors.push(format!("clock: {e}"));
            "denied".to_string()
        }
    };

    let stdout = outcome(writeln!(
        std::io::stdout(),
        "sandbox_probe: hello on stdout"
    ));
    let stderr = outcome(writeln!(
        std::io::stderr(),
        "sandbox_probe: hello on stderr"
    ));

    format!(
        "file={file} socket={socket} env={env} home={home} clock={clock} stdout={stdout} stderr={stderr} errors=[{}]",
        errors.join("; ")
    )
}

fn outcome(r: std::io::Result<()>) -> String {
    match r {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("error:{:?}", e.kind()),
    }
}
