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

use serde_json::{Map, Value};

use super::super::inventory::Inventory;
use super::super::{Finding, Rule};
use crate::manifest::Document;

/// Istio's limit on a regex's length (`validateStringRegexp`).
const MAX_REGEX_LEN: usize = 1024;

pub(crate) fn unreachable_matches(inv: &Inventory, findings: &mut Vec<Finding>) {
    for (doc, _) in &inv.virtual_services {
        let rules = http_rules(doc);
        // (rule index, match index, the match) of every earlier match.
        let mut earlier: Vec<(usize, usize, &Map<String, Value>)> = Vec::new();
        let mut catch_all: Option<usize> = None;
        for (r, rule) in rules.iter().enumerate() {
            let matches = rule
                .get("match")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if let Some(first) = catch_all {
                findings.push(
                    Finding::at(Rule::VsUnreachableMatch, doc, format!("spec.http[{r}]")).says(
                        format!("this rule is never used: spec.http[{first}] has no match and takes every request first"),
                        format!("move spec.http[{first}] (the catch-all) to the end of spec.http"),
                    ),
                );
                continue;
            }
            if matches.is_empty() {
                catch_all = Some(r);
                continue;
            }
            for (m, entry) in rule["match"].as_array().into_iter().flatten().enumerate() {
                let Some(entry) = entry.as_object() else {
                    continue;
                };
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

fn http_rules(doc: &Document) -> Vec<Value> {
    doc.raw
        .pointer("/spec/http")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Why `earlier` takes every request `later` matches, if it does.
fn shadows(earlier: &Map<String, Value>, later: &Map<String, Value>) -> Option<&'static str> {
    let without = |entry: &Map<String, Value>, keys: &[&str]| -> Map<String, Value> {
        entry
            .iter()
            .filter(|(k, _)| !keys.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    if without(earlier, &["name"]) == without(later, &["name"]) {
        return Some("is identical");
    }
    if without(earlier, &["name"]).is_empty() {
        return Some("is empty (`{}` matches every request)");
    }
    if without(earlier, &["name", "uri"]) != without(later, &["name", "uri"]) {
        return None;
    }
    let prefix = earlier.get("uri")?.get("prefix")?.as_str()?;
    let uri = later.get("uri")?;
    let covered = [uri.get("prefix"), uri.get("exact")]
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|path| path.starts_with(prefix));
    covered.then_some("has a uri.prefix that covers it, with every other condition equal,")
}

pub(crate) fn regexes(inv: &Inventory, findings: &mut Vec<Finding>) {
    for (doc, _) in &inv.virtual_services {
        for (field, pattern) in regex_fields(doc) {
            let problem = if pattern.chars().count() > MAX_REGEX_LEN {
                Some(format!(
                    "is {} characters, more than Istio's {MAX_REGEX_LEN}",
                    pattern.chars().count()
                ))
            } else {
                regex::Regex::new(&pattern).err().map(|err| {
                    format!(
                        "is not RE2 syntax: {}",
                        err.to_string().lines().last().unwrap_or_default().trim()
                    )
                })
            };
            if let Some(problem) = problem {
                findings.push(Finding::at(Rule::VsInvalidRegex, doc, field.clone()).says(
                    format!("the regex {pattern:?} {problem}; Istio's webhook rejects the VirtualService, so none of its routes exist"),
                    "write it in RE2 syntax (no look-around or back-references; escape `.`, `?`, `+` and `*` meant literally), or use `prefix` or `exact`".to_string(),
                ));
            }
        }
    }
}

/// Every regex a VirtualService's http rules hold, with its field.
fn regex_fields(doc: &Document) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let regex_of = |value: &Value| {
        value
            .get("regex")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    for (r, rule) in http_rules(doc).iter().enumerate() {
        for (m, entry) in rule
            .get("match")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            for key in ["uri", "scheme", "method", "authority"] {
                if let Some(pattern) = entry.get(key).and_then(regex_of) {
                    found.push((format!("spec.http[{r}].match[{m}].{key}.regex"), pattern));
                }
            }
            for map in ["headers", "queryParams", "withoutHeaders"] {
                for (name, value) in entry
                    .get(map)
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    if let Some(pattern) = regex_of(value) {
                        found.push((
                            format!("spec.http[{r}].match[{m}].{map}.{name}.regex"),
                            pattern,
                        ));
                    }
                }
            }
        }
        let origins = rule
            .pointer("/corsPolicy/allowOrigins")
            .and_then(Value::as_array);
        for (o, origin) in origins.into_iter().flatten().enumerate() {
            if let Some(pattern) = regex_of(origin) {
                found.push((
                    format!("spec.http[{r}].corsPolicy.allowOrigins[{o}].regex"),
                    pattern,
                ));
            }
        }
        if let Some(pattern) = rule
            .pointer("/rewrite/uriRegexRewrite/match")
            .and_then(Value::as_str)
        {
            found.push((
                format!("spec.http[{r}].rewrite.uriRegexRewrite.match"),
                pattern.to_string(),
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
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
