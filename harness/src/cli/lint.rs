//! `harness lint [FILES...] [--format text|json|github|sarif]`.
//!
//! Exit status: 0 when no finding makes requests fail (warnings are printed but pass), 1 when one
//! does, 2 when a file cannot be read or parsed (nothing is linted then).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;

use serde_sarif::sarif;

use crate::lint::{LintError, Report, Rule, Severity, lint_paths};
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
    /// GitHub Actions workflow commands (`::error file=…,line=…::…`): each finding becomes an
    /// annotation on the pull request's line.
    Github,
    /// SARIF 2.1.0, for code-scanning upload.
    Sarif,
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
        (Ok(report), Format::Github) => write_github(report, elapsed, out, err),
        (Ok(report), Format::Sarif) => write_sarif(report, out),
        (Err(error), Format::Text | Format::Sarif) => writeln!(err, "lint: {error}"),
        (Err(error), Format::Github) => {
            let _ = writeln!(err, "lint: {error}");
            writeln!(out, "{}", github_error(error))
        }
        (Err(error), Format::Json) => {
            let _ = writeln!(err, "lint: {error}");
            writeln!(out, "{}", error_json(error))
        }
    };
    match result {
        Ok(report) if report.has_errors() => EXIT_FINDINGS,
        Ok(_) => EXIT_CLEAN,
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
    writeln!(
        err,
        "lint: {scope}: {} ({})",
        tally(report),
        millis(elapsed)
    )
}

/// `2 findings: 1 error, 1 warning (image-pull, prometheus-annotations)`.
fn tally(report: &Report) -> String {
    let errors = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let broken: Vec<&str> = report.rules_broken().iter().map(|r| r.id()).collect();
    format!(
        "{}: {}, {} ({})",
        plural(report.findings.len(), "finding", "findings"),
        plural(errors, "error", "errors"),
        plural(report.findings.len() - errors, "warning", "warnings"),
        broken.join(", ")
    )
}

/// Escapes the text of a GitHub workflow command (`%`, CR, LF), and in a property also `:` and
/// `,` (actions/toolkit `packages/core/src/command.ts`, `escapeData`, `escapeProperty`).
fn github_escape(text: &str, property: bool) -> String {
    let mut escaped = text
        .replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A");
    if property {
        escaped = escaped.replace(':', "%3A").replace(',', "%2C");
    }
    escaped
}

fn write_github(
    report: &Report,
    elapsed: Duration,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<()> {
    for finding in &report.findings {
        let title = format!("{} ({})", finding.rule, finding.severity.as_str());
        writeln!(
            out,
            "::{} file={},line={},title={}::{}",
            finding.severity.as_str(),
            github_escape(&finding.file.to_string_lossy(), true),
            finding.line,
            github_escape(&title, true),
            github_escape(
                &format!(
                    "{}/{}: {} — fix: {}",
                    finding.kind, finding.name, finding.message, finding.fix
                ),
                false
            )
        )?;
    }
    let summary = if report.is_clean() {
        "no findings".to_string()
    } else {
        tally(report)
    };
    writeln!(err, "lint: {summary} ({})", millis(elapsed))
}

fn github_error(error: &LintError) -> String {
    let (file, line) = error_location(error);
    let mut properties = Vec::new();
    if let Some(file) = file {
        properties.push(format!(
            "file={}",
            github_escape(&file.to_string_lossy(), true)
        ));
    }
    if let Some(line) = line {
        properties.push(format!("line={line}"));
    }
    format!(
        "::error {}::{}",
        properties.join(","),
        github_escape(&error.to_string(), false)
    )
}

/// SARIF 2.1.0 through `serde-sarif` (types generated from the OASIS schema): one run of the
/// `harness lint` tool, every rule described, one result per finding with its file and line.
fn write_sarif(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    let sarif = sarif_log(report);
    let text = serde_json::to_string_pretty(&sarif).map_err(std::io::Error::other)?;
    writeln!(out, "{text}")
}

pub(crate) fn sarif_log(report: &Report) -> sarif::Sarif {
    let level = |severity: Severity| match severity {
        Severity::Error => json!("error"),
        Severity::Warning => json!("warning"),
    };
    let rules: Vec<sarif::ReportingDescriptor> = Rule::ALL
        .iter()
        .map(|rule| {
            sarif::ReportingDescriptor::builder()
                .id(rule.id())
                .short_description(
                    sarif::MultiformatMessageString::builder()
                        .text(rule.summary())
                        .build(),
                )
                .default_configuration(
                    sarif::ReportingConfiguration::builder()
                        .level(level(rule.severity()))
                        .build(),
                )
                .build()
        })
        .collect();
    let results: Vec<sarif::Result> = report
        .findings
        .iter()
        .map(|finding| {
            let location = sarif::Location::builder()
                .physical_location(
                    sarif::PhysicalLocation::builder()
                        .artifact_location(
                            sarif::ArtifactLocation::builder()
                                .uri(finding.file.to_string_lossy().into_owned())
                                .build(),
                        )
                        .region(
                            sarif::Region::builder()
                                .start_line(finding.line as i64)
                                .build(),
                        )
                        .build(),
                )
                .build();
            sarif::Result::builder()
                .rule_id(finding.rule.id())
                .level(match finding.severity {
                    Severity::Error => sarif::ResultLevel::Error,
                    Severity::Warning => sarif::ResultLevel::Warning,
                })
                .message(
                    sarif::Message::builder()
                        .text(format!(
                            "{}/{}: {} (field {}) — fix: {}",
                            finding.kind, finding.name, finding.message, finding.field, finding.fix
                        ))
                        .build(),
                )
                .locations(vec![location])
                .build()
        })
        .collect();
    let driver = sarif::ToolComponent::builder()
        .name("harness lint")
        .rules(rules)
        .build();
    let run = sarif::Run::builder()
        .tool(sarif::Tool::builder().driver(driver).build())
        .results(results)
        .build();
    sarif::Sarif::builder()
        .schema("https://json.schemastore.org/sarif-2.1.0.json")
        .version(json!("2.1.0"))
        .runs(vec![run])
        .build()
}

fn write_json(report: &Report, elapsed: Duration, out: &mut dyn Write) -> std::io::Result<()> {
    let mut value = serde_json::to_value(report).expect("a lint report is plain data");
    value["elapsed_ms"] = json!(elapsed.as_secs_f64() * 1000.0);
    value["clean"] = json!(report.is_clean());
    writeln!(out, "{value}")
}

/// The file (and line) an unreadable input names.
fn error_location(error: &LintError) -> (Option<PathBuf>, Option<usize>) {
    match error {
        LintError::Load(LoadError::Read { file, .. }) => (Some(file.clone()), None),
        LintError::Load(LoadError::Parse { file, line, .. }) => (Some(file.clone()), Some(*line)),
        LintError::EmptyDirectory { dir } | LintError::ListDirectory { dir, .. } => {
            (Some(dir.clone()), None)
        }
    }
}

fn error_json(error: &LintError) -> serde_json::Value {
    let (file, line) = error_location(error);
    json!({ "error": { "message": error.to_string(), "file": file, "line": line } })
}
