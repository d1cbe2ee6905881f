//! The replicas' addresses as Envoy learns them: EDS from files, as Istio delivers EDS over xDS,
//! so that a replica can come and go while Envoy runs (no restart, no dropped connection).
//!
//! Each upstream cluster reads one file holding a `DiscoveryResponse` with its one
//! `ClusterLoadAssignment` (Envoy's EDS takes exactly one resource per cluster,
//! `source/extensions/clusters/eds/eds.cc` `validateUpdateSize`). Envoy watches the folder and
//! reloads a file when one is moved into it (`path_config_source.watched_directory`,
//! `envoy/config/core/v3/config_source.proto`), so every update is written beside it and renamed
//! over it: Envoy never reads half a file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::exec::probe::{self, ProbeRequest};
use crate::exec::wait::Retry;

/// How long Envoy may take to apply an endpoint file (it reacts to the rename at once).
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The endpoint files of every upstream cluster, and what each holds.
#[derive(Debug)]
pub(crate) struct EndpointFiles {
    dir: PathBuf,
    /// Cluster name → its file.
    clusters: BTreeMap<String, PathBuf>,
    version: u64,
}

impl EndpointFiles {
    /// Writes the first version of each cluster's file under `dir`.
    pub(crate) fn create(dir: &Path, initial: BTreeMap<String, Vec<SocketAddr>>) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut files = EndpointFiles {
            dir: dir.to_path_buf(),
            clusters: BTreeMap::new(),
            version: 0,
        };
        for (index, (cluster, addresses)) in initial.into_iter().enumerate() {
            // Cluster names hold `|`; the file is named by position instead.
            let file = dir.join(format!("eds-{index}.json"));
            files.clusters.insert(cluster.clone(), file);
            files.write(&cluster, addresses)?;
        }
        Ok(files)
    }

    /// The folder Envoy watches.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of `cluster`.
    pub(crate) fn file(&self, cluster: &str) -> Option<&Path> {
        self.clusters.get(cluster).map(PathBuf::as_path)
    }

    /// Replaces `cluster`'s addresses: a new version written next to the file and renamed over it.
    pub(crate) fn write(&mut self, cluster: &str, addresses: Vec<SocketAddr>) -> Result<()> {
        let Some(file) = self.clusters.get(cluster) else {
            bail!("no endpoint file for cluster {cluster}");
        };
        if let Some(outside) = addresses.iter().find(|a| !a.ip().is_loopback()) {
            bail!("the local gateway routes to loopback addresses only, not {outside}");
        }
        self.version += 1;
        let response = discovery_response(cluster, &addresses, self.version);
        let staging = file.with_extension("json.new");
        std::fs::write(&staging, serde_json::to_vec_pretty(&response)?)
            .with_context(|| format!("writing {}", staging.display()))?;
        std::fs::rename(&staging, file)
            .with_context(|| format!("moving {} into place", staging.display()))?;
        Ok(())
    }
}

/// What an EDS file holds: a `DiscoveryResponse` with one `ClusterLoadAssignment`.
fn discovery_response(cluster: &str, addresses: &[SocketAddr], version: u64) -> Value {
    let lb_endpoints: Vec<Value> = addresses
        .iter()
        .map(|addr| {
            json!({"endpoint": {"address": {"socket_address": {
                "address": addr.ip().to_string(),
                "port_value": addr.port(),
            }}}})
        })
        .collect();
    json!({
        "version_info": version.to_string(),
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            "cluster_name": cluster,
            "endpoints": [{"lb_endpoints": lb_endpoints}],
        }],
    })
}

/// The cluster's EDS configuration for the bootstrap.
pub(crate) fn eds_cluster_config(cluster: &str, file: &Path, dir: &Path) -> Value {
    json!({
        "service_name": cluster,
        "eds_config": {
            "resource_api_version": "V3",
            "path_config_source": {
                "path": file.to_string_lossy(),
                "watched_directory": {"path": dir.to_string_lossy()},
            },
        },
    })
}

