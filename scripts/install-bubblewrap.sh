#!/usr/bin/env bash
# Installs Debian's bubblewrap, which rainier's task sandbox is built on. Idempotent: does
# nothing when bwrap is already on PATH; only root may install (and only root can sandbox).
set -euo pipefail

if command -v bwrap >/dev/null 2>&1; then
  command -v bwrap
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "bubblewrap is missing and only root can install it; tasks will run without a sandbox" >&2
  exit 1
fi

(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap) >&2
command -v bwrap
