#!/usr/bin/env bash
# System packages the build needs (librdkafka is built from the rdkafka crate, with OpenSSL,
# zlib and zstd), and Prometheus (Debian's 2.42), which the metrics test runs against
# lakectl's endpoint. Installs only what is missing; apt needs root.
set -euo pipefail
needed=(build-essential pkg-config libssl-dev zlib1g-dev curl prometheus)
missing=()
for pkg in "${needed[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "[deps] installing ${missing[*]}" >&2
  sudo_cmd=()
  [[ $(id -u) == 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
