"""Deployment files: they parse, and they say what the daemon's contract says.

Offline and without Docker or Kubernetes: every manifest under deploy/kubernetes/, the compose
file, the Dockerfile and .env.example are read as text or YAML and checked for the shard,
health and environment rules of the README ("Health and operations", "Configuration").
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from sentinel_kit import ConfigError

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

#: The environment variables sentinel-kit reads (the README's "Configuration" and the daemon,
#: status and alert contracts). A deployment file that sets any other name configures
#: nothing, silently.
CONTRACT_ENV = frozenset(
    {
        # The original worker's variables.
        "NEXT_PUBLIC_SUPABASE_URL",
        "SUPABASE_URL",
        "SUPABASE_SERVICE_ROLE_KEY",
        "ENCRYPTION_KEY",
        # sentinel-kit's own.
        "SENTINEL_DATABASE_URL",
        "SENTINEL_LOG_FORMAT",
        "SENTINEL_LOG_LEVEL",
        "SENTINEL_SCHEDULE",
        "SENTINEL_INTERVAL",
        "SENTINEL_TIMEOUT",
        "SENTINEL_LEASE_TTL",
        "SENTINEL_TIME_BOX",
        "SENTINEL_MIN_SYNCED",
        "SENTINEL_HOLDER",
        "SENTINEL_SHARD",
        "SENTINEL_SHARDS",
        "SENTINEL_METRICS_PORT",
        "SENTINEL_METRICS_HOST",
        "SENTINEL_ALERT_URLS",
        "TORN_API_URL",
        # Set by Kubernetes in an Indexed Job's pods; read as the shard index.
        "JOB_COMPLETION_INDEX",
    }
)
#: The postgres image's own settings: allowed on the compose `postgres` service and in
#: compose interpolation only.
POSTGRES_IMAGE_ENV = frozenset({"POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD"})
#: Torn's limit per IP, requests per rolling minute.
TORN_RPM_PER_IP = 1000
#: The daemon's default --grace: seconds a run gets after SIGTERM.
DAEMON_GRACE_S = 30
METRICS_PORT = 9108


# -- loading ---------------------------------------------------------------------------------


def k8s_files() -> list[Path]:
    return sorted(K8S.glob("*.yaml"))


def k8s_docs() -> list[dict[str, Any]]:
    return [doc for path in k8s_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_one(kind: str) -> dict[str, Any]:
    found = [doc for doc in k8s_docs() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} under deploy/kubernetes, found {len(found)}"
    return found[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    template = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    spec: dict[str, Any] = template["template"]["spec"]
    return spec


def container(doc: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec(doc)["containers"]
    assert len(containers) == 1
    return containers[0]


def k8s_env(doc: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: str(item["value"]) for item in container(doc).get("env", [])}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def daemon_services() -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in services().items()
        if svc.get("command", [])[:2] == ["sentinel-kit", "daemon"]
    }


def compose_env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def option(command: list[str], flag: str) -> str | None:
    """Return the value given to ``flag`` in an argv list, or None."""
    return command[command.index(flag) + 1] if flag in command else None


def dockerfile_instruction(name: str) -> list[str]:
    """Return every ``name`` instruction of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [
        line.split(None, 1)[1]
        for line in text.splitlines()
        if line.split(None, 1)[:1] == [name] and len(line.split(None, 1)) == 2
    ]


def dockerfile_healthcheck() -> list[str]:
    (healthcheck,) = dockerfile_instruction("HEALTHCHECK")
    command: list[str] = json.loads(healthcheck.split(" CMD ", 1)[1])
    return command


