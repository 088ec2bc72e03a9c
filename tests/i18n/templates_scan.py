"""What a person reads in a template that is not marked for translation.

Each template is tokenised with Django's own template Lexer. Text outside {% translate %} and
{% blocktranslate %} is joined with a placeholder for every tag and variable, HTML tags, comments,
<script> and <style> are removed, and whatever still has letters is a string nobody marked. The
attributes a person sees or hears (title, aria-label, placeholder, alt, a button's value) are
checked the same way, and so are literal `default:"..."` fallbacks in variables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from django.template.base import Lexer, TokenType

ROOT = Path(__file__).resolve().parents[2]
HOLE = "\x00"  # where a tag or a variable (or translated text) was

# Words that are the same in every language we ship, with the reason.
ALLOWED = {
    "pbxscreen",  # the product's name
    "ms",  # the SI unit, written so in all four languages
    "s",  # the SI unit
}

_VISIBLE_ATTRIBUTES = re.compile(
    r"""\b(title|aria-label|placeholder|alt)\s*=\s*"([^"]*)"|\b(title|aria-label|placeholder|alt)\s*=\s*'([^']*)'""",
    re.IGNORECASE,
)
_BUTTON_VALUE = re.compile(
    r"""<input\b[^>]*\btype\s*=\s*["'](?:submit|button|reset)["'][^>]*>""", re.IGNORECASE
)
_VALUE = re.compile(r"""\bvalue\s*=\s*"([^"]*)\"""", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>", re.DOTALL)
_HIDDEN_BLOCKS = re.compile(r"<(script|style)\b.*?</\1\s*>", re.DOTALL | re.IGNORECASE)
_ENTITY = re.compile(r"&#?\w+;")
_DEFAULT_LITERAL = re.compile(r"""\|default:(["'])(.*?)\1""")
# Blocks whose content lands in markup, not in text (base.html: <body class="{% block ... %}">).
MARKUP_BLOCKS = {"body_class"}


@dataclass(frozen=True)
class Finding:
    template: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.template}:{self.line}: {self.text!r}"


def template_files() -> list[Path]:
    found = sorted((ROOT / "templates").rglob("*.html"))
    for app_dir in sorted((ROOT / "screening").rglob("templates")):
        found.extend(sorted(app_dir.rglob("*.html")))
    return found


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W\d_]+", text)


def _unmarked(text: str) -> bool:
    return any(word not in ALLOWED for word in _words(text))


def scan(path: Path) -> list[Finding]:
    source = path.read_text(encoding="utf-8")
    name = str(path.relative_to(ROOT))
    # The template with every tag, variable and translated span replaced by HOLE, and for each
    # character of it the line it came from.
    chars: list[str] = []
    lines: list[int] = []
    findings: list[Finding] = []
    in_block_translate = False
    in_comment = False
    in_markup_block = False
    for token in Lexer(source).tokenize():
        kind = token.token_type
        if kind == TokenType.BLOCK:
            command = token.contents.split(" ", 1)[0]
            if command in ("blocktranslate", "blocktrans"):
                in_block_translate = True
            elif command in ("endblocktranslate", "endblocktrans"):
                in_block_translate = False
            elif command == "comment":
                in_comment = True
            elif command == "endcomment":
                in_comment = False
            elif command == "block":
                in_markup_block = token.contents.split()[1:2] in ([n] for n in MARKUP_BLOCKS)
            elif command == "endblock":
                in_markup_block = False
        if kind == TokenType.VAR and not in_block_translate:
            for _quote, literal in _DEFAULT_LITERAL.findall(token.contents):
                if _unmarked(literal):
                    findings.append(Finding(name, token.lineno, literal))
        if kind == TokenType.TEXT and not (in_block_translate or in_comment or in_markup_block):
            text = token.contents
        else:
            text = HOLE
        chars.append(text)
        lines.extend([token.lineno + text[:i].count("\n") for i in range(len(text))])
    flat = "".join(chars)

    def line_of(index: int) -> int:
        return lines[min(index, len(lines) - 1)] if lines else 1

    hidden = [(m.start(), m.end()) for m in _HIDDEN_BLOCKS.finditer(flat)]

    def is_hidden(index: int) -> bool:
        return any(start <= index < end for start, end in hidden)

    for tag in _TAG.finditer(flat):
        if is_hidden(tag.start()):
            continue
        markup = tag.group(0)
        for match in _VISIBLE_ATTRIBUTES.finditer(markup):
            value = match.group(2) if match.group(2) is not None else match.group(4)
            for piece in value.split(HOLE):
                if _unmarked(_ENTITY.sub(" ", piece)):
                    findings.append(Finding(name, line_of(tag.start()), piece.strip()))
        if _BUTTON_VALUE.match(markup):
            for value in _VALUE.findall(markup):
                for piece in value.split(HOLE):
                    if _unmarked(piece):
                        findings.append(Finding(name, line_of(tag.start()), piece.strip()))
    # Visible text: what is left outside tags, scripts and styles; <kbd> holds the keyboard's
    # own keys (A, R, N...), which are the same whatever the language.
    index = 0
    visible: list[tuple[int, str]] = []
    for match in re.finditer(r"<(script|style|kbd)\b.*?</\1\s*>|<[^>]*>", flat, re.DOTALL | re.I):
        visible.append((index, flat[index : match.start()]))
        index = match.end()
    visible.append((index, flat[index:]))
    for start, chunk in visible:
        offset = 0
        for piece in chunk.split(HOLE):
            cleaned = _ENTITY.sub(" ", piece)
            if _unmarked(cleaned):
                findings.append(Finding(name, line_of(start + offset), " ".join(cleaned.split())))
            offset += len(piece) + 1
    return findings
