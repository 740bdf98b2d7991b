"""Start the test OpenID Connect provider on 127.0.0.1 (or only seed it).

    python tests/oidc_provider/serve.py --port 9000 --data-dir /tmp/idp --seed seed.json
    python tests/oidc_provider/serve.py --data-dir /tmp/idp --port 9000 --seed more.json --seed-only

The data directory keeps the SQLite database and the RS256 signing key (generated at the first
start); the issuer is http://<host>:<port>/o. The first line printed is ``ISSUER=<url>``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def reserve_port(host: str) -> socket.socket:
    """A socket holding a free port until runserver binds it: bound with SO_REUSEADDR and
    never listening, so no other process is given the port in the meantime (migrations take
    seconds), while runserver, which binds with SO_REUSEADDR too, still can."""
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    probe.bind((host, 0))
    return probe


def prepare(data_dir: Path) -> None:
    """Create the signing key and Django's secret key once per data directory."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    data_dir.mkdir(parents=True, exist_ok=True)
    key_file = data_dir / "signing-key.pem"
    if not key_file.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_file.chmod(0o600)
    secret_file = data_dir / "secret-key"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(48))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a new temp dir")
    parser.add_argument("--seed", type=Path, action="append", default=[], help="JSON file")
    parser.add_argument("--seed-only", action="store_true", help="seed, then exit")
    args = parser.parse_args(argv)

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="oidc-provider-"))
    held = None if args.port else reserve_port(args.host)
    port = args.port or held.getsockname()[1]
    prepare(data_dir)
    os.environ["OIDC_PROVIDER_DATA_DIR"] = str(data_dir)
    os.environ["OIDC_PROVIDER_ISSUER"] = f"http://{args.host}:{port}/o"
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.oidc_provider.settings"
    sys.path.insert(0, str(REPO_ROOT))

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    for seed_file in args.seed:
        call_command("seed_provider", str(seed_file))
    if args.seed_only:
        return
    print(f"ISSUER={os.environ['OIDC_PROVIDER_ISSUER']}", flush=True)
    call_command("runserver", f"{args.host}:{port}", use_reloader=False, skip_checks=True)
    if held is not None:
        held.close()


if __name__ == "__main__":
    main()
