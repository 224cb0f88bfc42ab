# The user-code image: the code server that Dagster's Helm chart runs as the user deployment,
# and the image of every run worker the K8sRunLauncher starts (one pod per run).
# Build: docker build -t REGISTRY/selfheal-dagster:$(git rev-parse --short HEAD) .
# An exact base tag, so a rebuild gets the Python the tests ran on (3.11, as requires-python).
FROM python:3.11.13-slim-bookworm

# Logs reach the pod's output at once; no .pyc files written next to read-only code.
# DAGSTER_HOME is where the chart mounts the instance (dagster.yaml); the chart sets it too.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home

WORKDIR /opt/dagster/app

# Only what the package needs to install (.dockerignore keeps the rest out of the context).
COPY pyproject.toml README.md ./
COPY selfheal_dagster ./selfheal_dagster

# The project with its production extras (Postgres storage, the Kubernetes run launcher,
# BigQuery), every direct dependency pinned in pyproject.toml ("./" names the local project,
# which has no version to pin); then a user with no login and a DAGSTER_HOME it owns.
# No credentials are in the image: settings and secrets come from the pod's environment (a
# Kubernetes Secret), Google credentials from Workload Identity.
RUN pip install --no-cache-dir "./[prod]" \
    && useradd --no-log-init --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin dagster \
    && mkdir -p "$DAGSTER_HOME" \
    && chown 10001:10001 "$DAGSTER_HOME"

# A numeric user, so Kubernetes can enforce runAsNonRoot without resolving a name.
USER 10001:10001

EXPOSE 4000

# The code server (gRPC) on 4000. The chart's user deployment passes its own arguments
# (`dagster api grpc ... -m selfheal_dagster.definitions`) and run workers run
# `dagster api execute_run`; this CMD is for running the image by hand.
CMD ["dagster", "code-server", "start", "-m", "selfheal_dagster.definitions", "-h", "0.0.0.0", "-p", "4000"]
