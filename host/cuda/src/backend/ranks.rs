//! One model over several ranks on GPUs: tensor parallelism with one `CudaBackend` per rank,
//! each over its shard (`shard::shard`: its heads, MLP and expert columns), each on its own
//! thread, meeting at two sums per layer (`collective`). The lm_head is split by vocabulary rows:
//! each rank writes its rows' logits into its columns and one more sum assembles them, so rank
//! 0 reads or samples the whole logits (the embedding stays whole on every rank); with
//! `--enable-expert-parallel` each rank holds whole experts (its share) and runs only the pairs
//! routed to them, the sum over ranks combining the experts. With data-parallel attention the
//! ranks form groups of `--tensor-parallel-size`, each holding its own sequences' pages
//! (`ranks_dp`), and under expert parallelism the MoE layers exchange rows across the groups
//! through an instance-wide collective (`forward_dp`). Over several hosts (`across_nodes`) node
//! 0 sends every step to the others (`step_link`).

use super::{CudaBackend, CudaOptions, WeightsFrom};
use crate::weights::{Ends, GpuWeights, WeightsBuilder};
use crate::collective::{DeviceCollective, EmulatedCollective, NcclCollective};
use crate::collective_graphs::GraphEmulatedCollective;
use crate::gpu::Gpu;
use crate::quant::WeightQuant;
use crate::{nccl, CudaError, Result};
use mlahost_engine::batch::{Backend, CacheGeometry, Logits, SeqChunk};
use mlahost_engine::comm::{Communicator, LocalGroup};
use mlahost_engine::config::ModelConfig;
use mlahost_engine::parallel::ParallelLayout;
use mlahost_engine::rendezvous::{rendezvous, NodeGroup};
use mlahost_engine::shard::RankShard;
use mlahost_engine::step_link::{StepFollower, StepLeader};
use mlahost_engine::weights::{ModelEnds, ModelWeights, TensorSource};
use mlahost_engine::{DeviceSample, EngineError, RoutingTrace, SampleRequest, TokenRoute};
use std::sync::Arc;

/// Where the ranks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankDevices {
    /// Rank r on `cuda:first_gpu + r`, summing through NCCL.
    Nccl { first_gpu: usize },
    /// Every rank on `cuda:gpu`, summing through staged copies: the check of a split where only
    /// one GPU is lent (steps run eagerly; never a serving default).
    EmulatedOnOneGpu { gpu: usize },
    /// Every rank on `cuda:gpu`, meeting through counters on the device, so that decode steps
    /// replay CUDA graphs with the collectives inside as NCCL ranks do
    /// (`collective_graphs.rs`; a check, never a serving default).
    EmulatedInGraphs { gpu: usize },
}

pub struct CudaRankGroup {
    pub(super) ranks: Vec<CudaBackend>,
    /// Per rank, the collectives it takes part in (abandoned when it fails).
    pub(super) collectives: Vec<Vec<Arc<dyn DeviceCollective>>>,
    pub(super) layout: ParallelLayout,
    /// The handles the NCCL ranks joined with: they keep each GPU's primary context (which the
    /// communicators live in) retained, whatever the backends do with theirs.
    _joined_on: Vec<Arc<Gpu>>,
    /// Over several nodes: node 0 sends each step on, the others receive them.
    link: Option<Link>,
    /// Data-parallel steps may exchange the MoE rows in equal per-rank slots (all-gather and
    /// reduce-scatter; `ranks_dp.rs`): on unless `set_slot_exchange` turns it off, as gpu-check
    /// does to check the packed all-reduces beside it.
    pub(super) slot_exchange: bool,
}

enum Link {
    Leader(StepLeader),
    Follower(StepFollower),
}

/// How long node 0 waits for the other nodes (and they for it) at the rendezvous and the step
/// link: a model load on each comes first.
const LINK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1800);

