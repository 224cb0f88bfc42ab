"""BigQuery's SQL front end in the tests: ZetaSQL's analyzer and its reference evaluator.

Written against PyPI ``zetasql==0.1.5`` (Google's ZetaSQL compiled to WebAssembly, run
in-process by wasmtime). Everything that reaches into that package — its WASM client and its
generated protobuf modules — is in this one module, so an upgrade breaks here and nowhere
else.

- The WebAssembly module takes about 30 s to compile; it is compiled once and kept,
  serialised by wasmtime, in a cache directory the tests own (later starts take about 1 s).
- Analysis runs in BigQuery's mode: every language feature ZetaSQL has, ``PRODUCT_EXTERNAL``
  (the mode BigQuery's own front end runs in), named query parameters with their types.
- Tables are top-level catalog entries named ``project.dataset.table`` (one identifier, as
  BigQuery reads `` `project.dataset.table` ``): the evaluator loads rows only into those.
- A ``ValueProto()`` with no value set is a typed NULL.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from zetasql.core.exceptions import ServerError
from zetasql.core.wasm_client import WasmClient, get_tzinfo_dir
from zetasql.wasi import get_wasm_path
from zetasql.wasi._pb2.zetasql.local_service import local_service_pb2 as ls
from zetasql.wasi._pb2.zetasql.proto import options_pb2, simple_catalog_pb2
from zetasql.wasi._pb2.zetasql.public import (
    options_pb2 as public_options_pb2,
)
from zetasql.wasi._pb2.zetasql.public import (
    parse_resume_location_pb2,
    simple_table_pb2,
    type_pb2,
    value_pb2,
)

VERSION = "0.1.5"
TYPE_KINDS = {
    "STRING": type_pb2.TYPE_STRING,
    "INT64": type_pb2.TYPE_INT64,
    "FLOAT64": type_pb2.TYPE_DOUBLE,
    "BOOL": type_pb2.TYPE_BOOL,
    "DATE": type_pb2.TYPE_DATE,
    "TIMESTAMP": type_pb2.TYPE_TIMESTAMP,
}
EPOCH = date(1970, 1, 1)


class Rejected(Exception):
    """ZetaSQL rejected a statement: its own message (what BigQuery's front end would say)."""


def scalar(kind: str) -> type_pb2.TypeProto:
    return type_pb2.TypeProto(type_kind=TYPE_KINDS[kind])


def array(kind: str) -> type_pb2.TypeProto:
    return type_pb2.TypeProto(
        type_kind=type_pb2.TYPE_ARRAY, array_type=type_pb2.ArrayTypeProto(element_type=scalar(kind))
    )


@dataclass(frozen=True)
class Table:
    """A catalog table: its one-identifier name, (column, BigQuery type) pairs, and rows."""

    name: str
    columns: tuple[tuple[str, str], ...]
    rows: tuple[Mapping[str, Any], ...] = ()
    key: str | None = None  # a primary key column: what DML reports a deleted row by


def value(kind: str, python: Any) -> value_pb2.ValueProto:
    """A Python value as a ZetaSQL value of ``kind`` (None: a typed NULL)."""
    if python is None:
        return value_pb2.ValueProto()
    if kind == "STRING":
        return value_pb2.ValueProto(string_value=str(python))
    if kind == "INT64":
        return value_pb2.ValueProto(int64_value=int(python))
    if kind == "FLOAT64":
        return value_pb2.ValueProto(double_value=float(python))
    if kind == "BOOL":
        return value_pb2.ValueProto(bool_value=bool(python))
    if kind == "DATE":
        return value_pb2.ValueProto(date_value=(python - EPOCH).days)
    if kind == "TIMESTAMP":
        at = python if python.tzinfo else python.replace(tzinfo=UTC)
        micros = int(at.timestamp()) * 1_000_000 + at.microsecond
        stamp = value_pb2.ValueProto()
        stamp.timestamp_value.seconds = micros // 1_000_000
        stamp.timestamp_value.nanos = (micros % 1_000_000) * 1000
        return stamp
    raise ValueError(f"no ZetaSQL value for {kind}")


def python_value(proto: value_pb2.ValueProto) -> Any:
    """A ZetaSQL value back as Python (NULL: None)."""
    which = proto.WhichOneof("value")
    if which is None:
        return None
    if which == "date_value":
        return date.fromordinal(EPOCH.toordinal() + proto.date_value)
    if which == "timestamp_value":
        ts = proto.timestamp_value
        return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC)
    if which == "array_value":
        return [python_value(v) for v in proto.array_value.element]
    return getattr(proto, which)


