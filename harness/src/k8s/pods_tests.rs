//! The Kubernetes checks and waits as pure functions over Pod, Deployment and Service JSON that
//! follows what Istio writes (docs/facts.md): native sidecars (init container, restartPolicy Always) and classic
//! ones, merged scrape annotations with ISTIO_PROMETHEUS_ANNOTATIONS, and unmerged ones.

use std::path::Path;

use crate::exec::wait::Attempt;
use crate::k8s::gateway::article_endpoint;
use crate::k8s::pods::{
    MergeExpectation, MeshMerging, ScrapeAnnotations, ScrapeState, SidecarPlace,
    contains_app_metrics, mesh_merging_from_overlay, pod_runs_image, pod_scrape_annotations,
    scrape_verdict, sidecar_injected, sidecar_ready, template_scrape_annotations,
};
use crate::k8s::rollout::{AppPods, CONFIG_ERROR_POLLS, RolloutWatch, rollout_state};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod, Service};
use rstest::rstest;
use serde::de::DeserializeOwned;

const BUILT: &str = "fft-service:3f2a9c01d4e5";
const APP: &str = "wtyfft-container-name";

fn fixture<T: DeserializeOwned>(name: &str) -> T {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/k8s")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn pod(name: &str) -> Pod {
    fixture(&format!("pod-{name}.json"))
}

fn err_text<T: std::fmt::Debug>(result: anyhow::Result<T>) -> String {
    format!("{:#}", result.expect_err("expected an error"))
}

#[rstest]
#[case("native-merged", SidecarPlace::Native)]
#[case("native-unmerged", SidecarPlace::Native)]
#[case("classic-merged", SidecarPlace::Classic)]
fn injected_pods_are_recognised_in_either_place(#[case] name: &str, #[case] place: SidecarPlace) {
    let pod = pod(name);
    assert_eq!(sidecar_injected(&pod).unwrap(), place);
    assert!(sidecar_ready(&pod));
}

#[test]
fn an_uninjected_pod_is_named_with_the_likely_cause() {
    let text = err_text(sidecar_injected(&pod("uninjected")));
    assert!(text.contains("wtyfft-deploy-6c9d7f5d8b-z9y8x"), "{text}");
    assert!(text.contains("sidecar.istio.io/status"), "{text}");
    assert!(text.contains("istio-injection=enabled"), "{text}");
    assert!(!sidecar_ready(&pod("uninjected")));
}

#[test]
fn a_proxy_init_container_without_restart_always_is_not_a_sidecar() {
    let mut pod = pod("native-merged");
    for c in pod.spec.as_mut().unwrap().init_containers.as_mut().unwrap() {
        c.restart_policy = None;
    }
    assert!(err_text(sidecar_injected(&pod)).contains("restartPolicy: Always"));
}

#[test]
fn an_annotation_without_a_proxy_container_is_not_injected() {
    let mut pod = pod("native-merged");
    pod.spec
        .as_mut()
        .unwrap()
        .init_containers
        .as_mut()
        .unwrap()
        .retain(|c| c.name != "istio-proxy");
    assert!(err_text(sidecar_injected(&pod)).contains("no `istio-proxy` container"));
}

#[test]
fn the_template_keeps_the_articles_annotations() {
    let deployment: Deployment = fixture("deployment-rolled-out.json");
    assert_eq!(
        template_scrape_annotations(&deployment).unwrap(),
        ScrapeAnnotations::article()
    );
    let mut merged = deployment.clone();
    let annotations = merged
        .spec
        .as_mut()
        .unwrap()
        .template
        .metadata
        .as_mut()
        .unwrap()
        .annotations
        .as_mut()
        .unwrap();
    annotations.insert("prometheus.io/port".into(), "15020".into());
    assert!(err_text(template_scrape_annotations(&merged)).contains("the article's are"));
}

#[rstest]
#[case("native-merged", ScrapeState::Merged)]
#[case("classic-merged", ScrapeState::Merged)]
#[case("native-unmerged", ScrapeState::Unmerged)]
fn pods_carry_merged_or_original_annotations(#[case] name: &str, #[case] state: ScrapeState) {
    assert_eq!(
        pod_scrape_annotations(&pod(name), &ScrapeAnnotations::article()).unwrap(),
        state
    );
}

