#!/usr/bin/env bash
# The code to measure, for a device call: deploy/gpu/overlay.sh DEST_DIR
# -> DEST_DIR/src.tar: this checkout's committed gateway/ engine/ load/ deploy/ (the device
# tool sends the session's own checkout, which may be another branch) and Banking77's train.csv
# as data/banking77/train.csv. device.sh unpacks it over the repo copy before it runs.
set -euo pipefail
DEST=${1:?destination folder}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CSV=${CSV:-$ROOT/../shared/data/banking77/train.csv}
work=$(mktemp -d)
git -C "$ROOT" archive --format=tar HEAD gateway engine load deploy pyproject.toml > "$work/src.tar"
mkdir -p "$work/data/banking77" && cp "$CSV" "$work/data/banking77/train.csv"
tar -rf "$work/src.tar" -C "$work" data/banking77/train.csv
mkdir -p "$DEST" && mv "$work/src.tar" "$DEST/" && rm -rf "$work"
ls -la "$DEST/src.tar"
