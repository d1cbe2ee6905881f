#!/usr/bin/env bash
# Builds fft-service as a fully static release binary, so the image needs no base image
# (service/Dockerfile is FROM scratch) and prints the binary's path on stdout.
#
# The target is given explicitly (the host triple): with --target, RUSTFLAGS apply to the
# service only, not to build scripts and proc macros, which must stay dynamically linked.
#
# Usage:   scripts/build-static-binary.sh
# Then, to build the image (the Dockerfile expects `fft-service` next to it in the context):
#   bin=$(scripts/build-static-binary.sh)
#   ctx=$(mktemp -d) && cp "$bin" "$ctx/fft-service"
#   docker build -f service/Dockerfile -t fft-service:dev "$ctx"
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
triple="$(rustc -vV | sed -n 's/^host: //p')"
if [[ -z "$triple" ]]; then
    echo "error: could not read the host triple from 'rustc -vV'" >&2
    exit 1
fi

# Cargo's progress goes to stderr; stdout carries only the path.
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --manifest-path "$root/Cargo.toml" --release --locked \
    -p fft-service --target "$triple" >&2

binary="$root/target/$triple/release/fft-service"
if [[ ! -x "$binary" ]]; then
    echo "error: cargo finished but $binary does not exist" >&2
    exit 1
fi
echo "$binary"
