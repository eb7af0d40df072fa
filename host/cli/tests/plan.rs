//! `mlahost plan`: the seed's DeepSeek-V3 figures from a config alone, and a pool answer equal to
//! what `serve` allocates with the same flags.

mod support;

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use support::{fixture, Server};

/// DeepSeek-V3's and V2-Lite's config.json as on the hub (no weights, no tokenizer: plan needs neither).
fn v3_config() -> Value {
    serde_json::from_str(include_str!("../../../tests/fixtures/configs/deepseek-v3.json")).expect("fixture config")
}

fn v2_lite_config() -> Value {
    serde_json::from_str(include_str!("../../../tests/fixtures/configs/deepseek-v2-lite.json")).expect("fixture config")
}

struct ConfigDir(PathBuf);

impl ConfigDir {
    fn new(tag: &str, config: Value) -> Self {
        let dir = std::env::temp_dir().join(format!("mlahost-plan-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        Self(dir)
    }
}

impl Drop for ConfigDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn plan(model: &std::path::Path, extra: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_mlahost"))
        .args(["plan", "--model", model.to_str().unwrap(), "--json"])
        .args(extra)
        .output()
        .expect("run mlahost plan");
    assert!(out.status.success(), "plan failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("plan prints one JSON object")
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn plan_reproduces_the_seed_deepseek_v3_figures() {
    let dir = ConfigDir::new("v3", v3_config());
    let bf16 = plan(&dir.0, &["--gpu-memory", "141GB"]);
    assert_eq!(bf16["kv_cache_dtype"], "bf16", "bf16 is the default on a GPU");
    let t = &bf16["per_token_per_layer"];
    assert_eq!((n(&t["c_kv"]), n(&t["k_pe"]), n(&t["stored"])), (1024, 128, 1152));
    assert_eq!((n(&t["mha"]), n(&t["gqa8"])), (65_536, 4_096));
    // 1,024 B x 61 layers x 131,072 tokens = 8.19 GB = 7.63 GiB; the seed's "7.5 GB" is this
    // figure in GiB, rounded: within 2%.
    let seq = n(&bf16["per_sequence"]["c_kv_bytes"]);
    assert_eq!(seq, 1024 * 61 * 131_072);
    let gib = seq as f64 / (1u64 << 30) as f64;
    assert!((gib / 7.5 - 1.0).abs() < 0.02, "{gib} GiB");
    // Weights from the config's shapes: 671 B parameters (MTP excluded), 1.34 TB in bf16,
    // which no single 141 GB GPU holds: plan says so instead of a pool.
    assert_eq!(bf16["weights"]["source"], "config.json shapes");
    let params = n(&bf16["weights"]["parameters"]) as f64;
    assert!((params / 671e9 - 1.0).abs() < 0.005, "{params}");
    assert_eq!(bf16["pool"]["fits"], false);
    assert!(bf16["pool"]["reason"].as_str().unwrap().contains("do not fit"));

    let fp8 = plan(&dir.0, &["--gpu-memory", "141GB", "--kv-cache-dtype", "fp8"]);
    let t = &fp8["per_token_per_layer"];
    assert_eq!((n(&t["c_kv"]), n(&t["scales"]), n(&t["k_pe"]), n(&t["stored"])), (512, 16, 128, 656));

    // The text table names the same figures.
    let out = Command::new(env!("CARGO_BIN_EXE_mlahost"))
        .args(["plan", "--model", dir.0.to_str().unwrap(), "--gpu-memory", "141GB"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for want in ["1,024 B", "1,152 B", "65,536 B", "4,096 B", "7.62 GiB", "DOES NOT FIT"] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
}

#[test]
fn plan_gpu_pool_is_budget_over_page_bytes_and_scales_with_gpus() {
    let dir = ConfigDir::new("v2lite", v2_lite_config());
    let one = plan(&dir.0, &["--gpu-memory", "80GiB", "--context", "32768"]);
    // DeepSeek-V2-Lite: 15.7 B parameters.
    let params = n(&one["weights"]["parameters"]) as f64;
    assert!((params / 15.7e9 - 1.0).abs() < 0.01, "{params}");
    let p = &one["pool"];
    assert_eq!(p["fits"], true);
    let usable = (80.0 * (1u64 << 30) as f64 * 0.92).floor() as u64;
    assert_eq!(n(&p["usable_bytes"]), usable);
    let budget = usable - n(&one["weights"]["bytes_bf16"]) - n(&p["workspace_bytes"]);
    assert_eq!(n(&p["kv_budget_bytes"]), budget);
    let page = 27 * 64 * 1152;
    assert_eq!(n(&p["page_bytes"]), page);
    assert_eq!(n(&p["pages"]), budget / page);
    assert_eq!(n(&p["tokens"]), budget / page * 64);
    assert_eq!(n(&p["sequences_per_replica"]), budget / page / (32768 / 64));
    let four = plan(&dir.0, &["--gpu-memory", "80GiB", "--context", "32768", "--gpus", "4"]);
    assert_eq!(n(&four["pool"]["sequences"]), 4 * n(&p["sequences_per_replica"]));
}

#[test]
fn fp8_pool_holds_1_76x_the_bf16_tokens() {
    // 1152 / 656 = 1.756 for DeepSeek shapes (not 2x: fp8 keeps k_pe in bf16 and adds scales).
    let dir = ConfigDir::new("v3-cpu", v3_config());
    let tokens = |dtype: &str| {
        n(&plan(&dir.0, &["--device", "cpu", "--kv-cache-memory", "100GiB", "--kv-cache-dtype", dtype])["pool"]["tokens"]) as f64
    };
    let ratio = tokens("fp8") / tokens("bf16");
    assert!((ratio - 1152.0 / 656.0).abs() < 1e-3, "fp8 / bf16 tokens = {ratio}");
}

#[test]
fn plan_pool_equals_what_serve_allocates() {
    let model = fixture("tiny-v2-lite");
    let m = model.to_str().unwrap();
    for (dtype, memory) in [("fp8", "3MB"), ("bf16", "3MB"), ("auto", "3MB"), ("fp8", "777777")] {
        let planned = plan(&model, &["--device", "cpu", "--kv-cache-memory", memory, "--kv-cache-dtype", dtype, "--page-size", "16"]);
        let tokens = n(&planned["pool"]["tokens"]);
        let server = Server::start(&["--model", m, "--kv-cache-memory", memory, "--kv-cache-dtype", dtype, "--page-size", "16"]);
        assert_eq!(server.metric("mlahost_kv_cache_tokens_total") as u64, tokens, "{dtype} {memory}");
        assert_eq!(server.metric("mlahost_kv_cache_pages_total") as u64, n(&planned["pool"]["pages"]), "{dtype} {memory}");
        let per_token = n(&planned["per_token_all_layers"]);
        assert_eq!(server.metric("mlahost_kv_cache_bytes_per_token") as u64, per_token, "{dtype}");
        // tiny-v2-lite: kv_lora 64, rope 16, 3 layers: f32 960, bf16 480, fp8 (64 + 4 + 32) x 3 = 300.
        let want = match dtype {
            "fp8" => 300,
            "bf16" => 480,
            _ => 960,
        };
        assert_eq!(per_token, want, "{dtype}");
        // The server serves with the quantized cache.
        let (status, body) = server.post("/v1/completions", &json!({"prompt": [0, 5, 9], "max_tokens": 4, "temperature": 0}));
        assert_eq!(status, 200, "{body}");
    }
}

#[test]
fn plan_and_serve_reject_bad_flags() {
    let dir = ConfigDir::new("bad", v3_config());
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mlahost")).args(["plan", "--model", dir.0.to_str().unwrap()]).args(extra).output().unwrap()
    };
    let out = run(&["--kv-cache-dtype", "int4"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("int4"));
    assert!(!run(&["--gpu-memory", "lots"]).status.success());
    assert!(!run(&["--kv-cache-memory", "1GB"]).status.success(), "CPU sizing flag on a GPU plan");
    assert!(!run(&["--context", "0"]).status.success());
    let err = support::refuse_to_start(&["--model", fixture("tiny-v2-lite").to_str().unwrap(), "--kv-cache-memory", "10", "--kv-cache-dtype", "fp8"]);
    assert!(err.contains("holds no page"), "{err}");
}

#[test]
fn plan_compares_layouts_over_several_gpus_with_vllm_flags() {
    let dir = ConfigDir::new("v3-layouts", v3_config());
    let r = plan(&dir.0, &["--gpus", "8", "--gpu-memory", "141GB", "--quantization", "fp8", "--context", "131072", "-tp", "2", "-dp", "4", "--enable-expert-parallel"]);
    let layouts = r["parallel"]["layouts"].as_array().unwrap();
    let names: Vec<&str> = layouts.iter().map(|l| l["layout"].as_str().unwrap()).collect();
    assert_eq!(names, ["TP=2 x DP=4 + EP=8", "TP=8", "DP=8 + EP=8"]);
    let by = |name: &str| layouts.iter().find(|l| l["layout"] == name).unwrap();
    // every layout fits 141 GB cards in FP8; DP attention stores each sequence once, so it
    // serves more sequences than plain TP although each GPU keeps more weights
    for l in layouts {
        assert_eq!(l["fits"], true, "{l}");
    }
    assert!(n(&by("DP=8 + EP=8")["weight_bytes_per_gpu"]) > n(&by("TP=8")["weight_bytes_per_gpu"]));
    assert!(n(&by("DP=8 + EP=8")["sequences"]) > n(&by("TP=8")["sequences"]));
    assert_eq!(n(&by("TP=8")["instances"]), 1);
    // DP + EP with one rank per group: each token's f32 row all-gathered in and reduce-scattered
    // out in equal slots, per MoE layer; with two ranks per group the packed rows are all-reduced
    // each way, beside the group's own all-reduces (o_proj and the MLP, bf16, every layer)
    let dp8 = &by("DP=8 + EP=8")["collective_bytes_per_token"];
    assert_eq!((n(&dp8["all_gather"]), n(&dp8["reduce_scatter"]), n(&dp8["all_reduce"])), (7168 * 4 * 58, 7168 * 4 * 58, 0));
    let tp2 = &by("TP=2 x DP=4 + EP=8")["collective_bytes_per_token"];
    assert_eq!(n(&tp2["all_reduce"]), 2 * 7168 * 2 * 61 + 2 * 7168 * 4 * 58);
    assert_eq!(n(&tp2["reduce_scatter"]), 0);
    // the back-of-envelope figure is printed beside the table
    let simple = &r["parallel"]["simple_arithmetic"];
    assert!(simple["users"].as_f64().unwrap() > 1.0);
}

#[test]
fn plan_refuses_layouts_the_model_cannot_take() {
    let dir = ConfigDir::new("v3-bad-layouts", v3_config());
    for (args, want) in [
        (vec!["--gpus", "8", "-tp", "3"], "128 attention heads"),
        (vec!["--gpus", "4", "-tp", "8"], "needs 8 GPUs"),
        (vec!["--gpus", "8", "-tp", "2", "-dp", "3", "--enable-expert-parallel"], "256 routed experts"),
        (vec!["--device", "cpu", "-tp", "2"], "plan GPUs"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_mlahost")).args(["plan", "--model", dir.0.to_str().unwrap()]).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn plan_gives_each_layouts_decode_step_roofline() {
    let dir = ConfigDir::new("v3-roofline", v3_config());
    let r = plan(&dir.0, &["--gpus", "8", "--gpu-memory", "141GB", "--quantization", "fp8", "--kv-cache-dtype", "fp8", "--context", "32768", "--decode-batch", "16", "--hbm-gbps", "4000", "--link-gbps", "400"]);
    let layouts = r["parallel"]["layouts"].as_array().unwrap();
    let by = |name: &str| &layouts.iter().find(|l| l["layout"] == name).unwrap()["decode_step"];
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    let (tp, dp) = (by("TP=8"), by("DP=8 + EP=8"));
    // every TP rank reads the 16 sequences' latents (656 B per token per layer in fp8); a DP
    // rank only the 2 of its group
    assert_eq!(f(tp, "kv_bytes_per_gpu"), (16 * 32768 * 61 * 656u64) as f64);
    assert_eq!(f(dp, "kv_bytes_per_gpu"), (2 * 32768 * 61 * 656u64) as f64);
    assert_eq!((f(tp, "experts_held"), f(dp, "experts_held")), (256.0, 32.0));
    // the roofline: bytes over the bandwidths given, and the step's tokens over that time
    for s in [tp, dp] {
        let secs = (f(s, "weight_bytes_per_gpu") + f(s, "kv_bytes_per_gpu")) / 4e12 + f(s, "wire_bytes_per_gpu") / 4e11;
        assert!((f(s, "roofline_ms") - secs * 1e3).abs() < 1e-6, "{s}");
        assert!((f(s, "roofline_output_tok_s") - 16.0 / secs).abs() < 1e-3, "{s}");
    }
    // one GPU (no layout): the whole model's step, nothing sent; without bandwidths no time
    let lite = ConfigDir::new("lite-roofline", v2_lite_config());
    let one = &plan(&lite.0, &["--context", "1152", "--decode-batch", "1"])["decode_step"];
    assert_eq!(f(one, "wire_bytes_per_gpu"), 0.0);
    assert_eq!(f(one, "experts_touched_per_moe_layer"), 6.0, "one token touches its 6 experts");
    assert!(one.get("roofline_ms").is_none());
    // the bandwidths need a batch
    let out = Command::new(env!("CARGO_BIN_EXE_mlahost")).args(["plan", "--model", lite.0.to_str().unwrap(), "--hbm-gbps", "3000"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--decode-batch"));
}
