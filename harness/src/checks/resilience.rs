//! The resilience scenarios: a bounded load through the gateway while the environment disrupts
//! the app's replicas as Kubernetes would, judged by how every request ended.
//!
//! - `rolling_restart_zero_errors`: every replica replaced one at a time; every request must
//!   succeed (the drain delay outlasts the endpoint propagation).
//! - `replica_killed`: one replica killed outright; only requests in flight during the kill (until
//!   the gateway stops routing to the dead replica) may fail, and every request started after it
//!   must succeed.
//! - `drain_on_sigterm`: a replica busy with slow requests gets SIGTERM; they complete with 200
//!   and it exits 0.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::CheckOutcome;
use crate::config::names::{LOAD_REQUEST_ID_HEADER, SERVED_BY_HEADER};
use crate::env::{Disruption, DisruptionReport, Environment, ExitSeen};
use crate::exec::probe::{self, ProbeRequest};
use crate::exec::prometheus_text;
use crate::exec::wait::{Attempt, wait_for};

/// Concurrent clients of the load: each has one request in flight at a time, so the replicas'
/// queues (one FFT worker and four waiting each) never overflow into 503s of their own.
const CLIENTS: usize = 4;
/// The most requests one scenario sends, whatever happens.
const MAX_REQUESTS: u64 = 200_000;
/// The longest a load runs: past a cluster's rollout timeout, so the disruption ends first.
const TIME_CAP: Duration = Duration::from_secs(15 * 60);
/// Successful answers before the disruption (the load is flowing) and after it (the new
/// replicas serve).
const ANSWERS_AROUND: u64 = 20;
/// How long those answers may take.
const ANSWERS_TIMEOUT: Duration = Duration::from_secs(30);
/// The quick request of the load: small, so it measures routing, not FFTs.
const QUICK_TARGET: &str = "/fft?numSamples=64";
/// The slow request of the drain scenario: an FFT long enough (a tenth of a second or more) to be
/// in flight when the signal comes.
const SLOW_TARGET: &str = "/fft?numSamples=262144";
/// Slow requests in flight per replica during the drain scenario.
const SLOW_PER_REPLICA: usize = 2;
/// How long the replicas may take to all be busy with slow requests.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// How one request of the load ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// 200 from the app, with the replica that answered.
    Ok(String),
    /// Anything else, in a few words (`503 upstream connect error …`, `error: connecting`).
    Failed(String),
}

/// One request of the load.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    pub id: u64,
    pub started: Instant,
    pub finished: Instant,
    pub outcome: Outcome,
}

impl Sample {
    fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed(_))
    }

    fn in_flight_at(&self, at: Instant) -> bool {
        self.started <= at && at < self.finished
    }

    /// Whether any part of the request overlapped `from..=to`.
    fn overlaps(&self, from: Instant, to: Instant) -> bool {
        self.started <= to && from < self.finished
    }
}

/// A running load: `clients` loops sending `target` until stopped or capped.
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Sample>>>,
}

impl Load {
    fn start(ingress: SocketAddr, clients: usize, target: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let next_id = Arc::new(AtomicU64::new(0));
        let began = Instant::now();
        let tasks = (0..clients)
            .map(|_| {
                let (stop, answered, next_id) = (
                    Arc::clone(&stop),
                    Arc::clone(&answered),
                    Arc::clone(&next_id),
                );
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::Relaxed) && began.elapsed() < TIME_CAP {
                        let id = next_id.fetch_add(1, Ordering::Relaxed);
                        if id >= MAX_REQUESTS {
                            break;
                        }
                        let sample = send_one(ingress, target, id).await;
                        if !sample.failed() {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        samples.push(sample);
                    }
                    samples
                })
            })
            .collect();
        Load {
            stop,
            answered,
            tasks,
        }
    }

    /// Waits until `more` further requests have succeeded.
    async fn wait_for_answers(&self, more: u64, what: &str) -> Result<()> {
        let goal = self.answered.load(Ordering::Relaxed) + more;
        wait_for(
            &format!("{more} successful answers {what}"),
            ANSWERS_TIMEOUT,
            Duration::from_millis(10),
            || async {
                let answered = self.answered.load(Ordering::Relaxed);
                Ok(if answered >= goal {
                    Attempt::Done(())
                } else {
                    Attempt::NotYet(format!("{answered} of {goal} answered"))
                })
            },
        )
        .await
    }

    /// Stops the clients and returns every request, in the order they started.
    async fn finish(self) -> Result<Vec<Sample>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for task in self.tasks {
            all.extend(task.await.context("a load client panicked")?);
        }
        all.sort_by_key(|s| s.started);
        Ok(all)
    }
}

