"""Run the test OpenID Connect provider as a real process, and walk its pages like a browser.

Used by the pytest fixtures in tests/test_sso.py; tests/oidc_provider/serve.py starts it.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

SERVE = Path(__file__).resolve().parent / "serve.py"
START_TIMEOUT_SECONDS = 60


@dataclass
class Provider:
    """A running provider: its issuer URL, data directory and process."""

    issuer: str
    data_dir: Path
    process: subprocess.Popen
    log_file: Path
    _seeds: int = field(default=0)
    # Whether a test changed users since the initial seed (then the next test re-seeds them).
    changed: bool = field(default=False)

    @property
    def port(self) -> int:
        return urlsplit(self.issuer).port

    def discovery(self) -> dict:
        """The provider's discovery document."""
        response = requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=10)
        response.raise_for_status()
        return response.json()

    def seed(self, data: dict) -> None:
        """Create or update users, groups and clients (in the provider's own database)."""
        self._seeds += 1
        seed_file = self.data_dir / f"seed-{self._seeds}.json"
        seed_file.write_text(json.dumps(data))
        subprocess.run(
            [
                sys.executable,
                str(SERVE),
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                "--seed",
                str(seed_file),
                "--seed-only",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def set_groups(self, username: str, groups: list[str]) -> None:
        """Replace a user's groups at the provider."""
        self.seed({"users": [{"username": username, "groups": groups}]})
        self.changed = True

    def update_user(self, username: str, **fields) -> None:
        """Create or change a user at the provider (see seed_provider: rename_to, active,
        email_verified, groups, email, password)."""
        self.seed({"users": [{"username": username, **fields}]})
        self.changed = True

    def require_registration_token(self, token: str | None) -> None:
        """Registering a client needs TOKEN as Bearer from now on; None opens registration."""
        token_file = self.data_dir / "registration-token"
        if token is None:
            token_file.unlink(missing_ok=True)
        else:
            token_file.write_text(token)

    def clients(self, **where: str) -> list[dict]:
        """The provider's clients whose columns have these values (client_id=..., name=...), as
        its database holds them."""
        columns = ("client_id", "name", "redirect_uris", "client_type", "authorization_grant_type")
        if not set(where) <= set(columns):
            raise ValueError(f"unknown columns: {sorted(set(where) - set(columns))}")
        condition = " AND ".join(f"{column} = ?" for column in where) or "1"
        database = f"{(self.data_dir / 'provider.sqlite3').resolve().as_uri()}?mode=ro"
        with closing(sqlite3.connect(database, uri=True)) as connection:
            rows = connection.execute(
                f"SELECT {', '.join(columns)} FROM oauth2_provider_application WHERE {condition}",
                tuple(where.values()),
            ).fetchall()
        return [
            {**dict(zip(columns, row, strict=True)), "redirect_uris": row[2].split()}
            for row in rows
        ]

    def client(self, client_id: str) -> dict | None:
        """The provider's client CLIENT_ID, or None if there is none."""
        found = self.clients(client_id=client_id)
        return found[0] if found else None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(seed: dict, data_dir: Path | None = None, host: str = "127.0.0.1") -> Provider:
    """Start a provider on HOST (127.0.0.1) with a free port, seeded; wait until it answers."""
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="oidc-provider-"))
    seed_file = data_dir / "seed-0.json"
    data_dir.mkdir(parents=True, exist_ok=True)
    seed_file.write_text(json.dumps(seed))
    log_file = data_dir / "provider.log"
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [
                *(sys.executable, str(SERVE), "--data-dir", str(data_dir), "--host", host),
                *("--seed", str(seed_file)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    issuer = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"The OIDC provider exited:\n{log_file.read_text()}")
        if issuer is None:
            found = re.search(r"^ISSUER=(\S+)$", log_file.read_text(), re.MULTILINE)
            issuer = found.group(1) if found else None
        if issuer:
            try:
                if requests.get(f"{issuer}/.well-known/openid-configuration", timeout=2).ok:
                    return Provider(issuer, data_dir, process, log_file)
            except requests.ConnectionError:
                pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"The OIDC provider did not start:\n{log_file.read_text()}")


class Browser:
    """A user's browser at the provider: signs in, consents, and follows redirects until the
    provider sends the browser back to a URL outside the provider."""

    def __init__(self, provider: Provider, username: str, password: str):
        self.provider = provider
        self.username = username
        self.password = password
        self.session = requests.Session()
        self.origin = f"http://127.0.0.1:{provider.port}"

    def visit(self, url: str) -> str:
        """Follow the provider's pages from URL; returns the first URL outside the provider."""
        for _ in range(10):
            if not url.startswith(self.origin):
                return url
            response = self.session.get(url, allow_redirects=False, timeout=10)
            if response.is_redirect:
                url = urljoin(url, response.headers["Location"])
                continue
            response.raise_for_status()
            url = self._submit(url, response.text)
        raise RuntimeError("too many pages at the provider")

    def _submit(self, url: str, page: str) -> str:
        """Fill in the sign-in form, or allow on the consent form; returns where it leads."""
        fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page))
        fields = {name: value.replace("&amp;", "&") for name, value in fields.items()}
        if 'name="password"' in page:
            fields.update(username=self.username, password=self.password)
        else:
            fields["allow"] = "Authorize"
        action = re.search(r'<form[^>]*action="([^"]*)"', page)
        target = urljoin(url, action.group(1).replace("&amp;", "&")) if action else url
        response = self.session.post(target, data=fields, allow_redirects=False, timeout=10)
        if not response.is_redirect:
            raise RuntimeError(f"the provider did not accept the form at {target}")
        return urljoin(target, response.headers["Location"])
