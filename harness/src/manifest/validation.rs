//! What Istio's validating webhook rejects in a VirtualService's http rules
//! (`validateHTTPRoute` and the functions it calls, pkg/config/validation/virtualservice.go and
//! validation.go at istio 1.31), for the fields the typed [`VirtualService`] holds. A rejected
//! VirtualService never reaches the gateway: `kubectl apply` fails and none of its routes exist.
//! The lint reports these problems and the local gateway refuses them, both from here.

use crate::manifest::VirtualService;
use crate::manifest::istio::{HttpRoute, Percent, StringMatch, parse_duration};

/// Istio's limit on a regex's length (`validateStringRegexp`).
pub(crate) const MAX_REGEX_LEN: usize = 1024;

/// The `retryOn` policies Istio accepts besides HTTP status codes (`supportedRetryOnPolicies`).
const RETRY_ON_POLICIES: [&str; 16] = [
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// The status codes Go's `http.StatusText` knows: Istio takes those in `retryOn` as status codes
/// (`validateHTTPRetry`; `parseRetryOn`, pilot/pkg/networking/core/route/retry/retry.go).
pub(crate) fn is_known_status(code: u32) -> bool {
    matches!(code,
        100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429
        | 431 | 451 | 500..=508 | 510 | 511)
}

/// What kind of problem: a regex (RE2 syntax, length) or anything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProblemKind {
    Regex,
    Other,
}

/// One field the webhook rejects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    pub kind: ProblemKind,
    /// The field, as a path into the resource (`spec.http[0].retries.retryOn`).
    pub field: String,
    pub message: String,
}

/// Every problem of the VirtualService's http rules, in rule order.
pub(crate) fn virtual_service_problems(vs: &VirtualService) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (index, rule) in vs.spec.http.iter().enumerate() {
        http_route_problems(rule, &format!("spec.http[{index}]"), &mut problems);
    }
    problems
}

fn other(problems: &mut Vec<Problem>, field: String, message: impl Into<String>) {
    problems.push(Problem {
        kind: ProblemKind::Other,
        field,
        message: message.into(),
    });
}

