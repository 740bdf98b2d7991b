"""Pages of the server policy: the limits and savings on a hub's page, a user's "keep running",
and the notice of a stop at the user's next visit. Thin: the policy is server_policy.py."""

import datetime

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from portal.hubs import hubspec, server_policy
from portal.hubs.cluster import hub_servers
from portal.hubs.lifecycle import ACCESS_STATES
from portal.hubs.models import Hub, ServerRun
from provisioning.errors import ServiceError

SAVINGS_DAYS = 90


def policy_context(request: HttpRequest, hub: Hub) -> dict:
    """What the hub's page shows of the policy: each profile's limits, what the policy did
    over the last SAVINGS_DAYS days, and the visitor's own running servers with their next
    stop."""
    limits = server_policy.limits_for(hub)
    by_profile = {item.profile: item for item in limits}
    mine = []
    runs = ServerRun.objects.filter(
        hub=hub, username__iexact=request.user.get_username(), stopped__isnull=True
    )
    for run in runs:
        if run.profile in by_profile:
            mine.append((run, server_policy.next_stop(run, by_profile[run.profile])))
    since = timezone.now() - datetime.timedelta(days=SAVINGS_DAYS)
    return {
        "limits": limits,
        "savings": server_policy.savings(hub, since),
        "savings_days": SAVINGS_DAYS,
        "my_servers": mine,
    }


def tell_about_stops(request: HttpRequest) -> None:
    """At the user's next visit: which of their servers the policy stopped, and why."""
    for run in server_policy.unseen_stops(request.user):
        name = f' "{run.server_name}"' if run.server_name else ""
        messages.warning(
            request,
            f"Your server{name} on {run.hub.display_name} was stopped at "
            f"{timezone.localtime(run.stopped):%Y-%m-%d %H:%M}: "
            f"{run.get_stop_reason_display().lower()}. Your files are kept; start it again "
            "from the hub.",
        )


@login_required
@require_http_methods(["GET", "POST"])
def keep_running(request: HttpRequest, pk: int, run_pk: int) -> HttpResponse:
    """The link of a warning: shows when the server stops; POST keeps it running. Only the
    server's own user may (anyone else, owners included, gets 404: the run does not leak)."""
    hub = get_object_or_404(Hub.objects.visible_to(request.user), pk=pk)
    run = get_object_or_404(ServerRun, pk=run_pk, hub=hub)
    if run.username.lower() != request.user.get_username().lower():
        raise Http404
    limits = {item.profile: item for item in server_policy.limits_for(hub)}.get(run.profile)
    if request.method == "POST":
        try:
            if hub.state not in ACCESS_STATES:
                raise server_policy.PolicyError("The hub is not running.")
            servers = hub_servers(hubspec.from_hub(hub))
            if servers is None:
                raise server_policy.PolicyError("The hub cannot be reached now.")
            stop = server_policy.keep_running(run, servers)
        except server_policy.PolicyError as error:
            messages.error(request, str(error))
        except ServiceError:
            messages.error(request, "The hub did not answer; try again in a minute.")
        else:
            why = " if it stays idle" if stop.reason == "idle" else ", its maximum age"
            messages.success(
                request,
                f"Your server keeps running: it now stops at "
                f"{timezone.localtime(stop.at):%Y-%m-%d %H:%M}{why}.",
            )
        return redirect("hubs:keep_running", pk=hub.pk, run_pk=run.pk)
    stop = server_policy.next_stop(run, limits) if limits and not run.stopped else None
    return render(
        request,
        "hubs/keep_running.html",
        {"hub": hub, "run": run, "stop": stop, "limits": limits},
    )
