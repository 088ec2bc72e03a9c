"""The committed catalogs are complete and current: every marked string is in them, translated,
and none is left fuzzy or empty; a changed template or script without `make messages` fails."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.i18n.catalogs import DOMAINS, LANGUAGES, ROOT, catalog

# What makemessages reads: the product's code, templates and scripts (as `make messages` does).
SOURCES = ("manage.py", "pbxscreen", "screening", "templates", "static", "locale")
IGNORE = ("screening/devtools",)


def extract_fresh(tmp_path: Path) -> Path:
    """Run makemessages on a copy of the sources and return the copy's root: its catalogs hold
    exactly the strings the code marks today."""
    copy = tmp_path / "src"
    copy.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source, copy / name, ignore=shutil.ignore_patterns("__pycache__", "*.mo")
            )
        else:
            shutil.copy2(source, copy / name)
    for domain in DOMAINS:
        command = [
            sys.executable,
            "manage.py",
            "makemessages",
            "-d",
            domain,
            "--add-location",
            "file",
        ]
        command += [arg for lang in LANGUAGES for arg in ("-l", lang)]
        command += [arg for pattern in IGNORE for arg in ("-i", pattern)]
        subprocess.run(command, cwd=copy, check=True, capture_output=True, timeout=300)
    return copy


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("xgettext") is None:
        pytest.fail("xgettext is missing: `make install` installs gettext", pytrace=False)
    return extract_fresh(tmp_path_factory.mktemp("catalogs"))


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_committed_catalog_has_exactly_the_marked_strings(
    fresh: Path, language: str, domain: str
) -> None:
    committed = {entry.key for entry in catalog(language, domain)}
    current = {entry.key for entry in catalog(language, domain, root=fresh)}
    missing = sorted(current - committed, key=str)
    stale = sorted(committed - current, key=str)
    advice = f"locale/{language}/LC_MESSAGES/{domain}.po is out of date: run `make messages`"
    assert not missing, f"{advice}, translate and commit. New strings: {missing}"
    assert not stale, f"{advice} and commit. No longer used: {stale}"


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("language", LANGUAGES)
def test_every_string_is_translated_and_none_is_fuzzy(language: str, domain: str) -> None:
    entries = catalog(language, domain)
    assert entries, f"{language}/{domain}.po is empty"
    fuzzy = [e.msgid for e in entries if "fuzzy" in e.flags]
    empty = [e.msgid for e in entries if not e.msgstr or not all(s.strip() for s in e.msgstr)]
    assert not fuzzy, f"fuzzy in {language}/{domain}.po (check and clear the flag): {fuzzy}"
    assert not empty, f"untranslated in {language}/{domain}.po: {empty}"


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("language", LANGUAGES)
def test_each_catalog_compiles_with_its_placeholders_intact(language: str, domain: str) -> None:
    """msgfmt --check: a translation that drops or renames a %(name)s fails here, not on a page."""
    path = ROOT / "locale" / language / "LC_MESSAGES" / f"{domain}.po"
    result = subprocess.run(
        ["msgfmt", "--check", "-o", "/dev/null", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_catalogs_are_compiled_for_the_running_code() -> None:
    """`make install` compiled them: the .mo files exist and are not older than the .po files."""
    for language in LANGUAGES:
        for domain in DOMAINS:
            po = ROOT / "locale" / language / "LC_MESSAGES" / f"{domain}.po"
            mo = po.with_suffix(".mo")
            assert mo.exists(), f"{mo} is missing: run `make install` (compilemessages)"
            assert mo.stat().st_mtime >= po.stat().st_mtime, f"{mo} is older than {po.name}"
