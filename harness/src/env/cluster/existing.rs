//! The `existing` target: preflight → connect to the current kube context → check that Istio is
//! there → apply the app (recording what was created, so that an interrupted run and `harness
//! down` delete exactly that) and wait for it → port-forward a loopback port to the gateway and
//! probe the route. Teardown deletes only what the suite created.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::{Backend, ClusterApi, Preflight, Running, Settings};
use crate::env::timings::Timings;
use crate::env::{BoxFuture, Environment};
use crate::exec::cleanup::{self, CleanupTicket};
use crate::exec::cmd::Runner;
use crate::k8s::apply::{self, Applied};
use crate::k8s::mesh::MeshQuery;
use crate::tools::istioctl::KubeTarget;
use crate::tools::kind::StateDir;
use crate::tools::preflight::Tool;

/// The current kube context with the app applied, ready for the scenarios.
pub struct ExistingEnvironment {
    running: Running,
    applied: Vec<Applied>,
    abort_cleanup: Option<CleanupTicket>,
    torn_down: bool,
}

/// What exists while the target comes up, for the cleanup of a failed start.
#[derive(Default)]
struct Partial {
    kube: Option<KubeTarget>,
    api: Option<std::sync::Arc<dyn ClusterApi>>,
    app_namespace: Option<String>,
    applied: Vec<Applied>,
    abort_cleanup: Option<CleanupTicket>,
}

impl ExistingEnvironment {
    /// Brings the target up, recording each phase in `times`. On failure, collects diagnostics,
    /// deletes (or keeps, per `E2E_KEEP`) what it created, and returns the first error.
    pub async fn up_with(
        runner: Runner,
        settings: Settings,
        backend: &dyn Backend,
        times: &mut Timings,
    ) -> Result<Self> {
        Self::up_checked(runner, settings, backend, Preflight::Run, times).await
    }

    /// [`Self::up_with`], its preflight already run or not.
    pub(crate) async fn up_checked(
        runner: Runner,
        settings: Settings,
        backend: &dyn Backend,
        preflight: Preflight,
        times: &mut Timings,
    ) -> Result<Self> {
        let mut partial = Partial::default();
        match bring_up(&runner, &settings, backend, preflight, times, &mut partial).await {
            Ok(running) => Ok(ExistingEnvironment {
                running,
                applied: partial.applied,
                abort_cleanup: partial.abort_cleanup,
                torn_down: false,
            }),
            Err(err) => {
                let reached = partial.kube.as_ref().map(|kube| {
                    super::diagnose_target(&settings, kube, None, partial.app_namespace.as_deref())
                });
                let keep = settings.keep.keeps(true);
                let ticket = partial.abort_cleanup.take();
                let undo = delete_created(
                    &runner,
                    &settings,
                    partial.api.as_deref(),
                    partial.kube.as_ref(),
                    std::mem::take(&mut partial.applied),
                    keep,
                );
                super::after_failed_start(&runner, &settings, reached, undo, ticket).await;
                Err(err)
            }
        }
    }

    /// `harness up`: the app stays applied; the interruption cleanup is no longer wanted.
    pub fn keep_running(mut self) {
        if let Some(ticket) = self.abort_cleanup.take() {
            cleanup::unregister(ticket);
        }
        self.torn_down = true;
    }

    async fn teardown_now(&mut self, keep: bool) -> Result<()> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let undo = delete_created(
            &self.running.runner,
            &self.running.settings,
            Some(self.running.api.as_ref()),
            Some(&self.running.kube),
            std::mem::take(&mut self.applied),
            keep,
        );
        super::bounded_teardown(undo, &mut self.abort_cleanup).await
    }
}

