//! A data-parallel step's place among the attention groups: what one rank's forward pass needs
//! to exchange its MoE rows with every rank of the instance (`forward_dp`).

use crate::collective::DeviceCollective;
use crate::gpu::Gpu;
use std::sync::Arc;

/// One step's place among the attention groups.
#[derive(Clone, Copy)]
pub struct DpMoe<'a> {
    /// Every rank of the instance: the routed experts are spread over all of them.
    pub world: &'a dyn DeviceCollective,
    pub gpu: &'a Arc<Gpu>,
    /// The step's tokens over every group, and where this group's start among them.
    pub total: usize,
    pub offset: usize,
    /// The group's first rank: it brings the group's rows and takes the result into its
    /// residual (the group's other ranks send zeros and add nothing, so no row counts twice and
    /// the group's residual sum adds the result once).
    pub leader: bool,
    /// Equal slots of `total / world` rows per rank: all-gather in, reduce-scatter out (else
    /// packed rows, summed in and out with all-reduces).
    pub slots: bool,
}
