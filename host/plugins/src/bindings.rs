//! Host bindings generated from the WIT, one module per world and package version: `v2` from
//! wit/plugin.wit (mlahost:plugin@0.2.0), `v1` from wit/v0.1.0/plugin.wit, so components built
//! against 0.1.0 keep loading. Both versions' `logits` resource is the host's `LogitsRows`.

pub mod v2 {
    pub mod sampler {
        wasmtime::component::bindgen!({
            path: "../../wit/plugin.wit",
            world: "sampler-plugin",
            with: { "mlahost:plugin/logits-access.logits": crate::logits_row::LogitsRows },
        });
    }

    pub mod router {
        wasmtime::component::bindgen!({ path: "../../wit/plugin.wit", world: "router-plugin" });
    }

    pub mod prefix_policy {
        wasmtime::component::bindgen!({ path: "../../wit/plugin.wit", world: "prefix-policy-plugin" });
    }

    pub mod admission {
        wasmtime::component::bindgen!({ path: "../../wit/plugin.wit", world: "admission-plugin" });
    }
}

pub mod v1 {
    pub mod sampler {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.1.0/plugin.wit",
            world: "sampler-plugin",
            with: { "mlahost:plugin/logits-access.logits": crate::logits_row::LogitsRows },
        });
    }

    pub mod router {
        wasmtime::component::bindgen!({ path: "../../wit/v0.1.0/plugin.wit", world: "router-plugin" });
    }

    pub mod prefix_policy {
        wasmtime::component::bindgen!({ path: "../../wit/v0.1.0/plugin.wit", world: "prefix-policy-plugin" });
    }

    pub mod admission {
        wasmtime::component::bindgen!({ path: "../../wit/v0.1.0/plugin.wit", world: "admission-plugin" });
    }
}
