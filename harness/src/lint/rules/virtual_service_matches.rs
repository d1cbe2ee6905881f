//! What a VirtualService's http rules match:
//!
//! - `vs-unreachable-match` (a warning: requests are served, by an earlier rule): a match that
//!   can never be reached because an earlier rule takes every request (a rule with no `match`),
//!   an earlier match is identical, or an earlier `uri.prefix` covers it with everything else
//!   equal. Istio's validation reports the same (IST0130 VirtualServiceUnreachableRule, IST0131
//!   VirtualServiceIneffectiveMatch: `analyzeUnreachableHTTPRules`, pkg/config/validation/
//!   validation.go); a prefix also shadows a later `uri.exact` it starts, which Istio does not
//!   say.
//! - `vs-invalid-regex` (an error: Istio's webhook rejects the resource, so nothing it routes
//!   exists): every `regex` Istio compiles (uri, scheme, method, authority, headers, queryParams,
//!   withoutHeaders, corsPolicy.allowOrigins, rewrite.uriRegexRewrite.match) must be RE2 syntax
//!   and at most 1024 characters (`validateStringRegexp`). Envoy compiles them with RE2; the
//!   `regex` crate accepts the same syntax (no look-around, no back-references).

use super::super::inventory::Inventory;
use super::super::{Finding, Rule};
use crate::manifest::istio::{HttpMatchRequest, StringMatch};
use crate::manifest::validation::{ProblemKind, virtual_service_problems};

pub(crate) fn unreachable_matches(inv: &Inventory, findings: &mut Vec<Finding>) {
    for (doc, vs) in &inv.virtual_services {
        // (rule index, match index, the match) of every earlier match.
        let mut earlier: Vec<(usize, usize, &HttpMatchRequest)> = Vec::new();
        let mut catch_all: Option<usize> = None;
        for (r, rule) in vs.spec.http.iter().enumerate() {
            if let Some(first) = catch_all {
                findings.push(
                    Finding::at(Rule::VsUnreachableMatch, doc, format!("spec.http[{r}]")).says(
                        format!("this rule is never used: spec.http[{first}] has no match and takes every request first"),
                        format!("move spec.http[{first}] (the catch-all) to the end of spec.http"),
                    ),
                );
                continue;
            }
            if rule.matches.is_empty() {
                catch_all = Some(r);
                continue;
            }
            for (m, entry) in rule.matches.iter().enumerate() {
                if let Some((er, em, why)) = earlier
                    .iter()
                    .find_map(|(er, em, other)| shadows(other, entry).map(|why| (*er, *em, why)))
                {
                    findings.push(
                        Finding::at(Rule::VsUnreachableMatch, doc, format!("spec.http[{r}].match[{m}]"))
                            .says(
                                format!("this match is never used: spec.http[{er}].match[{em}] {why} and comes first"),
                                "remove the match, or move it before the one that shadows it".to_string(),
                            ),
                    );
                }
                earlier.push((r, m, entry));
            }
        }
    }
}

/// Why `earlier` takes every request `later` matches, if it does.
fn shadows(earlier: &HttpMatchRequest, later: &HttpMatchRequest) -> Option<&'static str> {
    let without_name = |entry: &HttpMatchRequest| HttpMatchRequest {
        name: None,
        ..entry.clone()
    };
    let without_uri = |entry: &HttpMatchRequest| HttpMatchRequest {
        uri: None,
        ..without_name(entry)
    };
    if without_name(earlier) == without_name(later) {
        return Some("is identical");
    }
    if without_name(earlier) == HttpMatchRequest::default() {
        return Some("is empty (`{}` matches every request)");
    }
    if without_uri(earlier) != without_uri(later) {
        return None;
    }
    let Some(StringMatch::Prefix(prefix)) = &earlier.uri else {
        return None;
    };
    let covered = match &later.uri {
        Some(StringMatch::Prefix(path) | StringMatch::Exact(path)) => {
            path.starts_with(prefix.as_str())
        }
        _ => false,
    };
    covered.then_some("has a uri.prefix that covers it, with every other condition equal,")
}

/// `vs-invalid-regex` and `vs-invalid-route`: what Istio's webhook rejects, as
/// [`crate::manifest::validation`] reads it (the local gateway refuses the same).
pub(crate) fn webhook_rejections(inv: &Inventory, findings: &mut Vec<Finding>) {
    for (doc, vs) in &inv.virtual_services {
        for problem in virtual_service_problems(vs) {
            let (rule, fix) = match problem.kind {
                ProblemKind::Regex => (
                    Rule::VsInvalidRegex,
                    "write it in RE2 syntax (no look-around or back-references; escape `.`, `?`, `+` and `*` meant literally), or use `prefix` or `exact`",
                ),
                ProblemKind::Other => (
                    Rule::VsInvalidRoute,
                    "change the field as the message says; `kubectl apply` shows the webhook's own words",
                ),
            };
            findings.push(Finding::at(rule, doc, problem.field.clone()).says(
                format!(
                    "{}; Istio's webhook rejects the VirtualService, so none of its routes exist",
                    problem.message
                ),
                fix.to_string(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn entry(value: Value) -> HttpMatchRequest {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn what_shadows_what() {
        let fft = entry(json!({"uri": {"prefix": "/fft"}}));
        assert!(shadows(&fft, &entry(json!({"uri": {"prefix": "/fft/real"}}))).is_some());
        assert!(shadows(&fft, &entry(json!({"uri": {"exact": "/fft/x"}}))).is_some());
        assert!(
            shadows(
                &fft,
                &entry(json!({"uri": {"prefix": "/fft"}, "name": "again"}))
            )
            .is_some()
        );
        // Another condition differs: the later match can still be reached.
        assert!(
            shadows(
                &fft,
                &entry(json!({"uri": {"prefix": "/fft/real"}, "method": {"exact": "GET"}}))
            )
            .is_none()
        );
        assert!(shadows(&fft, &entry(json!({"uri": {"exact": "/metrics"}}))).is_none());
        // A later, shorter prefix is reached by what the earlier one does not take.
        assert!(shadows(&entry(json!({"uri": {"prefix": "/fft/real"}})), &fft).is_none());
        assert!(
            shadows(&entry(json!({})), &fft).is_some(),
            "an empty match takes everything"
        );
        // Exact and regex earlier matches cover only themselves.
        assert!(
            shadows(
                &entry(json!({"uri": {"exact": "/fft"}})),
                &entry(json!({"uri": {"exact": "/fft/x"}}))
            )
            .is_none()
        );
    }
}
