# -*- test-case-name: tests.test_contrib_monitoring -*-
"""
The Grafana dashboard and Prometheus alert rules in contrib/ parse, and
every metric and label value they query is one the server exposes, so
neither can drift from C{clientid_twisted.server.metrics}.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from clientid_twisted.server.metrics import ServerMetrics
from tests.services import requireProgram
from tests.test_typing import requireModules

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "contrib" / "grafana" / "clientid-mail.json"
RULES = ROOT / "contrib" / "prometheus" / "clientid-mail.rules.yml"

_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def exposedNames() -> set[str]:
    """
    Every sample name the server's registry can expose.
    """

    class NoSessions:
        def sessions(self) -> list[Any]:
            return []

    metrics = ServerMetrics()
    metrics.watchConnections(NoSessions())
    metrics.relayQueueLength(lambda: 0)
    names = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in _SUFFIXES)
    return names


def checkExpression(case: SynchronousTestCase, expression: str, names: set[str]) -> None:
    used = re.findall(r"\bclientid_[a-z_]+", expression)
    for name in used:
        case.assertIn(name, names, expression)
    for label, value in re.findall(r'\b([a-z_]+)=~?"([^"]*)"', expression):
        if label != "job" and not value.startswith("$"):
            case.assertRegex(value, r"^[a-z0-9_]+$", f"{label} in {expression}")


class MonitoringTests(SynchronousTestCase):
    def setUp(self) -> None:
        if not DASHBOARD.exists():
            raise SkipTest("not running from a source checkout")
        self.names = exposedNames()

    def test_dashboard(self) -> None:
        dashboard = json.loads(DASHBOARD.read_text())
        expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
        self.assertGreater(len(expressions), 8)
        for expression in expressions:
            checkExpression(self, expression, self.names)
        queried = {n for e in expressions for n in re.findall(r"\bclientid_[a-z_]+", e)}
        for gauge in ("clientid_store_up", "clientid_connections", "clientid_build_info"):
            self.assertIn(gauge, queried)

    def test_rules(self) -> None:
        requireModules(self, "yaml")
        import yaml

        rules = yaml.safe_load(RULES.read_text())
        alerts = [rule for group in rules["groups"] for rule in group["rules"]]
        self.assertTrue(all({"alert", "expr", "labels", "annotations"} <= set(rule) for rule in alerts))
        for rule in alerts:
            checkExpression(self, rule["expr"], self.names)
        names = {rule["alert"] for rule in alerts}
        self.assertIn("ClientIDStoreDown", names)
        self.assertIn("ClientIDLoginDecisionsSlow", names)

    def test_promtool(self) -> None:
        promtool = requireProgram("promtool", "prometheus", "the alert rules' syntax, checked by Prometheus's own tool")
        result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
