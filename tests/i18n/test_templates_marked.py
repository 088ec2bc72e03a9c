"""Every string a person reads in a template goes through the translation machinery."""

from __future__ import annotations

from pathlib import Path

from tests.i18n.templates_scan import scan, template_files


def test_the_scan_finds_templates() -> None:
    names = {path.name for path in template_files()}
    assert {"base.html", "dashboard.html", "audit.html", "login.html"} <= names


def test_the_scan_catches_unmarked_text_and_visible_attributes(tmp_path: Path) -> None:
    """The check itself works: plain text, a title and a button's value are caught; marked
    text, markup, comments, scripts and hidden values are not."""
    import tests.i18n.templates_scan as module

    sample = tmp_path / "templates" / "sample.html"
    sample.parent.mkdir()
    sample.write_text(
        '{% load i18n %}<p class="x" data-x="y">Plain words</p>'
        '<span title="A tooltip">{% translate "Fine" %}</span>'
        '<input type="submit" value="Go there">'
        '<input type="hidden" name="kind" value="block">'
        "{% blocktranslate %}Also {{ fine }}{% endblocktranslate %}"
        "{# a comment #}{% comment %}words{% endcomment %}"
        '<script>const words = "not checked here";</script>'
        '{{ x|default:"fallback" }}{{ y|default:"-" }}',
        encoding="utf-8",
    )
    original = module.ROOT
    module.ROOT = tmp_path
    try:
        texts = {finding.text for finding in scan(sample)}
    finally:
        module.ROOT = original
    assert texts == {"Plain words", "A tooltip", "Go there", "fallback"}


def test_every_template_string_is_marked_for_translation() -> None:
    findings = [finding for path in template_files() for finding in scan(path)]
    assert not findings, "Unmarked text in templates (wrap it in {% translate %}):\n" + "\n".join(
        map(str, findings)
    )
