# The aimeter image: one image for the gateway, the pricer, the alerts, the fake upstream and the demo traffic
# (docker-compose.yml runs each as `aimeter <command>`, the same commands as local mode).
# The newest 3.11 patch release seen in public pins (2026-12). No digest: Docker Hub was not reachable to verify
# one; add `@sha256:…` (docker buildx imagetools inspect python:3.11.15-slim-bookworm) for a reproducible build.
FROM python:3.11.15-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AIMETER_DATA_DIR=/var/lib/aimeter

WORKDIR /app
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY services ./services
COPY schemas ./schemas
COPY examples ./examples
COPY dashboards ./dashboards
# Editable, as in local mode: migrations, price overrides and dashboards are read from /app at run time.
# The data dir is the only place a service writes (keys are in Kafka; the gateway's is a named volume).
RUN pip install -e . \
 && useradd --system --uid 10001 --home-dir /var/lib/aimeter aimeter \
 && mkdir -p /var/lib/aimeter \
 && chown aimeter:aimeter /var/lib/aimeter

USER aimeter
CMD ["aimeter", "--help"]
