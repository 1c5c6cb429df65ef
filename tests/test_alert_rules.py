"""The shipped alert rules and dashboard: promtool checks and unit-tests the rules, and every
metric they and the dashboard name is one a live daemon's /metrics exposes."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sentinel_kit._report import ABORT_CAUSES
from sentinel_kit.testing import FakeTorn

from .conftest import ROOT, seed_sqlite, simple_keys
from .test_signals import FAIL, Daemon, closed_port, scrape, wait_for

RULES = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "sentinel-kit.json"
_NAME = re.compile(r"\bsentinel_[a-zA-Z0-9_]+")


def promtool() -> str:
    """The promtool binary; skips without it, unless CI requires it (then fails)."""
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("SENTINEL_TEST_REQUIRE_PROMTOOL"):
            pytest.fail(
                "promtool is required (SENTINEL_TEST_REQUIRE_PROMTOOL is set) but not on PATH: "
                "apt-get install -y prometheus"
            )
        pytest.skip("promtool is not installed (apt-get install -y prometheus)")
    return found


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_checks_the_rules_and_their_unit_tests_pass() -> None:
    """`promtool check rules` accepts alerts.yml and `promtool test rules` passes."""
    checked = run_promtool("check", "rules", "alerts.yml", cwd=RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout
    tested = run_promtool("test", "rules", "alerts_test.yml", cwd=RULES)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_the_unit_tests_catch_a_rule_that_changed(tmp_path: Path) -> None:
    """The unit tests pin the rules: waiting three intervals instead of two fails them."""
    rules = (RULES / "alerts.yml").read_text()
    assert rules.count("> 2 * max by (job) (sentinel_job_interval_seconds)") == 1
    (tmp_path / "alerts.yml").write_text(rules.replace("> 2 * max", "> 3 * max"))
    shutil.copy(RULES / "alerts_test.yml", tmp_path / "alerts_test.yml")
    tested = run_promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert tested.returncode != 0
    assert "SentinelNoHealthyRun" in tested.stdout + tested.stderr


def rule_expressions() -> list[str]:
    """Every ``expr`` of alerts.yml (PyYAML is not a dependency: the rules are read as the
    block scalars they are written as)."""
    exprs: list[str] = []
    lines = (RULES / "alerts.yml").read_text().splitlines()
    for i, line in enumerate(lines):
        key, _, rest = line.strip().partition(":")
        if key != "expr":
            continue
        if rest.strip() not in (">-", ">", "|"):
            exprs.append(rest.strip())
            continue
        indent = len(line) - len(line.lstrip()) + 2
        block = []
        for follow in lines[i + 1 :]:
            if follow.strip() and len(follow) - len(follow.lstrip()) < indent:
                break
            block.append(follow.strip())
        exprs.append(" ".join(block))
    return exprs


def dashboard_expressions() -> list[str]:
    """Every query of the dashboard: panel targets and template variables."""
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["definition"])
    return exprs


def referenced(exprs: list[str]) -> set[str]:
    """The sentinel_* series names the expressions select."""
    return {name for e in exprs for name in _NAME.findall(e)}


def missing(names: set[str], exposition: set[str]) -> set[str]:
    """The names no scraped sample carries. A counter ``x`` is scraped as ``x_total`` and a
    histogram as ``x_bucket``/``x_sum``/``x_count``: what a query must name, as Prometheus
    stores them, so a bare family name counts as missing."""
    return names - exposition


def test_the_check_reports_a_metric_we_do_not_export() -> None:
    """The name check is not vacuous: an unknown name, and a counter named without its
    ``_total`` as Prometheus would store it, are reported."""
    exported = {"sentinel_runs_total", "sentinel_job_healthy"}
    exprs = ["sentinel_job_healthy == 0", "rate(sentinel_runs[5m])", "sentinel_nope > 1"]
    assert missing(referenced(exprs), exported) == {"sentinel_runs", "sentinel_nope"}


def test_every_metric_the_rules_and_the_dashboard_name_is_exported(
    tmp_path: Path, torn: FakeTorn, daemons: list[Daemon]
) -> None:
    """A daemon syncing every second, with a key that fails and one Torn calls dead, exposes
    every family after its runs; each sentinel_* name in alerts.yml and the dashboard is a
    series of its /metrics. The new families hold what the runs did: the interval, an
    aborted-run count of zero for every cause, the backlog the latest run recorded."""
    keys = simple_keys(10)
    path = tmp_path / "names.db"
    db = seed_sqlite(path, keys)
    torn.always(keys[0].plaintext, FAIL)
    torn.always(keys[1].plaintext, "error_2_incorrect_key.json")
    port = closed_port()
    daemon = Daemon(tmp_path, db, torn.url, "names", "--interval", "1", "--metrics-port", str(port))
    daemons.append(daemon)
    job = (("job", "sync-users"),)

    def settled() -> dict[Any, float] | None:
        try:
            before = scrape(port)
        except OSError:  # not serving yet
            return None
        if before.get(("sentinel_run_duration_seconds_count", job), 0) < 2:
            return None
        return before if scrape(port) == before else None

    metrics = wait_for(settled, 60, "two runs in /metrics, between runs")
    assert daemon.stop() == 0
    exposed = {name for name, _ in metrics}

    names = referenced(rule_expressions()) | referenced(dashboard_expressions())
    assert len(names) >= 12  # the rules and the dashboard cover every family
    assert missing(names, exposed) == set()

    assert metrics[("sentinel_job_interval_seconds", job)] == 1
    for cause in ABORT_CAUSES:
        assert metrics[("sentinel_runs_aborted_total", (("cause", cause), *job))] == 0
    with sqlite3.connect(path) as conn:
        stale = conn.execute(
            "SELECT stale_users FROM sentinel_runs WHERE finished_at IS NOT NULL "
            "ORDER BY started_at DESC LIMIT 1"
        ).fetchone()[0]
    assert stale is not None
    assert metrics[("sentinel_stale_users", job)] == stale


def test_the_dashboard_queries_parse_and_use_its_variables(tmp_path: Path) -> None:
    """Each dashboard query is valid PromQL (promtool checks them as recording rules, the
    dashboard's variables filled in), filters by the ``job`` variable where the metric has
    a job label, and reads the ``datasource`` variable; panels do not overlap."""
    board = json.loads(DASHBOARD.read_text())
    assert board["schemaVersion"] == 39
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["job"]["definition"] == "label_values(sentinel_job_healthy, job)"
    # The last is the job variable's own query (Grafana's label_values, not PromQL).
    exprs = dashboard_expressions()[:-1]
    filled = [e.replace("$job", ".*").replace("$__rate_interval", "5m") for e in exprs]
    rules = "groups:\n  - name: dashboard\n    rules:\n" + "".join(
        f"      - record: dashboard:query_{i}\n        expr: {json.dumps(e)}\n"
        for i, e in enumerate(filled)
    )
    (tmp_path / "dashboard_rules.yml").write_text(rules)
    checked = run_promtool("check", "rules", "dashboard_rules.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    unlabelled = {"sentinel_torn_requests_total", "sentinel_parked_keys"}
    for expr in exprs:
        if not referenced([expr]) <= unlabelled:
            assert 'job=~"$job"' in expr, expr
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        g = panel["gridPos"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, panel["title"]
        cells |= mine
    titles = {p["title"] for p in board["panels"]}
    assert {"Runs by status", "Torn requests by outcome", "Stale users", "Run duration"} <= titles


def documented_scrape_configs() -> dict[str, dict[str, Any]]:
    """The prometheus.yml snippets users copy: README's and the alerts.yml header's."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Alerts and dashboard") :]
    snippet = section[section.index("```yaml\n") + 8 : section.index("```\n", 8)]
    header = []
    for line in (RULES / "alerts.yml").read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line[4:] if line.startswith("#   ") else "")
    header_yaml = "\n".join(header[header.index("rule_files:") :])
    return {"README.md": yaml.safe_load(snippet), "alerts.yml": yaml.safe_load(header_yaml)}


def test_the_documented_scrape_config_keeps_our_job_label() -> None:
    """Without honor_labels Prometheus renames our `job` label (the sync job) to
    exported_job and every `by (job)` rule sees one job; both documented configs set it."""
    configs = documented_scrape_configs()
    for where, config in configs.items():
        (scrape,) = config["scrape_configs"]
        assert scrape["job_name"] == "sentinel-kit", where  # what the daemon-down rules expect
        assert scrape["honor_labels"] is True, where
        assert config["rule_files"] == ["/etc/prometheus/sentinel-kit/alerts.yml"], where


def test_promtool_accepts_the_documented_prometheus_config(tmp_path: Path) -> None:
    """README's prometheus.yml, with the rule file where it says, is a valid config."""
    config = documented_scrape_configs()["README.md"]
    shutil.copy(RULES / "alerts.yml", tmp_path / "alerts.yml")
    config["rule_files"] = [str(tmp_path / "alerts.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    checked = run_promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
