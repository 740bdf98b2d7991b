"""URLs of the web UI."""

from django.urls import path

from portal.hubs import member_views as mv
from portal.hubs import server_views, views

app_name = "hubs"

member_urls = [
    path("hubs/<int:pk>/members/", mv.members_page, name="members"),
    path("hubs/<int:pk>/members/add/", mv.member_add, name="member_add"),
    path("hubs/<int:pk>/members/<int:member_pk>/change/", mv.member_change, name="member_change"),
    path("hubs/<int:pk>/members/<int:member_pk>/remove/", mv.member_remove, name="member_remove"),
    path("hubs/<int:pk>/invitations/new/", mv.invitation_create, name="invitation_create"),
    path(
        "hubs/<int:pk>/invitations/<int:invitation_pk>/revoke/",
        mv.invitation_revoke,
        name="invitation_revoke",
    ),
    # Invitation links carry their token in the fragment: /hubs/<pk>/join/#<token>.
    path("hubs/<int:pk>/join/", mv.invitation_open, name="invitation_open"),
    path("hubs/<int:pk>/join/accept/", mv.invitation_accept, name="invitation_accept"),
    path("hubs/<int:pk>/join/<str:token>/", mv.invitation_legacy, name="invitation_legacy"),
    path("hubs/<int:pk>/group-grants/add/", mv.group_grant_add, name="group_grant_add"),
    path(
        "hubs/<int:pk>/group-grants/<int:grant_pk>/change/",
        mv.group_grant_change,
        name="group_grant_change",
    ),
    path(
        "hubs/<int:pk>/group-grants/<int:grant_pk>/remove/",
        mv.group_grant_remove,
        name="group_grant_remove",
    ),
    path("hubs/<int:pk>/tiers/new/", mv.tier_edit, name="tier_create"),
    path("hubs/<int:pk>/tiers/<int:tier_pk>/", mv.tier_edit, name="tier_edit"),
    path("hubs/<int:pk>/tiers/<int:tier_pk>/delete/", mv.tier_delete, name="tier_delete"),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("hubs/", views.hub_list, name="list"),
    path("hubs/new/", views.hub_create, name="create"),
    path("hubs/<int:pk>/", views.hub_detail, name="detail"),
    path("hubs/<int:pk>/status/", views.hub_status, name="status"),
    path("hubs/<int:pk>/classes/add/", views.class_session_add, name="class_session_add"),
    path(
        "hubs/<int:pk>/classes/<int:session_pk>/remove/",
        views.class_session_remove,
        name="class_session_remove",
    ),
    path(
        "hubs/<int:pk>/servers/<int:run_pk>/keep-running/",
        server_views.keep_running,
        name="keep_running",
    ),
    path("hubs/<int:pk>/cancel/", views.hub_cancel, name="cancel"),
    path("hubs/<int:pk>/delete/", views.hub_delete, name="delete"),
    path("hubs/<int:pk>/approve/", views.hub_approve, name="approve"),
    path("hubs/<int:pk>/reject/", views.hub_reject, name="reject"),
    path("hubs/<int:pk>/resume/", views.hub_resume, name="resume"),
    path("hubs/<int:pk>/delete-now/", views.hub_delete_now, name="delete-now"),
    path("hubs/<int:pk>/change/", views.hub_change, name="change"),
    path("hubs/<int:pk>/change/preview/", views.hub_change_preview, name="change_preview"),
    path("hubs/<int:pk>/revisions/<int:number>/", views.revision_detail, name="revision"),
    path(
        "hubs/<int:pk>/revisions/<int:number>/rollback/",
        views.revision_rollback,
        name="revision_rollback",
    ),
    path(
        "hubs/<int:pk>/revisions/<int:number>/approve/",
        views.revision_approve,
        name="revision_approve",
    ),
    path(
        "hubs/<int:pk>/revisions/<int:number>/reject/",
        views.revision_reject,
        name="revision_reject",
    ),
    path("approvals/", views.approval_queue, name="queue"),
    *member_urls,
]
