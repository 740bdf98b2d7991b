"""social-auth's begin and complete URLs (mounted at /auth/ under the "social" namespace)."""

from django.urls import path

from portal.accounts import views

app_name = "social"

urlpatterns = [
    path("login/<str:backend>/", views.begin, name="begin"),
    path("complete/<str:backend>/", views.complete, name="complete"),
]