/// The hosts Envoy has for `cluster`, from its admin `/clusters?format=json`.
pub(crate) async fn envoy_hosts(admin: SocketAddr, cluster: &str) -> Result<Vec<SocketAddr>> {
    let response = probe::send(admin, &ProbeRequest::new("GET", "/clusters?format=json")).await?;
    if response.status != 200 {
        bail!("Envoy admin /clusters: status {}", response.status);
    }
    hosts_in_clusters_json(&response.body, cluster)
}

fn hosts_in_clusters_json(body: &[u8], cluster: &str) -> Result<Vec<SocketAddr>> {
    let json: Value = serde_json::from_slice(body).context("Envoy admin /clusters is not JSON")?;
    let statuses = json["cluster_statuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let Some(status) = statuses.iter().find(|c| c["name"] == cluster) else {
        bail!("Envoy has no cluster {cluster}");
    };
    let mut hosts = Vec::new();
    for host in status["host_statuses"].as_array().into_iter().flatten() {
        let address = &host["address"]["socket_address"];
        let (Some(ip), Some(port)) = (address["address"].as_str(), address["port_value"].as_u64())
        else {
            continue;
        };
        hosts.push(SocketAddr::new(ip.parse()?, u16::try_from(port)?));
    }
    hosts.sort();
    Ok(hosts)
}

/// Waits until Envoy's hosts for `cluster` are exactly `addresses`.
pub(crate) async fn wait_applied(
    admin: SocketAddr,
    cluster: &str,
    addresses: &[SocketAddr],
) -> Result<()> {
    let mut wanted = addresses.to_vec();
    wanted.sort();
    Retry::within(APPLY_TIMEOUT)
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
        .run(
            &format!("Envoy to route {cluster} to exactly {wanted:?}"),
            || async {
                let hosts = envoy_hosts(admin, cluster).await?;
                if hosts == wanted {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("Envoy has {hosts:?}"))
                }
            },
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_update_is_a_new_version_renamed_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let a: SocketAddr = "127.0.0.1:4001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:4002".parse().unwrap();
        let mut files = EndpointFiles::create(
            dir.path(),
            [("outbound|8000||x".to_string(), vec![a])].into(),
        )
        .unwrap();
        let file = files.file("outbound|8000||x").unwrap().to_path_buf();
        let read = || -> Value { serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap() };
        assert_eq!(read()["version_info"], "1");
        files.write("outbound|8000||x", vec![a, b]).unwrap();
        let json = read();
        assert_eq!(json["version_info"], "2");
        assert_eq!(json["resources"][0]["cluster_name"], "outbound|8000||x");
        let ports: Vec<u64> = json["resources"][0]["endpoints"][0]["lb_endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                e["endpoint"]["address"]["socket_address"]["port_value"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(ports, [4001, 4002]);
        // Nothing half-written is left beside the file.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["eds-0.json"]);
    }

    #[test]
    fn only_loopback_and_known_clusters() {
        let dir = tempfile::tempdir().unwrap();
        let mut files =
            EndpointFiles::create(dir.path(), [("c".to_string(), Vec::new())].into()).unwrap();
        let err = files
            .write("c", vec!["10.0.0.1:80".parse().unwrap()])
            .unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        assert!(files.write("other", Vec::new()).is_err());
    }

    #[test]
    fn hosts_are_read_from_the_admin_clusters_json() {
        let body = br#"{"cluster_statuses":[{"name":"c","host_statuses":[
            {"address":{"socket_address":{"address":"127.0.0.1","port_value":4002}}},
            {"address":{"socket_address":{"address":"127.0.0.1","port_value":4001}}}]}]}"#;
        let hosts = hosts_in_clusters_json(body, "c").unwrap();
        assert_eq!(
            hosts,
            [
                "127.0.0.1:4001".parse().unwrap(),
                "127.0.0.1:4002".parse().unwrap()
            ]
        );
        assert!(hosts_in_clusters_json(body, "d").is_err());
    }
}
