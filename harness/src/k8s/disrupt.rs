//! The resilience scenarios' disruptions on a cluster, done as people do them: a rollout restart
//! (what `kubectl rollout restart` does: the `kubectl.kubernetes.io/restartedAt` annotation on
//! the pod template), a pod deleted with grace period 0, a pod deleted with its own grace period.
//! Each returns once the Deployment is whole again and the stopped pods are gone.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};

use crate::env::{Disruption, DisruptionReport, ExitSeen, StoppedReplica};
use crate::exec::wait::{Attempt, wait_for};
use crate::k8s::client::deployment_pods;
use crate::k8s::rollout::{AppPods, rollout_restart, wait_rollout};

pub use crate::k8s::rollout::RESTARTED_AT;

/// How often a stopping pod is looked at.
const POD_POLL: Duration = Duration::from_millis(250);

/// Which Deployment, and how long the whole disruption may take.
#[derive(Clone, Debug)]
pub struct DisruptTarget {
    pub namespace: String,
    pub deployment: String,
    pub app: AppPods,
    pub timeout: Duration,
}

/// Disrupts the Deployment's pods and waits until it is whole again.
pub async fn disrupt(
    client: &kube::Client,
    target: &DisruptTarget,
    disruption: Disruption,
) -> Result<DisruptionReport> {
    let started = Instant::now();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &target.namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &target.namespace);
    let deployment = deployments.get(&target.deployment).await.with_context(|| {
        format!(
            "reading Deployment {}/{}",
            target.namespace, target.deployment
        )
    })?;
    let before: Vec<Pod> = deployment_pods(client, &deployment).await?;
    if before.is_empty() {
        bail!(
            "Deployment {}/{} has no pods to disrupt",
            target.namespace,
            target.deployment
        );
    }
    let before_names: BTreeSet<String> = before
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let victims: Vec<String> = match disruption {
        Disruption::RollingRestart => before_names.iter().cloned().collect(),
        // The first by name: any would do, and a stable choice reads better in a report.
        Disruption::Kill | Disruption::Terminate => before_names.iter().take(1).cloned().collect(),
    };
    let at = Instant::now();
    match disruption {
        Disruption::RollingRestart => {
            rollout_restart(client, &target.namespace, &target.deployment).await?;
        }
        Disruption::Kill | Disruption::Terminate => {
            let params = if disruption == Disruption::Kill {
                DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::default()
                }
            } else {
                DeleteParams::default()
            };
            pods.delete(&victims[0], &params)
                .await
                .with_context(|| format!("deleting pod {}/{}", target.namespace, victims[0]))?;
        }
    }
    let left = || target.timeout.saturating_sub(started.elapsed());
    let mut exits = Vec::new();
    for name in &victims {
        let exit = watch_until_gone(&pods, name, &target.app.container, left())
            .await
            .with_context(|| {
                format!(
                    "{disruption:?} of Deployment {}/{}",
                    target.namespace, target.deployment
                )
            })?;
        exits.push(exit);
    }
    wait_rollout(
        client,
        &target.namespace,
        &target.deployment,
        &target.app,
        left(),
    )
    .await?;
    let gone = Instant::now();
    let stopped = victims
        .into_iter()
        .zip(exits)
        .map(|(name, exit)| StoppedReplica {
            name,
            at,
            gone,
            exit,
        })
        .collect();
    let after = deployment_pods(client, &deployments.get(&target.deployment).await?).await?;
    let started_pods = after
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .filter(|name| !before_names.contains(name))
        .collect();
    Ok(DisruptionReport {
        stopped,
        started: started_pods,
    })
}

/// Polls a stopping pod until it is gone, keeping the last exit of `container` seen in its
/// status: the kubelet reports it before the pod object goes, but a poll may miss that moment,
/// and then the report says so instead of guessing.
async fn watch_until_gone(
    pods: &Api<Pod>,
    name: &str,
    container: &str,
    timeout: Duration,
) -> Result<ExitSeen> {
    let last_exit = std::sync::Mutex::new(None::<i32>);
    wait_for(
        &format!("pod {name} to be gone"),
        timeout,
        POD_POLL,
        || async {
            Ok(match pods.get_opt(name).await {
                Ok(Some(pod)) => {
                    if let Some(code) = terminated_exit_code(&pod, container) {
                        *last_exit.lock().unwrap_or_else(|p| p.into_inner()) = Some(code);
                    }
                    Attempt::NotYet(format!("pod {name} still exists"))
                }
                Ok(None) => Attempt::Done(()),
                Err(err) => Attempt::NotYet(format!("API error: {err}")),
            })
        },
    )
    .await?;
    let seen = *last_exit.lock().unwrap_or_else(|p| p.into_inner());
    Ok(match seen {
        Some(code) => ExitSeen::Code(code),
        None => ExitSeen::NotObserved(format!(
            "pod {name} was gone before a poll saw container {container} terminated"
        )),
    })
}

/// The exit code of `container` once the kubelet reports it terminated.
pub(crate) fn terminated_exit_code(pod: &Pod, container: &str) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_code_comes_from_the_app_containers_terminated_state() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"containerStatuses": [
                {"name": "istio-proxy", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                 "state": {"terminated": {"exitCode": 137}}},
                {"name": "app", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                 "state": {"terminated": {"exitCode": 0}}}
            ]}
        }))
        .unwrap();
        assert_eq!(terminated_exit_code(&pod, "app"), Some(0));
        assert_eq!(terminated_exit_code(&pod, "other"), None);
    }
}
