"""URLs of the test OpenID Connect provider: sign-in page and the provider under /o/, where
clients may also register themselves (tests/oidc_provider/registration.py)."""

from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from tests.oidc_provider import registration

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    re_path(
        r"^o/\.well-known/openid-configuration/?$",
        registration.DiscoveryView.as_view(),
        name="discovery",
    ),
    path("o/register/", registration.RegistrationView.as_view(), name="registration"),
    path(
        "o/register/<str:client_id>/",
        registration.ClientConfigurationView.as_view(),
        name="client-configuration",
    ),
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
]
