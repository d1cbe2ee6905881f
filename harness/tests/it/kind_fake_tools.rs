//! The kind target's command phases against fake kind, istioctl, docker and kubectl: the order
//! of steps, cleanup after a failure in each phase, E2E_CLUSTER, E2E_KEEP, reaping, and errors
//! that carry the failing tool's stderr. The Kubernetes API side is the fake `ClusterApi`.

use crate::kind_support;

use harness::config::knobs::Keep;
use harness::env::Environment;
use harness::env::cluster::{ClusterChoice, KindEnvironment};
use harness::env::timings::Timings;
use harness::exec::cmd::Runner;
use harness::tools::kind::{self, OwnerMarker};
use kind_support::{BUILT_IMAGE, Fake, FakeBackend, kind_verbs};
use rstest::rstest;

#[tokio::test]
async fn a_run_creates_loads_installs_applies_probes_and_deletes_in_order() {
    let fake = Fake::new(&[]);
    let backend = FakeBackend::default();
    let settings = fake.settings(Keep::Never, ClusterChoice::Generated);
    let mut times = Timings::default();
    let mut env = KindEnvironment::up_with(Runner::new(), settings, &backend, &mut times)
        .await
        .expect("up");
    let name = fake.created_cluster();
    assert_eq!(kind::owner_pid(&name), Some(std::process::id()));
    assert_eq!(fake.clusters(), vec![name.clone()]);
    assert!(
        fake.state_dir().marker(&name).exists(),
        "owner marker written"
    );

    let calls = fake.calls();
    let verbs: Vec<String> = kind_verbs(&calls)
        .into_iter()
        .map(|verb| match verb.strip_prefix("docker port ") {
            Some(_) => "docker port <node>".to_string(),
            None => verb,
        })
        .collect();
    assert_eq!(
        verbs,
        [
            "docker info --format",
            "kind version",
            "istioctl version --remote=false",
            "kubectl version --client",
            // The daemon's CPU, which the image's binary is built for.
            "docker info --format",
            "kind get clusters",
            "kind get clusters",
            // Nothing else may hold the port the config publishes.
            "docker ps --filter",
            "kind create cluster",
            "kind get kubeconfig",
            "kind load docker-image",
            "istioctl install -y",
            // The node publishes the gateway's nodePort where the config says, before probing.
            "docker port <node>",
        ]
    );
    let state = fake.state_dir();
    let kubeconfig = state.kubeconfig(&name);
    let call = |prefix: &str| {
        calls
            .iter()
            .find(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in {calls:?}"))
    };
    assert!(calls.contains(&"docker info --format {{.Architecture}}".to_string()));
    let create = call("kind create cluster");
    assert!(create.ends_with(&format!(
        "--config {} --wait 120s --kubeconfig {}",
        harness::config::paths::manifests_dir().join("kind-cluster.yaml").display(),
        kubeconfig.display()
    )));
    assert!(
        !create.contains("--image"),
        "the node image comes from the config only"
    );
    assert_eq!(
        call("kind load"),
        &format!("kind load docker-image {BUILT_IMAGE} --name {name}")
    );
    assert_eq!(
        call("istioctl install"),
        &format!(
            "istioctl install -y -f {} --readiness-timeout 5m --kubeconfig {} --context kind-{name}",
            harness::config::paths::manifests_dir()
                .join("istio-install.yaml")
                .display(),
            kubeconfig.display()
        )
    );
    assert_eq!(
        backend.calls(),
        [
            "image",
            "connect",
            "control-plane",
            "apply",
            "rollout",
            "gateway-node-port",
            "route"
        ]
    );
    let node = format!("{name}-control-plane");
    let port_check = calls
        .iter()
        .position(|c| c == &format!("docker port {node} 30001/tcp"))
        .unwrap_or_else(|| panic!("no docker port check in {calls:?}"));
    assert_eq!(
        port_check,
        calls.len() - 1,
        "checked last, just before probing"
    );
    let applied = backend.applied.lock().unwrap().clone();
    assert_eq!(applied[0]["kind"], "Namespace");
    assert_eq!(
        applied[2]["spec"]["template"]["spec"]["containers"][0]["image"],
        BUILT_IMAGE
    );
    assert_eq!(env.ingress(), "127.0.0.1:30001".parse().unwrap());
    // The kubeconfig holds the cluster's admin credentials: readable by its owner only.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&kubeconfig).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "kubeconfig mode {mode:o}");
    assert_eq!(
        backend.rollout_app.lock().unwrap().clone(),
        Some(harness::k8s::rollout::AppPods {
            container: "wtyfft-container-name".into(),
            image_preloaded: true,
        }),
        "on kind our image is loaded into the node, so a pull of it can only fail"
    );

    env.teardown(false).await.expect("teardown");
    env.teardown(false).await.expect("teardown is idempotent");
    assert!(fake.clusters().is_empty());
    let after: Vec<String> = fake.calls()[calls.len()..].to_vec();
    assert_eq!(
        after,
        [
            "kind get clusters".to_string(),
            format!(
                "kind delete cluster --name {name} --kubeconfig {}",
                kubeconfig.display()
            ),
            "kind get clusters".to_string(),
        ],
        "teardown deletes once and verifies with kind get clusters"
    );
    assert!(!state.marker(&name).exists() && !kubeconfig.exists());
    // Every phase is recorded in the caller's timings (the suite adds teardown, timing it).
    let phases: Vec<&str> = times.phases().iter().map(|p| p.phase.as_str()).collect();
    assert_eq!(
        phases,
        [
            "preflight",
            "reap",
            "image",
            "cluster",
            "connect",
            "load",
            "istio",
            "deploy",
            "ingress",
        ]
    );
}

/// A failure in each phase: the error says what failed, and whatever cluster exists is deleted.
#[rstest]
#[case::image_build(&[], Some("image"), "injected failure in image", false)]
#[case::cluster_create(&["kind-create"], None, "port is already allocated", false)]
#[case::image_load(&["kind-load"], None, "not present locally", true)]
#[case::istio_install(&["istioctl-install"], None, "ImagePullBackOff", true)]
#[case::control_plane(&[], Some("control-plane"), "injected failure in control-plane", true)]
#[case::apply(&[], Some("apply"), "injected failure in apply", true)]
#[case::rollout(&[], Some("rollout"), "injected failure in rollout", true)]
#[case::route(&[], Some("route"), "injected failure in route", true)]
#[tokio::test]
async fn a_failure_in_each_phase_is_reported_and_cleaned_up(
    #[case] tool_failures: &[&str],
    #[case] api_failure: Option<&'static str>,
    #[case] message: &str,
    #[case] cluster_existed: bool,
) {
    let fake = Fake::new(tool_failures);
    let backend = match api_failure {
        Some(step) => FakeBackend::failing(step),
        None => FakeBackend::default(),
    };
    let settings = fake.settings(Keep::Never, ClusterChoice::Generated);
    let err = kind_support::up_error(settings, &backend, "up must fail").await;
    assert!(err.contains(message), "error lacks `{message}`:\n{err}");
    let deletes: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("kind delete cluster"))
        .collect();
    if cluster_existed {
        assert_eq!(deletes.len(), 1, "{:?}", fake.calls());
        // Diagnostics were collected before the cluster went away.
        assert!(
            fake.calls()
                .iter()
                .any(|c| c.starts_with("kind export logs"))
        );
        assert!(fake.artifacts().join("events.txt").exists());
    } else {
        assert!(deletes.is_empty(), "nothing to delete: {deletes:?}");
    }
    assert!(
        fake.clusters().is_empty(),
        "left behind: {:?}",
        fake.clusters()
    );
    assert!(
        std::fs::read_dir(fake.state_dir().dir)
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "state files left behind"
    );
}