#[test]
fn merged_annotations_need_the_originals_in_the_proxy_env() {
    let text = err_text(pod_scrape_annotations(
        &pod("merged-without-env"),
        &ScrapeAnnotations::article(),
    ));
    assert!(text.contains("ISTIO_PROMETHEUS_ANNOTATIONS"), "{text}");
}

#[test]
fn the_proxy_env_must_hold_the_templates_originals() {
    let other = ScrapeAnnotations {
        scrape: "true".into(),
        path: "/other".into(),
        port: "9090".into(),
    };
    let text = err_text(pod_scrape_annotations(&pod("native-merged"), &other));
    assert!(text.contains("holds"), "{text}");
}

#[test]
fn annotations_that_are_neither_merged_nor_original_fail() {
    let mut pod = pod("native-unmerged");
    pod.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("prometheus.io/port".into(), "9999".into());
    let text = err_text(pod_scrape_annotations(&pod, &ScrapeAnnotations::article()));
    assert!(text.contains("neither the merged ones"), "{text}");
}

#[test]
fn pods_run_the_image_just_built() {
    pod_runs_image(&pod("native-merged"), APP, BUILT).unwrap();
    let text = err_text(pod_runs_image(
        &pod("native-merged"),
        APP,
        "fft-service:0000000000",
    ));
    assert!(text.contains("expected the image just built"), "{text}");
    let mut stale = pod("native-merged");
    stale
        .status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0]
        .image = "docker.io/library/fft-service:0.1.0".into();
    assert!(err_text(pod_runs_image(&stale, APP, BUILT)).contains("the runtime reports"));
}

#[test]
fn merged_metrics_contain_the_apps_families() {
    let stats = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/k8s/stats-prometheus.txt"),
    )
    .unwrap();
    contains_app_metrics(&stats).unwrap();
    let envoy_only: String = stats
        .lines()
        .filter(|l| !l.contains("fft_"))
        .map(|l| format!("{l}\n"))
        .collect();
    let text = err_text(contains_app_metrics(&envoy_only));
    assert!(text.contains("fft_http_requests"), "{text}");
}

fn rolled_out() -> Deployment {
    fixture("deployment-rolled-out.json")
}

/// The same Deployment while one replica is still short: what the wait sees when a pod cannot
/// start.
fn progressing() -> Deployment {
    let mut deployment = rolled_out();
    let status = deployment.status.as_mut().unwrap();
    status.available_replicas = Some(2);
    status.ready_replicas = Some(2);
    deployment
}

fn on_kind() -> AppPods {
    AppPods {
        container: APP.into(),
        image_preloaded: true,
    }
}

fn on_existing() -> AppPods {
    AppPods {
        container: APP.into(),
        image_preloaded: false,
    }
}

fn three(pods: [&str; 3]) -> Vec<Pod> {
    pods.iter().map(|n| pod(n)).collect()
}

fn with_one(name: &str) -> Vec<Pod> {
    three(["native-merged", "native-merged", name])
}

#[test]
fn a_complete_rollout_is_done() {
    let pods = three(["native-merged", "classic-merged", "native-unmerged"]);
    for app in [on_kind(), on_existing()] {
        assert!(matches!(
            rollout_state(&rolled_out(), &pods, &app).unwrap(),
            Attempt::Done(())
        ));
    }
}

#[rstest]
#[case::pod_not_ready(["native-merged", "native-merged", "native-not-ready"], "not ready yet")]
fn an_incomplete_rollout_says_what_it_waits_for(#[case] pods: [&str; 3], #[case] why: &str) {
    let Attempt::NotYet(state) = rollout_state(&rolled_out(), &three(pods), &on_kind()).unwrap()
    else {
        panic!("not done");
    };
    assert!(state.contains(why), "{state}");
}

