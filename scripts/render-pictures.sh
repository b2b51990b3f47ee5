#!/usr/bin/env bash
# Render every picture hf-tailor writes (search.svg, front.svg, lineage.svg, ...) under the
# given folders (default: model-cards/) to PNG, to look at them as a reader would see them.
#   bash scripts/render-pictures.sh [DIR...]        # PNGs in ${OUT:-target/pictures}
# Needs rsvg-convert (Debian: apt-get install -y librsvg2-bin). Fails on an SVG it cannot render.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v rsvg-convert >/dev/null || { echo "render-pictures: rsvg-convert not found (apt-get install -y librsvg2-bin)" >&2; exit 2; }
out="${OUT:-target/pictures}"
mkdir -p "$out"
[[ $# -gt 0 ]] || set -- model-cards
n=0
while IFS= read -r -d '' svg; do
  png="$out/$(echo "${svg%.svg}" | tr '/' '_').png"
  rsvg-convert -o "$png" "$svg"
  echo "$png"
  n=$((n + 1))
done < <(find "$@" -name '*.svg' -print0 | sort -z)
echo "render-pictures: $n pictures in $out" >&2
