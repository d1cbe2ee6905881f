//! The `existing` target's whole cycle, up → a Kubernetes check and a request through the
//! gateway → down, against the contract fake of the API server (`fake_api_server`) holding an
//! Istio install of each supported style: istioctl's default, the Helm charts (base, istiod,
//! gateway), a revisioned istiod without a default revision (gateway in its own namespace,
//! the app's namespace made by the user beforehand), and a revision tag. After each, the fake
//! cluster holds exactly what it held before. A cluster with no gateway Service (Gateway API
//! only) and a webhook that refuses the app's pods fail, naming what was found, and leave
//! nothing behind either.

use crate::fake_api_server::{FakeApiServer, FakeDeployment, FakePod, gateway_server};
use crate::kind_support::Fake;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use harness::config::knobs::{Keep, MeshKnobs};
use harness::env::cluster::{
    Backend, ClusterApi, ClusterChoice, ExistingEnvironment, Mode, Settings, Timeouts, live_api,
};
use harness::env::timings::Timings;
use harness::env::{BoxFuture, Environment, KubeCheck, KubeCheckOutcome};
use harness::exec::cmd::Runner;
use serde_json::{Value, json};

const IMAGE: &str = "registry.example/fft-service:3f2a9c01";

/// Connects to the fake API server, whatever the kubeconfig says.
struct FakeCluster(kube::Client);

impl Backend for FakeCluster {
    fn build_image<'a>(&'a self, _: &'a Runner) -> BoxFuture<'a, Result<String>> {
        Box::pin(async { anyhow::bail!("the existing target builds nothing") })
    }
    fn connect(&self, _: Option<String>, _: String) -> BoxFuture<'_, Result<Arc<dyn ClusterApi>>> {
        let client = self.0.clone();
        Box::pin(async move { Ok(live_api(client)) })
    }
}

fn namespace(name: &str, labels: &[(&str, &str)]) -> Value {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "labels": labels}})
}

