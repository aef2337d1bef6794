#!/usr/bin/env python3
"""Fault-injecting HTTP proxy in front of moto's server, for the tests.

Forwards every request (any method, path, headers and body) to the moto
server given by --upstream and streams the answer back, except requests the
tests have asked to fail: those are matched by AWS operation (the
X-Amz-Target header of the awsJson protocols) and by a substring of the
request body, and answered with an AWS JSON error or a hang. Standard
library only (Python 3.11+). Binds to loopback addresses only, and forwards
to a loopback upstream only.

Usage:
    python3 scripts/aws_fault_proxy.py --upstream http://127.0.0.1:PORT
        [--host 127.0.0.1] [--port 0] [--port-file PATH]
        [--hang-seconds 120] [--upstream-timeout 120]
        [--max-recorded-bytes 67108864] [--latency-ms 0]

--latency-ms adds that much time before every AWS call it forwards (those
with X-Amz-Target): a region's round trip, for benchmarks on loopback
(scripts/bench_sweep.py); 0, the default, adds none.

After binding it prints exactly one line to stdout:
    aws fault proxy listening on http://HOST:PORT
and, with --port-file, atomically writes the bound port (digits only).

Control API (same port, never forwarded; JSON in and out):
    POST /_faults/rules
        {"operation": "secretsmanager.PutSecretValue" | "PutSecretValue",
         "match": "<substring of the request body; required, non-empty>",
         "fault": "throttle" | "server_error" | "access_denied" | "hang"
                  | "hold_answer" | "error",
         "times": N,            # optional, default 1; -1 = every time
         "status": 400,         # "error" only, required: 400..599
         "type": "TaskTimedOut",# "error" only, required
         "message": "..."}      # optional for every fault but "hang"
        -> 200 {"id": 1}
    GET    /_faults/rules?match=M   -> {"rules": [{"id", "operation", "match",
                                        "fault", "times", "remaining", "hits",
                                        "holding", ...}]}
                                       (remaining: uses left, -1 = always;
                                        hits: requests answered by the rule;
                                        holding: connections a hang holds now)
    DELETE /_faults/rules?match=M   -> {"deleted": n}  (rules whose match == M)
    DELETE /_faults/rules?id=N      -> {"deleted": 0|1}
    GET    /_faults/calls?match=M
        -> {"match": M, "total": n,
            "operations": {"GetSecretValue": n, ...},   # seen, faulted or not
            "faulted": {"GetSecretValue": n, ...},      # answered by a rule
            "connections": n,   # distinct client connections they came on
            "complete": true}   # false if older records were dropped (memory cap)
    DELETE /_faults/calls?match=M   -> {"deleted": n}  (forgets those records)
    GET    /_faults/health          -> {"ok": true}

Matching: a rule applies to a request whose X-Amz-Target equals its
"operation", or ends with "." + operation, and whose body contains "match"
(bytes, UTF-8). The oldest live rule that applies wins; each use counts down
"times". Requests without X-Amz-Target (moto's /moto-api/, REST calls) are
forwarded untouched and not recorded.

Faults, in the awsJson 1.0/1.1 error shape: header x-amzn-ErrorType: T and
body {"__type": T, "message": "..."}:
    throttle       400 ThrottlingException "Rate exceeded"
    server_error   secretsmanager: 500 InternalServiceError,
                   AWSEvents (EventBridge): 500 InternalException
                   (the 500 "fault" shapes of their botocore service models);
                   others, e.g. AWSStepFunctions, whose model has none:
                   500 InternalFailure (AWS "Common Errors")
    access_denied  400 AccessDeniedException
    error          "status" "type" "message" as given
    hang           reads the request, then sends nothing and holds the
                   connection until the client closes it, --hang-seconds pass,
                   or the proxy stops; then closes it. Other connections are
                   served meanwhile (one thread per connection).
    hold_answer    forwards the request to the upstream, which carries it out,
                   then drops the answer and holds the connection as "hang"
                   does: a write that landed although its caller never heard.

Request bodies carry secret values and task tokens: they are kept in memory
only (for /_faults/calls) and are never printed or logged. The log has one
line per request: connection number, method, path without query, target,
status and fault.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import ipaddress
import itertools
import json
import os
import select
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# The sibling module with the serving code both loopback servers share (on
# the path also when this file is run through runpy, as bench/standins.py does).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback_serve  # noqa: E402

CONTROL_PREFIX = "/_faults/"
CHUNK_SIZE = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
MAX_CONTROL_BODY = 1024 * 1024

FAULTS = ("throttle", "server_error", "access_denied", "hang", "hold_answer", "error")
SILENT_FAULTS = ("hang", "hold_answer")
RULE_FIELDS = {"operation", "match", "fault", "times", "status", "type", "message"}

# Hop-by-hop headers (RFC 9110 7.6.1) and framing: never forwarded as is.
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
    "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
}
REQUEST_DROP = HOP_BY_HOP | {"content-length", "expect"}
RESPONSE_DROP = HOP_BY_HOP | {"content-length"}

# server_error per X-Amz-Target prefix: the shape with "fault": true in
# botocore's data/<service>/<version>/service-2.json.
SERVER_ERRORS = {
    "secretsmanager": "InternalServiceError",   # secretsmanager/2017-10-17
    "AWSEvents": "InternalException",           # events/2015-10-07
}
# AWS "Common Errors" (every service): InternalFailure, HTTP 500.
DEFAULT_SERVER_ERROR = "InternalFailure"


class BadRequest(Exception):
    """Malformed control request; message is safe to echo back."""


def operation_name(target: str) -> str:
    """'secretsmanager.GetSecretValue' -> 'GetSecretValue'."""
    return target.rsplit(".", 1)[-1]


def fault_response(rule: dict, target: str) -> tuple[int, str, str]:
    """(status, error type, message) of a non-hang rule for a target."""
    fault = rule["fault"]
    if fault == "throttle":
        status, etype, message = 400, "ThrottlingException", "Rate exceeded"
    elif fault == "server_error":
        prefix = target.split(".", 1)[0]
        status = 500
        etype = SERVER_ERRORS.get(prefix, DEFAULT_SERVER_ERROR)
        message = "An error occurred on the server side (injected by the fault proxy)."
    elif fault == "access_denied":
        status, etype = 400, "AccessDeniedException"
        message = "User is not authorized to perform this action (injected by the fault proxy)."
    else:  # error
        status, etype, message = rule["status"], rule["type"], ""
    if "message" in rule:
        message = rule["message"]
    return status, etype, message


def validate_rule(obj) -> dict:
    if not isinstance(obj, dict):
        raise BadRequest("request body must be a JSON object")
    unknown = sorted(set(obj) - RULE_FIELDS)
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(unknown)}")
    op = obj.get("operation")
    if not isinstance(op, str) or not op or any(c.isspace() for c in op):
        raise BadRequest("operation must be a non-empty string without spaces")
    match = obj.get("match")
    if not isinstance(match, str) or not match:
        raise BadRequest("match must be a non-empty string")
    fault = obj.get("fault")
    if fault not in FAULTS:
        raise BadRequest(f"fault must be one of {', '.join(FAULTS)}")
    times = obj.get("times", 1)
    if isinstance(times, bool) or not isinstance(times, int) or not (times >= 1 or times == -1):
        raise BadRequest("times must be a positive integer or -1 (always)")
    rule = {"operation": op, "match": match, "fault": fault, "times": times}
    if fault == "error":
        status = obj.get("status")
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise BadRequest("status must be an integer in 400..599 for fault \"error\"")
        etype = obj.get("type")
        if not isinstance(etype, str) or not etype or any(c in etype for c in "\r\n"):
            raise BadRequest("type must be a non-empty single-line string for fault \"error\"")
        rule["status"] = status
        rule["type"] = etype
    else:
        for field in ("status", "type"):
            if field in obj:
                raise BadRequest(f"{field} is only for fault \"error\"")
    if "message" in obj:
        if fault in SILENT_FAULTS:
            raise BadRequest(f"message is not for fault \"{fault}\"")
        if not isinstance(obj["message"], str):
            raise BadRequest("message must be a string")
        rule["message"] = obj["message"]
    return rule


class FaultState:
    """Rules and recorded calls, shared by all connections."""

    def __init__(self, max_recorded_bytes: int):
        self.lock = threading.Lock()
        self.rules: list[dict] = []
        self.next_id = itertools.count(1)
        # (operation name, body, faulted, connection number) in arrival order.
        self.records: collections.deque = collections.deque()
        self.recorded_bytes = 0
        self.max_recorded_bytes = max_recorded_bytes
        self.dropped = False

    def add_rule(self, rule: dict) -> int:
        with self.lock:
            rule = dict(rule, id=next(self.next_id), hits=0, holding=0)
            rule["remaining"] = rule["times"]
            rule["match_bytes"] = rule["match"].encode("utf-8")
            self.rules.append(rule)
            return rule["id"]

    def take(self, target: str, body: bytes, conn_no: int) -> dict | None:
        """Records the request; returns the rule that applies (used once)."""
        op = operation_name(target)
        with self.lock:
            chosen = None
            for rule in self.rules:
                if rule["remaining"] == 0:
                    continue
                if rule["operation"] != target and rule["operation"] != op:
                    continue
                if rule["match_bytes"] not in body:
                    continue
                chosen = rule
                break
            if chosen is not None:
                chosen["hits"] += 1
                if chosen["remaining"] > 0:
                    chosen["remaining"] -= 1
                chosen = dict(chosen)
            self.records.append((op, body, chosen is not None, conn_no))
            self.recorded_bytes += len(body)
            while self.recorded_bytes > self.max_recorded_bytes and self.records:
                old = self.records.popleft()[1]
                self.recorded_bytes -= len(old)
                self.dropped = True
            return chosen

    def holding(self, rule_id: int, delta: int) -> None:
        with self.lock:
            for rule in self.rules:
                if rule["id"] == rule_id:
                    rule["holding"] += delta

    def list_rules(self, match: str | None) -> list[dict]:
        with self.lock:
            return [
                {k: v for k, v in r.items() if k != "match_bytes"}
                for r in self.rules if match is None or r["match"] == match
            ]

    def delete_rules(self, match: str | None, rule_id: int | None) -> int:
        with self.lock:
            keep = [r for r in self.rules
                    if not ((match is not None and r["match"] == match)
                            or (rule_id is not None and r["id"] == rule_id))]
            deleted = len(self.rules) - len(keep)
            self.rules = keep
            return deleted

    def calls(self, match: str) -> dict:
        m = match.encode("utf-8")
        operations: dict[str, int] = {}
        faulted: dict[str, int] = {}
        connections = set()
        with self.lock:
            for op, body, was_faulted, conn_no in self.records:
                if m in body:
                    operations[op] = operations.get(op, 0) + 1
                    connections.add(conn_no)
                    if was_faulted:
                        faulted[op] = faulted.get(op, 0) + 1
            complete = not self.dropped
        return {"match": match, "total": sum(operations.values()),
                "operations": operations, "faulted": faulted,
                "connections": len(connections), "complete": complete}

    def forget_calls(self, match: str) -> int:
        m = match.encode("utf-8")
        with self.lock:
            keep = collections.deque(r for r in self.records if m not in r[1])
            deleted = len(self.records) - len(keep)
            self.records = keep
            self.recorded_bytes = sum(len(r[1]) for r in keep)
            return deleted


class ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, addr, handler, *, upstream: tuple[str, int], hang_seconds: float,
                 upstream_timeout: float, max_recorded_bytes: int, latency_ms: float = 0.0):
        self.state = FaultState(max_recorded_bytes)
        self.latency = latency_ms / 1000.0
        self.upstream = upstream
        self.hang_seconds = hang_seconds
        self.upstream_timeout = upstream_timeout
        self.stopping = threading.Event()
        self.connections = itertools.count(1)
        super().__init__(addr, handler)

    def handle_error(self, request, client_address):
        loopback_serve.report_handler_error("fault proxy")


class ProxyServer6(ProxyServer):
    address_family = socket.AF_INET6


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "aws-fault-proxy/1"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version

    def setup(self):
        super().setup()
        self.conn_no = next(self.server.connections)

    # ------------------------------------------------------------------ logging

    def _log_path(self) -> str:
        raw = getattr(self, "path", "") or ""
        if raw.startswith(("http://", "https://")):
            raw = urlsplit(raw).path
        path = raw.split("?", 1)[0].split("#", 1)[0]
        path = "".join(c for c in path if c.isprintable() and not c.isspace())
        return path[:200] or "-"

    def _log(self, target: str, status, note: str = "") -> None:
        method = self.command if isinstance(self.command, str) and self.command.isalpha() else "-"
        target = "".join(c for c in target if c.isalnum() or c in "._-")[:100] or "-"
        line = f"conn={self.conn_no} {method} {self._log_path()} {target} {status}"
        if note:
            line += f" {note}"
        try:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except Exception:
            pass

    def log_request(self, code="-", size="-"):
        pass  # one line per request from _log

    def log_error(self, format, *args):
        pass  # messages may quote the raw request line

    def log_message(self, format, *args):
        pass

    # ------------------------------------------------------------------ helpers

    def _route_path(self) -> str:
        raw = self.path
        if raw.startswith(("http://", "https://")):
            return urlsplit(raw).path or "/"
        return raw.split("?", 1)[0].split("#", 1)[0]

    def _query(self) -> dict:
        return parse_qs(urlsplit(self.path).query)

    def _read_body(self, limit: int = MAX_BODY) -> bytes:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise ConnectionError("client closed mid-body")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self.close_connection = True
                    raise BadRequest("bad chunked encoding")
                if size == 0:
                    while True:
                        trailer = self.rfile.readline(8192)
                        if trailer in (b"\r\n", b"\n", b""):
                            break
                    return bytes(out)
                if len(out) + size > limit:
                    self.close_connection = True
                    raise BadRequest("request body too large")
                out += self.rfile.read(size)
                self.rfile.readline(16)  # CRLF after the chunk
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            raise BadRequest("bad Content-Length")
        if n < 0 or n > limit:
            self.close_connection = True
            raise BadRequest("request body too large")
        body = self.rfile.read(n)
        if len(body) != n:
            raise ConnectionError("client closed mid-body")
        return body

    def _send(self, status: int, body: bytes, headers=()) -> None:
        self._status = status
        self.send_response_only(status)
        self.send_header("Server", self.version_string())
        self.send_header("Date", self.date_time_string())
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _send_json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"),
                   [("Content-Type", "application/json")])

    # ------------------------------------------------------------------ methods

    def do_GET(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def do_PATCH(self):
        self._dispatch()

    def do_OPTIONS(self):
        self._dispatch()

    def _dispatch(self) -> None:
        path = self._route_path()
        target = self.headers.get("X-Amz-Target") or ""
        try:
            if path.startswith(CONTROL_PREFIX):
                self._control(path)
                return
            body = self._read_body()
        except BadRequest as e:
            self._send_json(400, {"error": "bad_request", "message": str(e)})
            self._log(target, 400, "bad-request")
            return
        rule = self.server.state.take(target, body, self.conn_no) if target else None
        if rule is None:
            self._forward(target, body)
        elif rule["fault"] == "hang":
            self._hang(target, rule)
        elif rule["fault"] == "hold_answer":
            status = self._forward_unanswered(body)
            self._hang(target, dict(rule, fault=f"hold_answer upstream={status}"))
        else:
            self._fault(target, rule)

    # ------------------------------------------------------------------ faults

    def _fault(self, target: str, rule: dict) -> None:
        status, etype, message = fault_response(rule, target)
        ctype = self.headers.get("Content-Type") or ""
        if not ctype.startswith("application/x-amz-json-"):
            ctype = "application/x-amz-json-1.1"
        body = json.dumps({"__type": etype, "message": message}).encode("utf-8")
        self._send(status, body, [
            ("Content-Type", ctype),
            ("x-amzn-RequestId", str(uuid.uuid4())),
            ("x-amzn-ErrorType", etype),
        ])
        self._log(target, status, f"fault={rule['fault']} type={etype} rule={rule['id']}")

    def _forward_unanswered(self, body: bytes):
        """Has the upstream carry the request out; its answer is dropped."""
        host, port = self.server.upstream
        conn = http.client.HTTPConnection(host, port, timeout=self.server.upstream_timeout)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() not in REQUEST_DROP:
                    conn.putheader(k, v)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        except (OSError, http.client.HTTPException) as e:
            return type(e).__name__
        finally:
            conn.close()

    def _hang(self, target: str, rule: dict) -> None:
        self._log(target, "-", f"fault={rule['fault']} rule={rule['id']} holding")
        self.close_connection = True
        self.server.state.holding(rule["id"], +1)
        try:
            how, held = self._hold()
        finally:
            self.server.state.holding(rule["id"], -1)
        self._log(target, "-", f"fault={rule['fault']} rule={rule['id']} closed after {held:.1f}s ({how})")

    def _hold(self) -> tuple[str, float]:
        """Holds the connection silent; returns why it stopped and after how long."""
        sock = self.connection
        started = time.monotonic()
        deadline = started + self.server.hang_seconds
        how = "bound"
        poller = select.poll()  # not select(): no FD_SETSIZE limit
        poller.register(sock, select.POLLIN | select.POLLPRI)
        while True:
            if self.server.stopping.is_set():
                how = "proxy stopping"
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                if poller.poll(int(min(left, 0.2) * 1000) + 1):
                    data = sock.recv(65536)  # anything the client sends is dropped
                    if not data:
                        how = "client closed"
                        break
            except OSError:
                how = "client reset"
                break
        return how, time.monotonic() - started

    # ------------------------------------------------------------------ forwarding

    def _forward(self, target: str, body: bytes) -> None:
        if target and self.server.latency:
            time.sleep(self.server.latency)
        host, port = self.server.upstream
        conn = http.client.HTTPConnection(host, port, timeout=self.server.upstream_timeout)
        try:
            try:
                conn.putrequest(self.command, self.path, skip_host=True,
                                skip_accept_encoding=True)
                for k, v in self.headers.items():
                    if k.lower() not in REQUEST_DROP:
                        conn.putheader(k, v)
                if body or self.command in ("POST", "PUT", "PATCH"):
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body if body else None)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                self._send(502, json.dumps({
                    "__type": "BadGateway",
                    "message": f"fault proxy: upstream failed: {type(e).__name__}",
                }).encode("utf-8"), [("Content-Type", "application/json"),
                                     ("x-amzn-ErrorType", "BadGateway")])
                self._log(target, 502, "upstream-error")
                return
            self._relay(resp)
            self._log(target, resp.status)
        finally:
            conn.close()

    def _relay(self, resp: http.client.HTTPResponse) -> None:
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in RESPONSE_DROP:
                self.send_header(k, v)
        no_body = (self.command == "HEAD" or resp.status in (204, 304)
                   or 100 <= resp.status < 200)
        length = resp.getheader("Content-Length")
        chunked = False
        if no_body:
            if length is not None:
                self.send_header("Content-Length", length)
        elif length is not None and not resp.chunked:
            self.send_header("Content-Length", length)
        elif self.request_version == "HTTP/1.0":
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Transfer-Encoding", "chunked")
            chunked = True
        self.end_headers()
        if not no_body:
            while True:
                data = resp.read1(CHUNK_SIZE)
                if not data:
                    break
                if chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                else:
                    self.wfile.write(data)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        if resp.will_close and length is None and not resp.chunked and not chunked:
            self.close_connection = True

    # ------------------------------------------------------------------ control

    def _control_json(self) -> dict:
        raw = self._read_body(MAX_CONTROL_BODY)
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BadRequest("request body must be a JSON object")
        return obj

    def _one(self, query: dict, name: str) -> str | None:
        values = query.get(name)
        return values[0] if values else None

    def _control(self, path: str) -> None:
        state = self.server.state
        method = self.command
        query = self._query()
        if method == "POST" and path == "/_faults/rules":
            rule = validate_rule(self._control_json())
            rule_id = state.add_rule(rule)
            self._send_json(200, {"id": rule_id})
            self._log("-", 200, f"rule={rule_id} added {rule['operation']} {rule['fault']}")
            return
        self._read_body(MAX_CONTROL_BODY)
        if method == "GET" and path == "/_faults/rules":
            self._send_json(200, {"rules": state.list_rules(self._one(query, "match"))})
        elif method == "DELETE" and path == "/_faults/rules":
            match = self._one(query, "match")
            rule_id = self._one(query, "id")
            if not match and not rule_id:
                raise BadRequest("match or id query parameter is required")
            try:
                rid = int(rule_id) if rule_id else None
            except ValueError:
                raise BadRequest("id must be an integer")
            self._send_json(200, {"deleted": state.delete_rules(match or None, rid)})
        elif method == "GET" and path == "/_faults/calls":
            match = self._one(query, "match")
            if not match:
                raise BadRequest("match query parameter is required")
            self._send_json(200, state.calls(match))
        elif method == "DELETE" and path == "/_faults/calls":
            match = self._one(query, "match")
            if not match:
                raise BadRequest("match query parameter is required")
            self._send_json(200, {"deleted": state.forget_calls(match)})
        elif method == "GET" and path == "/_faults/health":
            self._send_json(200, {"ok": True})
        else:
            self._send_json(404, {"error": "not_found", "message": "no such control endpoint"})
        self._log("-", getattr(self, "_status", "-"), "control")


# ---------------------------------------------------------------------- main

def loopback_family(host: str):
    """Return the socket family for a loopback host, or None if not loopback."""
    if host == "localhost":
        return socket.AF_INET
    h = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        return None
    if ip.version == 4 and ip in ipaddress.ip_network("127.0.0.0/8"):
        return socket.AF_INET
    if ip.version == 6 and ip == ipaddress.ip_address("::1"):
        return socket.AF_INET6
    return None


def parse_upstream(url: str) -> tuple[str, int] | None:
    """'http://127.0.0.1:5000' -> ('127.0.0.1', 5000); None unless loopback http."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme != "http" or not parts.hostname or port is None:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    if loopback_family(parts.hostname) is None:
        return None
    return parts.hostname, port


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Fault-injecting proxy in front of moto's server, for the tests.")
    parser.add_argument("--upstream", required=True,
                        help="moto's server, http://LOOPBACK:PORT")
    parser.add_argument("--host", default="127.0.0.1",
                        help="loopback address to bind (127.0.0.0/8, localhost, ::1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 = ephemeral")
    parser.add_argument("--port-file", help="write the bound port number here (atomically)")
    parser.add_argument("--hang-seconds", type=float, default=120.0,
                        help="longest a hang fault holds a connection (default 120)")
    parser.add_argument("--upstream-timeout", type=float, default=120.0,
                        help="socket timeout towards the upstream (default 120)")
    parser.add_argument("--max-recorded-bytes", type=int, default=64 * 1024 * 1024,
                        help="memory cap on request bodies kept for /_faults/calls")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="time added before every AWS call forwarded (benchmarks)")
    args = parser.parse_args(argv)

    family = loopback_family(args.host)
    if family is None:
        print(f"fault proxy: refusing to bind non-loopback host {args.host!r} "
              "(allowed: 127.0.0.0/8, localhost, ::1)", file=sys.stderr)
        return 2
    upstream = parse_upstream(args.upstream)
    if upstream is None:
        print("fault proxy: --upstream must be http://LOOPBACK:PORT", file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print("fault proxy: --port must be in 0..65535", file=sys.stderr)
        return 2
    if not args.hang_seconds > 0 or not args.upstream_timeout > 0 or args.max_recorded_bytes < 0:
        print("fault proxy: --hang-seconds and --upstream-timeout must be positive, "
              "--max-recorded-bytes not negative", file=sys.stderr)
        return 2

    bind_host = args.host.strip("[]")
    server_cls = ProxyServer6 if family == socket.AF_INET6 else ProxyServer
    try:
        server = server_cls((bind_host, args.port), Handler, upstream=upstream,
                            hang_seconds=args.hang_seconds,
                            upstream_timeout=args.upstream_timeout,
                            max_recorded_bytes=args.max_recorded_bytes,
                            latency_ms=max(0.0, args.latency_ms))
    except OSError as e:
        print(f"fault proxy: cannot bind {args.host}:{args.port}: {e.strerror or e}",
              file=sys.stderr)
        return 1

    port = server.server_address[1]
    url_host = f"[{bind_host}]" if family == socket.AF_INET6 else args.host
    return loopback_serve.serve(server, "aws fault proxy", f"http://{url_host}:{port}",
                                args.port_file, on_stop=server.stopping.set)


if __name__ == "__main__":
    sys.exit(main())
