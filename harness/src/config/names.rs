//! The names and ports the manifests, the service and the harness agree on, in one place.
//! `harness lint` and the tests check that `manifests/` still says the same.

/// The tutorial's namespace (`manifests/app.yaml`).
pub(crate) const APP_NAMESPACE: &str = "wty-istio";
/// The port the service listens on in its container (`--listen 0.0.0.0:8080`).
pub(crate) const APP_PORT: u16 = 8080;
/// The service's own Prometheus endpoint.
pub(crate) const METRICS_PATH: &str = "/metrics";
/// The header the service sets on every answer, naming its replica.
pub(crate) const SERVED_BY_HEADER: &str = "x-served-by";
/// The repository part of every image this project builds.
pub const IMAGE_REPOSITORY: &str = "fft-service";
/// Where istioctl installs Istio.
pub(crate) const ISTIO_NAMESPACE: &str = "istio-system";
/// istiod's Deployment.
pub(crate) const ISTIOD: &str = "istiod";
/// The ingress gateway's Deployment and Service.
pub(crate) const INGRESS_GATEWAY: &str = "istio-ingressgateway";
/// The labels of Istio's default ingress gateway pods (the chart's `istio` and `app`).
pub(crate) const INGRESS_GATEWAY_LABELS: [(&str, &str); 2] =
    [("istio", "ingressgateway"), ("app", INGRESS_GATEWAY)];
/// Every label of those pods as istioctl's default install makes them
/// (`manifests/charts/gateways/istio-ingress/templates/deployment.yaml`, istio 1.31): what a
/// VirtualService match's `sourceLabels` is compared with on the gateway.
pub(crate) const INGRESS_GATEWAY_POD_LABELS: [(&str, &str); 13] = [
    ("istio", "ingressgateway"),
    ("app", INGRESS_GATEWAY),
    ("heritage", "Tiller"),
    ("release", "istio"),
    ("chart", "gateways"),
    ("service.istio.io/canonical-name", INGRESS_GATEWAY),
    ("service.istio.io/canonical-revision", "latest"),
    ("istio.io/rev", "default"),
    ("install.operator.istio.io/owning-resource", "unknown"),
    ("operator.istio.io/component", "IngressGateways"),
    ("sidecar.istio.io/inject", "false"),
    ("app.kubernetes.io/name", INGRESS_GATEWAY),
    ("istio.io/dataplane-mode", "none"),
];
/// The label the Gateway selects the ingress gateway by, as a label selector (the first of
/// [`INGRESS_GATEWAY_LABELS`]).
pub(crate) const GATEWAY_SELECTOR: &str = "istio=ingressgateway";
/// The port istioctl's gateway Envoy listens on for `http2` (its Service's targetPort, as
/// `manifests/istio-install.yaml` installs it). Other installs differ (the gateway chart's is
/// 80): the `existing` target reads it from the live Service (`k8s/mesh.rs`).
pub const GATEWAY_TARGET_PORT: u16 = 8080;
/// What Istio's gateway writes into `server` on every answer.
pub(crate) const GATEWAY_SERVER_NAME: &str = "istio-envoy";
/// Added by Envoy's router to every answer that came from an upstream.
pub(crate) const UPSTREAM_SERVICE_TIME: &str = "x-envoy-upstream-service-time";
/// The header the resilience load numbers its requests with, so that the local gateway's access
/// log can say why one failed (Envoy replaces an edge client's `x-request-id`).
pub(crate) const LOAD_REQUEST_ID_HEADER: &str = "x-e2e-request";
/// The service's Cargo package and binary.
pub(crate) const SERVICE_PACKAGE: &str = "fft-service";

/// `registry.example/team/fft-service:tag@sha256:…` → `fft-service`.
pub(crate) fn image_repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

/// Whether `image` is this project's service image, whatever its registry, tag or digest.
pub(crate) fn is_service_image(image: &str) -> bool {
    image_repository(image) == IMAGE_REPOSITORY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_selector_is_the_first_gateway_label() {
        let (key, value) = INGRESS_GATEWAY_LABELS[0];
        assert_eq!(GATEWAY_SELECTOR, format!("{key}={value}"));
    }

    #[test]
    fn the_service_image_is_recognised_by_its_repository() {
        assert_eq!(image_repository("fft-service:0.1.0"), "fft-service");
        assert_eq!(
            image_repository("ghcr.io/team/fft-service:abc@sha256:01"),
            "fft-service"
        );
        assert_eq!(image_repository("localhost:5000/other:1"), "other");
        assert!(is_service_image("fft-service:3f2a"));
        assert!(!is_service_image("fft-service-debug:1"));
        assert!(!is_service_image("registry/not-fft-service:1"));
    }
}
