"""Hosting recipes (deploy/fly, deploy/render, deploy/railway): they parse, they run a command
our CLI accepts, and they agree with the image and the daemon's contract.

Offline: no platform is reached. Each file is read with the parser its platform uses (TOML,
YAML, JSON) and its command is given to the real CLI with ``--help`` appended, so a flag the
CLI does not have fails here rather than on the platform at 03:00.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from croniter import croniter

from .conftest import run_cli
from .test_deploy import CONTRACT_ENV

ROOT = Path(__file__).resolve().parent.parent
FLY = ROOT / "deploy" / "fly" / "fly.toml"
RENDER = ROOT / "deploy" / "render" / "render.yaml"
RAILWAY = ROOT / "deploy" / "railway" / "railway.json"
DOCKERFILE = ROOT / "Dockerfile"

#: The three variables of the original worker: every recipe must ask for them.
WORKER_ENV = {"NEXT_PUBLIC_SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "ENCRYPTION_KEY"}


def _image_env() -> dict[str, str]:
    """The ENV lines of the Dockerfile (the image's defaults)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def _accepts(command: str) -> None:
    """Run ``command --help`` through our CLI: exit 0 means every flag in it exists."""
    argv = shlex.split(command)
    assert argv[0] == "sentinel-kit", command
    done = run_cli([*argv[1:], "--help"])
    assert done.returncode == 0, done.stderr


def _duration_s(text: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", text)
    assert match, text
    return int(match[1]) * (60 if match[2] == "m" else 1)


def test_fly_checks_the_daemons_healthz_without_restarting_it() -> None:
    fly: dict[str, Any] = tomllib.loads(FLY.read_text())
    image = _image_env()
    port = int(image["SENTINEL_METRICS_PORT"])
    check = fly["checks"]["healthz"]
    assert (check["type"], check["port"], check["path"]) == ("http", port, "/healthz")
    assert fly["metrics"] == {"port": port, "path": "/metrics"}
    assert image["SENTINEL_METRICS_HOST"] == "0.0.0.0"  # reachable by Fly's checker
    # SIGTERM, and more time than the daemon's --grace (30 s) before Fly's SIGKILL.
    assert fly["kill_signal"] == "SIGTERM"
    assert _duration_s(fly["kill_timeout"]) > 30
    # No public service: nothing routes to the daemon, and no service check restarts it.
    assert "services" not in fly
    assert "http_service" not in fly
    assert set(fly.get("env", {})) <= CONTRACT_ENV
    assert croniter.is_valid(fly["env"]["SENTINEL_SCHEDULE"])
    for name in WORKER_ENV:  # secrets, not env: they are named in the instructions
        assert f"{name}=" in FLY.read_text()


def test_render_runs_daemon_once_on_the_daemons_own_schedule() -> None:
    blueprint = yaml.safe_load(RENDER.read_text())
    (service,) = blueprint["services"]
    assert (service["type"], service["runtime"]) == ("cron", "docker")
    assert (ROOT / service["dockerfilePath"]).is_file()
    assert service["dockerCommand"] == "sentinel-kit daemon --once"
    _accepts(service["dockerCommand"])
    env = {e["key"]: e for e in service["envVars"]}
    assert set(env) <= CONTRACT_ENV
    # The platform's cron and the daemon's tick grid must be the same expression.
    assert croniter.is_valid(service["schedule"])
    assert env["SENTINEL_SCHEDULE"]["value"] == service["schedule"]
    # Secrets are asked for in the dashboard, never committed.
    for name in WORKER_ENV:
        assert env[name] == {"key": name, "sync": False}


def test_railway_runs_daemon_once_and_never_retries_a_tick() -> None:
    config = json.loads(RAILWAY.read_text())
    assert config["build"] == {"builder": "DOCKERFILE", "dockerfilePath": "Dockerfile"}
    deploy = config["deploy"]
    assert deploy["startCommand"] == "sentinel-kit daemon --once"
    _accepts(deploy["startCommand"])
    # The default schedule of the daemon, so SENTINEL_SCHEDULE need not be set.
    assert deploy["cronSchedule"] == "0 * * * *"
    # A retried run would find its tick taken: a failed tick stays failed, and visible.
    assert deploy["restartPolicyType"] == "NEVER"


@pytest.mark.parametrize("path", [FLY, RENDER, RAILWAY], ids=lambda p: p.parent.name)
def test_recipes_hold_no_secret_value(path: Path) -> None:
    text = path.read_text()
    for name in WORKER_ENV:
        # A name followed by a value on the same line would be a committed secret.
        assert not re.search(rf"{name}\s*[=:]\s*[\"']?[A-Za-z0-9]{{8,}}", text), name
