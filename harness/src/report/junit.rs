//! `junit.xml`: one `testsuite` per scenario group (JUnit's class), one `testcase` per scenario
//! with its duration; a failure carries its message, a not-applicable scenario is `skipped` with
//! the reason, one that never ran (bring-up failed, run cut short) a failure of type `not run`; the target and the versions are properties of every suite.
//! Written by `quick-junit`, the crate nextest writes its own JUnit with.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::{RunReport, Verdict};

/// The report's name in the XML.
const REPORT_NAME: &str = "istio-fft-e2e";

pub(crate) fn xml(report: &RunReport) -> Result<String> {
    let mut properties = vec![Property::new("target", report.target.as_str())];
    properties.extend(
        report
            .versions
            .iter()
            .map(|(name, version)| Property::new(format!("version.{name}"), version.as_str())),
    );
    // Groups in the order their first scenario ran.
    let mut order: Vec<&str> = Vec::new();
    let mut groups: BTreeMap<&str, Vec<TestCase>> = BTreeMap::new();
    for scenario in &report.scenarios {
        let class = scenario.class();
        if !order.contains(&class) {
            order.push(class);
        }
        let status = match &scenario.verdict {
            Verdict::Passed(_) => TestCaseStatus::success(),
            Verdict::Failed(message) => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status
                    .set_message(first_line(message))
                    .set_description(message.as_str());
                status
            }
            Verdict::NotApplicable(reason) => {
                let mut status = TestCaseStatus::skipped();
                status.set_message(format!("not applicable: {reason}"));
                status
            }
            // The run counts them as failed: a CI system must not read them as skipped.
            Verdict::NotRun(reason) => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status.set_message(format!("not run: {}", first_line(reason)));
                status.set_type("not run");
                status
            }
        };
        let mut case = TestCase::new(scenario.short_name(), status);
        case.set_classname(class)
            .set_time(Duration::from_secs_f64(scenario.seconds));
        if let Verdict::Passed(detail) = &scenario.verdict {
            case.set_system_out(detail.as_str());
        }
        groups.entry(class).or_default().push(case);
    }
    let mut junit = Report::new(REPORT_NAME);
    junit.set_time(Duration::from_secs_f64(report.total_seconds));
    for class in order {
        let mut suite = TestSuite::new(class);
        suite.add_properties(properties.clone());
        suite.add_test_cases(groups.remove(class).unwrap_or_default());
        junit.add_test_suite(suite);
    }
    junit.to_string().context("writing the JUnit XML")
}

/// A failure's first line: what JUnit viewers show before the details.
fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample_report;

    #[test]
    fn one_case_per_scenario_grouped_with_failures_and_skips() {
        let xml = xml(&sample_report(None)).unwrap();
        assert!(xml.starts_with("<?xml"), "{xml}");
        assert!(
            xml.contains(r#"<testsuites name="istio-fft-e2e" tests="4" failures="2""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<testsuite name="routing" tests="1""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<testcase name="get_root" classname="gateway_404" time="0.250">"#),
            "{xml}"
        );
        // The message is escaped, not broken.
        assert!(xml.contains("got 200 &lt;&amp;&gt; &quot;x&quot;"), "{xml}");
        assert!(
            xml.contains(r#"<skipped message="not applicable: needs Kubernetes"/>"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<failure message="not run: cut short" type="not run"/>"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<property name="version.envoy" value="1.40.0"/>"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<property name="target" value="local: Envoy 1.40.0"#),
            "{xml}"
        );
    }
}
