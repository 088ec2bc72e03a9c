"""``manage.py import_contacts FILE``: contacts from a CSV file or vCard 3/4 (``.vcf``) file.

CSV: a header row naming the columns ``name`` and ``number`` (``organisation`` and ``note``
optional; any order, any case, other columns ignored, a UTF-8 byte-order mark tolerated); several
numbers in one cell separated by ``;``. vCard: FN (or N), ORG, TEL (its TYPE becomes the label),
NOTE and UID, parsed by ``vobject``, one card at a time so one broken card costs only itself.

Each imported contact gets a stable ``external_id``: the vCard UID when there is one, otherwise a
key made from the name and organisation. Re-importing a file therefore finds the same rows and
changes nothing. The import only adds and updates rows of source "import"; it never removes any
(several files may be imported) and never touches contacts of other sources.

Bad rows (no name, no usable number, oversized or control characters) are reported with their
line number and skipped. A file that cannot be read at all (not UTF-8, neither CSV nor vCard,
required columns missing) raises ``ImportFileError`` before anything is written; the rest is
written in one transaction.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import vobject

from screening.calls.numbers import normalise
from screening.contacts.store import KEY_CHARS, LABEL_CHARS, NAME_CHARS, Entry, Outcome, apply
from screening.models import ContactSource
from screening.pbx.events import NUMBER_CHARS

MAX_FILE_BYTES = 20 * 1024 * 1024  # an address book far beyond any office's, still readable
MAX_NUMBERS = 20  # per contact: more is a broken row, not a person
NOTE_CHARS = 2000
CSV_NUMBER_SEPARATOR = ";"
# vCard TYPE values that say nothing a person would want as a label.
_NOISE_TYPES = {"voice", "pref", "internet", "x-"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


class ImportFileError(Exception):
    """The file as a whole cannot be imported; nothing was written."""


@dataclass
class Problem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class ImportResult:
    outcome: Outcome
    read: int = 0  # rows or cards accepted
    problems: list[Problem] = field(default_factory=list)  # skipped rows, dropped numbers


def import_file(path: str | Path) -> ImportResult:
    """Read ``path`` (format from its extension, else its first line) and write its contacts."""
    entries, problems = read_file(path)
    outcome = apply(ContactSource.IMPORT, entries, remove_missing=False)
    return ImportResult(outcome=outcome, read=len(entries), problems=problems)


def read_file(path: str | Path) -> tuple[list[Entry], list[Problem]]:
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ImportFileError(f"{path.name} is {size:,} bytes; the limit is {MAX_FILE_BYTES:,}")
        raw = path.read_bytes()
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFileError(
            f"{path.name} is not UTF-8 text (byte {exc.start + 1}); export it as UTF-8"
        ) from None
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    suffix = path.suffix.lower()
    if suffix in {".vcf", ".vcard"} or first.upper() == "BEGIN:VCARD":
        return read_vcards(text)
    if "\x00" in text:
        raise ImportFileError(f"{path.name} is a binary file, neither CSV nor vCard")
    return read_csv(text)


# --- CSV -------------------------------------------------------------------------------------


def read_csv(text: str) -> tuple[list[Entry], list[Problem]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise ImportFileError(f"line 1: not CSV ({exc})") from None
    if header is None:
        raise ImportFileError("the file is empty")
    columns = {name.strip().lower(): i for i, name in reversed(list(enumerate(header)))}
    missing = [name for name in ("name", "number") if name not in columns]
    if missing:
        raise ImportFileError(
            f"line 1: the header has no {' or '.join(repr(m) for m in missing)} column "
            "(expected comma-separated columns name, organisation, number)"
        )
    entries: list[Entry] = []
    problems: list[Problem] = []
    keys: dict[str, int] = {}
    line = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise ImportFileError(f"line {reader.line_num}: not CSV ({exc})") from None
        start, line = line, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue  # blank lines are no rows

        def cell(name: str, row: list[str] = row) -> str:
            index = columns.get(name)
            return row[index].strip() if index is not None and index < len(row) else ""

        numbers = [(n.strip(), "") for n in cell("number").split(CSV_NUMBER_SEPARATOR)]
        note = cell("note") if "note" in columns else None
        _add(entries, problems, keys, start, cell("name"), cell("organisation"), numbers, note)
    return entries, problems


# --- vCard -----------------------------------------------------------------------------------


def read_vcards(text: str) -> tuple[list[Entry], list[Problem]]:
    cards = list(_split_cards(text))
    if not cards:
        raise ImportFileError("no BEGIN:VCARD ... END:VCARD block: not a vCard file")
    entries: list[Entry] = []
    problems: list[Problem] = []
    keys: dict[str, int] = {}
    for start, block in cards:
        try:
            card = vobject.readOne(block, ignoreUnreadable=True)
        except Exception as exc:  # vobject raises a variety of errors for a broken card
            problems.append(Problem(start, f"unreadable vCard ({type(exc).__name__}); skipped"))
            continue
        name = _vcard_text(card, "fn") or _vcard_name(card)
        organisation = _vcard_org(card)
        numbers = []
        for tel in card.contents.get("tel", []):
            number = _vcard_text_value(tel.value)
            if number.lower().startswith("tel:"):  # vCard 4 URIs: tel:+44-20-...;ext=12
                number = number[4:].split(";", 1)[0]
            numbers.append((number.strip(), _vcard_label(tel.params)))
        note = _vcard_text(card, "note")
        uid = _vcard_text(card, "uid")
        _add(entries, problems, keys, start, name, organisation, numbers, note, uid=uid)
    return entries, problems


def _split_cards(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each BEGIN:VCARD ... END:VCARD block."""
    cards: list[tuple[int, str]] = []
    start = 0
    lines: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        word = line.strip().upper()
        if word == "BEGIN:VCARD":
            start, lines = number, [line]
        elif start:
            lines.append(line)
            if word == "END:VCARD":
                cards.append((start, "\r\n".join(lines) + "\r\n"))
                start, lines = 0, []
    return cards