def seconds(duration: str | int) -> float:
    match = re.fullmatch(r"(\d+)(s|m|h)?", str(duration))
    assert match, f"unreadable duration {duration!r}"
    return int(match[1]) * {None: 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def commented_names(text: str, separator: str) -> set[str]:
    """Names in lines like ``# NAME=value`` (or ``# NAME: value``): documented, not set."""
    pattern = rf"^\s*#\s*([A-Z][A-Z0-9_]*){separator}"
    return set(re.findall(pattern, text, flags=re.MULTILINE))


# -- every file ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", k8s_files(), ids=lambda p: p.name)
def test_kubernetes_manifest_parses(path: Path) -> None:
    """Every deploy/kubernetes/*.yaml is YAML of Kubernetes objects (apiVersion, kind, name)."""
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert docs
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys()
        assert doc["metadata"]["name"]


def test_kubernetes_manifests_are_all_there() -> None:
    """deploy/kubernetes has the StatefulSet, the Indexed CronJob, the Secret and a README."""
    names = {p.name for p in K8S.iterdir()}
    assert {"statefulset.yaml", "cronjob-indexed.yaml", "secret.example.yaml"} <= names
    assert "README.md" in names


def test_compose_file_parses() -> None:
    """docker-compose.yml is YAML with a `sentinel` daemon service built from the Dockerfile."""
    sentinel = services()["sentinel"]
    assert sentinel["build"] == "."
    assert sentinel["env_file"] in (".env", [".env"])
    assert compose()["volumes"].keys() >= {"pgdata"}


# -- StatefulSet -----------------------------------------------------------------------------


def test_statefulset_shards_equal_replicas() -> None:
    """SENTINEL_SHARDS equals spec.replicas and each pod's shard comes from its hostname."""
    sts = k8s_one("StatefulSet")
    env = k8s_env(sts)
    assert int(env["SENTINEL_SHARDS"]) == sts["spec"]["replicas"] > 1
    # A fixed SENTINEL_SHARD would put every pod in the same shard; a hostname override
    # would hide the ordinal (sentinel-kit-2) the shard is parsed from.
    assert "SENTINEL_SHARD" not in env
    assert "hostname" not in pod_spec(sts)
    assert sts["spec"]["serviceName"] == k8s_one("Service")["metadata"]["name"]


def test_statefulset_runs_the_daemon_with_metrics_on_all_interfaces() -> None:
    """The StatefulSet runs `sentinel-kit daemon` serving metrics on 0.0.0.0:9108."""
    cmd = container(k8s_one("StatefulSet"))["command"]
    assert cmd[:2] == ["sentinel-kit", "daemon"]
    assert "--once" not in cmd
    assert option(cmd, "--metrics-host") == "0.0.0.0"
    assert option(cmd, "--metrics-port") == str(METRICS_PORT)


def test_statefulset_readiness_probe_is_healthz() -> None:
    """The readinessProbe GETs /healthz on the container's metrics port."""
    ctr = container(k8s_one("StatefulSet"))
    probe = ctr["readinessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    assert ports.get(probe["port"], probe["port"]) == METRICS_PORT


@pytest.mark.parametrize("kind", ["StatefulSet", "CronJob"])
def test_no_liveness_probe_on_healthz(kind: str) -> None:
    """No pod restarts on /healthz: unhealthy means Torn or the data, not a stuck process."""
    ctr = container(k8s_one(kind))
    for name in ("livenessProbe", "startupProbe"):
        probe = ctr.get(name)
        if probe is not None:
            assert "healthz" not in json.dumps(probe), f"{kind} {name} must not use /healthz"


def test_statefulset_says_why_there_is_no_liveness_probe() -> None:
    """statefulset.yaml explains, next to the probes, why /healthz is not a liveness probe."""
    text = (K8S / "statefulset.yaml").read_text()
    assert re.search(r"#.*No livenessProbe on /healthz", text)


@pytest.mark.parametrize("kind", ["StatefulSet", "CronJob"])
def test_pods_outlive_the_grace_period_and_have_resources(kind: str) -> None:
    """terminationGracePeriodSeconds exceeds --grace, and the container has resources set."""
    doc = k8s_one(kind)
    assert pod_spec(doc)["terminationGracePeriodSeconds"] > DAEMON_GRACE_S
    resources = container(doc)["resources"]
    assert resources["requests"]["memory"]
    assert resources["limits"]["memory"]


@pytest.mark.parametrize("kind", ["StatefulSet", "CronJob"])
def test_secrets_come_from_the_example_secret(kind: str) -> None:
    """Secrets reach the pods by envFrom the Secret that secret.example.yaml defines."""
    secret = k8s_one("Secret")
    refs = [item["secretRef"]["name"] for item in container(k8s_one(kind))["envFrom"]]
    assert refs == [secret["metadata"]["name"]]
    assert {"SUPABASE_SERVICE_ROLE_KEY", "ENCRYPTION_KEY"} <= secret["stringData"].keys()
    # Secrets stay out of the workload manifests themselves.
    assert not {"SUPABASE_SERVICE_ROLE_KEY", "ENCRYPTION_KEY"} & k8s_env(k8s_one(kind)).keys()


# -- Indexed CronJob -------------------------------------------------------------------------


def test_cronjob_is_an_indexed_job_with_one_pod_per_shard() -> None:
    """The CronJob's Job is Indexed with completions == parallelism == SENTINEL_SHARDS."""
    cron = k8s_one("CronJob")
    job = cron["spec"]["jobTemplate"]["spec"]
    shards = int(k8s_env(cron)["SENTINEL_SHARDS"])
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"] == shards > 1
    assert "SENTINEL_SHARD" not in k8s_env(cron)


def test_cronjob_never_retries_or_overlaps() -> None:
    """backoffLimit 0 (a retry finds its tick taken), restartPolicy Never, concurrency Forbid."""
    cron = k8s_one("CronJob")
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    assert pod_spec(cron)["restartPolicy"] == "Never"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    text = (K8S / "cronjob-indexed.yaml").read_text()
    assert re.search(r"#.*a retried pod finds its tick taken", text)


def test_cronjob_runs_daemon_once() -> None:
    """Each pod runs `sentinel-kit daemon --once`, the platform-cron entry point."""
    cmd = container(k8s_one("CronJob"))["command"]
    assert cmd[:3] == ["sentinel-kit", "daemon", "--once"]


def test_cronjob_schedule_is_the_daemon_schedule() -> None:
    """The CronJob fires on SENTINEL_SCHEDULE in UTC, so --once finds a fresh tick each time."""
    cron = k8s_one("CronJob")
    env = k8s_env(cron)
    assert cron["spec"]["schedule"] == env["SENTINEL_SCHEDULE"]
    assert cron["spec"]["timeZone"] in ("Etc/UTC", "UTC")


def test_cronjob_deadline_outlasts_the_run_timeout() -> None:
    """The Job's activeDeadlineSeconds exceeds the run's --timeout, so the run times out first."""
    cron = k8s_one("CronJob")
    deadline = cron["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"]
    assert deadline > float(k8s_env(cron)["SENTINEL_TIMEOUT"])
    if cron["spec"]["schedule"] == "0 * * * *":
        assert deadline < 3600, "an hourly Job must end before the next tick (Forbid)"


# -- each pod's shard, by sentinel-kit's own rule ------------------------------------------------


def test_statefulset_pods_each_resolve_to_their_own_shard() -> None:
    """Pod i of the StatefulSet (hostname <name>-i) is shard i/N by sentinel-kit's own rule,
    and a pod past SENTINEL_SHARDS (scaled without it) is refused, not doubled up."""
    from sentinel_kit._config import resolve_shard

    sts = k8s_one("StatefulSet")
    name, replicas = sts["metadata"]["name"], sts["spec"]["replicas"]
    env = k8s_env(sts)
    shards = [resolve_shard(None, {**env, "HOSTNAME": f"{name}-{i}"}) for i in range(replicas)]
    assert shards == [(i, replicas) for i in range(replicas)]
    with pytest.raises(ConfigError, match="SENTINEL_SHARDS"):
        resolve_shard(None, {**env, "HOSTNAME": f"{name}-{replicas}"})


def test_indexed_job_pods_each_resolve_to_their_own_shard() -> None:
    """Pod i of the Indexed Job (JOB_COMPLETION_INDEX=i, hostname <job>-i) is shard i/N."""
    from sentinel_kit._config import resolve_shard

    cron = k8s_one("CronJob")
    completions = cron["spec"]["jobTemplate"]["spec"]["completions"]
    env = k8s_env(cron)
    shards = [
        resolve_shard(
            None, {**env, "JOB_COMPLETION_INDEX": str(i), "HOSTNAME": f"sentinel-kit-2931-{i}"}
        )
        for i in range(completions)
    ]
    assert shards == [(i, completions) for i in range(completions)]


def test_compose_shard_services_resolve_to_distinct_shards() -> None:
    """Each compose shard service is its own shard by sentinel-kit's rule, covering 0..N-1."""
    from sentinel_kit._config import resolve_shard

    found = [
        resolve_shard(None, {**compose_env(svc), "HOSTNAME": svc.get("hostname", name)})
        for name, svc in daemon_services().items()
        if "shards" in svc.get("profiles", [])
    ]
    n = len(found)
    assert sorted(s for s in found if s is not None) == [(i, n) for i in range(n)]
    # The unsharded daemon stays unsharded (it is the one `--scale sentinel=0` turns off).
    assert resolve_shard(None, compose_env(services()["sentinel"])) is None


def test_cronjob_run_ends_by_plan_before_the_job_deadline() -> None:
    """The daemon's default time box for the CronJob's schedule and timeout ends runs by
    plan well before the Job's activeDeadlineSeconds kills the pod."""
    from sentinel_kit._plan import default_time_box
    from sentinel_kit._schedule import CronSchedule
    from sentinel_kit.daemon._daemon import schedule_period

    cron = k8s_one("CronJob")
    env = k8s_env(cron)
    period = schedule_period(CronSchedule(env["SENTINEL_SCHEDULE"]), datetime.now(UTC))
    box = default_time_box(period, float(env["SENTINEL_TIMEOUT"]), finish_s=35)
    assert box < float(env["SENTINEL_TIMEOUT"])
    assert box < cron["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"]


# -- one egress IP ---------------------------------------------------------------------------


def test_shards_on_one_ip_stay_within_torns_limit() -> None:
    """Shards that may share an egress IP ask for at most 1000 requests a minute together."""
    sts = k8s_one("StatefulSet")
    cron = k8s_one("CronJob")
    groups = {
        "statefulset": [option(container(sts)["command"], "--max-rpm")] * sts["spec"]["replicas"],
        "cronjob": [option(container(cron)["command"], "--max-rpm")]
        * cron["spec"]["jobTemplate"]["spec"]["parallelism"],
        "compose shards": [
            option(svc["command"], "--max-rpm")
            for svc in daemon_services().values()
            if "SENTINEL_SHARD" in compose_env(svc)
        ],
    }
    for name, limits in groups.items():
        assert None not in limits, f"{name}: every shard needs an explicit --max-rpm"
        total = sum(int(limit) for limit in limits if limit is not None)
        assert 0 < total <= TORN_RPM_PER_IP, f"{name}: {total} requests/min on one IP"


# -- compose ---------------------------------------------------------------------------------


def test_compose_shards_cover_every_index_once() -> None:
    """The shard services set distinct SENTINEL_SHARD i/N covering 0..N-1, in profile shards."""
    shards = {
        name: compose_env(svc)["SENTINEL_SHARD"]
        for name, svc in daemon_services().items()
        if "SENTINEL_SHARD" in compose_env(svc)
    }
    assert sorted(shards) == [f"sentinel-shard-{i}" for i in range(len(shards))]
    parsed = [tuple(int(x) for x in value.split("/")) for value in shards.values()]
    total = {n for _, n in parsed}
    assert total == {len(shards)} == {3}
    assert sorted(i for i, _ in parsed) == list(range(len(shards)))
    for name, value in shards.items():
        assert name.endswith(f"-{value.split('/')[0]}")
        assert services()[name]["profiles"] == ["shards"]


def test_compose_daemons_serve_metrics_on_all_interfaces() -> None:
    """Every compose daemon serves /metrics and /healthz on 0.0.0.0:9108, published to loopback."""
    assert daemon_services().keys() >= {"sentinel"}
    host_ports = []
    for name, svc in daemon_services().items():
        cmd = svc["command"]
        assert option(cmd, "--metrics-host") == "0.0.0.0", name
        assert option(cmd, "--metrics-port") == str(METRICS_PORT), name
        (published,) = svc["ports"]
        host, host_port, ctr_port = published.split(":")
        assert (host, ctr_port) == ("127.0.0.1", str(METRICS_PORT)), name
        host_ports.append(host_port)
    assert len(set(host_ports)) == len(host_ports), "two services publish the same host port"


def test_compose_healthcheck_is_the_dockerfiles() -> None:
    """Each compose daemon's healthcheck is the Dockerfile's: python stdlib GET of /healthz."""
    test = dockerfile_healthcheck()
    assert test[:2] == ["python", "-c"]
    assert "/healthz" in test[2]
    assert "urllib" in test[2]
    assert "curl" not in json.dumps(test)
    for name, svc in daemon_services().items():
        assert svc["healthcheck"]["test"] == ["CMD", *test], name


def test_compose_daemons_stop_gracefully_and_restart() -> None:
    """stop_grace_period exceeds the daemon's 30 s --grace; a restart policy is set."""
    for name, svc in daemon_services().items():
        assert seconds(svc["stop_grace_period"]) > DAEMON_GRACE_S, name
        assert svc["restart"] in ("unless-stopped", "always", "on-failure"), name


def test_compose_postgres_profile_migrates_before_the_daemon() -> None:
    """Profile postgres: postgres:16 on a volume, a one-shot migrate the daemons wait for."""
    svcs = services()
    postgres, migrate = svcs["postgres"], svcs["migrate"]
    assert postgres["image"] == "postgres:16"
    assert postgres["profiles"] == migrate["profiles"] == ["postgres"]
    assert any(v.startswith("pgdata:") for v in postgres["volumes"])
    assert migrate["command"] == ["sentinel-kit", "migrate"]
    assert migrate["restart"] == "no"
    assert compose_env(migrate)["SENTINEL_DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in compose_env(migrate)["SENTINEL_DATABASE_URL"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, svc in daemon_services().items():
        dep = svc["depends_on"]["migrate"]
        assert dep["condition"] == "service_completed_successfully", name
        # Without the profile there is no migrate service: the dependency must be optional.
        assert dep["required"] is False, name


# -- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_exposes_metrics_and_runs_as_non_root() -> None:
    """The image is python:3.11-slim, runs as a non-root user and exposes the metrics port."""
    assert dockerfile_instruction("FROM") == ["python:3.11-slim"]
    assert dockerfile_instruction("EXPOSE") == [str(METRICS_PORT)]
    users = dockerfile_instruction("USER")
    assert users
    assert users[-1] not in ("root", "0")
    env = " ".join(dockerfile_instruction("ENV"))
    assert f"SENTINEL_METRICS_PORT={METRICS_PORT}" in env
    assert "SENTINEL_METRICS_HOST=0.0.0.0" in env


class _Healthz(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b'{"healthy": true, "jobs": {}}')

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def healthz_server(request: pytest.FixtureRequest) -> Iterator[int]:
    """A loopback /healthz answering the parametrized status; yields its port."""
    handler = type("Handler", (_Healthz,), {"status": request.param})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def run_healthcheck(port: int) -> int:
    command = dockerfile_healthcheck()
    assert command[0] == "python"
    env = {"SENTINEL_METRICS_PORT": str(port), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, *command[1:]], env=env, capture_output=True, timeout=30, check=False
    ).returncode


@pytest.mark.parametrize(
    ("healthz_server", "expected"),
    [(200, 0), (503, 1)],
    ids=["healthy-200-passes", "unhealthy-503-fails"],
    indirect=["healthz_server"],
)
def test_healthcheck_command_follows_healthz(healthz_server: int, expected: int) -> None:
    """The image's healthcheck exits 0 when /healthz answers 200 and 1 when it answers 503."""
    assert run_healthcheck(healthz_server) == expected


def test_healthcheck_command_fails_when_nothing_listens() -> None:
    """The image's healthcheck fails when no metrics server answers (a dead or unwired daemon)."""
    with HTTPServer(("127.0.0.1", 0), _Healthz) as server:
        port = server.server_address[1]  # bound, then closed: nothing listens there
    assert run_healthcheck(port) == 1


# -- environment variables -------------------------------------------------------------------


def test_kubernetes_env_vars_are_contract_vars() -> None:
    """Every variable the manifests set or document is one sentinel-kit reads."""
    names: set[str] = set()
    for doc in k8s_docs():
        if doc["kind"] in ("StatefulSet", "CronJob"):
            names |= k8s_env(doc).keys()
        if doc["kind"] == "Secret":
            names |= doc["stringData"].keys()
    for path in k8s_files():
        names |= commented_names(path.read_text(), ":")
    assert names
    assert names <= CONTRACT_ENV, sorted(names - CONTRACT_ENV)


def test_compose_env_vars_are_contract_vars() -> None:
    """Compose sets only contract variables (the postgres image's own on `postgres` only)."""
    for name, svc in services().items():
        allowed = CONTRACT_ENV | POSTGRES_IMAGE_ENV if name == "postgres" else CONTRACT_ENV
        extra = compose_env(svc).keys() - allowed
        assert not extra, f"{name}: {sorted(extra)}"
    interpolated = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE.read_text()))
    assert interpolated <= CONTRACT_ENV | POSTGRES_IMAGE_ENV, sorted(interpolated)


