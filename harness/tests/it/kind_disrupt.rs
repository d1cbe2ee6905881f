//! The cluster disruptions (`harness::k8s::disrupt`) against the contract fake of the API server
//! (`fake_api_server`), whose Deployment controller, ReplicaSet controller and kubelet move one
//! step per request: a rollout restart is a merge patch of the template's `restartedAt` and
//! waits for every replica to be replaced; a kill deletes the first pod with grace period 0; a
//! terminate deletes it with its own grace period and reports the exit code the kubelet showed,
//! or says it saw none; a Deployment that never becomes whole again is an error in time.

use crate::fake_api_server;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use fake_api_server::{Call, FakeApiServer, FakeDeployment, StopScript};
use harness::env::{Disruption, DisruptionReport, ExitSeen};
use harness::k8s::apply::FIELD_MANAGER;
use harness::k8s::disrupt::{DisruptTarget, RESTARTED_AT, disrupt};
use harness::k8s::rollout::AppPods;
use serde_json::json;

const NS: &str = "wty-istio";
const DEPLOYMENT: &str = "fft";
const CONTAINER: &str = "wtyfft-container-name";
const IMAGE: &str = "fft-service:3f2a9c01d4e5";
const DEPLOYMENT_PATH: &str = "/apis/apps/v1/namespaces/wty-istio/deployments/fft";
const PODS_PATH: &str = "/api/v1/namespaces/wty-istio/pods";
const REPLICA_SETS_PATH: &str = "/apis/apps/v1/namespaces/wty-istio/replicasets";

/// The app's Deployment as `app.yaml` makes it: three replicas of our image, scraped by
/// Prometheus, in an injected namespace.
fn fft() -> FakeDeployment {
    FakeDeployment::new(NS, DEPLOYMENT, 3)
        .label("app", "fft")
        .container(CONTAINER, IMAGE)
        .template_annotation("prometheus.io/scrape", "true")
}

fn target(timeout: Duration) -> DisruptTarget {
    DisruptTarget {
        namespace: NS.into(),
        deployment: DEPLOYMENT.into(),
        app: AppPods {
            container: CONTAINER.into(),
            image_preloaded: true,
        },
        timeout,
    }
}

/// `disrupt` within `timeout`, and the test within that and a margin.
async fn run(
    api: &FakeApiServer,
    disruption: Disruption,
    timeout: Duration,
) -> Result<DisruptionReport> {
    tokio::time::timeout(
        timeout + Duration::from_secs(10),
        disrupt(&api.client(), &target(timeout), disruption),
    )
    .await
    .expect("disrupt returns within its own timeout")
}

fn stopped_names(report: &DisruptionReport) -> Vec<String> {
    report.stopped.iter().map(|s| s.name.clone()).collect()
}

fn new_pods(api: &FakeApiServer, before: &[String]) -> Vec<String> {
    api.pod_names()
        .into_iter()
        .filter(|name| !before.contains(name))
        .collect()
}

fn sorted(names: &[String]) -> Vec<String> {
    names
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The calls of one method, in order.
fn with_method<'a>(calls: &'a [Call], method: &str) -> Vec<&'a Call> {
    calls.iter().filter(|c| c.method == method).collect()
}

