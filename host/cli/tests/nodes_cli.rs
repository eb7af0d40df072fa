//! One instance over several hosts (`--nnodes`, `--node-rank`, `--master-addr`,
//! `--master-port`): the layouts that cannot span hosts are refused at start, with the reason,
//! before anything loads. (The id exchange between node processes is tests/rendezvous.rs; the
//! step link node 0 feeds the others through is `step_link`'s tests.)

mod support;

use support::{fixture, refuse_to_start};

#[test]
fn layouts_that_cannot_span_hosts_are_refused_at_start() {
    let model = fixture("tiny-v2-lite");
    let m = model.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["--model", m, "--nnodes", "2", "-tp", "2"], "give --device cuda:N"),
        (&["--model", m, "--device", "cuda:0", "--nnodes", "2", "--node-rank", "2", "-tp", "2"], "--node-rank 2 is not one of --nnodes 2"),
        (&["--model", m, "--device", "cuda:0", "--nnodes", "2", "-tp", "3"], "does not split evenly over --nnodes 2"),
        (&["--model", m, "--device", "cuda:0", "--nnodes", "2", "-tp", "2", "--replicas", "2"], "drop --replicas"),
        (&["--model", m, "--device", "cuda:0", "--nnodes", "2", "-tp", "2", "-dp", "2"], "--data-parallel-size is not built yet"),
    ];
    for (args, expect) in cases {
        let err = refuse_to_start(args);
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}
