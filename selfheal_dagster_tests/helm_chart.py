"""Dagster's Helm chart, as far as deploy/helm/values.yaml uses it, for test_deploy.py.

No ``helm`` binary is needed: the two pieces of the chart the project relies on are written
out here from the chart's sources (helm/dagster in the dagster repository, chart 1.13.27):

- ``VALUES_SCHEMA``: JSON Schema of the values, from the chart's pydantic models
  (helm/dagster/schema/schema/charts/...) and the keys its templates read. It is stricter than
  the chart's own values.schema.json on purpose: there a misspelt key is refused only in the
  sections whose models forbid extra keys (the daemon, the run launcher), while a misspelt key
  of a user deployment, ``global`` or the top level is silently ignored by ``helm install``.
  Here every section we set refuses unknown keys; the sections we leave to the chart's
  defaults are not described. Kubernetes objects inside the values (security contexts,
  resources, Secret references) are checked against Kubernetes' own schemas, shipped by
  kubernetes-validate, as the chart's schema refers to them.
- ``instance_config``: the instance ``dagster.yaml`` that the chart's
  templates/configmap-instance.yaml (and helpers/instance/*.tpl) renders, for the sections
  these values set: storage, run launcher, run coordinator, run monitoring, run retries,
  sensors, telemetry, retention. Keys those templates render unconditionally are required in
  the values (so the rendered instance never depends on a chart default this file does not
  know), except the few defaults in ``CHART_DEFAULTS``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from referencing import Registry, Resource

CHART_VERSION = "1.13.27"
KUBERNETES_VERSION = "1.33.0"  # the Kubernetes schemas the values' pod settings are checked on

# Chart defaults the instance template reads that these values leave alone (the chart's
# values.yaml): the release's Dagster home, the daemon, no Postgres connection parameters, no
# service account name of our own for the webserver and daemon.
CHART_DEFAULTS = {
    "dagsterHome": "/opt/dagster/dagster_home",
    "daemonEnabled": True,
    "postgresqlParams": {},
    "serviceAccountName": "",
}

# -- the values schema ------------------------------------------------------------------------

K8S_DEFINITIONS = "https://kubernetes.io/api/_definitions.json"
STR = {"type": "string"}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
ANY: dict[str, Any] = {}
STR_MAP = {"type": "object", "additionalProperties": STR}
STR_LIST = {"type": "array", "items": STR}
# A Kubernetes object name used as a DNS label (a Service, a Deployment): no underscore.
DNS_LABEL = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"}


def k8s(definition: str) -> dict[str, str]:
    """A Kubernetes API definition, e.g. ``core.v1.PodSecurityContext``."""
    return {"$ref": f"{K8S_DEFINITIONS}#/$defs/io.k8s.api.{definition}"}


def k8s_list(definition: str) -> dict[str, Any]:
    return {"type": "array", "items": k8s(definition)}


def obj(properties: Mapping[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """An object with exactly these keys (unknown keys refused)."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": dict(properties),
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    return schema


def optional(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"anyOf": [dict(schema), {"type": "null"}]}


PULL_POLICY = {"enum": ["Always", "IfNotPresent", "Never"]}
IMAGE = obj(
    {
        "repository": STR,
        "tag": {"type": ["string", "integer", "null"]},
        "digest": STR,
        "pullPolicy": PULL_POLICY,
    },
    required=("repository", "pullPolicy"),
)
ENV = {"anyOf": [STR_MAP, k8s_list("core.v1.EnvVar")]}
SERVICE_ACCOUNT = obj({"create": BOOL, "name": STR, "annotations": STR_MAP})

