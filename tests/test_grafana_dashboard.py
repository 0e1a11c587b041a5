"""The Grafana dashboard in docs/grafana reads only series Keyhouse serves: the services'
(keyhouse.prometheus.exposition, within the filtered subset, so that it works on either) and
Keyhouse's own (keyhouse.metrics)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from keyhouse.metrics import Metrics
from keyhouse.prometheus.exposition import FILTERED, INFO

pytestmark = pytest.mark.one_database

DASHBOARD = Path(__file__).parent.parent / "docs" / "grafana" / "keyhouse.json"
FUNCTIONS = {"sum", "by", "rate", "increase", "histogram_quantile", "label_values"}
LABELS = {"clickhouse_service_name", "status", "operation", "door", "limit", "state", "event"}
LABELS |= {"outcome", "service", "le"}


def _keyhouse_series() -> set[str]:
    families = {family.name for family in Metrics().registry.collect()}
    suffixes = ("", "_total", "_bucket", "_sum", "_count")
    return {name + suffix for name in families for suffix in suffixes}


def test_every_query_of_the_dashboard_names_a_series_keyhouse_serves() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert len(exprs) > 10
    served = _keyhouse_series()
    for expr in exprs:
        bare = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^\]]*\]', " ", expr)  # matchers, strings, ranges
        for word in re.findall(r"\b[A-Za-z_][A-Za-z0-9_]*", bare):
            if word in FUNCTIONS or word in LABELS:
                continue
            if word.startswith("keyhouse_"):
                assert word in served, f"{expr}: {word} is not one of Keyhouse's metrics"
            else:
                assert word == INFO or word in FILTERED, f"{expr}: {word} is not served"
