# syntax=docker/dockerfile:1
# The `pipeline` command (bridge, worker, simulate, inspect, bench) in a slim, non-root image.
# Build: docker build -t <registry>/openstack-notification-pipeline:<version> .

# --- build: a virtualenv with the project and its dependencies (all ship binary wheels, so no
# compiler is needed; build tools and pip's caches never reach the runtime image)
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline/ pipeline/
RUN pip install --no-cache-dir .

# --- runtime
FROM python:3.11-slim-bookworm AS runtime
# A numeric user above 10000 so that the kubelet can check runAsNonRoot; /data is where the workers'
# RocksDB volume is mounted.
RUN groupadd --gid 10001 pipeline \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin pipeline \
 && mkdir -p /data \
 && chown 10001:10001 /data
COPY --from=build /opt/venv /opt/venv
COPY avro/ /opt/pipeline/avro/
# The root filesystem is read-only in the pods: no .pyc writes, HOME on the /tmp volume.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    PIPELINE_AVRO_DIR=/opt/pipeline/avro \
    WORKER_DATA_DIR=/data
WORKDIR /data
USER 10001:10001
# 6066: worker web views and /metrics; 9108: bridge /metrics
EXPOSE 6066 9108
# Exec form: `pipeline` is PID 1 and gets SIGTERM itself, which is faust's warm shutdown.
ENTRYPOINT ["pipeline"]
CMD ["--help"]