/// `validateHTTPRoute`.
fn http_route_problems(rule: &HttpRoute, at: &str, problems: &mut Vec<Problem>) {
    conflicts(rule, at, problems);
    for (m, matcher) in rule.matches.iter().enumerate() {
        let at = format!("{at}.match[{m}]");
        string_match(matcher.uri.as_ref(), &format!("{at}.uri"), true, problems);
        for (name, value) in [
            ("scheme", &matcher.scheme),
            ("method", &matcher.method),
            ("authority", &matcher.authority),
        ] {
            string_match(value.as_ref(), &format!("{at}.{name}"), false, problems);
        }
        for (name, value) in &matcher.headers {
            string_match(
                Some(value),
                &format!("{at}.headers.{name}"),
                false,
                problems,
            );
        }
        for (name, value) in &matcher.query_params {
            string_match(
                Some(value),
                &format!("{at}.queryParams.{name}"),
                false,
                problems,
            );
        }
        // `*` is not a regex there but "present" (`validateHTTPRouteMatchRequest`).
        for (name, value) in &matcher.without_headers {
            if *value != StringMatch::Regex("*".into()) {
                string_match(
                    Some(value),
                    &format!("{at}.withoutHeaders.{name}"),
                    false,
                    problems,
                );
            }
        }
    }
    if let Some(cors) = &rule.cors_policy {
        for (o, origin) in cors.allow_origins.iter().enumerate() {
            string_match(
                Some(origin),
                &format!("{at}.corsPolicy.allowOrigins[{o}]"),
                false,
                problems,
            );
        }
    }
    for (field, value) in [
        (
            "mirrorPercentage",
            rule.mirror_percentage.as_ref().map(|p| p.value),
        ),
        ("mirrorPercent", rule.mirror_percent.map(f64::from)),
    ] {
        if let Some(value) = value
            && !(0.0..=100.0).contains(&value)
        {
            other(
                problems,
                format!("{at}.{field}"),
                format!("{value} is not between 0 and 100"),
            );
        }
    }
    for (index, mirror) in rule.mirrors.iter().enumerate() {
        if mirror.destination.is_none() {
            other(
                problems,
                format!("{at}.mirrors[{index}].destination"),
                "a mirror needs a destination",
            );
        }
        if let Some(p) = &mirror.percentage
            && !(0.0..=100.0).contains(&p.value)
        {
            other(
                problems,
                format!("{at}.mirrors[{index}].percentage"),
                format!("{} is not between 0 and 100", p.value),
            );
        }
    }
    redirect(rule, at, problems);
    if let Some(rewrite) = &rule.rewrite {
        let uri = rewrite.uri.as_deref().unwrap_or_default();
        let authority = rewrite.authority.as_deref().unwrap_or_default();
        match (&rewrite.uri_regex_rewrite, uri.is_empty()) {
            (Some(_), false) => other(
                problems,
                format!("{at}.rewrite"),
                "takes one of uri or uriRegexRewrite, not both",
            ),
            (None, true) if authority.is_empty() => other(
                problems,
                format!("{at}.rewrite"),
                "rewrites nothing: set uri, uriRegexRewrite or authority",
            ),
            _ => {}
        }
        if let Some(regex) = &rewrite.uri_regex_rewrite {
            regex_problem(
                &regex.pattern,
                &format!("{at}.rewrite.uriRegexRewrite.match"),
                problems,
            );
        }
    }
    if let Some(retries) = &rule.retries {
        let at = format!("{at}.retries");
        if retries.attempts < 0 {
            other(
                problems,
                format!("{at}.attempts"),
                "attempts cannot be negative",
            );
        }
        if retries.attempts == 0
            && (retries.per_try_timeout.is_some()
                || retries.retry_on.as_deref().is_some_and(|r| !r.is_empty())
                || retries.retry_remote_localities.is_some())
        {
            other(
                problems,
                at.clone(),
                "attempts is 0 (retries disabled) but a retry policy is set",
            );
        }
        if let Some(retry_on) = retries.retry_on.as_deref().filter(|r| !r.is_empty()) {
            // Split on commas without trimming, as Istio does: `5xx, reset` is rejected.
            for policy in retry_on.split(',') {
                let status = policy.parse::<u32>().is_ok_and(is_known_status);
                if !status && !RETRY_ON_POLICIES.contains(&policy) {
                    other(
                        problems,
                        format!("{at}.retryOn"),
                        format!(
                            "{policy:?} is not a retryOn policy Istio knows (no spaces after the commas)"
                        ),
                    );
                }
            }
        }
        duration(
            retries.per_try_timeout.as_deref(),
            &format!("{at}.perTryTimeout"),
            problems,
        );
        duration(
            retries.backoff.as_deref(),
            &format!("{at}.backoff"),
            problems,
        );
    }
    duration(rule.timeout.as_deref(), &format!("{at}.timeout"), problems);
    if let Some(fault) = &rule.fault {
        for (field, percentage) in [
            (
                "delay.percentage",
                fault.delay.as_ref().and_then(|d| d.percentage.as_ref()),
            ),
            (
                "abort.percentage",
                fault.abort.as_ref().and_then(|a| a.percentage.as_ref()),
            ),
        ] {
            percentage_problem(percentage, &format!("{at}.fault.{field}"), problems);
        }
        if let Some(delay) = &fault.delay {
            duration(
                delay.fixed_delay.as_deref(),
                &format!("{at}.fault.delay.fixedDelay"),
                problems,
            );
        }
    }
}

/// `validateHTTPRouteConflict`: one of route, redirect or directResponse, with what goes with it.
fn conflicts(rule: &HttpRoute, at: &str, problems: &mut Vec<Problem>) {
    let mut clash = |a: &str, b: &str| {
        other(
            problems,
            at.to_string(),
            format!("a rule cannot have both {a} and {b}"),
        );
    };
    if rule.redirect.is_some() {
        for (present, field) in [
            (!rule.route.is_empty(), "route"),
            (rule.fault.is_some(), "fault"),
            (rule.rewrite.is_some(), "rewrite"),
            (rule.direct_response.is_some(), "directResponse"),
        ] {
            if present {
                clash("redirect", field);
            }
        }
    } else if rule.direct_response.is_some() {
        for (present, field) in [
            (!rule.route.is_empty(), "route"),
            (rule.fault.is_some(), "fault"),
            (rule.rewrite.is_some(), "rewrite"),
        ] {
            if present {
                clash("directResponse", field);
            }
        }
    } else if rule.route.is_empty() && rule.delegate.is_none() {
        other(
            problems,
            format!("{at}.route"),
            "a rule needs a route, a redirect or a directResponse",
        );
    }
    if rule.mirror.is_some() && !rule.mirrors.is_empty() {
        other(
            problems,
            at.to_string(),
            "a rule cannot have both mirror and mirrors",
        );
    }
}

