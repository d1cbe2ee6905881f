#!/usr/bin/env bash
# The article's steps by hand, with kind, istioctl and kubectl: a person's walk-through of what
# the harness automates (it is not used by the tests). Each step says what the article did and
# what is different here and why.
#
# Needs: Docker, and the pinned tools (scripts/install-tools.sh puts them in .tools/bin).
# Leaves the cluster running; delete it with: kind delete cluster --name "$CLUSTER"
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export PATH="$root/.tools/bin:$PATH"
# shellcheck disable=SC1091
source versions.env

CLUSTER="${CLUSTER:-istio-fft-e2e-article}"
CONTEXT="kind-$CLUSTER"

# 1. A cluster. The article used an existing lab cluster; kind gives a throwaway one. The node
#    image is pinned in the config (a Kubernetes release the pinned Istio supports), and the
#    gateway's nodePort 30001 is published on 127.0.0.1:30001.
kind create cluster --name "$CLUSTER" --config manifests/kind-cluster.yaml --wait 120s

# 2. Istio with an ingress gateway. The overlay keeps the `default` profile, makes the gateway
#    Service a NodePort with http2 pinned to 30001 (the article's port) and lowers requests.
istioctl install -y -f manifests/istio-install.yaml --readiness-timeout 5m --context "$CONTEXT"
kubectl --context "$CONTEXT" -n istio-system rollout status deployment/istiod --timeout=300s
kubectl --context "$CONTEXT" -n istio-system rollout status deployment/istio-ingressgateway --timeout=300s

# 3. The app's image. The article pulled its Go image from a registry; here the Rust service is
#    built locally (a static binary on scratch), tagged by its content so a rebuild is a new
#    image, and copied into the node: never pulled, never :latest. `harness image` prints the
#    name it built.
IMAGE="${IMAGE:-$(cargo run -q -p harness -- image)}"
if ! kind load docker-image "$IMAGE" --name "$CLUSTER"; then
  # Docker's containerd image store can make `kind load docker-image` fail with
  # "content digest ... not found": kind saves the whole multi-platform index, of which only the
  # daemon's platform is present (kind issue 3795). Save just that platform (Docker 28.0 or later)
  # and load the archive.
  case "$(docker info --format '{{.Architecture}}')" in
    x86_64 | amd64) platform=linux/amd64 ;;
    aarch64 | arm64) platform=linux/arm64 ;;
    *) platform="linux/$(docker info --format '{{.Architecture}}')" ;;
  esac
  archive_dir=$(mktemp -d)
  docker save --platform "$platform" -o "$archive_dir/image.tar" "$IMAGE"
  kind load image-archive "$archive_dir/image.tar" --name "$CLUSTER"
  rm -rf "$archive_dir"
fi

# 4. The article's manifests: Namespace (with istio-injection=enabled) first, so the webhook
#    injects the sidecar into the pods the Deployment creates; the image placeholder is replaced
#    by the image just loaded.
sed "s|image: fft-service:0.1.0|image: $IMAGE|" manifests/app.yaml |
  kubectl --context "$CONTEXT" apply --server-side --field-manager istio-fft-e2e -f -
kubectl --context "$CONTEXT" -n wty-istio rollout status deployment/wtyfft-deploy --timeout=180s

# 5. The article's discovery of the gateway address: the gateway pod's node IP and the http2
#    nodePort. The node IP is the kind container's, reachable only from a Linux host with native
#    Docker; 127.0.0.1:30001 (the kind port mapping) works everywhere.
INGRESS_HOST=$(kubectl --context "$CONTEXT" get po -l istio=ingressgateway -n istio-system -o jsonpath='{.items[0].status.hostIP}')
INGRESS_PORT=$(kubectl --context "$CONTEXT" -n istio-system get service istio-ingressgateway -o jsonpath='{.spec.ports[?(@.name=="http2")].nodePort}')
export INGRESS_HOST INGRESS_PORT
echo "article's address: $INGRESS_HOST:$INGRESS_PORT; portable address: 127.0.0.1:30001"

# 6. The article's request through the gateway (config reaches Envoy asynchronously: retry
#    until the route answers, bounded).
curl -sS --retry 30 --retry-delay 2 --retry-all-errors --fail "http://127.0.0.1:30001/fft/real/1024"
echo
if curl -sS --fail --max-time 10 "http://$INGRESS_HOST:$INGRESS_PORT/fft/real/1024"; then
  echo
else
  echo "the article's address $INGRESS_HOST:$INGRESS_PORT is not reachable from this host" \
    "(Docker Desktop and rootless Docker do not route to the node's IP); 127.0.0.1:30001 above is"
fi
