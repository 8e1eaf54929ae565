#!/usr/bin/env bash
# Fetches the console's third-party libraries from the npm registry at the pinned versions
# below and copies the files the pages load (and each licence) into assets/vendor/.
# The copies are committed: the build needs neither Node nor the network.
#   bash console/vendor/update.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../assets/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# name@version  files to copy from the package (relative to its root)
packages=(
  "leaflet@1.9.4 dist/leaflet.js dist/leaflet.css LICENSE"
  "leaflet.markercluster@1.5.3 dist/leaflet.markercluster.js dist/MarkerCluster.css dist/MarkerCluster.Default.css MIT-LICENCE.txt"
  "uplot@1.6.32 dist/uPlot.esm.js dist/uPlot.min.css LICENSE"
)

rm -rf "$out"
for entry in "${packages[@]}"; do
  read -r spec files <<<"$entry"
  name="${spec%@*}"
  (cd "$work" && npm pack --silent "$spec" >/dev/null)
  mkdir -p "$work/$name" "$out/$name"
  tar xzf "$work/$(ls "$work" | grep -F "${name}-" | grep '\.tgz$' | head -n1)" -C "$work/$name"
  for file in $files; do
    cp "$work/$name/package/$file" "$out/$name/"
  done
  echo "$spec" >"$out/$name/VERSION"
done
(cd "$out" && find . -type f ! -name SHA256SUMS | sort | xargs sha256sum >SHA256SUMS)
echo "vendored into $out"