def _vcard_text_value(value: object) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value if v)
    return str(value) if value is not None else ""


def _vcard_text(card: vobject.base.Component, key: str) -> str:
    found = card.contents.get(key)
    return _vcard_text_value(found[0].value).strip() if found else ""


def _vcard_name(card: vobject.base.Component) -> str:
    found = card.contents.get("n")
    if not found:
        return ""
    value = found[0].value
    parts = [
        getattr(value, part, "") for part in ("prefix", "given", "additional", "family", "suffix")
    ]
    return " ".join(_vcard_text_value(p).strip() for p in parts if p).strip()


def _vcard_org(card: vobject.base.Component) -> str:
    found = card.contents.get("org")
    if not found:
        return ""
    value = found[0].value
    first = value[0] if isinstance(value, list) and value else value  # ORG:Company;Department
    return _vcard_text_value(first).strip()


def _vcard_label(params: dict[str, list[str]]) -> str:
    types: list[str] = []
    for value in params.get("TYPE", []):
        types.extend(t.strip().lower() for t in value.split(","))
    kept = [t for t in types if t and t not in _NOISE_TYPES and not t.startswith("x-")]
    labels = {"cell": "mobile", "work": "business"}
    return labels.get(kept[0], kept[0])[:LABEL_CHARS] if kept else ""


# --- one row ---------------------------------------------------------------------------------


def _add(
    entries: list[Entry],
    problems: list[Problem],
    keys: dict[str, int],
    line: int,
    name: str,
    organisation: str,
    numbers: list[tuple[str, str]],
    note: str | None,
    *,
    uid: str = "",
) -> None:
    """Check one row; append it to ``entries`` or say why not in ``problems``."""
    error = (
        _text_problem("name", name, NAME_CHARS, required=True)
        or _text_problem("organisation", organisation, NAME_CHARS)
        or _text_problem("note", note or "", NOTE_CHARS, multiline=True)
    )
    if error:
        problems.append(Problem(line, f"{error}; row skipped"))
        return
    good: list[tuple[str, str]] = []
    bad: list[str] = []
    for number, label in numbers:
        if not number:
            continue
        if len(number) > NUMBER_CHARS or _CONTROL.search(number) or not normalise(number):
            bad.append(_CONTROL.sub("?", number[:30]) + ("..." if len(number) > 30 else ""))
        elif (number, label) not in good:
            good.append((number, label))
    if not good:
        shown = f" ({', '.join(repr(b) for b in bad)} is not one)" if bad else ""
        problems.append(Problem(line, f"no usable phone number{shown}; row skipped"))
        return
    problems.extend(Problem(line, f"{b!r} is not a phone number; left out") for b in bad)
    if len(good) > MAX_NUMBERS:
        problems.append(Problem(line, f"{len(good)} numbers (at most {MAX_NUMBERS}); row skipped"))
        return
    key = _key(name, organisation, uid)
    if key in keys:
        problems.append(Problem(line, f"same contact as line {keys[key]}; skipped"))
        return
    keys[key] = line
    entries.append(Entry(key, name, organisation, tuple(good), note))


def _text_problem(
    what: str, value: str, limit: int, *, required: bool = False, multiline: bool = False
) -> str:
    if required and not value:
        return f"no {what}"
    if len(value) > limit:
        return f"{what} is longer than {limit} characters"
    checked = re.sub(r"[\r\n\t]", " ", value) if multiline else value
    if _CONTROL.search(checked):
        return f"{what} contains control characters"
    return ""


def _key(name: str, organisation: str, uid: str) -> str:
    """The row's stable external_id: its vCard UID, else one made from name + organisation."""
    if uid and len(uid) + 4 <= KEY_CHARS and not _CONTROL.search(uid):
        return f"uid:{uid}"
    made = f"{' '.join(name.casefold().split())}\x1f{' '.join(organisation.casefold().split())}"
    return "key:" + hashlib.sha256(made.encode()).hexdigest()[:40]