# schema/charts/dagster_user_deployments/subschema/user_deployments.py, and the keys
# charts/dagster-user-deployments/templates/deployment-user.yaml reads.
USER_DEPLOYMENT = {
    **obj(
        {
            "name": DNS_LABEL,
            "image": IMAGE,
            "port": INT,
            "dagsterApiGrpcArgs": STR_LIST,
            "codeServerArgs": STR_LIST,
            "includeConfigInLaunchedRuns": obj({"enabled": BOOL}, required=("enabled",)),
            "env": ENV,
            "envConfigMaps": k8s_list("core.v1.ConfigMapEnvSource"),
            "envSecrets": k8s_list("core.v1.SecretEnvSource"),
            "annotations": STR_MAP,
            "labels": STR_MAP,
            "nodeSelector": STR_MAP,
            "affinity": k8s("core.v1.Affinity"),
            "tolerations": k8s_list("core.v1.Toleration"),
            "podSecurityContext": k8s("core.v1.PodSecurityContext"),
            "securityContext": k8s("core.v1.SecurityContext"),
            "resources": k8s("core.v1.ResourceRequirements"),
            "livenessProbe": ANY,
            "readinessProbe": ANY,
            "startupProbe": ANY,
            "volumeMounts": k8s_list("core.v1.VolumeMount"),
            "volumes": k8s_list("core.v1.Volume"),
            "initContainers": k8s_list("core.v1.Container"),
            "sidecarContainers": k8s_list("core.v1.Container"),
            "schedulerName": STR,
            "deploymentStrategy": ANY,
            "serviceAccount": SERVICE_ACCOUNT,
            "service": obj({"annotations": STR_MAP}),
        },
        required=("name", "image", "port"),
    ),
    # The template runs `dagster api grpc` with the first, `dagster code-server start` with
    # the second, and the image's own command with neither: exactly one, said out loud.
    "oneOf": [{"required": ["dagsterApiGrpcArgs"]}, {"required": ["codeServerArgs"]}],
}
USER_DEPLOYMENTS = obj(
    {
        "enabled": BOOL,
        "enableSubchart": BOOL,
        "imagePullSecrets": k8s_list("core.v1.LocalObjectReference"),
        "deployments": {"type": "array", "items": USER_DEPLOYMENT, "minItems": 1},
        # The subchart's own values (schema/charts/dagster_user_deployments/values.py).
        "serviceAccount": SERVICE_ACCOUNT,
        "dagsterHome": STR,
        "postgresqlSecretName": STR,
        "celeryConfigSecretName": STR,
        "includeInstance": BOOL,
    }
)

# schema/charts/dagster/subschema/run_launcher.py
K8S_RUN_LAUNCHER = obj(
    {
        "image": IMAGE,
        "imagePullPolicy": PULL_POLICY,
        "jobNamespace": optional(STR),
        "loadInclusterConfig": BOOL,
        "kubeconfigFile": optional(STR),
        "envConfigMaps": k8s_list("core.v1.ConfigMapEnvSource"),
        "envSecrets": k8s_list("core.v1.SecretEnvSource"),
        "envVars": STR_LIST,
        "volumeMounts": k8s_list("core.v1.VolumeMount"),
        "volumes": k8s_list("core.v1.Volume"),
        "labels": STR_MAP,
        "failPodOnRunFailure": BOOL,
        "resources": k8s("core.v1.ResourceRequirements"),
        "schedulerName": STR,
        "securityContext": k8s("core.v1.SecurityContext"),
        "runK8sConfig": obj(
            {
                "containerConfig": ANY,
                "podSpecConfig": ANY,
                "podTemplateSpecMetadata": ANY,
                "jobSpecConfig": ANY,
                "jobMetadata": ANY,
            }
        ),
    }
)
RUN_LAUNCHER = {
    **obj(
        {
            "type": {"enum": ["CeleryK8sRunLauncher", "K8sRunLauncher", "CustomRunLauncher"]},
            "config": obj(
                {
                    "k8sRunLauncher": K8S_RUN_LAUNCHER,
                    "celeryK8sRunLauncher": ANY,
                    "customRunLauncher": ANY,
                }
            ),
        },
        required=("type", "config"),
    ),
    "if": {"properties": {"type": {"const": "K8sRunLauncher"}}},
    "then": {"properties": {"config": {"required": ["k8sRunLauncher"]}}},
}