#[tokio::test]
async fn a_failing_command_shows_its_stderr_and_exit_status() {
    let fake = Fake::new(&["istioctl-install"]);
    let settings = fake.settings(Keep::Never, ClusterChoice::Generated);
    let err = kind_support::up(settings, &FakeBackend::default())
        .await
        .err()
        .expect("istioctl fails");
    let text = format!("{err:#}");
    assert!(text.contains("installing Istio 1.31.1"), "{text}");
    assert!(text.contains("exit status: 1"), "{text}");
    assert!(
        text.contains("Ingress gateways encountered an error"),
        "{text}"
    );
}

#[rstest]
#[case::existing_cluster(true)]
#[case::absent_cluster(false)]
#[tokio::test]
async fn e2e_cluster_is_reused_or_created_and_never_deleted(#[case] exists: bool) {
    let fake = Fake::new(&[]);
    if exists {
        fake.set_clusters(&["my-dev"]);
    }
    let settings = fake.settings(Keep::Never, ClusterChoice::Reuse("my-dev".into()));
    let backend = FakeBackend::default();
    let mut env = kind_support::up(settings, &backend).await.expect("up");
    env.teardown(false).await.unwrap();
    let creates = fake
        .calls()
        .iter()
        .filter(|c| c.starts_with("kind create"))
        .count();
    assert_eq!(creates, usize::from(!exists));
    assert!(
        !fake.calls().iter().any(|c| c.starts_with("kind delete")),
        "{:?}",
        fake.calls()
    );
    assert_eq!(fake.clusters(), ["my-dev"]);
    assert!(
        backend.calls().contains(&"istio-version".to_string()),
        "a reused cluster is asked which Istio it has"
    );
}