async fn bring_up(
    runner: &Runner,
    settings: &Settings,
    backend: &dyn Backend,
    preflight: Preflight,
    times: &mut Timings,
    partial: &mut Partial,
) -> Result<Running> {
    if preflight == Preflight::Run {
        times
            .time("preflight", super::preflight(runner, settings, preflight))
            .await?;
    }
    let image = settings.image.clone().context(
        "E2E_TARGET=existing deploys the image named by E2E_IMAGE (one the cluster can pull, \
         tagged by content, never :latest): set E2E_IMAGE",
    )?;
    let context = settings
        .existing_context
        .clone()
        .context("the existing target needs a kube context")?;
    let kube = KubeTarget {
        kubeconfig: None,
        context,
    };
    partial.kube = Some(kube.clone());
    let api = times
        .time("connect", super::connect(runner, backend, None, &kube))
        .await?;
    partial.api = Some(api.clone());
    let mesh = times
        .time("istio", async {
            let query = mesh_query(settings)?;
            runner.step(format!(
                "find istiod (Deployments labelled {}, any namespace), the sidecar injector that \
                 selects namespace {}, and the ingress gateway's Service ({}{})",
                crate::k8s::mesh::ISTIOD_SELECTOR,
                query.app_namespace,
                settings.mesh.gateway_selector,
                settings
                    .mesh
                    .gateway_namespace
                    .as_deref()
                    .map(|n| format!(" in {n}"))
                    .unwrap_or_default()
            ));
            let mesh = api
                .discover_mesh(query, settings.timeouts.control_plane)
                .await?;
            if !runner.is_dry_run() {
                eprintln!(
                    "istiod: {}; gateway: Service {}/{} → pods {} port {}",
                    mesh.istiod.join(", "),
                    mesh.gateway.namespace,
                    mesh.gateway.service,
                    mesh.gateway.pod_selector,
                    mesh.gateway.describe_port()
                );
            }
            anyhow::Ok(mesh)
        })
        .await?;
    let app = times
        .time("deploy", async {
            let (app, mut prepared) = super::prepare_app(runner, settings, &image)?;
            for change in apply::fit_to_mesh(
                &mut prepared,
                &app.namespace,
                &mesh.namespace_labels,
                &settings.mesh.selector_labels()?,
            ) {
                runner.step(change);
            }
            partial.app_namespace = Some(app.namespace.clone());
            // What this run creates or relabels, shared with the interruption cleanup, which is
            // registered before the first object is applied: a Ctrl-C or a failure halfway
            // through an apply still undoes what was done so far.
            refuse_foreign_objects(api.as_ref(), settings, &kube, &prepared).await?;
            let progress = std::sync::Arc::new(ApplyProgress::default());
            let record =
                (!runner.is_dry_run()).then(|| applied_record(&settings.state, &kube.context));
            if let Some(record) = &record {
                merge_record(record, &[])?;
                partial.abort_cleanup =
                    register_interruption_cleanup(settings, &kube, record, &progress);
            }
            for document in prepared {
                let what = document_name(&document);
                // Again just before the apply: an object made since the check above is not
                // overwritten either (the window left is the apply's own read and write).
                refuse_foreign_objects(
                    api.as_ref(),
                    settings,
                    &kube,
                    std::slice::from_ref(&document),
                )
                .await?;
                progress.start(&what)?;
                // A panic inside the apply still ends it for the cleanup, which would otherwise
                // wait its whole bound for an apply that will never finish.
                let in_flight = InFlight(&progress);
                let applied = super::apply_app(api.as_ref(), vec![document]).await;
                std::mem::forget(in_flight);
                let recorded = match (&applied, &record) {
                    (Ok(applied), Some(record)) => merge_record(record, applied),
                    _ => Ok(()),
                };
                progress.finish(applied.as_deref().unwrap_or_default());
                let applied = applied.with_context(|| format!("applying {what}"))?;
                // Known to the failed start's undo even if the record could not be written.
                partial.applied.extend(applied);
                recorded?;
            }
            super::wait_for_app(runner, settings, api.as_ref(), &app).await?;
            anyhow::Ok(app)
        })
        .await?;
    let ingress = times
        .time("ingress", async {
            runner.step(format!(
                "port-forward a loopback port to port {} of a Ready pod of Service {}/{}",
                mesh.gateway.describe_port(),
                mesh.gateway.namespace,
                mesh.gateway.service
            ));
            let address = api.forward_gateway(mesh.gateway.clone()).await?;
            super::probe_route(runner, settings, api.as_ref(), address).await?;
            anyhow::Ok(address)
        })
        .await?;
    Ok(Running {
        runner: runner.clone(),
        settings: settings.clone(),
        kube,
        api,
        app,
        image,
        ingress,
    })
}

