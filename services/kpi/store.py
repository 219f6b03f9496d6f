"""The KPI store: facts and live gauges in ClickHouse, one clickhouse-connect client for both modes.

``open_kpi_store(settings)`` returns the same ``KpiStore`` on top of either client:

- ``settings.url`` set: clickhouse-connect's HTTP client to that server (``http://`` or ``https://``).
- ``settings.url`` None: clickhouse-connect's embedded chDB client (``interface="chdb"``), persisted
  under ``settings.data_dir``. chDB hosts ONE engine per process, bound to one data folder: any
  number of stores (and threads) in a process may share that folder, each with its own connection
  handle, but opening a different folder while a store is open fails, and a second process cannot
  open a folder another process holds (a file lock). So in embedded mode the process that writes
  the KPIs is the one that answers KPI queries (the kpi service's API), and Grafana cannot read the
  embedded store. Tests share one folder per pytest process and isolate themselves by database
  (``tests/support/embedded_clickhouse.py``).

Schema: ``apply_schema()`` creates ``settings.database`` and runs the ``deploy/clickhouse/*.sql``
files in name order. The files name tables unqualified and run with the store's database as the
current database, so they also run as they are with ``clickhouse-client --database <db>``. Tables
use ``CREATE TABLE IF NOT EXISTS`` (a change is a new numbered file), views ``CREATE OR REPLACE``.

Idempotency: every fact table is a ``ReplacingMergeTree(version)`` ordered by the fact's id, and
reads use ``FINAL``, so a replayed or retried batch changes no count, and the newest version of a
fact wins whatever order versions arrive in. On top of that, each insert carries an
``insert_deduplication_token`` (by default a digest of the batch) that the tables honour through
``non_replicated_deduplication_window``: a retried batch is dropped before it reaches a part.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from services.platform.settings import PROJECT_ROOT, ClickHouseSettings

SCHEMA_DIR = PROJECT_ROOT / "deploy" / "clickhouse"

Rows = Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]]
"""A batch: rows as mappings of column name to value, or a mapping of column name to values."""

_SERVER_MESSAGE = re.compile(r"Code: \d+\..*", re.DOTALL)
_MESSAGE_TRAILERS = re.compile(r"\s*\((?:version \d[^)]*|for url [^)]*)\)", re.IGNORECASE)
# A violated constraint echoes the offending values, which may be personal data.
_COLUMN_VALUES = re.compile(r"Column values: .*?(?=\. \([A-Z_]+\)|$)", re.DOTALL)
_SCRIPT_TOKEN = re.compile(
    r"""'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"|`(?:[^`\\]|\\.|``)*`"""
    r"""|--[^\n]*|/\*.*?\*/|/\*|;|['"`]|[^'"`;/-]+|.""",
    re.DOTALL,
)
# Server-side time arithmetic (now(), toDate() of a bare DateTime) in UTC in both modes; the embedded
# engine would otherwise use the host's timezone.
_SESSION = {"session_timezone": "UTC"}
_COLUMNS_QUERY = (
    "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {table:String}"
)


# ClickHouse's codes for a refusal of the data itself (a value it cannot parse or keep, a violated
# constraint): the same rows would be refused again, whereas anything else may pass on a retry.
_REFUSES_THE_DATA = frozenset({6, 27, 38, 41, 53, 69, 70, 72, 117, 321, 469})
_CODE = re.compile(r"Code: (\d+)\.")