#[tokio::test]
async fn a_rolling_restart_patches_restarted_at_and_waits_for_every_replica_to_be_replaced() {
    let api = FakeApiServer::start_with(vec![fft()], vec![]).await;
    let before = api.pod_names();
    assert_eq!(before.len(), 3, "{before:?}");
    let sent_after = SystemTime::now();
    let report = run(&api, Disruption::RollingRestart, Duration::from_secs(30))
        .await
        .unwrap();

    let calls = api.calls();
    // Without kube-rs's empty first pair (see below), to compare with what kubectl would send.
    let lines: Vec<String> = api
        .requests()
        .iter()
        .map(|l| l.replacen("?&", "?", 1))
        .collect();
    let patches = with_method(&calls, "PATCH");
    assert_eq!(patches.len(), 1, "{lines:#?}");
    let patch = patches[0];
    assert_eq!(patch.path, DEPLOYMENT_PATH);
    // kube-rs 5 writes `?&fieldManager=…` (its query starts after the `?`); Go's
    // `url.ParseQuery` skips the empty pair, and so does the fake.
    let params: Vec<&str> = patch.query.split('&').filter(|p| !p.is_empty()).collect();
    assert_eq!(
        params,
        [format!("fieldManager={FIELD_MANAGER}")],
        "{}",
        patch.query
    );
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    let body = patch.json();
    let restarted_at = body["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
        .as_str()
        .unwrap_or_else(|| panic!("no {RESTARTED_AT} in {body}"))
        .to_string();
    assert_eq!(
        body,
        json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: restarted_at}}}}}),
        "the merge patch sets exactly the annotation"
    );
    assert!(restarted_at.ends_with('Z'), "UTC: {restarted_at}");
    let at = humantime::parse_rfc3339(&restarted_at).expect("RFC 3339");
    let skew = at
        .duration_since(sent_after)
        .or_else(|e| Ok::<_, ()>(e.duration()))
        .unwrap();
    assert!(skew < Duration::from_secs(5), "{restarted_at} is now");

    // RFC 7386: the template's other annotations stay; the template change is a new generation,
    // observed and rolled out.
    let deployment = api.deployment(NS, DEPLOYMENT).unwrap();
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true", "{annotations}");
    assert_eq!(annotations[RESTARTED_AT], restarted_at.as_str());
    assert_eq!(deployment["metadata"]["generation"], 2);
    assert_eq!(deployment["status"]["observedGeneration"], 2);

    assert_eq!(stopped_names(&report), before, "every old pod, by name");
    for stopped in &report.stopped {
        assert_eq!(stopped.exit, ExitSeen::Code(0), "{}", stopped.name);
    }
    let replacements = new_pods(&api, &before);
    assert_eq!(replacements.len(), 3, "{:?}", api.pod_names());
    assert_eq!(sorted(&report.started), replacements);
    assert_eq!(api.pod_names(), replacements, "the old pods are gone");

    // The calls, in order: read the Deployment and its pods, patch, watch each old pod go, then
    // the rollout polls (Deployment, then its pods), and the final look at the new pods.
    let patch_at = lines.iter().position(|l| l.starts_with("PATCH")).unwrap();
    assert_eq!(lines[0], format!("GET {DEPLOYMENT_PATH}"), "{lines:#?}");
    assert_eq!(
        lines[1],
        format!("GET {PODS_PATH}?labelSelector=app%3Dfft"),
        "{lines:#?}"
    );
    assert_eq!(patch_at, 2, "{lines:#?}");
    let watched: Vec<String> = lines[patch_at + 1..]
        .iter()
        .take_while(|l| l.starts_with(&format!("GET {PODS_PATH}/")))
        .map(|l| {
            l.trim_start_matches(&format!("GET {PODS_PATH}/"))
                .to_string()
        })
        .collect();
    let mut watched_in_order = watched.clone();
    watched_in_order.dedup();
    assert_eq!(
        watched_in_order, before,
        "each old pod polled until gone, in order"
    );
    // Each rollout poll reads the Deployment, its ReplicaSets (which one is new) and its pods;
    // the final look reads the Deployment and the new pods.
    let after_watch = &lines[patch_at + 1 + watched.len()..];
    let (polls, last) = after_watch.split_at(after_watch.len().saturating_sub(2));
    assert_eq!(polls.len() % 3, 0, "{after_watch:#?}");
    assert!(!polls.is_empty(), "at least one rollout poll: {lines:#?}");
    for poll in polls.chunks(3) {
        assert_eq!(poll[0], format!("GET {DEPLOYMENT_PATH}"), "{lines:#?}");
        assert_eq!(
            poll[1],
            format!("GET {REPLICA_SETS_PATH}?labelSelector=app%3Dfft"),
            "{lines:#?}"
        );
        assert_eq!(
            poll[2],
            format!("GET {PODS_PATH}?labelSelector=app%3Dfft"),
            "{lines:#?}"
        );
    }
    assert_eq!(
        last,
        [
            format!("GET {DEPLOYMENT_PATH}"),
            format!("GET {PODS_PATH}?labelSelector=app%3Dfft")
        ],
        "{lines:#?}"
    );
    assert!(with_method(&calls, "DELETE").is_empty(), "{lines:#?}");
}

