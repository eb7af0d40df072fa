//! Broken checkpoints give an error that names the culprit, never a panic.

use mlahost_tests::ScratchCheckpoint;
use serde_json::json;

fn assert_mentions(err: &str, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "error {err:?} does not mention {p:?}");
    }
}

#[test]
fn truncated_safetensors_names_the_file() {
    let c = ScratchCheckpoint::copy_of("tiny-v2-lite", "trunc");
    let path = c.dir.join("model.safetensors");
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len / 2).unwrap();
    assert_mentions(&c.load_error(), &["model.safetensors", "truncated"]);
    f.set_len(5).unwrap();
    assert_mentions(&c.load_error(), &["model.safetensors", "too short"]);
}

#[test]
fn missing_tensor_is_named() {
    let c = ScratchCheckpoint::copy_of("tiny-v2-lite", "missing");
    c.edit_safetensors_header("model.safetensors", |h| {
        h.remove("model.layers.1.mlp.experts.5.up_proj.weight");
    });
    assert_mentions(&c.load_error(), &["model.layers.1.mlp.experts.5.up_proj.weight", "missing"]);
}

#[test]
fn wrong_shape_is_named_with_both_shapes() {
    let c = ScratchCheckpoint::copy_of("tiny-v2-lite", "shape");
    let name = "model.layers.0.self_attn.kv_b_proj.weight";
    c.edit_safetensors_header("model.safetensors", |h| {
        let shape = h[name]["shape"].as_array().unwrap().clone();
        h.get_mut(name).unwrap()["shape"] = json!([shape[1], shape[0]]);
    });
    assert_mentions(&c.load_error(), &[name, "expected shape [256, 64]", "found [64, 256]"]);
}

#[test]
fn unsupported_dtype_is_named() {
    let c = ScratchCheckpoint::copy_of("tiny-v2-lite", "dtype");
    let name = "model.layers.2.post_attention_layernorm.weight";
    c.edit_safetensors_header("model.safetensors", |h| {
        h.get_mut(name).unwrap()["dtype"] = json!("I16");
    });
    assert_mentions(&c.load_error(), &[name, "I16"]);
}

#[test]
fn fp8_without_scales_is_named() {
    let c = ScratchCheckpoint::copy_of("tiny-v3-fp8", "scale");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.dir.join("model.safetensors.index.json")).unwrap()).unwrap();
    let name = "model.layers.0.self_attn.o_proj.weight_scale_inv";
    let file = index["weight_map"][name].as_str().unwrap().to_string();
    c.edit_safetensors_header(&file, |h| {
        h.remove(name);
    });
    c.edit_json("model.safetensors.index.json", |v| {
        v["weight_map"].as_object_mut().unwrap().remove(name);
    });
    assert_mentions(&c.load_error(), &[name, "missing"]);
}

#[test]
fn sharded_index_errors_name_file_or_tensor() {
    let c = ScratchCheckpoint::copy_of("tiny-v2", "index");
    c.edit_json("model.safetensors.index.json", |v| {
        v["weight_map"]["model.norm.weight"] = json!("model-00009-of-00009.safetensors");
    });
    assert_mentions(&c.load_error(), &["model-00009-of-00009.safetensors"]);
    let c = ScratchCheckpoint::copy_of("tiny-v2", "index2");
    c.edit_json("model.safetensors.index.json", |v| {
        let map = v["weight_map"].as_object_mut().unwrap();
        let other = if map["model.norm.weight"] == json!("model-00001-of-00002.safetensors") { 2 } else { 1 };
        map.insert("model.norm.weight".into(), json!(format!("model-0000{other}-of-00002.safetensors")));
    });
    assert_mentions(&c.load_error(), &["model.norm.weight", "does not contain it"]);
}

#[test]
fn config_errors_name_the_field() {
    let c = ScratchCheckpoint::copy_of("tiny-v2-lite", "arch");
    c.edit_json("config.json", |v| v["architectures"] = json!(["MixtralForCausalLM"]));
    assert_mentions(&c.load_error(), &["MixtralForCausalLM", "unsupported architecture"]);
    c.edit_json("config.json", |v| {
        v["architectures"] = json!(["DeepseekV2ForCausalLM"]);
        v.as_object_mut().unwrap().remove("qk_rope_head_dim");
    });
    assert_mentions(&c.load_error(), &["qk_rope_head_dim", "missing"]);
    std::fs::write(c.dir.join("config.json"), "{ not json").unwrap();
    assert_mentions(&c.load_error(), &["config.json", "invalid JSON"]);
}

#[test]
fn tokenizer_errors_name_the_file() {
    let c = ScratchCheckpoint::copy_of("tiny-v2-lite", "tok");
    std::fs::remove_file(c.dir.join("tokenizer.json")).unwrap();
    assert_mentions(&c.load_error(), &["tokenizer.json", "not found"]);
    std::fs::write(c.dir.join("tokenizer.json"), "{\"model\": 3}").unwrap();
    assert_mentions(&c.load_error(), &["tokenizer.json"]);
}

#[test]
fn missing_directory_and_weights() {
    let c = ScratchCheckpoint::copy_of("tiny-v2-lite", "noweights");
    std::fs::remove_file(c.dir.join("model.safetensors")).unwrap();
    assert_mentions(&c.load_error(), &["no model.safetensors"]);
    let err = mlahost_engine::LoadedModel::load(std::path::Path::new("/nonexistent/model"), None).err().unwrap();
    assert_mentions(&err.to_string(), &["/nonexistent/model", "not found"]);
}

#[test]
fn absurd_header_values_are_errors_not_panics() {
    let c = ScratchCheckpoint::copy_of("tiny-v2-lite", "absurd");
    let name = "model.norm.weight";
    c.edit_safetensors_header("model.safetensors", |h| {
        h.get_mut(name).unwrap()["data_offsets"] = json!([u64::MAX - 3, u64::MAX]);
    });
    assert_mentions(&c.load_error(), &[name, "data_offsets"]);
    c.edit_safetensors_header("model.safetensors", |h| {
        h.get_mut(name).unwrap()["shape"] = json!([u64::MAX, 4]);
    });
    assert_mentions(&c.load_error(), &[name, "overflows"]);
}