/// What the app needs of the mesh, from its manifests: its namespace's labels and its pods'.
fn mesh_query(settings: &Settings) -> Result<MeshQuery> {
    let documents = crate::manifest::load_file(&settings.app_manifest)?;
    let app = super::app_info(&documents)?;
    let labels_at = |kind: &str, name: &str, pointer: &str| {
        documents
            .iter()
            .find(|d| d.raw["kind"] == kind && d.name() == name)
            .and_then(|d| d.raw.pointer(pointer).cloned())
            .map(serde_json::from_value)
            .transpose()
            .with_context(|| format!("{kind} {name}: {pointer} is not a map of strings"))
            .map(Option::unwrap_or_default)
    };
    // The app's Gateway server port (its first server's; 80 in the tutorial).
    let gateway_port = documents
        .iter()
        .find_map(|d| match &d.resource {
            crate::manifest::Resource::Gateway(g) => g.spec.servers.first().map(|s| s.port.number),
            _ => None,
        })
        .context("the app's manifests define no Gateway server")?;
    Ok(MeshQuery {
        gateway_port,
        namespace_labels: labels_at("Namespace", &app.namespace, "/metadata/labels")?,
        pod_labels: labels_at(
            "Deployment",
            &app.deployment,
            "/spec/template/metadata/labels",
        )?,
        app_namespace: app.namespace,
        knobs: settings.mesh.clone(),
    })
}

/// `Kind namespace/name` of a prepared document, for an error message.
fn document_name(document: &serde_json::Value) -> String {
    let field = |pointer: &str| {
        document
            .pointer(pointer)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    match document
        .pointer("/metadata/namespace")
        .and_then(serde_json::Value::as_str)
    {
        Some(namespace) => format!("{} {namespace}/{}", field("/kind"), field("/metadata/name")),
        None => format!("{} {}", field("/kind"), field("/metadata/name")),
    }
}

/// Refuses to apply over objects the suite did not make: a same-named Service, Deployment,
/// Gateway or VirtualService that someone else created (the tutorial applied by hand, say)
/// would be overwritten by the forced server-side apply and restarted by the scenarios. Objects
/// the record lists as the suite's (a `harness up` before this run) are fine, and so is an
/// existing Namespace: the suite only labels it, and puts the labels back.
async fn refuse_foreign_objects(
    api: &dyn ClusterApi,
    settings: &Settings,
    kube: &KubeTarget,
    prepared: &[serde_json::Value],
) -> Result<()> {
    let uids = api.present_uids(prepared.to_vec()).await?;
    let record = read_record(&applied_record(&settings.state, &kube.context))?;
    let foreign: Vec<String> = prepared
        .iter()
        .zip(uids)
        .filter(|(document, _)| document["kind"] != "Namespace")
        .filter_map(|(document, uid)| {
            let uid = uid?;
            let ours = record.iter().any(|known| {
                known.created
                    && known.kind == document["kind"].as_str().unwrap_or_default()
                    && known.name == document["metadata"]["name"].as_str().unwrap_or_default()
                    && known.namespace.as_deref() == document["metadata"]["namespace"].as_str()
                    && known.uid.as_ref().is_none_or(|k| *k == uid)
            });
            (!ours).then(|| document_name(document))
        })
        .collect();
    if !foreign.is_empty() {
        anyhow::bail!(
            "these objects exist already and the suite did not create them: {}. Applying the \
             app would overwrite them (and the resilience scenarios restart its pods), so \
             nothing was changed. Delete them (`kubectl delete -f {}`) if they are a copy of the \
             tutorial, or run the suite against another cluster",
            foreign.join(", "),
            settings.app_manifest.display()
        );
    }
    Ok(())
}

/// What the apply loop has done, shared with the interruption cleanup: the objects this run
/// created or relabelled, and the one being applied. A signal's cleanup runs on another thread
/// while the apply goes on; it marks the run cancelled, waits (bounded) for the apply in flight
/// to finish and be recorded, and only then reads what to undo, so that an object whose apply
/// was under way when Ctrl-C came is undone too.
#[derive(Default)]
struct ApplyProgress {
    state: std::sync::Mutex<ProgressState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct ProgressState {
    ours: Vec<Applied>,
    /// `Kind namespace/name` of the object being applied.
    in_flight: Option<String>,
    cancelled: bool,
}

/// Ends the apply in flight with nothing applied when dropped (a panic unwinding through it).
struct InFlight<'a>(&'a ApplyProgress);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.finish(&[]);
    }
}

