"""The running hub's own REST API, called as the portal's service (its token is in the hub's
Secret): ending the access of users who are no longer members, at once.

A hub reads its members file at every login and refreshes each user's membership every few
minutes (`auth_refresh_age`); a removed member's session and servers would otherwise last until
then. Deleting the user in the hub stops their servers and ends their sessions and tokens; their
home volume stays (KubeSpawner's PVC), so a member added back finds their files.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

import requests

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


def end_removed_access(
    api_url: str, token: str, members: Mapping[str, Any], verify: bool | str = True
) -> list[str]:
    """Delete every hub user the members file no longer lets in; returns their names."""
    session = requests.Session()
    session.headers["Authorization"] = f"token {token}"
    session.verify = verify
    removed = [user["name"] for user in _users(session, api_url) if not is_member(user, members)]
    for name in removed:
        response = _call(session, "DELETE", f"{api_url}/users/{quote(name, safe='')}")
        # 404: gone already. 400: a server is still stopping; the next run deletes the user.
        if response.status_code == 400:
            raise HubApiError(f"The hub is still stopping {name}'s server.", transient=True)
        if response.status_code not in (204, 404):
            raise _refused(response, f"to delete {name}")
    return sorted(removed)


def _users(session: requests.Session, api_url: str) -> Iterator[dict[str, Any]]:
    offset = 0
    while True:
        response = _call(
            session,
            "GET",
            f"{api_url}/users",
            params={"offset": offset, "limit": PAGE_SIZE},
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
        return session.request(method, url, timeout=TIMEOUT_SECONDS, **kwargs)
    except requests.RequestException as error:
        raise HubApiError(
            f"The hub's API at {url} did not answer ({type(error).__name__}).", transient=True
        ) from error


def _refused(response: requests.Response, what: str) -> HubApiError:
    return HubApiError(
        f"The hub refused the portal {what} (HTTP {response.status_code}).",
        transient=response.status_code >= 500,
    )
