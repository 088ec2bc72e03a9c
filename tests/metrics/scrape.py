"""Reading a /metrics answer the way Prometheus does (prometheus_client's own parser)."""

from __future__ import annotations

from dataclasses import dataclass

import requests
from prometheus_client.parser import text_string_to_metric_families

TOKEN = "metrics-test-token-0123456789abcdef"


@dataclass(frozen=True)
class Samples:
    """Every sample of one scrape: (sample name, its labels) -> value."""

    values: dict[tuple[str, frozenset[tuple[str, str]]], float]
    families: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Samples:
        values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        families = set()
        for family in text_string_to_metric_families(text):
            families.add(family.name)
            for sample in family.samples:
                values[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return cls(values, frozenset(families))

    def names(self) -> set[str]:
        return {name for name, _labels in self.values}

    def get(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels`` (0 if none)."""
        wanted = set(labels.items())
        return sum(v for (n, have), v in self.values.items() if n == name and wanted <= have)

    def has(self, name: str, **labels: str) -> bool:
        wanted = set(labels.items())
        return any(n == name and wanted <= have for (n, have) in self.values)


def scrape(url: str, token: str | None = TOKEN) -> Samples:
    """GET ``url``/metrics with the bearer token; fails unless it answers 200."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = requests.get(f"{url}/metrics", headers=headers, timeout=10)
    assert answer.status_code == 200, (answer.status_code, answer.text[:300])
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return Samples.parse(answer.text)