/// How long the cleanup waits for an apply in flight (a server-side apply is one request).
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(30);

impl ApplyProgress {
    fn lock(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next object is about to be applied; refused once an interruption is cleaning up.
    fn start(&self, what: &str) -> Result<()> {
        let mut state = self.lock();
        if state.cancelled {
            anyhow::bail!("interrupted before applying {what}: its cleanup is running");
        }
        state.in_flight = Some(what.to_string());
        Ok(())
    }

    /// The object's apply ended (`applied` is empty when it failed).
    fn finish(&self, applied: &[Applied]) {
        let mut state = self.lock();
        state
            .ours
            .extend(applied.iter().filter(|a| a.is_ours()).cloned());
        state.in_flight = None;
        self.changed.notify_all();
    }

    /// For the cleanup: stops further applies, waits for the one in flight, and returns what to
    /// undo, with the name of an apply that did not finish in time.
    fn cancel(&self) -> (Vec<Applied>, Option<String>) {
        let mut state = self.lock();
        state.cancelled = true;
        let (mut state, _) = self
            .changed
            .wait_timeout_while(state, IN_FLIGHT_WAIT, |s| s.in_flight.is_some())
            .unwrap_or_else(|p| p.into_inner());
        (state.ours.clone(), state.in_flight.take())
    }
}

/// The cleanup an interruption runs: deletes, newest first, what this run has created so far
/// (see [`ApplyProgress`]), forgets from the record what it deleted, and says what is left.
/// Nothing is registered when `E2E_KEEP` keeps a failed run's objects.
fn register_interruption_cleanup(
    settings: &Settings,
    kube: &KubeTarget,
    record: &Path,
    progress: &std::sync::Arc<ApplyProgress>,
) -> Option<CleanupTicket> {
    if settings.keep.keeps(true) {
        return None;
    }
    let kubectl = settings.tools.cmd(Tool::Kubectl);
    let have_kubectl = settings.tools.path_of(Tool::Kubectl).is_some();
    let kube = kube.clone();
    let progress = std::sync::Arc::clone(progress);
    let record = record.to_path_buf();
    Some(cleanup::register(
        "delete what the suite applied",
        move || {
            let (created, unfinished) = progress.cancel();
            if let Some(what) = unfinished {
                eprintln!(
                    "warning: the apply of {what} had not finished after {IN_FLIGHT_WAIT:?}; \
                     if it exists now, the suite made it: delete it yourself"
                );
            }
            let mut undone = Vec::new();
            for object in created.iter().rev() {
                let delete = kubectl
                    .clone()
                    .args(kube.flags())
                    .args(kubectl_undo_args(object));
                if !have_kubectl {
                    eprintln!("kubectl not found; delete it yourself: {delete}");
                    continue;
                }
                match cleanup::run_blocking(&delete, Duration::from_secs(60)) {
                    Ok(_) => undone.push(object.clone()),
                    Err(err) => eprintln!("warning: {err:#}"),
                }
            }
            if let Err(err) = forget_deleted(&record, &undone) {
                eprintln!("warning: {err:#}");
            }
            if read_record(&record).is_ok_and(|left| left.iter().any(Applied::is_ours)) {
                eprintln!(
                    "what the suite made and did not delete is listed in {}; \
                     `harness down --target existing` deletes it",
                    record.display()
                );
            }
        },
    ))
}

/// The same object, whatever the apply found.
fn same_object(a: &Applied, b: &Applied) -> bool {
    (&a.api_version, &a.kind, &a.namespace, &a.name)
        == (&b.api_version, &b.kind, &b.namespace, &b.name)
}

fn read_record(file: &Path) -> Result<Vec<Applied>> {
    match std::fs::read(file) {
        Ok(text) => serde_json::from_slice(&text)
            .with_context(|| format!("reading {} (delete it if it is damaged)", file.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(err).with_context(|| format!("reading {}", file.display())),
    }
}

fn write_record(file: &Path, record: &[Applied]) -> Result<()> {
    let partial = file.with_extension("json.partial");
    std::fs::write(&partial, serde_json::to_vec_pretty(record)?)
        .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, file).with_context(|| format!("renaming into {}", file.display()))
}

/// Adds `applied` to the record of what the suite has applied in a context. An object the suite
/// created stays recorded as created when a later run finds it present (it is still ours, and
/// `harness down` deletes it); an object recorded earlier stays in the record.
fn merge_record(file: &Path, applied: &[Applied]) -> Result<()> {
    update_record(file, |record| {
        for object in applied {
            match record.iter_mut().find(|known| same_object(known, object)) {
                // Another object now has the name (the one recorded was deleted and someone made
                // this one): what the record said of the old one no longer holds.
                Some(known)
                    if known.uid.is_some() && object.uid.is_some() && known.uid != object.uid =>
                {
                    *known = object.clone();
                }
                Some(known) => {
                    known.created |= object.created;
                    if object.uid.is_some() {
                        known.uid = object.uid.clone();
                    }
                    // The value first seen is the one the object had before the suite.
                    for (key, before) in &object.restore_labels {
                        known
                            .restore_labels
                            .entry(key.clone())
                            .or_insert_with(|| before.clone());
                    }
                }
                None => record.push(object.clone()),
            }
        }
        false
    })
}

/// Takes `deleted` (deleted, or relabelled back) out of the record; the record goes once nothing
/// it lists is the suite's.
fn forget_deleted(file: &Path, deleted: &[Applied]) -> Result<()> {
    update_record(file, |record| {
        record.retain(|known| !deleted.iter().any(|d| same_object(known, d)));
        !record.iter().any(Applied::is_ours)
    })
}

/// Reads, changes and writes the record under a lock (a run, its interruption cleanup and a
/// `harness down` may update it at once), writing to a temporary file renamed into place so
/// that a reader never sees half a record. `change` says whether the record is to go.
fn update_record(file: &Path, change: impl FnOnce(&mut Vec<Applied>) -> bool) -> Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock = crate::exec::file_lock::FileLock::acquire(&file.with_extension("lock"))?;
    let mut record = read_record(file)?;
    if !change(&mut record) {
        write_record(file, &record)
    } else {
        match std::fs::remove_file(file) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(err).with_context(|| format!("removing {}", file.display()))
            }
            _ => Ok(()),
        }
    }
}

