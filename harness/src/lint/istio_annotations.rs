//! The Istio annotations `istioctl analyze` knows (IST0108 UnknownAnnotation, IST0107
//! MisplacedAnnotation, IST0135 DeprecatedAnnotation), with the resources each applies to, as
//! istio/api `annotation/annotations.yaml` lists them at tag 1.31.0-alpha.0 (68 entries).

/// One known annotation.
pub(crate) struct KnownAnnotation {
    pub name: &'static str,
    /// The kinds it may be set on (`Any` for all).
    pub resources: &'static [&'static str],
    pub deprecated: bool,
}

pub(crate) const KNOWN: &[KnownAnnotation] = &[
    KnownAnnotation {
        name: "prometheus.istio.io/merge-metrics",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "alpha.istio.io/kubernetes-serviceaccounts",
        resources: &["Service"],
        deprecated: true,
    },
    KnownAnnotation {
        name: "alpha.istio.io/canonical-serviceaccounts",
        resources: &["Service"],
        deprecated: true,
    },
    KnownAnnotation {
        name: "networking.istio.io/exportTo",
        resources: &["Service"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/inject",
        resources: &["Pod"],
        deprecated: true,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/status",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/rewriteAppHTTPProbers",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/discoveryAddress",
        resources: &["Pod"],
        deprecated: true,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/proxyImage",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/proxyImageType",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/proxyCPU",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/proxyCPULimit",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/proxyMemory",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/proxyMemoryLimit",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/interceptionMode",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/bootstrapOverride",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/statsInclusionPrefixes",
        resources: &["Pod"],
        deprecated: true,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/statsInclusionSuffixes",
        resources: &["Pod"],
        deprecated: true,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/statsInclusionRegexps",
        resources: &["Pod"],
        deprecated: true,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/statsHistogramBuckets",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/statsFlushInterval",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/statsEvictionInterval",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/statsHistogramBins",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/userVolume",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/userVolumeMount",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "status.sidecar.istio.io/port",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/logLevel",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/componentLogLevel",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/agentLogLevel",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/nativeSidecar",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "readiness.status.sidecar.istio.io/initialDelaySeconds",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "readiness.status.sidecar.istio.io/periodSeconds",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "readiness.status.sidecar.istio.io/failureThreshold",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "readiness.status.sidecar.istio.io/applicationPorts",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "traffic.istio.io/nodeSelector",
        resources: &["Service"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "traffic.sidecar.istio.io/includeOutboundIPRanges",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "traffic.sidecar.istio.io/excludeOutboundIPRanges",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "traffic.sidecar.istio.io/includeInboundPorts",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "traffic.sidecar.istio.io/excludeInboundPorts",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "traffic.sidecar.istio.io/excludeInterfaces",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "traffic.sidecar.istio.io/includeOutboundPorts",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "traffic.sidecar.istio.io/excludeOutboundPorts",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "traffic.sidecar.istio.io/kubevirtInterfaces",
        resources: &["Pod"],
        deprecated: true,
    },
    KnownAnnotation {
        name: "kubernetes.io/ingress.class",
        resources: &["Ingress"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "galley.istio.io/analyze-suppress",
        resources: &["Any"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "proxy.istio.io/config",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "istio.io/dry-run",
        resources: &["AuthorizationPolicy"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "istio.io/rev",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "proxy.istio.io/overrides",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "inject.istio.io/templates",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/extraStatTags",
        resources: &["Pod"],
        deprecated: true,
    },
    KnownAnnotation {
        name: "istio.io/autoRegistrationGroup",
        resources: &["WorkloadEntry"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "istio.io/workloadController",
        resources: &["WorkloadEntry"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "istio.io/connectedAt",
        resources: &["WorkloadEntry"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "istio.io/disconnectedAt",
        resources: &["WorkloadEntry"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "topology.istio.io/controlPlaneClusters",
        resources: &["Namespace"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "gateway.istio.io/controller-version",
        resources: &["Any"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "ambient.istio.io/redirection",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "ambient.istio.io/waypoint-inbound-binding",
        resources: &["GatewayClass", "Gateway"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "gateway.istio.io/service-account",
        resources: &["Gateway"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "gateway.istio.io/name-override",
        resources: &["Gateway"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "networking.istio.io/service-type",
        resources: &["Gateway"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "networking.istio.io/traffic-distribution",
        resources: &["Namespace", "Service", "ServiceEntry"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "istio.io/use-waypoint-canary-weight",
        resources: &["Service", "ServiceEntry", "Namespace"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "ambient.istio.io/bypass-inbound-capture",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "istio.io/reroute-virtual-interfaces",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "ambient.istio.io/dns-capture",
        resources: &["Pod"],
        deprecated: false,
    },
    KnownAnnotation {
        name: "sidecar.istio.io/statsCompression",
        resources: &["Pod"],
        deprecated: true,
    },
];
