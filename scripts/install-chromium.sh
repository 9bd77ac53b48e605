#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium so the simulator's report can be rendered in a test.
# Idempotent: does nothing when a chromium binary is already on PATH, and only root may install.
set -euo pipefail

for name in chromium chromium-browser; do
  if command -v "$name" >/dev/null 2>&1; then
    command -v "$name"
    exit 0
  fi
done

if [ "$(id -u)" != 0 ]; then
  echo "chromium is missing and only root can install it; report rendering tests will be skipped" >&2
  exit 1
fi

(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) >&2
command -v chromium
