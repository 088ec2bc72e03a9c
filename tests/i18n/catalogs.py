"""Reading the committed gettext catalogs (locale/<lang>/LC_MESSAGES/<domain>.po)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LANGUAGES = ("de", "fr", "es")
DOMAINS = ("django", "djangojs")


@dataclass
class Entry:
    msgid: str
    context: str | None = None
    plural: str | None = None
    msgstr: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)
    locations: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str | None, str, str | None]:
        return (self.context, self.msgid, self.plural)


_FIELD = re.compile(r'^(msgctxt|msgid_plural|msgid|msgstr(?:\[\d+\])?) "(.*)"$')
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), text)


def read(path: Path) -> list[Entry]:
    """Every live entry of a .po file (obsolete `#~` entries and the header left out)."""
    entries: list[Entry] = []
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        fields: dict[str, str] = {}
        flags: set[str] = set()
        locations: list[str] = []
        key = None
        for line in block.strip().splitlines():
            if line.startswith("#~"):
                fields = {}
                break
            if line.startswith("#,"):
                flags |= {flag.strip() for flag in line[2:].split(",")}
            elif line.startswith("#:"):
                locations += line[2:].split()
            elif match := _FIELD.match(line):
                key = match.group(1)
                fields[key] = _unquote(match.group(2))
            elif (match := re.match(r'^"(.*)"$', line)) and key:
                fields[key] += _unquote(match.group(1))
        if "msgid" not in fields or (fields["msgid"] == "" and "msgctxt" not in fields):
            continue
        entries.append(
            Entry(
                msgid=fields["msgid"],
                context=fields.get("msgctxt"),
                plural=fields.get("msgid_plural"),
                msgstr=[v for k, v in sorted(fields.items()) if k.startswith("msgstr")],
                flags=flags,
                locations=locations,
            )
        )
    return entries


def catalog(language: str, domain: str, root: Path = ROOT) -> list[Entry]:
    return read(root / "locale" / language / "LC_MESSAGES" / f"{domain}.po")