#[test]
fn an_unobserved_generation_or_missing_replicas_is_not_done() {
    let pods = three(["native-merged", "native-merged", "native-merged"]);
    let mut newer = rolled_out();
    newer.metadata.generation = Some(2);
    let Attempt::NotYet(state) = rollout_state(&newer, &pods, &on_kind()).unwrap() else {
        panic!("generation 2 is not observed yet");
    };
    assert!(state.contains("not yet observed"), "{state}");
    let Attempt::NotYet(state) = rollout_state(&progressing(), &pods, &on_kind()).unwrap() else {
        panic!("2 of 3 available is not done");
    };
    assert!(state.contains("2 available of 3"), "{state}");
    let Attempt::NotYet(state) = rollout_state(&rolled_out(), &pods[..2], &on_kind()).unwrap()
    else {
        panic!("2 pods of 3 is not done");
    };
    assert!(state.contains("2 pods, 3 wanted"), "{state}");
}

/// A pod the API refused to create (an admission webhook, a quota) never appears: the only trace
/// is the Deployment's `ReplicaFailure` condition (copied from its ReplicaSet's), which the wait
/// shows while the replicas are short.
#[test]
fn a_refused_pod_creation_shows_the_replica_failure_message() {
    let pods = three(["native-merged", "native-merged", "native-merged"]);
    let mut deployment = progressing();
    deployment
        .status
        .as_mut()
        .unwrap()
        .conditions
        .get_or_insert_with(Vec::new)
        .push(serde_json::from_value(serde_json::json!({
            "type": "ReplicaFailure",
            "status": "True",
            "reason": "FailedCreate",
            "message": "admission webhook \"validate.example.com\" denied the request: no sidecar image"
        }))
        .unwrap());
    let Attempt::NotYet(state) = rollout_state(&deployment, &pods[..2], &on_kind()).unwrap() else {
        panic!("a short Deployment is not done");
    };
    assert!(
        state.contains(
            "ReplicaFailure (FailedCreate): admission webhook \"validate.example.com\" denied"
        ),
        "{state}"
    );
}

/// Such a pod keeps the Deployment short of available replicas, so the wait must stop on the
/// pod itself, not after the counts.
#[rstest]
#[case::never_pull_on_kind("err-image-never-pull", on_kind(), &["ErrImageNeverPull", "kind load docker-image"])]
#[case::never_pull_on_existing("err-image-never-pull", on_existing(), &["ErrImageNeverPull"])]
#[case::our_image_pulled_on_kind("app-image-pull-backoff", on_kind(), &["ImagePullBackOff", "must never be pulled", APP])]
#[case::exec_format_error("crashloop-exec-format-error", on_kind(), &["exec format error", "not a Linux executable", APP])]
#[case::exec_format_error_on_existing("crashloop-exec-format-error", on_existing(), &["exec format error"])]
#[case::uninjected("uninjected", on_kind(), &["wtyfft-deploy-6c9d7f5d8b-z9y8x", "istio-injection=enabled", "webhook", "created"])]
#[case::uninjected_on_existing("uninjected", on_existing(), &["istio-injection=enabled"])]
fn a_pod_that_can_never_become_ready_fails_at_once(
    #[case] name: &str,
    #[case] app: AppPods,
    #[case] says: &[&str],
) {
    for deployment in [progressing(), rolled_out()] {
        let text = err_text(rollout_state(&deployment, &with_one(name), &app));
        for needle in says {
            assert!(text.contains(needle), "`{needle}` missing: {text}");
        }
    }
}

/// The kubelet retries pulls: a registry hiccup (a rate limit, a slow mirror) heals itself.
#[rstest]
#[case::proxy_image_on_kind("proxy-image-pull-backoff", on_kind())]
#[case::proxy_image_on_existing("proxy-image-pull-backoff", on_existing())]
#[case::our_image_on_existing("app-image-pull-backoff", on_existing())]
fn pulls_the_kubelet_retries_are_waited_for(#[case] name: &str, #[case] app: AppPods) {
    let Attempt::NotYet(state) = rollout_state(&progressing(), &with_one(name), &app).unwrap()
    else {
        panic!("a pull that may still succeed is not done");
    };
    assert!(state.contains("ImagePullBackOff"), "{state}");
}

/// The last termination of the pod's first container.
fn last_termination(pod: &mut Pod) -> &mut ContainerStateTerminated {
    pod.status
        .as_mut()
        .and_then(|status| status.container_statuses.as_mut())
        .and_then(|statuses| statuses.first_mut())
        .and_then(|first| first.last_state.as_mut())
        .and_then(|state| state.terminated.as_mut())
        .expect("the fixture's first container has a last termination")
}