class KpiStoreError(Exception):
    """ClickHouse refused a statement or the store could not be opened; ``code`` is ClickHouse's."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        found = _CODE.search(message)
        self.code = code if code is not None else int(found.group(1)) if found else None

    @property
    def refuses_the_data(self) -> bool:
        """Whether the rows themselves were refused, so that writing them again cannot help."""
        return self.code in _REFUSES_THE_DATA


def open_kpi_store(settings: ClickHouseSettings, schema_dir: Path = SCHEMA_DIR) -> KpiStore:
    """A store on the server at ``settings.url``, or on the embedded engine under ``settings.data_dir``."""
    try:
        if settings.url is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            client = clickhouse_connect.get_client(
                interface="chdb", path=str(settings.data_dir), tz_mode="aware", settings=_SESSION
            )
        else:
            client = clickhouse_connect.get_client(
                dsn=settings.url,
                username=settings.username,
                password=settings.password,
                tz_mode="aware",
                settings=_SESSION,
                # No HTTP session: the store keeps no session state, and a session would refuse
                # concurrent queries from the threads sharing this store.
                autogenerate_session_id=False,
                client_name="callcenter-kpi",
            )
    except ClickHouseError as ex:
        where = settings.url or (
            f"{settings.data_dir} (chdb opens one data folder per process, "
            "and locks it against other processes)"
        )
        _fail(f"opening the KPI store at {where}", ex)
    # Set only after connecting: the database may not exist before apply_schema() creates it.
    client.database = settings.database
    return KpiStore(client, settings.database, schema_dir)


class KpiStore:
    """Facts and gauges in one ClickHouse database. Safe to share between threads; close it when done."""

    def __init__(self, client: Client, database: str, schema_dir: Path = SCHEMA_DIR) -> None:
        self._client = client
        self._database = database
        self._schema_dir = schema_dir
        self._column_types: dict[str, dict[str, str]] = {}

    @property
    def database(self) -> str:
        return self._database

    def apply_schema(self) -> None:
        """Create the database and run every schema file in name order; a second run changes nothing."""
        create = f"CREATE DATABASE IF NOT EXISTS {_quote_identifier(self._database)}"
        self._command(create, what="creating the database", use_database=False)
        for path in sorted(self._schema_dir.glob("*.sql")):
            for number, statement in enumerate(split_statements(path.read_text()), start=1):
                self._command(statement, what=f"{path.name} statement {number}")
        self._column_types.clear()

    def insert(self, table: str, rows: Rows, dedup_token: str | None = None) -> int:
        """Insert one batch into ``table`` (of the store's database) in one request; returns the row count.

        Retrying a batch is safe: reads keep one row per id (the highest version), and the batch's
        deduplication token (``dedup_token``, or a digest of the batch) drops a repeated insert.
        """
        names, data, column_oriented = _columns_of(rows)
        row_count = len(data[0]) if column_oriented and data else len(data)
        if not names or not row_count:
            return 0
        types = self._types_of(table, names)
        _refuse_naive_times(table, names, types, data, column_oriented)
        token = dedup_token or _digest(table, names, data)
        try:
            self._client.insert(
                table,
                data,
                column_names=names,
                column_type_names=types,
                column_oriented=column_oriented,
                settings={"insert_deduplicate": 1, "insert_deduplication_token": token},
            )
        except ClickHouseError as ex:
            _fail(f"insert into {table}", ex)
        return row_count

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows of a SELECT as dicts; the server binds ``{name:Type}`` placeholders from ``parameters``."""
        try:
            result = self._client.query(sql, parameters=dict(parameters or {}))
        except ClickHouseError as ex:
            _fail("query", ex)
        return list(result.named_results())

    def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> None:
        """Run a statement without a result (DDL, OPTIMIZE, ...), server-side binding as in ``query``."""
        self._command(sql, parameters)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> KpiStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _command(
        self,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        what: str = "command",
        use_database: bool = True,
    ) -> None:
        try:
            self._client.command(sql, parameters=dict(parameters or {}), use_database=use_database)
        except ClickHouseError as ex:
            _fail(what, ex)

    def _types_of(self, table: str, names: Sequence[str]) -> list[str]:
        # Known column types spare clickhouse-connect a DESCRIBE round trip on every insert.
        if table not in self._column_types:
            rows = self.query(_COLUMNS_QUERY, {"db": self._database, "table": table})
            if not rows:
                raise KpiStoreError(f"insert into {table} failed: no such table in {self._database!r}")
            self._column_types[table] = {row["name"]: row["type"] for row in rows}
        known = self._column_types[table]
        unknown = [name for name in names if name not in known]
        if unknown:
            raise KpiStoreError(f"insert into {table} failed: unknown columns {', '.join(unknown)}")
        return [known[name] for name in names]


def split_statements(script: str) -> list[str]:
    """The statements of a SQL script: split on semicolons outside quotes and comments, comments dropped."""
    statements: list[str] = []
    current: list[str] = []
    for match in _SCRIPT_TOKEN.finditer(script):
        token = match.group(0)
        if token in ("'", '"', "`", "/*"):
            raise ValueError(f"unterminated quote or comment at offset {match.start()}")
        if token == ";":
            statements.append("".join(current))
            current = []
        elif not token.startswith(("--", "/*")):
            current.append(token)
    statements.append("".join(current))
    return [statement.strip() for statement in statements if statement.strip()]


def _columns_of(rows: Rows) -> tuple[list[str], list[Sequence[Any]], bool]:
    if isinstance(rows, Mapping):
        names = list(rows)
        columns = [list(rows[name]) for name in names]
        if len({len(column) for column in columns}) > 1:
            raise ValueError("the columns of a batch must all have the same length")
        return names, columns, True
    if not rows:
        return [], [], False
    names = list(rows[0])
    for index, row in enumerate(rows):
        if set(row) != set(names):
            raise ValueError(f"row {index} has columns {sorted(row)}, the first row {sorted(names)}")
    return names, [[row[name] for name in names] for row in rows], False


def _refuse_naive_times(
    table: str,
    names: Sequence[str],
    types: Sequence[str],
    data: Sequence[Sequence[Any]],
    column_oriented: bool,
) -> None:
    # clickhouse-connect reads a naive datetime as the host's local time, which silently shifts facts
    # on a host that is not on UTC.
    for index, (name, type_name) in enumerate(zip(names, types, strict=True)):
        if "DateTime" not in type_name:
            continue
        values = data[index] if column_oriented else (row[index] for row in data)
        if any(isinstance(value, datetime) and value.tzinfo is None for value in values):
            raise ValueError(f"insert into {table}: {name} holds a naive datetime; give timezone-aware times")


def _digest(table: str, names: Sequence[str], data: Sequence[Sequence[Any]]) -> str:
    # repr() is stable for the values facts hold (str, int, float, bool, None, datetime, Decimal),
    # so the same batch retried gives the same token.
    return hashlib.sha256(repr((table, list(names), [list(part) for part in data])).encode()).hexdigest()


def _quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _fail(what: str, ex: ClickHouseError) -> NoReturn:
    """Raise ClickHouse's own message, without URL and version trailers, as a ``KpiStoreError``."""
    text = str(ex)
    match = _SERVER_MESSAGE.search(text)
    message = _MESSAGE_TRAILERS.sub("", match.group(0) if match else text)
    message = _COLUMN_VALUES.sub("Column values: (withheld)", message).strip()
    error = KpiStoreError(f"{what} failed: {message}", getattr(ex, "code", None))
    if _COLUMN_VALUES.search(text):
        raise error from None  # the cause would carry the withheld values into logs
    raise error from ex
