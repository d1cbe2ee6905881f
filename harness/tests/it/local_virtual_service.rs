//! The local gateway as an offline VirtualService tester: manifests with the constructs people
//! write after the tutorial (canary header matches and weights, rewrites, redirects, direct
//! responses, faults, CORS, wildcard hosts), served by `harness up --target local` through the
//! real Envoy, and what each request gets, as Istio's gateway would answer it: which Service
//! answered (`x-served-by` names the replica, `<deployment>-local-<n>`), the status, the headers.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use harness::exec::probe::{self, ProbeRequest, ProbeResponse};

use super::local_up::{signal, start_up};

/// `harness up --target local --manifest <paths>`, stopped when dropped.
struct Up {
    child: std::process::Child,
    ingress: SocketAddr,
}

impl Up {
    fn start(manifests: &[&std::path::Path]) -> Result<Self> {
        let mut args = vec!["--manifest".to_string()];
        for path in manifests {
            args.push(path.to_str().context("utf-8 path")?.to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (child, port) = start_up(&args)?;
        Ok(Up {
            child,
            ingress: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    async fn send(&self, request: ProbeRequest) -> Result<ProbeResponse> {
        probe::send(self.ingress, &request).await
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        signal(&self.child, libc::SIGTERM);
        let _ = self.child.wait();
    }
}

/// The Deployment whose replica answered, from `x-served-by`.
fn served_by(response: &ProbeResponse) -> Option<String> {
    response
        .header("x-served-by")
        .and_then(|name| name.rsplit_once("-local-"))
        .map(|(deployment, _)| deployment.to_string())
}

const BACKENDS: &str = "examples/canary/backends.yaml";

fn project_file(relative: &str) -> std::path::PathBuf {
    harness::config::paths::project_root().join(relative)
}

fn write_manifest(text: &str) -> Result<tempfile::NamedTempFile> {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile()?;
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    Ok(file)
}

fn post_fft(host: &str) -> ProbeRequest {
    ProbeRequest::new("POST", "/fft?numSamples=16").header("host", host)
}

/// The README's canary, from its two files: testers' header goes to v2, the rest splits 90/10.
/// The split's share is checked with bounds far outside chance (400 requests, 10% expected:
/// the bounds are more than four standard deviations away).
#[tokio::test]
async fn the_readme_canary_routes_testers_to_v2_and_splits_the_rest() -> Result<()> {
    let up = Up::start(&[
        &project_file(BACKENDS),
        &project_file("examples/canary/routes.yaml"),
    ])?;
    for _ in 0..5 {
        let tester = up
            .send(post_fft("fft.example.com").header("x-canary", "true"))
            .await?;
        ensure!(
            tester.status == 200 && served_by(&tester).as_deref() == Some("fft-v2"),
            "a tester's request: {} from {:?}",
            tester.status,
            served_by(&tester)
        );
    }
    let mut v2 = 0;
    const TOTAL: u32 = 400;
    for _ in 0..TOTAL {
        let response = up.send(post_fft("fft.example.com")).await?;
        ensure!(response.status == 200, "status {}", response.status);
        match served_by(&response).as_deref() {
            Some("fft-v2") => v2 += 1,
            Some("fft-v1") => {}
            other => anyhow::bail!("answered by {other:?}"),
        }
    }
    eprintln!("the 90/10 split sent {v2} of {TOTAL} requests to v2");
    ensure!(
        (12..=80).contains(&v2),
        "{v2} of {TOTAL} requests reached v2; a 10% weight gives about 40"
    );
    // The gateway exposes fft.example.com only.
    let other = up.send(post_fft("other.example.com")).await?;
    ensure!(
        other.status == 404 && served_by(&other).is_none(),
        "other host: {}",
        other.status
    );
    Ok(())
}

const ROUTES: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: fft, namespace: shop}
spec:
  hosts: [fft.example.com]
  gateways: [gw]
  http:
    - match: [{method: {exact: GET}, uri: {exact: /fft}}]
      directResponse: {status: 200, body: {string: use POST}}
    - match: [{queryParams: {debug: {exact: "1"}}}]
      redirect: {uri: /debug, redirectCode: 302}
    - match: [{uri: {prefix: /api/}}]
      rewrite: {uri: /}
      route: [{destination: {host: fft-v2}}]
    - match: [{uri: {prefix: /broken}}]
      fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
      route: [{destination: {host: fft-v1}}]
    - match: [{uri: {prefix: /slow}}]
      fault: {delay: {fixedDelay: 300ms, percentage: {value: 100}}}
      rewrite: {uri: /fft}
      route: [{destination: {host: fft-v1}}]
    - match: [{uri: {prefix: /zero}}]
      route: [{destination: {host: fft-zero}}]
    - match: [{uri: {prefix: /nowhere}}]
      route: [{destination: {host: no-such-service}}]
    - match: [{uri: {exact: /metrics}, withoutHeaders: {x-user: {}}}]
      directResponse: {status: 401, body: {string: who are you}}
    - headers: {response: {set: {x-route: default}}}
      corsPolicy: {allowOrigins: [{exact: "https://ok.example"}], allowMethods: [POST]}
      route: [{destination: {host: fft-v1}}]
---
apiVersion: v1
kind: Service
metadata: {name: fft-zero, namespace: shop}
spec:
  selector: {app: fft-zero}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: fft-zero, namespace: shop}
spec:
  replicas: 0
  selector: {matchLabels: {app: fft-zero}}
  template:
    metadata: {labels: {app: fft-zero}}
    spec:
      containers: [{name: fft, image: "fft-service:0.1.0", ports: [{containerPort: 8080}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wild, namespace: shop}
spec:
  hosts: ["*.wild.example"]
  gateways: [gw]
  http:
    - directResponse: {status: 200, body: {string: wild}}
"#;

/// One `harness up` with a VirtualService of each kind; every expectation is Istio's gateway's
/// (route.go and gateway.go, as the golden tests cite them) carried out by the real Envoy.
#[tokio::test]
async fn each_construct_answers_through_the_real_envoy_as_on_istio() -> Result<()> {
    let routes = write_manifest(ROUTES)?;
    let up = Up::start(&[&project_file(BACKENDS), routes.path()])?;
    let mut failures = Vec::new();
    let mut check = |what: &str, ok: bool, response: &ProbeResponse| {
        if !ok {
            failures.push(format!(
                "{what}: status {}, served by {:?}, headers {:?}, body {:?}",
                response.status,
                served_by(response),
                response.headers,
                response.body_text()
            ));
        }
    };

    // Virtual host choice: the Host's port is ignored, its case folded; a wildcard host needs a
    // label in front of it; a host no VirtualService names is a 404 from the gateway.
    for host in [
        "fft.example.com",
        "fft.example.com:31380",
        "FFT.Example.COM",
    ] {
        let r = up.send(post_fft(host)).await?;
        check(
            &format!("POST /fft, Host {host}"),
            r.status == 200 && served_by(&r).as_deref() == Some("fft-v1"),
            &r,
        );
    }
    let r = up
        .send(ProbeRequest::new("GET", "/").header("host", "a.wild.example:8080"))
        .await?;
    check(
        "wildcard host",
        r.status == 200 && r.body_text() == "wild",
        &r,
    );
    let r = up
        .send(ProbeRequest::new("GET", "/").header("host", "wild.example"))
        .await?;
    check(
        "wildcard parent",
        r.status == 404 && served_by(&r).is_none(),
        &r,
    );

    // A method match with a direct response: the gateway answers, no replica.
    let r = up
        .send(ProbeRequest::new("GET", "/fft").header("host", "fft.example.com"))
        .await?;
    check(
        "GET /fft direct response",
        r.status == 200 && r.body_text() == "use POST" && served_by(&r).is_none(),
        &r,
    );

    // A query parameter match with a redirect: Istio does not set Envoy's `strip_query`, so the
    // query stays on the new location.
    let r = up
        .send(ProbeRequest::new("POST", "/fft?debug=1").header("host", "fft.example.com"))
        .await?;
    let location = r.header("location").unwrap_or_default().to_string();
    check(
        "redirect",
        r.status == 302 && location == "http://fft.example.com/debug?debug=1",
        &r,
    );

    // A prefix rewrite: /api/fft reaches the app as /fft.
    let r = up
        .send(ProbeRequest::new("POST", "/api/fft?numSamples=16").header("host", "fft.example.com"))
        .await?;
    check(
        "rewrite /api/ → /",
        r.status == 200 && served_by(&r).as_deref() == Some("fft-v2"),
        &r,
    );

    // An abort fault answers for the app.
    let r = up
        .send(ProbeRequest::new("GET", "/broken").header("host", "fft.example.com"))
        .await?;
    check(
        "abort fault",
        r.status == 418 && served_by(&r).is_none(),
        &r,
    );

    // A delay fault holds the request at least its delay, then the app answers.
    let r = up
        .send(ProbeRequest::new("POST", "/slow?numSamples=16").header("host", "fft.example.com"))
        .await?;
    check(
        "delay fault",
        r.status == 200 && r.elapsed >= Duration::from_millis(300) && served_by(&r).is_some(),
        &r,
    );

    // A Deployment scaled to 0 and a host no Service has: 503 from the gateway, as on a cluster.
    for path in ["/zero", "/nowhere"] {
        let r = up
            .send(ProbeRequest::new("POST", path).header("host", "fft.example.com"))
            .await?;
        check(
            &format!("{path}: 503"),
            r.status == 503 && served_by(&r).is_none(),
            &r,
        );
    }

    // withoutHeaders: only requests without x-user get the 401.
    let r = up
        .send(ProbeRequest::new("GET", "/metrics").header("host", "fft.example.com"))
        .await?;
    check(
        "without x-user",
        r.status == 401 && r.body_text() == "who are you",
        &r,
    );
    let r = up
        .send(
            ProbeRequest::new("GET", "/metrics")
                .header("host", "fft.example.com")
                .header("x-user", "a"),
        )
        .await?;
    check(
        "with x-user",
        r.status == 200 && served_by(&r).as_deref() == Some("fft-v1"),
        &r,
    );

    // Response header operations on the default route.
    let r = up.send(post_fft("fft.example.com")).await?;
    check(
        "response header set",
        r.header("x-route") == Some("default"),
        &r,
    );

    // CORS: Envoy answers an allowed origin's preflight itself.
    let preflight = ProbeRequest::new("OPTIONS", "/fft")
        .header("host", "fft.example.com")
        .header("origin", "https://ok.example")
        .header("access-control-request-method", "POST");
    let r = up.send(preflight).await?;
    check(
        "CORS preflight",
        r.status == 200
            && r.header("access-control-allow-origin") == Some("https://ok.example")
            && served_by(&r).is_none(),
        &r,
    );

    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}