#[tokio::test]
async fn e2e_cluster_is_spared_even_when_a_later_step_fails() {
    let fake = Fake::new(&["istioctl-install"]);
    fake.set_clusters(&["my-dev"]);
    let settings = fake.settings(Keep::Never, ClusterChoice::Reuse("my-dev".into()));
    assert!(
        kind_support::up(settings, &FakeBackend::default())
            .await
            .is_err()
    );
    assert!(!fake.calls().iter().any(|c| c.starts_with("kind delete")));
    assert_eq!(fake.clusters(), ["my-dev"]);
}

#[rstest]
#[case::on_failure_after_failure(Keep::OnFailure, Some("rollout"))]
#[case::always_after_failure(Keep::Always, Some("route"))]
#[tokio::test]
async fn kept_clusters_survive_a_failure_and_are_no_longer_reapable(
    #[case] keep: Keep,
    #[case] failure: Option<&'static str>,
) {
    let fake = Fake::new(&[]);
    let backend = FakeBackend::failing(failure.unwrap());
    let settings = fake.settings(keep, ClusterChoice::Generated);
    assert!(kind_support::up(settings, &backend).await.is_err());
    let name = fake.created_cluster();
    assert_eq!(fake.clusters(), vec![name.clone()]);
    assert!(!fake.calls().iter().any(|c| c.starts_with("kind delete")));
    assert!(
        !fake.state_dir().marker(&name).exists(),
        "a kept cluster must not be reaped by the next run"
    );
}

#[tokio::test]
async fn keep_always_keeps_after_success_and_on_failure_deletes_after_success() {
    for (keep, kept) in [(Keep::Always, true), (Keep::OnFailure, false)] {
        let fake = Fake::new(&[]);
        let settings = fake.settings(keep, ClusterChoice::Generated);
        let mut env = kind_support::up(settings, &FakeBackend::default())
            .await
            .unwrap();
        env.teardown(keep.keeps(false)).await.unwrap();
        assert_eq!(fake.clusters().len(), usize::from(kept), "{keep:?}");
    }
}

fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[tokio::test]
async fn only_clusters_of_dead_runs_with_our_prefix_are_reaped() {
    let fake = Fake::new(&[]);
    let state = fake.state_dir();
    let host = kind::this_host();
    let dead = dead_pid();
    let dead_name = kind::new_cluster_name(dead, 0xdead);
    let alive_name = kind::new_cluster_name(std::process::id(), 0xbeef);
    let unmarked = kind::new_cluster_name(dead, 0x0001);
    let elsewhere = kind::new_cluster_name(dead, 0x0002);
    fake.set_clusters(&[
        &dead_name,
        &alive_name,
        &unmarked,
        &elsewhere,
        "someone-elses-cluster",
        "istio-fft-e2e",
    ]);
    let marker = |pid, host: &str| OwnerMarker {
        pid,
        host: host.to_string(),
        ..OwnerMarker::default()
    };
    state
        .write_marker(&dead_name, &marker(dead, &host))
        .unwrap();
    state
        .write_marker(&alive_name, &marker(std::process::id(), &host))
        .unwrap();
    state
        .write_marker(&elsewhere, &marker(dead, "another-host"))
        .unwrap();

    let reaped = kind::reap_stale(&Runner::new(), &fake.tools(), &state, None)
        .await
        .unwrap();
    assert_eq!(reaped, vec![dead_name.clone()]);
    let deletes: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("kind delete"))
        .collect();
    assert_eq!(deletes.len(), 1);
    assert!(deletes[0].starts_with(&format!("kind delete cluster --name {dead_name} ")));
    assert!(!state.marker(&dead_name).exists());
    let left = fake.clusters();
    for name in [&alive_name, &unmarked, &elsewhere] {
        assert!(left.contains(name), "{name} was reaped");
    }
    assert!(left.contains(&"someone-elses-cluster".to_string()));
}