#[tokio::test]
async fn a_kill_deletes_the_first_pod_by_name_with_grace_period_zero() {
    let api = FakeApiServer::start_with(vec![fft()], vec![]).await;
    let before = api.pod_names();
    let first = before[0].clone();
    let report = run(&api, Disruption::Kill, Duration::from_secs(30))
        .await
        .unwrap();

    let calls = api.calls();
    let deletes = with_method(&calls, "DELETE");
    assert_eq!(deletes.len(), 1, "{:#?}", api.requests());
    let delete = deletes[0];
    assert_eq!(delete.path, format!("{PODS_PATH}/{first}"));
    assert_eq!(delete.content_type.as_deref(), Some("application/json"));
    assert_eq!(delete.json()["gracePeriodSeconds"], 0, "{:?}", delete.body);
    assert!(with_method(&calls, "PATCH").is_empty());

    assert_eq!(stopped_names(&report), std::slice::from_ref(&first));
    // Known gone once the Deployment is whole again, after the delete was sent.
    assert!(report.stopped[0].gone >= report.stopped[0].at);
    // Removed by the API server at once: no poll can see the container's exit.
    assert!(
        matches!(&report.stopped[0].exit, ExitSeen::NotObserved(why) if why.contains(&first)),
        "{:?}",
        report.stopped[0].exit
    );
    let replacement = new_pods(&api, &before);
    assert_eq!(replacement.len(), 1, "{:?}", api.pod_names());
    assert_eq!(report.started, replacement);
    assert!(!api.pod_names().contains(&first));
    assert_eq!(api.pod_names().len(), 3);
}

#[tokio::test]
async fn a_terminate_deletes_with_the_pods_own_grace_period_and_reports_the_exit_it_saw() {
    let stop = StopScript {
        running_gets: 1,
        terminated_gets: 1,
        exit_code: 0,
    };
    let api = FakeApiServer::start_with(vec![fft().stop(stop)], vec![]).await;
    let before = api.pod_names();
    let first = before[0].clone();
    let report = run(&api, Disruption::Terminate, Duration::from_secs(30))
        .await
        .unwrap();

    let calls = api.calls();
    let deletes = with_method(&calls, "DELETE");
    assert_eq!(deletes.len(), 1, "{:#?}", api.requests());
    assert_eq!(deletes[0].path, format!("{PODS_PATH}/{first}"));
    let options = deletes[0].json();
    assert!(
        options.get("gracePeriodSeconds").is_none(),
        "the pod's own grace period, not a chosen one: {options}"
    );
    // The pod was polled while it stopped and until it was gone.
    let polls = calls
        .iter()
        .filter(|c| c.method == "GET" && c.path == format!("{PODS_PATH}/{first}"))
        .count();
    assert_eq!(polls, 3, "running, terminated, gone: {:#?}", api.requests());

    assert_eq!(stopped_names(&report), std::slice::from_ref(&first));
    assert_eq!(report.stopped[0].exit, ExitSeen::Code(0));
    let replacement = new_pods(&api, &before);
    assert_eq!(replacement.len(), 1, "{:?}", api.pod_names());
    assert_eq!(report.started, replacement);
}

#[tokio::test]
async fn a_terminated_pod_gone_before_a_poll_saw_its_exit_is_reported_as_not_observed() {
    let stop = StopScript {
        running_gets: 2,
        terminated_gets: 0,
        exit_code: 0,
    };
    let api = FakeApiServer::start_with(vec![fft().stop(stop)], vec![]).await;
    let before = api.pod_names();
    let first = before[0].clone();
    let report = run(&api, Disruption::Terminate, Duration::from_secs(30))
        .await
        .unwrap();

    assert_eq!(stopped_names(&report), std::slice::from_ref(&first));
    match &report.stopped[0].exit {
        ExitSeen::NotObserved(why) => {
            assert!(why.contains(&first), "{why}");
            assert!(why.contains(CONTAINER), "{why}");
        }
        other => panic!("no poll showed the exit, yet the report says {other:?}"),
    }
    assert_eq!(report.started, new_pods(&api, &before));
    assert_eq!(report.started.len(), 1);
}