#[rstest]
#[case::not_executable(126, "not executable")]
#[case::not_found(127, "not found")]
fn a_crash_loop_on_a_missing_or_unexecutable_entrypoint_is_fatal(
    #[case] code: i32,
    #[case] says: &str,
) {
    let mut looping = pod("crashloop-exec-format-error");
    let terminated = last_termination(&mut looping);
    terminated.exit_code = code;
    terminated.message = None;
    let pods = vec![pod("native-merged"), pod("native-merged"), looping.clone()];
    let text = err_text(rollout_state(&progressing(), &pods, &on_kind()));
    assert!(text.contains(says), "{text}");
    // Any other crash may be the app's own and is waited for (the timeout then says so).
    last_termination(&mut looping).exit_code = 1;
    let pods = vec![pod("native-merged"), pod("native-merged"), looping];
    assert!(matches!(
        rollout_state(&progressing(), &pods, &on_kind()).unwrap(),
        Attempt::NotYet(_)
    ));
}

/// A pod whose app container waits with `CreateContainerConfigError`, as the kubelet reports it
/// (`pkg/kubelet/kuberuntime/kuberuntime_container.go`, `ErrCreateContainerConfig`).
fn config_error_pod() -> Pod {
    let mut pod = pod("native-not-ready");
    let status = pod.status.as_mut().unwrap();
    let app = status
        .container_statuses
        .as_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c.name == APP)
        .unwrap();
    app.ready = false;
    app.state = Some(
        serde_json::from_value(serde_json::json!({"waiting": {
        "reason": "CreateContainerConfigError",
        "message": "configmap \"fft-settings\" not found"}}))
        .unwrap(),
    );
    pod
}

#[test]
fn a_config_error_is_waited_for_while_the_kubelet_retries() {
    let pods = vec![
        pod("native-merged"),
        pod("native-merged"),
        config_error_pod(),
    ];
    let mut watch = RolloutWatch::default();
    for poll in 1..CONFIG_ERROR_POLLS {
        let Attempt::NotYet(state) = watch
            .observe(&progressing(), &pods, None, &on_kind())
            .unwrap()
        else {
            panic!("poll {poll}: not done");
        };
        assert!(state.contains("CreateContainerConfigError"), "{state}");
    }
    let text = err_text(watch.observe(&progressing(), &pods, None, &on_kind()));
    assert!(
        text.contains(&format!("for {CONFIG_ERROR_POLLS} polls in a row")),
        "{text}"
    );
    assert!(
        text.contains("configmap \"fft-settings\" not found"),
        "{text}"
    );
}

#[test]
fn a_config_error_that_clears_starts_the_count_again() {
    let stuck = vec![
        pod("native-merged"),
        pod("native-merged"),
        config_error_pod(),
    ];
    let healed = three(["native-merged", "native-merged", "native-not-ready"]);
    let mut watch = RolloutWatch::default();
    for _ in 1..CONFIG_ERROR_POLLS {
        watch
            .observe(&progressing(), &stuck, None, &on_kind())
            .unwrap();
    }
    watch
        .observe(&progressing(), &healed, None, &on_kind())
        .unwrap();
    for _ in 1..CONFIG_ERROR_POLLS {
        let Attempt::NotYet(_) = watch
            .observe(&progressing(), &stuck, None, &on_kind())
            .unwrap()
        else {
            panic!("not done");
        };
    }
}

#[test]
fn a_broken_pod_of_an_older_template_is_left_to_the_rollout() {
    for name in ["uninjected", "crashloop-exec-format-error"] {
        let mut old = pod(name);
        old.spec.as_mut().unwrap().containers[0].image = Some("fft-service:000000000000".into());
        let pods = vec![pod("native-merged"), pod("native-merged"), old];
        let Attempt::NotYet(_) = rollout_state(&progressing(), &pods, &on_kind()).unwrap() else {
            panic!("{name}: a pod the rollout replaces is waited for");
        };
    }
}

