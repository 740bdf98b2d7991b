#!/usr/bin/env bash
# Run the pinned helm (HELM_VERSION in devcluster/versions.env), building it first if the
# cache lacks it: `bash devcluster/scripts/helm.sh template chart/ ...`. Build messages go to
# stderr, so helm's own output can be piped.
set -euo pipefail
source "$(dirname "$0")/common.sh"

HELM="$(helm_bin_dir)/helm"
if [ ! -x "$HELM" ]; then
  "$DEVCLUSTER_DIR/scripts/build.sh" helm >&2
fi
exec "$HELM" "$@"
