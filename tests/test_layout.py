"""The layout's promises, checked: the call's life in one package, development tools and
speedups kept apart, and nothing citing documents outside the repository."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = [
    p
    for p in (ROOT / "screening").rglob("*.py")
    if "devtools" not in p.parts and "migrations" not in p.parts
] + list((ROOT / "pbxscreen").rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_product_never_imports_the_development_tools() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in PRODUCT
        if any(name.startswith("screening.devtools") for name in imported_modules(p))
    ]
    assert offenders == []


def test_a_production_install_runs_without_the_development_tools() -> None:
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in PRODUCT
    )
    code = (
        "import sys, importlib, django; django.setup()\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "from django.core.management import get_commands\n"
        "print(sorted(n for n in sys.modules if n.startswith('screening.devtools')))\n"
        "print(sorted(n for n, app in get_commands().items() if app.startswith('screening')))\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "pbxscreen.settings", "DEV_TOOLS": "false"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    loaded, commands = done.stdout.splitlines()
    assert loaded == "[]"
    assert "demo" in commands
    assert "bench" not in commands
    assert "soak" not in commands


def test_every_write_to_calls_and_audit_rows_is_in_the_calls_package() -> None:
    write = re.compile(
        r"\b(Call|AuditEvent)\.objects\b[^\n]*\.(create|update|bulk_create|delete|get_or_create)\("
    )
    offenders = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in PRODUCT
        if "calls" not in p.parts
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if write.search(line) or re.search(r"(?<!class )\bAuditEvent\(\w", line)
    ]
    assert offenders == []


def test_only_the_speedups_package_relies_on_library_internals() -> None:
    # The names the speedups replace or read; nowhere else may use them.
    internals = re.compile(
        r"_clean_expired|_remove_from_groups|_start_transaction_under_autocommit|"
        r"\._commit\(|\._rollback\(|\._close\(|sendPreparedMessage|PreparedMessage|"
        r"create_application|aclose_old_connections"
    )
    offenders = [
        str(p.relative_to(ROOT))
        for p in PRODUCT
        if "speedups" not in p.parts and internals.search(p.read_text())
    ]
    assert offenders == []


def test_nothing_cites_documents_outside_the_repository() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    outside = re.compile(r"design\.md|pbx-api\.md|\.\./shared")
    offenders = [
        name
        for name in tracked
        if name.endswith((".py", ".md", ".html", ".js", ".css", ".toml", ".conf"))
        and name != "tests/test_layout.py"
        and (ROOT / name).exists()
        and outside.search((ROOT / name).read_text(errors="replace"))
    ]
    assert offenders == []
