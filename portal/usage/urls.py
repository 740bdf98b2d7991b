"""URLs of the usage, cost and capacity pages."""

from django.urls import path

from portal.usage import views

app_name = "usage"

urlpatterns = [
    path("hubs/<int:pk>/usage/", views.hub_usage, name="hub"),
    path("usage/", views.my_usage, name="mine"),
    path("usage/all/", views.usage_admin, name="admin"),
    path("usage/charts.css", views.chart_css, name="chart_css"),
    path("usage/estimate/", views.estimate, name="estimate"),
]
