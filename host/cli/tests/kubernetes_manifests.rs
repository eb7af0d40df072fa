//! examples/kubernetes validates against the vendored CRD schemas and the Kubernetes schemas
//! (examples/kubernetes/validate.py). Skips with a message when its Python packages are
//! missing, unless MLAHOST_CI=1 (.ci/run installs them).

use std::path::PathBuf;
use std::process::Command;

#[test]
fn kubernetes_manifests_validate() {
    let ok = Command::new("python3").args(["-c", "import jsonschema, yaml, kubernetes_validate"]).status().map(|s| s.success()).unwrap_or(false);
    if !ok {
        assert!(std::env::var("MLAHOST_CI").as_deref() != Ok("1"), "pip install jsonschema pyyaml kubernetes-validate");
        eprintln!("SKIPPED kubernetes_manifests_validate: pip install jsonschema pyyaml kubernetes-validate");
        return;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/kubernetes/validate.py");
    let out = Command::new("python3").arg(script).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains(", 0 errors"), "{text}");
    for kind in ["Deployment/mlahost", "Service/mlahost", "InferencePool/", "InferenceObjective/", "HTTPRoute/", "Gateway/"] {
        assert!(text.contains(kind), "{kind} was not validated: {text}");
    }
}
