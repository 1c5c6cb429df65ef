# sentinel-kit daemon image: slim Python, non-root, `sentinel-kit daemon` as the command.
#   docker build -t sentinel-kit .
#   docker run --env-file .env -p 127.0.0.1:9108:9108 sentinel-kit
#   docker run --env-file .env sentinel-kit sentinel-kit daemon --once   # platform cron
# docker-compose.yml and deploy/kubernetes/ (see its README.md) build on this image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY sentinel_kit ./sentinel_kit
RUN pip install '.[postgres,alerts]' \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin sentinel \
 && mkdir -p /data && chown sentinel /data

USER sentinel
# The default database, when nothing else is configured, is sqlite:///sentinel.db in here.
WORKDIR /data

# The daemon serves Prometheus /metrics and /healthz here. In a container the server must
# listen on every interface (the default, 127.0.0.1, is unreachable from outside the
# container); publish the port to 127.0.0.1 on the host or scrape it on a private network.
ENV SENTINEL_LOG_FORMAT=json \
    SENTINEL_METRICS_HOST=0.0.0.0 \
    SENTINEL_METRICS_PORT=9108
EXPOSE 9108

# Health is the daemon's own /healthz (the one rule of `status`, alerts and `daemon --once`:
# the latest counted run is healthy, judged against the job's schedule and --min-synced).
# Standard library only: the image has no curl. About 80 ms of CPU a check, measured, against
# about 350 ms for `sentinel-kit status` (which also queries the database every time).
# The empty ProxyHandler keeps an HTTP(S)_PROXY setting from routing the loopback request
# through a proxy.
# "unhealthy" is a signal for people and alerting: Docker does not restart a container for it,
# and it should not (a restart does not bring Torn or the database back).
HEALTHCHECK --interval=60s --timeout=10s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % os.environ.get('SENTINEL_METRICS_PORT', '9108'), timeout=5)"]

# SIGTERM (docker stop) stops scheduling and gives the current run --grace (30 s) to finish;
# give the container longer than that to stop (compose: stop_grace_period: 60s;
# docker stop -t 60).
STOPSIGNAL SIGTERM
CMD ["sentinel-kit", "daemon"]
