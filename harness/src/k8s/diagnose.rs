//! What explains a failure, written under the artifacts directory: events, describe, logs (also
//! of the previous container when one restarted), `istioctl analyze`, `istioctl proxy-status`,
//! the gateway's Envoy configuration, and `kind export logs`. Every step that fails is a
//! warning (and a `.err` file beside where its output would be), never a second failure.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::config::names::GATEWAY_SELECTOR;
use crate::config::names::ISTIO_NAMESPACE;
use crate::exec::cmd::{Cmd, Runner};
use crate::tools::istioctl::KubeTarget;
use crate::tools::kind;
use crate::tools::preflight::{Tool, Tools};

/// What to collect from.
#[derive(Clone, Debug)]
pub(crate) struct DiagnoseTarget {
    pub tools: Tools,
    pub kube: KubeTarget,
    /// The kind cluster, for `kind export logs`.
    pub kind_cluster: Option<String>,
    /// The app's namespace (from the manifests).
    pub app_namespace: String,
}

/// One planned step: a command whose stdout goes to a file.
#[derive(Clone, Debug)]
pub(crate) struct Capture {
    pub tool: Tool,
    pub cmd: Cmd,
    pub file: PathBuf,
    /// The tool answers on stderr too (`istioctl analyze`'s "✔ No validation issues found" and
    /// its summary of findings): keep that below stdout. Off for JSON captures.
    pub with_stderr: bool,
}

impl DiagnoseTarget {
    fn kubectl(&self) -> Cmd {
        self.tools
            .cmd(Tool::Kubectl)
            .args(self.kube.flags())
            .timeout(Duration::from_secs(60))
    }

    fn istioctl(&self) -> Cmd {
        self.tools
            .cmd(Tool::Istioctl)
            .args(self.kube.flags())
            .timeout(Duration::from_secs(120))
    }

    fn namespaces(&self) -> [&str; 2] {
        [self.app_namespace.as_str(), ISTIO_NAMESPACE]
    }

    /// The steps that need no prior answer, in order.
    pub(crate) fn fixed_captures(&self, dir: &Path) -> Vec<Capture> {
        let mut captures = vec![
            Capture {
                tool: Tool::Kubectl,
                cmd: self
                    .kubectl()
                    .args(["get", "events", "-A", "--sort-by=.lastTimestamp"]),
                file: dir.join("events.txt"),
                with_stderr: false,
            },
            Capture {
                tool: Tool::Kubectl,
                cmd: self.kubectl().args([
                    "get",
                    "all,gateways.networking.istio.io,virtualservices.networking.istio.io",
                    "-A",
                    "-o",
                    "wide",
                ]),
                file: dir.join("resources.txt"),
                with_stderr: false,
            },
        ];
        for namespace in self.namespaces() {
            captures.push(Capture {
                tool: Tool::Kubectl,
                cmd: self.kubectl().args([
                    "describe",
                    "pods,deployments,services",
                    "-n",
                    namespace,
                ]),
                file: dir.join(format!("describe-{namespace}.txt")),
                with_stderr: false,
            });
        }
        captures.push(Capture {
            tool: Tool::Istioctl,
            // Exit 79 (`ExitAnalyzerFoundIssues`, istioctl/cmd/sysexits.go) is what analyze
            // says when it found Error-level messages, which it prints on stdout
            // (istioctl/pkg/analyze/analyze.go): exactly the output a failed run needs.
            cmd: self
                .istioctl()
                .args(["analyze", "-A"])
                .exit_code_means(79, "found Error-level issues"),
            file: dir.join("istioctl-analyze.txt"),
            with_stderr: true,
        });
        captures.push(Capture {
            tool: Tool::Istioctl,
            cmd: self.istioctl().arg("proxy-status"),
            file: dir.join("istioctl-proxy-status.txt"),
            with_stderr: false,
        });
        captures
    }

    /// `kubectl get pods -n NS -o json`.
    pub(crate) fn pod_list(&self, namespace: &str) -> Cmd {
        self.kubectl()
            .args(["get", "pods", "-n", namespace, "-o", "json"])
    }

