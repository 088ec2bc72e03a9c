"""`manage.py import_contacts`: CSV and vCard 3/4 fixtures with good and bad rows, re-import,
files that cannot be read at all."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from screening.models import Contact, ContactNumber, ContactSource

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).parent / "fixtures"


def run(path: Path) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_contacts", str(path), stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def contacts() -> dict[str, tuple[str, str, list[tuple[str, str, str]]]]:
    return {
        c.name: (c.organisation, c.note, numbers_of(c))
        for c in Contact.objects.prefetch_related("numbers")
    }


def numbers_of(contact: Contact) -> list[tuple[str, str, str]]:
    return [(n.number, n.normalised, n.label) for n in contact.numbers.all()]


def snapshot() -> list[tuple]:
    rows = Contact.objects.order_by("pk").values_list(
        "pk", "name", "organisation", "note", "source", "external_id", "updated_at"
    )
    numbers = ContactNumber.objects.order_by("pk").values_list("pk", "number", "normalised")
    return [*rows, *numbers]


def test_csv_good_rows_imported_bad_rows_reported_by_line() -> None:
    out, err = run(FIXTURES / "contacts.csv")
    assert contacts() == {
        # BOM, column order, an extra column, ";"-separated numbers, an optional note column.
        "Jane Doe": (
            "Acme Ltd",
            "Prefers email",
            [("+44 7700 900101", "447700900101", ""), ("020 7946 0102", "442079460102", "")],
        ),
        "Ravi Shah": ("", "", [("01134960103", "441134960103", "")]),
        # One good number of two: the row is kept, the bad number reported.
        "Half Good": ("Beta plc", "", [("07700 900105", "447700900105", "")]),
    }
    assert err.splitlines() == [
        "line 4: no usable phone number; row skipped",
        "line 5: no name; row skipped",
        "line 6: no usable phone number ('not-a-number' is not one); row skipped",
        "line 7: 'call me maybe' is not a phone number; left out",
        "line 8: name contains control characters; row skipped",
        "line 11: same contact as line 2; skipped",
    ]
    assert "3 contacts read: 3 added, 0 updated, 0 unchanged, 0 removed; 6 problems" in out
    assert set(Contact.objects.values_list("source", flat=True)) == {ContactSource.IMPORT}


def test_vcard_3_and_4() -> None:
    _, err3 = run(FIXTURES / "contacts-v3.vcf")
    _, err4 = run(FIXTURES / "contacts-v4.vcf")
    assert contacts() == {
        "Amelia Hughes": (
            "Northwind Couriers",  # ORG's first component
            "Delivers on Tuesdays, usually before noon",  # escapes undone by the parser
            [
                ("+44 7700 900201", "447700900201", "mobile"),
                ("020 7946 0202", "442079460202", "business"),
            ],
        ),
        "Dr George Okafor": ("", "", [("0113 496 0203", "441134960203", "home")]),  # from N
        "Long Line Person with a folded name": ("", "", [("07700900204", "447700900204", "")]),
        "Priya Nowak": (
            "Harbour Dental",
            "",
            [
                ("+44-20-7946-0301", "442079460301", "business"),  # tel: URI, quoted TYPE list
                ("+44-7700-900302", "447700900302", "mobile"),  # ;ext= dropped
            ],
        ),
        "Kofi Ellis": ("", "", [("+44-161-496-0304", "441614960304", "home")]),
    }
    assert err3.splitlines() == ["line 16: no usable phone number; row skipped"]
    assert err4.splitlines() == ["line 9: no name; row skipped"]
    with_uid = Contact.objects.filter(external_id__startswith="uid:")
    uids = set(with_uid.values_list("name", flat=True))
    assert uids == {"Amelia Hughes", "Priya Nowak"}


@pytest.mark.parametrize("name", ["contacts.csv", "contacts-v3.vcf", "contacts-v4.vcf"])
def test_reimport_changes_nothing(name: str) -> None:
    run(FIXTURES / name)
    before = snapshot()
    out, _ = run(FIXTURES / name)
    assert snapshot() == before  # same rows, same numbers (same pks), same updated_at
    assert " 0 added, 0 updated, " in out


def test_reimport_updates_a_changed_row_in_place(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("name,organisation,number\nAnn Lee,Lee & Co,07700900401\n")
    run(path)
    first = Contact.objects.get()
    path.write_text("name,organisation,number\nAnn Lee,Lee & Co,07700900401;07700900402\n")
    out, _ = run(path)
    again = Contact.objects.get()
    assert again.pk == first.pk
    assert again.updated_at > first.updated_at
    assert list(again.numbers.values_list("normalised", flat=True)) == [
        "447700900401",
        "447700900402",
    ]
    assert "0 added, 1 updated" in out


def test_import_leaves_other_sources_alone(tmp_path: Path) -> None:
    manual = Contact.objects.create(name="Ann Lee", organisation="Lee & Co")
    manual.numbers.create(number="07700900999")
    pbx = Contact.objects.create(name="Ann Lee", organisation="Lee & Co", source="pbx")
    path = tmp_path / "people.csv"
    path.write_text("name,organisation,number\nAnn Lee,Lee & Co,07700900401\n")
    run(path)
    assert Contact.objects.count() == 3
    assert list(manual.numbers.values_list("number", flat=True)) == ["07700900999"]
    assert not pbx.numbers.exists()


BAD_FILES = {
    "latin1.csv": ("name,number\nJosé,07700900501\n".encode("latin-1"), "not UTF-8"),
    "no-number-column.csv": (b"name,organisation,phone\nAnn,X,07700900501\n", "no 'number'"),
    "semicolons.csv": (b"name;organisation;number\nAnn;X;07700900501\n", "no 'name' or 'number'"),
    "empty.csv": (b"", "empty"),
    "picture.png": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), "not UTF-8"),
    "nul.csv": (b"name,number\x00\nAnn,0770\x00\n", "binary"),
    "broken.vcf": (b"BEGIN:VCARD\nFN:No end\nTEL:07700900501\n", "not a vCard file"),
    "notes.vcf": (b"just some text\n", "not a vCard file"),
    "huge-field.csv": (b'name,number\n"' + b"x" * 200_000 + b'",0770\n', "not CSV"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_unreadable_file_leaves_the_table_unchanged(tmp_path: Path, name: str) -> None:
    run(FIXTURES / "contacts.csv")
    before = snapshot()
    content, expected = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CommandError, match=expected) as caught:
        run(path)
    assert str(caught.value).startswith("Nothing imported: ")
    assert snapshot() == before


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="cannot read"):
        run(tmp_path / "nowhere.csv")


def test_oversized_values_are_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    many = ";".join(f"077009006{i:02d}" for i in range(21))
    path.write_text(
        "name,organisation,number\n"
        f"{'N' * 201},,07700900601\n"
        f"Org Too Long,{'O' * 201},07700900602\n"
        f"Long Number,,{'1' * 65}\n"
        f"Many Numbers,,{many}\n"
        "Fine,,07700900603\n"
    )
    _, err = run(path)
    assert err.splitlines() == [
        "line 2: name is longer than 200 characters; row skipped",
        "line 3: organisation is longer than 200 characters; row skipped",
        f"line 4: no usable phone number ('{'1' * 30}...' is not one); row skipped",
        "line 5: 21 numbers (at most 20); row skipped",
    ]
    assert list(Contact.objects.values_list("name", flat=True)) == ["Fine"]


def test_the_command_exits_non_zero_on_a_bad_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "bad.csv"
    path.write_text("who,what\n")
    done = subprocess.run(
        [sys.executable, "manage.py", "import_contacts", str(path)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "Nothing imported" in done.stderr
