//! `harness lint [FILES...] [--format text|json]`.
//!
//! Exit status: 0 when every rule holds, 1 when there are findings, 2 when a file cannot be read
//! or parsed (nothing is linted then).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::lint::{LintError, Report, lint_paths};
use crate::manifest::LoadError;

pub(crate) const EXIT_CLEAN: u8 = 0;
pub(crate) const EXIT_FINDINGS: u8 = 1;
pub(crate) const EXIT_UNREADABLE: u8 = 2;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// One finding per line: `rule-id file:line Kind/name: message — fix: ...`.
    #[default]
    Text,
    /// One JSON object with the counts and every finding.
    Json,
}

/// Check the wiring of the manifests offline: names, selectors and ports that must agree.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct LintArgs {
    /// Manifest files, or directories whose *.yaml and *.yml files are read [default: manifests/].
    /// An IstioOperator among them gives the ingress gateway's labels and ports (Istio's chart
    /// defaults otherwise); a kind cluster configuration is checked for the port mapping of the
    /// gateway's nodePort (kind-port-mapping).
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// The project's manifests: `./manifests` when run from the project root, else the project this
/// binary was built from.
pub(crate) fn default_inputs() -> Vec<PathBuf> {
    let relative = PathBuf::from("manifests");
    if relative.is_dir() {
        vec![relative]
    } else {
        vec![crate::config::paths::manifests_dir()]
    }
}

pub(crate) fn run(args: &LintArgs) -> ExitCode {
    let code = run_with_output(
        args,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    ExitCode::from(code)
}

/// [`run`], writing to the given streams; returns the exit status.
pub(crate) fn run_with_output(args: &LintArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let inputs = if args.files.is_empty() {
        default_inputs()
    } else {
        args.files.clone()
    };
    let started = Instant::now();
    let result = lint_paths(&inputs);
    let elapsed = started.elapsed();
    // A closed stdout (`harness lint | head -1`) is not worth a panic; the status still tells.
    let _ = match (&result, args.format) {
        (Ok(report), Format::Text) => write_text(report, elapsed, out, err),
        (Ok(report), Format::Json) => write_json(report, elapsed, out),
        (Err(error), Format::Text) => writeln!(err, "lint: {error}"),
        (Err(error), Format::Json) => {
            let _ = writeln!(err, "lint: {error}");
            writeln!(out, "{}", error_json(error))
        }
    };
    match result {
        Ok(report) if report.is_clean() => EXIT_CLEAN,
        Ok(_) => EXIT_FINDINGS,
        Err(_) => EXIT_UNREADABLE,
    }
}

fn millis(elapsed: Duration) -> String {
    let ms = elapsed.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn plural(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

fn write_text(
    report: &Report,
    elapsed: Duration,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<()> {
    let scope = format!(
        "{} in {}, {}",
        plural(report.resources, "resource", "resources"),
        plural(report.files, "file", "files"),
        plural(report.rules, "rule", "rules"),
    );
    if report.is_clean() {
        return writeln!(out, "lint: {scope}, no findings ({})", millis(elapsed));
    }
    for finding in &report.findings {
        writeln!(out, "{finding}")?;
    }
    // The summary goes to stderr so that stdout stays one finding per line.
    let broken: Vec<&str> = report.rules_broken().iter().map(|r| r.id()).collect();
    writeln!(
        err,
        "lint: {scope}: {} ({}) ({})",
        plural(report.findings.len(), "finding", "findings"),
        broken.join(", "),
        millis(elapsed)
    )
}

fn write_json(report: &Report, elapsed: Duration, out: &mut dyn Write) -> std::io::Result<()> {
    let mut value = serde_json::to_value(report).expect("a lint report is plain data");
    value["elapsed_ms"] = json!(elapsed.as_secs_f64() * 1000.0);
    value["clean"] = json!(report.is_clean());
    writeln!(out, "{value}")
}

fn error_json(error: &LintError) -> serde_json::Value {
    let (file, line) = match error {
        LintError::Load(LoadError::Read { file, .. }) => (Some(file.clone()), None),
        LintError::Load(LoadError::Parse { file, line, .. }) => (Some(file.clone()), Some(*line)),
        LintError::EmptyDirectory { dir } | LintError::ListDirectory { dir, .. } => {
            (Some(dir.clone()), None)
        }
    };
    json!({ "error": { "message": error.to_string(), "file": file, "line": line } })
}
