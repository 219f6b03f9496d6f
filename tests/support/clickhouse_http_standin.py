"""TEST ONLY: a stand-in ClickHouse HTTP server backed by an embedded chdb engine.

It speaks enough of the ClickHouse HTTP interface for clickhouse-connect's HTTP client, so the KPI
store's HTTP path runs in CI without a ClickHouse server: ``GET /ping``; queries in the body, in
the ``query`` parameter or as multipart form fields; ``param_<name>`` bind parameters; settings as
URL parameters; ``database`` and ``default_format``; ``INSERT ... FORMAT <fmt>`` with a binary,
possibly chunked and compressed (lz4, zstd, gzip, deflate) body; ClickHouse error responses
(``X-ClickHouse-Exception-Code`` and a ``Code: N. DB::Exception: ...`` body). Responses are never
compressed and sessions are not emulated.

chdb hosts one engine per process and locks its data folder, so this runs as its own process::

    python tests/support/clickhouse_http_standin.py --data-dir DIR --port-file FILE [--port 0]

Once listening it writes the bound port to ``--port-file`` (atomically); it stops on SIGTERM.
``running_standin(data_dir)`` starts it, waits until it answers ``/ping`` and stops it by PID.
With ``--faults FILE`` it reads that JSON file before each request and misbehaves as it says:
``{"lose_insert_replies": N}`` runs the next N inserts and then drops the connection instead of
answering, as a reply lost on the network would (the fault suite's lost-reply scenario).
Every request gets its own chdb connection handle, so ``USE`` and ``SET`` never leak between
requests, and one lock serialises requests on the engine.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb

# URL parameters the HTTP handler consumes itself; everything else is a setting.
TRANSPORT_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "user",
        "password",
        "quota_key",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "compress",
        "decompress",
        "buffer_size",
        "wait_end_of_query",
        "client_protocol_version",
        "role",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "enable_http_compression",
        "cancel_http_readonly_queries_on_client_close",
    }
)
SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
INSERT_HEAD = re.compile(
    rb"\A\s*(INSERT\s+INTO\s.*?\s+FORMAT\s+\w+)[ \t]*(?:\r?\n)?", re.IGNORECASE | re.DOTALL
)
INSERT_FORMAT = re.compile(rb"\s+FORMAT\s+(\w+)\Z", re.IGNORECASE)
TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*\Z", re.IGNORECASE)
LEADING_NOISE = re.compile(r"\A(?:\s+|--[^\n]*\n?|/\*.*?\*/|\()*", re.DOTALL)
RESULT_KEYWORDS = ("SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "EXISTS", "EXPLAIN", "CHECK")
ERROR_CODE = re.compile(r"Code: (\d+)\.")
# The status a ClickHouse server answers for a few common errors; everything else is a 500.
STATUS_BY_CODE = {47: 400, 62: 400, 53: 400, 6: 400, 27: 400, 60: 404, 81: 404, 516: 403}


class ClickHouseError(Exception):
    """An engine error, already in ClickHouse's ``Code: N. DB::Exception: ...`` text form."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code

    @classmethod
    def from_engine(cls, ex: Exception) -> ClickHouseError:
        text = str(ex)
        start = text.find("Code: ")
        message = text[start:].strip() if start >= 0 else f"Code: 1000. DB::Exception: {text.strip()}"
        match = ERROR_CODE.search(message)
        return cls(message, int(match.group(1)) if match else 1000)