/// A stale cluster that cannot be deleted now is a warning, not a failed run: its marker stays,
/// so a later run tries again.
#[tokio::test]
async fn a_reap_that_fails_is_a_warning_and_keeps_the_marker() {
    let fake = Fake::new(&["kind-delete-noop"]);
    let state = fake.state_dir();
    let dead = dead_pid();
    let name = kind::new_cluster_name(dead, 0xdead);
    fake.set_clusters(&[&name]);
    let marker = OwnerMarker {
        pid: dead,
        host: kind::this_host(),
        ..OwnerMarker::default()
    };
    state.write_marker(&name, &marker).unwrap();
    let reaped = kind::reap_stale(&Runner::new(), &fake.tools(), &state, None)
        .await
        .expect("a failed reap does not fail the run");
    assert!(reaped.is_empty());
    assert!(state.marker(&name).exists(), "kept for a later run");
    assert_eq!(fake.clusters(), [name]);
}

#[tokio::test]
async fn a_delete_that_leaves_the_cluster_listed_is_an_error() {
    let fake = Fake::new(&["kind-delete-noop"]);
    let settings = fake.settings(Keep::Never, ClusterChoice::Generated);
    let mut env = kind_support::up(settings, &FakeBackend::default())
        .await
        .unwrap();
    let err = env.teardown(false).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("still listed by `kind get clusters`"),
        "{err:#}"
    );
}

/// `kind delete cluster` can fail after deleting the nodes (a kubeconfig lock): the listing
/// decides, and a cluster that is gone is gone, with a warning.
#[tokio::test]
async fn a_delete_that_fails_after_deleting_the_nodes_is_verified_by_the_listing() {
    let fake = Fake::new(&["kind-delete-kubeconfig-error"]);
    let settings = fake.settings(Keep::Never, ClusterChoice::Generated);
    let mut env = kind_support::up(settings, &FakeBackend::default())
        .await
        .unwrap();
    env.teardown(false)
        .await
        .expect("the cluster is gone, whatever kind's exit status");
    assert!(fake.clusters().is_empty());
    fake.assert_ends_listing_clusters();
}

#[tokio::test]
async fn the_containerd_digest_error_falls_back_to_an_image_archive() {
    let fake = Fake::new(&["kind-load-digest"]);
    let settings = fake.settings(Keep::Never, ClusterChoice::Generated);
    let mut env = kind_support::up(settings, &FakeBackend::default())
        .await
        .expect("the fallback loads the image");
    let name = fake.created_cluster();
    let archive = fake.state_dir().image_archive(&name);
    let calls = fake.calls();
    let load = calls
        .iter()
        .position(|c| c.starts_with("kind load docker-image"))
        .unwrap();
    assert_eq!(calls[load + 1], "docker info --format {{.Architecture}}");
    assert_eq!(
        calls[load + 2],
        format!(
            "docker save --platform linux/amd64 -o {} {BUILT_IMAGE}",
            archive.display()
        ),
        "only the daemon's platform: the whole index fails the same way in the archive"
    );
    assert_eq!(
        calls[load + 3],
        format!(
            "kind load image-archive {} --name {name}",
            archive.display()
        )
    );
    assert!(!archive.exists(), "the archive is removed after loading");
    env.teardown(false).await.unwrap();
}

/// `istioctl analyze` exits 79 exactly when it has Error-level findings: they are the
/// diagnostics a failed run needs, kept whole, not a failed step.
#[tokio::test]
async fn analyze_findings_are_kept_not_reported_as_a_failed_step() {
    let fake = Fake::new(&["istioctl-analyze-errors"]);
    let settings = fake.settings(Keep::Never, ClusterChoice::Generated);
    let env = kind_support::up(settings, &FakeBackend::default())
        .await
        .unwrap();
    let dir = fake.artifacts();
    env.collect_diagnostics(&dir).await;
    let analysis = std::fs::read_to_string(dir.join("istioctl-analyze.txt")).unwrap();
    assert!(analysis.contains("Error [IST0101]"), "{analysis}");
    assert!(analysis.contains("Warning [IST0118]"), "{analysis}");
    assert!(
        analysis.contains("Analyzers found issues"),
        "the summary from stderr: {analysis}"
    );
    assert!(
        !dir.join("istioctl-analyze.err").exists(),
        "findings are not a failed step"
    );
    let mut env = env;
    env.teardown(false).await.unwrap();
}

