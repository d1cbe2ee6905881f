//! The replicas behind the local gateway as Kubernetes manages a Deployment's pods, for the
//! resilience scenarios. Each replica is a pod of two processes: the app and its sidecar (see
//! [`super::sidecar`]); the endpoints name the sidecars. A replacement is added to the endpoints
//! once its `/readyz` passes; a replica that stops is signalled and removed from the endpoints
//! *at the same moment*, and Envoy learns of the removal only after the propagation lag, as
//! proxies learn of an endpoint change a little after the kubelet has sent SIGTERM. Its sidecar
//! stops after the app has exited, as a native sidecar does; a killed replica loses both at
//! once, as a pod whose containers are all killed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::endpoints::{self, EndpointFiles};
use super::process::Supervisor;
use super::replicas::{self, Replica, ReplicaOptions};
use super::translate::Upstream;
use super::{proxy, sidecar};
use crate::env::{Disruption, DisruptionReport, ExitSeen, StoppedReplica};

/// Margin on top of a replica's drain delay and shutdown grace before its exit is overdue.
const EXIT_MARGIN: Duration = Duration::from_secs(5);

/// The replicas of every upstream and the endpoint files Envoy reads them from.
pub(crate) struct Fleet {
    options: ReplicaOptions,
    /// From a replica's SIGTERM (or SIGKILL) until Envoy stops routing to it.
    propagation_lag: Duration,
    upstreams: Vec<Upstream>,
    /// Deployment (`namespace/name`) → its replicas, in the order they were started.
    members: BTreeMap<String, Vec<Pod>>,
    /// Deployment → the clusters its replicas serve (one per Service port that selects them).
    clusters: BTreeMap<String, Vec<String>>,
    endpoints: EndpointFiles,
    /// The next replica's number; replicas are never renamed, as pods are not.
    next_index: u32,
}

impl Fleet {
    /// Starts every upstream's replicas and writes their endpoint files under `endpoints_dir`.
    pub(crate) async fn start(
        supervisor: &Supervisor,
        options: ReplicaOptions,
        propagation_lag: Duration,
        upstreams: &[Upstream],
        endpoints_dir: &std::path::Path,
    ) -> Result<Self> {
        let mut members = BTreeMap::new();
        let mut clusters: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut next_index = 0;
        for upstream in upstreams {
            let deployment = upstream.deployment_id();
            clusters
                .entry(deployment.clone())
                .or_default()
                .push(upstream.cluster.clone());
            if members.contains_key(&deployment) {
                continue;
            }
            let names = replicas::initial_names(upstream);
            next_index = next_index.max(upstream.replicas);
            let started = start_pods(supervisor, &options, &names)
                .await
                .with_context(|| {
                    format!(
                        "starting {} replicas of Deployment {}/{}",
                        upstream.replicas, upstream.namespace, upstream.deployment
                    )
                })?;
            members.insert(deployment, started);
        }
        let addresses = clusters
            .iter()
            .flat_map(|(deployment, names)| {
                let addresses = addresses_of(&members[deployment]);
                names
                    .iter()
                    .map(move |cluster| (cluster.clone(), addresses.clone()))
            })
            .collect();
        let endpoints = EndpointFiles::create(endpoints_dir, addresses)?;
        Ok(Fleet {
            options,
            propagation_lag,
            upstreams: upstreams.to_vec(),
            members,
            clusters,
            endpoints,
            next_index,
        })
    }

    pub(crate) fn endpoints(&self) -> &EndpointFiles {
        &self.endpoints
    }

    /// Every replica now serving, of every upstream.
    pub(crate) fn replicas(&self) -> impl Iterator<Item = &Replica> {
        self.members.values().flatten().map(|pod| &pod.app)
    }

    /// Disrupts the first upstream's replicas (the Deployment the routes send to) and returns
    /// once Envoy routes to a full set of ready replicas and every stopped one has exited.
    pub(crate) async fn disrupt(
        &mut self,
        supervisor: &Supervisor,
        admin: SocketAddr,
        disruption: Disruption,
    ) -> Result<DisruptionReport> {
        let upstream = self
            .upstreams
            .first()
            .cloned()
            .context("the manifests route to no Deployment")?;
        let current: Vec<String> = self.members[&upstream.deployment_id()]
            .iter()
            .map(|pod| pod.app.name.clone())
            .collect();
        let victims = match disruption {
            Disruption::RollingRestart => current,
            Disruption::Kill | Disruption::Terminate => current.into_iter().take(1).collect(),
        };
        let signal = match disruption {
            Disruption::Kill => libc::SIGKILL,
            Disruption::RollingRestart | Disruption::Terminate => libc::SIGTERM,
        };
        let mut signalled = Vec::new();
        let mut started = Vec::new();
        for victim in victims {
            let surge = disruption == Disruption::RollingRestart;
            let replacement = self
                .replace(supervisor, admin, &upstream, &victim, signal, surge)
                .await?;
            signalled.push((victim, replacement.1, replacement.2));
            started.push(replacement.0);
        }
        let overdue = self.options.drain_delay + self.options.shutdown_grace + EXIT_MARGIN;
        let mut stopped = Vec::new();
        for (name, at, killed) in signalled {
            let status = supervisor
                .wait_exit(&name, overdue.saturating_sub(at.elapsed()))
                .await
                .with_context(|| format!("{name} did not exit after its stop"))?;
            // The app has exited: its sidecar goes next (after a SIGKILL it is gone already).
            let sidecar = sidecar::process_name(&name);
            if supervisor.signal(&sidecar, libc::SIGTERM).is_ok() {
                supervisor
                    .wait_exit(&sidecar, EXIT_MARGIN)
                    .await
                    .with_context(|| format!("{sidecar} did not exit after SIGTERM"))?;
            }
            let exit = match (status.code(), status.signal()) {
                (Some(code), _) => ExitSeen::Code(code),
                (None, Some(signal)) => ExitSeen::Signal(signal),
                (None, None) => ExitSeen::NotObserved(format!("status {status}")),
            };
            stopped.push(StoppedReplica {
                name,
                at,
                gone: killed.unwrap_or_else(Instant::now),
                exit,
            });
        }
        Ok(DisruptionReport { stopped, started })
    }

