"""A strict BigQuery double for the tests: BigQuery's REST API on 127.0.0.1.

The product talks to it through the real ``google-cloud-bigquery`` client (pointed here by the
library's own ``BIGQUERY_EMULATOR_HOST``) and real Google credentials (a service-account key
whose ``token_uri`` is this server), so what is judged is the JSON BigQuery would receive.

It keeps the state the rules need: datasets with their location; tables with schema, column
modes, partitioning, clustering and options; per-partition row counts, bytes and commit times;
jobs, their labels and the tables their transactions hold. Rows live in an in-memory DuckDB,
and statements are executed there after sqlglot rewrites them from BigQuery's dialect.

It refuses, with BigQuery's own words, what BigQuery refuses (each rule cites its page):
``RULES`` below. Where a rule is this project's policy rather than BigQuery's (every job
carries labels, a byte cap and a timeout; datasets live in the configured location), the
rule says so. Every statement is also analysed by ZetaSQL when an analyser is given.

Not a product: it lives in the tests.
"""

from __future__ import annotations

import base64
import contextlib
import email.parser
import email.policy
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import duckdb
import sqlglot
from sqlglot import exp

DOCS = "https://cloud.google.com/bigquery/docs/"
RULES = {
    # A write through a job's destination may not change a column's mode or type unless the
    # job allows it (schemaUpdateOptions ALLOW_FIELD_RELAXATION / ALLOW_FIELD_ADDITION); a
    # query's result columns are NULLABLE, so a query into a REQUIRED column is refused
    # (googleapis/google-cloud-python#8093).
    "schema_mode": DOCS + "managing-table-schemas#change_a_columns_mode",
    # Rows written through a partition decorator must all belong to that partition.
    "decorator_rows": DOCS + "managing-partitioned-table-data#append_or_overwrite_partitions",
    # A table created with require_partition_filter refuses a query without a filter on its
    # partition column that can prune: a constant expression, in the WHERE clause (or a
    # MERGE's ON / WHEN condition), not a join to another table.
    "partition_filter": DOCS + "querying-partitioned-tables#require_a_partition_filter_in_queries",
    # A transaction that mutates a table cancels (is cancelled by) another transaction or DML
    # mutating it at the same time; DML outside a transaction is queued instead.
    "transaction_conflict": DOCS + "transactions#transaction_concurrency",
    # Label keys and values: lowercase letters, digits, underscores and dashes, at most 63
    # characters; keys start with a letter. (That every job carries labels is our policy.)
    "labels": DOCS + "labels-intro#requirements",
    # Policy: every query carries maximumBytesBilled; BigQuery refuses a query that would
    # bill more than its cap ("Query exceeded limit for bytes billed").
    "maximum_bytes_billed": DOCS + "best-practices-costs#restrict-bytes-billed",
    # Policy: every job carries jobTimeoutMs, so BigQuery itself stops a hung job.
    "job_timeout": DOCS + "reference/rest/v2/Job#JobConfiguration",
    # Policy: datasets are created in the configured location (CREATE SCHEMA's location
    # option); BigQuery puts a dataset created without one in the job's location or US, and
    # a job cannot read across locations.
    "dataset_location": DOCS + "locations#specify_locations",
    # IAM: a principal without access to a table cannot read it.
    "access_denied": DOCS + "access-control",
    # A name that does not exist (in the job's location).
    "not_found": DOCS + "locations#specify_locations",
    # BigQuery's SQL front end (ZetaSQL) rejects the statement.
    "zetasql": "https://github.com/google/zetasql",
    # A NULL written into a REQUIRED column.
    "required_null": DOCS + "schemas#modes",
    # Mutating DML statements on one partition at once: BigQuery retries the loser three
    # times, then fails it ("Could not serialize access … due to concurrent update").
    "dml_conflict": DOCS + "data-manipulation-language#dml_statement_conflicts",
    # A job that failed for BigQuery's own passing reason (planted by a test).
    "transient": DOCS + "error-messages",
}
INSERT_WAIT_SECONDS = 1.0
LONG_POLL_SECONDS = 2.0
MIN_BILLED = 10 * 1024 * 1024  # on-demand queries bill at least 10 MB per table read
TYPES = {  # BigQuery type names (standard and legacy) -> the name tables.get reports
    "INT64": "INTEGER",
    "INTEGER": "INTEGER",
    "FLOAT64": "FLOAT",
    "FLOAT": "FLOAT",
    "BOOL": "BOOLEAN",
    "BOOLEAN": "BOOLEAN",
    "STRING": "STRING",
    "DATE": "DATE",
    "TIMESTAMP": "TIMESTAMP",
    "NUMERIC": "NUMERIC",
}
DUCK = {
    "INTEGER": "BIGINT",
    "FLOAT": "DOUBLE",
    "BOOLEAN": "BOOLEAN",
    "STRING": "VARCHAR",
    "DATE": "DATE",
    "TIMESTAMP": "TIMESTAMP",
    "NUMERIC": "DOUBLE",
}
FROM_DUCK = {
    "BIGINT": "INTEGER",
    "INTEGER": "INTEGER",
    "HUGEINT": "INTEGER",
    "SMALLINT": "INTEGER",
    "TINYINT": "INTEGER",
    "UBIGINT": "INTEGER",
    "DOUBLE": "FLOAT",
    "FLOAT": "FLOAT",
    "BOOLEAN": "BOOLEAN",
    "VARCHAR": "STRING",
    "DATE": "DATE",
    "TIMESTAMP": "TIMESTAMP",
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMP",
    '"NULL"': "STRING",
}
SIZES = {"INTEGER": 8, "FLOAT": 8, "BOOLEAN": 1, "DATE": 8, "TIMESTAMP": 8, "NUMERIC": 16}
_LABEL = re.compile(r"^[a-z0-9_-]{0,63}$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
CONFLICT = "Transaction is aborted due to concurrent update against table {table}."


class Refused(Exception):
    """A job BigQuery would refuse: the rule it breaks, and BigQuery's message."""

    def __init__(self, rule: str, message: str, reason: str = "invalidQuery", status: int = 400):
        super().__init__(message)
        self.rule, self.message, self.reason, self.status = rule, message, reason, status


@dataclass
class Field:
    name: str
    type: str  # as tables.get reports it: INTEGER, FLOAT, BOOLEAN, STRING, DATE, TIMESTAMP
    mode: str = "NULLABLE"

    def api(self) -> dict:
        return {"name": self.name, "type": self.type, "mode": self.mode}


@dataclass
class Commit:
    at: datetime
    rows: int
    bytes: int


@dataclass
class TableState:
    dataset: str
    name: str
    fields: list[Field]
    partition: str | None = None  # the DAY partition column
    clustering: tuple[str, ...] = ()
    require_filter: bool = False
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    commits: dict[str | None, list[Commit]] = field(default_factory=dict)  # partition_id ->
    fingerprints: dict[str | None, tuple[int, int]] = field(default_factory=dict)

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    def resource(self, project: str, location: str) -> dict:
        out: dict[str, Any] = {
            "kind": "bigquery#table",
            "id": f"{project}:{self.dataset}.{self.name}",
            "tableReference": {
                "projectId": project,
                "datasetId": self.dataset,
                "tableId": self.name,
            },
            "schema": {"fields": [f.api() for f in self.fields]},
            "type": "TABLE",
            "location": location,
            "creationTime": str(int(self.created.timestamp() * 1000)),
            "numRows": str(sum(c[-1].rows for c in self.commits.values() if c)),
        }
        if self.partition:
            out["timePartitioning"] = {"type": "DAY", "field": self.partition}
        if self.clustering:
            out["clustering"] = {"fields": list(self.clustering)}
        if self.require_filter:
            out["requirePartitionFilter"] = True
        return out


@dataclass
class Job:
    id: str
    project: str
    location: str
    config: dict
    created: datetime
    kind: str = "query"  # query | load
    state: str = "PENDING"
    error: dict | None = None
    rule: str | None = None
    started: datetime | None = None
    ended: datetime | None = None
    statement_type: str = ""
    bytes_processed: int = 0
    bytes_billed: int = 0
    affected: int | None = None
    schema: list[Field] | None = None
    rows: list[tuple] = field(default_factory=list)
    payload: bytes = b""
    token: str = ""  # the bearer token of the client that inserted it
    cancelled: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def sql(self) -> str:
        return self.config.get("query", {}).get("query", "")

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.get("labels") or {})

    def resource(self) -> dict:
        status: dict[str, Any] = {"state": self.state}
        if self.error:
            status["errorResult"] = self.error
            status["errors"] = [self.error]
        stats: dict[str, Any] = {"creationTime": _ms(self.created)}
        if self.started:
            stats["startTime"] = _ms(self.started)
        if self.ended:
            stats["endTime"] = _ms(self.ended)
        if self.kind == "query":
            query = {
                "totalBytesProcessed": str(self.bytes_processed),
                "totalBytesBilled": str(self.bytes_billed),
                "statementType": self.statement_type,
                "cacheHit": False,
            }
            if self.affected is not None:
                query["numDmlAffectedRows"] = str(self.affected)
            stats["query"] = query
            stats["totalBytesProcessed"] = str(self.bytes_processed)
        else:
            stats["load"] = {"outputRows": str(self.affected or 0)}
        return {
            "kind": "bigquery#job",
            "id": f"{self.project}:{self.location}.{self.id}",
            "jobReference": {
                "projectId": self.project,
                "jobId": self.id,
                "location": self.location,
            },
            "configuration": self.config,
            "status": status,
            "statistics": stats,
            "state": self.state,
            "user_email": "selfheal@test.iam.gserviceaccount.com",
        }


