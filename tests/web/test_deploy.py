"""`manage.py check --deploy` is clean with a production environment (docs/deployment.md's)."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys

from tests.support.live import ROOT

PRODUCTION = {
    "SECRET_KEY": secrets.token_urlsafe(50),
    "DEBUG": "false",
    "ALLOWED_HOSTS": "screen.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://screen.example.com",
    "SECURE_COOKIES": "true",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "SERVE_STATIC": "false",
    "PROXY_HEADERS": "true",
    "PBX_LISTENER": "off",
}


def check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCTION}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_deploy_is_clean_with_a_production_environment() -> None:
    result = check_deploy(PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
    assert "WARNING" not in result.stderr


def test_check_deploy_flags_the_embedded_defaults() -> None:
    # The control case: the same check does complain about the development settings.
    result = check_deploy({})
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W009", "security.W012"):
        assert warning in result.stderr, result.stderr


# --- deploy/nginx.conf: the login forms are rate-limited before they reach a web process --------

NGINX = (ROOT / "deploy" / "nginx.conf").read_text()


def _blocks(text: str, head: str) -> list[tuple[str, str]]:
    """(the words after ``head``, the body) of every ``head ... { body }`` block."""
    found = []
    for match in re.finditer(rf"(?m)^\s*{head}\s+([^{{;]*)\{{", text):
        depth, i = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        found.append((match.group(1).strip(), text[match.end() : i - 1]))
    return found


def _location_for(path: str) -> str:
    """The body of the location nginx picks for ``path`` in the TLS server (its rules: exact,
    then the longest prefix unless a regex matches first, ``^~`` stopping the regex search)."""
    server = next(body for args, body in _blocks(NGINX, "server") if "443" in body)
    exact, prefixes, regexes = {}, [], []
    for args, body in _blocks(server, "location"):
        modifier, _, pattern = args.rpartition(" ")
        if modifier == "=":
            exact[pattern] = body
        elif modifier in {"~", "~*"}:
            regexes.append((re.compile(pattern, re.I if modifier == "~*" else 0), body))
        else:
            prefixes.append((pattern, modifier, body))
    if path in exact:
        return exact[path]
    matching = sorted((p for p in prefixes if path.startswith(p[0])), key=lambda p: -len(p[0]))
    if matching and matching[0][1] == "^~":
        return matching[0][2]
    for pattern, body in regexes:
        if pattern.search(path):
            return body
    return matching[0][2]


def test_nginx_limits_login_posts_per_address_on_both_login_forms() -> None:
    zones = re.findall(r"limit_req_zone\s+(\$\w+)\s+zone=(\w+):\S+\s+rate=(\d+)r/m;", NGINX)
    assert len(zones) == 1, zones
    key, zone, _rate = zones[0]
    # The key is the browser's address for a POST and empty (not counted) for anything else.
    mapping = next(body for args, body in _blocks(NGINX, "map") if args.endswith(key))
    assert re.search(r"POST\s+\$binary_remote_addr;", mapping)
    assert re.search(r'default\s+"";', mapping)
    for path in ("/login/", "/admin/login/"):
        body = _location_for(path)
        assert re.search(rf"limit_req\s+zone={zone}\b", body), path
        assert "limit_req_status 429;" in body, path
        # Still proxied as every page, with the address the app's own throttle counts.
        assert "proxy_pass http://pbxscreen_web;" in body, path
        assert "proxy_set_header X-Forwarded-For $remote_addr;" in body, path
    for path in ("/", "/calls/1/accept", "/admin/", "/admin/login/extra", "/ws/operator/"):
        assert "limit_req" not in _location_for(path), path  # decisions are never limited
