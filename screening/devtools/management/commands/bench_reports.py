"""`manage.py bench_reports [--calls 1000000]`: server-side timings of the reporting pages.

Run it against PostgreSQL, e.g.::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/pbxscreen_bench \\
        python manage.py bench_reports --calls 1000000

It migrates, seeds history (in a child process, so the seeding does not count towards this
process's peak RSS) until the database holds ``--calls`` calls, brings the statistics roll-up of
closed hours up to date (screening.reports.rollup; what a running server's sweeper does every few
minutes; the first time on an existing database it is the backfill), then times, in process through
Django's test client (the whole request: middleware, session, queries, template): the audit list
with each single filter on its first page and on a deep page (page 5,000 or 90 % of the rows,
reached with a keyset cursor as a person following "Next" would), the API's call list
(``/api/v1/calls/`` with a token: first page, a page as deep, filtered), the statistics page for a
month, and the CSV export of every row (rows/s, and this process's peak RSS).
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django.db import connection
from django.db.models import Max, Min
from django.test import Client
from django.utils import timezone

from screening.api import tokens
from screening.calls.roles import setup_roles
from screening.models import Call, CallStatus, DecidedBy
from screening.reports import audit, rollup

TARGET_MS = 200.0
DEEP_PAGE = 5000


def _rss_mb() -> float:
    """Current resident set size (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Command(BaseCommand):
    help = "Seed (if needed) and time the audit, statistics and export pages on a big database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--calls", type=int, default=1_000_000)
        parser.add_argument("--days", type=int, default=180, help="history spread when seeding")
        parser.add_argument("--repeat", type=int, default=5, help="timed runs per page")
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--skip-export", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        if connection.vendor != "postgresql":
            self.stderr.write(
                "Warning: the figures are meant for PostgreSQL (set DATABASE_URL); "
                f"this is {connection.vendor}."
            )
        call_command("migrate", interactive=False, verbosity=0)
        self._ensure_data(options)
        self._rollup()
        self.client = Client(HTTP_HOST="localhost")
        self.client.force_login(self._supervisor())
        self.repeat = options["repeat"]
        total = Call.objects.count()
        self.stdout.write(f"\n{total:,} calls on {connection.vendor}; times are server-side, in ms")
        self.stdout.write(
            f"(median of {self.repeat} runs after one warm-up; target < {TARGET_MS:g})\n"
        )
        self._audit_pages()
        self._api_pages()
        self._stats_pages()
        if not options["skip_export"]:
            self._export(total)

    # --- Setup --------------------------------------------------------------------------

    def _ensure_data(self, options: dict[str, Any]) -> None:
        have = Call.objects.count()
        missing = options["calls"] - have
        if missing <= 0:
            return
        self.stdout.write(f"Seeding {missing:,} calls (have {have:,})…")
        started = time.monotonic()
        subprocess.run(  # noqa: S603 - our own manage.py with our own arguments
            [
                sys.executable,
                "manage.py",
                "seed_demo_history",
                "--calls",
                str(missing),
                "--days",
                str(options["days"]),
                "--seed",
                str(options["seed"]),
            ],
            check=True,
            cwd=settings.BASE_DIR,
        )
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        self.stdout.write(f"Seeded in {time.monotonic() - started:.0f} s (including ANALYZE)")

    def _rollup(self) -> None:
        """Bring the statistics roll-up up to date, as a running server's sweeper keeps it (a
        no-op but for the latest hours when it is; the first time on a seeded database it is the
        backfill)."""
        started = time.monotonic()
        result = rollup.rollup()
        self.stdout.write(
            f"Statistics roll-up: {rollup.describe(result)} in {time.monotonic() - started:.1f} s"
        )

    def _supervisor(self) -> Any:
        setup_roles()
        user, _ = get_user_model().objects.get_or_create(username="bench-supervisor")
        user.groups.add(Group.objects.get(name="Supervisors"))
        return user

    # --- Timing -------------------------------------------------------------------------

    def _time(self, url: str, **headers: str) -> tuple[float, float]:
        """(median, max) in ms over the timed runs; the response must be a 200."""
        runs = []
        for i in range(self.repeat + 1):
            started = time.perf_counter()
            response = self.client.get(url, **headers)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"{url} answered {response.status_code}")
            if i:
                runs.append(elapsed)
        return statistics.median(runs), max(runs)

    def _line(self, label: str, median: float, worst: float, extra: str = "") -> None:
        flag = "ok " if median < TARGET_MS else "SLOW"
        self.stdout.write(f"  {flag} {label:<44} {median:8.1f} {worst:8.1f}  {extra}")

    def _audit_pages(self) -> None:
        first = Call.objects.order_by("received_at").values_list("received_at", flat=True).first()
        busiest_day = (first or timezone.now()) + timedelta(days=60)
        operator = Call.objects.filter(decided_by__isnull=False).values_list(
            "decided_by_id", flat=True
        )[:1]
        trunk = Call.objects.values_list("trunk_id", flat=True)[:1]
        cases: list[tuple[str, dict[str, str]]] = [
            ("no filter", {}),
            (
                "one day",
                {
                    "received_from": f"{timezone.localtime(busiest_day):%Y-%m-%dT00:00}",
                    "received_until": f"{timezone.localtime(busiest_day):%Y-%m-%dT23:59}",
                },
            ),
            ("trunk", {"trunk": str(trunk[0]) if trunk else ""}),
            ("operator", {"operator": str(operator[0]) if operator else ""}),
            ("outcome = expired", {"outcome": CallStatus.EXPIRED}),
            ("outcome = failed (rare)", {"outcome": CallStatus.FAILED}),
            ("decided by = rule", {"decided_by": DecidedBy.RULE}),
            ("caller starts with +44 20 7946 0", {"caller": "+44 20 7946 0"}),
            ("caller contains 7946 09", {"caller": "7946 09", "caller_match": "contains"}),
            ("PBX mismatch only", {"mismatch": "on"}),
            ("sorted by caller", {"sort": "caller"}),
            ("sorted by decision time", {"sort": "-decision"}),
        ]
        self.stdout.write("Audit list                                         median      max")
        for label, params in cases:
            url = "/audit/?" + urlencode(params)
            median, worst = self._time(url)
            self._line(f"{label}, first page", median, worst)
            cursor, depth = self._deep_cursor(params)
            if cursor is None:
                continue
            median, worst = self._time(url + "&" + urlencode({"after": cursor}))
            self._line(f"{label}, page {depth // audit.PAGE_SIZE + 1:,}", median, worst)

    def _deep_cursor(self, params: dict[str, str]) -> tuple[str | None, int]:
        """The cursor a person would hold after following "Next" to page 5,000 (or to 90 % of
        a smaller result); found with OFFSET here, outside the timing."""
        form = audit.AuditFilterForm(params)
        ordering = audit.Ordering.parse(params.get("sort"))
        qs = audit.ordered(audit.filter_calls(audit.cleaned_filters(form)), ordering)
        count = qs.count()
        depth = min(DEEP_PAGE * audit.PAGE_SIZE, int(count * 0.9))
        if depth < audit.PAGE_SIZE * 2:
            return None, 0
        key, pk = qs.values_list("sort_key", "pk")[depth - 1]
        return audit.Cursor(key, pk).encode(ordering.sort.kind), depth

    def _api_pages(self) -> None:
        """The API's list as a script reads it: a token (not the session), JSON, 50 rows a page;
        the deep page is reached with the same cursor as the audit page's."""
        user = self._supervisor()
        tokens.revoke(user.api_tokens.filter(name="bench"))
        headers = {"HTTP_AUTHORIZATION": f"Token {tokens.issue(user, 'bench').key}"}
        cases: list[tuple[str, dict[str, str]]] = [
            ("no filter", {}),
            ("outcome = expired", {"outcome": CallStatus.EXPIRED}),
            ("caller starts with +44 20 7946 0", {"caller": "+44 20 7946 0"}),
        ]
        self.stdout.write("\nAPI call list (/api/v1/calls/)                     median      max")
        for label, params in cases:
            url = "/api/v1/calls/?" + urlencode(params)
            median, worst = self._time(url, **headers)
            self._line(f"{label}, first page", median, worst)
            cursor, depth = self._deep_cursor(params)
            if cursor is None:
                continue
            median, worst = self._time(url + "&" + urlencode({"after": cursor}), **headers)
            self._line(f"{label}, page {depth // audit.PAGE_SIZE + 1:,}", median, worst)

    def _stats_pages(self) -> None:
        bounds = Call.objects.aggregate(first=Min("received_at"), last=Max("received_at"))
        last = timezone.localtime(bounds["last"] or timezone.now())
        # The last complete month in the data.
        month = (last.replace(day=1) - timedelta(days=1)).replace(day=1)
        start = month.replace(hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=32)).replace(day=1)
        in_month = Call.objects.filter(received_at__gte=start, received_at__lt=end).count()
        self.stdout.write("\nStatistics")
        for label, query in (
            (f"month {month:%Y-%m} per day", f"month={month:%Y-%m}"),
            (f"month {month:%Y-%m} per hour", f"month={month:%Y-%m}&by=hour"),
            ("last 7 days (default)", ""),
        ):
            median, worst = self._time(f"/stats/?{query}")
            self._line(label, median, worst)
        self.stdout.write(f"  ({in_month:,} calls in that month)")

    def _export(self, total: int) -> None:
        self.stdout.write("\nCSV export of every row")
        baseline = _rss_mb()
        started = time.perf_counter()
        response = self.client.get("/audit/export.csv")
        rows = -1  # the header
        size = 0
        marks: list[tuple[int, float]] = []
        rss_seen = baseline
        for chunk in response.streaming_content:
            rows += chunk.count(b"\r\n")
            size += len(chunk)
            if not marks or rows - marks[-1][0] >= 100_000:
                marks.append((rows, time.perf_counter()))
                rss_seen = max(rss_seen, _rss_mb())
        elapsed = time.perf_counter() - started
        rates = [(b[0] - a[0]) / (b[1] - a[1]) for a, b in pairwise(marks) if b[1] > a[1]]
        self.stdout.write(
            f"  {rows:,} rows ({size / 2**20:,.0f} MiB) in {elapsed:.1f} s "
            f"= {rows / elapsed:,.0f} rows/s"
        )
        if rates:
            self.stdout.write(
                f"  rate per 100,000 rows: min {min(rates):,.0f}, max {max(rates):,.0f} rows/s"
            )
        self.stdout.write(
            f"  RSS: {baseline:.0f} MB before, {rss_seen:.0f} MB highest seen during, "
            f"process peak {_peak_rss_mb():.0f} MB"
        )
        if rows != total:
            self.stderr.write(f"  expected {total:,} rows")