#[rstest]
#[case::old_daemon("docker-api-1.41", "requires API version 1.48")]
#[case::old_cli("docker-cli-27", "unknown flag: --platform")]
#[tokio::test]
async fn a_docker_too_old_for_save_platform_is_named_with_the_fixes(
    #[case] docker: &str,
    #[case] says: &str,
) {
    let fake = Fake::new(&["kind-load-digest", docker]);
    let settings = fake.settings(Keep::Never, ClusterChoice::Generated);
    let err = kind_support::up_error(
        settings,
        &FakeBackend::default(),
        "the image cannot be loaded",
    )
    .await;
    assert!(err.contains(says), "{err}");
    assert!(err.contains("Docker Engine 28.0 (API 1.48)"), "{err}");
    assert!(err.contains("containerd-snapshotter"), "{err}");
    assert!(
        fake.clusters().is_empty(),
        "the cluster it created is deleted: {:?}",
        fake.clusters()
    );
}

#[tokio::test]
async fn a_kept_cluster_holding_the_gateway_port_stops_the_run_before_kind_create() {
    let fake = Fake::new(&[]);
    let kept = "istio-fft-e2e-4242-beef";
    fake.set_clusters(&[kept]);
    fake.publish(30001, &[&format!("{kept}-control-plane")]);
    let settings = fake.settings(Keep::Never, ClusterChoice::Generated);
    let err = kind_support::up_error(settings, &FakeBackend::default(), "the port is taken").await;
    assert!(
        err.contains(&format!(
            "cluster {kept} holds 127.0.0.1:30001: reuse it with E2E_CLUSTER={kept}, or delete \
             it: kind delete cluster --name {kept}"
        )),
        "{err}"
    );
    let calls = fake.calls();
    assert!(
        calls.contains(&"docker ps --filter publish=30001 --format {{.Names}}".to_string()),
        "{calls:?}"
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("kind create") || c.starts_with("kind delete")),
        "nothing created, nothing deleted: {calls:?}"
    );
    assert_eq!(fake.clusters(), [kept], "the kept cluster is left alone");
    assert!(
        std::fs::read_dir(fake.state_dir().dir)
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "no owner marker for a cluster that was never created"
    );
}

#[tokio::test]
async fn any_other_container_on_the_port_is_named_too() {
    let fake = Fake::new(&[]);
    fake.publish(30001, &["my-web-server"]);
    let settings = fake.settings(Keep::Never, ClusterChoice::Reuse("my-dev".into()));
    let err = kind_support::up_error(settings, &FakeBackend::default(), "the port is taken").await;
    assert!(
        err.contains("container my-web-server holds 127.0.0.1:30001"),
        "{err}"
    );
    assert!(!fake.calls().iter().any(|c| c.starts_with("kind create")));
}

#[tokio::test]
async fn offline_without_the_node_image_creates_nothing() {
    let fake = Fake::new(&[]);
    let mut settings = fake.settings(Keep::Never, ClusterChoice::Generated);
    settings.offline = true;
    let err = kind_support::up_error(
        settings,
        &FakeBackend::default(),
        "offline without the node image must not run kind",
    )
    .await;
    assert!(
        err.contains("E2E_OFFLINE=1") && err.contains("not present locally"),
        "{err}"
    );
    assert!(
        !fake.calls().iter().any(|c| c.starts_with("kind create")),
        "{:?}",
        fake.calls()
    );
}

#[rstest]
#[case::gateway_on_another_nodeport(Some(31380), None, &["http2 nodePort is 31380", "maps containerPort 30001", "manifests/istio-install.yaml", "manifests/kind-cluster.yaml"])]
#[case::node_published_elsewhere(None, Some("127.0.0.1:30080"), &["shows 127.0.0.1:30080", "on 127.0.0.1:30001", "manifests/kind-cluster.yaml"])]
#[tokio::test]
async fn a_gateway_path_that_disagrees_with_the_config_fails_before_probing(
    #[case] live_node_port: Option<u16>,
    #[case] published: Option<&str>,
    #[case] says: &[&str],
) {
    let fake = Fake::new(&[]);
    fake.set_clusters(&["my-dev"]);
    if let Some(mapping) = published {
        fake.set_docker_port("my-dev-control-plane", mapping);
    }
    let backend = FakeBackend {
        gateway_node_port: live_node_port,
        ..FakeBackend::default()
    };
    let settings = fake.settings(Keep::Never, ClusterChoice::Reuse("my-dev".into()));
    let err = kind_support::up_error(settings, &backend, "the probe would go nowhere").await;
    for needle in says {
        assert!(err.contains(needle), "`{needle}` missing: {err}");
    }
    assert!(
        !backend.calls().contains(&"route".to_string()),
        "no probe: {:?}",
        backend.calls()
    );
}