async fn send_one(ingress: SocketAddr, target: &str, id: u64) -> Sample {
    let request = ProbeRequest::new("POST", target).header(LOAD_REQUEST_ID_HEADER, id.to_string());
    let started = Instant::now();
    let outcome = match probe::send(ingress, &request).await {
        Ok(response) => match (response.status, response.header(SERVED_BY_HEADER)) {
            (200, Some(replica)) => Outcome::Ok(replica.to_string()),
            (status, _) => {
                let body = response.body_text();
                let first_line = body.lines().next().unwrap_or("").chars().take(160);
                Outcome::Failed(format!("{status} {}", first_line.collect::<String>()))
            }
        },
        Err(err) => Outcome::Failed(format!("error: {err:#}")),
    };
    Sample {
        id,
        started,
        finished: Instant::now(),
        outcome,
    }
}

/// Requests by how they ended: `ok` or the failure's words.
fn by_outcome(samples: &[Sample]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for sample in samples {
        let key = match &sample.outcome {
            Outcome::Ok(_) => "ok".to_string(),
            Outcome::Failed(what) => what.clone(),
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// Successful answers per replica.
fn by_replica<'a>(samples: impl Iterator<Item = &'a Sample>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for sample in samples {
        if let Outcome::Ok(replica) = &sample.outcome {
            *counts.entry(replica.clone()).or_insert(0) += 1;
        }
    }
    counts
}

/// The failed requests with what the gateway recorded of them, for an error message.
async fn explain(env: &dyn Environment, samples: &[Sample]) -> String {
    let failed: Vec<&Sample> = samples.iter().filter(|s| s.failed()).take(10).collect();
    if failed.is_empty() {
        return String::new();
    }
    let ids: Vec<String> = failed.iter().map(|s| s.id.to_string()).collect();
    let records = env.gateway_records(&ids).await;
    let mut lines = Vec::new();
    for sample in failed {
        let gateway = match &records {
            Ok(records) => records
                .get(&sample.id.to_string())
                .cloned()
                .unwrap_or_else(|| "not in the gateway's access log".to_string()),
            Err(err) => format!("{err:#}"),
        };
        lines.push(format!(
            "request {}: {:?}; gateway: {gateway}",
            sample.id, sample.outcome
        ));
    }
    format!("; first failures: {}", lines.join(" | "))
}

fn summary(samples: &[Sample]) -> String {
    let span = match (samples.first(), samples.iter().map(|s| s.finished).max()) {
        (Some(first), Some(last)) => last.duration_since(first.started),
        _ => Duration::ZERO,
    };
    format!(
        "{} requests in {:.1} s: {:?}",
        samples.len(),
        span.as_secs_f64(),
        by_outcome(samples)
    )
}

fn describe_stops(report: &DisruptionReport) -> String {
    let stops: Vec<String> = report
        .stopped
        .iter()
        .map(|s| format!("{} {}", s.name, s.exit))
        .collect();
    format!(
        "stopped [{}], started {:?}",
        stops.join(", "),
        report.started
    )
}

/// Runs one resilience scenario.
pub(crate) async fn run(env: &dyn Environment, disruption: Disruption) -> Result<CheckOutcome> {
    match disruption {
        Disruption::RollingRestart => rolling_restart(env).await,
        Disruption::Kill => replica_killed(env).await,
        Disruption::Terminate => drain_on_sigterm(env).await,
    }
}

/// Load around a disruption: warm-up answers, the disruption, answers after it.
async fn around(
    env: &dyn Environment,
    disruption: Disruption,
    clients: usize,
    target: &'static str,
) -> Result<(Vec<Sample>, DisruptionReport)> {
    let load = Load::start(env.ingress(), clients, target);
    let disrupted = async {
        load.wait_for_answers(ANSWERS_AROUND, "before the disruption")
            .await?;
        let report = env.disrupt(disruption).await?;
        load.wait_for_answers(ANSWERS_AROUND, "after the disruption")
            .await?;
        anyhow::Ok(report)
    }
    .await;
    // The clients stop whatever happened; their samples explain a failed disruption too.
    let samples = load.finish().await?;
    let report = disrupted.with_context(|| summary(&samples))?;
    Ok((samples, report))
}

async fn rolling_restart(env: &dyn Environment) -> Result<CheckOutcome> {
    let (samples, report) = around(env, Disruption::RollingRestart, CLIENTS, QUICK_TARGET).await?;
    if let Err(err) = judge_rolling_restart(&samples, &report) {
        bail!("{err:#}{}", explain(env, &samples).await);
    }
    Ok(CheckOutcome::Passed(format!(
        "{}; {}; answers by replica {:?}",
        summary(&samples),
        describe_stops(&report),
        by_replica(samples.iter())
    )))
}

/// Every request succeeded, and the new replicas served.
pub(crate) fn judge_rolling_restart(samples: &[Sample], report: &DisruptionReport) -> Result<()> {
    let failed = samples.iter().filter(|s| s.failed()).count();
    if failed > 0 {
        bail!(
            "{failed} of {} requests failed during the rolling restart: {}; {}",
            samples.len(),
            summary(samples),
            describe_stops(report)
        );
    }
    let served = by_replica(samples.iter());
    if !report.started.iter().any(|r| served.contains_key(r)) {
        bail!(
            "no answer came from the new replicas {:?}: answers by replica {served:?}",
            report.started
        );
    }
    Ok(())
}

async fn replica_killed(env: &dyn Environment) -> Result<CheckOutcome> {
    let (samples, report) = around(env, Disruption::Kill, CLIENTS, QUICK_TARGET).await?;
    let explained = explain(env, &samples).await;
    let detail = judge_kill(&samples, &report).map_err(|err| anyhow!("{err:#}{explained}"))?;
    Ok(CheckOutcome::Passed(format!(
        "{}; {detail}; {}{explained}",
        summary(&samples),
        describe_stops(&report)
    )))
}

/// Failures at most the requests in flight during the kill (from the signal until the replica
/// was known dead), none among those started after it.
pub(crate) fn judge_kill(samples: &[Sample], report: &DisruptionReport) -> Result<String> {
    let killed = report
        .stopped
        .first()
        .context("the disruption stopped no replica")?;
    let in_flight = samples
        .iter()
        .filter(|s| s.overlaps(killed.at, killed.gone))
        .count();
    let failed: Vec<&Sample> = samples.iter().filter(|s| s.failed()).collect();
    let after: Vec<&&Sample> = failed.iter().filter(|s| s.started > killed.gone).collect();
    if !after.is_empty() {
        bail!(
            "{} requests started after {} was killed failed, e.g. {:?}",
            after.len(),
            killed.name,
            after[0].outcome
        );
    }
    // Each failure must be one the kill explains: in flight while it happened.
    let unexplained: Vec<&&Sample> = failed
        .iter()
        .filter(|s| !s.overlaps(killed.at, killed.gone))
        .collect();
    if !unexplained.is_empty() {
        bail!(
            "{} requests failed that were not in flight while {} was killed (of {in_flight} that \
             were), e.g. request {}: {:?}",
            unexplained.len(),
            killed.name,
            unexplained[0].id,
            unexplained[0].outcome
        );
    }
    Ok(format!(
        "{} failed of {in_flight} in flight during the kill of {}",
        failed.len(),
        killed.name
    ))
}

async fn drain_on_sigterm(env: &dyn Environment) -> Result<CheckOutcome> {
    let replicas = env
        .replica_metrics()
        .await
        .context("listing the replicas")?
        .len();
    let load = Load::start(env.ingress(), replicas * SLOW_PER_REPLICA, SLOW_TARGET);
    let disrupted = async {
        wait_all_busy(env).await?;
        env.disrupt(Disruption::Terminate).await
    }
    .await;
    let samples = load.finish().await?;
    let report = disrupted.with_context(|| summary(&samples))?;
    let detail = match judge_drain(&samples, &report) {
        Ok(detail) => detail,
        Err(err) => bail!("{err:#}{}", explain(env, &samples).await),
    };
    Ok(CheckOutcome::Passed(format!(
        "{}; {detail}; {}",
        summary(&samples),
        describe_stops(&report)
    )))
}

/// Waits until every replica is computing an FFT of the slow load.
async fn wait_all_busy(env: &dyn Environment) -> Result<()> {
    wait_for(
        "every replica to be running a slow FFT",
        BUSY_TIMEOUT,
        Duration::from_millis(20),
        || async {
            let scrapes = env.replica_metrics().await?;
            let idle: Vec<&String> = scrapes
                .iter()
                .filter(|(_, text)| {
                    prometheus_text::parse(text)
                        .ok()
                        .and_then(|m| m.unlabelled("fft_jobs_running"))
                        .unwrap_or(0.0)
                        < 1.0
                })
                .map(|(name, _)| name)
                .collect();
            Ok(if idle.is_empty() {
                Attempt::Done(())
            } else {
                Attempt::NotYet(format!("{idle:?} not busy yet"))
            })
        },
    )
    .await
}

/// Every slow request succeeded, the stopped replica answered some after its SIGTERM (its
/// in-flight work completed), and it exited 0.
pub(crate) fn judge_drain(samples: &[Sample], report: &DisruptionReport) -> Result<String> {
    let stopped = report
        .stopped
        .first()
        .context("the disruption stopped no replica")?;
    let failed = samples.iter().filter(|s| s.failed()).count();
    if failed > 0 {
        bail!(
            "{failed} of {} slow requests failed while {} drained",
            samples.len(),
            stopped.name
        );
    }
    let completed_after = samples
        .iter()
        .filter(|s| s.in_flight_at(stopped.at))
        .filter(|s| s.outcome == Outcome::Ok(stopped.name.clone()))
        .count();
    if completed_after == 0 {
        bail!(
            "no request in flight on {} at its SIGTERM was answered by it: the drain was not \
             exercised",
            stopped.name
        );
    }
    match &stopped.exit {
        ExitSeen::Code(0) => Ok(format!(
            "{completed_after} requests in flight on {} at its SIGTERM completed with 200; it \
             exited 0",
            stopped.name
        )),
        ExitSeen::NotObserved(why) => Ok(format!(
            "{completed_after} requests in flight on {} at its SIGTERM completed with 200; its \
             exit was not observed ({why})",
            stopped.name
        )),
        other => bail!("{} {other} instead of exiting 0", stopped.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::StoppedReplica;

    fn sample(id: u64, start_ms: u64, end_ms: u64, outcome: Outcome, t0: Instant) -> Sample {
        Sample {
            id,
            started: t0 + Duration::from_millis(start_ms),
            finished: t0 + Duration::from_millis(end_ms),
            outcome,
        }
    }

    fn ok(replica: &str) -> Outcome {
        Outcome::Ok(replica.to_string())
    }

    fn report(t0: Instant, at_ms: u64, exit: ExitSeen) -> DisruptionReport {
        DisruptionReport {
            stopped: vec![StoppedReplica {
                name: "r-0".into(),
                at: t0 + Duration::from_millis(at_ms),
                gone: t0 + Duration::from_millis(at_ms + 1),
                exit,
            }],
            started: vec!["r-3".into()],
        }
    }

    #[test]
    fn a_rolling_restart_allows_no_failure_and_needs_the_new_replicas() {
        let t0 = Instant::now();
        let good = vec![
            sample(0, 0, 5, ok("r-0"), t0),
            sample(1, 6, 9, ok("r-3"), t0),
        ];
        assert!(judge_rolling_restart(&good, &report(t0, 4, ExitSeen::Code(0))).is_ok());
        let mut lost = good.clone();
        lost.push(sample(2, 7, 8, Outcome::Failed("503 reset".into()), t0));
        let err = judge_rolling_restart(&lost, &report(t0, 4, ExitSeen::Code(0))).unwrap_err();
        assert!(err.to_string().contains("1 of 3 requests failed"), "{err}");
        let only_old = vec![sample(0, 0, 5, ok("r-0"), t0)];
        let err = judge_rolling_restart(&only_old, &report(t0, 4, ExitSeen::Code(0))).unwrap_err();
        assert!(err.to_string().contains("new replicas"), "{err}");
    }

    #[test]
    fn a_kill_may_cost_only_requests_in_flight_and_none_started_after() {
        let t0 = Instant::now();
        let killed = report(t0, 10, ExitSeen::Signal(9));
        let in_flight_failure = vec![
            sample(0, 5, 15, Outcome::Failed("503 UC".into()), t0),
            sample(1, 12, 14, ok("r-1"), t0),
        ];
        let detail = judge_kill(&in_flight_failure, &killed).unwrap();
        assert!(detail.contains("1 failed of 1 in flight"), "{detail}");
        // Started between the signal and the death: in flight during the kill.
        let during = vec![sample(0, 10, 12, Outcome::Failed("503 UC".into()), t0)];
        assert!(judge_kill(&during, &killed).is_ok());
        let late_failure = vec![sample(0, 12, 15, Outcome::Failed("503 UC".into()), t0)];
        let err = judge_kill(&late_failure, &killed).unwrap_err();
        assert!(
            err.to_string().contains("started after r-0 was killed"),
            "{err}"
        );
        // Finished before the kill: not in flight, so its failure is not the kill's, even when
        // another request was in flight (and succeeded).
        let early_failure = vec![
            sample(0, 1, 5, Outcome::Failed("503".into()), t0),
            sample(1, 8, 15, ok("r-1"), t0),
        ];
        let err = judge_kill(&early_failure, &killed).unwrap_err();
        assert!(
            err.to_string()
                .contains("not in flight while r-0 was killed (of 1 that were)"),
            "{err}"
        );
    }

    #[test]
    fn a_drain_needs_completed_in_flight_work_and_exit_zero() {
        let t0 = Instant::now();
        let drained = vec![
            sample(0, 0, 50, ok("r-0"), t0),
            sample(1, 0, 60, ok("r-1"), t0),
        ];
        assert!(judge_drain(&drained, &report(t0, 10, ExitSeen::Code(0))).is_ok());
        let err = judge_drain(&drained, &report(t0, 10, ExitSeen::Code(1))).unwrap_err();
        assert!(
            err.to_string().contains("exited 1 instead of exiting 0"),
            "{err}"
        );
        let none_on_victim = vec![sample(0, 0, 50, ok("r-1"), t0)];
        let err = judge_drain(&none_on_victim, &report(t0, 10, ExitSeen::Code(0))).unwrap_err();
        assert!(err.to_string().contains("not exercised"), "{err}");
        let lost = vec![
            sample(0, 0, 50, ok("r-0"), t0),
            sample(1, 0, 20, Outcome::Failed("503".into()), t0),
        ];
        assert!(judge_drain(&lost, &report(t0, 10, ExitSeen::Code(0))).is_err());
    }
}