    /// Kubernetes' order for one replica. A rollout surges: the replacement starts and joins
    /// the endpoints once ready, then the old one stops. A deleted pod stops first and its
    /// ReplicaSet replaces it. Either way the old one gets `signal` and leaves the endpoints at
    /// the same moment, which Envoy learns after the lag. Returns the replacement's name, when
    /// the old one was signalled and, for a SIGKILL, when the gateway had stopped routing to it.
    async fn replace(
        &mut self,
        supervisor: &Supervisor,
        admin: SocketAddr,
        upstream: &Upstream,
        victim: &str,
        signal: libc::c_int,
        surge: bool,
    ) -> Result<(String, Instant, Option<Instant>)> {
        let deployment = upstream.deployment_id();
        // Named like the Deployment's other replicas; never a name used before, as pods are not.
        let name = replicas::replica_name(&upstream.deployment, self.next_index);
        self.next_index += 1;
        if surge {
            self.add(supervisor, admin, &deployment, &name).await?;
        }
        let at = Instant::now();
        supervisor.signal(victim, signal)?;
        let mut killed = None;
        if signal == libc::SIGKILL {
            // The whole pod dies: nothing answers on its address any more.
            let sidecar = sidecar::process_name(victim);
            supervisor.signal(&sidecar, libc::SIGKILL)?;
            for process in [victim, sidecar.as_str()] {
                supervisor.wait_exit(process, EXIT_MARGIN).await?;
            }
        }
        self.members_mut(&deployment)?
            .retain(|pod| pod.app.name != victim);
        // The modelled propagation of the endpoint removal: not a wait for a condition, the
        // delay itself is what the scenarios exercise.
        tokio::time::sleep(self.propagation_lag).await;
        self.publish(admin, &deployment).await?;
        if signal == libc::SIGKILL {
            // A kill is over once the gateway no longer routes to the dead replica, as on a
            // cluster (the pod deleted and its endpoint removal propagated). Until then a request
            // can fail even though Istio retries on another host: least-request picks the idle
            // dead host first, and the previous-hosts predicate accepts it again after five
            // reselections.
            killed = Some(Instant::now());
        }
        if !surge {
            self.add(supervisor, admin, &deployment, &name).await?;
        }
        Ok((name, at, killed))
    }

    /// Starts a replica and adds it to the endpoints once it is ready.
    async fn add(
        &mut self,
        supervisor: &Supervisor,
        admin: SocketAddr,
        deployment: &str,
        name: &str,
    ) -> Result<()> {
        let new = start_pods(supervisor, &self.options, &[name.to_string()])
            .await?
            .remove(0);
        self.members_mut(deployment)?.push(new);
        self.publish(admin, deployment).await
    }

    /// Writes the Deployment's current replicas into the endpoints of each of its clusters and
    /// waits until Envoy has applied them.
    async fn publish(&mut self, admin: SocketAddr, deployment: &str) -> Result<()> {
        let addresses = addresses_of(self.members_mut(deployment)?);
        let clusters = self.clusters.get(deployment).cloned().unwrap_or_default();
        for cluster in &clusters {
            self.endpoints.write(cluster, addresses.clone())?;
        }
        for cluster in &clusters {
            endpoints::wait_applied(admin, cluster, &addresses).await?;
        }
        Ok(())
    }

    fn members_mut(&mut self, deployment: &str) -> Result<&mut Vec<Pod>> {
        self.members
            .get_mut(deployment)
            .with_context(|| format!("no replicas for Deployment {deployment}"))
    }
}

/// A replica and its sidecar.
struct Pod {
    app: Replica,
    /// Where the sidecar listens: the address the endpoints give for this replica.
    sidecar: SocketAddr,
}

/// Starts one app per name and then their sidecars, and waits until all are ready.
async fn start_pods(
    supervisor: &Supervisor,
    options: &ReplicaOptions,
    names: &[String],
) -> Result<Vec<Pod>> {
    let apps = replicas::start(supervisor, options, names).await?;
    let mut spawned = Vec::new();
    for app in &apps {
        let config = sidecar::bootstrap(&app.name, app.addr);
        let name = sidecar::process_name(&app.name);
        spawned.push(proxy::spawn(
            supervisor,
            &options.envoy,
            &name,
            &config,
            &options.run_dir,
        )?);
    }
    let mut pods = Vec::new();
    for (app, sidecar) in apps.into_iter().zip(spawned) {
        let (listener, _admin) = sidecar.ready(supervisor).await?;
        pods.push(Pod {
            app,
            sidecar: listener,
        });
    }
    Ok(pods)
}

/// The endpoints of these pods: their sidecars.
fn addresses_of(pods: &[Pod]) -> Vec<SocketAddr> {
    pods.iter().map(|pod| pod.sidecar).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacements_keep_the_deployment_name() {
        assert_eq!(
            replicas::replica_name("wtyfft-deploy", 3),
            "wtyfft-deploy-local-3"
        );
        assert_eq!(replicas::replica_name("a-local-b", 9), "a-local-b-local-9");
    }
}
