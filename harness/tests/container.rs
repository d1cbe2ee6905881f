//! The service image under the Deployment's real limits, on this machine's Docker Engine.
//!
//! The image is built once (static binary, `service/Dockerfile`, content tag), then each check
//! runs its own container with the CPU and memory limits, user and read-only root filesystem of
//! `manifests/app.yaml`. Without a Docker daemon every check is reported as ignored with the
//! reason; with `E2E_REQUIRE=1` they fail instead. Any other preparation error fails them.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use harness::config::knobs::Knobs;
use harness::config::paths;
use harness::exec::cmd::{Cmd, Runner};
use harness::exec::wait::Retry;
use harness::tools::image::container_spec::{self, ContainerSpec};
use harness::tools::image::{self, BuiltImage};
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// What the image budget allows (the binary is static; `scratch` adds nothing).
const MAX_IMAGE_BYTES: i64 = 10 * 1000 * 1000;
/// The largest request the service accepts by default (`--max-samples`).
const MAX_SAMPLES: u32 = 1_048_576;
/// The service's default `--shutdown-grace`.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Everything a check needs, prepared once.
struct Fixture {
    image: BuiltImage,
    spec: ContainerSpec,
}

type Check = fn(&Fixture) -> Result<()>;

const CHECKS: [(&str, Check); 5] = [
    ("image::is_under_10_mb", image_is_under_10_mb),
    (
        "container::endpoints_behave_as_outside_a_container",
        endpoints_behave_as_outside_a_container,
    ),
    (
        "container::runs_as_numeric_non_root_on_read_only_root",
        runs_as_numeric_non_root_on_read_only_root,
    ),
    (
        "container::sigterm_lets_in_flight_requests_finish_and_exits_0",
        sigterm_lets_in_flight_requests_finish_and_exits_0,
    ),
    (
        "container::max_size_burst_stays_under_the_memory_limit",
        max_size_burst_stays_under_the_memory_limit,
    ),
];

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let knobs = match Knobs::from_env() {
        Ok(knobs) => knobs,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    // Building the image takes a release build: skip it when a filter selects no check.
    let selected = CHECKS.iter().any(|(name, _)| {
        let probe = Trial::test(*name, || Ok(()));
        !args.is_filtered_out(&probe)
    });
    let fixture = if selected && !args.list {
        prepare().map(Arc::new)
    } else {
        Err(Unprepared::NoDocker("no check selected".to_string()))
    };
    let trials = CHECKS
        .iter()
        .map(|&(name, check)| {
            let fixture = fixture.clone();
            let require = knobs.require;
            Trial::ignorable_test(name, move || match fixture {
                Ok(fixture) => check(&fixture)
                    .map(|()| Completion::Completed)
                    .map_err(|err| Failed::from(format!("{err:?}"))),
                Err(Unprepared::NoDocker(reason)) if require => Err(Failed::from(format!(
                    "E2E_REQUIRE=1 and there is no Docker daemon: {reason}"
                ))),
                Err(Unprepared::NoDocker(reason)) => Ok(Completion::ignored_with(reason)),
                Err(Unprepared::Broken(reason)) => Err(Failed::from(format!(
                    "the image could not be prepared: {reason}"
                ))),
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

/// Why the checks cannot run. Only a missing Docker daemon is a reason to skip: a failed build
/// or an unreadable manifest is a failure of every check.
#[derive(Clone, Debug)]
enum Unprepared {
    NoDocker(String),
    Broken(String),
}

/// One line, so that each check's status line stays one line.
fn one_line(err: &anyhow::Error) -> String {
    format!("{err:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks Docker, reads the Deployment, builds the image.
fn prepare() -> Result<Fixture, Unprepared> {
    runtime().block_on(async {
        let runner = Runner::new();
        runner
            .query(
                &Cmd::new("docker")
                    .args(["info", "--format", "{{.ServerVersion}}"])
                    .timeout(Duration::from_secs(20)),
            )
            .await
            .context("no Docker daemon is reachable (is Docker running?)")
            .map_err(|err| Unprepared::NoDocker(one_line(&err)))?;
        let built = async {
            let spec = container_spec::from_manifest(&paths::manifests_dir().join("app.yaml"))?;
            let image = image::build_image(&runner).await?;
            eprintln!("container checks use {} with {spec:?}", image.reference);
            anyhow::Ok(Fixture { image, spec })
        };
        built
            .await
            .map_err(|err| Unprepared::Broken(one_line(&err)))
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building a tokio runtime")
}

/// A running container of the image with the Deployment's settings, and its loopback address.
struct Running {
    container: ContainerAsync<GenericImage>,
    base_url: String,
}

async fn start(fixture: &Fixture) -> Result<Running> {
    let spec = &fixture.spec;
    let (cpu, memory) = (spec.cpu_limit_nanos, spec.memory_limit_bytes);
    let container = GenericImage::new(harness::config::names::IMAGE_REPOSITORY, &fixture.image.tag)
        .with_exposed_port(spec.container_port.tcp())
        .with_wait_for(WaitFor::message_on_stdout("listening on"))
        .with_user(spec.run_as_user.to_string())
        .with_readonly_rootfs(spec.read_only_root_filesystem)
        .with_cap_drop("ALL")
        .with_security_opt("no-new-privileges")
        .with_host_config_modifier(move |host| {
            host.nano_cpus = Some(cpu);
            host.memory = Some(memory);
            // No swap: the cluster has none, and swap would hide an out-of-memory kill.
            host.memory_swap = Some(memory);
        })
        .with_startup_timeout(Duration::from_secs(30))
        .start()
        .await
        .with_context(|| format!("starting a container of {}", fixture.image.reference))?;
    let port = container
        .get_host_port_ipv4(spec.container_port.tcp())
        .await
        .context("reading the container's mapped port")?;
    Ok(Running {
        container,
        base_url: format!("http://127.0.0.1:{port}"),
    })
}

async fn docker_inspect(container: &ContainerAsync<GenericImage>, format: &str) -> Result<String> {
    let output = Runner::new()
        .query(&Cmd::new("docker").args(["inspect", "--format", format, container.id()]))
        .await?;
    Ok(output.stdout.trim().to_string())
}

fn client() -> reqwest::Client {
    // Only loopback is spoken to: an HTTP(S)_PROXY of the environment must not take it.
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("building an HTTP client")
}

fn image_is_under_10_mb(fixture: &Fixture) -> Result<()> {
    runtime().block_on(async {
        let size = Runner::new()
            .query(&Cmd::new("docker").args([
                "image",
                "inspect",
                "--format",
                "{{.Size}}",
                &fixture.image.reference,
            ]))
            .await?;
        let bytes: i64 = size
            .stdout
            .trim()
            .parse()
            .context("parsing the image size")?;
        eprintln!("{} is {bytes} bytes", fixture.image.reference);
        ensure!(
            bytes < MAX_IMAGE_BYTES,
            "{} is {bytes} bytes, over the {MAX_IMAGE_BYTES}-byte budget",
            fixture.image.reference
        );
        Ok(())
    })
}

fn endpoints_behave_as_outside_a_container(fixture: &Fixture) -> Result<()> {
    runtime().block_on(async {
        let running = start(fixture).await?;
        let http = client();
        let hostname = docker_inspect(&running.container, "{{.Config.Hostname}}").await?;
        // (method, path, status, a piece the body must contain)
        let cases: [(&str, &str, u16, &str); 9] = [
            ("POST", "/fft?numSamples=1024&freq=1", 200, "\"peakBin\":128"),
            ("GET", "/fft?numSamples=1024&freq=1", 200, "\"peakBin\":128"),
            ("POST", "/fft/real/16", 200, "\"numSamples\":16"),
            ("GET", "/metrics", 200, "fft_http_requests_total"),
            ("GET", "/healthz", 200, ""),
            ("GET", "/readyz", 200, ""),
            ("GET", "/no-such-path", 404, "Not Found"),
            ("POST", "/fft?numSamples=abc", 400, "numSamples"),
            ("POST", "/fft/real/0", 400, "numSamples"),
        ];
        for (method, path, status, needle) in cases {
            let url = format!("{}{path}", running.base_url);
            let method = reqwest::Method::from_bytes(method.as_bytes())?;
            let response = http
                .request(method.clone(), &url)
                .send()
                .await
                .with_context(|| format!("{method} {path}"))?;
            let got = response.status().as_u16();
            let served_by = response
                .headers()
                .get("x-served-by")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = response.text().await?;
            ensure!(
                got == status,
                "{method} {path}: expected {status}, got {got}: {body}"
            );
            ensure!(
                body.contains(needle),
                "{method} {path}: body lacks `{needle}`: {body}"
            );
            ensure!(
                served_by.as_deref() == Some(hostname.as_str()),
                "{method} {path}: x-served-by is {served_by:?}, expected the container's host name {hostname}"
            );
        }
        Ok(())
    })
}

fn runs_as_numeric_non_root_on_read_only_root(fixture: &Fixture) -> Result<()> {
    runtime().block_on(async {
        let running = start(fixture).await?;
        let image_user = Runner::new()
            .query(&Cmd::new("docker").args([
                "image",
                "inspect",
                "--format",
                "{{.Config.User}}",
                &fixture.image.reference,
            ]))
            .await?;
        // Kubernetes' runAsNonRoot can only verify a numeric user: `uid` or `uid:gid`.
        let image_user = image_user.stdout.trim();
        let expected_uid = fixture.spec.run_as_user.to_string();
        let (uid, gid) = image_user.split_once(':').unwrap_or((image_user, "0"));
        ensure!(
            uid == expected_uid && gid.chars().all(|c| c.is_ascii_digit()),
            "the image's USER is `{image_user}`, expected the numeric {expected_uid}[:gid] of the Deployment's runAsUser"
        );
        let top = Runner::new()
            .query(&Cmd::new("docker").args(["top", running.container.id(), "-o", "pid,uid"]))
            .await?;
        let uids: Vec<&str> = top
            .stdout
            .lines()
            .skip(1)
            .filter_map(|line| line.split_whitespace().nth(1))
            .collect();
        ensure!(
            !uids.is_empty() && uids.iter().all(|uid| *uid == expected_uid),
            "processes in the container run as uids {uids:?}, expected only {expected_uid}"
        );
        let read_only =
            docker_inspect(&running.container, "{{.HostConfig.ReadonlyRootfs}}").await?;
        ensure!(read_only == "true", "the root filesystem is not read-only");
        // Serving real work on a read-only root proves the service writes nothing.
        let response = client()
            .post(format!("{}/fft?numSamples=4096", running.base_url))
            .send()
            .await?;
        ensure!(
            response.status() == 200,
            "an FFT on a read-only root answered {}",
            response.status()
        );
        Ok(())
    })
}

async fn gauge(http: &reqwest::Client, base_url: &str, name: &str) -> Result<f64> {
    let text = http
        .get(format!("{base_url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .with_context(|| format!("/metrics has no `{name}` sample"))
}

/// How one request of a burst ended.
struct Answer {
    status: u16,
    retry_after: bool,
    at: Instant,
}

/// Sends `count` maximum-size FFT requests at once, each in its own task.
fn send_max_size_requests(
    http: &reqwest::Client,
    base_url: &str,
    count: usize,
) -> Vec<tokio::task::JoinHandle<Result<Answer>>> {
    (0..count)
        .map(|_| {
            let request = http
                .post(format!("{base_url}/fft?numSamples={MAX_SAMPLES}"))
                .send();
            tokio::spawn(async move {
                let response = request.await?;
                Ok(Answer {
                    status: response.status().as_u16(),
                    retry_after: response.headers().contains_key("retry-after"),
                    at: Instant::now(),
                })
            })
        })
        .collect()
}

fn sigterm_lets_in_flight_requests_finish_and_exits_0(fixture: &Fixture) -> Result<()> {
    runtime().block_on(async {
        let running = start(fixture).await?;
        let http = client();
        // Several maximum-size requests under a 200m CPU limit keep the service busy for well
        // over the moment the stop arrives.
        let requests = send_max_size_requests(&http, &running.base_url, 3);
        Retry::within(Duration::from_secs(20))
            .run(
                "an FFT to be running (gauge fft_jobs_running ≥ 1)",
                || async {
                    let running = gauge(&http, &running.base_url, "fft_jobs_running").await?;
                    ensure!(running >= 1.0, "fft_jobs_running is {running}");
                    Ok(())
                },
            )
            .await?;
        let stop_sent = Instant::now();
        running
            .container
            .stop_with_timeout(Some(SHUTDOWN_GRACE.as_secs() as i32 + 5))
            .await
            .context("docker stop")?;
        let stopped_after = stop_sent.elapsed();
        let mut finished_after_stop = 0;
        for request in requests {
            let Answer { status, at, .. } = request.await??;
            // Three requests fit the worker and its queue: each was accepted, so each completes.
            ensure!(
                status == 200,
                "a request accepted before SIGTERM answered {status}: in-flight and queued \
                 requests must complete"
            );
            if at > stop_sent {
                finished_after_stop += 1;
            }
        }
        ensure!(
            finished_after_stop > 0,
            "no request was still in flight when SIGTERM arrived, so nothing was proven"
        );
        let exit = running.container.exit_code().await?;
        ensure!(
            exit == Some(0),
            "the container exited with {exit:?}, expected 0"
        );
        ensure!(
            stopped_after <= SHUTDOWN_GRACE,
            "stopping took {stopped_after:?}, over the {SHUTDOWN_GRACE:?} grace"
        );
        eprintln!(
            "stopped in {stopped_after:?}; {finished_after_stop} request(s) completed after SIGTERM"
        );
        Ok(())
    })
}

fn max_size_burst_stays_under_the_memory_limit(fixture: &Fixture) -> Result<()> {
    runtime().block_on(async {
        let running = start(fixture).await?;
        let http = client();
        let burst = send_max_size_requests(&http, &running.base_url, 16);
        let (mut served, mut shed) = (0, 0);
        for request in burst {
            let answer = request
                .await?
                .context("a request of the burst got no answer")?;
            match (answer.status, answer.retry_after) {
                (200, _) => served += 1,
                (503, true) => shed += 1,
                (503, false) => bail!("a shed request (503) carries no Retry-After"),
                (status, _) => bail!("a maximum-size request answered {status}"),
            }
        }
        ensure!(
            served >= 1,
            "every request of the burst was shed ({shed} × 503): the service served none"
        );
        let oom_killed = docker_inspect(&running.container, "{{.State.OOMKilled}}").await?;
        ensure!(oom_killed == "false", "the container was OOM killed");
        let state = docker_inspect(&running.container, "{{.State.Status}}").await?;
        ensure!(state == "running", "the container is `{state}` after the burst");
        let after = http
            .post(format!("{}/fft?numSamples=1024&freq=1", running.base_url))
            .send()
            .await?;
        ensure!(
            after.status() == 200,
            "after the burst an ordinary request answered {}",
            after.status()
        );
        eprintln!(
            "burst of 16 × {MAX_SAMPLES} samples under {} MiB: {served} served, {shed} shed with 503",
            fixture.spec.memory_limit_bytes >> 20
        );
        Ok(())
    })
}