def _ms(at: datetime) -> str:
    return str(int(at.timestamp() * 1000))


def _now() -> datetime:
    return datetime.now(UTC)


# --- the pruning judge: BigQuery's rule, read from the syntax tree ---------------------------


def _constant(node: exp.Expression, params_only: bool) -> bool:
    """A constant expression: parameters and literals, no column and no subquery."""
    if any(isinstance(n, exp.Column | exp.Select | exp.Subquery) for n in node.walk()):
        return False
    return any(isinstance(n, exp.Parameter) for n in node.walk()) if params_only else True


def _is_column(node: exp.Expression, column: str, alias: str) -> bool:
    return (
        isinstance(node, exp.Column)
        and node.name.lower() == column.lower()
        and node.table in ("", alias)
    )


def prunes(cond: exp.Expression | None, column: str, alias: str, params_only=False) -> bool:
    """Whether ``cond`` limits ``column`` of the table aliased ``alias`` to constants."""
    if cond is None:
        return False
    if isinstance(cond, exp.Paren):
        return prunes(cond.this, column, alias, params_only)
    if isinstance(cond, exp.And):
        return any(prunes(c, column, alias, params_only) for c in (cond.left, cond.right))
    if isinstance(cond, exp.Or):
        return all(prunes(c, column, alias, params_only) for c in (cond.left, cond.right))
    if isinstance(cond, exp.EQ | exp.GT | exp.GTE | exp.LT | exp.LTE):
        left, right = cond.left, cond.right
        return (_is_column(left, column, alias) and _constant(right, params_only)) or (
            _is_column(right, column, alias) and _constant(left, params_only)
        )
    if isinstance(cond, exp.Between):
        return _is_column(cond.this, column, alias) and all(
            _constant(cond.args[k], params_only) for k in ("low", "high")
        )
    if isinstance(cond, exp.In) and _is_column(cond.this, column, alias):
        if cond.args.get("query") is not None:
            return False
        if cond.args.get("unnest") is not None:
            return _constant(cond.args["unnest"], params_only)
        items = cond.expressions
        return bool(items) and all(_constant(i, params_only) for i in items)
    return False


def _filters(table: exp.Table) -> list[exp.Expression] | None:
    """The conditions that can prune a read of ``table``; None when it is only written."""
    parent = table.parent
    if isinstance(parent, exp.Schema):
        parent = parent.parent
    if isinstance(parent, exp.Insert):
        return None  # an INSERT's target is written, not read
    if isinstance(parent, exp.Delete | exp.Update) and parent.this is table:
        where = parent.args.get("where")
        return [where.this] if where else []
    if isinstance(parent, exp.Merge) and parent.this is table:
        conds = [parent.args.get("on")]
        conds += [w.args.get("condition") for w in parent.args["whens"].expressions]
        return [c for c in conds if c is not None]
    if isinstance(parent, exp.Create | exp.Drop | exp.Alter):
        return None
    select = table.find_ancestor(exp.Select)
    where = select.args.get("where") if select is not None else None
    return [where.this] if where else []


def unpruned(sql_or_tree, partitioned: Mapping[tuple[str, str], str], params_only=False):
    """``dataset.table`` of every read of a partitioned table that nothing prunes.

    ``partitioned`` maps (dataset, table) to its partition column; ``params_only``: a filter
    counts only when its bound is a query parameter (the product's own rule)."""
    trees = (
        sqlglot.parse(sql_or_tree, read="bigquery")
        if isinstance(sql_or_tree, str)
        else [sql_or_tree]
    )
    out = []
    for tree in trees:
        if tree is None:
            continue
        for table in tree.find_all(exp.Table):
            column = partitioned.get((table.db, table.name))
            if column is None:
                continue
            conds = _filters(table)
            if conds is None:
                continue
            alias = table.alias_or_name
            if not any(prunes(c, column, alias, params_only) for c in conds):
                out.append(f"{table.db}.{table.name}")
    return out


# --- parameters and values --------------------------------------------------------------------


def _scalar(kind: str, raw: Any) -> Any:
    if raw is None:
        return None
    kind = TYPES.get(kind, kind)
    if kind == "INTEGER":
        return int(raw)
    if kind == "FLOAT":
        return float(raw)
    if kind == "BOOLEAN":
        return raw if isinstance(raw, bool) else str(raw).lower() == "true"
    if kind == "DATE":
        return date.fromisoformat(str(raw))
    if kind == "TIMESTAMP":
        text = str(raw).replace(" ", "T").replace("Z", "+00:00")
        try:
            at = datetime.fromisoformat(text)
        except ValueError:
            at = datetime.fromtimestamp(float(raw), UTC)
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        return at.astimezone(UTC).replace(tzinfo=None)
    return str(raw)


