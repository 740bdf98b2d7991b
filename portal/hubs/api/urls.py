"""API URLs: /api/v1/ (DRF router), /api/schema/ (OpenAPI 3) and /api/docs/."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import DefaultRouter

from portal.hubs.api import views

router = DefaultRouter()
router.register("hubs", views.HubViewSet, basename="hub")
router.register(
    r"hubs/(?P<hub_pk>[0-9]+)/revisions", views.HubRevisionViewSet, basename="hub-revision"
)
router.register("hardware-options", views.HardwareOptionViewSet, basename="hardware-option")
router.register("gpu-types", views.GpuTypeViewSet, basename="gpu-type")
router.register("images", views.ImageViewSet, basename="image")
router.register("storage-options", views.StorageOptionViewSet, basename="storage-option")

urlpatterns = [
    path("v1/", include(router.urls)),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", views.api_docs, name="api-docs"),
]
