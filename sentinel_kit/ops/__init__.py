"""Operations: the health rule, ``status()``, Prometheus metrics and alerts (and ``doctor``).

See ARCHITECTURE.md: ``_health_rule.py`` is pure core; the rest is orchestration that the
daemon and the CLI call. The metrics (``_metrics.py``) are imported where they are served,
not here: prometheus_client takes ~0.1 s to import, and ``import sentinel_kit`` does not
need it.
"""

from ._alerts import Alerter, alert_message, announce, parse_alert_urls, record_alert_state
from ._health_rule import (
    DEFAULT_MIN_SYNCED,
    JobHealth,
    Verdict,
    VerdictKind,
    check_min_synced,
    judge_job,
    run_exit_code,
    run_is_healthy,
    run_verdict,
    run_verdict_of,
)
from ._status import JobStatus, StatusReport, astatus, job_statuses, status

__all__ = [
    "DEFAULT_MIN_SYNCED",
    "Alerter",
    "JobHealth",
    "JobStatus",
    "StatusReport",
    "Verdict",
    "VerdictKind",
    "alert_message",
    "announce",
    "astatus",
    "check_min_synced",
    "job_statuses",
    "judge_job",
    "parse_alert_urls",
    "record_alert_state",
    "run_exit_code",
    "run_is_healthy",
    "run_verdict",
    "run_verdict_of",
    "status",
]