# schema/charts/dagster/subschema/daemon.py, and the keys configmap-instance.yaml and
# helpers/instance/_run-coordinator.tpl read.
TAG_CONCURRENCY_LIMIT = obj(
    {
        "key": STR,
        "value": {
            "anyOf": [
                STR,
                obj({"applyLimitPerUniqueValue": BOOL}, required=("applyLimitPerUniqueValue",)),
            ]
        },
        "limit": INT,
    },
    required=("key", "limit"),
)
QUEUED_RUN_COORDINATOR = obj(
    {
        "maxConcurrentRuns": INT,
        "tagConcurrencyLimits": {"type": "array", "items": TAG_CONCURRENCY_LIMIT},
        "dequeueIntervalSeconds": INT,
        "dequeueNumWorkers": INT,
        "dequeueUseThreads": BOOL,
        "blockOpConcurrencyLimitedRuns": obj({"enabled": BOOL, "opConcurrencySlotBuffer": INT}),
    }
)
RUN_COORDINATOR = {
    **obj(
        {
            "enabled": BOOL,
            "type": {"enum": ["QueuedRunCoordinator", "CustomRunCoordinator"]},
            "config": obj(
                {"queuedRunCoordinator": QUEUED_RUN_COORDINATOR, "customRunCoordinator": ANY}
            ),
        },
        required=("enabled", "type", "config"),
    ),
    "if": {"properties": {"type": {"const": "QueuedRunCoordinator"}}},
    "then": {"properties": {"config": {"required": ["queuedRunCoordinator"]}}},
}
# The chart types these two as free mappings; its template reads these keys (a misspelt one
# would render as nothing at all), and renders the required ones whether set or not.
RUN_MONITORING = obj(
    {
        "enabled": BOOL,
        "startTimeoutSeconds": INT,
        "cancelTimeoutSeconds": INT,
        "maxResumeRunAttempts": INT,
        "pollIntervalSeconds": INT,
        "freeSlotsAfterRunEndSeconds": INT,
    },
    required=(
        "enabled",
        "startTimeoutSeconds",
        "pollIntervalSeconds",
        "freeSlotsAfterRunEndSeconds",
    ),
)
RUN_RETRIES = obj({"enabled": BOOL, "maxRetries": INT}, required=("enabled",))
THREADS = obj({"useThreads": BOOL, "numWorkers": INT, "numSubmitWorkers": INT})
DAEMON = obj(
    {
        "enabled": BOOL,
        "image": IMAGE,
        "runCoordinator": RUN_COORDINATOR,
        "runMonitoring": RUN_MONITORING,
        "runRetries": RUN_RETRIES,
        "sensors": THREADS,
        "schedules": THREADS,
        "heartbeatTolerance": INT,
        "env": ENV,
        "envConfigMaps": k8s_list("core.v1.ConfigMapEnvSource"),
        "envSecrets": k8s_list("core.v1.SecretEnvSource"),
        "deploymentLabels": STR_MAP,
        "labels": STR_MAP,
        "annotations": STR_MAP,
        "nodeSelector": STR_MAP,
        "affinity": k8s("core.v1.Affinity"),
        "tolerations": k8s_list("core.v1.Toleration"),
        "podSecurityContext": k8s("core.v1.PodSecurityContext"),
        "securityContext": k8s("core.v1.SecurityContext"),
        "resources": k8s("core.v1.ResourceRequirements"),
        "livenessProbe": ANY,
        "readinessProbe": ANY,
        "startupProbe": ANY,
        "volumeMounts": k8s_list("core.v1.VolumeMount"),
        "volumes": k8s_list("core.v1.Volume"),
        "schedulerName": STR,
    }
)

