# syntax=docker/dockerfile:1
# The toolwarden worker image: Python 3.11 slim, the package installed from this repository
# into a virtualenv, run as an unprivileged user, healthy when the worker's /readyz says ready.
#
#   docker build -t toolwarden .
#   docker run --init -e TOOLWARDEN_TEMPORAL__ADDRESS=temporal.example:7233 toolwarden
#
# Tools the worker supervises run inside this container, so add them in an image of your own:
#   FROM toolwarden
#   USER root
#   RUN apt-get update && apt-get install -y --no-install-recommends rsync && rm -rf /var/lib/apt/lists/*
#   USER toolwarden
#
# Run it with an init (`docker run --init`, `init: true` in Compose) so the orphaned
# grandchildren of tools are reaped, and give it a stop timeout above
# worker.shutdown_grace + kill_grace (`--stop-timeout 90`, `stop_grace_period: 90s`).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/toolwarden && /opt/toolwarden/bin/pip install .

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 toolwarden \
    && useradd --system --uid 10001 --gid toolwarden --home-dir /var/lib/toolwarden \
       --create-home --shell /usr/sbin/nologin toolwarden
COPY --from=build /opt/toolwarden /opt/toolwarden
ENV PATH=/opt/toolwarden/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TOOLWARDEN_HOME=/var/lib/toolwarden \
    TOOLWARDEN_WORKER__SOCKET_DIR=/tmp/toolwarden \
    TOOLWARDEN_WORKER__HEALTH_ADDRESS=0.0.0.0:9464 \
    TOOLWARDEN_WORKER__SDK_METRICS_ADDRESS=127.0.0.1:9465
USER toolwarden
WORKDIR /var/lib/toolwarden
EXPOSE 9464
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('TOOLWARDEN_WORKER__HEALTH_ADDRESS', '0.0.0.0:9464').rsplit(':', 1)[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/readyz', timeout=4)"]
ENTRYPOINT ["toolwarden"]
CMD ["worker", "--verbose"]