#[test]
fn the_app_container_reports_its_log_tail_as_termination_message() {
    let file = crate::config::paths::manifests_dir().join("app.yaml");
    let documents = crate::manifest::load_file(&file).unwrap();
    let prepared = crate::k8s::apply::prepare(&documents, BUILT).unwrap();
    let deployment = prepared.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["terminationMessagePolicy"],
        "FallbackToLogsOnError"
    );
}

#[test]
fn the_articles_endpoint_is_the_gateway_host_ip_and_http2_nodeport() {
    let gateway: Pod = fixture("gateway-pod.json");
    let service: Service = fixture("gateway-service.json");
    assert_eq!(
        article_endpoint(&[gateway], &service).unwrap(),
        ("172.18.0.2".to_string(), 30001)
    );
    assert!(format!("{:#}", article_endpoint(&[], &service).unwrap_err()).contains("hostIP"));
}

/// A pod of a mesh that does not merge: the originals as written, no opt-out annotation.
fn unmerged_by_the_mesh() -> Pod {
    let mut pod = pod("native-unmerged");
    pod.metadata
        .annotations
        .as_mut()
        .unwrap()
        .remove("prometheus.istio.io/merge-metrics");
    pod
}

fn opting_out(key: &str) -> Deployment {
    let mut deployment = rolled_out();
    deployment
        .spec
        .as_mut()
        .unwrap()
        .template
        .metadata
        .as_mut()
        .unwrap()
        .annotations
        .as_mut()
        .unwrap()
        .insert(key.into(), "false".into());
    deployment
}

#[test]
fn on_kind_every_pod_must_be_merged() {
    let merged = three(["native-merged", "classic-merged", "native-merged"]);
    let verdict = scrape_verdict(&rolled_out(), &merged, MeshMerging::On).unwrap();
    assert_eq!(verdict.state, ScrapeState::Merged);
    assert_eq!(verdict.unmerged_reason(), None);

    let one_unmerged = vec![
        pod("native-merged"),
        pod("native-merged"),
        unmerged_by_the_mesh(),
    ];
    let all_unmerged = vec![unmerged_by_the_mesh(); 3];
    for pods in [one_unmerged, all_unmerged] {
        let text = err_text(scrape_verdict(&rolled_out(), &pods, MeshMerging::On));
        assert!(text.contains("wtyfft-deploy-6c9d7f5d8b-m3n8v"), "{text}");
        assert!(text.contains("enablePrometheusMerge"), "{text}");
    }
}

#[rstest]
#[case::merge_metrics_false("prometheus.istio.io/merge-metrics")]
fn a_template_that_opts_out_expects_unmerged_pods(#[case] key: &str) {
    let deployment = opting_out(key);
    for mesh in [MeshMerging::On, MeshMerging::Unknown] {
        let verdict = scrape_verdict(&deployment, &[pod("native-unmerged")], mesh).unwrap();
        assert_eq!(verdict.state, ScrapeState::Unmerged);
        let reason = verdict
            .unmerged_reason()
            .expect("not applicable, with a reason");
        assert!(reason.contains(key), "{reason}");
        let text = err_text(scrape_verdict(
            &deployment,
            &[pod("native-unmerged"), pod("native-merged")],
            mesh,
        ));
        assert!(text.contains("wtyfft-deploy-6c9d7f5d8b-4xk2p"), "{text}");
        assert!(text.contains(key), "{text}");
    }
}

#[test]
fn scrape_false_in_the_template_is_an_opt_out() {
    assert_eq!(
        crate::k8s::pods::merge_expectation(&opting_out("prometheus.io/scrape"), MeshMerging::On),
        MergeExpectation::Unmerged(
            "the pod template opts out with `prometheus.io/scrape: \"false\"`".into()
        )
    );
}

#[test]
fn on_an_existing_cluster_either_state_passes_when_every_pod_agrees() {
    let merged = three(["native-merged", "classic-merged", "native-merged"]);
    let verdict = scrape_verdict(&rolled_out(), &merged, MeshMerging::Unknown).unwrap();
    assert_eq!(verdict.state, ScrapeState::Merged);

    let unmerged = vec![unmerged_by_the_mesh(); 3];
    let verdict = scrape_verdict(&rolled_out(), &unmerged, MeshMerging::Unknown).unwrap();
    assert_eq!(verdict.state, ScrapeState::Unmerged);
    let reason = verdict.unmerged_reason().unwrap();
    assert!(reason.contains("merging is off"), "{reason}");

    let mixed = vec![pod("native-merged"), unmerged_by_the_mesh()];
    let text = err_text(scrape_verdict(&rolled_out(), &mixed, MeshMerging::Unknown));
    assert!(text.contains("disagree"), "{text}");
}

