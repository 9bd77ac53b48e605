#!/usr/bin/env bash
# Refreshes the console's copy of htmx from the npm registry at a pinned version and checks it
# against the digest recorded here, so the console never loads a script from a CDN at run time.
set -euo pipefail

VERSION=2.0.4
SHA256=e209dda5c8235479f3166defc7750e1dbcd5a5c1808b7792fc2e6733768fb447
DEST="$(cd "$(dirname "$0")/.." && pwd)/src/rainier/web/static"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "htmx.org@$VERSION" >/dev/null && tar xzf "htmx.org-$VERSION.tgz")
echo "$SHA256  $work/package/dist/htmx.min.js" | sha256sum --check --quiet
cp "$work/package/dist/htmx.min.js" "$DEST/htmx.min.js"
cp "$work/package/LICENSE" "$DEST/htmx.LICENSE"
echo "htmx $VERSION -> $DEST/htmx.min.js"