# schema/charts/dagster/subschema/webserver.py
WEBSERVER = obj(
    {
        "replicaCount": {"type": "integer", "minimum": 1},
        "image": IMAGE,
        "nameOverride": STR,
        "pathPrefix": STR,
        "logLevel": STR,
        "dbStatementTimeout": INT,
        "dbPoolRecycle": INT,
        "dbPoolMaxOverflow": INT,
        "enableReadOnly": BOOL,
        "service": ANY,
        "workspace": ANY,
        "env": ENV,
        "envConfigMaps": k8s_list("core.v1.ConfigMapEnvSource"),
        "envSecrets": k8s_list("core.v1.SecretEnvSource"),
        "deploymentLabels": STR_MAP,
        "labels": STR_MAP,
        "annotations": STR_MAP,
        "nodeSelector": STR_MAP,
        "affinity": k8s("core.v1.Affinity"),
        "tolerations": k8s_list("core.v1.Toleration"),
        "podSecurityContext": k8s("core.v1.PodSecurityContext"),
        "securityContext": k8s("core.v1.SecurityContext"),
        "resources": k8s("core.v1.ResourceRequirements"),
        "livenessProbe": ANY,
        "readinessProbe": ANY,
        "startupProbe": ANY,
        "volumeMounts": k8s_list("core.v1.VolumeMount"),
        "volumes": k8s_list("core.v1.Volume"),
        "schedulerName": STR,
    }
)

# schema/charts/dagster/subschema/postgresql.py and helpers/instance/_postgresql.tpl
POSTGRESQL = obj(
    {
        "enabled": BOOL,
        "image": ANY,
        "postgresqlHost": STR,
        "postgresqlUsername": STR,
        "postgresqlPassword": STR,
        "postgresqlDatabase": STR,
        "postgresqlParams": {"type": "object"},
        "postgresqlScheme": STR,
        "service": obj({"port": INT}, required=("port",)),
    },
    required=("enabled", "postgresqlUsername", "postgresqlDatabase", "service"),
)
# schema/charts/dagster/subschema/global_.py (and _postgresql.tpl's username key)
GLOBAL = obj(
    {
        "postgresqlSecretName": STR,
        "postgresqlSecretUsernameKey": STR,
        "dagsterHome": STR,
        "serviceAccountName": STR,
        "celeryConfigSecretName": STR,
        "dagsterInstanceConfigMap": STR,
    }
)
# schema/charts/dagster/subschema/retention.py and telemetry.py
TICK_RETENTION = obj(
    {
        "purgeAfterDays": {
            "anyOf": [INT, obj({"skipped": INT, "success": INT, "failure": INT, "started": INT})]
        }
    },
    required=("purgeAfterDays",),
)
RETENTION = obj(
    {
        "enabled": BOOL,
        "sensor": TICK_RETENTION,
        "schedule": TICK_RETENTION,
        "autoMaterialize": TICK_RETENTION,
    },
    required=("enabled",),
)

# schema/charts/dagster/values.py: every top-level key; the ones these values leave to the
# chart are not described further.
VALUES_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    **obj(
        {
            "global": GLOBAL,
            "postgresql": POSTGRESQL,
            "generatePostgresqlPasswordSecret": BOOL,
            "generateCeleryConfigSecret": BOOL,
            "dagsterWebserver": WEBSERVER,
            "dagster-user-deployments": USER_DEPLOYMENTS,
            "runLauncher": RUN_LAUNCHER,
            "dagsterDaemon": DAEMON,
            "serviceAccount": SERVICE_ACCOUNT,
            "retention": RETENTION,
            "telemetry": obj({"enabled": BOOL}, required=("enabled",)),
            "imagePullSecrets": k8s_list("core.v1.LocalObjectReference"),
            **{
                key: ANY
                for key in (
                    "nameOverride",
                    "fullnameOverride",
                    "rbacEnabled",
                    "pipelineRun",
                    "rabbitmq",
                    "redis",
                    "flower",
                    "ingress",
                    "computeLogManager",
                    "scheduler",
                    "pythonLogs",
                    "busybox",
                    "migrate",
                    "concurrency",
                    "additionalInstanceConfig",
                    "extraManifests",
                )
            },
        },
        required=("postgresql", "dagster-user-deployments", "runLauncher", "dagsterDaemon"),
    ),
}


@cache
def kubernetes_registry(version: str = KUBERNETES_VERSION) -> Registry:
    """Kubernetes' API definitions (strict: unknown fields refused), from kubernetes-validate."""
    folder = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    definitions = json.loads(
        (folder / f"v{version}-local-strict" / "_definitions.json").read_text()
    )
    return Registry().with_resource(K8S_DEFINITIONS, Resource.from_contents(definitions))