#[test]
fn the_install_overlay_decides_whether_the_mesh_merges() {
    assert_eq!(
        mesh_merging_from_overlay(&crate::tools::istioctl::install_overlay()).unwrap(),
        MeshMerging::On,
        "manifests/istio-install.yaml leaves enablePrometheusMerge at its default"
    );
    let dir = tempfile::tempdir().unwrap();
    let off = dir.path().join("off.yaml");
    std::fs::write(
        &off,
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  meshConfig:\n    enablePrometheusMerge: false\n",
    )
    .unwrap();
    assert_eq!(mesh_merging_from_overlay(&off).unwrap(), MeshMerging::Off);
    let verdict =
        scrape_verdict(&rolled_out(), &[unmerged_by_the_mesh()], MeshMerging::Off).unwrap();
    assert!(
        verdict
            .unmerged_reason()
            .unwrap()
            .contains("enablePrometheusMerge: false")
    );
}

/// `pod` as a pod of the ReplicaSet with `hash`.
fn of_replica_set(mut pod: Pod, hash: &str) -> Pod {
    pod.metadata
        .labels
        .get_or_insert_default()
        .insert("pod-template-hash".into(), hash.into());
    pod
}

/// A pod of the older ReplicaSet without its sidecar (created before the namespace was
/// labelled) is on its way out: the wait judges the newest ReplicaSet's pods only, and waits
/// for the old one to go.
#[test]
fn an_uninjected_pod_of_an_older_replica_set_is_waited_out_not_fatal() {
    let mut pods: Vec<Pod> = (0..3)
        .map(|_| of_replica_set(pod("native-merged"), "new"))
        .collect();
    pods.push(of_replica_set(pod("uninjected"), "old"));
    // Judged by containers and images alone (no ReplicaSet), as before, the old pod looks
    // current: a restart does not change them, and the wait failed on a pod being replaced.
    let text =
        err_text(RolloutWatch::default().observe(&rolled_out(), &pods, None, &on_existing()));
    assert!(text.contains("created without a sidecar"), "{text}");
    let mut watch = RolloutWatch::default();
    let Attempt::NotYet(state) = watch
        .observe(&rolled_out(), &pods, Some("new"), &on_existing())
        .unwrap()
    else {
        panic!("an old pod still running is not done");
    };
    assert!(state.contains("1 pod(s) of an older ReplicaSet"), "{state}");
    pods.pop();
    assert!(matches!(
        watch
            .observe(&rolled_out(), &pods, Some("new"), &on_existing())
            .unwrap(),
        Attempt::Done(())
    ));
}

/// The first pod of the newest ReplicaSet found without its sidecar asks for one rollout
/// restart; the same after the restart is fatal, saying a restart did not cure it.
#[test]
fn an_uninjected_pod_gets_one_rollout_restart_then_is_fatal() {
    let pods: Vec<Pod> = with_one("uninjected")
        .into_iter()
        .map(|p| of_replica_set(p, "h1"))
        .collect();
    let mut watch = RolloutWatch::with_one_restart();
    let Attempt::NotYet(state) = watch
        .observe(&rolled_out(), &pods, Some("h1"), &on_existing())
        .unwrap()
    else {
        panic!("the first uninjected pod asks for a restart");
    };
    assert!(state.contains("restarting the rollout once"), "{state}");
    assert!(watch.take_restart_request());
    assert!(!watch.take_restart_request(), "asked once");
    let after: Vec<Pod> = with_one("uninjected")
        .into_iter()
        .map(|p| of_replica_set(p, "h2"))
        .collect();
    let text = err_text(watch.observe(&rolled_out(), &after, Some("h2"), &on_existing()));
    assert!(
        text.contains("istio-injection=enabled") && text.contains("did not cure it"),
        "{text}"
    );
}
