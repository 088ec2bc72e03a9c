from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.i18n import JavaScriptCatalog

from screening import throttle
from screening.throttle import ThrottledLoginView

urlpatterns = [
    path("login/", ThrottledLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # The admin's own login form, throttled like the site's (it shadows the admin's "login/").
    path("admin/login/", throttle.protect(admin.site.login), name="admin-login"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("screening.api.urls")),
    # The JS catalog (gettext() in static/) in the request's language; every page loads it.
    path("jsi18n/", JavaScriptCatalog.as_view(packages=["screening"]), name="javascript-catalog"),
    path("", include("screening.urls")),
]