def values_errors(values: Mapping[str, Any]) -> list[str]:
    """Every way ``values`` breaks ``VALUES_SCHEMA``, one line each (path: message)."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(VALUES_SCHEMA, registry=kubernetes_registry())
    return sorted(
        f"{'/'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
        for error in validator.iter_errors(values)
    )


# -- the instance the chart renders -------------------------------------------------------------


def fullname(release: str) -> str:
    """The chart's ``dagster.fullname`` (no name overrides)."""
    return release if "dagster" in release else f"{release}-dagster"


def _names(sources: list[Mapping[str, Any]] | None) -> list[str]:
    """``range ... if hasKey $x "name"``: the names of Secret/ConfigMap env sources."""
    return [source["name"] for source in sources or () if "name" in source]


def _postgres_config(values: Mapping[str, Any], release: str) -> dict[str, Any]:
    pg = values["postgresql"]
    username: Any = pg["postgresqlUsername"]
    if values.get("global", {}).get("postgresqlSecretUsernameKey"):
        username = {"env": "DAGSTER_PG_USERNAME"}
    db = {
        "username": username,
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": f"{release}-postgresql" if pg["enabled"] else pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg.get("postgresqlParams", CHART_DEFAULTS["postgresqlParams"]),
    }
    if pg.get("postgresqlScheme"):
        db["scheme"] = pg["postgresqlScheme"]
    return {"postgres_db": db}


