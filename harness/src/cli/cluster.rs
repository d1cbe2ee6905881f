//! `harness up|down|status|dump --target kind|existing`: the cluster targets at a terminal.
//! `up` leaves the environment running and prints how to reach it; `down` deletes exactly what
//! `up` created.

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;

use crate::config::knobs::Knobs;
use crate::config::names::{INGRESS_GATEWAY, ISTIO_NAMESPACE, ISTIOD};
use crate::env::Environment;
use crate::env::cluster::{
    Backend, ClusterChoice, ExistingEnvironment, KindEnvironment, Mode, Settings, app_info,
};
use crate::env::timings::Timings;
use crate::exec::cleanup;
use crate::exec::cmd::Runner;
use crate::exec::wait::Attempt;
use crate::k8s::client;
use crate::k8s::diagnose::{self, DiagnoseTarget};
use crate::k8s::gateway;
use crate::k8s::rollout;
use crate::manifest;
use crate::tools::istioctl::KubeTarget;
use crate::tools::kind::{self, CLI_CLUSTER_NAME, ClusterHandle};

/// `harness up|down|status|dump --target kind|existing`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CliCommand {
    Up,
    Down,
    Status,
    Dump,
}

/// `--target kind|existing [--dry-run]`, shared by `harness up|down|status|dump`.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct ClusterArgs {
    /// The cluster target: an ephemeral kind cluster, or the current kube context.
    #[arg(long, value_enum)]
    pub target: Mode,
    /// Print every step and command in order; run only read-only queries (tool versions,
    /// `kind get clusters`); create, delete, build and write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// The `harness` binary's entry for `up|down|status|dump`: runs the command in its own runtime
/// and prints the error chain on failure.
pub(crate) fn cli_main(command: CliCommand, args: &ClusterArgs) -> std::process::ExitCode {
    crate::cli::block_on(cli(command, args.target, args.dry_run))
}

/// Runs one CLI command against a cluster target; the `harness` binary calls this.
pub(crate) async fn cli(command: CliCommand, mode: Mode, dry_run: bool) -> Result<()> {
    let knobs = Knobs::from_env()?;
    let runner = if dry_run {
        Runner::dry_run()
    } else {
        Runner::new()
    };
    let mut settings = Settings::from_knobs(mode, &knobs)?;
    if mode == Mode::Kind && knobs.cluster.is_none() {
        settings.cluster = ClusterChoice::Named(CLI_CLUSTER_NAME.to_string());
    }
    let _guard = cleanup::CleanupGuard;
    if !dry_run {
        cleanup::spawn_signal_cleanup()?;
    }
    match command {
        CliCommand::Up => cli_up(runner, settings).await,
        CliCommand::Down => cli_down(runner, settings).await,
        CliCommand::Status => cli_status(runner, settings).await,
        CliCommand::Dump => cli_dump(runner, settings).await,
    }
}

/// Brings the environment up and leaves it running; prints how to reach it.
pub(crate) async fn cli_up(runner: Runner, settings: Settings) -> Result<()> {
    let backend = crate::env::cluster::backend_for(&runner);
    cli_up_with(runner, settings, backend).await
}

pub async fn cli_up_with(runner: Runner, settings: Settings, backend: &dyn Backend) -> Result<()> {
    let mut times = Timings::default();
    let result = up_and_leave_running(&runner, settings, backend, &mut times).await;
    eprintln!("phases: {}", times.summary());
    result
}

async fn up_and_leave_running(
    runner: &Runner,
    settings: Settings,
    backend: &dyn Backend,
    times: &mut Timings,
) -> Result<()> {
    match settings.mode {
        Mode::Kind => {
            let env = KindEnvironment::up_with(runner.clone(), settings, backend, times).await?;
            println!("up: {}", env.describe());
            println!("ingress: http://{}", env.ingress());
            runner.step(
                "print the article's INGRESS_HOST (gateway pod status.hostIP) and INGRESS_PORT \
                 (http2 nodePort)",
            );
            match env.api().article_endpoint().await {
                Ok((host, port)) => println!("{}", gateway::export_lines(&host, port)),
                Err(_) if runner.is_dry_run() => {}
                Err(err) => eprintln!("warning: the article's endpoint: {err:#}"),
            }
            let handle = env.keep_running();
            if runner.is_dry_run() {
                println!("{}", handle.planned_reach_hint());
            } else {
                println!("{}", handle.reach_hint());
            }
        }
        Mode::Existing => {
            let env =
                ExistingEnvironment::up_with(runner.clone(), settings, backend, times).await?;
            println!("up: {}", env.describe());
            println!("ingress: http://{}", env.ingress());
            println!("(the port-forward ends with this command; the app stays applied)");
            env.keep_running();
        }
    }
    Ok(())
}

/// Deletes what `up` created: the `harness up` cluster (never `E2E_CLUSTER`), or for the
/// existing target what the suite recorded as created.
pub async fn cli_down(runner: Runner, settings: Settings) -> Result<()> {
    match settings.mode {
        Mode::Kind => crate::env::cluster::kind::down(&runner, &settings).await,
        Mode::Existing => {
            let backend = crate::env::cluster::backend_for(&runner);
            crate::env::cluster::existing::down(&runner, &settings, backend).await
        }
    }
}

