# One image for every role of Anxin (安心); the role is the command:
#   anxin db upgrade            one-off, before the roles start
#   anxin run gateway --gateway-id gw-1
#   anxin run alerts | anxin run dispatcher | anxin run web
#   anxin doctor                checks configuration and connections
#   anxin registry import FILE  loads the county's spreadsheets
# Configuration comes only from ANXIN_* environment variables (README, CONTRACT.md §3).
FROM python:3.11-slim-bookworm AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies only, from pyproject.toml: this layer is rebuilt only when they change.
COPY pyproject.toml README.md ./
RUN python -m venv /opt/anxin \
 && /opt/anxin/bin/pip install --upgrade pip \
 && mkdir -p anxin && touch anxin/__init__.py \
 && /opt/anxin/bin/pip install . \
 && /opt/anxin/bin/pip uninstall -y anxin

FROM python:3.11-slim-bookworm
# tzdata: ANXIN_TIMEZONE (Asia/Shanghai by default) must resolve inside the container.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/anxin --create-home anxin
COPY --from=deps /opt/anxin /opt/anxin
# The source tree as it is in the repository: Alembic finds migrations/ beside anxin/.
WORKDIR /app
COPY alembic.ini ./
COPY migrations ./migrations
COPY anxin ./anxin
COPY gateway ./gateway
COPY alert_service ./alert_service
COPY dispatcher ./dispatcher
COPY device_sim ./device_sim
COPY registry ./registry
COPY visits ./visits
RUN printf '#!/bin/sh\nexec python -m anxin.cli "$@"\n' > /opt/anxin/bin/anxin \
 && chmod 755 /opt/anxin/bin/anxin \
 && /opt/anxin/bin/python -m compileall -q /app
ENV PATH=/opt/anxin/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    ANXIN_LOG_JSON=true \
    ANXIN_HTTP_HOST=0.0.0.0 \
    ANXIN_METRICS_PORT=9100 \
    ANXIN_DATA_DIR=/var/lib/anxin
USER anxin
# 8000: the web role (API, console, Twilio webhooks, /healthz, /metrics).
# 9100: /metrics of the roles without HTTP (gateway, alerts, dispatcher).
EXPOSE 8000 9100
ENTRYPOINT ["anxin"]
CMD ["--help"]