/// `validateHTTPRedirect`.
fn redirect(rule: &HttpRoute, at: &str, problems: &mut Vec<Problem>) {
    let Some(redirect) = &rule.redirect else {
        return;
    };
    let at = format!("{at}.redirect");
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    if set(&redirect.uri) && set(&redirect.prefix_rewrite) {
        other(
            problems,
            at.clone(),
            "takes one of uri or prefixRewrite, not both",
        );
    }
    if set(&redirect.prefix_rewrite)
        && rule.matches.iter().any(|m| {
            m.uri
                .as_ref()
                .is_some_and(|u| !matches!(u, StringMatch::Prefix(_)))
        })
    {
        other(
            problems,
            format!("{at}.prefixRewrite"),
            "needs every uri match of the rule to be a prefix",
        );
    }
    if !set(&redirect.uri)
        && !set(&redirect.prefix_rewrite)
        && !set(&redirect.authority)
        && !set(&redirect.scheme)
        && redirect.port.is_none()
        && redirect.derive_port.is_none()
    {
        other(
            problems,
            at.clone(),
            "redirects nowhere: set uri, prefixRewrite, authority, scheme or port",
        );
    }
    if let Some(code) = redirect.redirect_code
        && code != 0
        && !(300..=399).contains(&code)
    {
        other(
            problems,
            format!("{at}.redirectCode"),
            format!("{code} is not a 3xx code"),
        );
    }
    if let Some(scheme) = redirect.scheme.as_deref()
        && !scheme.is_empty()
        && scheme != "http"
        && scheme != "https"
    {
        other(
            problems,
            format!("{at}.scheme"),
            format!("{scheme:?} is neither http nor https"),
        );
    }
}

/// `validateStringMatch` (or, for the uri, `validateStringMatchRegexp`: an empty uri prefix is
/// allowed) and the regex's own check.
fn string_match(
    value: Option<&StringMatch>,
    field: &str,
    is_uri: bool,
    problems: &mut Vec<Problem>,
) {
    match value {
        Some(StringMatch::Prefix(prefix)) if prefix.is_empty() && !is_uri => {
            other(
                problems,
                format!("{field}.prefix"),
                "an empty prefix is not allowed",
            );
        }
        Some(StringMatch::Regex(regex)) => {
            regex_problem(regex, &format!("{field}.regex"), problems)
        }
        _ => {}
    }
}

/// `validateStringRegexp`: not empty, RE2 syntax (the `regex` crate accepts the same: no
/// look-around, no back-references), at most [`MAX_REGEX_LEN`] characters.
fn regex_problem(pattern: &str, field: &str, problems: &mut Vec<Problem>) {
    let message = if pattern.is_empty() {
        Some("an empty regex is not allowed".to_string())
    } else if pattern.chars().count() > MAX_REGEX_LEN {
        Some(format!(
            "the regex is {} characters, more than Istio's {MAX_REGEX_LEN}",
            pattern.chars().count()
        ))
    } else {
        regex::Regex::new(pattern).err().map(|err| {
            format!(
                "the regex {pattern:?} is not RE2 syntax: {}",
                err.to_string().lines().last().unwrap_or_default().trim()
            )
        })
    };
    if let Some(message) = message {
        problems.push(Problem {
            kind: ProblemKind::Regex,
            field: field.to_string(),
            message,
        });
    }
}

/// `agent.ValidateDuration`: at least 1 ms, in whole milliseconds.
fn duration(text: Option<&str>, field: &str, problems: &mut Vec<Problem>) {
    let Some(text) = text else {
        return;
    };
    match parse_duration(text) {
        Err(err) => other(problems, field.to_string(), err),
        Ok(d) if d < std::time::Duration::from_millis(1) => {
            other(
                problems,
                field.to_string(),
                format!("`{text}` is less than 1ms"),
            );
        }
        Ok(d) if d.subsec_nanos() % 1_000_000 != 0 => {
            other(
                problems,
                field.to_string(),
                format!("`{text}` is not in whole milliseconds"),
            );
        }
        Ok(_) => {}
    }
}