/// What every node of an instance must agree on: the model's shape, the layout and the options
/// that decide the warm-up steps and the cache (they meet at the same collectives).
fn fingerprint(cfg: &ModelConfig, layout: ParallelLayout, opts: &CudaOptions, quant: WeightQuant) -> String {
    format!(
        "{} layers x {} hidden, vocab {}, {layout:?}, page {}, max batched {}, max seqs {}, kv {:?}, weights {quant}, graphs {}",
        cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size, opts.page_size, opts.max_batched_tokens, opts.max_seqs, opts.kv_dtype, opts.cuda_graphs
    )
}

/// Runs `f(rank, item)` for every item on its own thread; the results in rank order. A rank
/// that fails or panics is abandoned (so the emulated ranks waiting for it stop waiting).
pub(super) fn on_each<T: Send, R: Send>(items: Vec<T>, collectives: &[Vec<Arc<dyn DeviceCollective>>], f: impl Fn(usize, T) -> Result<R> + Sync) -> Vec<Result<R>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .into_iter()
            .enumerate()
            .map(|(rank, item)| {
                let f = &f;
                s.spawn(move || {
                    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(rank, item)))
                        .unwrap_or_else(|_| Err(CudaError::launch("rank", "a rank panicked")));
                    if out.is_err() {
                        collectives.get(rank).into_iter().flatten().for_each(|c| c.abandon());
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(CudaError::launch("rank", "a rank thread died")))).collect()
    })
}

pub(super) fn all<R>(results: Vec<Result<R>>) -> Result<Vec<R>> {
    results.into_iter().collect()
}

impl CudaRankGroup {
    /// The ranks of `layout` (plain tensor parallelism) over `devices`. `opts.ordinal` is
    /// ignored (the devices say where each rank runs); the emulation divides
    /// `gpu_memory_utilization` among its ranks where `num_pages` is not given.
    pub fn new(cfg: &ModelConfig, weights: &ModelWeights, layout: ParallelLayout, opts: CudaOptions, quant: WeightQuant, devices: RankDevices) -> Result<Self> {
        Self::load(cfg, ModelSource::Host(weights), layout, opts, quant, devices, None)
    }

    /// This node's ranks of an instance spread over `nodes.nnodes` hosts (`--nnodes`): global
    /// ranks `node_rank * local ..`, on GPUs `first_gpu ..`, meeting the other nodes' ranks
    /// through NCCL (its id handed out by node 0 at the rendezvous). Node 0 then sends every
    /// step to the others (`step_link`); another node runs `follow` instead of serving.
    pub fn across_nodes(cfg: &ModelConfig, src: &dyn TensorSource, layout: ParallelLayout, opts: CudaOptions, quant: WeightQuant, first_gpu: usize, nodes: &NodeGroup) -> Result<Self> {
        Self::load(cfg, ModelSource::Stream(src), layout, opts, quant, RankDevices::Nccl { first_gpu }, Some(nodes))
    }

    /// A follower node's life: run every step node 0 sends, until node 0 closes the link.
    pub fn follow(&mut self) -> Result<usize> {
        let Some(Link::Follower(link)) = self.link.as_mut() else {
            return Err(CudaError::launch("follow", "only a node other than node 0 follows"));
        };
        let mut steps = 0;
        while let Some(batch) = link.next()? {
            let chunks = batch.chunks();
            let results = on_each(self.ranks.iter_mut().collect(), &self.collectives, |_, r: &mut CudaBackend| r.forward_discarding(&chunks));
            self.ranks.iter_mut().for_each(CudaBackend::release_parked);
            all(results)?;
            steps += 1;
        }
        Ok(steps)
    }

    /// As `new`, reading the model from `src` a layer at a time: each layer is read once and
    /// every rank's share of it goes to that rank's GPU before the next is read.
    pub fn stream(cfg: &ModelConfig, src: &dyn TensorSource, layout: ParallelLayout, opts: CudaOptions, quant: WeightQuant, devices: RankDevices) -> Result<Self> {
        Self::load(cfg, ModelSource::Stream(src), layout, opts, quant, devices, None)
    }

