//! `deploy/kubernetes`: every manifest validates (strictly: no unknown
//! field) against the Kubernetes API schemas that `kubernetes-validate`
//! carries, and the gateway configuration in its ConfigMap passes
//! `wasmgate check`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

#[test]
fn the_manifests_validate_against_the_kubernetes_schemas() {
    let resources = [
        "configmap.yaml",
        "deployment.yaml",
        "service.yaml",
        "pdb.yaml",
    ];
    let kustomization =
        std::fs::read_to_string(manifests().join("kustomization.yaml")).expect("kustomization");
    for resource in resources {
        assert!(
            kustomization.contains(&format!("- {resource}")),
            "{resource} not listed"
        );
    }
    let output = Command::new(wasmgate_tests::venv_tool(
        "KUBERNETES_VALIDATE",
        "kubernetes-validate",
    ))
    .args(["--strict", "--kubernetes-version", "1.37.0"])
    .args(resources.map(|resource| manifests().join(resource)))
    .output()
    .expect("kubernetes-validate runs");
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}");
    assert_eq!(
        report.matches(" passed for resource ").count(),
        4,
        "{report}"
    );
}

#[test]
fn the_configmap_holds_a_valid_gateway_configuration() {
    let configmap = std::fs::read_to_string(manifests().join("configmap.yaml")).expect("read");
    let (_, body) = configmap
        .split_once("wasmgate.toml: |\n")
        .expect("a wasmgate.toml key");
    let toml: String = body
        .lines()
        .map(|line| line.strip_prefix("    ").unwrap_or(line.trim()))
        .map(|line| format!("{line}\n"))
        .collect();
    // The pod's paths, made this machine's: the test fixtures' handlers and
    // a token file only this user reads.
    let dir = tempfile::tempdir().expect("temp dir");
    let token = dir.path().join("token");
    std::fs::write(&token, "secret-token-for-the-test\n").expect("write");
    std::fs::set_permissions(
        &token,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .expect("chmod");
    let toml = toml
        .replace("/srv/wasmgate/handlers", "{handlers}")
        .replace("/etc/wasmgate/admin/token", &token.display().to_string());
    assert!(toml.contains("[cluster]"), "{toml}");
    let (code, stderr) = wasmgate_tests::check_in(dir.path(), &toml);
    assert_eq!(code, Some(0), "{stderr}\n{toml}");
}