class Engine:
    """The chdb engine of this process: one data folder, one handle per request, one lock."""

    def __init__(self, data_dir: Path) -> None:
        self._path = str(data_dir.resolve())
        self._lock = threading.Lock()
        self._keepalive = chdb.connect(self._path)
        self.version = self._keepalive.query("SELECT version()", "TabSeparated").bytes().decode().strip()
        self.timezone = self._keepalive.query("SELECT timezone()", "TabSeparated").bytes().decode().strip()

    def close(self) -> None:
        self._keepalive.close()

    def execute(
        self,
        sql: bytes,
        data: bytes | None,
        database: str | None,
        settings: dict[str, str],
        params: dict[str, str],
        default_format: str,
    ) -> tuple[bytes, str | None, dict[str, str]]:
        """Run one statement; returns the body, the output format (None without a result) and a summary."""
        with self._lock:
            handle = chdb.connect(self._path)
            try:
                if database:
                    self._run(handle, f"USE `{database.replace('`', '``')}`", "TabSeparated")
                for name, value in settings.items():
                    if not SETTING_NAME.match(name):
                        raise ClickHouseError(f"Code: 115. DB::Exception: Unknown setting {name!r}", 115)
                    quoted = value.replace("\\", "\\\\").replace("'", "\\'")
                    self._run(handle, f"SET {name} = '{quoted}'", "TabSeparated")
                insert = INSERT_HEAD.match(sql if data is None else sql + b"\n")
                if insert:
                    payload = sql[insert.end() :] if data is None else data
                    return self._insert(handle, insert.group(1), payload)
                return self._query(handle, sql.decode(), params, default_format)
            finally:
                handle.close()

    def _insert(self, handle: Any, statement: bytes, payload: bytes) -> tuple[bytes, None, dict[str, str]]:
        # The data goes to the engine from a file of its own (FROM INFILE), never inline after the
        # statement: chdb 4.4 misreads some binary data inline in a query (a valid Native block of
        # 22 rows: "Cannot read all data in NativeReader. Rows read: 20"), which the same bytes
        # read from a file do not. (Its Connection.send_insert skips the table's CHECK constraints.)
        head = INSERT_FORMAT.search(statement)
        assert head is not None  # INSERT_HEAD matched the statement
        with tempfile.NamedTemporaryFile(prefix="standin-insert-") as data:
            data.write(payload)
            data.flush()
            path = data.name.replace("\\", "\\\\").replace("'", "\\'").encode()
            from_file = statement[: head.start()] + b" FROM INFILE '" + path + b"' FORMAT " + head.group(1)
            result = self._run(handle, from_file, "TabSeparated")
        written = {"written_rows": str(result.rows_read()), "written_bytes": str(result.bytes_read())}
        return b"", None, {"read_rows": "0", "read_bytes": "0", **written}

    def _query(
        self, handle: Any, sql: str, params: dict[str, str], default_format: str
    ) -> tuple[bytes, str | None, dict[str, str]]:
        embedded = TRAILING_FORMAT.search(sql)
        fmt = embedded.group(1) if embedded else default_format
        result = self._run(handle, sql, fmt, params)
        body = result.bytes() or b""
        keyword = LEADING_NOISE.sub("", sql, count=1).split(None, 1)[:1]
        has_result = bool(embedded) or bool(body) or (bool(keyword) and keyword[0].upper() in RESULT_KEYWORDS)
        summary = {
            "read_rows": str(result.rows_read()),
            "read_bytes": str(result.bytes_read()),
            "written_rows": "0",
            "written_bytes": "0",
        }
        return body, (fmt if has_result else None), summary

    @staticmethod
    def _run(handle: Any, sql: str | bytes, fmt: str, params: dict[str, str] | None = None) -> Any:
        try:
            return handle.query(sql, fmt, params=params or {})
        except Exception as ex:
            raise ClickHouseError.from_engine(ex) from ex


def decompress(body: bytes, encoding: str | None) -> bytes:
    if not encoding or encoding == "identity":
        return body
    if encoding == "lz4":
        import lz4.frame

        # A large insert streams as several frames one after another; decompress() reads only one.
        parts = []
        while body:
            decompressor = lz4.frame.LZ4FrameDecompressor()
            parts.append(decompressor.decompress(body))
            body = decompressor.unused_data
        return b"".join(parts)
    if encoding == "zstd":
        if sys.version_info >= (3, 14):
            from compression import zstd
        else:
            from backports import zstd
        return zstd.decompress(body)
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    raise ClickHouseError(f"Code: 1000. DB::Exception: Unknown Content-Encoding {encoding!r}", 1000)