/// A MutatingWebhookConfiguration as istio's charts write it: `mutatingwebhook.yaml` for a
/// revision (`revision` "" is the default one, which adds the `namespace.` and `object.`
/// webhooks), `revision-tags-mwc.yaml` for a tag (`revision` is then the tag).
fn injector(name: &str, revision: &str, default: bool) -> Value {
    let rev = if revision.is_empty() {
        "default"
    } else {
        revision
    };
    let mut webhooks = vec![
        json!({"name": "rev.namespace.sidecar-injector.istio.io",
            "namespaceSelector": {"matchExpressions": [
                {"key": "istio.io/rev", "operator": "In", "values": [rev]},
                {"key": "istio-injection", "operator": "DoesNotExist"}]},
            "objectSelector": {"matchExpressions": [
                {"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}]}}),
        json!({"name": "rev.object.sidecar-injector.istio.io",
            "namespaceSelector": {"matchExpressions": [
                {"key": "istio.io/rev", "operator": "DoesNotExist"},
                {"key": "istio-injection", "operator": "DoesNotExist"}]},
            "objectSelector": {"matchExpressions": [
                {"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]},
                {"key": "istio.io/rev", "operator": "In", "values": [rev]}]}}),
    ];
    if default {
        webhooks.push(json!({"name": "namespace.sidecar-injector.istio.io",
            "namespaceSelector": {"matchExpressions": [
                {"key": "istio-injection", "operator": "In", "values": ["enabled"]}]},
            "objectSelector": {"matchExpressions": [
                {"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}]}}));
        webhooks.push(json!({"name": "object.sidecar-injector.istio.io",
            "namespaceSelector": {"matchExpressions": [
                {"key": "istio-injection", "operator": "DoesNotExist"},
                {"key": "istio.io/rev", "operator": "DoesNotExist"}]},
            "objectSelector": {"matchExpressions": [
                {"key": "sidecar.istio.io/inject", "operator": "In", "values": ["true"]},
                {"key": "istio.io/rev", "operator": "DoesNotExist"}]}}));
    }
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
           "metadata": {"name": name, "labels": {"app": "sidecar-injector", "istio.io/rev": rev}},
           "webhooks": webhooks})
}

/// istiod as `istio-discovery/templates/deployment.yaml` names and labels it.
fn istiod(namespace: &str, revision: &str) -> FakeDeployment {
    let name = if revision.is_empty() {
        "istiod".to_string()
    } else {
        format!("istiod-{revision}")
    };
    let mut deployment = FakeDeployment::new(namespace, &name, 1)
        .label("app", "istiod")
        .label(
            "istio.io/rev",
            if revision.is_empty() {
                "default"
            } else {
                revision
            },
        )
        .container("discovery", "docker.io/istio/pilot:1.31.1");
    deployment.inject = false;
    deployment
}

/// The gateway Service: both charts label it and select its pods with `app: <name>` and
/// `istio: <name without istio->`; istioctl maps http2 80 → 8080, the gateway chart 80 → 80.
fn gateway_service(namespace: &str, name: &str, target_port: u16) -> Value {
    let istio = name.trim_start_matches("istio-");
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": namespace,
                        "labels": {"app": name, "istio": istio}},
           "spec": {"type": "LoadBalancer", "selector": {"app": name, "istio": istio},
                    "ports": [
                        {"name": "status-port", "port": 15021, "protocol": "TCP", "targetPort": 15021},
                        {"name": "http2", "port": 80, "protocol": "TCP", "targetPort": target_port},
                        {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 443}]}})
}

/// What the fake cluster holds before the run.
struct Install {
    objects: Vec<Value>,
    istiod: Vec<FakeDeployment>,
    /// The gateway's namespace and name, and the port its Envoy listens on.
    gateway: Option<(&'static str, &'static str, u16)>,
}

/// `istioctl install` with the default revision, plus `extra` objects.
fn istioctl_install(extra: Vec<Value>) -> Install {
    let mut objects = vec![
        namespace("istio-system", &[]),
        injector("istio-sidecar-injector", "", true),
        gateway_service("istio-system", "istio-ingressgateway", 8080),
    ];
    objects.extend(extra);
    Install {
        objects,
        istiod: vec![istiod("istio-system", "")],
        gateway: Some(("istio-system", "istio-ingressgateway", 8080)),
    }
}

async fn cluster(install: Install) -> (FakeApiServer, tokio::task::JoinHandle<()>) {
    let (envoy, envoy_task) = gateway_server().await;
    let pods = install
        .gateway
        .map(|(namespace, name, port)| {
            FakePod::new(namespace, &format!("{name}-7c9d4b8f6d-x2x9k"))
                .label("app", name)
                .label("istio", name.trim_start_matches("istio-"))
                .port(port, envoy)
        })
        .into_iter()
        .collect();
    let api = FakeApiServer::start_with(install.istiod, pods).await;
    api.add_objects(install.objects);
    (api, envoy_task)
}

fn settings(fake: &Fake, mesh: MeshKnobs, rollout: Duration) -> Settings {
    let mut settings = fake.settings(Keep::Never, ClusterChoice::Generated);
    settings.mode = Mode::Existing;
    settings.image = Some(IMAGE.to_string());
    settings.existing_context = Some("fake-cluster".to_string());
    settings.timeouts = Timeouts {
        control_plane: Duration::from_secs(20),
        rollout,
        route: Duration::from_secs(20),
    };
    settings.mesh = mesh;
    settings
}

/// One user's runs of the suite against a fake cluster: the settings (in a folder of their own,
/// kept while this lives) and the client every run uses.
struct Runs {
    _fake: Fake,
    settings: Settings,
    backend: FakeCluster,
}

impl Runs {
    fn new(api: &FakeApiServer, mesh: MeshKnobs, rollout: Duration) -> Self {
        let fake = Fake::new(&[]);
        let settings = settings(&fake, mesh, rollout);
        Runs {
            _fake: fake,
            settings,
            backend: FakeCluster(api.client()),
        }
    }

    /// `harness up --target existing`, or the bring-up of a test run.
    async fn up(&self) -> Result<ExistingEnvironment> {
        let mut times = Timings::default();
        ExistingEnvironment::up_with(
            Runner::new(),
            self.settings.clone(),
            &self.backend,
            &mut times,
        )
        .await
    }

    /// `harness down --target existing`.
    async fn down(&self) -> Result<()> {
        harness::env::cluster::existing::down(&Runner::new(), &self.settings, &self.backend).await
    }
}

fn record_exists(settings: &Settings) -> bool {
    std::fs::read_dir(&settings.state.dir)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".applied.json"))
        })
        .unwrap_or(false)
}

/// Up, the sidecar check and one request through the forwarded gateway, then the orderly
/// teardown; returns the fake, with what the cluster held before and during the run.
async fn full_cycle(
    install: Install,
    mesh: MeshKnobs,
) -> (FakeApiServer, Vec<String>, Vec<String>) {
    let (api, _envoy) = cluster(install).await;
    let before = api.inventory();
    let runs = Runs::new(&api, mesh, Duration::from_secs(40));
    let mut env = tokio::time::timeout(Duration::from_secs(90), runs.up())
        .await
        .expect("bounded")
        .expect("up");
    let during = api.inventory();
    // An evicted pod stays listed as Failed; the checks count the ReplicaSet's active pods.
    let evicted = api.evict_first_pod("wty-istio", "wtyfft-deploy");
    println!("evicted {evicted}");
    match env.kube_check(KubeCheck::SidecarsInjected).await.unwrap() {
        KubeCheckOutcome::Passed { detail } => {
            println!("sidecars: {detail}");
            assert!(detail.starts_with("3 pods injected"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    let answer = harness::exec::probe::send(
        env.ingress(),
        &harness::exec::probe::ProbeRequest::new("GET", "/metrics"),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200);
    assert!(
        record_exists(&runs.settings),
        "the record lists what the run made"
    );
    tokio::time::timeout(Duration::from_secs(60), env.teardown(false))
        .await
        .expect("bounded")
        .expect("teardown");
    assert_eq!(api.inventory(), before, "nothing left behind");
    assert!(
        !record_exists(&runs.settings),
        "the record goes with its objects"
    );
    (api, before, during)
}

fn forwarded_ports(api: &FakeApiServer) -> Vec<String> {
    let mut ports: Vec<String> = api
        .requests()
        .iter()
        .filter(|r| r.contains("/portforward?"))
        .filter_map(|r| r.rsplit("ports=").next().map(str::to_string))
        .collect();
    ports.dedup();
    ports
}

#[tokio::test]
async fn istioctl_default_install() {
    let (api, _, during) = full_cycle(istioctl_install(Vec::new()), MeshKnobs::default()).await;
    assert!(
        during.contains(
            &"Namespace wty-istio [istio-injection=enabled,kubernetes.io/metadata.name=wty-istio]"
                .to_string()
        ),
        "{during:#?}"
    );
    assert_eq!(forwarded_ports(&api), ["8080"]);
}

/// `helm install istio-base`, `istiod`, then `helm install istio-ingressgateway istio/gateway`
/// in istio-system, as the gateway chart's README says: the same names and labels, but http2
/// maps 80 → 80, where its Envoy listens.
#[tokio::test]
async fn helm_charts_with_the_gateway_listening_on_80() {
    let install = Install {
        objects: vec![
            namespace("istio-system", &[]),
            injector("istio-sidecar-injector", "", true),
            gateway_service("istio-system", "istio-ingressgateway", 80),
        ],
        istiod: vec![istiod("istio-system", "")],
        gateway: Some(("istio-system", "istio-ingressgateway", 80)),
    };
    let (api, _, _) = full_cycle(install, MeshKnobs::default()).await;
    assert_eq!(
        forwarded_ports(&api),
        ["80"],
        "the http2 targetPort, not 8080"
    );
}

/// `istioctl install --revision 1-31-1` (no default revision, so `istio-injection=enabled`
/// selects no webhook), the gateway chart in `istio-ingress`, and a namespace `wty-istio` the
/// user made: it is labelled `istio.io/rev=1-31-1` for the run and left as it was.
#[tokio::test]
async fn a_revision_without_default_and_a_gateway_in_its_own_namespace() {
    let install = Install {
        objects: vec![
            namespace("istio-system", &[]),
            namespace("istio-ingress", &[]),
            namespace("wty-istio", &[("team", "payments")]),
            injector("istio-sidecar-injector-1-31-1", "1-31-1", false),
            gateway_service("istio-ingress", "istio-ingressgateway", 80),
        ],
        istiod: vec![istiod("istio-system", "1-31-1")],
        gateway: Some(("istio-ingress", "istio-ingressgateway", 80)),
    };
    let (_, before, during) = full_cycle(install, MeshKnobs::default()).await;
    assert!(
        before.contains(
            &"Namespace wty-istio [kubernetes.io/metadata.name=wty-istio,team=payments]"
                .to_string()
        ),
        "{before:#?}"
    );
    assert!(
        during.contains(
            &"Namespace wty-istio [istio.io/rev=1-31-1,kubernetes.io/metadata.name=wty-istio,team=payments]"
                .to_string()
        ),
        "{during:#?}"
    );
}

/// A revision and a tag both inject: `E2E_ISTIO_REVISION` picks the tag.
#[tokio::test]
async fn a_revision_tag_chosen_by_the_knob() {
    let install = Install {
        objects: vec![
            namespace("istio-system", &[]),
            injector("istio-sidecar-injector-1-31-1", "1-31-1", false),
            injector("istio-revision-tag-prod", "prod", false),
            gateway_service("istio-system", "istio-ingressgateway", 8080),
        ],
        istiod: vec![istiod("istio-system", "1-31-1")],
        gateway: Some(("istio-system", "istio-ingressgateway", 8080)),
    };
    let knobs = MeshKnobs {
        istio_revision: Some("prod".into()),
        ..MeshKnobs::default()
    };
    let (_, _, during) = full_cycle(install, knobs).await;
    assert!(
        during.contains(
            &"Namespace wty-istio [istio.io/rev=prod,kubernetes.io/metadata.name=wty-istio]"
                .to_string()
        ),
        "{during:#?}"
    );
}

/// `harness up` then `harness down` on the revisioned install: `down` deletes what `up` created
/// and puts the user's namespace back as it was.
#[tokio::test]
async fn up_then_down_puts_a_users_namespace_back() {
    let (api, _envoy) = cluster(Install {
        objects: vec![
            namespace("istio-system", &[]),
            namespace("wty-istio", &[("team", "payments")]),
            injector("istio-sidecar-injector-1-31-1", "1-31-1", false),
            gateway_service("istio-system", "istio-ingressgateway", 80),
        ],
        istiod: vec![istiod("istio-system", "1-31-1")],
        gateway: Some(("istio-system", "istio-ingressgateway", 80)),
    })
    .await;
    let before = api.inventory();
    let runs = Runs::new(&api, MeshKnobs::default(), Duration::from_secs(40));
    let env = runs.up().await.expect("up");
    env.keep_running();
    assert_ne!(api.inventory(), before);
    runs.down().await.expect("down");
    assert_eq!(api.inventory(), before, "nothing left behind");
    assert!(!record_exists(&runs.settings));
}

/// Someone deletes the app's namespace behind the suite's back, waits until it is gone, and
/// makes their own of the same name with `labels`.
async fn user_recreates_the_namespace(api: &FakeApiServer, labels: &[(&str, &str)]) {
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(api.client());
    namespaces
        .delete("wty-istio", &Default::default())
        .await
        .unwrap();
    harness::exec::wait::Retry::within(Duration::from_secs(20))
        .run(
            "the fake namespace controller to remove wty-istio",
            || async {
                match namespaces.get_opt("wty-istio").await? {
                    None => Ok(()),
                    Some(_) => Err(anyhow::anyhow!("still there")),
                }
            },
        )
        .await
        .unwrap();
    api.add_objects(vec![namespace("wty-istio", labels)]);
}

/// The record names objects by uid: after ours is gone and someone made another of the same
/// name (here the user re-created the namespace after an interrupted run's cleanup deleted
/// it), `harness down` leaves it (the API answers 409 to a delete conditional on our uid).
#[tokio::test]
async fn down_leaves_an_object_of_the_same_name_that_is_not_ours() {
    let (api, _envoy) = cluster(istioctl_install(Vec::new())).await;
    let runs = Runs::new(&api, MeshKnobs::default(), Duration::from_secs(40));
    let env = runs.up().await.expect("up");
    env.keep_running();
    // Our namespace is deleted behind the suite's back, and the user makes their own.
    user_recreates_the_namespace(&api, &[("team", "payments")]).await;
    let users = api.inventory();
    runs.down().await.expect("down");
    assert_eq!(api.inventory(), users, "the user's namespace stays");
    assert!(!record_exists(&runs.settings), "the record is gone");
}

/// The labels the suite put on a user's namespace are put back on that namespace only: after
/// it was deleted and the user made a new one (with injection on, this time), `harness down`
/// leaves the new one's labels (the restore names the uid, which the API refuses to change).
#[tokio::test]
async fn down_puts_labels_back_only_on_the_namespace_it_relabelled() {
    let (api, _envoy) = cluster(istioctl_install(vec![namespace(
        "wty-istio",
        &[("team", "payments")],
    )]))
    .await;
    let runs = Runs::new(&api, MeshKnobs::default(), Duration::from_secs(40));
    let env = runs.up().await.expect("up");
    env.keep_running();
    user_recreates_the_namespace(
        &api,
        &[("team", "payments"), ("istio-injection", "enabled")],
    )
    .await;
    let users = api.inventory();
    runs.down().await.expect("down");
    assert_eq!(api.inventory(), users, "the new namespace keeps its labels");
    assert!(!record_exists(&runs.settings));
}

/// An apply whose answer is lost after the object was created (the apiserver's 504): the object
/// is the suite's all the same, recorded, and deleted by the teardown.
#[tokio::test]
async fn an_object_whose_apply_answer_was_lost_is_still_deleted() {
    let (api, _envoy) = cluster(istioctl_install(Vec::new())).await;
    api.time_out_after_creating("wtyfft-svc");
    let before = api.inventory();
    let runs = Runs::new(&api, MeshKnobs::default(), Duration::from_secs(40));
    let mut env = runs.up().await.expect("up");
    assert!(
        api.inventory()
            .iter()
            .any(|o| o == "Service wty-istio/wtyfft-svc")
    );
    env.teardown(false).await.expect("teardown");
    assert_eq!(api.inventory(), before, "nothing left behind");
    assert!(!record_exists(&runs.settings));
}

/// `harness up`, then a test run (which finds everything present and creates nothing), then
/// `harness down`: the test run's teardown leaves `up`'s objects, and `down` deletes them all.
#[tokio::test]
async fn up_then_a_test_run_then_down_leaves_nothing() {
    let (api, _envoy) = cluster(istioctl_install(Vec::new())).await;
    let before = api.inventory();
    let runs = Runs::new(&api, MeshKnobs::default(), Duration::from_secs(40));
    let up = runs.up().await.expect("harness up");
    up.keep_running();
    let after_up = api.inventory();
    let mut test_run = runs.up().await.expect("the test run reuses what up made");
    test_run
        .teardown(false)
        .await
        .expect("the test run's teardown");
    assert_eq!(api.inventory(), after_up, "the test run left up's objects");
    assert!(record_exists(&runs.settings), "and their record");
    runs.down().await.expect("down");
    assert_eq!(api.inventory(), before, "nothing left behind");
    assert!(!record_exists(&runs.settings));
}

/// A copy of the tutorial someone applied by hand (same names, not made by the suite): the run
/// refuses before changing anything, naming the objects, instead of overwriting them.
#[tokio::test]
async fn objects_the_suite_did_not_make_are_not_overwritten() {
    let users_service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "wtyfft-svc", "namespace": "wty-istio", "labels": {"owner": "alice"}},
        "spec": {"selector": {"app": "wtyfft-app"}, "ports": [{"name": "http", "port": 8000}]}});
    let (api, _envoy) = cluster(istioctl_install(vec![
        namespace("wty-istio", &[("istio-injection", "enabled")]),
        users_service,
    ]))
    .await;
    let before = api.inventory();
    let runs = Runs::new(&api, MeshKnobs::default(), Duration::from_secs(40));
    let err = runs.up().await.err().expect("the run refuses");
    let text = format!("{err:#}");
    println!("{text}");
    assert!(
        text.contains("Service wty-istio/wtyfft-svc") && text.contains("did not create"),
        "{text}"
    );
    assert_eq!(api.inventory(), before, "nothing changed");
    assert!(!record_exists(&runs.settings));
}

/// Gateway API only: istiod and its injector, no ingress gateway Service. The error lists what
/// was found and the knobs; nothing is applied.
#[tokio::test]
async fn no_gateway_service_names_what_was_found_and_changes_nothing() {
    let (api, _envoy) = cluster(Install {
        objects: vec![
            namespace("istio-system", &[]),
            injector("istio-sidecar-injector", "", true),
        ],
        istiod: vec![istiod("istio-system", "")],
        gateway: None,
    })
    .await;
    let before = api.inventory();
    let runs = Runs::new(&api, MeshKnobs::default(), Duration::from_secs(10));
    let err = runs.up().await.err().expect("no gateway");
    let text = format!("{err:#}");
    println!("{text}");
    for needle in [
        "no Service labelled istio=ingressgateway (E2E_GATEWAY_SELECTOR) in any namespace",
        "istiod Deployments (labelled app=istiod): istio-system/istiod",
        "istio-sidecar-injector/namespace.sidecar-injector.istio.io",
        "E2E_GATEWAY_NAMESPACE",
    ] {
        assert!(text.contains(needle), "`{needle}` missing: {text}");
    }
    assert_eq!(api.inventory(), before);
    assert!(!api.requests().iter().any(|r| r.starts_with("PATCH")));
    assert!(!record_exists(&runs.settings));
}

/// A policy webhook refuses the app's pods: they never appear, the error carries the
/// Deployment's `ReplicaFailure` message, and the failed start removes what it applied.
#[tokio::test]
async fn a_webhook_that_refuses_the_pods_is_named_and_nothing_is_left() {
    let policy = json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration", "metadata": {"name": "cost-policy"},
        "webhooks": [{"name": "cost.policy.example.com",
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "wty-istio"}}}]});
    let (api, _envoy) = cluster(Install {
        objects: vec![
            namespace("istio-system", &[]),
            injector("istio-sidecar-injector", "", true),
            gateway_service("istio-system", "istio-ingressgateway", 8080),
            policy,
        ],
        istiod: vec![istiod("istio-system", "")],
        gateway: Some(("istio-system", "istio-ingressgateway", 8080)),
    })
    .await;
    api.deny_pods("cost-policy", "pods must carry a cost-center label");
    let before = api.inventory();
    let runs = Runs::new(&api, MeshKnobs::default(), Duration::from_secs(12));
    let err = runs.up().await.err().expect("refused");
    let text = format!("{err:#}");
    println!("{text}");
    assert!(
        text.contains(
            "ReplicaFailure (FailedCreate): admission webhook \"cost.policy.example.com\" denied \
             the request: pods must carry a cost-center label"
        ),
        "{text}"
    );
    assert_eq!(api.inventory(), before, "nothing left behind");
    assert!(!record_exists(&runs.settings));
}