def _params(config: dict) -> tuple[dict[str, Any], dict[str, str]]:
    """A query job's named parameters as Python values, and their BigQuery types."""
    values, types = {}, {}
    for p in config.get("queryParameters") or []:
        name, ptype, pvalue = p["name"], p["parameterType"], p.get("parameterValue") or {}
        if ptype["type"] == "ARRAY":
            element = ptype["arrayType"]["type"]
            values[name] = [_scalar(element, v.get("value")) for v in pvalue.get("arrayValues", [])]
            types[name] = f"ARRAY<{TYPES.get(element, element)}>"
        else:
            values[name] = _scalar(ptype["type"], pvalue.get("value"))
            types[name] = TYPES.get(ptype["type"], ptype["type"])
    return values, types


def _cell(kind: str, value: Any, int64_timestamps: bool) -> Any:
    if value is None:
        return None
    if kind == "TIMESTAMP":
        at = value if value.tzinfo else value.replace(tzinfo=UTC)
        micros = int(at.timestamp()) * 1_000_000 + at.microsecond
        return str(micros) if int64_timestamps else f"{micros / 1e6:.6f}"
    if kind == "BOOLEAN":
        return "true" if value else "false"
    if kind == "DATE":
        return value.isoformat()
    return str(value)


def _bq_type(duck_type: Any) -> str:
    name = str(duck_type).upper()
    if name.startswith("DECIMAL"):
        return "FLOAT"
    return FROM_DUCK.get(name, "STRING")


# --- the double ----------------------------------------------------------------------------


Analyser = Callable[[str, list[tuple[str, list[tuple[str, str]]]], dict[str, str]], None]