class ZetaSQL:
    """One compiled module, its language options, and the calls the tests make."""

    def __init__(self, cache_dir: Path) -> None:
        self.client = _client(cache_dir)
        request = ls.LanguageOptionsRequest(maximum_features=True)
        self.language = self.client.call_grpc_func(
            "ZetaSqlLocalService_GetLanguageOptions", request, options_pb2.LanguageOptionsProto
        )
        self.language.product_mode = public_options_pb2.PRODUCT_EXTERNAL
        del self.language.supported_statement_kinds[:]  # none listed: every kind (DDL, DML)

    def _options(
        self, params: Mapping[str, type_pb2.TypeProto]
    ) -> options_pb2.AnalyzerOptionsProto:
        return options_pb2.AnalyzerOptionsProto(
            language_options=self.language,
            query_parameters=[
                options_pb2.AnalyzerOptionsProto.QueryParameterProto(name=n, type=t)
                for n, t in params.items()
            ],
            default_timezone="UTC",
        )

    def _catalog(self, tables: Iterable[Table]) -> simple_catalog_pb2.SimpleCatalogProto:
        return simple_catalog_pb2.SimpleCatalogProto(
            name="bigquery",
            table=[
                simple_table_pb2.SimpleTableProto(
                    name=t.name,
                    column=[
                        simple_table_pb2.SimpleColumnProto(name=c, type=scalar(k))
                        for c, k in t.columns
                    ],
                    primary_key_column_index=(
                        [[c for c, _ in t.columns].index(t.key)] if t.key else []
                    ),
                )
                for t in tables
            ],
            builtin_function_options=options_pb2.ZetaSQLBuiltinFunctionOptionsProto(
                language_options=self.language
            ),
        )

    def analyze(
        self, sql: str, tables: Iterable[Table], params: Mapping[str, type_pb2.TypeProto]
    ) -> str:
        """The resolved statement's kind; raises ``Rejected`` with ZetaSQL's message."""
        request = ls.AnalyzeRequest(
            options=self._options(params), simple_catalog=self._catalog(tables), sql_statement=sql
        )
        try:
            found = self.client.call_grpc_func(
                "ZetaSqlLocalService_Analyze", request, ls.AnalyzeResponse
            )
        except ServerError as exc:
            raise Rejected(str(exc)) from None
        return found.resolved_statement.WhichOneof("node") or "?"

    def analyze_script(
        self, sql: str, tables: Iterable[Table], params: Mapping[str, type_pb2.TypeProto]
    ) -> list[tuple[str, str]]:
        """Each statement of a script analysed in turn (ZetaSQL resumes after each one):
        (its resolved kind, its text), in order. Raises ``Rejected`` naming the statement it
        stopped at."""
        tables = list(tables)
        kinds, position = [], 0
        encoded = sql.encode()
        while encoded[position:].strip():
            request = ls.AnalyzeRequest(
                options=self._options(params),
                simple_catalog=self._catalog(tables),
                parse_resume_location=parse_resume_location_pb2.ParseResumeLocationProto(
                    input=sql, byte_position=position, allow_resume=True
                ),
            )
            try:
                found = self.client.call_grpc_func(
                    "ZetaSqlLocalService_Analyze", request, ls.AnalyzeResponse
                )
            except ServerError as exc:
                where = encoded[position:].decode().strip().splitlines()[0][:80]
                raise Rejected(f"{exc} (in: {where})") from None
            end = found.resume_byte_position if found.resume_byte_position > position else None
            text = encoded[position:end].decode().strip().rstrip(";").strip()
            kinds.append((found.resolved_statement.WhichOneof("node") or "?", text))
            if end is None:
                break
            position = end
        return kinds

    def query(
        self,
        sql: str,
        tables: Sequence[Table],
        params: Mapping[str, tuple[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Run a query on the reference evaluator over ``tables``' rows (only the tables it
        names are sent)."""
        tables = [t for t in tables if f"`{t.name}`" in sql]
        found = self._evaluate("EvaluateQuery", sql, tables, params)
        names = [c.name for c in found.prepared.columns]
        return [
            dict(zip(names, (python_value(c) for c in row.cell), strict=True))
            for row in found.content.table_data.row
        ]

    def modify(
        self,
        sql: str,
        tables: Sequence[Table],
        params: Mapping[str, tuple[str, Any]] | None = None,
    ) -> list[tuple[str, dict[str, Any]]]:
        """Run one DML statement on the evaluator: each row it touches, as (operation, row);
        a deleted row by its ``key`` (DML on a keyed table must not insert: ZetaSQL 0.1.5
        aborts on a NULL key)."""
        found = self._evaluate("EvaluateModify", sql, tables, params)
        [table] = [t for t in tables if t.name == found.table_name]
        names = [c for c, _ in table.columns]
        operation = ls.EvaluateModifyResponse.Row.Operation.Name
        out = []
        for row in found.content:
            cells = dict(zip(names, (python_value(c) for c in row.cell), strict=False))
            if not cells and table.key and row.old_primary_key:
                cells = {table.key: python_value(row.old_primary_key[0])}
            out.append((operation(row.operation), cells))
        return out

    def _evaluate(
        self,
        method: str,
        sql: str,
        tables: Sequence[Table],
        params: Mapping[str, tuple[str, Any]] | None,
    ):
        params = params or {}
        types = {n: _param_type(k) for n, (k, _) in params.items()}
        request_type = getattr(ls, f"{method}Request")
        request = request_type(
            sql=sql,
            options=self._options(types),
            simple_catalog=self._catalog(tables),
            params=[ls.Parameter(name=n, value=_param_value(k, v)) for n, (k, v) in params.items()],
        )
        for t in tables:
            request.table_content[t.name].CopyFrom(_content(t))
        try:
            return self.client.call_grpc_func(
                f"ZetaSqlLocalService_{method}", request, getattr(ls, f"{method}Response")
            )
        except ServerError as exc:
            raise Rejected(str(exc)) from None


def _param_type(kind: str) -> type_pb2.TypeProto:
    return array(kind[6:-1]) if kind.startswith("ARRAY<") else scalar(kind)


def _param_value(kind: str, python: Any) -> value_pb2.ValueProto:
    if kind.startswith("ARRAY<"):
        element = kind[6:-1]
        found = value_pb2.ValueProto()
        found.array_value.element.extend(value(element, v) for v in python)
        return found
    return value(kind, python)


def _content(table: Table) -> ls.TableContent:
    content = ls.TableContent()
    for row in table.rows:
        content.table_data.row.add(cell=[value(k, row.get(c)) for c, k in table.columns])
    return content


class _Client(WasmClient):
    """The package's client, copying requests and responses in one call each (its own
    copies go a byte at a time in Python: minutes for a request carrying a month of rows)."""

    def _base(self, ptr: int, size: int) -> int:
        if ptr < 0 or ptr + size > self.memory.data_len():
            raise IndexError(f"{size} bytes at {ptr} are outside the module's memory")
        return ctypes.addressof(self.memory.data_ptr().contents) + ptr

    def write_bytes(self, ptr: int, data: bytes) -> None:
        ctypes.memmove(self._base(ptr, len(data)), data, len(data))

    def read_bytes(self, ptr: int, size: int) -> bytes:
        return ctypes.string_at(self._base(ptr, size), size)


def _client(cache_dir: Path) -> WasmClient:
    """The package's WASM client, its module deserialised from the cache when it is there
    (``WasmClient.__init__`` would compile it every time)."""
    from wasmtime import Config, Engine, Linker, Module, Store, WasiConfig

    config = Config()
    config.shared_memory = True
    engine = Engine(config)
    wasm = Path(get_wasm_path())
    digest = hashlib.sha256(wasm.read_bytes()).hexdigest()[:16]
    cached = cache_dir / f"zetasql-{VERSION}-{digest}.cwasm"
    module = None
    if cached.exists():
        try:
            module = Module.deserialize_file(engine, str(cached))
        except Exception:  # noqa: BLE001 - another wasmtime wrote it: compile again
            module = None
    if module is None:
        module = Module.from_file(engine, str(wasm))
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(module.serialize())
        partial.replace(cached)
    wasi = WasiConfig()
    wasi.inherit_stdout()
    wasi.inherit_stderr()
    if tz := get_tzinfo_dir():
        wasi.preopen_dir(tz, "/usr/share/zoneinfo")
    client = _Client.__new__(_Client)
    client.store = Store(engine)
    client.store.set_wasi(wasi)
    client.module = module
    linker = Linker(engine)
    linker.define_wasi()
    client.instance = linker.instantiate(client.store, module)
    client.exports = client.instance.exports(client.store)
    if "_initialize" in client.exports:
        client.exports["_initialize"](client.store)
    client.memory = client.exports["memory"]
    return client
