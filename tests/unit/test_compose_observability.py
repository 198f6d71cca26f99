"""compose/: Prometheus scrapes the gateway, Grafana is provisioned with the lifecycle
dashboard, and every PromQL expression of the dashboard names only metrics the gateway
exports.

Docker is not needed: the compose file is checked against the Compose spec by
``test_compose_schema.py`` (this file adds what that one cannot know: the scrape target is
the gateway service on its container port, Grafana's data source is the Prometheus service,
the dashboards folder is the one the provider reads). The exported names come from a real
gateway app's ``/metrics`` (parsed by prometheus_client), so a renamed metric fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from aios_mesh.gateway.metrics import LIFECYCLE_METRICS
from tests.unit.test_gateway_lifecycle_metrics import app_for, make_mesh

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
DASHBOARD = COMPOSE / "grafana" / "dashboards" / "aios-mesh-lifecycle.json"

#: PromQL words that are not metric names (functions are followed by "(" and skipped anyway).
_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                       "and", "or", "unless", "offset", "inf", "nan"})
#: Suffixes a sample name gets from its family's type.
_SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
             "histogram": ("_bucket", "_sum", "_count", "_created"),
             "summary": ("", "_sum", "_count", "_created"), "untyped": ("",)}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not a function
    call, a keyword, a label name (inside ``{}`` or a ``by (...)`` list) or a string."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery selectors ($__range ...)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word, rest = match.group(), text[match.end():].lstrip()
        if rest.startswith("(") or word.lower() in _KEYWORDS:
            continue
        if match.start() > 0 and text[match.start() - 1] in "$.0123456789":
            continue  # a Grafana variable, or the exponent of a number
        names.add(word)
    return names


def test_the_expression_parser_finds_metric_names() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, capability) (rate(x_bucket{a=~"b|c"}'
            '[$__rate_interval]))) / on (capability) group_left y_total or vector(0) '
            '- time() + 1e3 * z offset 5m')
    assert metric_names(expr) == {"x_bucket", "y_total", "z"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every sample name a real gateway's ``/metrics`` exports (families without samples
    included: their TYPE lines name them)."""
    import asyncio

    async def scrape() -> str:
        mesh = await make_mesh(tmp_path_factory.mktemp("gw"))
        try:
            app = app_for(mesh)
            await app.state.gateway.metrics.lifecycle.refresh()
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://gw") as client:
                return (await client.get("/metrics")).text
        finally:
            await mesh.aclose()

    text = asyncio.run(scrape())
    names = {family.name + suffix for family in text_string_to_metric_families(text)
             for suffix in _SUFFIXES[family.type]}
    assert {n for n in names if n.startswith("aios_mesh_gateway_")}  # the gateway's own
    return names


def _dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return doc


def _expressions(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    found = [(f"panel {p['title']!r} {t['refId']}", t["expr"])
             for p in doc["panels"] if p["type"] != "row" for t in p["targets"]]
    for var in doc["templating"]["list"]:
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
        found.append((f"variable {var['name']}", inner.group(1) if inner else query))
    return found


def test_every_panel_names_only_exported_metrics(exported: set[str]) -> None:
    problems = [f"{where}: {sorted(metric_names(expr) - exported)}"
                for where, expr in _expressions(_dashboard())
                if not metric_names(expr) or metric_names(expr) - exported]
    assert not problems, "\n".join(problems)


def test_the_dashboard_covers_every_lifecycle_metric() -> None:
    used = {name for _, expr in _expressions(_dashboard()) for name in metric_names(expr)}
    bases = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in used}
    missing = set(LIFECYCLE_METRICS) - bases - {"aios_mesh_lifecycle_refresh_failures"}
    assert not missing, missing


def test_the_dashboard_is_well_formed() -> None:
    doc = _dashboard()
    assert doc["uid"] == "aios-mesh-lifecycle" and doc["title"] and doc["schemaVersion"] >= 36
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    datasource = _datasource()
    titles = set()
    for panel in doc["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "table"}, panel["type"]
        assert panel["description"] and panel["title"] not in titles
        titles.add(panel["title"])
        assert panel["datasource"]["uid"] == datasource["uid"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"]
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
    # the variables the expressions use are declared
    declared = {v["name"] for v in doc["templating"]["list"]}
    used = {m for _, expr in _expressions(doc) for m in re.findall(r"\$(\w+)", expr)
            if not m.startswith("__")}
    assert used <= declared, used - declared
    wanted = ("automation rate", "human interventions", "time to resolution", "accuracy",
              "calibration", "drift", "rollbacks", "pauses")
    text = " ".join(titles).lower()
    assert all(w in text for w in wanted), [w for w in wanted if w not in text]


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    return doc


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path (relative to compose/) of a service's bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            out[target] = (COMPOSE / source).resolve()
    return out


def _datasource() -> dict[str, Any]:
    doc = yaml.safe_load((COMPOSE / "grafana" / "provisioning" / "datasources"
                          / "prometheus.yml").read_text())
    (source,) = doc["datasources"]
    return dict(source)


def test_prometheus_scrapes_the_gateway_service() -> None:
    services = _compose()["services"]
    prometheus = services["prometheus"]
    mounts = _mounts(prometheus)
    flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config = yaml.safe_load(mounts[flag.split("=", 1)[1]].read_text())
    (job,) = config["scrape_configs"]
    assert job.get("metrics_path", "/metrics") == "/metrics"  # the gateway's route
    (target,) = [t for group in job["static_configs"] for t in group["targets"]]
    host, port = target.split(":")
    gateway = services["gateway"]
    assert host == "gateway" and host in services
    assert f"--port={port}" in gateway["command"]  # its container port, not the host one
    listen = next(a for a in prometheus["command"] if a.startswith("--web.listen-address="))
    assert listen.endswith(":9090") and "http://127.0.0.1:9090/-/ready" in \
        " ".join(prometheus["healthcheck"]["test"])


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    services = _compose()["services"]
    grafana = services["grafana"]
    mounts = _mounts(grafana)
    provisioning = mounts["/etc/grafana/provisioning"]
    source = _datasource()
    assert source["type"] == "prometheus"
    url = httpx.URL(source["url"])
    assert url.host == "prometheus" and url.host in services and url.port == 9090
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"
    provider = yaml.safe_load((provisioning / "dashboards" / "aios-mesh.yml").read_text())
    (entry,) = provider["providers"]
    folder = mounts[entry["options"]["path"]]
    assert folder == DASHBOARD.parent.resolve() and DASHBOARD.exists()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{entry['options']['path']}/{DASHBOARD.name}"
    assert {"prometheus-data", "grafana-data"} <= set(_compose()["volumes"])
