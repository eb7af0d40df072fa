//! Host bindings generated from wit/plugin.wit, one module per world.

pub mod sampler {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "sampler-plugin",
        with: { "mlahost:plugin/logits-access.logits": crate::logits_row::LogitsRow },
    });
}

pub mod router {
    wasmtime::component::bindgen!({ path: "../../wit", world: "router-plugin" });
}

pub mod prefix_policy {
    wasmtime::component::bindgen!({ path: "../../wit", world: "prefix-policy-plugin" });
}

pub mod admission {
    wasmtime::component::bindgen!({ path: "../../wit", world: "admission-plugin" });
}
