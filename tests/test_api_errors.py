"""Every API error is JSON with `detail`, an unhandled exception (500) included; the dashboard keeps its HTML page.

This module is also the URLconf of its tests: the site's own URLs and handler500, plus views that raise.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from zenskar_site import urls as site_urls


class BrokenApi(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        raise RuntimeError("a bug")


def broken_view(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a bug")


urlpatterns = [
    path("api/v1/broken/", BrokenApi.as_view()),
    path("usage/broken-view/", broken_view),
    path("dashboard-broken/", broken_view),
    *site_urls.urlpatterns,
]
# The site's handlers are the ones under test (None: Django's default, as the site would have without one).
handler500 = getattr(site_urls, "handler500", None)
handler404 = getattr(site_urls, "handler404", None)

pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]


@pytest.mark.parametrize("url", ["/api/v1/broken/", "/usage/broken-view/"])
def test_an_exception_in_an_api_view_answers_json_500_with_detail(url: str) -> None:
    response = Client(raise_request_exception=False).get(url)

    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Internal error; retry later."}


def test_an_exception_in_a_dashboard_view_keeps_the_html_page() -> None:
    response = Client(raise_request_exception=False).get("/dashboard-broken/")

    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")


def test_a_nul_in_any_path_or_an_api_query_is_400_json_before_any_view() -> None:
    # The dashboard's query strings go to its forms, which refuse a NUL on the page (test_event_page.py).
    for url in ("/usage-events/%00/", "/metrics/%00/", "/api/v1/audit/?actor=%00", "/api/v1/metrics/x/values/?a%00=1"):
        response = Client().get(url)
        assert response.status_code == 400, url
        assert response["Content-Type"] == "application/json"
        assert "NUL" in response.json()["detail"]


@override_settings(DEBUG=False)  # with DEBUG on, Django answers its technical 404 page instead of handler404
def test_an_unknown_api_url_answers_json_404_and_a_dashboard_one_the_html_page(client: Client) -> None:
    api = client.get("/api/v1/nope/")
    page = client.get("/nope/")

    assert api.status_code == 404
    assert api["Content-Type"] == "application/json"
    assert api.json() == {"detail": "No such endpoint: GET /api/v1/nope/"}
    assert page.status_code == 404
    assert page["Content-Type"].startswith("text/html")