/// Deletes what the suite created (newest first), unless `keep`; then takes those objects out of
/// the record (what an earlier run created stays recorded for `harness down`).
async fn delete_created(
    runner: &Runner,
    settings: &Settings,
    api: Option<&dyn ClusterApi>,
    kube: Option<&KubeTarget>,
    applied: Vec<Applied>,
    keep: bool,
) -> Result<()> {
    if keep {
        if !applied.is_empty() {
            let context = kube.map(|t| t.context.as_str()).unwrap_or("?");
            eprintln!(
                "kept what the suite applied in context {context}; remove it with: \
                 harness down --target existing"
            );
        }
        return Ok(());
    }
    let created: Vec<Applied> = applied.into_iter().filter(Applied::is_ours).collect();
    for object in created.iter().rev() {
        if object.created {
            runner.step(format!("delete {}", object.describe()));
        } else {
            runner.step(format!(
                "put back the labels the suite changed on {} ({})",
                object.describe(),
                describe_restore(object)
            ));
        }
    }
    if let Some(api) = api {
        api.delete_created(created.clone()).await?;
    }
    if let Some(kube) = kube
        && !runner.is_dry_run()
    {
        let record = applied_record(&settings.state, &kube.context);
        forget_deleted(&record, &created)?;
        // Objects a `harness up`, or a run that was killed, made: kept, and said.
        let left: Vec<String> = read_record(&record)?
            .iter()
            .filter(|a| a.is_ours())
            .map(Applied::describe)
            .collect();
        if !left.is_empty() {
            eprintln!(
                "the record {} still lists what an earlier `harness up` or an interrupted run \
                 made: {}; `harness down --target existing` deletes it",
                record.display(),
                left.join(", ")
            );
        }
    }
    Ok(())
}

