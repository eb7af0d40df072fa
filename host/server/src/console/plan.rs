//! `GET /console/plan?context=N`: what `mlahost plan` prints, for the loaded model and the
//! pool this server actually allocated, from the same `capacity` functions.

use crate::api::ServeInfo;
use crate::api::error::ApiError;
use crate::api::AppState;
use mlahost_engine::capacity;
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;

pub fn plan(state: &AppState, query: Option<&str>) -> Result<Value, ApiError> {
    let context = match query_param(query, "context") {
        None => state.max_model_len,
        Some(v) => v.parse::<usize>().ok().filter(|&c| c > 0 && c <= 1 << 30).ok_or_else(|| ApiError::invalid("context", "`context` must be a positive integer"))?,
    };
    let info: &ServeInfo = &state.info;
    let cfg = &state.model.config;
    let dtype = info.kv_cache_dtype.ok_or_else(|| ApiError::internal("the cache dtype is not known"))?;
    let weights = capacity::count_weights(&state.model.dir, cfg).map_err(|e| ApiError::internal(format!("counting weights: {e}")))?;
    let fp = capacity::kv_footprint(cfg, dtype);
    let layers = cfg.num_hidden_layers as u64;
    let per_seq = |per_layer: usize| per_layer as u64 * layers * context as u64;
    let page_size = info.page_size.max(1);
    let page_bytes = capacity::page_bytes(cfg, dtype, page_size);
    let pages = state.replicas.list.iter().map(|r| r.metrics.pages_total.load(Relaxed) as usize).min().unwrap_or(0);
    let per_replica = capacity::sequences_that_fit(pages, page_size, context);
    Ok(json!({
        "model": state.served_model_name,
        "shape": {
            "layers": cfg.num_hidden_layers, "heads": cfg.num_attention_heads, "hidden": cfg.hidden_size,
            "kv_lora_rank": cfg.kv_lora_rank, "qk_rope_head_dim": cfg.qk_rope_head_dim, "v_head_dim": cfg.v_head_dim,
        },
        "device": info.device,
        "kv_cache_dtype": dtype.as_str(),
        "weights": {"parameters": weights.parameters, "bytes_bf16": weights.bf16_bytes(), "source": weights.source.as_str()},
        "per_token_per_layer": {"c_kv": fp.c_kv, "k_pe": fp.k_pe, "scales": fp.scales, "stored": fp.stored, "mha": fp.mha, "gqa8": fp.gqa8},
        "per_token_all_layers": fp.stored as u64 * layers,
        "per_sequence": {
            "context": context, "c_kv_bytes": per_seq(fp.c_kv), "stored_bytes": per_seq(fp.stored),
            "mha_bytes": per_seq(fp.mha), "gqa8_bytes": per_seq(fp.gqa8),
        },
        "pool": {
            "page_size": page_size, "page_bytes": page_bytes, "pages": pages, "tokens": pages as u64 * page_size as u64,
            "bytes": page_bytes * pages as u64, "replicas": info.replicas,
            "sequences_per_replica": per_replica, "sequences": per_replica * info.replicas,
        },
        "max_model_len": state.max_model_len,
    }))
}

/// One `key=value` from a query string (no percent-decoding: the values are numbers).
pub fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}