def _k8s_run_launcher(values: Mapping[str, Any], release: str, namespace: str) -> dict[str, Any]:
    """helpers/instance/_run-launcher.tpl, ``dagsterYaml.runLauncher.k8s``."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    glob = values.get("global", {})
    name = fullname(release)
    account = (
        glob.get("serviceAccountName")
        or values.get("serviceAccount", {}).get("name")
        or CHART_DEFAULTS["serviceAccountName"]
        or name
    )
    config: dict[str, Any] = {"load_incluster_config": launcher["loadInclusterConfig"]}
    if launcher.get("kubeconfigFile"):
        config["kubeconfig_file"] = launcher["kubeconfigFile"]
    config["job_namespace"] = launcher.get("jobNamespace") or namespace
    config["image_pull_policy"] = launcher["imagePullPolicy"]
    if values.get("imagePullSecrets"):
        config["image_pull_secrets"] = values["imagePullSecrets"]
    config["service_account_name"] = account
    if "image" in launcher:
        config["job_image"] = f"{launcher['image']['repository']}:{launcher['image']['tag']}"
    config["dagster_home"] = glob.get("dagsterHome") or CHART_DEFAULTS["dagsterHome"]
    config["instance_config_map"] = f"{name}-instance"
    config["postgres_password_secret"] = (
        glob.get("postgresqlSecretName") or f"{name}-postgresql-secret"
    )
    if launcher.get("envConfigMaps"):
        config["env_config_maps"] = _names(launcher["envConfigMaps"])
    if launcher.get("envSecrets"):
        config["env_secrets"] = _names(launcher["envSecrets"])
    for key, field in (
        ("envVars", "env_vars"),
        ("volumeMounts", "volume_mounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
        ("schedulerName", "scheduler_name"),
        ("securityContext", "security_context"),
    ):
        if launcher.get(key):
            config[field] = launcher[key]
    if launcher.get("failPodOnRunFailure"):
        config["fail_pod_on_run_failure"] = True
    run_k8s = launcher.get("runK8sConfig") or {}
    parts = {
        field: run_k8s[key]
        for key, field in (
            ("containerConfig", "container_config"),
            ("podSpecConfig", "pod_spec_config"),
            ("podTemplateSpecMetadata", "pod_template_spec_metadata"),
            ("jobSpecConfig", "job_spec_config"),
            ("jobMetadata", "job_metadata"),
        )
        if run_k8s.get(key)
    }
    if run_k8s:
        config["run_k8s_config"] = parts
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}


def _queued_run_coordinator(queued: Mapping[str, Any]) -> dict[str, Any]:
    """helpers/instance/_run-coordinator.tpl, ``dagsterYaml.runCoordinator.queued``."""
    section: dict[str, Any] = {
        "module": "dagster.core.run_coordinator",
        "class": "QueuedRunCoordinator",
    }
    if not any(value not in (None, "", [], {}, False) for value in queued.values()):
        return section
    config: dict[str, Any] = {"max_concurrent_runs": queued.get("maxConcurrentRuns", -1)}
    if queued.get("tagConcurrencyLimits"):
        config["tag_concurrency_limits"] = queued["tagConcurrencyLimits"]
    for key, field in (
        ("dequeueIntervalSeconds", "dequeue_interval_seconds"),
        ("dequeueUseThreads", "dequeue_use_threads"),
        ("dequeueNumWorkers", "dequeue_num_workers"),
    ):
        if queued.get(key):
            config[field] = queued[key]
    block = queued.get("blockOpConcurrencyLimitedRuns")
    if block:
        config["block_op_concurrency_limited_runs"] = {
            "enabled": block.get("enabled"),
            "op_concurrency_slot_buffer": block.get("opConcurrencySlotBuffer"),
        }
    return {**section, "config": config}


def instance_config(
    values: Mapping[str, Any], release: str = "dagster", namespace: str = "selfheal"
) -> dict[str, Any]:
    """The instance the chart renders from ``values`` (templates/configmap-instance.yaml), for
    the sections these values set. Raises KeyError naming a key the template needs."""
    storage = _postgres_config(values, release)
    instance: dict[str, Any] = {
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": storage,
        },
        "run_storage": {
            "module": "dagster_postgres.run_storage",
            "class": "PostgresRunStorage",
            "config": storage,
        },
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            "config": storage,
        },
    }
    if values["runLauncher"]["type"] == "K8sRunLauncher":
        instance["run_launcher"] = _k8s_run_launcher(values, release, namespace)
    daemon = values["dagsterDaemon"]
    daemon_on = daemon.get("enabled", CHART_DEFAULTS["daemonEnabled"])
    coordinator = daemon["runCoordinator"]
    if daemon_on and coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator":
        instance["run_coordinator"] = _queued_run_coordinator(
            coordinator["config"]["queuedRunCoordinator"]
        )
    monitoring = daemon["runMonitoring"]
    if daemon_on and monitoring["enabled"]:
        section = {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
        }
        for key, field in (
            ("cancelTimeoutSeconds", "cancel_timeout_seconds"),
            ("maxResumeRunAttempts", "max_resume_run_attempts"),
        ):
            if monitoring.get(key) is not None:
                section[field] = monitoring[key]
        section["poll_interval_seconds"] = monitoring["pollIntervalSeconds"]
        section["free_slots_after_run_end_seconds"] = monitoring["freeSlotsAfterRunEndSeconds"]
        instance["run_monitoring"] = section
    retries = daemon["runRetries"]
    if daemon_on and retries["enabled"]:
        instance["run_retries"] = {"enabled": True}
        if retries.get("maxRetries"):
            instance["run_retries"]["max_retries"] = retries["maxRetries"]
    for key in ("sensors", "schedules"):
        threads = daemon.get(key) or {}
        if daemon_on and threads.get("useThreads"):
            instance[key] = {"use_threads": True}
            for name, field in (
                ("numWorkers", "num_workers"),
                ("numSubmitWorkers", "num_submit_workers"),
            ):
                if threads.get(name):
                    instance[key][field] = threads[name]
    instance["telemetry"] = {"enabled": values["telemetry"]["enabled"]}
    retention = values.get("retention") or {}
    if retention.get("enabled"):
        instance["retention"] = {
            field: {"purge_after_days": retention[key]["purgeAfterDays"]}
            for key, field in (
                ("sensor", "sensor"),
                ("schedule", "schedule"),
                ("autoMaterialize", "auto_materialize"),
            )
            if retention.get(key)
        }
    instance.update(values.get("additionalInstanceConfig") or {})
    return instance
