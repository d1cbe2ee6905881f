#!/usr/bin/env bash
# Installs the pinned kind, istioctl and (when absent) kubectl into .tools/bin, verifying every
# download against its sha256: the pin in versions.env when there is one, and always the
# checksum the release publishes beside the asset (both must agree).
#
# Usage: scripts/install-tools.sh [--dry-run|--print] [kind] [istioctl] [kubectl]
#   no tool named: all three. ISTIO_VERSION=1.30.4 installs that istioctl instead of the pin
#   (as .tools/bin/istioctl-1.30.4; .tools/bin/istioctl points at the last one installed).
#   --dry-run / --print: print what would be downloaded and verified; change nothing.
#   E2E_OFFLINE=1: download nothing; fail if a tool is missing.
# Supports linux and darwin on amd64 and arm64. The harness looks in .tools/bin before PATH.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
# INSTALL_TOOLS_BIN_DIR: install elsewhere (the harness only looks in .tools/bin and on PATH).
bin_dir="${INSTALL_TOOLS_BIN_DIR:-$root/.tools/bin}"

requested_istio="${ISTIO_VERSION:-}"
# versions.env is plain KEY=VALUE lines (checked by the harness's parser).
# shellcheck disable=SC1091
source "$root/versions.env"
ISTIO_VERSION="${requested_istio:-$ISTIO_VERSION}"

dry_run=0
tools=()
for arg in "$@"; do
  case "$arg" in
    --dry-run | --print) dry_run=1 ;;
    kind | istioctl | kubectl) tools+=("$arg") ;;
    -h | --help)
      sed -n '2,12p' "$0"
      exit 0
      ;;
    *)
      echo "install-tools.sh: unknown argument '$arg' (expected --dry-run, kind, istioctl, kubectl)" >&2
      exit 2
      ;;
  esac
done
if [[ ${#tools[@]} -eq 0 ]]; then
  tools=(kind istioctl kubectl)
fi

case "$(uname -s)" in
  Linux) os=linux ;;
  Darwin) os=darwin ;;
  *)
    echo "install-tools.sh: unsupported OS $(uname -s) (linux and darwin only)" >&2
    exit 1
    ;;
esac
case "$(uname -m)" in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *)
    echo "install-tools.sh: unsupported architecture $(uname -m) (amd64 and arm64 only)" >&2
    exit 1
    ;;
esac
platform_key="$(printf '%s_%s' "$os" "$arch" | tr '[:lower:]' '[:upper:]')"

say() { printf 'install-tools: %s\n' "$*"; }

sha256_of() {
  if command -v sha256sum >/dev/null; then
    sha256sum "$1" | cut -d' ' -f1
  else
    shasum -a 256 "$1" | cut -d' ' -f1
  fi
}

# The value of the variable named $1 in versions.env, or empty.
pinned() {
  local name="$1"
  printf '%s' "${!name:-}"
}

# download URL DEST PINNED_SHA: fetches URL and URL's published checksum (SUFFIX), checks the
# file against both, and moves it to DEST only when they agree.
download_verified() {
  local url="$1" dest="$2" pin="$3" suffix="$4"
  if [[ $dry_run -eq 1 ]]; then
    say "would download $url"
    say "  verify against ${url}${suffix}${pin:+ and the pin $pin}"
    say "  install as $dest"
    return
  fi
  if [[ "${E2E_OFFLINE:-0}" == "1" ]]; then
    echo "install-tools.sh: E2E_OFFLINE=1 forbids downloading $url" >&2
    exit 1
  fi
  local tmp
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" RETURN
  say "downloading $url"
  curl -fsSL --retry 3 -o "$tmp/asset" "$url"
  curl -fsSL --retry 3 -o "$tmp/asset.sha256" "${url}${suffix}"
  local published actual
  published="$(cut -d' ' -f1 <"$tmp/asset.sha256" | tr -d '[:space:]')"
  actual="$(sha256_of "$tmp/asset")"
  if [[ "$actual" != "$published" ]]; then
    echo "install-tools.sh: $url: sha256 $actual does not match the published $published" >&2
    exit 1
  fi
  if [[ -n "$pin" && "$actual" != "$pin" ]]; then
    echo "install-tools.sh: $url: sha256 $actual does not match the pin $pin in versions.env" >&2
    exit 1
  fi
  say "sha256 verified: $actual"
  mkdir -p "$(dirname "$dest")"
  mv "$tmp/asset" "$dest"
}

