"""URLs of the web UI."""

from django.urls import path

from portal.hubs import views

app_name = "hubs"

urlpatterns = [
    path("", views.home, name="home"),
    path("hubs/", views.hub_list, name="list"),
    path("hubs/new/", views.hub_create, name="create"),
    path("hubs/<int:pk>/", views.hub_detail, name="detail"),
    path("hubs/<int:pk>/status/", views.hub_status, name="status"),
    path("hubs/<int:pk>/cancel/", views.hub_cancel, name="cancel"),
    path("hubs/<int:pk>/delete/", views.hub_delete, name="delete"),
    path("hubs/<int:pk>/approve/", views.hub_approve, name="approve"),
    path("hubs/<int:pk>/reject/", views.hub_reject, name="reject"),
    path("approvals/", views.approval_queue, name="queue"),
]