    fn load(cfg: &ModelConfig, source: ModelSource<'_>, layout: ParallelLayout, opts: CudaOptions, quant: WeightQuant, devices: RankDevices, nodes: Option<&NodeGroup>) -> Result<Self> {
        let (tp, dp) = (layout.tensor_parallel, layout.data_parallel);
        if dp > 1 && nodes.is_some() {
            return Err(CudaError::Engine(EngineError::Layout("data-parallel attention across hosts is not built yet: one host's GPUs".into())));
        }
        // the routed experts exchange rows across attention groups when spread over all ranks
        let exchange = dp > 1 && layout.expert_parallel;
        let world = layout.world();
        // this node's ranks: all of them, or its share of an instance over several nodes
        let (local, first_rank) = match nodes {
            Some(g) => {
                g.validate()?;
                if world % g.nnodes != 0 {
                    return Err(CudaError::Engine(EngineError::Layout(format!("{world} ranks do not split evenly over {} nodes", g.nnodes))));
                }
                if !matches!(devices, RankDevices::Nccl { .. }) {
                    return Err(CudaError::Engine(EngineError::Layout("emulated ranks run in one process".into())));
                }
                (world / g.nnodes, g.node_rank * (world / g.nnodes))
            }
            None => (world, 0),
        };
        if let (Some(m), false) = (&cfg.moe, layout.expert_parallel) {
            let per_rank = m.moe_intermediate_size / tp;
            if per_rank % crate::kernels::moe::TILE_K != 0 {
                return Err(CudaError::Engine(EngineError::Layout(format!(
                    "the routed experts' width {} sliced over {tp} ranks leaves {per_rank} columns each, and the GPU's grouped GEMM needs a multiple of {}: use --enable-expert-parallel or fewer ranks",
                    m.moe_intermediate_size,
                    crate::kernels::moe::TILE_K
                ))));
            }
        }
        let mut joined_on = Vec::new();
        // per rank: its attention group's collective (tensor-parallel sums; none for a group of
        // one under data-parallel attention) and the instance-wide one of the expert exchange
        type Colls = Vec<Option<Arc<dyn DeviceCollective>>>;
        let (groups, worlds, ordinal): (Colls, Colls, Box<dyn Fn(usize) -> usize + Sync>) = match devices {
            RankDevices::Nccl { first_gpu } => {
                // every GPU opened first: a missing one is an error here, not a rank waiting
                // forever for a peer that never joins
                let gpus = (0..local).map(|i| Gpu::open(first_gpu + i)).collect::<Result<Vec<_>>>()?;
                let group_ids = match nodes {
                    // node 0 makes the id and hands it to the others, who must run the same thing
                    Some(g) => vec![rendezvous(g, &fingerprint(cfg, layout, &opts, quant), || nccl::unique_id().map_err(EngineError::from), LINK_TIMEOUT)?],
                    None => (0..dp).map(|_| nccl::unique_id()).collect::<Result<Vec<_>>>()?,
                };
                let world_id = if exchange { Some(nccl::unique_id()?) } else { None };
                // every rank's join blocks until all of its group have joined: one thread each
                let joined = on_each(gpus.clone(), &[], |i, gpu| {
                    let rank = first_rank + i;
                    let group = if dp > 1 && tp == 1 { None } else { Some(Arc::new(NcclCollective::join(&gpu, &group_ids[rank / tp], rank % tp, tp)?) as Arc<dyn DeviceCollective>) };
                    let world_coll = match &world_id {
                        Some(id) => Some(Arc::new(NcclCollective::join(&gpu, id, rank, world)?) as Arc<dyn DeviceCollective>),
                        None => None,
                    };
                    Ok((group, world_coll))
                });
                let (g, w): (Colls, Colls) = all(joined)?.into_iter().unzip();
                joined_on = gpus;
                (g, w, Box::new(move |rank| first_gpu + rank))
            }
            RankDevices::EmulatedOnOneGpu { gpu } => {
                let emulate = |n: usize| -> Vec<Arc<dyn DeviceCollective>> {
                    let host: Vec<Arc<dyn Communicator>> = LocalGroup::new(n).into_iter().map(|c| Arc::new(c) as Arc<dyn Communicator>).collect();
                    EmulatedCollective::group(host).into_iter().map(|c| Arc::new(c) as Arc<dyn DeviceCollective>).collect()
                };
                let g: Colls = if dp > 1 && tp == 1 { vec![None; world] } else { (0..dp).flat_map(|_| emulate(tp)).map(Some).collect() };
                let w: Colls = if exchange { emulate(world).into_iter().map(Some).collect() } else { vec![None; world] };
                (g, w, Box::new(move |_| gpu))
            }
            RankDevices::EmulatedInGraphs { gpu } => {
                let device = Gpu::open(gpu)?;
                let emulate = |n: usize| -> Result<Vec<Arc<dyn DeviceCollective>>> {
                    Ok(GraphEmulatedCollective::group(&device, n)?.into_iter().map(|c| Arc::new(c) as Arc<dyn DeviceCollective>).collect())
                };
                let g: Colls = match dp > 1 && tp == 1 {
                    true => vec![None; world],
                    false => (0..dp).map(|_| emulate(tp)).collect::<Result<Vec<_>>>()?.into_iter().flatten().map(Some).collect(),
                };
                let w: Colls = if exchange { emulate(world)?.into_iter().map(Some).collect() } else { vec![None; world] };
                joined_on = vec![device]; // the group's words live in its allocations
                (g, w, Box::new(move |_| gpu))
            }
        };
        let collectives: Vec<Vec<Arc<dyn DeviceCollective>>> = groups.iter().zip(&worlds).map(|(g, w)| g.iter().chain(w).cloned().collect()).collect();
        let emulated = !matches!(devices, RankDevices::Nccl { .. });
        // ranks that meet on their shared device park replaced buffers until a step is issued
        let park = matches!(devices, RankDevices::EmulatedInGraphs { .. });
        let rank_opts = |rank: usize| CudaOptions {
            ordinal: ordinal(rank),
            gpu_memory_utilization: if emulated { opts.gpu_memory_utilization / world as f64 } else { opts.gpu_memory_utilization },
            // (a data-parallel step replays graphs only where `dp_graph_bucket` allows)
            cuda_graphs: opts.cuda_graphs,
            ..opts
        };
        // Built one by one (uploads and allocations need no peer), then warmed up together.
        let link = match nodes {
            Some(g) if g.node_rank == 0 => Some(Link::Leader(StepLeader::accept(g, LINK_TIMEOUT)?)),
            Some(g) => Some(Link::Follower(StepFollower::connect(g, LINK_TIMEOUT)?)),
            None => None,
        };
        let shards = rank_weights(cfg, source, layout, quant, first_rank..first_rank + local, &|i| ordinal(i))?;
        let mut ranks = Vec::with_capacity(local);
        for (rank, (rank_cfg, rank_weights)) in shards.into_iter().enumerate() {
            let mut r = CudaBackend::build(rank_cfg, WeightsFrom::Uploaded(rank_weights), rank_opts(rank), quant, groups[rank].clone(), false)?;
            r.expert_exchange = worlds[rank].clone();
            if park {
                r.park_frees();
            }
            ranks.push(r);
        }
        let pages: Vec<usize> = ranks.iter().map(|r| r.geometry.num_pages).collect();
        let fewest = pages.iter().copied().min().unwrap_or(0);
        if pages.iter().any(|&p| p != fewest) {
            return Err(CudaError::OutOfMemory(format!("the ranks' caches differ ({pages:?} pages): give --kv-cache-pages or equal GPUs")));
        }
        let mut link = link;
        // node 0's block tables must fit every node's cache: all use the fewest pages any has
        let agreed = match link.as_mut() {
            Some(Link::Leader(l)) => l.agree_min(fewest as u32)? as usize,
            Some(Link::Follower(f)) => f.agree_min(fewest as u32)? as usize,
            None => fewest,
        };
        ranks.iter_mut().for_each(|r| r.geometry.num_pages = agreed);
        let warm = on_each(ranks.iter_mut().collect(), &collectives, |_, r: &mut CudaBackend| r.warm_up(opts.max_batched_tokens));
        ranks.iter_mut().for_each(CudaBackend::release_parked);
        all(warm)?;
        Ok(Self { ranks, collectives, _joined_on: joined_on, link, layout, slot_exchange: true })
    }

