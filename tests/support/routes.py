"""Every route of the URL conf as a sample URL, for tests that walk them all (new routes
included): who gets in, and what each answers while a shared service is down."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver, resolve

SAMPLE = {"int": "1", "path": "x/y", "slug": "x", "uuid": str(uuid.UUID(int=1))}
_CONVERTER = re.compile(r"<(?:(?P<conv>[^>:]+):)?(?P<name>[^>]+)>")
_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>(?P<body>[^()]*)\)")


@dataclass(frozen=True)
class Route:
    url: str  # a sample URL that resolves to the view
    name: str
    view: Callable[..., Any]  # the callback, with what its decorators declare (query_form)


def fill_route(route: str, pk: str = SAMPLE["int"]) -> str:
    def one(match: re.Match[str]) -> str:
        conv, name = match["conv"] or "str", match["name"]
        if conv == "str":
            return "accept" if name == "action" else "x"
        return pk if conv == "int" else SAMPLE.get(conv, "1")

    return _CONVERTER.sub(one, route)


def _fill_regex(regex: str) -> str:
    def one(match: re.Match[str]) -> str:
        body = match["body"]
        if "|" in body and re.fullmatch(r"[\w|-]+", body):
            return body.split("|")[0]  # an alternation of names (the admin's app labels)
        return "1" if "\\d" in body else "x"

    text = _GROUP.sub(one, regex)
    return text.replace("^", "").replace("$", "").replace("\\", "")


def routes(
    patterns: list[Any] | None = None, prefix: str = "", namespace: str = "", *, pk: str = "1"
) -> Iterator[Route]:
    """Every pattern in the URL conf, new ones included; ``pk`` fills integer parts."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        raw = str(pattern.pattern)
        part = _fill_regex(raw) if raw.startswith("^") or "(?P<" in raw else fill_route(raw, pk)
        if isinstance(pattern, URLResolver):
            ns = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from routes(pattern.url_patterns, prefix + part, ns, pk=pk)
        elif isinstance(pattern, URLPattern):
            yield Route("/" + prefix + part, f"{namespace}{pattern.name or raw}", pattern.callback)


def all_routes(pk: str = "1") -> list[tuple[str, str]]:
    """(sample URL, name) of every route; fails loudly on a sample that does not resolve."""
    found = []
    for route in routes(pk=pk):
        resolve(route.url)  # a sample that does not resolve would test nothing
        found.append((route.url, route.name))
    assert len(found) > 10
    return found