def test_dockerfile_and_env_example_vars_are_contract_vars() -> None:
    """The Dockerfile's ENV and .env.example's variables are contract variables."""
    env_lines = " ".join(dockerfile_instruction("ENV"))
    ours = {n for n in re.findall(r"\b([A-Z][A-Z0-9_]*)=", env_lines) if n.startswith("SENTINEL")}
    assert ours <= CONTRACT_ENV, sorted(ours - CONTRACT_ENV)
    text = ENV_EXAMPLE.read_text()
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))
    documented |= commented_names(text, "=")
    assert documented <= CONTRACT_ENV | POSTGRES_IMAGE_ENV, sorted(
        documented - CONTRACT_ENV - POSTGRES_IMAGE_ENV
    )
    # The new operations settings are documented for people who read only .env.example.
    assert {
        "SENTINEL_SHARDS",
        "SENTINEL_TIME_BOX",
        "SENTINEL_METRICS_PORT",
        "SENTINEL_METRICS_HOST",
        "SENTINEL_ALERT_URLS",
        "SENTINEL_MIN_SYNCED",
    } <= documented


# -- the deployment files against the real CLI ---------------------------------------------------


def deploy_commands() -> list[tuple[str, list[str]]]:
    """Every `sentinel-kit ...` command line the deployment files run, with where it is."""
    found: list[tuple[str, list[str]]] = []
    for doc in k8s_docs():
        if doc["kind"] in ("StatefulSet", "CronJob"):
            found.append((f"k8s {doc['kind']}", container(doc)["command"]))
    for name, svc in services().items():
        command = svc.get("command")
        if command and command[0] == "sentinel-kit":
            found.append((f"compose {name}", command))
    (cmd,) = dockerfile_instruction("CMD")
    found.append(("Dockerfile CMD", json.loads(cmd)))
    return found


