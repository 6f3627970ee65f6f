"""Read-only query endpoint of the process that owns embedded ClickHouse (DESIGN.md "Embedded
ClickHouse is single-process"): `cem query` reaches the pack through it while `cem sink` runs.

`POST /query` with `{"name": pack query, "params": {k: v}, "dsn": the caller's DSN}` answers
`{"columns": [...], "rows": [[...]]}`; a DSN that is not this process's gets 409 (the caller is
looking for another deployment), a bad request 400 with the reason, a failed query 500 with
ClickHouse's message. Only pack queries run, always with `readonly = 1`; it listens on 127.0.0.1
only. Its own ClickHouse client (chdb allows several in one process), so landing never waits on
a query and a query never sees a half-built insert.
"""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from .clickhouse.client import ClickHouse, ClickHouseTLS
from .queries import QueryError, get, load_pack, run

log = logging.getLogger(__name__)


class QueryServer:
    def __init__(self, client: Callable[[], ClickHouse], dsn: str, port: int):
        self._dsn = dsn
        self._lock = threading.Lock()
        self._client: ClickHouse | None = None
        self._make = client
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: object) -> None:  # quiet: the sink's log is for landing
                log.debug(fmt, *args)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                if self.path != "/query":
                    return self._answer(404, {"error": "POST /query"})
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                except ValueError as err:
                    return self._answer(400, {"error": f"body is not JSON: {err}"})
                code, answer = server.answer(body)
                self._answer(code, answer)

            def _answer(self, code: int, answer: dict) -> None:
                data = json.dumps(answer, default=str).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._http = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._http.daemon_threads = True
        self.port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, name="cem-query", daemon=True).start()

    def answer(self, body: dict) -> tuple[int, dict]:
        if body.get("dsn") and body["dsn"] != self._dsn:
            return 409, {"error": f"this sink owns {self._dsn}, not {body['dsn']}"}
        try:
            query = get(str(body.get("name", "")), load_pack())
            values = query.bind({str(k): str(v) for k, v in (body.get("params") or {}).items()})
        except QueryError as err:
            return 400, {"error": str(err)}
        try:
            with self._lock:
                if self._client is None:
                    self._client = self._make()
                columns, rows = run(self._client, query, values)
        except Exception as err:  # noqa: BLE001 - reported to the caller, the sink keeps landing
            return 500, {"error": f"query {query.name} failed: {err}"}
        return 200, {"columns": columns, "rows": rows}

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


def serve_queries(client: Callable[[], ClickHouse], dsn: str, port: int) -> QueryServer | None:
    """Start the endpoint on `port` (0 = off); a port already in use is logged, never fatal."""
    if not port:
        return None
    try:
        return QueryServer(client, dsn, port)
    except OSError as err:
        log.warning("query endpoint not started on 127.0.0.1:%d (%s): `cem query` cannot reach this "
                    "sink; set CEM_SINK_QUERY_PORT to a free port", port, err)
        return None


def execute(dsn: str, port: int, name: str, params: dict[str, str],
            tls: ClickHouseTLS = ClickHouseTLS()) -> tuple[list[str], list[list]]:
    """Run pack query `name` for the deployment at `dsn`: a server DSN directly; an embedded one
    through the running sink's endpoint on `port`, or by opening it when no sink owns it (a
    sink that owns it but has no endpoint gives ClickHouseUnavailable with what to do). `tls`:
    how an https DSN is verified."""
    import urllib.error
    import urllib.request
    from .clickhouse.client import connect
    if dsn.startswith("chdb://") and port:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/query", method="POST",
                                     data=json.dumps({"name": name, "params": params, "dsn": dsn}).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=600) as resp:
                body = json.loads(resp.read())
                return body["columns"], body["rows"]
        except urllib.error.HTTPError as err:
            message = json.loads(err.read() or b"{}").get("error", str(err))
            if err.code == 400:
                raise QueryError(message) from None
            if err.code != 409:  # 409: another deployment's sink; ours is not running
                raise RuntimeError(message) from None
        except (urllib.error.URLError, ConnectionError):
            pass  # no sink running: open the embedded database ourselves
    query = get(name, load_pack())
    values = query.bind(params)
    client = connect(dsn, tls=tls)
    try:
        columns, rows = run(client, query, values)
        return columns, [list(r) for r in rows]
    finally:
        client.close()
