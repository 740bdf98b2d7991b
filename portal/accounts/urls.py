"""Sign-in and sign-out (mounted at /accounts/)."""

from django.urls import path

from portal.accounts import views

urlpatterns = [
    path("login/", views.login, name="login"),
    path("logout/", views.logout, name="logout"),
]
