#!/usr/bin/env bash
# Run a manage.py command with the quick start's settings (its secret key, DEBUG, database),
# e.g. `bash scripts/manage.sh createapitoken researcher`.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=local-env.sh
source scripts/local-env.sh
exec .venv/bin/python manage.py "$@"
