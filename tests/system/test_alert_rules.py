"""The shipped Prometheus configuration and alert rules, checked by promtool: the files
parse, and every alert fires on the data it is for and stays silent on data close to it
(``deploy/prometheus/alerts_test.yml``)."""
from __future__ import annotations

import subprocess

import yaml

from tests.support import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=PROMETHEUS, capture_output=True,
                          text=True, timeout=120)


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_the_configuration_and_rules_parse() -> None:
    checked = promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout


def test_every_alert_passes_its_unit_tests() -> None:
    tested = promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_runbook_and_a_test_where_it_fires() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"]
             if case["exp_alerts"]}
    silent = {case["alertname"] for test in tests for case in test["alert_rule_test"]
              if not case["exp_alerts"]}
    for rule in alert_rules():
        assert {"summary", "runbook"} <= rule["annotations"].keys(), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["alert"] in fired, f"{rule['alert']} is never shown firing"
        assert rule["alert"] in silent, f"{rule['alert']} is never shown silent"