def form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The text fields of a multipart/form-data body (the query and its bind parameters)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if part.get_filename():
            raise ClickHouseError("Code: 48. DB::Exception: the stand-in takes no external data", 48)
        if name:
            fields[str(name)] = part.get_payload(decode=True).decode()
    return fields


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StandinServer

    def log_message(self, format: str, *args: Any) -> None:
        return  # no access log: a failing test shows the error it got

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in ("/ping", "/") and "query=" not in self.path:
            self._reply(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
            return
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            out, fmt, summary = self._execute(params)
            if self.server.lose_reply(summary):
                self.close_connection = True
                return
        except ClickHouseError as ex:
            self._reply_error(ex, query_id)
            return
        except Exception as ex:  # a stand-in bug still answers like a server, so the test shows it
            self._reply_error(
                ClickHouseError(f"Code: 1001. DB::Exception: stand-in failure: {ex!r}", 1001), query_id
            )
            return
        headers = {
            "Content-Type": "application/octet-stream",
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": self.server.engine.timezone,
            "X-ClickHouse-Server-Display-Name": "clickhouse-http-standin",
            "X-ClickHouse-Summary": json.dumps(summary),
        }
        if fmt:
            headers["X-ClickHouse-Format"] = fmt
        self._reply(200, out, headers)

    def _execute(self, params: dict[str, str]) -> tuple[bytes, str | None, dict[str, str]]:
        raw = self._read_body()
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            params.update(form_fields(content_type, raw))
            raw = b""
        body = decompress(raw, self.headers.get("Content-Encoding"))
        if "query" in params:
            sql, data = params["query"].encode(), (body or None)
        else:
            sql, data = body, None
        if not sql.strip():
            raise ClickHouseError("Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)", 62)
        binds = {name[6:]: value for name, value in params.items() if name.startswith("param_")}
        settings = {
            name: value
            for name, value in params.items()
            if name not in TRANSPORT_PARAMS and not name.startswith("param_")
        }
        default_format = params.get("default_format", "TabSeparated")
        return self.server.engine.execute(sql, data, params.get("database"), settings, binds, default_format)

    def _reply_error(self, ex: ClickHouseError, query_id: str) -> None:
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Exception-Code": str(ex.code),
            "X-ClickHouse-Query-Id": query_id,
        }
        message = f"{ex} (version {self.server.engine.version})\n".encode()
        self._reply(STATUS_BY_CODE.get(ex.code, 500), message, headers)

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class StandinServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], engine: Engine, faults: Path | None = None) -> None:
        super().__init__(address, Handler)
        self.engine = engine
        self._faults = faults
        self._faults_lock = threading.Lock()

    def lose_reply(self, summary: dict[str, str]) -> bool:
        """Whether the --faults file says to drop this insert's reply (counting it down if so)."""
        if self._faults is None or int(summary.get("written_rows") or 0) <= 0:
            return False
        with self._faults_lock:
            try:
                faults = json.loads(self._faults.read_text() or "{}")
            except (OSError, ValueError):
                return False
            left = int(faults.get("lose_insert_replies", 0))
            if left <= 0:
                return False
            faults["lose_insert_replies"] = left - 1
            partial = self._faults.with_suffix(".partial")
            partial.write_text(json.dumps(faults))
            os.replace(partial, self._faults)
            return True


@contextmanager
def running_standin(data_dir: Path, startup_timeout_s: float = 60.0) -> Iterator[str]:
    """Run the stand-in in a child process on a free port; yields its URL, stops it by PID on exit."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port_file = data_dir / "port"
    port_file.unlink(missing_ok=True)
    log_path = data_dir / "standin.log"
    with log_path.open("wb") as log:
        child = subprocess.Popen(
            [sys.executable, __file__, "--data-dir", str(data_dir / "engine"), "--port-file", str(port_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = _wait_until_ready(child, port_file, log_path, time.monotonic() + startup_timeout_s)
        yield url
    finally:
        _stop(child)


def _wait_until_ready(
    child: subprocess.Popen[bytes], port_file: Path, log_path: Path, deadline: float
) -> str:
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(
                f"the ClickHouse stand-in exited with {child.returncode}: {log_path.read_text()}"
            )
        if port_file.exists():
            url = f"http://127.0.0.1:{port_file.read_text().strip()}"
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=1) as response:
                    if response.read() == b"Ok.\n":
                        return url
            except OSError:
                pass
        time.sleep(0.05)
    raise TimeoutError(f"the ClickHouse stand-in did not answer /ping in time: {log_path.read_text()}")


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        os.kill(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--faults", type=Path, default=None)
    args = parser.parse_args(argv)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    engine = Engine(args.data_dir)
    server = StandinServer((args.host, args.port), engine, args.faults)
    try:
        partial = args.port_file.with_name(args.port_file.name + ".partial")
        partial.write_text(str(server.server_address[1]))
        os.replace(partial, args.port_file)
        server.serve_forever()
    finally:
        server.server_close()
        engine.close()


if __name__ == "__main__":
    main()
