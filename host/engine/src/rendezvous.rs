//! How the processes of one model instance spread over several nodes find each other before
//! the collectives start (torchrun's names: `--nnodes`, `--node-rank`, `--master-addr`,
//! `--master-port`). Node 0 listens, makes the group's id (NCCL's unique id; opaque bytes here)
//! and hands it to every other node once all have joined, so they initialise together. Each
//! node says which rank it is, how many nodes it expects and a fingerprint of what it will run
//! (the model and layout); a node that disagrees, claims a rank out of range or one already
//! taken is refused with the reason, and node 0 waits on for the right one until its deadline.

use crate::{EngineError, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

const PROTOCOL: u32 = 1;
/// A joining node's hello or node 0's answer is one JSON line of at most this many bytes.
const MAX_LINE: u64 = 64 << 10;

/// One node's place in the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeGroup {
    pub nnodes: usize,
    pub node_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
}

impl NodeGroup {
    pub fn validate(&self) -> Result<()> {
        if self.nnodes == 0 || self.node_rank >= self.nnodes {
            return Err(bad(format!("--node-rank {} is not one of --nnodes {} (0..{})", self.node_rank, self.nnodes, self.nnodes)));
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct Hello {
    protocol: u32,
    node_rank: usize,
    nnodes: usize,
    fingerprint: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Id(Vec<u8>),
    Refused(String),
}

fn bad(message: String) -> EngineError {
    EngineError::Layout(message)
}

/// Joins the group and returns its id: node 0 makes it with `make_id` and waits for the others;
/// the others connect (retrying while node 0 starts) and receive it. Gives up after `timeout`.
pub fn rendezvous(group: &NodeGroup, fingerprint: &str, make_id: impl FnOnce() -> Result<Vec<u8>>, timeout: Duration) -> Result<Vec<u8>> {
    group.validate()?;
    let deadline = Instant::now() + timeout;
    if group.node_rank == 0 {
        let listener = listen(group)?;
        lead(listener, group, fingerprint, make_id()?, deadline)
    } else {
        join(group, fingerprint, deadline)
    }
}

/// Node 0's socket on `--master-addr:--master-port` (port 0: any free port, for tests).
pub fn listen(group: &NodeGroup) -> Result<TcpListener> {
    TcpListener::bind((group.master_addr.as_str(), group.master_port))
        .map_err(|e| bad(format!("node 0 cannot listen on {}:{}: {e}", group.master_addr, group.master_port)))
}

/// Node 0's side on a socket already listening (so a test can learn its port before any node
/// starts): waits for every other node and hands out `id`.
pub fn lead_on(listener: TcpListener, group: &NodeGroup, fingerprint: &str, id: Vec<u8>, timeout: Duration) -> Result<Vec<u8>> {
    group.validate()?;
    lead(listener, group, fingerprint, id, Instant::now() + timeout)
}

fn lead(listener: TcpListener, group: &NodeGroup, fingerprint: &str, id: Vec<u8>, deadline: Instant) -> Result<Vec<u8>> {
    listener.set_nonblocking(true).map_err(|e| bad(format!("rendezvous socket: {e}")))?;
    let mut joined: Vec<Option<TcpStream>> = (0..group.nnodes).map(|_| None).collect();
    let mut missing = group.nnodes - 1;
    while missing > 0 {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let waiting: Vec<usize> = (1..group.nnodes).filter(|&r| joined[r].is_none()).collect();
                    return Err(bad(format!("node 0 timed out waiting for nodes {waiting:?} to join")));
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => return Err(bad(format!("rendezvous accept: {e}"))),
        };
        let mut stream = stream;
        match admit(&mut stream, group, fingerprint, &joined) {
            Ok(rank) => {
                joined[rank] = Some(stream);
                missing -= 1;
                tracing::info!(node_rank = rank, missing, "node joined the group");
            }
            Err(reason) => {
                tracing::warn!(%reason, "a node was refused");
                let _ = send(&mut stream, &Answer::Refused(reason));
            }
        }
    }
    for stream in joined.iter_mut().flatten() {
        send(stream, &Answer::Id(id.clone())).map_err(|e| bad(format!("sending the group id: {e}")))?;
    }
    Ok(id)
}

/// Reads a joining node's hello; its rank, or why it cannot join.
fn admit(stream: &mut TcpStream, group: &NodeGroup, fingerprint: &str, joined: &[Option<TcpStream>]) -> std::result::Result<usize, String> {
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let hello: Hello = read_line(stream).map_err(|e| format!("no valid hello: {e}"))?;
    if hello.protocol != PROTOCOL {
        return Err(format!("rendezvous protocol {} (node 0 speaks {PROTOCOL}): run the same mlahost on every node", hello.protocol));
    }
    if hello.nnodes != group.nnodes {
        return Err(format!("the node expects --nnodes {} but node 0 has --nnodes {}", hello.nnodes, group.nnodes));
    }
    if hello.node_rank == 0 || hello.node_rank >= group.nnodes {
        return Err(format!("--node-rank {} is not one of 1..{} (node 0 is the master)", hello.node_rank, group.nnodes));
    }
    if joined[hello.node_rank].is_some() {
        return Err(format!("node rank {} has already joined: give every node its own --node-rank", hello.node_rank));
    }
    if hello.fingerprint != fingerprint {
        return Err(format!("the node would run {:?} but node 0 runs {fingerprint:?}: start every node with the same model and layout", hello.fingerprint));
    }
    Ok(hello.node_rank)
}

fn join(group: &NodeGroup, fingerprint: &str, deadline: Instant) -> Result<Vec<u8>> {
    let target = format!("{}:{}", group.master_addr, group.master_port);
    let mut stream = loop {
        let attempt = target.to_socket_addrs().map_err(|e| bad(format!("--master-addr {target}: {e}")))?.find_map(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).ok());
        match attempt {
            Some(s) => break s,
            None if Instant::now() >= deadline => return Err(bad(format!("node {} could not reach node 0 at {target}", group.node_rank))),
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let hello = Hello { protocol: PROTOCOL, node_rank: group.node_rank, nnodes: group.nnodes, fingerprint: fingerprint.to_string() };
    send(&mut stream, &hello).map_err(|e| bad(format!("rendezvous with {target}: {e}")))?;
    // Node 0 answers once every node has joined: wait up to the deadline.
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    stream.set_read_timeout(Some(left)).map_err(|e| bad(format!("rendezvous socket: {e}")))?;
    match read_line::<Answer>(&mut stream) {
        Ok(Answer::Id(id)) => Ok(id),
        Ok(Answer::Refused(reason)) => Err(bad(format!("node 0 refused node {}: {reason}", group.node_rank))),
        Err(e) => Err(bad(format!("node {} got no group id from {target}: {e}", group.node_rank))),
    }
}

fn send<T: Serialize>(stream: &mut TcpStream, value: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

fn read_line<T: for<'de> Deserialize<'de>>(stream: &mut TcpStream) -> std::io::Result<T> {
    let mut line = String::new();
    BufReader::new(std::io::Read::take(&mut *stream, MAX_LINE)).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(std::io::Error::other)
}
