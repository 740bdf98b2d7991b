"""API URLs: /api/v1/ (DRF router), /api/schema/ (OpenAPI 3) and /api/docs/."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import DefaultRouter

from portal.accounts.token_views import ApiTokenViewSet
from portal.audit.api import AuditEventViewSet
from portal.hubs.api import members as members_api
from portal.hubs.api import views
from portal.hubs.api.classes import ClassSessionViewSet

router = DefaultRouter()
router.register("hubs", views.HubViewSet, basename="hub")
router.register(
    r"hubs/(?P<hub_pk>[0-9]+)/revisions", views.HubRevisionViewSet, basename="hub-revision"
)
for prefix, viewset, name in members_api.ROUTES:
    router.register(rf"hubs/(?P<hub_pk>[0-9]+)/{prefix}", viewset, basename=name)
router.register(
    r"hubs/(?P<hub_pk>[0-9]+)/class-sessions", ClassSessionViewSet, basename="hub-class-session"
)
router.register("hardware-options", views.HardwareOptionViewSet, basename="hardware-option")
router.register("gpu-types", views.GpuTypeViewSet, basename="gpu-type")
router.register("images", views.ImageViewSet, basename="image")
router.register("storage-options", views.StorageOptionViewSet, basename="storage-option")
router.register("tokens", ApiTokenViewSet, basename="api-token")
router.register("audit", AuditEventViewSet, basename="audit-event")

urlpatterns = [
    path("v1/", include(router.urls)),
    path("v1/", include("portal.usage.api_urls")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", views.api_docs, name="api-docs"),
]
