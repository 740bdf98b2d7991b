"""The one error shape of the services provisioning talks to: the cluster, the identity provider
that registers hubs' login clients, a hub's own API. Tasks retry the transient ones and fail
the hub (or give up) with the message otherwise."""


class ServiceError(Exception):
    """A service refused or failed a request; `transient` says whether retrying may help."""

    def __init__(self, message: str, *, transient: bool, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.status = status
