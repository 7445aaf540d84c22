//! contrib/kubernetes: the manifests are checked against Kubernetes' schemas in CI
//! (kubernetes-validate --strict, in .ci/run); here, that what they give the daemon is a
//! configuration it takes, and that the pod is what docs/operations.md promises.

use crate::support::repo;

/// The TOML of the ConfigMap's `config.toml` key (a YAML block scalar, indented 4).
fn configmap_toml() -> String {
    let yaml = std::fs::read_to_string(repo().join("contrib/kubernetes/configmap.yaml")).unwrap();
    let (_, block) = yaml
        .split_once("  config.toml: |\n")
        .expect("a config.toml key");
    block
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_configmap_is_a_configuration_the_daemon_takes() {
    let text = configmap_toml();
    let path = std::path::Path::new("contrib/kubernetes/configmap.yaml");
    let config = comms_archiver::config::Config::from_toml(path, &text, &[])
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(config.intake.is_some(), "the replicas' SMTP intake");
    assert_eq!(
        config.telemetry.listen.map(|a| a.port()),
        Some(9898),
        "the probes' port"
    );
    assert!(
        matches!(config.stage, comms_archiver::stage::StageConfig::Azure(_)),
        "a shared stage"
    );
    // Every file the configuration reads is one the Deployment mounts.
    let deployment =
        std::fs::read_to_string(repo().join("contrib/kubernetes/deployment.yaml")).unwrap();
    for mount in ["/etc/comms-archiver", "/run/secrets/comms-archiver"] {
        assert!(
            deployment.contains(&format!("mountPath: {mount}")),
            "{mount}"
        );
    }
    // The root filesystem is read-only: the stage cache needs a volume of its own.
    if let comms_archiver::stage::StageConfig::Azure(azure) = &config.stage {
        if let Some(cache) = &azure.cache_path {
            assert!(
                deployment.contains(&format!("mountPath: {}", cache.display())),
                "the stage cache {} is a mounted volume",
                cache.display()
            );
        }
    }
    for line in text
        .lines()
        .filter(|l| l.contains("file = \"") || l.contains("= \"/run"))
    {
        assert!(line.contains("/run/secrets/comms-archiver/"), "{line}");
    }
    for promise in [
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "path: /healthz",
        "path: /readyz",
        "limits:",
        "name: COMMS_ARCHIVER_CONFIG",
        // The image's own loopback health address would hide the probes' port.
        "name: COMMS_ARCHIVER__TELEMETRY__LISTEN",
        "value: 0.0.0.0:9898",
        "containerPort: 9898",
    ] {
        assert!(deployment.contains(promise), "the Deployment has {promise}");
    }
}
