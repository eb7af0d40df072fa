//! Several nodes of one instance meet over TCP before their collectives start (torchrun's
//! flags): each node here is its own process (this test binary started again as a child), node 0
//! in the test. Every node leaves with node 0's group id; a node with a wrong rank, node count
//! or model is refused with the reason while node 0 waits on for the right one.

use mlahost_engine::rendezvous::{lead_on, listen, rendezvous, NodeGroup};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHILD: &str = "MLAHOST_RENDEZVOUS_CHILD";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Node 0 in a thread of this process, listening before it returns: no other test or
/// connection can take its port between choosing it and binding it.
fn spawn_lead(nnodes: usize, fingerprint: &'static str, id: Vec<u8>) -> (u16, std::thread::JoinHandle<mlahost_engine::Result<Vec<u8>>>) {
    let listener = listen(&group(nnodes, 0, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    (port, std::thread::spawn(move || lead_on(listener, &group(nnodes, 0, port), fingerprint, id, Duration::from_secs(30))))
}

fn group(nnodes: usize, node_rank: usize, port: u16) -> NodeGroup {
    NodeGroup { nnodes, node_rank, master_addr: "127.0.0.1".into(), master_port: port }
}

/// Not a test of its own: the body of a child node (`nnodes,node_rank,port,fingerprint`).
#[test]
fn child_node() {
    let Ok(spec) = std::env::var(CHILD) else { return };
    let parts: Vec<&str> = spec.splitn(4, ',').collect();
    let g = group(parts[0].parse().unwrap(), parts[1].parse().unwrap(), parts[2].parse().unwrap());
    match rendezvous(&g, parts[3], || unreachable!("only node 0 makes the id"), Duration::from_secs(20)) {
        Ok(id) => println!("ID:{}", id.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        Err(e) => println!("ERR:{e}"),
    }
}

fn spawn_node(nnodes: usize, rank: usize, port: u16, fingerprint: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_node", "--nocapture", "--test-threads", "1"])
        .env(CHILD, format!("{nnodes},{rank},{port},{fingerprint}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The node's `ID:` or `ERR:` line.
fn outcome(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // libtest prints the test's name on the same line first
    let at = |l: &str| [l.find("ID:"), l.find("ERR:")].into_iter().flatten().min();
    text.lines().find_map(|l| at(l).map(|i| l[i..].to_string())).unwrap_or_else(|| panic!("no outcome in {text:?}"))
}

#[test]
fn three_processes_share_node_zeros_id_and_bad_nodes_are_refused_with_the_reason() {
    let id: Vec<u8> = (0..128).map(|i| (i * 7 + 3) as u8).collect();
    let want = format!("ID:{}", id.iter().map(|b| format!("{b:02x}")).collect::<String>());
    let (port, lead) = spawn_lead(3, "V3 TP=16", id.clone());
    // Refused while node 0 waits: a rank past the group, a different node count, another model.
    let refused = [
        (outcome(spawn_node(3, 5, port, "V3 TP=16")), "ERR:parallel layout: --node-rank 5 is not one of --nnodes 3"),
        (outcome(spawn_node(2, 1, port, "V3 TP=16")), "expects --nnodes 2 but node 0 has --nnodes 3"),
        (outcome(spawn_node(3, 1, port, "V2-Lite TP=16")), "start every node with the same model and layout"),
    ];
    for (got, why) in refused {
        assert!(got.starts_with("ERR:") && got.contains(why), "{got:?} should say {why:?}");
    }
    let nodes = [spawn_node(3, 1, port, "V3 TP=16"), spawn_node(3, 2, port, "V3 TP=16")];
    let results: Vec<String> = nodes.into_iter().map(outcome).collect();
    assert_eq!(results, vec![want.clone(), want], "every node gets node 0's id");
    assert_eq!(lead.join().unwrap().unwrap(), id);
}

#[test]
fn a_rank_taken_twice_is_refused_and_a_lone_node_times_out() {
    let (port, lead) = spawn_lead(3, "m", vec![1, 2, 3]);
    // Two nodes claim rank 1: whichever comes second is refused at once; the other waits for
    // the group.
    let mut claims = vec![spawn_node(3, 1, port, "m"), spawn_node(3, 1, port, "m")];
    let refused = loop {
        if let Some(i) = claims.iter_mut().position(|c| c.try_wait().unwrap().is_some()) {
            break claims.remove(i);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let twice = outcome(refused);
    assert!(twice.contains("node rank 1 has already joined"), "{twice}");
    let last = spawn_node(3, 2, port, "m");
    assert_eq!(outcome(claims.remove(0)), "ID:010203");
    assert_eq!(outcome(last), "ID:010203");
    assert_eq!(lead.join().unwrap().unwrap(), vec![1, 2, 3]);
    // Node 0 alone gives up at its deadline and names who never came.
    let alone = rendezvous(&group(2, 0, free_port()), "m", || Ok(vec![9]), Duration::from_millis(300)).unwrap_err().to_string();
    assert!(alone.contains("timed out waiting for nodes [1]"), "{alone}");
    let unreachable = rendezvous(&group(2, 1, free_port()), "m", || unreachable!(), Duration::from_millis(300)).unwrap_err().to_string();
    assert!(unreachable.contains("could not reach node 0"), "{unreachable}");
}
