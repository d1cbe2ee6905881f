//! The wiring rules against the project's manifests, the article's, and broken variants of ours:
//! each variant breaks one rule and must be reported under that rule and no other.

use std::path::{Path, PathBuf};
use std::process::Command;

use harness::lint::{self, Finding, Rule};
use harness::manifest::{Document, load_file, load_str};
use rstest::rstest;

fn manifests() -> PathBuf {
    harness::config::paths::manifests_dir()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lint")
        .join(name)
}

fn project_app() -> String {
    std::fs::read_to_string(manifests().join("app.yaml")).unwrap()
}

/// `app.yaml` with each `(from, to)` applied; `from` must occur exactly once, so a table entry
/// cannot silently stop mutating anything when the manifest changes.
fn mutate(edits: &[(&str, &str)]) -> String {
    let mut text = project_app();
    for (from, to) in edits {
        assert_eq!(
            text.matches(from).count(),
            1,
            "{from:?} must occur exactly once in app.yaml"
        );
        text = text.replacen(from, to, 1);
    }
    text
}

/// Lints `app_yaml` together with the project's Istio install overlay, as `harness lint` does.
fn lint_app(app_yaml: &str) -> Vec<Finding> {
    let mut docs: Vec<Document> = load_str(Path::new("manifests/app.yaml"), app_yaml)
        .unwrap_or_else(|e| panic!("the variant must still load: {e}"));
    docs.extend(load_file(&manifests().join("istio-install.yaml")).unwrap());
    lint::lint_documents(&docs).findings
}

fn rules_of(findings: &[Finding]) -> Vec<Rule> {
    let mut rules: Vec<Rule> = findings.iter().map(|f| f.rule).collect();
    rules.sort();
    rules.dedup();
    rules
}

fn show(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| format!("\n  {f}"))
        .collect::<String>()
}

/// The Gateway server's host list, and the VirtualService's.
const GW_HOSTS: &str = "        - \"*\"\n---";
const VS_HOSTS: &str = "  hosts:\n    - \"*\"";
/// The second match of the VirtualService's rule.
const METRICS_MATCH: &str = "            exact: \"/metrics\"";
/// The pod template's scrape annotation.
const SCRAPE: &str = "        prometheus.io/scrape: \"true\"\n";
/// A regex longer than Istio's 1024 characters.
const LONG_REGEX: &str = concat!(
    "            regex: \"/",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "\""
);
const NAMESPACE_DOC: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: wty-istio\n  labels:\n    istio-injection: enabled\n---\n";
const SERVICE_DOC: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: wtyfft-svc\n  namespace: wty-istio\nspec:\n  selector:\n    app: wtyfft-app\n  ports:\n    - name: http\n      protocol: TCP\n      port: 8000\n      targetPort: 8080\n---\n";
const SERVICE_PORT: &str =
    "    - name: http\n      protocol: TCP\n      port: 8000\n      targetPort: 8080\n";
const VS_PORT: &str = "            port:\n              number: 8000\n";
/// The route's destination followed by a second one, with the weights given (leaked: the
/// table's edits are `&'static str`).
fn two_destinations(first: i32, second_host: &str, second: i32) -> &'static str {
    leak(format!(
        "{VS_PORT}          weight: {first}\n        - destination:\n            host: {second_host}\n            port:\n              number: 8000\n          weight: {second}\n"
    ))
}

fn leak(text: String) -> &'static str {
    text.leak()
}

