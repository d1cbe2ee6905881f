# Shared by the fake kind, istioctl, docker and kubectl used in the harness's tests.
#
# Configuration comes from the environment or from `fake-tools.env` beside the scripts (tests
# copy the scripts into a temporary directory and write that file, so parallel tests never share
# state):
#   FAKE_TOOLS_LOG    file each invocation appends "<tool> <args>" to
#   FAKE_TOOLS_STATE  directory holding the fake kind's cluster list (`clusters`)
#   FAKE_FAIL         space-separated failures to inject: kind-create, kind-load,
#                     kind-load-digest, kind-delete-noop, istioctl-install, docker-info,
#                     kubectl-logs, docker-api-1.41 (a daemon older than `save --platform`),
#                     docker-cli-27 (a CLI older than it), istioctl-analyze-errors
#   FAKE_ISTIO_VERSION  what `istioctl version` reports (default 1.31.1)
#   FAKE_DOCKER_ARCH    what `docker info --format {{.Architecture}}` reports (default x86_64)
#   FAKE_RUSTUP_TARGETS targets `rustup target list --installed` adds to the host's
# and files in FAKE_TOOLS_STATE: `publish-PORT` (containers `docker ps` says publish PORT),
# `port-NODE` (what `docker port NODE …` prints), `images` (what `docker image inspect` finds).
# shellcheck shell=bash

fake_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -f "$fake_dir/fake-tools.env" ]]; then
  # shellcheck disable=SC1091
  source "$fake_dir/fake-tools.env"
fi
fake_log="${FAKE_TOOLS_LOG:-/dev/null}"
fake_state="${FAKE_TOOLS_STATE:-$fake_dir/state}"
mkdir -p "$fake_state"
touch "$fake_state/clusters"

fake_record() {
  printf '%s\n' "$*" >>"$fake_log"
}

fake_fails() {
  case " ${FAKE_FAIL:-} " in
    *" $1 "*) return 0 ;;
  esac
  return 1
}

# The value after `--name` (or the default kind cluster name).
fake_flag() {
  local flag="$1" default="$2"
  shift 2
  while [[ $# -gt 0 ]]; do
    if [[ "$1" == "$flag" && $# -gt 1 ]]; then
      printf '%s' "$2"
      return
    fi
    shift
  done
  printf '%s' "$default"
}