class BigQueryDouble:
    """BigQuery's REST API for one project, strict; start it with ``serve()``."""

    def __init__(
        self,
        project: str,
        location: str = "EU",
        *,
        lag_seconds: float = 0.0,
        analyser: Analyser | None = None,
        mutation_seconds: float = 0.0,
    ) -> None:
        self.project, self.location = project, location
        self.lag_seconds = lag_seconds
        self.analyser = analyser
        self.mutation_seconds = mutation_seconds
        self.datasets: dict[str, str] = {}  # name -> location
        self.tables: dict[tuple[str, str], TableState] = {}
        self.jobs: dict[str, Job] = {}
        self.order: list[str] = []  # job ids in the order received
        self.cancels: list[str] = []  # job ids a client asked to cancel
        self.cancelled_by: dict[str, str] = {}
        self.forbidden: set[tuple[str, str]] = set()
        self.tokens: set[str] = set()
        self.id_tokens: list[dict] = []  # claims of every ID token minted
        self.slow: list[tuple[re.Pattern, float]] = []  # (statement pattern, seconds)
        self.gates: list[tuple[re.Pattern, threading.Event]] = []
        self._duck = duckdb.connect()
        self._db = threading.RLock()
        self._held = threading.Condition()
        self._holding: dict[tuple[str, str], list[tuple[str, bool]]] = {}  # table -> [(job, tx)]
        self.holds: list[tuple[tuple[str, str], str, float, float]] = []  # (table, job, from, to)
        # Mutating DML that meets the same partition's writer fails after BigQuery's own
        # retries ("Could not serialize access"); tests plant it: table -> times left.
        self.conflicts: dict[tuple[str, str], int] = {}
        self._planted: list[list] = []  # [pattern, reason, message, times left]
        self._uploads: dict[str, dict] = {}
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    # --- test controls ------------------------------------------------------------------------

    @contextmanager
    def serve(self) -> Iterator[BigQueryDouble]:
        handler = type("Handler", (_Handler,), {"double": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            for _, gate in self.gates:
                gate.set()
            self._server.shutdown()
            self._server.server_close()

    def gate(self, pattern: str) -> threading.Event:
        """Jobs whose statement matches ``pattern`` wait (running) until the event is set."""
        event = threading.Event()
        self.gates.append((re.compile(pattern, re.S), event))
        return event

    def admin(self, sql: str) -> None:
        """Run DDL or DML as the project's administrator: no policy, no job recorded."""
        with self._db:
            for tree in sqlglot.parse(sql, read="bigquery"):
                self._statement(tree, {}, location=self.location, job=None)
                for key in _mutated(tree):
                    self._commit(self.tables[key])

    def drop_dataset(self, dataset: str) -> None:
        """Delete a dataset and its tables (what an administrator's ``bq rm -r`` does)."""
        with self._db:
            for key in [k for k in self.tables if k[0] == dataset]:
                del self.tables[key]
            self.datasets.pop(dataset, None)
            self._duck.execute(f'DROP SCHEMA IF EXISTS "{dataset}" CASCADE')

    def forbid(self, dataset: str, table: str) -> None:
        self.forbidden.add((dataset, table))

    @property
    def received(self) -> list[Job]:
        return [self.jobs[i] for i in self.order]

    @property
    def refused(self) -> list[Job]:
        return [j for j in self.received if j.rule is not None]

    def rows(self, dataset: str, table: str, where: str = "", params=None) -> list[dict]:
        with self._db:
            cur = self._duck.execute(
                f'SELECT * FROM "{dataset}"."{table}"' + (f" WHERE {where}" if where else ""),
                params or [],
            )
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def partitions(self, dataset: str, table: str) -> dict[str | None, Commit]:
        """INFORMATION_SCHEMA.PARTITIONS of one table as a reader sees it now (with the lag)."""
        state = self.tables[(dataset, table)]
        cutoff = _now().timestamp() - self.lag_seconds
        out = {}
        for pid, commits in state.commits.items():
            seen = [c for c in commits if c.at.timestamp() <= cutoff]
            if seen and (seen[-1].rows or pid is None):
                out[pid] = seen[-1]
        return out

    # --- jobs ---------------------------------------------------------------------------------

    def insert(self, resource: dict, payload: bytes = b"", token: str = "") -> Job:
        ref = resource.get("jobReference") or {}
        config = resource.get("configuration") or {}
        job = Job(
            id=ref.get("jobId") or f"job_{uuid.uuid4().hex}",
            project=ref.get("projectId") or self.project,
            location=ref.get("location") or "US",
            config=config,
            created=_now(),
            kind="load" if "load" in config else "query",
            payload=payload,
            token=token,
        )
        if job.id in self.jobs:
            raise Refused("duplicate", f"Already Exists: Job {job.project}:{job.id}", "duplicate")
        self.jobs[job.id] = job
        self.order.append(job.id)
        try:
            self._policy(job)
        except Refused as refused:
            self._fail(job, refused)
            raise
        if config.get("dryRun"):
            try:
                self._dry_run(job)
            except Refused as refused:
                self._fail(job, refused)
                raise
            return job
        threading.Thread(target=self._run, args=(job,), daemon=True).start()
        # Answer with the job done when it finishes quickly (as jobs.query would): a load
        # job's client polls from 1 s up, which would make every test wait.
        job.done.wait(INSERT_WAIT_SECONDS)
        return job

    def _policy(self, job: Job) -> None:
        labels = job.config.get("labels")
        if not labels:
            raise Refused("labels", "Job has no labels: this project labels every job", "invalid")
        if len(labels) > 64:
            raise Refused("labels", "Too many labels: at most 64 per job", "invalid")
        for key, value in labels.items():
            if not _LABEL_KEY.match(key):
                raise Refused("labels", f"Invalid label key: '{key}'", "invalid")
            if not _LABEL.match(str(value)):
                raise Refused("labels", f"Invalid label value: '{value}' (key '{key}')", "invalid")
        if not job.config.get("jobTimeoutMs"):
            raise Refused("job_timeout", "Job has no jobTimeoutMs: this project bounds every job")
        if job.kind == "query" and not job.config["query"].get("maximumBytesBilled"):
            raise Refused(
                "maximum_bytes_billed",
                "Query has no maximumBytesBilled: this project caps the bytes of every query",
                "invalid",
            )

    def _fail(self, job: Job, refused: Refused) -> None:
        job.rule = refused.rule
        job.error = {"reason": refused.reason, "message": refused.message}
        job.state = "DONE"
        job.ended = _now()
        job.done.set()

    def cancel(self, job_id: str, token: str = "") -> Job:
        """Cancel a job; ``cancelled_by`` says whether the client that started it asked
        ("its own client") or another one did (a janitor)."""
        job = self.jobs[job_id]
        self.cancels.append(job_id)
        self.cancelled_by.setdefault(  # the first to ask
            job_id, "its own client" if token == job.token else "another client"
        )
        job.cancelled = True
        return job

    def fail_next(self, pattern: str, reason: str, message: str, times: int = 1) -> None:
        """The next ``times`` jobs whose statement matches fail with BigQuery's ``reason``
        (``backendError``: what BigQuery's troubleshooting page says to retry)."""
        self._planted.append([re.compile(pattern, re.S), reason, message, times])

    def _run(self, job: Job) -> None:
        job.state = "RUNNING"
        job.started = _now()
        for planted in self._planted:
            if planted[3] and planted[0].search(job.sql):
                planted[3] -= 1
                self._fail(job, Refused("transient", planted[2], planted[1], 500))
                return
        try:
            if job.kind == "load":
                self._load(job)
            else:
                self._query(job)
        except Refused as refused:
            self._fail(job, refused)
            return
        except Exception as exc:  # a double that breaks says so as a job error
            self._fail(job, Refused("internal", f"{type(exc).__name__}: {exc}", "invalidQuery"))
            return
        job.state = "DONE"
        job.ended = _now()
        job.done.set()

    def _wait(self, job: Job, text: str) -> None:
        """A job's simulated run time: slow patterns, gates, and its mutation time; a cancel
        ends it without effect."""
        seconds = max([s for p, s in self.slow if p.search(text)] or [0.0])
        end = time.monotonic() + seconds
        gates = [g for p, g in self.gates if p.search(text)]
        while time.monotonic() < end or any(not g.is_set() for g in gates):
            if job.cancelled:
                raise Refused("cancelled", "Job execution was cancelled: User requested", "stopped")
            time.sleep(0.02)
        if job.cancelled:
            raise Refused("cancelled", "Job execution was cancelled: User requested", "stopped")

    @contextmanager
    def _hold(self, job: Job, tables: set[tuple[str, str]], in_transaction: bool):
        """BigQuery's rule for writers of one table: a transaction that meets another writer
        is aborted; DML (and loads) outside a transaction wait their turn."""
        with self._held:
            while True:
                busy = [t for t in tables if self._holding.get(t)]
                if in_transaction and busy:
                    name = f"{self.project}:{busy[0][0]}.{busy[0][1]}"
                    raise Refused("transaction_conflict", CONFLICT.format(table=name))
                if not busy:
                    break
                self._held.wait(0.05)
                if job.cancelled:
                    raise Refused("cancelled", "Job execution was cancelled", "stopped")
            for t in tables:
                self._holding.setdefault(t, []).append((job.id, in_transaction))
            planted = [t for t in tables if self.conflicts.get(t)]
            for t in planted:
                self.conflicts[t] -= 1
        began = time.monotonic()
        try:
            if planted:
                name = f"{self.project}:{planted[0][0]}.{planted[0][1]}"
                raise Refused(
                    "dml_conflict",
                    f"Could not serialize access to table {name} due to concurrent update",
                )
            yield
        finally:
            ended = time.monotonic()
            with self._held:
                for t in tables:
                    self._holding[t] = [h for h in self._holding[t] if h[0] != job.id]
                    self.holds.append((t, job.id, began, ended))
                self._held.notify_all()

    # --- queries ------------------------------------------------------------------------------

    def _parse(self, sql: str) -> list[exp.Expression]:
        try:
            return [t for t in sqlglot.parse(sql, read="bigquery") if t is not None]
        except sqlglot.errors.ParseError as exc:
            raise Refused("zetasql", f"Syntax error: {str(exc).splitlines()[0]}") from None

    def _analyse(self, sql: str, types: dict[str, str]) -> None:
        if self.analyser is None:
            return
        catalog = [
            (f"{self.project}.{t.dataset}.{t.name}", [(f.name, f.type) for f in t.fields])
            for t in self.tables.values()
        ]
        partitions = [
            ("table_name", "STRING"),
            ("partition_id", "STRING"),
            ("total_rows", "INTEGER"),
            ("total_logical_bytes", "INTEGER"),
            ("last_modified_time", "TIMESTAMP"),
        ]
        for dataset in self.datasets:
            catalog.append((f"{self.project}.{dataset}.INFORMATION_SCHEMA.PARTITIONS", partitions))
        try:
            self.analyser(sql, catalog, types)
        except Exception as exc:
            raise Refused("zetasql", str(exc).splitlines()[0]) from None

    def _judge(self, job: Job, trees: list[exp.Expression], values: dict) -> None:
        """What every statement must pass before it runs: names, access, pruning, bytes."""
        partitioned = {k: t.partition for k, t in self.tables.items() if t.require_filter}
        billed, processed = 0, 0
        for tree in trees:
            for table in tree.find_all(exp.Table):
                key = (table.db, table.name)
                if not table.db or table.name.upper() == "INFORMATION_SCHEMA.PARTITIONS":
                    if table.db and table.db not in self.datasets:
                        raise self._not_found(table.db, None, job.location)
                    continue
                creating = isinstance(tree, exp.Create) or (
                    isinstance(tree, exp.Drop) and tree.args.get("exists")
                )
                if key not in self.tables:
                    if creating:
                        continue
                    raise self._not_found(table.db, table.name, job.location)
                if self.datasets.get(table.db) != job.location:
                    raise self._not_found(table.db, None, job.location)
                if key in self.forbidden:
                    name = f"{self.project}:{table.db}.{table.name}"
                    raise Refused(
                        "access_denied",
                        f"Access Denied: Table {name}: User does not have permission to query "
                        f"table {name}, or perhaps it does not exist.",
                        "accessDenied",
                        403,
                    )
            for name in unpruned(tree, partitioned):
                dataset, table = name.split(".")
                column = self.tables[(dataset, table)].partition
                raise Refused(
                    "partition_filter",
                    f"Cannot query over table '{dataset}.{table}' without a filter over "
                    f"column(s) '{column}' that can be used for partition elimination",
                )
            read = self._bytes(tree, values)
            processed += sum(read)
            billed += sum(max(b, MIN_BILLED) for b in read)
        job.bytes_processed, job.bytes_billed = processed, billed
        cap = int(job.config["query"].get("maximumBytesBilled") or 0)
        if cap and billed > cap:
            raise Refused(
                "maximum_bytes_billed",
                f"Query exceeded limit for bytes billed: {cap}. {billed} or higher required.",
                "bytesBilledLimitExceeded",
            )

    def _not_found(self, dataset: str, table: str | None, location: str) -> Refused:
        if table is None or dataset not in self.datasets:
            return Refused(
                "not_found",
                f"Not found: Dataset {self.project}:{dataset} was not found in location {location}",
                "notFound",
                404,
            )
        return Refused(
            "not_found",
            f"Not found: Table {self.project}:{dataset}.{table} was not found in location "
            f"{location}",
            "notFound",
            404,
        )

    def _bytes(self, tree: exp.Expression, values: dict) -> list[int]:
        """Bytes each table read by ``tree`` would scan: the partitions its filters select."""
        out = []
        for table in tree.find_all(exp.Table):
            state = self.tables.get((table.db, table.name))
            if state is None:
                if table.name.upper() == "INFORMATION_SCHEMA.PARTITIONS":
                    out.append(0)
                continue
            conds = _filters(table)
            if conds is None:
                continue
            sizes = {pid: c[-1].bytes for pid, c in state.commits.items() if c}
            alias = table.alias_or_name
            chosen = [c for c in conds if state.partition and prunes(c, state.partition, alias)]
            if not chosen:
                out.append(sum(sizes.values()))
                continue
            ids = [p for p in sizes if p is not None]
            days = [datetime.strptime(p, "%Y%m%d").date() for p in ids if p.isdigit()]
            keep = set(days)
            for cond in chosen:
                keep &= set(self._selected(cond, state.partition, alias, days, values))
            out.append(sum(sizes[f"{d:%Y%m%d}"] for d in keep))
        return out

    def _selected(self, cond, column, alias, days, values) -> list[date]:
        """The partition dates a pruning condition selects, evaluated on the dates alone."""
        probe = cond.copy()
        for node in list(probe.walk()):
            if isinstance(node, exp.Column) and node.name.lower() != column.lower():
                node.replace(exp.true())  # other columns: the condition cannot prune on them
        where = probe.sql("duckdb")
        sql = (
            f'SELECT "{column}" FROM (SELECT UNNEST($_days) AS "{column}") AS "{alias}" '
            f"WHERE {where}"
        )
        used = {k: v for k, v in values.items() if f"${k}" in where}
        with self._db:
            try:
                found = self._duck.execute(sql, {**used, "_days": days}).fetchall()
            except duckdb.Error:
                return days
        return [r[0] for r in found]

    def _dry_run(self, job: Job) -> None:
        values, types = _params(job.config["query"])
        trees = self._parse(job.sql)
        self._analyse(job.sql, types)
        self._judge(job, trees, values)
        job.statement_type = _statement_type(trees)
        job.state = "DONE"
        job.done.set()

    def _query(self, job: Job) -> None:
        config = job.config["query"]
        values, types = _params(config)
        trees = self._parse(job.sql)
        job.statement_type = _statement_type(trees)
        self._analyse(job.sql, types)
        self._judge(job, trees, values)
        in_tx = any(isinstance(t, exp.Transaction) for t in trees)
        mutated = {k for t in trees for k in _mutated(t)}
        destination = config.get("destinationTable")
        if destination:
            mutated.add((destination["datasetId"], destination["tableId"].split("$")[0]))
        with self._hold(job, mutated, in_tx):
            self._wait(job, job.sql)
            if mutated and self.mutation_seconds:
                self._sleep(job, self.mutation_seconds)
            with self._db:
                if destination:
                    self._into_destination(job, trees, values, config, destination)
                else:
                    self._script(job, trees, values, in_tx)

    def _sleep(self, job: Job, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if job.cancelled:
                raise Refused("cancelled", "Job execution was cancelled: User requested", "stopped")
            time.sleep(0.01)

    def _script(self, job: Job, trees: list[exp.Expression], values: dict, in_tx: bool) -> None:
        touched: set[tuple[str, str]] = set()
        self._duck.execute("BEGIN TRANSACTION")
        try:
            for tree in trees:
                if isinstance(tree, exp.Transaction | exp.Commit):
                    continue
                result = self._statement(tree, values, job.location, job)
                touched |= _mutated(tree)
                if result is not None:
                    job.schema, job.rows, affected = result
                    if affected is not None:
                        job.affected = (job.affected or 0) + affected
            self._duck.execute("COMMIT")
        except Exception:
            self._duck.execute("ROLLBACK")
            raise
        for key in touched:
            if key in self.tables:
                self._commit(self.tables[key])

    def _statement(self, tree: exp.Expression, values: dict, location: str, job: Job | None):
        """Run one statement; (schema, rows, dml affected) for a query or DML, None for DDL."""
        if isinstance(tree, exp.Create):
            return self._create(tree, location, job)
        if isinstance(tree, exp.Drop):
            for table in tree.args.get("tables") or [tree.this]:
                key = (table.db, table.name)
                if key in self.tables:
                    del self.tables[key]
                    self._duck.execute(f'DROP TABLE IF EXISTS "{table.db}"."{table.name}"')
                elif not tree.args.get("exists"):
                    raise self._not_found(table.db, table.name, location)
            return None
        if isinstance(tree, exp.Alter):
            return self._alter(tree, location)
        return self._execute(tree, values)

    def _execute(self, tree: exp.Expression, values: dict):
        duck = tree.copy()
        partitions = []
        for table in list(duck.find_all(exp.Table)):
            if table.name.upper() == "INFORMATION_SCHEMA.PARTITIONS":
                name = f"_partitions_{table.db}"
                self._partitions_view(table.db, name)
                partitions.append(name)
                alias = table.args.get("alias")
                table.replace(
                    exp.to_table(name).as_(alias.name if alias else "p")
                    if alias
                    else exp.to_table(name)
                )
            else:
                table.set("catalog", None)
        sql = duck.sql("duckdb")
        used = {k: v for k, v in values.items() if re.search(rf"\${k}\b", sql)}
        try:
            cur = self._duck.execute(sql, used)
        except duckdb.ConstraintException as exc:
            raise Refused("required_null", f"Required field cannot be null: {exc}") from None
        except duckdb.Error as exc:
            raise Refused("internal", f"{type(exc).__name__}: {exc}") from None
        if isinstance(tree, exp.Insert | exp.Delete | exp.Update | exp.Merge):
            found = cur.fetchall()
            return None, [], int(found[0][0]) if found else 0
        names = [d[0] for d in cur.description or []]
        schema = [
            Field(n, _bq_type(d[1])) for n, d in zip(names, cur.description or [], strict=True)
        ]
        return schema, cur.fetchall(), None

    def _partitions_view(self, dataset: str, name: str) -> None:
        self._duck.execute(
            f'CREATE OR REPLACE TEMP TABLE "{name}" (table_name VARCHAR, partition_id VARCHAR, '
            "total_rows BIGINT, total_logical_bytes BIGINT, last_modified_time TIMESTAMP)"
        )
        rows = []
        for (ds, table), _ in self.tables.items():
            if ds != dataset:
                continue
            for pid, commit in self.partitions(ds, table).items():
                at = commit.at.astimezone(UTC).replace(tzinfo=None)
                rows.append((table, pid, commit.rows, commit.bytes, at))
        if rows:
            self._duck.executemany(f'INSERT INTO "{name}" VALUES (?, ?, ?, ?, ?)', rows)

    def _create(self, tree: exp.Create, location: str, job: Job | None):
        kind = tree.args.get("kind", "").upper()
        if kind == "SCHEMA":
            name = tree.this.db or tree.this.name
            name = name.split(".")[-1]
            props = tree.args.get("properties")
            where = next(
                (
                    p.this.name
                    for p in (props.expressions if props else [])
                    if isinstance(p, exp.LocationProperty)
                ),
                None,
            )
            created_in = where or location
            if job is not None and created_in != self.location:
                raise Refused(
                    "dataset_location",
                    f"Dataset {self.project}:{name} would be created in {created_in}: this "
                    f"project's datasets are in {self.location} (CREATE SCHEMA … OPTIONS "
                    "(location = …))",
                    "invalid",
                )
            if name in self.datasets and not tree.args.get("exists"):
                raise Refused("duplicate", f"Already Exists: Dataset {self.project}:{name}")
            self.datasets.setdefault(name, created_in)
            self._duck.execute(f'CREATE SCHEMA IF NOT EXISTS "{name}"')
            return None
        schema = tree.this
        table = schema.this
        key = (table.db, table.name)
        if table.db not in self.datasets:
            raise self._not_found(table.db, None, location)
        if key in self.tables:
            if tree.args.get("exists"):
                return None
            raise Refused("duplicate", f"Already Exists: Table {self.project}:{key[0]}.{key[1]}")
        fields = []
        for col in schema.expressions:
            mode = (
                "REQUIRED"
                if any(
                    isinstance(c.kind, exp.NotNullColumnConstraint)
                    for c in col.args.get("constraints") or []
                )
                else "NULLABLE"
            )
            kind = col.args["kind"].sql("bigquery").upper()
            fields.append(Field(col.name, TYPES.get(kind, kind), mode))
        props = tree.args.get("properties")
        partition, clustering, require = None, (), False
        for p in props.expressions if props else []:
            if isinstance(p, exp.PartitionedByProperty):
                # PARTITION BY d, or DATE(ts): the DAY partitions of a column.
                column = p.this if isinstance(p.this, exp.Identifier) else p.this.find(exp.Column)
                partition = column.name if column is not None else p.this.sql()
            elif isinstance(p, exp.ClusterProperty):
                clustering = tuple(e.name for e in p.expressions)
            elif isinstance(p, exp.Property) and p.name.lower() == "require_partition_filter":
                require = p.args["value"].sql().upper() == "TRUE"
        self._make(TableState(table.db, table.name, fields, partition, clustering, require))
        return None

    def _make(self, state: TableState) -> None:
        cols = ", ".join(
            f'"{f.name}" {DUCK[f.type]}' + (" NOT NULL" if f.mode == "REQUIRED" else "")
            for f in state.fields
        )
        self._duck.execute(f'CREATE TABLE "{state.dataset}"."{state.name}" ({cols})')
        self.tables[(state.dataset, state.name)] = state
        self._commit(state)

    def _alter(self, tree: exp.Alter, location: str):
        table = tree.this
        state = self.tables.get((table.db, table.name))
        if state is None:
            raise self._not_found(table.db, table.name, location)
        for action in tree.args.get("actions") or []:
            if isinstance(action, exp.ColumnDef):
                if state.field(action.name):
                    if action.args.get("exists"):
                        continue
                    raise Refused("duplicate", f"Column already exists: {action.name}")
                kind = action.args["kind"].sql("bigquery").upper()
                new = Field(action.name, TYPES.get(kind, kind))
                state.fields.append(new)
                self._duck.execute(
                    f'ALTER TABLE "{state.dataset}"."{state.name}" ADD COLUMN "{new.name}" '
                    f"{DUCK[new.type]}"
                )
        return None

    def _into_destination(self, job, trees, values, config, destination) -> None:
        """A query job that writes its result to a table (or one partition of it)."""
        if len(trees) != 1 or not isinstance(trees[0], exp.Select | exp.Union):
            raise Refused("invalid", "A destination table needs a single SELECT")
        schema, rows, _ = self._execute(trees[0], values)
        fields = [Field(f.name, f.type, "NULLABLE") for f in schema]  # query columns: NULLABLE
        self._write(job, destination, fields, rows, config)

    def _write(self, job, destination, fields, rows, config) -> None:
        """A job's destination write: create if needed, the schema-change rule, the decorator
        rule, then WRITE_TRUNCATE / WRITE_APPEND / WRITE_EMPTY."""
        dataset, table_id = destination["datasetId"], destination["tableId"]
        name, _, decorator = table_id.partition("$")
        if dataset not in self.datasets:
            raise self._not_found(dataset, None, job.location)
        if self.datasets[dataset] != job.location:
            raise self._not_found(dataset, None, job.location)
        state = self.tables.get((dataset, name))
        if state is None:
            if config.get("createDisposition") == "CREATE_NEVER":
                raise self._not_found(dataset, name, job.location)
            parts = config.get("timePartitioning") or {}
            clustering = tuple((config.get("clustering") or {}).get("fields") or ())
            state = TableState(dataset, name, [Field(f.name, f.type, f.mode) for f in fields])
            state.partition, state.clustering = parts.get("field"), clustering
            self._make(state)
        else:
            _schema_rule(self.project, state, fields, config.get("schemaUpdateOptions") or [])
            for f in fields:  # an allowed relaxation changes the table's column
                have = state.field(f.name)
                if have is not None and have.mode == "REQUIRED" and f.mode == "NULLABLE":
                    have.mode = "NULLABLE"
                    self._duck.execute(
                        f'ALTER TABLE "{dataset}"."{name}" ALTER COLUMN "{f.name}" DROP NOT NULL'
                    )
        names = [f.name for f in fields]
        if decorator:
            if state.partition is None or not re.fullmatch(r"\d{8}", decorator):
                raise Refused("decorator_rows", f"Invalid partition decorator ${decorator}")
            column = names.index(state.partition)
            wrong = [r for r in rows if r[column] is None or f"{r[column]:%Y%m%d}" != decorator]
            if wrong:
                raise Refused(
                    "decorator_rows",
                    "Some rows belong to different partitions rather than destination "
                    f"partition {decorator}",
                )
        disposition = config.get("writeDisposition") or (
            "WRITE_APPEND" if job.kind == "load" else "WRITE_EMPTY"
        )
        ref = f'"{dataset}"."{name}"'
        where = f' WHERE "{state.partition}" = ?' if decorator else ""
        day = [datetime.strptime(decorator, "%Y%m%d").date()] if decorator else []
        self._duck.execute("BEGIN TRANSACTION")
        try:
            if disposition == "WRITE_EMPTY":
                (count,) = self._duck.execute(f"SELECT COUNT(*) FROM {ref}{where}", day).fetchone()
                if count:
                    raise Refused(
                        "invalid", f"Already Exists: Table {self.project}:{dataset}.{name}"
                    )
            if disposition == "WRITE_TRUNCATE":
                self._duck.execute(f"DELETE FROM {ref}{where}", day)
            cols = ", ".join(f'"{n}"' for n in names)
            marks = "(" + ", ".join("?" * len(names)) + ")"
            for start in range(0, len(rows), 200):  # executemany is a statement per row
                chunk = rows[start : start + 200]
                self._duck.execute(
                    f"INSERT INTO {ref} ({cols}) VALUES " + ", ".join([marks] * len(chunk)),
                    [v for row in chunk for v in row],
                )
            self._duck.execute("COMMIT")
        except duckdb.ConstraintException as exc:
            self._duck.execute("ROLLBACK")
            raise Refused("required_null", f"Required field cannot be null: {exc}") from None
        except Exception:
            self._duck.execute("ROLLBACK")
            raise
        job.affected = len(rows)
        self._commit(state)

    # --- loads --------------------------------------------------------------------------------

    def _load(self, job: Job) -> None:
        config = job.config["load"]
        destination = config["destinationTable"]
        name = destination["tableId"].split("$")[0]
        given = (config.get("schema") or {}).get("fields")
        if not given:
            state = self.tables.get((destination["datasetId"], name))
            if state is None:
                raise Refused("invalid", "No schema specified on job or table.", "invalid")
            given = [f.api() for f in state.fields]
        fields = [
            Field(
                f["name"],
                TYPES.get(f["type"].upper(), f["type"].upper()),
                f.get("mode") or "NULLABLE",
            )
            for f in given
        ]
        if config.get("sourceFormat") != "NEWLINE_DELIMITED_JSON":
            raise Refused("invalid", "This double loads NEWLINE_DELIMITED_JSON only", "invalid")
        rows = []
        for line in job.payload.decode().splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            unknown = set(record) - {f.name for f in fields}
            if unknown and not config.get("ignoreUnknownValues"):
                raise Refused(
                    "invalid",
                    f"JSON parsing error: No such field: {sorted(unknown)[0]}.",
                    "invalid",
                )
            row = []
            for f in fields:
                value = _scalar(f.type, record.get(f.name))
                if value is None and f.mode == "REQUIRED":
                    raise Refused("required_null", f"Missing required field: {f.name}.", "invalid")
                row.append(value)
            rows.append(tuple(row))
        mutated = {(destination["datasetId"], name)}
        with self._hold(job, mutated, False):
            self._wait(job, f"LOAD {destination['datasetId']}.{destination['tableId']}")
            if self.mutation_seconds:
                self._sleep(job, self.mutation_seconds)
            with self._db:
                self._write(job, destination, fields, rows, config)

    # --- metadata -----------------------------------------------------------------------------

    def _commit(self, state: TableState) -> None:
        """Record a commit time for every partition whose rows changed (BigQuery's
        last_modified_time), with its rows and logical bytes."""
        ref = f'"{state.dataset}"."{state.name}"'
        size = (
            " + ".join(
                f'CASE WHEN "{f.name}" IS NULL THEN 0 ELSE '
                + (
                    f'2 + strlen(CAST("{f.name}" AS VARCHAR))'
                    if f.type == "STRING"
                    else str(SIZES.get(f.type, 8))
                )
                + " END"
                for f in state.fields
            )
            or "0"
        )
        key = f"strftime(\"{state.partition}\", '%Y%m%d')" if state.partition else "NULL"
        found = self._duck.execute(
            f"SELECT {key} AS pid, COUNT(*), SUM({size}), SUM(hash(t)) FROM {ref} AS t GROUP BY pid"
        ).fetchall()
        now = _now()
        seen = {}
        for pid, rows, size_, digest in found:
            seen[pid] = (int(rows), int(size_ or 0), int(digest or 0))
        if state.partition is None and None not in seen:
            seen[None] = (0, 0, 0)
        for pid in set(seen) | set(state.fingerprints):
            rows, size_, digest = seen.get(pid, (0, 0, 0))
            if state.fingerprints.get(pid) == (rows, digest):
                continue
            state.fingerprints[pid] = (rows, digest)
            state.commits.setdefault(pid, []).append(Commit(now, rows, size_))

    # --- auth ---------------------------------------------------------------------------------

    def token(self, form: dict[str, str]) -> dict:
        """The OAuth token endpoint of a service-account key: an access token, or (with a
        target_audience claim) a Google-signed-looking ID token."""
        assertion = form.get("assertion", "")
        claims = _jwt_claims(assertion)
        if "target_audience" in claims:
            now = int(time.time())
            id_claims = {
                "aud": claims["target_audience"],
                "iss": "https://accounts.google.com",
                "email": claims.get("iss", ""),
                "iat": now,
                "exp": now + 3600,
            }
            self.id_tokens.append(id_claims)
            return {"id_token": _jwt(id_claims)}
        token = f"ya29.double-{uuid.uuid4().hex}"
        self.tokens.add(token)
        return {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}


def _schema_rule(project: str, state: TableState, fields: list[Field], options: list[str]) -> None:
    """A write's schema against the table's: same types; a mode may change only from
    REQUIRED to NULLABLE and only with ALLOW_FIELD_RELAXATION; a new column needs
    ALLOW_FIELD_ADDITION."""
    where = f"{project}:{state.dataset}.{state.name}"
    for f in fields:
        have = state.field(f.name)
        if have is None:
            if "ALLOW_FIELD_ADDITION" not in options:
                raise Refused(
                    "schema_mode",
                    f"Provided Schema does not match Table {where}. Cannot add fields "
                    f"(field: {f.name})",
                    "invalid",
                )
            continue
        if have.type != f.type:
            raise Refused(
                "schema_mode",
                f"Provided Schema does not match Table {where}. Field {f.name} has changed "
                f"type from {have.type} to {f.type}",
                "invalid",
            )
        if have.mode != f.mode:
            relax = have.mode == "REQUIRED" and f.mode == "NULLABLE"
            if not (relax and "ALLOW_FIELD_RELAXATION" in options):
                raise Refused(
                    "schema_mode",
                    f"Provided Schema does not match Table {where}. Field {f.name} has changed "
                    f"mode from {have.mode} to {f.mode}",
                    "invalid",
                )
    for have in state.fields:
        if have.mode == "REQUIRED" and not any(f.name == have.name for f in fields):
            raise Refused(
                "schema_mode",
                f"Provided Schema does not match Table {where}. Field {have.name} is missing "
                "in new schema",
                "invalid",
            )


def _mutated(tree: exp.Expression) -> set[tuple[str, str]]:
    if isinstance(tree, exp.Insert):
        target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
        return {(target.db, target.name)}
    if isinstance(tree, exp.Delete | exp.Update | exp.Merge):
        return {(tree.this.db, tree.this.name)}
    return set()


def _statement_type(trees: list[exp.Expression]) -> str:
    if len(trees) > 1:
        return "SCRIPT"
    tree = trees[0] if trees else None
    if isinstance(tree, exp.Create):
        return f"CREATE_{tree.args.get('kind', '').upper()}"
    names = {exp.Select: "SELECT", exp.Union: "SELECT", exp.Insert: "INSERT", exp.Delete: "DELETE"}
    names |= {exp.Update: "UPDATE", exp.Merge: "MERGE", exp.Drop: "DROP_TABLE"}
    names |= {exp.Alter: "ALTER_TABLE"}
    return next((v for k, v in names.items() if isinstance(tree, k)), "SELECT")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(claims: dict) -> str:
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "double"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(b'not-signed')}"


def _jwt_claims(token: str) -> dict:
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}


# --- HTTP -------------------------------------------------------------------------------------


_JOB = re.compile(r"^/bigquery/v2/projects/([^/]+)/jobs/([^/]+)$")
_CANCEL = re.compile(r"^/bigquery/v2/projects/([^/]+)/jobs/([^/]+)/cancel$")
_RESULTS = re.compile(r"^/bigquery/v2/projects/([^/]+)/queries/([^/]+)$")
_DATASET = re.compile(r"^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)$")
_TABLE = re.compile(r"^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)/tables/([^/]+)$")
_JOBS = re.compile(r"^(/upload)?/bigquery/v2/projects/([^/]+)/jobs$")


class _Handler(BaseHTTPRequestHandler):
    double: BigQueryDouble
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: dict | None = None, headers: dict | None = None) -> None:
        data = json.dumps(body or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(data)  # a client that gave up (an interrupted step) is gone

    def _error(self, status: int, message: str, reason: str) -> None:
        names = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}
        names |= {404: "NOT_FOUND", 409: "ALREADY_EXISTS"}
        self._send(
            status,
            {
                "error": {
                    "code": status,
                    "message": message,
                    "errors": [{"message": message, "domain": "global", "reason": reason}],
                    "status": names.get(status, "UNKNOWN"),
                }
            },
        )

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _token(self) -> str:
        return self.headers.get("Authorization", "")[7:]

    def _authorised(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[7:] in self.double.tokens:
            return True
        self._error(401, "Request is missing required authentication credential.", "required")
        return False

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        body = self._body()
        double = self.double
        if url.path == "/token":
            form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
            return self._send(200, double.token(form))
        if not self._authorised():
            return None
        if match := _CANCEL.match(url.path):
            job = double.jobs.get(match.group(2))
            if job is None:
                return self._error(
                    404, f"Not found: Job {match.group(1)}:{match.group(2)}", "notFound"
                )
            return self._send(
                200,
                {
                    "kind": "bigquery#jobCancelResponse",
                    "job": double.cancel(job.id, self._token()).resource(),
                },
            )
        if match := _JOBS.match(url.path):
            upload = query.get("uploadType")
            if upload == "multipart":
                resource, payload = _multipart(self.headers.get("Content-Type", ""), body)
                return self._insert(resource, payload)
            if upload == "resumable":
                upload_id = uuid.uuid4().hex
                double._uploads[upload_id] = json.loads(body or b"{}")
                location = f"{double.url}{url.path}?uploadType=resumable&upload_id={upload_id}"
                return self._send(200, {}, {"Location": location})
            return self._insert(json.loads(body or b"{}"), b"")
        return self._error(404, f"Not found: {url.path}", "notFound")

    def do_PUT(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if not self._authorised():
            return None
        resource = self.double._uploads.pop(query.get("upload_id", ""), None)
        body = self._body()
        if resource is None:
            return self._error(404, "Not found: upload", "notFound")
        return self._insert(resource, body)

    def _insert(self, resource: dict, payload: bytes) -> None:
        try:
            job = self.double.insert(resource, payload, self._token())
        except Refused as refused:
            return self._error(refused.status, refused.message, refused.reason)
        return self._send(200, job.resource())

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        one = {k: v[-1] for k, v in query.items()}
        if not self._authorised():
            return None
        double = self.double
        if match := _RESULTS.match(url.path):
            return self._results(match.group(2), one)
        if match := _JOB.match(url.path):
            job = double.jobs.get(match.group(2))
            if job is None:
                return self._error(
                    404, f"Not found: Job {match.group(1)}:{match.group(2)}", "notFound"
                )
            return self._send(200, job.resource())
        if _JOBS.match(url.path):
            return self._list_jobs(query)
        if match := _TABLE.match(url.path):
            dataset, table = match.group(2), match.group(3)
            name = f"{match.group(1)}:{dataset}.{table}"
            if (dataset, table) in double.forbidden:
                return self._error(
                    403,
                    f"Access Denied: Table {name}: Permission bigquery.tables.get denied on table "
                    f"{name} (or it may not exist).",
                    "accessDenied",
                )
            state = double.tables.get((dataset, table))
            if state is None:
                return self._error(404, f"Not found: Table {name}", "notFound")
            return self._send(200, state.resource(double.project, double.datasets[dataset]))
        if match := _DATASET.match(url.path):
            dataset = match.group(2)
            if dataset not in double.datasets:
                return self._error(
                    404, f"Not found: Dataset {match.group(1)}:{dataset}", "notFound"
                )
            return self._send(
                200,
                {
                    "kind": "bigquery#dataset",
                    "id": f"{match.group(1)}:{dataset}",
                    "datasetReference": {"projectId": match.group(1), "datasetId": dataset},
                    "location": double.datasets[dataset],
                },
            )
        return self._error(404, f"Not found: {url.path}", "notFound")

    def _list_jobs(self, query: dict[str, list[str]]) -> None:
        states = {s.upper() for s in query.get("stateFilter", [])}
        jobs = [j for j in self.double.received if not states or j.state in states]
        items = [{**j.resource(), "state": j.state} for j in reversed(jobs)]
        return self._send(200, {"kind": "bigquery#jobList", "jobs": items})

    def _results(self, job_id: str, query: dict[str, str]) -> None:
        job = self.double.jobs.get(job_id)
        if job is None:
            return self._error(404, f"Not found: Job {job_id}", "notFound")
        # A long poll, as BigQuery's; it may end sooner than asked (here after 2 s at most).
        job.done.wait(min(float(query.get("timeoutMs", 10_000)) / 1000, LONG_POLL_SECONDS))
        reference = {"projectId": job.project, "jobId": job.id, "location": job.location}
        if not job.done.is_set():
            return self._send(200, {"jobReference": reference, "jobComplete": False})
        if job.error:
            return self._error(400, job.error["message"], job.error["reason"])
        out: dict[str, Any] = {
            "kind": "bigquery#getQueryResultsResponse",
            "jobReference": reference,
            "jobComplete": True,
            "cacheHit": False,
            "totalBytesProcessed": str(job.bytes_processed),
        }
        if job.affected is not None and job.schema is None:
            out["numDmlAffectedRows"] = str(job.affected)
        if job.schema is not None:
            int64 = query.get("formatOptions.useInt64Timestamp", "").lower() == "true"
            start = int(query.get("pageToken") or query.get("startIndex") or 0)
            size = int(query.get("maxResults", 10_000) or 0)
            page = job.rows[start : start + size] if size else []
            out["schema"] = {"fields": [f.api() for f in job.schema]}
            out["totalRows"] = str(len(job.rows))
            if page:  # BigQuery sends no "rows" at all for an empty page
                out["rows"] = [
                    {
                        "f": [
                            {"v": _cell(f.type, v, int64)}
                            for f, v in zip(job.schema, row, strict=True)
                        ]
                    }
                    for row in page
                ]
            if size and start + size < len(job.rows):
                out["pageToken"] = str(start + size)
        return self._send(200, out)


def _multipart(content_type: str, body: bytes) -> tuple[dict, bytes]:
    """The two parts of a multipart/related upload: the job resource and the data."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    parts = list(message.iter_parts())
    resource = json.loads(parts[0].get_payload(decode=True))
    return resource, parts[1].get_payload(decode=True)


def service_account_key(double_url: str, project: str) -> dict:
    """A real service-account key (a fresh RSA key) whose token endpoint is the double."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": uuid.uuid4().hex,
        "private_key": pem,
        "client_email": f"selfheal@{project}.iam.gserviceaccount.com",
        "client_id": "1" * 21,
        "token_uri": f"{double_url}/token",
        "auth_uri": f"{double_url}/auth",
    }