/// A different exit code is reported as it was seen (the app did not drain cleanly).
#[tokio::test]
async fn a_terminated_pods_nonzero_exit_is_reported_as_seen() {
    let stop = StopScript {
        running_gets: 0,
        terminated_gets: 2,
        exit_code: 143,
    };
    let api = FakeApiServer::start_with(vec![fft().stop(stop)], vec![]).await;
    let report = run(&api, Disruption::Terminate, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(report.stopped[0].exit, ExitSeen::Code(143));
}

#[tokio::test]
async fn a_deployment_that_never_becomes_whole_again_is_an_error_naming_it_in_time() {
    let api = FakeApiServer::start_with(vec![fft().never_ready()], vec![]).await;
    let timeout = Duration::from_secs(3);
    let started = Instant::now();
    let err = run(&api, Disruption::Kill, timeout).await.unwrap_err();
    let elapsed = started.elapsed();
    let message = format!("{err:#}");
    assert!(
        elapsed < timeout + Duration::from_millis(1500),
        "{elapsed:?}: {message}"
    );
    assert!(message.contains("Deployment wty-istio/fft"), "{message}");
    // What the rollout looked like last, even though the final poll was cut at the deadline.
    assert!(message.contains("available of 3"), "{message}");
    // The replacement was made; it just never turned Ready.
    assert_eq!(api.pod_names().len(), 3, "{:?}", api.pod_names());
}

/// When the controller never acts on the patch, the first old pod never goes: the wait for it
/// ends the disruption within its timeout and names the pod.
#[tokio::test]
async fn a_rollout_the_controller_never_starts_is_an_error_in_time() {
    let api = FakeApiServer::start_with(vec![fft().never_observed()], vec![]).await;
    let first = api.pod_names()[0].clone();
    let timeout = Duration::from_secs(3);
    let started = Instant::now();
    let err = run(&api, Disruption::RollingRestart, timeout)
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    let message = format!("{err:#}");
    assert!(
        elapsed < timeout + Duration::from_millis(1500),
        "{elapsed:?}: {message}"
    );
    assert!(
        message.contains("RollingRestart of Deployment wty-istio/fft")
            && message.contains(&format!("pod {first} to be gone")),
        "the error names the Deployment and what it waited for: {message}"
    );
    let deployment = api.deployment(NS, DEPLOYMENT).unwrap();
    assert_eq!(deployment["metadata"]["generation"], 2);
    assert_eq!(deployment["status"]["observedGeneration"], 1);
}

/// The fake refuses what the API server refuses, so a client that sent it would fail here too.
#[tokio::test]
async fn the_fake_refuses_what_the_api_server_refuses() {
    let api = FakeApiServer::start_with(vec![fft()], vec![]).await;
    let client = api.client();
    let first = api.pod_names()[0].clone();
    let send = |method: &str, path: String, content_type: &str, body: &str| {
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(body.as_bytes().to_vec())
            .unwrap();
        let client = client.clone();
        async move {
            match tokio::time::timeout(Duration::from_secs(10), client.request_text(request))
                .await
                .expect("bounded")
            {
                Err(kube::Error::Api(status)) => (status.code, status.reason, status.message),
                other => panic!("expected an API error, got {other:?}"),
            }
        }
    };
    // A PATCH must say which kind of patch it is.
    let (code, reason, message) = send(
        "PATCH",
        DEPLOYMENT_PATH.into(),
        "application/json",
        r#"{"spec":{"replicas":1}}"#,
    )
    .await;
    assert_eq!((code, reason.as_str()), (415, "UnsupportedMediaType"));
    assert!(
        message.contains("application/merge-patch+json"),
        "{message}"
    );
    // A merge patch must be a JSON object.
    // A body the API server cannot read: not JSON (400), or DeleteOptions that are not JSON-typed
    // (415).
    for (method, path, content_type, body, expected) in [
        (
            "PATCH",
            DEPLOYMENT_PATH.to_string(),
            "application/merge-patch+json",
            "not json",
            400,
        ),
        (
            "DELETE",
            format!("{PODS_PATH}/{first}"),
            "text/plain",
            "gracePeriodSeconds=0",
            415,
        ),
        (
            "DELETE",
            format!("{PODS_PATH}/{first}"),
            "application/json",
            "{",
            400,
        ),
    ] {
        let (code, _, _) = send(method, path.clone(), content_type, body).await;
        assert_eq!(code, expected, "{method} {path} ({content_type}) {body:?}");
    }
    // Unknown objects are 404s naming the resource.
    let (code, reason, message) = send(
        "DELETE",
        format!("{PODS_PATH}/nope"),
        "application/json",
        "{}",
    )
    .await;
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    assert_eq!(message, r#"pods "nope" not found"#);
    let (code, _, message) = send(
        "PATCH",
        "/apis/apps/v1/namespaces/wty-istio/deployments/nope".into(),
        "application/merge-patch+json",
        "{}",
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(message, r#"deployments.apps "nope" not found"#);
    // None of this changed anything.
    assert_eq!(api.pod_names().len(), 3);
    let deployment = api.deployment(NS, DEPLOYMENT).unwrap();
    assert_eq!(deployment["metadata"]["generation"], 1);
}