    /// Whether data-parallel steps exchange the MoE rows in equal per-rank slots where they can
    /// (one rank per attention group, groups of similar size): on unless turned off here, as
    /// gpu-check does to check the packed exchange beside it.
    pub fn set_slot_exchange(&mut self, on: bool) {
        self.slot_exchange = on;
    }

    /// Decode graphs the ranks have captured so far (a check that steps replayed them).
    pub fn captured_graphs(&self) -> usize {
        self.ranks.iter().map(|r| r.graphs.len()).sum()
    }

    /// Whether a rank gave up waiting for the others on the device (emulated in graphs).
    pub fn collective_gave_up(&self) -> Result<bool> {
        for c in self.collectives.iter().flatten() {
            if c.gave_up()? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Frees what the ranks parked during a step they have all issued (`CudaBackend::park_frees`).
    pub(super) fn release_parked(&mut self) {
        self.ranks.iter_mut().for_each(CudaBackend::release_parked);
    }

    /// Rank 0's backend (its GPU, weights and profile).
    pub fn leader(&self) -> &CudaBackend {
        &self.ranks[0]
    }

    /// Every rank's GPU handle in rank order (emulated ranks: one handle, with its own stream
    /// and profile, per rank).
    pub fn gpus(&self) -> Vec<Arc<Gpu>> {
        self.ranks.iter().map(|r| r.gpu()).collect()
    }

    fn run_all(&mut self, batch: &[SeqChunk<'_>], requests: Option<&mut [SampleRequest<'_>]>) -> Result<(Option<Logits>, Option<Vec<DeviceSample>>)> {
        if let Some(Link::Leader(link)) = self.link.as_mut() {
            link.send(batch)?;
        }
        let mut requests = requests;
        let jobs: Vec<(&mut CudaBackend, Option<&mut [SampleRequest<'_>]>)> =
            self.ranks.iter_mut().enumerate().map(|(rank, r)| (r, if rank == 0 { requests.take() } else { None })).collect();
        let sampling = jobs[0].1.is_some();
        let results = on_each(jobs, &self.collectives, |rank, (r, req)| match (rank, req) {
            (0, Some(req)) => r.forward_sampled_checked(batch, req).map(|s| (None, s)),
            (0, None) if !sampling => r.forward_checked(batch).map(|l| (Some(l), None)),
            _ => r.forward_discarding(batch).map(|_| (None, None)),
        });
        self.release_parked();
        let mut first = None;
        for (rank, r) in results.into_iter().enumerate() {
            let out = r?;
            if rank == 0 {
                first = Some(out);
            }
        }
        first.ok_or_else(|| CudaError::launch("rank", "a group without ranks"))
    }
}

impl Backend for CudaRankGroup {
    fn forward(&mut self, batch: &[SeqChunk<'_>]) -> mlahost_engine::Result<Logits> {
        if self.layout.data_parallel > 1 {
            return self.run_groups(batch).map_err(EngineError::from);
        }
        let (logits, _) = self.run_all(batch, None).map_err(EngineError::from)?;
        logits.ok_or_else(|| EngineError::Collective("rank 0 returned no logits".into()))
    }

    /// Under data-parallel attention each group's ranks hold its own pages: the instance has
    /// the groups' pages end to end, one pool per group.
    fn cache_geometry(&self) -> CacheGeometry {
        let g = self.ranks[0].geometry;
        CacheGeometry { num_pages: g.num_pages * self.layout.data_parallel, ..g }
    }

    fn cache_pools(&self) -> usize {
        self.layout.data_parallel
    }

    /// Rank 0's (the ranks' shares differ by a few experts at most).
    fn weight_storage(&self) -> Option<mlahost_engine::WeightStorage> {
        self.ranks[0].weight_storage()
    }

    fn forward_sampled(&mut self, batch: &[SeqChunk<'_>], requests: &mut [SampleRequest<'_>]) -> mlahost_engine::Result<Option<Vec<DeviceSample>>> {
        // decided before any rank runs, so all run or none does; data-parallel steps sample on
        // the host
        if self.layout.data_parallel > 1 || !CudaBackend::samples_on_device(batch, requests) {
            return Ok(None);
        }
        let (_, samples) = self.run_all(batch, Some(requests)).map_err(EngineError::from)?;
        Ok(samples)
    }
}

/// Routing is not recorded across ranks (the end-to-end checks compare logits).
impl RoutingTrace for CudaRankGroup {
    fn routing(&self) -> mlahost_engine::Result<Option<Vec<Vec<TokenRoute>>>> {
        Ok(None)
    }
}

/// The whole model, in host memory or to be read layer by layer.
pub enum ModelSource<'a> {
    Host(&'a ModelWeights),
    Stream(&'a dyn TensorSource),
}

/// The config and weights of global ranks `ranks`, the i-th on GPU `ordinal(i)`: each layer of
/// `source` cut for every one of them (`RankShard`) and uploaded before the next is read, the
/// lm_head cut by vocabulary rows; the embedding stays whole on every rank.
fn rank_weights(cfg: &ModelConfig, source: ModelSource<'_>, layout: ParallelLayout, quant: WeightQuant, ranks: std::ops::Range<usize>, ordinal: &dyn Fn(usize) -> usize) -> Result<Vec<(ModelConfig, GpuWeights)>> {
    let plans = ranks.clone().map(|rank| RankShard::plan(cfg, layout, rank)).collect::<mlahost_engine::Result<Vec<_>>>()?;
    let gpus = (0..ranks.len()).map(|i| Gpu::open(ordinal(i))).collect::<Result<Vec<_>>>()?;
    // as `CudaBackend::build` decides: an FP8 checkpoint on GPUs without FP8 tensor cores is
    // widened to bf16 under `auto`
    let no_fp8_cores = gpus.iter().any(|g| g.info.compute_capability < (8, 9));
    let fp8 = quant.fp8_for(cfg.fp8.is_some()) && !(quant == WeightQuant::Auto && no_fp8_cores);
    let mut builders: Vec<WeightsBuilder<'_>> = gpus.iter().map(|g| WeightsBuilder::new(g, fp8)).collect();
    for i in 0..cfg.num_hidden_layers {
        let read;
        let layer = match source {
            ModelSource::Host(w) => &w.layers[i],
            ModelSource::Stream(src) => {
                read = ModelWeights::load_layer(src, cfg, i)?;
                &read
            }
        };
        for (plan, b) in plans.iter().zip(&mut builders) {
            b.push_layer(&plan.layer(layer))?;
        }
    }
    let loaded;
    let ends: Ends<'_> = match source {
        ModelSource::Host(w) => w.into(),
        ModelSource::Stream(src) => {
            loaded = ModelEnds::load(src, cfg)?;
            (&loaded).into()
        }
    };
    plans
        .into_iter()
        .zip(builders)
        .map(|(plan, b)| {
            // each rank computes its vocabulary rows' logits (`Forward::run` sums them whole)
            let lm_head = plan.lm_head(ends.lm_head);
            Ok((plan.cfg.clone(), b.finish(&plan.cfg, Ends { lm_head: &lm_head, ..ends })?))
        })
        .collect()
}
