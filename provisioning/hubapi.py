"""The running hub's own REST API, called as the portal's service (its token is in the hub's
Secret): ending the access of users who are no longer members, at once; listing, stopping and
keeping running the servers the server policy watches (`HubServers`).

A hub reads its members file at every login and refreshes each user's membership every few
minutes (`auth_refresh_age`); a removed member's session and servers would otherwise last until
then. Deleting the user in the hub stops their servers and ends their sessions and tokens; their
home volume stays (KubeSpawner's PVC), so a member added back finds their files.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter

from provisioning.errors import ServiceError

TIMEOUT_SECONDS = 10
PAGE_SIZE = 200  # JupyterHub's largest page
PAGINATED = "application/jupyterhub-pagination+json"


class HubApiError(ServiceError):
    """The hub's API could not be reached or refused the portal."""


def is_member(user: Mapping[str, Any], members: Mapping[str, Any]) -> bool:
    """Whether the members file lets this hub user in (as the hub's authenticator decides)."""
    name = user.get("name")
    return (
        name in members["allowed_users"]
        or name in members["admin_users"]
        or bool(set(user.get("groups") or []) & set(members["allowed_groups"]))
    )


class _ConnectTo(HTTPAdapter):
    """Opens every connection at one address ("host:port", e.g. the ingress controller's
    in-cluster Service) while each request keeps its hub's name for the Host header, the TLS
    server name and the certificate check, as curl's --connect-to does."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"HUB_API_CONNECT_TO must be host:port, not {address!r}")
        self.address = (host.strip("[]"), int(port))
        super().__init__()

    def add_headers(self, request, **kwargs) -> None:
        request.headers["Host"] = urlsplit(request.url).netloc

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        host_params, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
        if host_params["scheme"] == "https":
            name = urlsplit(request.url).hostname
            pool_kwargs.update(server_hostname=name, assert_hostname=name)
        host_params.update(host=self.address[0], port=self.address[1])
        return self.poolmanager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)


def _session(token: str, verify: bool | str, connect_to: str) -> requests.Session:
    """A session as the portal's service of the hub; at `connect_to` when it is set."""
    session = requests.Session()
    session.headers["Authorization"] = f"token {token}"
    session.verify = verify
    if connect_to:
        adapter = _ConnectTo(connect_to)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
    return session


def end_removed_access(
    api_url: str,
    token: str,
    members: Mapping[str, Any],
    verify: bool | str = True,
    connect_to: str = "",
) -> list[str]:
    """Delete every hub user the members file no longer lets in; returns their names."""
    session = _session(token, verify, connect_to)
    removed = [user["name"] for user in _users(session, api_url) if not is_member(user, members)]
    for name in removed:
        response = _call(session, "DELETE", f"{api_url}/users/{quote(name, safe='')}")
        # 404: gone already. 400: a server is still stopping; the next run deletes the user.
        if response.status_code == 400:
            raise HubApiError(f"The hub is still stopping {name}'s server.", transient=True)
        if response.status_code not in (204, 404):
            raise _refused(response, f"to delete {name}")
    return sorted(removed)


@dataclass(frozen=True)
class Server:
    """One running server of a hub user, as the hub's API reports it."""

    user: str
    name: str  # "" for the default server
    started: datetime.datetime
    last_activity: datetime.datetime
    profile: str  # the profile slug the user picked; "" when the hub's first was used


def _timestamp(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


class HubServers:
    """The servers of one hub, through its API as the portal's service."""

    def __init__(
        self, api_url: str, token: str, verify: bool | str = True, connect_to: str = ""
    ) -> None:
        self.api_url = api_url
        self.session = _session(token, verify, connect_to)

    def running(self) -> list[Server]:
        """Every server that is up (ready, not starting or stopping)."""
        servers = []
        for user in _users(self.session, self.api_url, state="ready"):
            for name, model in (user.get("servers") or {}).items():
                started = _timestamp(model.get("started"))
                if not model.get("ready") or model.get("pending") or started is None:
                    continue
                options = model.get("user_options") or {}
                servers.append(
                    Server(
                        user=user["name"],
                        name=name,
                        started=started,
                        last_activity=_timestamp(model.get("last_activity")) or started,
                        profile=str(options.get("profile") or ""),
                    )
                )
        return servers

    def _path(self, user: str, server: str) -> str:
        path = f"{self.api_url}/users/{quote(user, safe='')}"
        return path + (f"/servers/{quote(server, safe='')}" if server else "/server")

    def stop(self, user: str, server: str) -> None:
        """Stop the server; a server that is gone or already stopping is no error."""
        response = _call(self.session, "DELETE", self._path(user, server))
        if response.status_code not in (202, 204, 400, 404):
            raise _refused(response, f"to stop {user}'s server")

    def record_activity(self, user: str, server: str, when: datetime.datetime) -> None:
        """Count `when` as activity of the user's server (a 'keep running')."""
        stamp = when.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")
        response = _call(
            self.session,
            "POST",
            f"{self.api_url}/users/{quote(user, safe='')}/activity",
            json={"last_activity": stamp, "servers": {server: {"last_activity": stamp}}},
        )
        if response.status_code not in (200, 204):
            raise _refused(response, f"to record activity of {user}'s server")


def _users(session: requests.Session, api_url: str, state: str = "") -> Iterator[dict[str, Any]]:
    offset = 0
    while True:
        response = _call(
            session,
            "GET",
            f"{api_url}/users",
            params={"offset": offset, "limit": PAGE_SIZE, **({"state": state} if state else {})},
            headers={"Accept": PAGINATED},
        )
        if response.status_code != 200:
            raise _refused(response, "to list its users")
        try:
            page = response.json()
            items, following = page["items"], page["_pagination"]["next"]
        except (ValueError, KeyError, TypeError) as error:
            raise HubApiError(
                f"The hub's answer at {api_url}/users is not a page of users.", transient=False
            ) from error
        yield from items
        if not following:
            return
        offset = following["offset"]


def _call(session: requests.Session, method: str, url: str, **kwargs) -> requests.Response:
    try:
        # verify given per request: requests lets REQUESTS_CA_BUNDLE in the environment win
        # over the session's own CA file (HUB_API_CA_BUNDLE) otherwise.
        return session.request(
            method, url, timeout=TIMEOUT_SECONDS, verify=session.verify, **kwargs
        )
    except requests.RequestException as error:
        raise HubApiError(
            f"The hub's API at {url} did not answer ({type(error).__name__}).", transient=True
        ) from error


def _refused(response: requests.Response, what: str) -> HubApiError:
    return HubApiError(
        f"The hub refused the portal {what} (HTTP {response.status_code}).",
        transient=response.status_code >= 500,
    )
