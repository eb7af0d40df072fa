//! The generated bindings, one module per world, private to the SDK. Plugin authors see only the
//! plain Rust types and traits of the kind modules; the export macros reach these modules
//! through `__private`.
//!
//! `pub_export_macro` makes wit-bindgen put the component-type section that lists a world's
//! exports into the export macro, so a plugin carries only the world it exports.

// Generated code: documented by the WIT, not by rustdoc, and partly unused on purpose.
#![allow(missing_docs, unused_imports, dead_code)]

/// `sampler-plugin` (imports `logits-access` and `vocabulary`, exports `sampler`).
pub mod sampler {
    wit_bindgen::generate!({
        path: "../wit/plugin.wit",
        world: "sampler-plugin",
        runtime_path: "::mlahost_sdk::__private::wit_bindgen::rt",
        pub_export_macro: true,
        export_macro_name: "__mlahost_export_sampler_world",
    });
}

/// `router-plugin`.
pub mod router {
    wit_bindgen::generate!({
        path: "../wit/plugin.wit",
        world: "router-plugin",
        runtime_path: "::mlahost_sdk::__private::wit_bindgen::rt",
        pub_export_macro: true,
        export_macro_name: "__mlahost_export_router_world",
    });
}

/// `prefix-policy-plugin`.
pub mod prefix_policy {
    wit_bindgen::generate!({
        path: "../wit/plugin.wit",
        world: "prefix-policy-plugin",
        runtime_path: "::mlahost_sdk::__private::wit_bindgen::rt",
        pub_export_macro: true,
        export_macro_name: "__mlahost_export_prefix_policy_world",
    });
}

/// `admission-plugin`.
pub mod admission {
    wit_bindgen::generate!({
        path: "../wit/plugin.wit",
        world: "admission-plugin",
        runtime_path: "::mlahost_sdk::__private::wit_bindgen::rt",
        pub_export_macro: true,
        export_macro_name: "__mlahost_export_admission_world",
    });
}