#[rstest]
// single-namespace
#[case::service_in_another_namespace(Rule::SingleNamespace, &[("name: wtyfft-svc\n  namespace: wty-istio", "name: wtyfft-svc\n  namespace: other")])]
#[case::deployment_without_namespace(Rule::SingleNamespace, &[("    app: wtyfft-deploy-label\n  namespace: wty-istio\n", "    app: wtyfft-deploy-label\n")])]
#[case::virtual_service_in_default(Rule::SingleNamespace, &[("name: wtyfft-vs\n  namespace: wty-istio", "name: wtyfft-vs\n  namespace: default")])]
#[case::gateway_in_another_namespace(Rule::SingleNamespace, &[("name: wtyfft-gateway\n  namespace: wty-istio", "name: wtyfft-gateway\n  namespace: istio-system")])]
#[case::namespace_misspelt(Rule::SingleNamespace, &[("kind: Namespace\nmetadata:\n  name: wty-istio", "kind: Namespace\nmetadata:\n  name: wty-isito")])]
#[case::namespace_not_declared(Rule::SingleNamespace, &[(NAMESPACE_DOC, "")])]
// deployment-selector
#[case::match_labels_differ(Rule::DeploymentSelector, &[("    matchLabels:\n      app: wtyfft-app", "    matchLabels:\n      app: wtyfft-deploy-label")])]
#[case::match_labels_extra_key(Rule::DeploymentSelector, &[("    matchLabels:\n      app: wtyfft-app", "    matchLabels:\n      app: wtyfft-app\n      tier: web")])]
#[case::match_expressions_unmet(Rule::DeploymentSelector, &[("    matchLabels:\n      app: wtyfft-app", "    matchExpressions:\n      - {key: app, operator: In, values: [fft]}")])]
// service-selector
#[case::service_selects_deployment_label(Rule::ServiceSelector, &[("  selector:\n    app: wtyfft-app\n  ports:", "  selector:\n    app: wtyfft-deploy-label\n  ports:")])]
#[case::service_selector_extra_key(Rule::ServiceSelector, &[("  selector:\n    app: wtyfft-app\n  ports:", "  selector:\n    app: wtyfft-app\n    version: v1\n  ports:")])]
#[case::service_selector_removed(Rule::ServiceSelector, &[("  selector:\n    app: wtyfft-app\n  ports:", "  ports:")])]
#[case::selector_wrong_hides_target_port(Rule::ServiceSelector, &[("  selector:\n    app: wtyfft-app\n  ports:", "  selector:\n    app: wtyfft\n  ports:"), ("      targetPort: 8080", "      targetPort: 9090")])]
// service-target-port
#[case::target_port_is_service_port(Rule::ServiceTargetPort, &[("      targetPort: 8080", "      targetPort: 8000")])]
#[case::target_port_unknown_name(Rule::ServiceTargetPort, &[("      targetPort: 8080", "      targetPort: metrics")])]
#[case::target_port_missing_defaults_to_port(Rule::ServiceTargetPort, &[("      port: 8000\n      targetPort: 8080\n", "      port: 8000\n")])]
#[case::container_port_renamed(Rule::ServiceTargetPort, &[("      targetPort: 8080", "      targetPort: http"), ("              name: http\n", "              name: web\n")])]
// vs-destination-host
#[case::host_is_deployment_name(Rule::VsDestinationHost, &[("host: wtyfft-svc", "host: wtyfft-deploy")])]
#[case::host_fqdn_wrong_namespace(Rule::VsDestinationHost, &[("host: wtyfft-svc", "host: wtyfft-svc.default.svc.cluster.local")])]
#[case::host_name_dot_wrong_namespace(Rule::VsDestinationHost, &[("host: wtyfft-svc", "host: wtyfft-svc.istio-system")])]
#[case::host_name_dot_namespace_is_not_expanded(Rule::VsDestinationHost, &[("host: wtyfft-svc", "host: wtyfft-svc.wty-istio")])]
#[case::host_external(Rule::VsDestinationHost, &[("host: wtyfft-svc", "host: fft.example.com")])]
#[case::service_renamed(Rule::VsDestinationHost, &[("  name: wtyfft-svc\n", "  name: wtyfft-service\n")])]
#[case::service_deleted(Rule::VsDestinationHost, &[(SERVICE_DOC, "")])]
#[case::weighted_destination_unknown(Rule::VsDestinationHost, &[(VS_PORT, two_destinations(90, "wtyfft-canary", 10))])]
// vs-destination-port
#[case::destination_port_is_target_port(Rule::VsDestinationPort, &[("              number: 8000", "              number: 8080")])]
#[case::service_port_changed(Rule::VsDestinationPort, &[("      port: 8000\n", "      port: 8001\n")])]
#[case::port_required_with_several(Rule::VsDestinationPort, &[(SERVICE_PORT, "    - name: http\n      protocol: TCP\n      port: 8000\n      targetPort: 8080\n    - name: http-metrics\n      protocol: TCP\n      port: 9000\n      targetPort: http\n"), (VS_PORT, "")])]
// vs-gateway-ref
#[case::gateway_ref_misspelt(Rule::VsGatewayRef, &[("    - wtyfft-gateway\n", "    - wtyfft-gw\n")])]
#[case::gateway_ref_wrong_namespace(Rule::VsGatewayRef, &[("    - wtyfft-gateway\n", "    - istio-system/wtyfft-gateway\n")])]
#[case::gateway_renamed(Rule::VsGatewayRef, &[("  name: wtyfft-gateway\n", "  name: fft-gateway\n")])]
#[case::bound_to_mesh_only(Rule::VsGatewayRef, &[("    - wtyfft-gateway\n", "    - mesh\n")])]
#[case::gateways_removed(Rule::VsGatewayRef, &[("  gateways:\n    - wtyfft-gateway\n", "")])]
// gateway-selector
#[case::gateway_selector_value(Rule::GatewaySelector, &[("    istio: ingressgateway # use", "    istio: ingress # use")])]
#[case::gateway_selects_app_pods(Rule::GatewaySelector, &[("    istio: ingressgateway # use", "    app: wtyfft-app # use")])]
#[case::gateway_selector_extra_key(Rule::GatewaySelector, &[("    istio: ingressgateway # use", "    istio: ingressgateway\n    version: v2 # use")])]
#[case::gateway_selector_wrong_hides_port(Rule::GatewaySelector, &[("    istio: ingressgateway # use", "    istio: egressgateway # use"), ("        number: 80\n", "        number: 8080\n")])]
// gateway-port
#[case::gateway_port_is_target_port(Rule::GatewayPort, &[("        number: 80\n", "        number: 8080\n")])]
#[case::gateway_port_not_installed(Rule::GatewayPort, &[("        number: 80\n", "        number: 31400\n")])]
// sidecar-injection
#[case::injection_label_removed(Rule::SidecarInjection, &[("  labels:\n    istio-injection: enabled\n", "")])]
#[case::injection_disabled(Rule::SidecarInjection, &[("istio-injection: enabled", "istio-injection: disabled")])]
#[case::injection_label_typo(Rule::SidecarInjection, &[("istio-injection: enabled", "istio-injection: \"true\"")])]
#[case::pod_opts_out(Rule::SidecarInjection, &[("      labels:\n        app: wtyfft-app\n", "      labels:\n        app: wtyfft-app\n        sidecar.istio.io/inject: \"false\"\n")])]
// prometheus-annotations
#[case::scrape_false(Rule::PrometheusAnnotations, &[("prometheus.io/scrape: \"true\"", "prometheus.io/scrape: \"false\"")])]
#[case::scrape_missing(Rule::PrometheusAnnotations, &[("        prometheus.io/scrape: \"true\"\n", "")])]
#[case::scrape_port_not_container_port(Rule::PrometheusAnnotations, &[("prometheus.io/port: \"8080\"", "prometheus.io/port: \"8000\"")])]
#[case::annotations_removed(Rule::PrometheusAnnotations, &[("      annotations:\n        prometheus.io/port: \"8080\"\n        prometheus.io/scrape: \"true\"\n        prometheus.io/path: \"/metrics\"\n", "")])]
#[case::scrape_path_relative(Rule::PrometheusAnnotations, &[("prometheus.io/path: \"/metrics\"", "prometheus.io/path: \"metrics\"")])]
// vs-gateway-host (IST0132)
#[case::vs_host_not_on_gateway(Rule::VsGatewayHost, &[(GW_HOSTS, "        - \"fft.example.com\"\n---"), (VS_HOSTS, "  hosts:\n    - \"shop.example.com\"")])]
#[case::server_host_for_another_namespace(Rule::VsGatewayHost, &[(GW_HOSTS, "        - \"istio-system/*\"\n---")])]
#[case::wildcard_needs_a_subdomain(Rule::VsGatewayHost, &[(GW_HOSTS, "        - \"*.example.com\"\n---"), (VS_HOSTS, "  hosts:\n    - \"example.com\"")])]
#[case::short_vs_host_is_a_service_name(Rule::VsGatewayHost, &[(GW_HOSTS, "        - \"*.example.com\"\n---"), (VS_HOSTS, "  hosts:\n    - \"fft\"")])]
// vs-unreachable-match (IST0130, IST0131)
#[case::catch_all_first(Rule::VsUnreachableMatch, &[("  http:\n    - match:", "  http:\n    - route:\n        - destination:\n            host: wtyfft-svc\n    - match:")])]
#[case::prefix_covers_later_exact(Rule::VsUnreachableMatch, &[(METRICS_MATCH, "            exact: \"/metrics\"\n        - uri:\n            exact: \"/fft/real/16\"")])]
#[case::prefix_covers_later_prefix(Rule::VsUnreachableMatch, &[(METRICS_MATCH, "            exact: \"/metrics\"\n        - uri:\n            prefix: \"/fft/real\"")])]
#[case::duplicate_match(Rule::VsUnreachableMatch, &[(METRICS_MATCH, "            exact: \"/metrics\"\n        - uri:\n            exact: \"/metrics\"")])]
#[case::empty_match_first(Rule::VsUnreachableMatch, &[("        - uri:\n            prefix: /fft", "        - {}\n        - uri:\n            prefix: /fft")])]
// vs-invalid-regex (IST0106 since Istio 1.23, IST0122 before)
#[case::lookahead_regex(Rule::VsInvalidRegex, &[("            prefix: /fft", "            regex: \"/fft(?=/real)\"")])]
#[case::unclosed_group(Rule::VsInvalidRegex, &[(METRICS_MATCH, "            regex: \"/metrics(\"")])]
#[case::backreference_in_header(Rule::VsInvalidRegex, &[("            prefix: /fft\n", "            prefix: /fft\n          headers:\n            x-id:\n              regex: \"(a)\\\\1\"\n")])]
#[case::regex_too_long(Rule::VsInvalidRegex, &[(METRICS_MATCH, LONG_REGEX)])]
#[case::cors_origin_regex(Rule::VsInvalidRegex, &[(VS_PORT, leak(format!("{VS_PORT}      corsPolicy:\n        allowOrigins:\n          - regex: \"https://(?!evil)\"\n")))])]
#[case::uri_regex_rewrite(Rule::VsInvalidRegex, &[(VS_PORT, leak(format!("{VS_PORT}      rewrite:\n        uriRegexRewrite:\n          match: \"^/fft(\"\n          rewrite: /\n")))])]
#[case::star_is_not_a_header_regex(Rule::VsInvalidRegex, &[("            prefix: /fft\n", "            prefix: /fft\n          headers:\n            x-id:\n              regex: \"*\"\n")])]
// vs-invalid-route (validateHTTPRoute)
#[case::retry_on_with_a_space(Rule::VsInvalidRoute, &[(VS_PORT, leak(format!("{VS_PORT}      retries:\n        attempts: 2\n        retryOn: \"5xx, reset\"\n")))])]
#[case::redirect_and_route(Rule::VsInvalidRoute, &[(VS_PORT, leak(format!("{VS_PORT}      redirect:\n        uri: /x\n")))])]
#[case::sub_millisecond_timeout(Rule::VsInvalidRoute, &[(VS_PORT, leak(format!("{VS_PORT}      timeout: 0.0005s\n")))])]
#[case::empty_header_prefix(Rule::VsInvalidRoute, &[("            prefix: /fft\n", "            prefix: /fft\n          headers:\n            x-id:\n              prefix: \"\"\n")])]
// vs-route-weights, vs-weight-sum (validateHTTPRouteDestinations)
#[case::negative_weight(Rule::VsRouteWeights, &[(VS_PORT, two_destinations(110, "wtyfft-svc", -10))])]
#[case::total_weight_zero(Rule::VsRouteWeights, &[(VS_PORT, two_destinations(0, "wtyfft-svc", 0))])]
#[case::weights_not_100(Rule::VsWeightSum, &[(VS_PORT, two_destinations(90, "wtyfft-svc", 20))])]
// gateway-conflict (IST0145)
#[case::two_gateways_same_pods_port_host(Rule::GatewayConflict, &[(GW_HOSTS, "        - \"*\"\n---\napiVersion: networking.istio.io/v1alpha3\nkind: Gateway\nmetadata:\n  name: other-gateway\n  namespace: wty-istio\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n    - port:\n        number: 80\n        name: http2\n        protocol: HTTP\n      hosts:\n        - \"*\"\n---"), ("    - wtyfft-gateway\n", "    - wtyfft-gateway\n    - other-gateway\n")])]
// istio-annotation (IST0108, IST0107, IST0135)
#[case::misspelled_annotation(Rule::IstioAnnotation, &[(SCRAPE, "        prometheus.io/scrape: \"true\"\n        sidecar.istio.io/proxyCpu: \"100m\"\n")])]
#[case::pod_annotation_on_the_deployment(Rule::IstioAnnotation, &[("  name: wtyfft-deploy\n", "  name: wtyfft-deploy\n  annotations:\n    sidecar.istio.io/proxyCPU: \"100m\"\n")])]
#[case::deprecated_inject_annotation(Rule::IstioAnnotation, &[(SCRAPE, "        prometheus.io/scrape: \"true\"\n        sidecar.istio.io/inject: \"true\"\n")])]
#[case::service_annotation_unknown(Rule::IstioAnnotation, &[("  name: wtyfft-svc\n", "  name: wtyfft-svc\n  annotations:\n    networking.istio.io/export-to: \".\"\n")])]
#[case::pod_inject_value_not_boolean(Rule::SidecarInjection, &[("      labels:\n        app: wtyfft-app\n", "      labels:\n        app: wtyfft-app\n        sidecar.istio.io/inject: \"False\"\n")])]
// image-pull
#[case::image_latest(Rule::ImagePull, &[("image: fft-service:0.1.0", "image: fft-service:latest")])]
#[case::image_untagged(Rule::ImagePull, &[("image: fft-service:0.1.0", "image: fft-service")])]
#[case::image_untagged_with_registry_port(Rule::ImagePull, &[("image: fft-service:0.1.0", "image: localhost:5000/fft-service")])]
#[case::pull_always(Rule::ImagePull, &[("imagePullPolicy: IfNotPresent", "imagePullPolicy: Always")])]
#[case::latest_without_policy(Rule::ImagePull, &[("image: fft-service:0.1.0", "image: fft-service:latest"), ("          imagePullPolicy: IfNotPresent\n", "")])]
fn a_variant_breaking_one_rule_is_reported_under_that_rule_only(
    #[case] rule: Rule,
    #[case] edits: &[(&str, &str)],
) {
    let findings = lint_app(&mutate(edits));
    assert_eq!(rules_of(&findings), [rule], "findings:{}", show(&findings));
    for finding in &findings {
        assert!(
            !finding.message.is_empty() && !finding.fix.is_empty(),
            "{finding}"
        );
        assert_eq!(finding.file, Path::new("manifests/app.yaml"));
    }
}

