"""The OpenAPI schema and the reference page: a valid OpenAPI 3 document naming every endpoint
of the URL conf, and a page that loads with no request outside this server."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.contrib.staticfiles import finders
from openapi_spec_validator import validate

from tests.api.conftest import Caller
from tests.api.test_permissions import MATRIX, api_routes

DOCUMENTATION = {"api:schema", "api:docs"}  # the schema does not describe itself


def spectacular_path(url: str) -> str:
    return re.sub(r"/\d+/", "/{id}/", url)


@pytest.mark.django_db
def test_the_schema_is_valid_openapi_3_and_lists_every_endpoint(
    callers: dict[str, Caller],
) -> None:
    answer = callers["operator"].call("GET", "/api/v1/schema/?format=json")
    assert answer.status_code == 200
    schema = answer.json()
    validate(schema)
    assert schema["openapi"].startswith("3.")
    from tests.support.routes import routes

    documented = {
        (path, method.upper())
        for path, operations in schema["paths"].items()
        for method in operations
        if method in {"get", "post", "put", "patch", "delete"}
    }
    expected = set()
    for route in routes():
        if route.name in MATRIX and route.name not in DOCUMENTATION:
            for method in MATRIX[route.name]:
                expected.add((spectacular_path(route.url), method))
    assert len(expected) == sum(len(m) for n, m in MATRIX.items() if n not in DOCUMENTATION)
    assert expected == documented
    assert {name for name, _ in api_routes()} - DOCUMENTATION <= set(MATRIX)
    # The token scheme is described, and the session's.
    schemes = schema["components"]["securitySchemes"]
    assert schemes["tokenAuth"]["name"] == "Authorization"
    assert "cookieAuth" in schemes
    # The list's filters are the audit log's.
    names = {p["name"] for p in schema["paths"]["/api/v1/calls/"]["get"]["parameters"]}
    assert {"received_from", "trunk", "outcome", "caller", "sort", "after", "page_size"} <= names


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href"} and value:
                self.urls.append(value)


@pytest.mark.django_db
def test_the_reference_loads_from_this_server_only(callers: dict[str, Caller]) -> None:
    answer = callers["supervisor"].call("GET", "/api/v1/docs/")
    assert answer.status_code == 200
    html = answer.content.decode()
    links = Links()
    links.feed(html)
    assert len(links.urls) >= 3
    for url in links.urls:
        assert url.startswith("/static/"), url
        # Installed from the package, found by the static files finders (what the server serves).
        assert finders.find(url.removeprefix("/static/")), url
    assert not re.search(r"https?://", html), re.findall(r"https?://[^\s\"']+", html)
    assert "/api/v1/schema/" in html