    /// Logs of every container (init and sidecar included) of every pod in the list; the
    /// previous container's too when it restarted.
    pub(crate) fn log_captures(
        &self,
        namespace: &str,
        pod_list: &Value,
        dir: &Path,
    ) -> Vec<Capture> {
        let mut captures = Vec::new();
        for pod in pod_list["items"].as_array().into_iter().flatten() {
            let Some(name) = pod.pointer("/metadata/name").and_then(Value::as_str) else {
                continue;
            };
            let statuses = ["containerStatuses", "initContainerStatuses"]
                .iter()
                .filter_map(|key| pod["status"][key].as_array())
                .flatten();
            for status in statuses {
                let Some(container) = status["name"].as_str() else {
                    continue;
                };
                let base = format!("logs-{namespace}-{name}-{container}");
                let logs = self
                    .kubectl()
                    .args(["logs", "-n", namespace, name, "-c", container]);
                captures.push(Capture {
                    tool: Tool::Kubectl,
                    cmd: logs.clone(),
                    file: dir.join(format!("{base}.txt")),
                    with_stderr: false,
                });
                if status["restartCount"].as_u64().unwrap_or(0) > 0 {
                    captures.push(Capture {
                        tool: Tool::Kubectl,
                        cmd: logs.arg("--previous"),
                        file: dir.join(format!("{base}-previous.txt")),
                        with_stderr: false,
                    });
                }
            }
        }
        captures
    }

    /// The gateway's whole Envoy configuration (listeners, routes, clusters, endpoints).
    pub(crate) fn gateway_config_dump(&self, gateway_pod: &str, dir: &Path) -> Capture {
        Capture {
            tool: Tool::Istioctl,
            cmd: self.istioctl().args([
                "proxy-config",
                "all",
                gateway_pod,
                "-n",
                ISTIO_NAMESPACE,
                "-o",
                "json",
            ]),
            file: dir.join("gateway-config-dump.json"),
            with_stderr: false,
        }
    }
}

/// Runs one capture: output to its file, a failure to a warning and a `.err` file.
async fn capture(runner: &Runner, step: &Capture) -> Option<String> {
    match runner.run(&step.cmd).await {
        Ok(output) => {
            let mut text = output.stdout.clone();
            if step.with_stderr && !output.stderr.trim().is_empty() {
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&output.stderr);
            }
            if let Some((code, meaning)) = output.answer {
                eprintln!(
                    "diagnostics: `{}` exited {code}: it {meaning}; see {}",
                    step.cmd,
                    step.file.display()
                );
            }
            if !runner.is_dry_run()
                && let Err(err) = std::fs::write(&step.file, &text)
            {
                eprintln!(
                    "warning: diagnostics: writing {}: {err}",
                    step.file.display()
                );
            }
            Some(output.stdout)
        }
        Err(err) => {
            eprintln!("warning: diagnostics step failed (continuing): {err:#}");
            let _ = std::fs::write(step.file.with_extension("err"), format!("{err:#}\n"));
            None
        }
    }
}