/// Deleting a whole document needs the document's text; the table above edits in place.
fn without_document(kind: &str) -> String {
    project_app()
        .split("\n---\n")
        .filter(|doc| !doc.contains(&format!("\nkind: {kind}\n")))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

#[rstest]
#[case::deployment(Rule::ServiceSelector, "Deployment")]
#[case::gateway(Rule::VsGatewayRef, "Gateway")]
#[case::virtual_service(Rule::VsGatewayRef, "VirtualService")]
#[case::service(Rule::VsDestinationHost, "Service")]
fn a_missing_document_is_reported_once_under_its_rule(#[case] rule: Rule, #[case] kind: &str) {
    let text = without_document(kind);
    assert!(
        !text.contains(&format!("\nkind: {kind}\n")),
        "{kind} still present"
    );
    let findings = lint_app(&text);
    assert_eq!(rules_of(&findings), [rule], "findings:{}", show(&findings));
    assert_eq!(findings.len(), 1, "findings:{}", show(&findings));
}

#[rstest]
#[case::host_fqdn(&[("host: wtyfft-svc", "host: wtyfft-svc.wty-istio.svc.cluster.local")])]
#[case::without_header_presence_match(&[("            prefix: /fft\n", "            prefix: /fft\n          withoutHeaders:\n            x-debug: {}\n")])]
#[case::port_omitted_with_one_service_port(&[(VS_PORT, "")])]
#[case::gateway_ref_with_namespace(&[("    - wtyfft-gateway\n", "    - wty-istio/wtyfft-gateway\n")])]
#[case::gateway_ref_and_mesh(&[("    - wtyfft-gateway\n", "    - wtyfft-gateway\n    - mesh\n")])]
#[case::named_target_port(&[("      targetPort: 8080", "      targetPort: http")])]
#[case::revision_label(&[("istio-injection: enabled", "istio.io/rev: default")])]
#[case::pull_never(&[("imagePullPolicy: IfNotPresent", "imagePullPolicy: Never")])]
#[case::pull_policy_defaulted_for_a_tag(&[("          imagePullPolicy: IfNotPresent\n", "")])]
#[case::image_by_digest(&[("image: fft-service:0.1.0", "image: fft-service@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")])]
#[case::registry_with_port_and_tag(&[("image: fft-service:0.1.0", "image: localhost:5000/fft-service:0.1.0")])]
#[case::no_prometheus_path(&[("        prometheus.io/path: \"/metrics\"\n", "")])]
#[case::gateway_https_port(&[("        number: 80\n", "        number: 443\n")])]
#[case::gateway_selects_by_app_label(&[("    istio: ingressgateway # use", "    app: istio-ingressgateway # use")])]
#[case::selector_match_expressions(&[("    matchLabels:\n      app: wtyfft-app", "    matchExpressions:\n      - {key: app, operator: In, values: [wtyfft-app]}")])]
#[case::server_host_dot_namespace(&[(GW_HOSTS, "        - \"./*\"\n---")])]
#[case::server_host_own_namespace(&[(GW_HOSTS, "        - \"wty-istio/*\"\n---")])]
#[case::server_host_any_namespace(&[(GW_HOSTS, "        - \"*/*\"\n---")])]
#[case::wildcard_server_covers_vs_host(&[(GW_HOSTS, "        - \"*.example.com\"\n---"), (VS_HOSTS, "  hosts:\n    - \"fft.example.com\"")])]
#[case::vs_host_upper_layer_of_server(&[(GW_HOSTS, "        - \"fft.example.com\"\n---"), (VS_HOSTS, "  hosts:\n    - \"*.example.com\"")])]
#[case::re2_regex(&[("            prefix: /fft", "            regex: \"/fft(/.*)?\"")])]
#[case::a_later_prefix_no_earlier_one_covers(&[(METRICS_MATCH, "            exact: \"/metrics\"\n      route:\n        - destination:\n            host: wtyfft-svc\n            port:\n              number: 8000\n    - match:\n        - uri:\n            prefix: /metricsx")])]
#[case::same_prefix_other_method(&[(METRICS_MATCH, "            exact: \"/metrics\"\n        - uri:\n            prefix: /fft/real\n          method:\n            exact: GET")])]
#[case::known_pod_annotation(&[(SCRAPE, "        prometheus.io/scrape: \"true\"\n        sidecar.istio.io/proxyCPU: \"100m\"\n")])]
#[case::pod_label_true(&[("      labels:\n        app: wtyfft-app\n", "      labels:\n        app: wtyfft-app\n        sidecar.istio.io/inject: \"true\"\n")])]
#[case::other_gateway_other_host(&[(GW_HOSTS, "        - \"*\"\n---\napiVersion: networking.istio.io/v1alpha3\nkind: Gateway\nmetadata:\n  name: other-gateway\n  namespace: wty-istio\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n    - port:\n        number: 80\n        name: http2\n        protocol: HTTP\n      hosts:\n        - \"admin.example.com\"\n---"), ("    - wtyfft-gateway\n", "    - wtyfft-gateway\n    - other-gateway\n")])]
fn equivalent_spellings_pass(#[case] edits: &[(&str, &str)]) {
    let findings = lint_app(&mutate(edits));
    assert!(findings.is_empty(), "findings:{}", show(&findings));
}

#[test]
fn every_rule_has_a_breaking_variant_in_the_table() {
    // The tables' first column, read back from this file, so that a new rule without a variant
    // fails here.
    let source: String = include_str!("lint.rs")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    for rule in Rule::ALL {
        let variant = format!("(Rule::{:?},", rule);
        assert!(source.contains(&variant), "no variant breaks {rule}");
    }
}

#[test]
fn the_project_manifests_pass() {
    let report = lint::lint_paths(&[manifests()]).unwrap();
    assert!(report.is_clean(), "findings:{}", show(&report.findings));
    assert_eq!((report.files, report.resources), (3, 5));
    assert!(
        report.ingress_source.ends_with("istio-install.yaml"),
        "{}",
        report.ingress_source
    );
}

/// The README's canary is what a user copies: it must lint clean.
#[test]
fn the_canary_example_passes() {
    let dir = harness::config::paths::project_root().join("examples/canary");
    let report = lint::lint_paths(&[dir]).unwrap();
    assert!(report.is_clean(), "findings:{}", show(&report.findings));
    assert_eq!((report.files, report.resources), (2, 7));
}

#[test]
fn the_articles_manifests_pass_as_published() {
    let report = lint::lint_paths(&[fixture("article-app.yaml")]).unwrap();
    assert!(report.is_clean(), "findings:{}", show(&report.findings));
    assert_eq!(report.resources, 5);
    assert_eq!(report.ingress_source, "Istio's chart defaults");
}

#[test]
fn the_articles_manifests_pass_with_the_project_install_overlay() {
    let report = lint::lint_paths(&[
        fixture("article-app.yaml"),
        manifests().join("istio-install.yaml"),
    ])
    .unwrap();
    assert!(report.is_clean(), "findings:{}", show(&report.findings));
}

#[test]
fn gateway_ports_come_from_the_install_overlay() {
    // An overlay that publishes the gateway on 8081 only: port 80 is no longer served.
    let dir = tempfile::tempdir().unwrap();
    let overlay = std::fs::read_to_string(manifests().join("istio-install.yaml"))
        .unwrap()
        .replace("port: 80\n", "port: 8081\n");
    std::fs::write(dir.path().join("istio-install.yaml"), overlay).unwrap();
    std::fs::write(dir.path().join("app.yaml"), project_app()).unwrap();
    let report = lint::lint_paths(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(
        report.rules_broken(),
        [Rule::GatewayPort],
        "{}",
        show(&report.findings)
    );
    assert!(
        report.findings[0].message.contains("8081"),
        "{}",
        report.findings[0]
    );
}

#[test]
fn findings_name_the_field_and_the_fix() {
    let findings = lint_app(&mutate(&[(
        "              number: 8000",
        "              number: 8080",
    )]));
    let [finding] = findings.as_slice() else {
        panic!("expected one finding:{}", show(&findings));
    };
    assert_eq!(finding.kind, "VirtualService");
    assert_eq!(finding.name, "wtyfft-vs");
    assert_eq!(finding.document, 5);
    assert_eq!(
        finding.field,
        "spec.http[0].route[0].destination.port.number"
    );
    assert!(finding.message.contains("targetPort"), "{finding}");
    assert!(finding.fix.contains("8000"), "{finding}");
    let line = finding.to_string();
    assert!(
        line.starts_with(&format!(
            "vs-destination-port manifests/app.yaml:{} VirtualService/wtyfft-vs: ",
            finding.line
        )),
        "{line}"
    );
    assert!(line.contains(" — fix: "), "{line}");
}

// The CLI, as a person or a script runs it.

fn harness(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run the harness binary")
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn write_variant(dir: &Path, edits: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("app.yaml");
    std::fs::write(&path, mutate(edits)).unwrap();
    path
}

#[test]
fn cli_clean_manifests_exit_0_with_a_summary() {
    let output = harness(&["lint"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with(&format!(
            "lint: 5 resources in 3 files, {} rules, no findings (",
            Rule::ALL.len()
        )),
        "{text}"
    );
}

#[test]
fn cli_findings_exit_1_one_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let app = write_variant(
        dir.path(),
        &[
            ("image: fft-service:0.1.0", "image: fft-service:latest"),
            ("        number: 80\n", "        number: 8080\n"),
        ],
    );
    let output = harness(&["lint", app.to_str().unwrap()]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let file = app.display().to_string();
    assert!(
        lines[0].starts_with(&format!("image-pull {file}:")),
        "{text}"
    );
    assert!(lines[0].contains(" Deployment/wtyfft-deploy: "), "{text}");
    assert!(
        lines[1].starts_with(&format!("gateway-port {file}:")),
        "{text}"
    );
    assert!(lines.iter().all(|l| l.contains(" — fix: ")), "{text}");
}

#[test]
fn cli_json_lists_findings_for_machines() {
    let dir = tempfile::tempdir().unwrap();
    let app = write_variant(dir.path(), &[("host: wtyfft-svc", "host: wtyfft")]);
    let output = harness(&["lint", "--format", "json", app.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["clean"], false);
    assert_eq!(report["resources"], 5);
    let findings: Vec<Finding> = serde_json::from_value(report["findings"].clone()).unwrap();
    assert_eq!(rules_of(&findings), [Rule::VsDestinationHost]);
    assert_eq!(findings[0].name, "wtyfft-vs");
    assert_eq!(report["findings"][0]["rule"], "vs-destination-host");

    let clean = harness(&["lint", "--format", "json"]);
    assert_eq!(clean.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&clean.stdout).unwrap();
    assert_eq!(report["clean"], true);
    assert_eq!(report["findings"], serde_json::json!([]));
}

#[test]
fn cli_unparsable_file_exits_2_naming_file_and_line() {
    // The article's dump of the gateway Service, as published: the blog wrapped a block scalar,
    // which is no longer YAML.
    let published = fixture("article-ingressgateway-service.yaml");
    let output = harness(&["lint", published.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("article-ingressgateway-service.yaml"), "{err}");
    assert!(err.contains("line 8"), "{err}");
    assert!(output.stdout.is_empty());
}

#[test]
fn cli_unknown_istio_field_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let app = write_variant(dir.path(), &[("  gateways:\n", "  gateway:\n")]);
    let output = harness(&["lint", "--format", "json", app.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let error: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("unknown field `gateway`"), "{message}");
    assert_eq!(error["error"]["file"], app.to_str().unwrap());
}

#[test]
fn cli_missing_file_exits_2() {
    let output = harness(&["lint", "no/such/manifest.yaml"]);
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("no/such/manifest.yaml"), "{err}");
}

#[test]
fn cli_directory_lints_its_yaml_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yml"), project_app()).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
    let output = harness(&["lint", dir.path().to_str().unwrap()]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.starts_with("lint: 5 resources in 1 file,"), "{text}");

    let empty = tempfile::tempdir().unwrap();
    let output = harness(&["lint", empty.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn findings_from_files_point_at_the_fields_line() {
    let dir = tempfile::tempdir().unwrap();
    let app = write_variant(
        dir.path(),
        &[("      targetPort: 8080", "      targetPort: 9090")],
    );
    let report = lint::lint_paths(std::slice::from_ref(&app)).unwrap();
    let [finding] = report.findings.as_slice() else {
        panic!("expected one finding:{}", show(&report.findings));
    };
    let text = std::fs::read_to_string(&app).unwrap();
    let line = text.lines().nth(finding.line - 1).unwrap();
    assert_eq!(line.trim(), "targetPort: 9090", "{finding}");
}

/// The project's three files in a directory, with `edit` applied to one of them.
fn project_dir_with(file: &str, from: &str, to: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["app.yaml", "istio-install.yaml", "kind-cluster.yaml"] {
        let mut text = std::fs::read_to_string(manifests().join(name)).unwrap();
        if name == file {
            assert_eq!(text.matches(from).count(), 1, "{from:?} in {name}");
            text = text.replacen(from, to, 1);
        }
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

#[rstest]
#[case::mapping_for_another_port(
    Rule::KindPortMapping,
    "kind-cluster.yaml",
    "- containerPort: 30001",
    "- containerPort: 30002"
)]
#[case::node_port_moved_in_overlay(
    Rule::KindPortMapping,
    "istio-install.yaml",
    "nodePort: 30001",
    "nodePort: 31080"
)]
#[case::no_mappings(
    Rule::KindPortMapping,
    "kind-cluster.yaml",
    "    extraPortMappings:\n",
    "    extraPortMappingz:\n"
)]
#[case::overlay_drops_http2(
    Rule::GatewayPort,
    "istio-install.yaml",
    "              - name: http2\n                port: 80\n",
    "              - name: http2\n                port: 8088\n"
)]
#[case::overlay_relabels_gateway(
    Rule::GatewaySelector,
    "istio-install.yaml",
    "        enabled: true\n",
    "        enabled: true\n        label:\n          istio: edge-gateway\n"
)]
fn a_broken_cluster_or_install_file_is_reported_under_its_rule(
    #[case] rule: Rule,
    #[case] file: &str,
    #[case] from: &str,
    #[case] to: &str,
) {
    let dir = project_dir_with(file, from, to);
    let report = lint::lint_paths(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(
        report.rules_broken(),
        [rule],
        "findings:{}",
        show(&report.findings)
    );
}

#[test]
fn without_a_kind_configuration_no_mapping_is_required() {
    let report = lint::lint_paths(&[
        manifests().join("app.yaml"),
        manifests().join("istio-install.yaml"),
    ])
    .unwrap();
    assert!(report.is_clean(), "findings:{}", show(&report.findings));
}

/// The article's gateway Service as `kubectl get -o yaml` printed it (without the annotation the
/// blog wrapped), when it was installed with five ports.
const INSTALLED_GATEWAY_SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata:
  labels:
    app: istio-ingressgateway
    istio: ingressgateway
  name: istio-ingressgateway
  namespace: istio-system
spec:
  ports:
  - {name: status-port, nodePort: 30479, port: 15021, protocol: TCP, targetPort: 15021}
  - {name: http2, nodePort: 30001, port: 80, protocol: TCP, targetPort: 8080}
  - {name: https, nodePort: 30477, port: 443, protocol: TCP, targetPort: 8443}
  - {name: tcp, nodePort: 30465, port: 31400, protocol: TCP, targetPort: 31400}
  - {name: tls, nodePort: 31772, port: 15443, protocol: TCP, targetPort: 15443}
  selector:
    app: istio-ingressgateway
    istio: ingressgateway
  type: LoadBalancer
";

#[rstest]
#[case::port_of_the_dump(31400, true)]
#[case::target_port(8080, false)]
fn an_installed_gateway_service_among_the_inputs_gives_the_ports(
    #[case] server_port: u16,
    #[case] clean: bool,
) {
    let app = std::fs::read_to_string(fixture("article-app.yaml"))
        .unwrap()
        .replace(
            "      number: 80\n",
            &format!("      number: {server_port}\n"),
        );
    let mut docs = load_str(Path::new("article-app.yaml"), &app).unwrap();
    docs.extend(load_str(Path::new("gateway-svc.yaml"), INSTALLED_GATEWAY_SERVICE).unwrap());
    let report = lint::lint_documents(&docs);
    // The gateway's own Service is installation, not part of the app.
    assert_eq!(report.resources, 5);
    assert_eq!(report.ingress_source, "gateway-svc.yaml");
    if clean {
        assert!(report.is_clean(), "findings:{}", show(&report.findings));
    } else {
        assert_eq!(
            report.rules_broken(),
            [Rule::GatewayPort],
            "{}",
            show(&report.findings)
        );
    }
}

#[test]
fn a_service_moved_with_its_references_is_only_in_the_wrong_namespace() {
    let findings = lint_app(&mutate(&[
        (
            "name: wtyfft-svc\n  namespace: wty-istio",
            "name: wtyfft-svc\n  namespace: fft",
        ),
        ("host: wtyfft-svc", "host: wtyfft-svc.fft.svc.cluster.local"),
    ]));
    assert_eq!(
        rules_of(&findings),
        [Rule::SingleNamespace],
        "{}",
        show(&findings)
    );
    assert_eq!(findings.len(), 1, "{}", show(&findings));
}

/// A warning (requests still work) is printed but passes; an error fails.
#[test]
fn cli_warnings_pass_errors_fail() {
    let dir = tempfile::tempdir().unwrap();
    let app = write_variant(
        dir.path(),
        &[(
            "prometheus.io/scrape: \"true\"",
            "prometheus.io/scrape: \"false\"",
        )],
    );
    let output = harness(&["lint", app.to_str().unwrap()]);
    let text = stdout(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "a warning alone passes: {text}"
    );
    assert!(text.starts_with("prometheus-annotations "), "{text}");
    assert!(text.contains("(warning: requests still work)"), "{text}");
    let summary = String::from_utf8_lossy(&output.stderr);
    assert!(
        summary.contains("1 finding: 0 errors, 1 warning"),
        "{summary}"
    );

    let app = write_variant(
        dir.path(),
        &[
            (
                "prometheus.io/scrape: \"true\"",
                "prometheus.io/scrape: \"false\"",
            ),
            ("image: fft-service:0.1.0", "image: fft-service:latest"),
        ],
    );
    let output = harness(&["lint", app.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
}

/// `--format github`: one workflow command per finding, file and line as properties, the text
/// escaped as actions/toolkit does, so GitHub shows each as an annotation on its line.
#[test]
fn cli_github_format_annotates_each_line() {
    let dir = tempfile::tempdir().unwrap();
    let app = write_variant(
        dir.path(),
        &[
            ("image: fft-service:0.1.0", "image: fft-service:latest"),
            (
                "prometheus.io/scrape: \"true\"",
                "prometheus.io/scrape: \"false\"",
            ),
        ],
    );
    let output = harness(&["lint", "--format", "github", app.to_str().unwrap()]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let file = app.display().to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let image = lines
        .iter()
        .find(|l| l.contains("title=image-pull (error)"))
        .expect("the image-pull annotation");
    assert!(
        image.starts_with(&format!("::error file={file},line=")),
        "{image}"
    );
    let warning = lines
        .iter()
        .find(|l| l.starts_with("::warning "))
        .expect("the warning annotation");
    assert!(
        warning.contains("title=prometheus-annotations (warning)"),
        "{warning}"
    );
    for line in &lines {
        let (properties, message) = line.split_once("::").unwrap().1.split_once("::").unwrap();
        let line_number: usize = properties
            .split(',')
            .find_map(|p| p.strip_prefix("line="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(line_number > 1, "{line}");
        assert!(
            message.contains(" — fix: ") && !message.contains('\n'),
            "{line}"
        );
    }

    let unreadable = dir.path().join("broken.yaml");
    std::fs::write(&unreadable, "kind: [unclosed\n").unwrap();
    let output = harness(&["lint", "--format", "github", unreadable.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stdout(&output).starts_with(&format!("::error file={},line=", unreadable.display())));
}

/// `--format sarif`: valid SARIF 2.1.0 (checked against the OASIS schema), every rule described,
/// one result per finding at its file and line.
#[test]
fn cli_sarif_is_valid_sarif_with_a_result_per_finding() {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("sarif-schema-2.1.0.json")).unwrap())
            .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the SARIF schema compiles");
    let dir = tempfile::tempdir().unwrap();
    let app = write_variant(
        dir.path(),
        &[
            ("image: fft-service:0.1.0", "image: fft-service:latest"),
            ("host: wtyfft-svc", "host: wtyfft"),
        ],
    );
    let output = harness(&["lint", "--format", "sarif", app.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let sarif: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&sarif)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "not valid SARIF: {errors:?}");
    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    assert_eq!(
        run["tool"]["driver"]["rules"].as_array().unwrap().len(),
        Rule::ALL.len()
    );
    let results = run["results"].as_array().unwrap();
    let ids: Vec<&str> = results
        .iter()
        .map(|r| r["ruleId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["image-pull", "vs-destination-host"]);
    for result in results {
        assert_eq!(result["level"], "error");
        let location = &result["locations"][0]["physicalLocation"];
        assert_eq!(
            location["artifactLocation"]["uri"],
            app.display().to_string()
        );
        assert!(location["region"]["startLine"].as_u64().unwrap() > 1);
    }

    // A clean run is valid SARIF too, with no result.
    let clean = harness(&["lint", "--format", "sarif"]);
    assert_eq!(clean.status.code(), Some(0));
    let sarif: serde_json::Value = serde_json::from_slice(&clean.stdout).unwrap();
    assert!(validator.is_valid(&sarif));
    assert_eq!(sarif["runs"][0]["results"], serde_json::json!([]));
}

/// The injector prefers the pod's label to its (deprecated) annotation: a label `"true"` keeps
/// the sidecar whatever the annotation says, and only the deprecation is reported; an annotation
/// `"false"` alone keeps the sidecar out, an error.
#[test]
fn the_inject_label_wins_over_the_annotation() {
    let with = |label: Option<&str>, annotation: &str| {
        let label = label
            .map(|v| format!("        sidecar.istio.io/inject: \"{v}\"\n"))
            .unwrap_or_default();
        mutate(&[
            (
                "      labels:\n        app: wtyfft-app\n",
                &format!("      labels:\n        app: wtyfft-app\n{label}"),
            ),
            (
                SCRAPE,
                &format!("{SCRAPE}        sidecar.istio.io/inject: \"{annotation}\"\n"),
            ),
        ])
    };
    let findings = lint_app(&with(Some("true"), "false"));
    assert_eq!(
        rules_of(&findings),
        [Rule::IstioAnnotation],
        "{}",
        show(&findings)
    );
    assert!(
        findings
            .iter()
            .all(|f| f.severity == lint::Severity::Warning)
    );

    let findings = lint_app(&with(None, "false"));
    assert_eq!(
        rules_of(&findings),
        [Rule::SidecarInjection, Rule::IstioAnnotation],
        "{}",
        show(&findings)
    );
    let injection = findings
        .iter()
        .find(|f| f.rule == Rule::SidecarInjection)
        .unwrap();
    assert_eq!(injection.severity, lint::Severity::Error);
    assert!(
        injection
            .field
            .ends_with("metadata.annotations[sidecar.istio.io/inject]"),
        "{injection}"
    );
}
