"""Phone numbers in one comparable form: international, without ``+``.

``+44 20 7946 0123``, ``0044 20 7946 0123`` and ``020 7946 0123`` (on a trunk with country code
44) all become ``442079460123``. A withheld or non-numeric caller normalises to ``""``, which
never matches anything. No model import: a trunk is read only for its three prefix fields.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from screening.models import Trunk

# For rules that apply to all trunks (and trunk-less contexts): the Trunk model's defaults.
DEFAULT_COUNTRY_CODE = "44"
DEFAULT_NATIONAL_PREFIX = "0"
DEFAULT_INTERNATIONAL_PREFIX = "00"

# Separators people and PBXs put inside numbers; anything else (letters, "@", ";") means
# "not a plain number" (anonymous, a SIP URI) and never matches.
_SEPARATORS = re.compile(r"[\s\-./()]")
_NUMBER = re.compile(r"\+?\d+")


def normalise(
    number: str,
    country_code: str = DEFAULT_COUNTRY_CODE,
    national_prefix: str = DEFAULT_NATIONAL_PREFIX,
    international_prefix: str = DEFAULT_INTERNATIONAL_PREFIX,
) -> str:
    """``number`` in international form without ``+``, or ``""`` when it is not a number."""
    compact = _SEPARATORS.sub("", number or "")
    if not _NUMBER.fullmatch(compact):
        return ""
    if compact.startswith("+"):
        return compact[1:]
    if international_prefix and compact.startswith(international_prefix):
        return compact[len(international_prefix) :]
    if national_prefix and compact.startswith(national_prefix):
        return country_code + compact[len(national_prefix) :]
    # No prefix at all: a short code or a number the PBX already sent without one; taken as is.
    return compact


def normalise_for_trunk(number: str, trunk: Trunk | None) -> str:
    if trunk is None:
        return normalise(number)
    return normalise(number, trunk.country_code, trunk.national_prefix, trunk.international_prefix)


def normalise_pattern(pattern: str, trunk: Trunk | None) -> str:
    """A rule's pattern, read with its trunk's prefixes (the defaults for an all-trunks rule)."""
    return normalise_for_trunk(pattern, trunk)
