"""API routes of usage, cost and capacity, included under /api/v1/."""

from django.urls import path

from portal.usage import api

urlpatterns = [
    path("hubs/<int:pk>/usage/", api.HubUsageView.as_view(), name="hub-usage"),
    path("hubs/<int:pk>/usage/csv/", api.HubUsageCsvView.as_view(), name="hub-usage-csv"),
    path("usage/users/<str:username>/", api.UserUsageView.as_view(), name="user-usage"),
    path("usage/totals/", api.TotalsView.as_view(), name="usage-totals"),
    path("usage/totals/csv/", api.TotalsCsvView.as_view(), name="usage-totals-csv"),
    path("capacity/gpus/", api.GpuCapacityView.as_view(), name="gpu-capacity"),
]