/// What exists: our kind clusters, and for the `harness up` cluster (or `E2E_CLUSTER`) or the
/// current context, the state of Istio and the app.
pub(crate) async fn cli_status(runner: Runner, settings: Settings) -> Result<()> {
    let context = match settings.mode {
        Mode::Kind => {
            let listed = kind::list_clusters(&runner, &settings.tools).await?;
            let ours: Vec<&String> = listed
                .iter()
                .filter(|c| c.starts_with(kind::CLUSTER_PREFIX) || c.as_str() == CLI_CLUSTER_NAME)
                .collect();
            println!("kind clusters of this suite: {ours:?}");
            let name = match &settings.cluster {
                ClusterChoice::Reuse(n) | ClusterChoice::Named(n) => n.clone(),
                ClusterChoice::Generated => CLI_CLUSTER_NAME.to_string(),
            };
            if !listed.contains(&name) {
                println!(
                    "kind cluster {name}: not running (`harness up --target kind` creates it)"
                );
                return Ok(());
            }
            let handle = ClusterHandle {
                kubeconfig: settings.state.kubeconfig(&name),
                name,
                owned: false,
            };
            let yaml = kind::write_kubeconfig(&runner, &settings.tools, &handle).await?;
            (Some(yaml), handle.context())
        }
        Mode::Existing => (
            None,
            settings
                .existing_context
                .clone()
                .context("no current kube context")?,
        ),
    };
    let (kubeconfig, context) = context;
    runner.step(format!(
        "read Istio and app Deployments in context {context}"
    ));
    if runner.is_dry_run() {
        return Ok(());
    }
    let client = client::live_client(kubeconfig, &context).await?;
    let documents = manifest::load_file(&settings.app_manifest)?;
    let app = app_info(&documents)?;
    let mut watched: Vec<(String, String)> = Vec::new();
    if settings.mode == Mode::Existing {
        // Any install style: istiod by its label, in whatever namespace and revision.
        let all: Api<Deployment> = Api::all(client.clone());
        let params = kube::api::ListParams::default().labels(crate::k8s::mesh::ISTIOD_SELECTOR);
        match all.list(&params).await {
            Ok(list) if list.items.is_empty() => println!(
                "no Deployment labelled {} in any namespace: Istio is not installed here",
                crate::k8s::mesh::ISTIOD_SELECTOR
            ),
            Ok(list) => watched.extend(list.items.iter().map(|d| {
                (
                    d.metadata.namespace.clone().unwrap_or_default(),
                    d.metadata.name.clone().unwrap_or_default(),
                )
            })),
            Err(err) => println!("istiod Deployments: unreadable: {err}"),
        }
    } else {
        watched.push((ISTIO_NAMESPACE.into(), ISTIOD.into()));
        watched.push((ISTIO_NAMESPACE.into(), INGRESS_GATEWAY.into()));
    }
    watched.push((app.namespace.clone(), app.deployment.clone()));
    for (namespace, name) in &watched {
        let (namespace, name) = (namespace.as_str(), name.as_str());
        let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        let state = match api.get_opt(name).await {
            Ok(Some(d)) => match rollout::deployment_available(&d) {
                Attempt::Done(()) => "Available".to_string(),
                Attempt::NotYet(why) => why,
            },
            Ok(None) => "absent".to_string(),
            Err(err) => format!("unreadable: {err}"),
        };
        println!("Deployment {namespace}/{name}: {state}");
    }
    if settings.mode == Mode::Kind {
        match gateway::live_article_endpoint(&client).await {
            Ok((host, port)) => println!("{}", gateway::export_lines(&host, port)),
            Err(err) => println!("the article's endpoint: {err:#}"),
        }
    }
    Ok(())
}

/// Diagnostics of the `harness up` cluster (or `E2E_CLUSTER`) or the current context into
/// `E2E_ARTIFACTS`.
pub async fn cli_dump(runner: Runner, settings: Settings) -> Result<()> {
    let documents = manifest::load_file(&settings.app_manifest)?;
    let app = app_info(&documents)?;
    let (kube, kind_cluster) = match settings.mode {
        Mode::Kind => {
            let name = match &settings.cluster {
                ClusterChoice::Reuse(n) | ClusterChoice::Named(n) => n.clone(),
                ClusterChoice::Generated => CLI_CLUSTER_NAME.to_string(),
            };
            let handle = ClusterHandle {
                kubeconfig: settings.state.kubeconfig(&name),
                name: name.clone(),
                owned: false,
            };
            kind::write_kubeconfig(&runner, &settings.tools, &handle).await?;
            (
                KubeTarget {
                    kubeconfig: Some(handle.kubeconfig.clone()),
                    context: handle.context(),
                },
                Some(name),
            )
        }
        Mode::Existing => (
            KubeTarget {
                kubeconfig: None,
                context: settings
                    .existing_context
                    .clone()
                    .context("no current kube context")?,
            },
            None,
        ),
    };
    let target = DiagnoseTarget {
        tools: settings.tools.clone(),
        kube,
        kind_cluster,
        app_namespace: app.namespace,
    };
    diagnose::collect(&runner, &target, &settings.artifacts).await;
    println!("diagnostics in {}", settings.artifacts.display());
    Ok(())
}