install_kind() {
  local dest="$bin_dir/kind"
  if [[ -x "$dest" ]] && "$dest" version 2>/dev/null | grep -q "kind $KIND_VERSION "; then
    say "kind $KIND_VERSION already in $dest"
    return
  fi
  download_verified \
    "https://github.com/kubernetes-sigs/kind/releases/download/$KIND_VERSION/kind-$os-$arch" \
    "$dest" "$(pinned "KIND_SHA256_$platform_key")" ".sha256sum"
  [[ $dry_run -eq 1 ]] || chmod +x "$dest"
}

install_istioctl() {
  local dest="$bin_dir/istioctl-$ISTIO_VERSION"
  # The version as a whole word: 1.31.1 must not be taken for 1.31.10.
  if [[ -x "$dest" ]] && "$dest" version --remote=false 2>/dev/null |
    grep -Eq "(^|[^0-9.])${ISTIO_VERSION//./\\.}([^0-9.]|\$)"; then
    say "istioctl $ISTIO_VERSION already in $dest"
  else
    local asset_platform
    case "$os-$arch" in
      linux-amd64) asset_platform=linux-amd64 ;;
      linux-arm64) asset_platform=linux-arm64 ;;
      darwin-amd64) asset_platform=osx ;;
      darwin-arm64) asset_platform=osx-arm64 ;;
    esac
    local version_key archive
    version_key="$(printf '%s' "$ISTIO_VERSION" | tr '.' '_')"
    archive="$bin_dir/istioctl-$ISTIO_VERSION.tar.gz"
    download_verified \
      "https://github.com/istio/istio/releases/download/$ISTIO_VERSION/istioctl-$ISTIO_VERSION-$asset_platform.tar.gz" \
      "$archive" "$(pinned "ISTIOCTL_${version_key}_SHA256_$platform_key")" ".sha256"
    if [[ $dry_run -eq 1 ]]; then
      say "  unpack istioctl to $dest"
    else
      tar -xzf "$archive" -C "$bin_dir" istioctl
      mv "$bin_dir/istioctl" "$dest"
      rm -f "$archive"
      chmod +x "$dest"
    fi
  fi
  if [[ $dry_run -eq 1 ]]; then
    say "would link $bin_dir/istioctl -> istioctl-$ISTIO_VERSION"
  else
    ln -sfn "istioctl-$ISTIO_VERSION" "$bin_dir/istioctl"
  fi
}

install_kubectl() {
  local found
  if found="$(PATH="$bin_dir:$PATH" command -v kubectl)"; then
    say "kubectl already present at $found (not replaced)"
    return
  fi
  download_verified \
    "https://dl.k8s.io/release/$KUBECTL_VERSION/bin/$os/$arch/kubectl" \
    "$bin_dir/kubectl" "$(pinned "KUBECTL_SHA256_$platform_key")" ".sha256"
  [[ $dry_run -eq 1 ]] || chmod +x "$bin_dir/kubectl"
}

say "platform $os/$arch; kind $KIND_VERSION, istioctl $ISTIO_VERSION, kubectl $KUBECTL_VERSION; into $bin_dir"
for tool in "${tools[@]}"; do
  "install_$tool"
done
if [[ $dry_run -eq 0 ]]; then
  say "done; the harness finds these in .tools/bin (for a shell: export PATH=\"$bin_dir:\$PATH\")"
fi
