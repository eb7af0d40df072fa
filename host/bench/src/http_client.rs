//! A small HTTP/1.1 client over tokio: one request per connection, the response body read as
//! it arrives (sized or chunked), so each server-sent event gets its own arrival time.

use crate::BenchError;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// Sent as `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
    /// Path prefix from the URL, without a trailing slash (e.g. "" or "/proxy").
    pub prefix: String,
}

impl Endpoint {
    /// `http://host[:port][/prefix]`; https is not supported (benchmarks run next to the server).
    pub fn parse(url: &str) -> Result<Self, BenchError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| BenchError::Usage(format!("--url must start with http:// (got {url:?})")))?;
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| BenchError::Usage(format!("bad port in {url:?}")))?),
            None => (authority, 80),
        };
        if host.is_empty() {
            return Err(BenchError::Usage(format!("no host in {url:?}")));
        }
        let prefix = format!("/{}", path.trim_end_matches('/'));
        let prefix = if prefix == "/" { String::new() } else { prefix };
        Ok(Self { host: host.to_string(), port, prefix, api_key: None })
    }
}

pub struct Response {
    pub status: u16,
    reader: BufReader<TcpStream>,
    chunked: bool,
    /// Bytes left in the current chunk (chunked) or in the body (sized; None: until close).
    remaining: Option<usize>,
    done: bool,
    buf: Vec<u8>,
}

pub async fn send(ep: &Endpoint, method: &str, path: &str, body: Option<&str>) -> Result<Response, BenchError> {
    let stream = TcpStream::connect((ep.host.as_str(), ep.port)).await.map_err(|e| BenchError::Http(format!("connect: {e}")))?;
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream);
    let body = body.unwrap_or("");
    let auth = ep.api_key.as_ref().map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {}{path} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        ep.prefix,
        ep.host,
        ep.port,
        body.len()
    );
    let w = reader.get_mut();
    w.write_all(head.as_bytes()).await.map_err(io)?;
    w.write_all(body.as_bytes()).await.map_err(io)?;
    let mut line = String::new();
    reader.read_line(&mut line).await.map_err(io)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| BenchError::Http(format!("bad status line {line:?}")))?;
    let (mut chunked, mut length) = (false, None);
    loop {
        line.clear();
        if reader.read_line(&mut line).await.map_err(io)? == 0 {
            return Err(BenchError::Http("connection closed in the headers".into()));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = v.parse().ok();
            }
        }
    }
    Ok(Response { status, reader, chunked, remaining: if chunked { Some(0) } else { length }, done: false, buf: Vec::new() })
}

fn io(e: std::io::Error) -> BenchError {
    BenchError::Http(e.to_string())
}

impl Response {
    /// The next body bytes as they arrive; None at the end.
    async fn next_bytes(&mut self) -> Result<Option<Vec<u8>>, BenchError> {
        if self.done {
            return Ok(None);
        }
        if self.chunked {
            if self.remaining == Some(0) {
                let mut size = String::new();
                // Skip the CRLF that ends the previous chunk, then read the size line.
                while size.trim().is_empty() {
                    size.clear();
                    if self.reader.read_line(&mut size).await.map_err(io)? == 0 {
                        return Err(BenchError::Http("connection closed mid-stream".into()));
                    }
                }
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| BenchError::Http(format!("bad chunk size {size:?}")))?;
                if n == 0 {
                    self.done = true;
                    return Ok(None);
                }
                self.remaining = Some(n);
            }
            let want = self.remaining.unwrap_or(0).min(64 * 1024);
            let mut chunk = vec![0u8; want];
            let got = self.reader.read(&mut chunk).await.map_err(io)?;
            if got == 0 {
                return Err(BenchError::Http("connection closed mid-stream".into()));
            }
            chunk.truncate(got);
            self.remaining = Some(self.remaining.unwrap_or(0) - got);
            return Ok(Some(chunk));
        }
        let want = self.remaining.map_or(64 * 1024, |r| r.min(64 * 1024));
        if want == 0 {
            self.done = true;
            return Ok(None);
        }
        let mut chunk = vec![0u8; want];
        let got = self.reader.read(&mut chunk).await.map_err(io)?;
        if got == 0 {
            self.done = true;
            if self.remaining.is_some_and(|r| r > 0) {
                return Err(BenchError::Http("connection closed before the body ended".into()));
            }
            return Ok(None);
        }
        chunk.truncate(got);
        if let Some(r) = &mut self.remaining {
            *r -= got;
        }
        Ok(Some(chunk))
    }

    /// The next line of the body (without the newline); None at the end.
    pub async fn next_line(&mut self) -> Result<Option<String>, BenchError> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(Some(String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string()));
            }
            match self.next_bytes().await? {
                Some(b) => self.buf.extend_from_slice(&b),
                None if self.buf.is_empty() => return Ok(None),
                None => return Ok(Some(String::from_utf8_lossy(&std::mem::take(&mut self.buf)).to_string())),
            }
        }
    }

    pub async fn text(mut self) -> Result<String, BenchError> {
        let mut out = Vec::new();
        while let Some(b) = self.next_bytes().await? {
            out.extend_from_slice(&b);
        }
        Ok(String::from_utf8_lossy(&out).to_string())
    }
}
