#!/usr/bin/env bash
# Run the test OpenID Connect provider (tests/oidc_provider/) by hand, to try SSO locally.
#
#   bash scripts/oidc-provider.sh            # in one terminal; prints what to export
#   OIDC_ISSUER=... OIDC_CLIENT_ID=portal OIDC_CLIENT_SECRET_FILE=... make up   # in another
#
# Users "ada" (groups physics, course-101) and "grace" (group portal-admins, so a portal
# admin with OIDC_ADMIN_GROUPS=portal-admins) share one generated password. Registration is
# open: every hub the portal provisions registers its own login client here (and deletes it
# with the hub). State (SQLite, signing key, client secret, password) is kept in
# .state/oidc-provider. Not for production.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${OIDC_PROVIDER_PORT:-9000}
PORTAL_PORT=${PORTAL_PORT:-8000}
DATA=${OIDC_PROVIDER_DIR:-$PWD/.state/oidc-provider}
PY=.venv/bin/python
mkdir -p "$DATA" && chmod 700 "$DATA"
for name in client-secret password; do
  [ -s "$DATA/$name" ] || (umask 077 && $PY -c 'import secrets; print(secrets.token_urlsafe(24))' > "$DATA/$name")
done
PASSWORD=$(cat "$DATA/password")
$PY - "$DATA" "$PORTAL_PORT" <<'PYTHON'
import json, sys
from pathlib import Path

data, port = Path(sys.argv[1]), sys.argv[2]
password = (data / "password").read_text().strip()
portals = [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
seed = {
    "users": [
        {"username": "ada", "password": password, "email": "ada@example.org",
         "first_name": "Ada", "groups": ["physics", "course-101"]},
        {"username": "grace", "password": password, "email": "grace@example.org",
         "first_name": "Grace", "groups": ["portal-admins"]},
    ],
    "clients": [{
        "client_id": "portal",
        "client_secret": (data / "client-secret").read_text().strip(),
        "redirect_uris": [f"{url}/auth/complete/oidc/" for url in portals],
        "post_logout_redirect_uris": [f"{url}/accounts/login/" for url in portals],
        "skip_authorization": False,
    }],
}
(data / "seed.json").write_text(json.dumps(seed, indent=2))
PYTHON
cat <<INFO
Test OpenID Connect provider on http://127.0.0.1:$PORT/o  (Ctrl-C stops it)
Start the portal with:
  export OIDC_ISSUER=http://127.0.0.1:$PORT/o OIDC_CLIENT_ID=portal
  export OIDC_CLIENT_SECRET_FILE=$DATA/client-secret OIDC_ADMIN_GROUPS=portal-admins
Users: ada (physics, course-101) and grace (portal-admins), password: $PASSWORD
Hubs register their own login clients at http://127.0.0.1:$PORT/o/register/ (open).
INFO
exec $PY tests/oidc_provider/serve.py --port "$PORT" --data-dir "$DATA" --seed "$DATA/seed.json"