/// `harness down --target existing`: deletes exactly what the suite recorded as created in the
/// current context (and puts back the labels it changed), then forgets the record.
pub async fn down(runner: &Runner, settings: &Settings, backend: &dyn Backend) -> Result<()> {
    let context = settings
        .existing_context
        .clone()
        .context("no current kube context")?;
    let file = applied_record(&settings.state, &context);
    let applied = read_record(&file)?;
    if !applied.iter().any(Applied::is_ours) {
        println!(
            "nothing recorded as created by the suite in context {context}: nothing to delete"
        );
        return Ok(());
    }
    let kube = KubeTarget {
        kubeconfig: None,
        context,
    };
    let api = if runner.is_dry_run() {
        None
    } else {
        Some(super::connect(runner, backend, None, &kube).await?)
    };
    delete_created(
        runner,
        settings,
        api.as_deref(),
        Some(&kube),
        applied,
        false,
    )
    .await
}

/// `key=before` for each label to put back, `key-` for one to remove.
fn describe_restore(object: &Applied) -> String {
    object
        .restore_labels
        .iter()
        .map(|(key, before)| match before {
            Some(value) => format!("{key}={value}"),
            None => format!("{key}-"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The kubectl arguments that undo what the suite did to one object: `delete` what it created
/// (`Deployment.v1.apps/name -n ns`), `label --overwrite` back what it only relabelled.
pub(crate) fn kubectl_undo_args(object: &Applied) -> Vec<String> {
    let resource = match object.api_version.rsplit_once('/') {
        Some((group, version)) => format!("{}.{version}.{group}/{}", object.kind, object.name),
        None => format!("{}/{}", object.kind, object.name),
    };
    let mut args = if object.created {
        vec!["delete".to_string(), resource]
    } else {
        let mut args = vec!["label".to_string(), resource, "--overwrite".to_string()];
        args.extend(describe_restore(object).split(' ').map(str::to_string));
        args
    };
    if let Some(ns) = &object.namespace {
        args.extend(["-n".to_string(), ns.clone()]);
    }
    if object.created {
        args.extend(["--ignore-not-found".to_string(), "--wait=false".to_string()]);
    }
    args
}

/// The record of what the suite applied to one cluster: `existing-<context>-<id>.applied.json`
/// in the state folder, `<id>` a digest of the context's name and API server URL, so that two
/// kubeconfigs with a context of the same name (`kind-kind`, `minikube`) keep separate records.
/// A record written under the older name (the context alone) is moved to the new one.
pub(crate) fn applied_record(state: &StateDir, context: &str) -> PathBuf {
    use sha2::Digest;
    let safe: String = context
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let server = cluster_server(context).unwrap_or_default();
    let digest = sha2::Sha256::digest(format!("{context}\n{server}").as_bytes());
    let id: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let file = state.dir.join(format!("existing-{safe}-{id}.applied.json"));
    let legacy = state.dir.join(format!("existing-{safe}.applied.json"));
    if legacy.exists() && !file.exists() {
        match std::fs::rename(&legacy, &file) {
            Ok(()) => eprintln!("moved {} to {}", legacy.display(), file.display()),
            Err(err) => eprintln!("warning: moving {}: {err}", legacy.display()),
        }
    }
    file
}

/// The API server URL of `context` in the default kubeconfig, if it says.
fn cluster_server(context: &str) -> Option<String> {
    let kubeconfig = kube::config::Kubeconfig::read().ok()?;
    let cluster = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context)?
        .context
        .as_ref()?
        .cluster
        .clone();
    kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == cluster)?
        .cluster
        .as_ref()?
        .server
        .clone()
}

impl Environment for ExistingEnvironment {
    fn describe(&self) -> String {
        format!(
            "existing: context {}, image {}",
            self.running.kube.context, self.running.image
        )
    }

    super::environment_from_running!();

    fn collect_diagnostics<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, ()> {
        let target = super::diagnose_target(
            &self.running.settings,
            &self.running.kube,
            None,
            Some(&self.running.app.namespace),
        );
        Box::pin(super::collect(&self.running.runner, Some(target), dir))
    }

    fn teardown(&mut self, keep: bool) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.teardown_now(keep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: &str, created: bool) -> Applied {
        Applied {
            api_version: "v1".into(),
            kind: kind.into(),
            name: "x".into(),
            namespace: Some("wty-istio".into()),
            created,
            restore_labels: Default::default(),
            uid: None,
        }
    }

    /// Contexts whose names differ only where the file name cannot show it keep separate
    /// records, and a record under the older name (the context alone) is taken over.
    #[test]
    fn each_context_has_its_own_record_and_an_older_one_is_moved() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let dotted = applied_record(&state, "a.b");
        let underscored = applied_record(&state, "a_b");
        assert_ne!(dotted, underscored);
        let legacy = dir.path().join("existing-kind-kind.applied.json");
        std::fs::write(&legacy, "[]").unwrap();
        let file = applied_record(&state, "kind-kind");
        assert!(file.exists() && !legacy.exists(), "{}", file.display());
        assert_eq!(applied_record(&state, "kind-kind"), file);
    }

    /// A Ctrl-C while an object is being applied: the cleanup waits for that apply and undoes
    /// its object too, and no apply starts after it. (Before, the cleanup copied the list when
    /// it started and missed the object in flight.)
    #[test]
    fn the_cleanup_waits_for_the_apply_in_flight() {
        let progress = std::sync::Arc::new(ApplyProgress::default());
        progress.start("Namespace wty-istio").unwrap();
        let canceller = {
            let progress = std::sync::Arc::clone(&progress);
            std::thread::spawn(move || progress.cancel())
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !progress.lock().cancelled {
            assert!(
                std::time::Instant::now() < deadline,
                "the cleanup never started"
            );
            std::thread::yield_now();
        }
        assert!(
            !canceller.is_finished(),
            "the cleanup must wait for the apply in flight"
        );
        progress.finish(&[object("Namespace", true)]);
        let (undo, unfinished) = canceller.join().unwrap();
        assert_eq!(undo, [object("Namespace", true)]);
        assert_eq!(unfinished, None);
        let refused = progress.start("Service wty-istio/wtyfft-svc").unwrap_err();
        assert!(refused.to_string().contains("interrupted"), "{refused}");
    }

    /// `harness up` creates everything; a test run then finds it all present and creates
    /// nothing. The record must still say the objects are the suite's, for `harness down`.
    #[test]
    fn a_later_run_that_finds_our_objects_keeps_them_recorded_as_ours() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("existing-ctx.applied.json");
        merge_record(&file, &[object("Namespace", true), object("Service", true)]).unwrap();
        merge_record(
            &file,
            &[object("Namespace", false), object("Service", false)],
        )
        .unwrap();
        let record = read_record(&file).unwrap();
        assert!(record.iter().all(|a| a.created), "{record:?}");
        // The test run's teardown deletes what it created (nothing): the record stays.
        forget_deleted(&file, &[]).unwrap();
        assert_eq!(read_record(&file).unwrap().len(), 2);
        // `harness down` deletes both: the record goes.
        forget_deleted(&file, &record).unwrap();
        assert!(!file.exists());
    }

    /// The record grows object by object, so a failure after the second object still lists both.
    #[test]
    fn the_record_grows_with_each_object_and_keeps_what_others_created() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("record.json");
        merge_record(&file, &[]).unwrap();
        assert_eq!(read_record(&file).unwrap(), Vec::<Applied>::new());
        merge_record(&file, &[object("Namespace", false)]).unwrap();
        merge_record(&file, &[object("Service", true)]).unwrap();
        let record = read_record(&file).unwrap();
        assert_eq!(record.len(), 2);
        // Deleting the one we created leaves only an object we did not create: nothing of ours
        // is left, so the record goes.
        forget_deleted(&file, &[object("Service", true)]).unwrap();
        assert!(!file.exists());
    }

    /// A namespace that existed and was only labelled stays recorded until its label is put
    /// back, and the label's value from before the first run is the one kept.
    #[test]
    fn a_relabelled_namespace_stays_recorded_with_its_first_value() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("record.json");
        let mut labelled = object("Namespace", false);
        labelled.restore_labels = [("istio.io/rev".to_string(), None)].into();
        merge_record(&file, &[labelled.clone()]).unwrap();
        let mut again = object("Namespace", false);
        again.restore_labels = [("istio.io/rev".to_string(), Some("canary".to_string()))].into();
        merge_record(&file, &[again, object("Service", false)]).unwrap();
        let record = read_record(&file).unwrap();
        assert_eq!(record[0].restore_labels, labelled.restore_labels);
        forget_deleted(&file, &[]).unwrap();
        assert!(file.exists(), "the label is still to be put back");
        forget_deleted(&file, &[labelled]).unwrap();
        assert!(!file.exists());
    }

    #[test]
    fn a_damaged_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("record.json");
        std::fs::write(&file, "not json").unwrap();
        let err = merge_record(&file, &[]).unwrap_err();
        assert!(format!("{err:#}").contains("record.json"), "{err:#}");
    }

    #[test]
    fn kubectl_delete_names_group_and_version() {
        let object = Applied {
            api_version: "networking.istio.io/v1alpha3".into(),
            kind: "VirtualService".into(),
            name: "wtyfft-vs".into(),
            namespace: Some("wty-istio".into()),
            created: true,
            restore_labels: Default::default(),
            uid: None,
        };
        assert_eq!(
            kubectl_undo_args(&object).join(" "),
            "delete VirtualService.v1alpha3.networking.istio.io/wtyfft-vs -n wty-istio \
             --ignore-not-found --wait=false"
        );
        let relabelled = Applied {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            name: "team-ns".into(),
            namespace: None,
            created: false,
            restore_labels: [
                ("istio.io/rev".to_string(), None),
                ("team".to_string(), Some("a".to_string())),
            ]
            .into(),
            uid: None,
        };
        assert_eq!(
            kubectl_undo_args(&relabelled).join(" "),
            "label Namespace/team-ns --overwrite istio.io/rev- team=a"
        );
    }
}