/// `validatePercentage`: 0, or between 0.0001 and 100.
fn percentage_problem(percentage: Option<&Percent>, field: &str, problems: &mut Vec<Problem>) {
    if let Some(p) = percentage
        && (p.value < 0.0 || p.value > 100.0 || (p.value > 0.0 && p.value < 0.0001))
    {
        other(
            problems,
            field.to_string(),
            format!("{} is neither 0 nor between 0.0001 and 100", p.value),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(http: &str) -> Vec<Problem> {
        let yaml = format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs}}\nspec:\n  hosts: ['*']\n  http:\n{http}\n"
        );
        let vs: VirtualService = serde_yaml_ng::from_str(&yaml).unwrap();
        virtual_service_problems(&vs)
    }

    /// Each case is one the webhook rejects (validation.go, virtualservice.go), and the field
    /// the problem names.
    #[rstest::rstest]
    #[case(
        "    - route: [{destination: {host: a}}]\n      redirect: {uri: /x}",
        "spec.http[0]"
    )]
    #[case(
        "    - directResponse: {status: 200}\n      fault: {abort: {httpStatus: 500}}",
        "spec.http[0]"
    )]
    #[case("    - match: [{uri: {prefix: /a}}]", "spec.http[0].route")]
    #[case(
        "    - mirror: {host: b}\n      mirrors: [{destination: {host: c}}]\n      route: [{destination: {host: a}}]",
        "spec.http[0]"
    )]
    #[case(
        "    - match: [{headers: {x-a: {prefix: ''}}}]\n      route: [{destination: {host: a}}]",
        "spec.http[0].match[0].headers.x-a.prefix"
    )]
    #[case(
        "    - match: [{headers: {x-a: {regex: '*'}}}]\n      route: [{destination: {host: a}}]",
        "spec.http[0].match[0].headers.x-a.regex"
    )]
    #[case(
        "    - match: [{uri: {regex: ''}}]\n      route: [{destination: {host: a}}]",
        "spec.http[0].match[0].uri.regex"
    )]
    #[case(
        "    - retries: {attempts: 2, retryOn: '5xx, reset'}\n      route: [{destination: {host: a}}]",
        "spec.http[0].retries.retryOn"
    )]
    #[case(
        "    - retries: {attempts: 0, perTryTimeout: 1s}\n      route: [{destination: {host: a}}]",
        "spec.http[0].retries"
    )]
    #[case(
        "    - timeout: 0s\n      route: [{destination: {host: a}}]",
        "spec.http[0].timeout"
    )]
    #[case(
        "    - timeout: 1.0005s\n      route: [{destination: {host: a}}]",
        "spec.http[0].timeout"
    )]
    #[case("    - redirect: {}", "spec.http[0].redirect")]
    #[case(
        "    - redirect: {uri: /a, prefixRewrite: /b}",
        "spec.http[0].redirect"
    )]
    #[case(
        "    - match: [{uri: {exact: /a}}]\n      redirect: {prefixRewrite: /b}",
        "spec.http[0].redirect.prefixRewrite"
    )]
    #[case(
        "    - redirect: {uri: /a, redirectCode: 200}",
        "spec.http[0].redirect.redirectCode"
    )]
    #[case(
        "    - rewrite: {}\n      route: [{destination: {host: a}}]",
        "spec.http[0].rewrite"
    )]
    #[case(
        "    - mirrorPercentage: {value: 101}\n      mirror: {host: b}\n      route: [{destination: {host: a}}]",
        "spec.http[0].mirrorPercentage"
    )]
    #[case(
        "    - fault: {abort: {httpStatus: 500, percentage: {value: 0.00001}}}\n      route: [{destination: {host: a}}]",
        "spec.http[0].fault.abort.percentage"
    )]
    fn what_the_webhook_rejects(#[case] http: &str, #[case] field: &str) {
        let problems = problems_of(http);
        assert!(
            problems.iter().any(|p| p.field == field),
            "no problem at {field}: {problems:#?}"
        );
    }

    #[rstest::rstest]
    #[case(
        "    - match: [{uri: {prefix: ''}, withoutHeaders: {x-a: {regex: '*'}}}]\n      route: [{destination: {host: a}}]"
    )]
    #[case(
        "    - retries: {attempts: 3, retryOn: '5xx,503,gateway-error', perTryTimeout: 250ms}\n      timeout: 1.5s\n      route: [{destination: {host: a}}]"
    )]
    #[case("    - redirect: {derivePort: FROM_REQUEST_PORT}")]
    #[case("    - retries: {attempts: 0}\n      route: [{destination: {host: a}}]")]
    fn what_the_webhook_accepts(#[case] http: &str) {
        assert_eq!(problems_of(http), []);
    }
}
