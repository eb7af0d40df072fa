//! One model instance over several hosts (torchrun's flags): node 0 serves the API and sends
//! every step to the others, which run their ranks and nothing else (`follow`).

use crate::backends::DeviceBackends;
use anyhow::{bail, Context, Result};
use clap::Args;
use mlahost_cuda::{CudaRankGroup, CudaSettings, Device};
use mlahost_engine::parallel::ParallelLayout;
use mlahost_engine::rendezvous::NodeGroup;
use mlahost_engine::{LoadFormat, LoadedModel};
use mlahost_runtime::BackendOptions;

#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// Hosts one model instance spans: its tensor-parallel ranks split evenly over them (one
    /// NCCL group across the hosts).
    #[arg(long, default_value_t = 1)]
    nnodes: usize,
    /// This host's place, 0 .. nnodes-1: node 0 serves the API and sends each step to the
    /// others; the others run their ranks only.
    #[arg(long, default_value_t = 0)]
    node_rank: usize,
    /// Node 0's address, which the other nodes reach for the rendezvous and the steps.
    #[arg(long, default_value = "127.0.0.1")]
    master_addr: String,
    /// Node 0's rendezvous port; the step link uses the next one.
    #[arg(long, default_value_t = 29500)]
    master_port: u16,
}

impl NodeArgs {
    /// None for a single host; otherwise the checked group.
    pub fn group(&self, device: Device, layout: ParallelLayout, replicas: usize) -> Result<Option<NodeGroup>> {
        if self.nnodes == 1 && self.node_rank == 0 {
            return Ok(None);
        }
        let g = NodeGroup { nnodes: self.nnodes, node_rank: self.node_rank, master_addr: self.master_addr.clone(), master_port: self.master_port };
        g.validate()?;
        if !matches!(device, Device::Cuda(_)) {
            bail!("--nnodes spreads one instance's GPU ranks over hosts: give --device cuda:N (the CPU runs every layout in one process)");
        }
        if replicas != 1 {
            bail!("--nnodes serves one instance: drop --replicas (run one mlahost per instance behind a router)");
        }
        if layout.data_parallel != 1 {
            bail!("--nnodes with --data-parallel-size is not built yet: tensor parallelism (with or without --enable-expert-parallel) spans hosts");
        }
        if layout.tensor_parallel % self.nnodes != 0 || layout.tensor_parallel < self.nnodes {
            bail!("--tensor-parallel-size {} does not split evenly over --nnodes {}: give each host the same number of GPUs", layout.tensor_parallel, self.nnodes);
        }
        Ok(Some(g))
    }
}

/// A node other than node 0: builds its ranks as node 0 builds its own (same options, checked
/// at the rendezvous), then runs every step node 0 sends until node 0 closes the link.
pub fn follow(model_dir: &std::path::Path, format: LoadFormat, backends: &DeviceBackends, options: &BackendOptions, nodes: &NodeGroup) -> Result<()> {
    let Device::Cuda(first_gpu) = backends.device else { bail!("a follower node runs GPU ranks") };
    let model = LoadedModel::open(model_dir, format, None).with_context(|| format!("loading {}", model_dir.display()))?;
    let settings = CudaSettings { first_gpu, gpu_memory_utilization: backends.gpu_memory_utilization, cuda_graphs: backends.cuda_graphs, quantization: backends.quantization };
    let mut group = CudaRankGroup::from_options_across_nodes(&model, &settings, options, backends.layout, nodes)?;
    eprintln!("node {} of {}: ranks ready, following node 0 at {}", nodes.node_rank, nodes.nnodes, nodes.master_addr);
    let steps = group.follow()?;
    eprintln!("node {}: node 0 closed the link after {steps} steps", nodes.node_rank);
    Ok(())
}
