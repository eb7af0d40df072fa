//! How the nodes of one model instance spread over several hosts run the same steps: node 0
//! owns the scheduler and the API; before each forward pass it sends the batch (tokens,
//! positions, block tables, which logits) to every other node, whose ranks then run the same
//! forward pass and meet node 0's ranks at the collectives. The link is a TCP connection per
//! follower on `master_port + 1`, opened after the rendezvous; node 0 closing it ends the
//! followers. Binary frames, little-endian: a step is its chunk count, then per chunk the
//! token count and tokens, the start position, the block-table length and pages, and the
//! logits request.

use crate::batch::{LogitsRequest, SeqChunk};
use crate::rendezvous::NodeGroup;
use crate::{EngineError, Result};
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Largest count a frame may announce (tokens of a chunk, pages of a table, chunks of a step):
/// a corrupt or hostile frame is refused rather than allocated.
const MAX_COUNT: u32 = 1 << 24;

fn link_err(what: impl std::fmt::Display) -> EngineError {
    EngineError::Collective(format!("step link: {what}"))
}

/// Node 0's end: one connection per follower, in node-rank order.
pub struct StepLeader {
    followers: Vec<BufWriter<TcpStream>>,
}

/// Reads a follower's answers on its connection (the writer's clone).
fn reader_of(w: &BufWriter<TcpStream>) -> Result<TcpStream> {
    w.get_ref().try_clone().map_err(link_err)
}

impl StepLeader {
    /// Waits (up to `timeout`) until every other node has connected and said its rank.
    pub fn accept(group: &NodeGroup, timeout: Duration) -> Result<Self> {
        let port = link_port(group)?;
        let listener = TcpListener::bind(("0.0.0.0", port)).map_err(|e| link_err(format!("cannot listen on port {port}: {e}")))?;
        listener.set_nonblocking(true).map_err(link_err)?;
        let deadline = Instant::now() + timeout;
        let mut slots: Vec<Option<TcpStream>> = (1..group.nnodes).map(|_| None).collect();
        while slots.iter().any(Option::is_none) {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    stream.set_nonblocking(false).map_err(link_err)?;
                    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(link_err)?;
                    let rank = read_u32(&mut stream)? as usize;
                    // the followers' later answers (agree_min) may take a model load to come
                    stream.set_read_timeout(None).map_err(link_err)?;
                    match slots.get_mut(rank.wrapping_sub(1)) {
                        Some(slot @ None) => {
                            stream.set_nodelay(true).map_err(link_err)?;
                            *slot = Some(stream);
                        }
                        _ => tracing::warn!(%peer, rank, "step link: refused a node with a rank out of range or taken"),
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        let missing: Vec<usize> = slots.iter().enumerate().filter(|(_, s)| s.is_none()).map(|(i, _)| i + 1).collect();
                        return Err(link_err(format!("nodes {missing:?} did not connect within {timeout:?}")));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(link_err(e)),
            }
        }
        Ok(Self { followers: slots.into_iter().flatten().map(BufWriter::new).collect() })
    }

    /// The smallest of every node's `mine` (e.g. the latent pages each could allocate), on
    /// every node: block tables made on node 0 must fit every node's cache.
    pub fn agree_min(&mut self, mine: u32) -> Result<u32> {
        let mut least = mine;
        for f in &self.followers {
            least = least.min(read_u32(&mut reader_of(f)?)?);
        }
        for f in &mut self.followers {
            f.write_all(&least.to_le_bytes()).and_then(|_| f.flush()).map_err(link_err)?;
        }
        Ok(least)
    }

