#!/usr/bin/env bash
# Builds the CPU image (Dockerfile) and runs the README's main job in it without any network:
# the samples through the tiny model, schema-valid JSON per document. Exits non-zero if the
# build fails, the job fails, or a document has no JSON output.
#
#   deploy/docker-check.sh [IMAGE_TAG]        (default quire:cpu; needs a running Docker daemon)
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-quire:cpu}"

docker info >/dev/null 2>&1 || { echo "docker-check: no Docker daemon reachable (docker info failed)" >&2; exit 2; }

start=$(date +%s)
docker build -t "$tag" .
echo "docker-check: built $tag in $(( $(date +%s) - start )) s; image size $(docker image inspect "$tag" --format '{{.Size}}') bytes"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
docs=(invoice.pdf scanned.pdf landscape.pdf delivery.tiff receipt.jpg receipt.webp square.png strip.png)
args=()
for d in "${docs[@]}"; do args+=("/samples/$d"); done

# --network none: the runtimes were provisioned at build time; nothing may be fetched now.
docker run --rm --network none --user "$(id -u):$(id -g)" \
    -v "$PWD/samples:/samples:ro" -v "$out:/out" "$tag" \
    run "${args[@]}" --model /samples/models/tiny-gemma4 \
    --schema /samples/schemas/invoice.schema.json --budget 70 --max-new-tokens 2048 --out /out

for d in "${docs[@]}"; do
    [ -s "$out/$d.json" ] || { echo "docker-check: no output for $d" >&2; exit 1; }
done
echo "docker-check: ok, ${#docs[@]} documents processed offline in $tag"