@pytest.mark.parametrize("where_command", deploy_commands(), ids=lambda wc: wc[0])
def test_deploy_commands_parse_with_the_real_cli(where_command: tuple[str, list[str]]) -> None:
    """Each command the manifests, compose file and image run is accepted by sentinel-kit's
    own parser: no flag the CLI does not have (`--help` stops before running anything)."""
    from .conftest import run_cli

    where, command = where_command
    assert command[0] == "sentinel-kit", where
    result = run_cli([*command[1:], "--help"])
    assert result.returncode == 0, f"{where}: {result.stderr}"


@pytest.mark.parametrize(
    ("command", "names"),
    [
        (
            "daemon",
            {
                "SENTINEL_METRICS_PORT",
                "SENTINEL_METRICS_HOST",
                "SENTINEL_ALERT_URLS",
                "SENTINEL_MIN_SYNCED",
            },
        ),
        ("status", {"SENTINEL_MIN_SYNCED"}),
        ("sync", {"SENTINEL_ALERT_URLS", "SENTINEL_MIN_SYNCED"}),
    ],
)
def test_health_and_alert_variables_are_read_by_the_cli(command: str, names: set[str]) -> None:
    """The metrics, alert and health variables the deployment files set are options of the
    CLI (click shows each option's variable in --help)."""
    from .conftest import run_cli

    shown = " ".join(run_cli([command, "--help"]).stdout.split())  # undo click's wrapping
    assert {n for n in names if f"env var: {n}" in shown} == names
    assert names <= CONTRACT_ENV


def test_image_installs_the_alerts_extra() -> None:
    """The image installs Apprise (the alerts extra): SENTINEL_ALERT_URLS works in it."""
    installs = " ".join(dockerfile_instruction("RUN"))
    match = re.search(r"pip install '\.\[([a-z,]+)\]'", installs)
    assert match, installs
    assert {"postgres", "alerts"} <= set(match[1].split(","))
