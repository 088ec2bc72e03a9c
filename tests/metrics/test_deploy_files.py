"""deploy/'s Prometheus files load, their alerts use only metrics /metrics exposes, and nginx never
serves /metrics to the outside."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from screening import metrics
from tests.metrics.scrape import Samples
from tests.support.live import ROOT
from tests.web.test_deploy import _location_for

DEPLOY = ROOT / "deploy"


def load(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / name).read_text())
    assert isinstance(loaded, dict), name
    return loaded


def rules() -> list[dict[str, Any]]:
    return [rule for group in load("alerts.yml")["groups"] for rule in group["rules"]]


def test_the_scrape_example_scrapes_every_process_with_the_bearer_token() -> None:
    config = load("prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"pbxscreen-web", "pbxscreen-listener"}
    for job in jobs.values():
        assert job["metrics_path"] == "/metrics"
        assert job["authorization"]["type"] == "Bearer"
        assert job["authorization"]["credentials_file"]
        targets = [t for static in job["static_configs"] for t in static["targets"]]
        assert targets
        assert all(t.startswith("127.0.0.1:") for t in targets)  # each process, not nginx
    listener = (DEPLOY / "pbxscreen-listener.service").read_text()
    port = re.search(r"pbx_listen --metrics-port (\d+)", listener)
    assert port is not None
    assert jobs["pbxscreen-listener"]["static_configs"][0]["targets"] == [f"127.0.0.1:{port[1]}"]
    assert "alerts.yml" in str(config["rule_files"])


def test_the_three_alerts_exist_and_use_only_exposed_metrics(db: None) -> None:
    found = {rule["alert"]: rule for rule in rules()}
    assert set(found) == {"PbxLinkDown", "PbxscreenHighExpiryRate", "PbxscreenWebhookDeadLetters"}
    assert found["PbxLinkDown"]["for"] == "30s"
    assert "[15m]" in found["PbxscreenHighExpiryRate"]["expr"]
    assert "0.2" in found["PbxscreenHighExpiryRate"]["expr"]
    assert found["PbxscreenWebhookDeadLetters"]["expr"].rstrip().endswith("> 0")
    samples = Samples.parse(metrics.exposition().decode())
    # A labelled counter has no sample before its first count, but its family is always there.
    exposed = samples.names() | {f"{name}_total" for name in samples.families} | samples.families
    for name, rule in found.items():
        used = set(re.findall(r"\bpbxscreen_\w+", rule["expr"]))
        assert used, name
        assert used <= exposed, (name, used - exposed)
        assert rule["annotations"]["summary"]


@pytest.mark.parametrize("path", ["/metrics"])
def test_nginx_does_not_pass_metrics_to_the_outside(path: str) -> None:
    body = _location_for(path)
    assert "deny all;" in body
    assert "proxy_pass" not in body


def test_the_env_example_sets_a_valid_metrics_token() -> None:
    example = (DEPLOY / "pbxscreen.env.example").read_text()
    token = re.search(r"(?m)^METRICS_TOKEN=(\S+)$", example)
    assert token is not None
    assert len(token[1]) >= 16
    hosts = re.search(r"(?m)^ALLOWED_HOSTS=(\S+)$", example)
    assert hosts is not None
    assert "127.0.0.1" in hosts[1].split(",")  # Prometheus's Host when it scrapes a process