/// Collects everything under `dir`. Never fails; each failing step is a warning.
pub(crate) async fn collect(runner: &Runner, target: &DiagnoseTarget, dir: &Path) {
    runner.step(format!("collect diagnostics into {}", dir.display()));
    if !runner.is_dry_run()
        && let Err(err) = std::fs::create_dir_all(dir)
    {
        eprintln!(
            "warning: diagnostics: cannot create {}: {err}",
            dir.display()
        );
        return;
    }
    // The cluster's own logs first: on an interrupted run the bound on collecting may cut what
    // comes last, and these are the ones nothing else can recover once the cluster is deleted.
    if let Some(cluster) = &target.kind_cluster
        && let Err(err) =
            kind::export_logs(runner, &target.tools, cluster, &dir.join("kind-logs")).await
    {
        eprintln!("warning: diagnostics step failed (continuing): {err:#}");
    }
    let have = |tool| runner.is_dry_run() || target.tools.path_of(tool).is_some();
    for step in target.fixed_captures(dir) {
        let tool = step.tool;
        if !have(tool) {
            eprintln!(
                "warning: diagnostics: {} not found, skipping `{}` (install: {})",
                tool.name(),
                step.cmd,
                tool.install_hint()
            );
            continue;
        }
        capture(runner, &step).await;
    }
    if have(Tool::Kubectl) {
        for namespace in target.namespaces() {
            let list = Capture {
                tool: Tool::Kubectl,
                cmd: target.pod_list(namespace),
                file: dir.join(format!("pods-{namespace}.json")),
                with_stderr: false,
            };
            let pods = capture(runner, &list)
                .await
                .and_then(|text| serde_json::from_str::<Value>(&text).ok());
            let Some(pods) = pods else {
                if runner.is_dry_run() {
                    runner.step(format!(
                        "for each container of each pod in {namespace}: kubectl logs (and --previous if it restarted)"
                    ));
                }
                continue;
            };
            for step in target.log_captures(namespace, &pods, dir) {
                capture(runner, &step).await;
            }
            if namespace == ISTIO_NAMESPACE && have(Tool::Istioctl) {
                let gateway = pods["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| {
                        p.pointer("/metadata/labels/istio").and_then(Value::as_str)
                            == GATEWAY_SELECTOR.split_once('=').map(|(_, v)| v)
                    })
                    .and_then(|p| p.pointer("/metadata/name").and_then(Value::as_str));
                if let Some(gateway) = gateway {
                    capture(runner, &target.gateway_config_dump(gateway, dir)).await;
                }
            }
        }
    }
    if runner.is_dry_run() {
        runner.step(format!(
            "istioctl proxy-config all <gateway pod> -n {ISTIO_NAMESPACE} -o json > \
             gateway-config-dump.json"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::preflight::ToolSearch;

    fn target() -> DiagnoseTarget {
        DiagnoseTarget {
            tools: Tools::resolve(&ToolSearch::with_path(""), "1.31.1"),
            kube: KubeTarget {
                kubeconfig: None,
                context: "kind-c".into(),
            },
            kind_cluster: Some("c".into()),
            app_namespace: "wty-istio".into(),
        }
    }

    #[test]
    fn logs_include_sidecars_and_previous_only_after_a_restart() {
        let pods = serde_json::json!({"items": [{
            "metadata": {"name": "wtyfft-deploy-1"},
            "status": {
                "containerStatuses": [{"name": "wtyfft-container-name", "restartCount": 2}],
                "initContainerStatuses": [
                    {"name": "istio-init", "restartCount": 0},
                    {"name": "istio-proxy", "restartCount": 0}
                ]
            }
        }]});
        let steps = target().log_captures("wty-istio", &pods, Path::new("/a"));
        let commands: Vec<String> = steps.iter().map(|s| s.cmd.to_string()).collect();
        assert_eq!(
            commands,
            [
                "kubectl --context kind-c logs -n wty-istio wtyfft-deploy-1 -c wtyfft-container-name",
                "kubectl --context kind-c logs -n wty-istio wtyfft-deploy-1 -c wtyfft-container-name --previous",
                "kubectl --context kind-c logs -n wty-istio wtyfft-deploy-1 -c istio-init",
                "kubectl --context kind-c logs -n wty-istio wtyfft-deploy-1 -c istio-proxy",
            ]
        );
        assert_eq!(
            steps[1].file,
            Path::new("/a/logs-wty-istio-wtyfft-deploy-1-wtyfft-container-name-previous.txt")
        );
    }

    #[test]
    fn fixed_steps_cover_events_describe_analyze_and_proxy_status() {
        let shown: Vec<String> = target()
            .fixed_captures(Path::new("/a"))
            .iter()
            .map(|s| s.cmd.to_string())
            .collect();
        let joined = shown.join("\n");
        for expected in [
            "get events -A",
            "describe pods,deployments,services -n wty-istio",
            "describe pods,deployments,services -n istio-system",
            "istioctl --context kind-c analyze -A",
            "istioctl --context kind-c proxy-status",
        ] {
            assert!(
                joined.contains(expected),
                "{expected} missing from\n{joined}"
            );
        }
    }
}
