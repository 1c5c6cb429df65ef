# sentinel-kit daemon image: slim Python, non-root, `sentinel-kit daemon` as the command.
#   docker build -t sentinel-kit .
#   docker run --env-file .env sentinel-kit
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY sentinel_kit ./sentinel_kit
RUN pip install '.[postgres]' \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin sentinel \
 && mkdir -p /data && chown sentinel /data

USER sentinel
WORKDIR /data

# Exits non-zero when the last successful sync is older than two hours.
HEALTHCHECK --interval=5m --timeout=30s --start-period=2h \
  CMD ["sentinel-kit", "status", "--fail-if-older-than", "2h"]

# SIGTERM (docker stop) lets the current run finish within --grace, then exits 0.
STOPSIGNAL SIGTERM
CMD ["sentinel-kit", "daemon", "--log-format", "json"]