    /// Sends one step's batch to every follower.
    pub fn send(&mut self, batch: &[SeqChunk<'_>]) -> Result<()> {
        let frame = encode(batch);
        for (i, f) in self.followers.iter_mut().enumerate() {
            f.write_all(&frame).and_then(|_| f.flush()).map_err(|e| link_err(format!("node {} is gone: {e}", i + 1)))?;
        }
        Ok(())
    }
}

/// A follower's end.
pub struct StepFollower {
    stream: BufReader<TcpStream>,
}

impl StepFollower {
    /// Connects to node 0 (retrying until `timeout`: node 0 may still be loading).
    pub fn connect(group: &NodeGroup, timeout: Duration) -> Result<Self> {
        let port = link_port(group)?;
        let deadline = Instant::now() + timeout;
        loop {
            match TcpStream::connect((group.master_addr.as_str(), port)) {
                Ok(mut s) => {
                    s.write_all(&(group.node_rank as u32).to_le_bytes()).map_err(link_err)?;
                    s.set_nodelay(true).map_err(link_err)?;
                    return Ok(Self { stream: BufReader::new(s) });
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(link_err(format!("cannot reach node 0 at {}:{port}: {e}", group.master_addr)));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// As `StepLeader::agree_min`, from a follower.
    pub fn agree_min(&mut self, mine: u32) -> Result<u32> {
        self.stream.get_mut().write_all(&mine.to_le_bytes()).map_err(link_err)?;
        read_u32(&mut self.stream)
    }

    /// The next step's batch, or None once node 0 has closed the link.
    pub fn next(&mut self) -> Result<Option<OwnedBatch>> {
        let mut first = [0u8; 4];
        match self.stream.read_exact(&mut first) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(link_err(e)),
        }
        decode(u32::from_le_bytes(first), &mut self.stream).map(Some)
    }
}

fn link_port(group: &NodeGroup) -> Result<u16> {
    group.master_port.checked_add(1).ok_or_else(|| link_err("--master-port leaves no room for the step link (port + 1)"))
}

/// A step's chunks as received (owned), lent out as `SeqChunk`s.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedBatch {
    pub chunks: Vec<OwnedChunk>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OwnedChunk {
    pub tokens: Vec<u32>,
    pub start_pos: usize,
    pub block_table: Vec<u32>,
    pub logits: LogitsRequest,
}

impl OwnedBatch {
    pub fn chunks(&self) -> Vec<SeqChunk<'_>> {
        self.chunks.iter().map(|c| SeqChunk { tokens: &c.tokens, start_pos: c.start_pos, block_table: &c.block_table, logits: c.logits }).collect()
    }
}

fn encode(batch: &[SeqChunk<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |v: u32| out.extend_from_slice(&v.to_le_bytes());
    put(batch.len() as u32);
    for c in batch {
        put(c.tokens.len() as u32);
        c.tokens.iter().for_each(|&t| put(t));
        put(c.start_pos as u32);
        put(c.block_table.len() as u32);
        c.block_table.iter().for_each(|&p| put(p));
        put(match c.logits {
            LogitsRequest::Last => 0,
            LogitsRequest::All => 1,
            LogitsRequest::None => 2,
        });
    }
    out
}

fn read_u32(r: &mut impl Read) -> Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).map_err(|e| link_err(format!("truncated frame: {e}")))?;
    Ok(u32::from_le_bytes(b))
}

fn read_count(r: &mut impl Read, what: &str) -> Result<usize> {
    let n = read_u32(r)?;
    if n > MAX_COUNT {
        return Err(link_err(format!("a frame announces {n} {what}")));
    }
    Ok(n as usize)
}

fn decode(chunks: u32, r: &mut impl Read) -> Result<OwnedBatch> {
    if chunks > MAX_COUNT {
        return Err(link_err(format!("a frame announces {chunks} chunks")));
    }
    let mut out = Vec::with_capacity(chunks as usize);
    for _ in 0..chunks {
        let n = read_count(r, "tokens")?;
        let tokens = (0..n).map(|_| read_u32(r)).collect::<Result<Vec<_>>>()?;
        let start_pos = read_u32(r)? as usize;
        let pages = read_count(r, "pages")?;
        let block_table = (0..pages).map(|_| read_u32(r)).collect::<Result<Vec<_>>>()?;
        let logits = match read_u32(r)? {
            0 => LogitsRequest::Last,
            1 => LogitsRequest::All,
            2 => LogitsRequest::None,
            k => return Err(link_err(format!("unknown logits request {k}"))),
        };
        out.push(OwnedChunk { tokens, start_pos, block_table, logits });
    }
    Ok(OwnedBatch { chunks: out })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(nnodes: usize, node_rank: usize, port: u16) -> NodeGroup {
        NodeGroup { nnodes, node_rank, master_addr: "127.0.0.1".into(), master_port: port }
    }

    fn free_port() -> u16 {
        // a free pair: the link listens on port + 1
        loop {
            let p = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0);
            if p > 0 && p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
                return p;
            }
        }
    }

    /// Node 0 sends three steps to two followers (connected in reverse rank order); each
    /// receives them exactly, then learns the link closed.
    #[test]
    fn followers_receive_every_step_as_sent_then_the_end() {
        let port = free_port();
        let steps: Vec<OwnedBatch> = vec![
            OwnedBatch { chunks: vec![OwnedChunk { tokens: vec![5, 6, 7], start_pos: 0, block_table: vec![3, 9], logits: LogitsRequest::Last }] },
            OwnedBatch {
                chunks: vec![
                    OwnedChunk { tokens: vec![8], start_pos: 3, block_table: vec![3, 9], logits: LogitsRequest::All },
                    OwnedChunk { tokens: (0..700).collect(), start_pos: 64, block_table: (0..12).collect(), logits: LogitsRequest::None },
                ],
            },
            OwnedBatch { chunks: vec![] },
        ];
        let followers: Vec<_> = [2, 1]
            .into_iter()
            .map(|rank| {
                std::thread::spawn(move || {
                    let mut f = StepFollower::connect(&group(3, rank, port), Duration::from_secs(10)).expect("connect");
                    assert_eq!(f.agree_min(100 + rank as u32).expect("agree"), 50);
                    let mut got = Vec::new();
                    while let Some(b) = f.next().expect("frame") {
                        got.push(b);
                    }
                    got
                })
            })
            .collect();
        let mut leader = StepLeader::accept(&group(3, 0, port), Duration::from_secs(10)).expect("accept");
        assert_eq!(leader.agree_min(50).expect("agree"), 50);
        for s in &steps {
            leader.send(&s.chunks()).expect("send");
        }
        drop(leader);
        for f in followers {
            assert_eq!(f.join().expect("follower"), steps);
        }
    }

    #[test]
    fn a_missing_node_or_a_hostile_frame_is_an_error_not_a_hang() {
        let port = free_port();
        let err = StepLeader::accept(&group(2, 0, port), Duration::from_millis(200)).err().expect("no follower came");
        assert!(err.to_string().contains("nodes [1] did not connect"), "{err}");
        let mut frame: &[u8] = &[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        let err = decode(read_u32(&mut frame).unwrap(), &mut frame).err().expect("refused");
        assert!(err.to_string().contains("announces"), "{err}");
    }
}
