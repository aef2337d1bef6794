#!/usr/bin/env python3
"""Local stand-in for Sony Prediction One's "Get API Key" endpoint.

Used by tests and local runs of the p1-key-broker Lambda. Standard library
only (Python 3.11+). Binds to loopback addresses only.

Usage:
    python3 scripts/vendor_standin.py [--host 127.0.0.1] [--port 0]
        [--port-file PATH] [--validity-seconds 604800]
        [--end-date-format space|rfc3339|rfc3339-offset|slash|date|garbage]
        [--tls-cert CERT.pem --tls-key KEY.pem]

After binding it prints exactly one line to stdout:
    vendor stand-in listening on http://HOST:PORT
(https:// with --tls-cert/--tls-key: then it serves TLS only, with that
certificate chain and key; the cold-start benchmark uses it with a test CA.)
and, with --port-file, atomically writes the bound port (digits only).

Vendor endpoint:
    GET /v1/external/api-key?credential_type=train|retrain|deploy[&model_id=M]
    header x-api-key: <secret key>

    Secret key prefixes select documented errors (HTTP 400, code 4001000204,
    error PREDA_EXTERNAL_BAD_REQUEST):
        invalid-       -> "invalid_api_key."
        inactive-      -> "Inactive_credential."
        notfound-      -> "Not_found_credential."
        deleted-user-  -> "This user may be deleted."
    model_id starting with "deleted" -> "This model may be deleted."
    retrain without model_id         -> "Model id is required."
    bad/missing credential_type      -> "Invalid credential_type."
    missing/empty x-api-key          -> 403 {"message": "Forbidden"}

Control endpoints (tests only):
    POST /_standin/script  {"secret_key": K, "responses": [R, ...]}
    POST /_standin/reset   {"secret_key": K}
    GET  /_standin/calls?secret_key=K
    GET  /_standin/health

Scripted response R (all fields optional):
    status (int, default 200), json (any JSON value), body (str),
    content_type (str), headers (object str->str), delay_ms (number >= 0),
    body_size (int >= 0), chunked (bool), drop (bool)

Secret keys and issued api keys are never printed or logged.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import ipaddress
import json
import os
import secrets
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# The sibling module with the serving code both loopback servers share (on
# the path also when this file is run through runpy, as bench/standins.py does).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback_serve  # noqa: E402

VENDOR_PATH = "/v1/external/api-key"
ERROR_CODE = 4001000204
ERROR_NAME = "PREDA_EXTERNAL_BAD_REQUEST"
CREDENTIAL_TYPES = ("train", "retrain", "deploy")

MSG_INVALID_API_KEY = "invalid_api_key."
MSG_INACTIVE = "Inactive_credential."
MSG_NOT_FOUND = "Not_found_credential."
MSG_USER_DELETED = "This user may be deleted."
MSG_MODEL_DELETED = "This model may be deleted."
MSG_MODEL_ID_REQUIRED = "Model id is required."
MSG_INVALID_CREDENTIAL_TYPE = "Invalid credential_type."

# Checked in order; first matching prefix wins.
SECRET_KEY_CLASSES = (
    ("invalid-", MSG_INVALID_API_KEY),
    ("inactive-", MSG_INACTIVE),
    ("notfound-", MSG_NOT_FOUND),
    ("deleted-user-", MSG_USER_DELETED),
)

END_DATE_FORMATS = ("space", "rfc3339", "rfc3339-offset", "slash", "date", "garbage")
JST = datetime.timezone(datetime.timedelta(hours=9))

CHUNK_SIZE = 8 * 1024
MAX_CONTROL_BODY = 10 * 1024 * 1024

SCRIPT_FIELDS = {
    "status", "json", "body", "content_type", "headers",
    "delay_ms", "body_size", "chunked", "drop",
}
# Framing headers are always computed by the stand-in; scripted values for
# these are ignored so keep-alive clients never get a desynchronised stream.
FRAMING_HEADERS = {"content-length", "transfer-encoding", "connection"}


class BadRequest(Exception):
    """Malformed control request; message is safe to echo back."""


def format_end_date(now_utc: datetime.datetime, validity_seconds: int, fmt: str) -> str:
    if fmt == "garbage":
        return "sometime next week"
    end = now_utc.replace(microsecond=0) + datetime.timedelta(seconds=validity_seconds)
    if fmt == "space":
        return end.strftime("%Y-%m-%d %H:%M:%S")
    if fmt == "rfc3339":
        return end.strftime("%Y-%m-%dT%H:%M:%SZ")
    if fmt == "rfc3339-offset":
        return end.astimezone(JST).isoformat()
    if fmt == "slash":
        return end.strftime("%Y/%m/%d %H:%M:%S")
    if fmt == "date":
        return end.strftime("%Y-%m-%d")
    raise ValueError(f"unknown end-date format {fmt!r}")


def sized_body(size: int) -> bytes:
    """A JSON-looking body of exactly `size` bytes, padded with x's.

    If `size` is smaller than the minimal template the template is truncated
    (so the result is then not valid JSON).
    """
    prefix = b'{"api_key":"'
    suffix = b'","end_date":"2030-01-01"}'
    pad = size - len(prefix) - len(suffix)
    if pad < 0:
        return (prefix + suffix)[:size]
    return prefix + b"x" * pad + suffix


def validate_script_item(item, index: int) -> dict:
    where = f"responses[{index}]"
    if not isinstance(item, dict):
        raise BadRequest(f"{where} must be an object")
    unknown = sorted(set(item) - SCRIPT_FIELDS)
    if unknown:
        raise BadRequest(f"{where} has unknown fields: {', '.join(unknown)}")

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    if "status" in item and not (is_int(item["status"]) and 200 <= item["status"] <= 599):
        raise BadRequest(f"{where}.status must be an integer in 200..599")
    if "body" in item and not isinstance(item["body"], str):
        raise BadRequest(f"{where}.body must be a string")
    if "content_type" in item and not isinstance(item["content_type"], str):
        raise BadRequest(f"{where}.content_type must be a string")
    if "headers" in item:
        headers = item["headers"]
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise BadRequest(f"{where}.headers must be an object of string values")
        for k, v in headers.items():
            if not k or any(c in k for c in "\r\n:") or any(c in v for c in "\r\n"):
                raise BadRequest(f"{where}.headers contains an invalid header")
    if "delay_ms" in item:
        d = item["delay_ms"]
        if isinstance(d, bool) or not isinstance(d, (int, float)) or d < 0:
            raise BadRequest(f"{where}.delay_ms must be a non-negative number")
    if "body_size" in item and not (is_int(item["body_size"]) and item["body_size"] >= 0):
        raise BadRequest(f"{where}.body_size must be a non-negative integer")
    for flag in ("chunked", "drop"):
        if flag in item and not isinstance(item[flag], bool):
            raise BadRequest(f"{where}.{flag} must be a boolean")
    return item


class StandinState:
    def __init__(self):
        self.lock = threading.Lock()
        self.queues: dict[str, collections.deque] = {}
        self.calls: dict[str, list] = {}


class StandinServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, addr, handler, *, validity_seconds: int, end_date_format: str,
                 tls_context: ssl.SSLContext | None = None):
        self.state = StandinState()
        self.validity_seconds = validity_seconds
        self.end_date_format = end_date_format
        self.tls_context = tls_context
        super().__init__(addr, handler)

    def get_request(self):
        sock, addr = super().get_request()
        if self.tls_context is not None:
            # The handshake happens in the connection's own thread
            # (finish_request), never in the accepting one.
            sock = self.tls_context.wrap_socket(sock, server_side=True,
                                                do_handshake_on_connect=False)
        return sock, addr

    def finish_request(self, request, client_address):
        if self.tls_context is not None:
            try:
                request.settimeout(10)
                request.do_handshake()
                request.settimeout(None)
            except OSError:
                return  # a failed handshake (ssl.SSLError is an OSError)
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        loopback_serve.report_handler_error("vendor stand-in")


class StandinServer6(StandinServer):
    address_family = socket.AF_INET6


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vendor-standin/1"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version

    # ------------------------------------------------------------------ logging

    def _log_path(self) -> str:
        raw = getattr(self, "path", "") or ""
        path = raw.split("?", 1)[0].split("#", 1)[0]
        path = "".join(c for c in path if c.isprintable() and not c.isspace())
        return path[:200] or "-"

    def log_request(self, code="-", size="-"):
        try:
            self._log_status = int(code)
        except (TypeError, ValueError):
            self._log_status = code
        self.log_message("%s", code)

    def log_error(self, format, *args):
        # send_error() also goes through send_response()/log_request(), and
        # error messages may quote the raw request line, so stay silent here.
        pass

    def log_message(self, format, *args):
        method = self.command if isinstance(self.command, str) and self.command.isalpha() else "-"
        status = getattr(self, "_log_status", "-")
        try:
            sys.stderr.write(f"{method} {self._log_path()} {status}\n")
            sys.stderr.flush()
        except Exception:
            pass

    # ------------------------------------------------------------------ helpers

    def _route_path(self) -> str:
        raw = self.path
        if raw.startswith(("http://", "https://")):
            return urlsplit(raw).path or "/"
        return raw.split("?", 1)[0].split("#", 1)[0]

    def _query(self) -> dict:
        query = urlsplit(self.path).query
        return parse_qs(query, keep_blank_values=True)

    def _read_body(self, limit: int = MAX_CONTROL_BODY) -> bytes:
        """Read (and return) the request body so keep-alive stays in sync."""
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            return self._read_chunked(limit)
        cl = self.headers.get("Content-Length")
        if cl is None:
            return b""
        try:
            n = int(cl.strip())
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise BadRequest("invalid Content-Length")
        if n > limit:
            self.close_connection = True
            raise BadRequest("request body too large")
        return self.rfile.read(n)

    def _read_chunked(self, limit: int) -> bytes:
        out = bytearray()
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise BadRequest("malformed chunked request body")
            if size == 0:
                # Trailers until blank line.
                while True:
                    trailer = self.rfile.readline(8192)
                    if trailer in (b"\r\n", b"\n", b""):
                        break
                return bytes(out)
            if len(out) + size > limit:
                self.close_connection = True
                raise BadRequest("request body too large")
            out += self.rfile.read(size)
            self.rfile.readline(16)  # CRLF after chunk data

    def _send(self, status: int, body: bytes = b"", content_type: str | None = None,
              headers=(), chunked: bool = False) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for k, v in headers:
            self.send_header(k, v)
        http10 = self.request_version == "HTTP/1.0"
        if chunked and not http10:
            self.send_header("Transfer-Encoding", "chunked")
        elif chunked:
            # HTTP/1.0 has no chunked encoding: delimit the body by closing.
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if chunked and not http10:
            for i in range(0, len(body), CHUNK_SIZE):
                chunk = body[i:i + CHUNK_SIZE]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.wfile.write(body)
        self.wfile.flush()

    def _send_json(self, status: int, obj, headers=()) -> None:
        body = json.dumps(obj).encode("utf-8")
        self._send(status, body, "application/json", headers)

    def _vendor_error(self, message: str) -> tuple[int, dict]:
        return 400, {"code": ERROR_CODE, "error": ERROR_NAME, "message": message}

    def _not_found(self) -> None:
        self._send_json(404, {"message": "Not Found"})

    def _control_json(self) -> dict:
        raw = self._read_body()
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BadRequest("request body must be a JSON object")
        if not isinstance(obj, dict):
            raise BadRequest("request body must be a JSON object")
        return obj

    @staticmethod
    def _secret_key_field(obj: dict) -> str:
        key = obj.get("secret_key")
        if not isinstance(key, str) or not key:
            raise BadRequest("secret_key must be a non-empty string")
        return key

    # ------------------------------------------------------------------ methods

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_OPTIONS(self):
        self._dispatch("OPTIONS")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def _dispatch(self, method: str) -> None:
        try:
            path = self._route_path()
            if method == "GET" and path == VENDOR_PATH:
                self._read_body()
                self._vendor()
            elif method == "POST" and path == "/_standin/script":
                self._control_script()
            elif method == "POST" and path == "/_standin/reset":
                self._control_reset()
            elif method == "GET" and path == "/_standin/calls":
                self._read_body()
                self._control_calls()
            elif method == "GET" and path == "/_standin/health":
                self._read_body()
                self._send_json(200, {"ok": True})
            else:
                self._read_body()
                self._not_found()
        except BadRequest as e:
            self._send_json(400, {"error": "bad_request", "message": str(e)})

    # ------------------------------------------------------------------ vendor

    def _vendor(self) -> None:
        secret_key = (self.headers.get("x-api-key") or "").strip()
        if not secret_key:
            self._send_json(403, {"message": "Forbidden"},
                            headers=[("x-amzn-ErrorType", "ForbiddenException")])
            return

        query = self._query()
        credential_type = query.get("credential_type", [None])[0]
        model_id = query.get("model_id", [None])[0]

        state = self.server.state
        with state.lock:
            queue = state.queues.get(secret_key)
            scripted = queue.popleft() if queue else None
            if scripted is not None:
                status = 0 if scripted.get("drop") else scripted.get("status", 200)
                obj = None
            else:
                status, obj = self._vendor_decide(secret_key, credential_type, model_id)
            state.calls.setdefault(secret_key, []).append({
                "credential_type": credential_type,
                "model_id": model_id,
                "status": status,
            })

        if scripted is not None:
            self._serve_scripted(scripted)
        else:
            self._send_json(status, obj)

    def _vendor_decide(self, secret_key: str, credential_type, model_id) -> tuple[int, dict]:
        for prefix, message in SECRET_KEY_CLASSES:
            if secret_key.startswith(prefix):
                return self._vendor_error(message)
        if credential_type not in CREDENTIAL_TYPES:
            return self._vendor_error(MSG_INVALID_CREDENTIAL_TYPE)
        if credential_type == "retrain" and not model_id:
            return self._vendor_error(MSG_MODEL_ID_REQUIRED)
        if model_id and model_id.startswith("deleted"):
            return self._vendor_error(MSG_MODEL_DELETED)
        now = datetime.datetime.now(datetime.timezone.utc)
        return 200, {
            "api_key": "p1k_" + secrets.token_hex(16),
            "end_date": format_end_date(now, self.server.validity_seconds,
                                        self.server.end_date_format),
        }

    def _serve_scripted(self, r: dict) -> None:
        delay_ms = r.get("delay_ms") or 0
        if delay_ms:
            time.sleep(delay_ms / 1000.0)

        if r.get("drop"):
            # Close without writing a single byte.
            self.close_connection = True
            self._log_status = 0
            self.log_message("%s", "drop")
            return

        status = r.get("status", 200)
        content_type = r.get("content_type")
        if "body_size" in r:
            body = sized_body(r["body_size"])
            default_ct = "application/json"
        elif "json" in r:
            body = json.dumps(r["json"]).encode("utf-8")
            default_ct = "application/json"
        elif "body" in r:
            body = r["body"].encode("utf-8")
            default_ct = "text/html"
        else:
            body = b""
            default_ct = None

        extra = [(k, v) for k, v in (r.get("headers") or {}).items()
                 if k.lower() not in FRAMING_HEADERS]
        if any(k.lower() == "content-type" for k, _ in extra):
            content_type = None  # explicit header wins
        elif content_type is None:
            content_type = default_ct

        self._send(status, body, content_type, extra, chunked=bool(r.get("chunked")))

    # ------------------------------------------------------------------ control

    def _control_script(self) -> None:
        obj = self._control_json()
        key = self._secret_key_field(obj)
        responses = obj.get("responses")
        if not isinstance(responses, list):
            raise BadRequest("responses must be an array")
        items = [validate_script_item(r, i) for i, r in enumerate(responses)]
        state = self.server.state
        with state.lock:
            state.queues.setdefault(key, collections.deque()).extend(items)
            queued = len(state.queues[key])
        self._send_json(200, {"queued": queued})

    def _control_reset(self) -> None:
        obj = self._control_json()
        key = self._secret_key_field(obj)
        state = self.server.state
        with state.lock:
            state.queues.pop(key, None)
            state.calls.pop(key, None)
        self._send_json(200, {"reset": True})

    def _control_calls(self) -> None:
        key = self._query().get("secret_key", [""])[0]
        if not key:
            raise BadRequest("secret_key query parameter is required")
        state = self.server.state
        with state.lock:
            calls = [dict(c) for c in state.calls.get(key, [])]
        self._send_json(200, {"count": len(calls), "calls": calls})


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Local stand-in for Prediction One's Get API Key endpoint.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="loopback address to bind (127.0.0.0/8, localhost, ::1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 = ephemeral")
    parser.add_argument("--port-file", help="write the bound port number here (atomically)")
    parser.add_argument("--validity-seconds", type=int, default=604800,
                        help="end_date = now + this many seconds (default 7 days)")
    parser.add_argument("--end-date-format", choices=END_DATE_FORMATS, default="space",
                        help="format of end_date in successful responses")
    parser.add_argument("--tls-cert", help="serve https with this PEM certificate chain")
    parser.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    args = parser.parse_args(argv)

    family = loopback_family(args.host)
    if family is None:
        print(f"vendor stand-in: refusing to bind non-loopback host {args.host!r} "
              "(allowed: 127.0.0.0/8, localhost, ::1)", file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print("vendor stand-in: --port must be in 0..65535", file=sys.stderr)
        return 2
    try:
        format_end_date(datetime.datetime.now(datetime.timezone.utc),
                        args.validity_seconds, args.end_date_format)
    except (OverflowError, ValueError):
        print("vendor stand-in: --validity-seconds out of range", file=sys.stderr)
        return 2

    tls_context = None
    if bool(args.tls_cert) != bool(args.tls_key):
        print("vendor stand-in: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    if args.tls_cert:
        tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            tls_context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as e:
            print(f"vendor stand-in: cannot load the TLS certificate or key: {e}", file=sys.stderr)
            return 2

    bind_host = args.host.strip("[]")
    server_cls = StandinServer6 if family == socket.AF_INET6 else StandinServer
    try:
        server = server_cls((bind_host, args.port), Handler,
                            validity_seconds=args.validity_seconds,
                            end_date_format=args.end_date_format,
                            tls_context=tls_context)
    except OSError as e:
        print(f"vendor stand-in: cannot bind {args.host}:{args.port}: {e.strerror or e}",
              file=sys.stderr)
        return 1

    port = server.server_address[1]
    url_host = f"[{bind_host}]" if family == socket.AF_INET6 else args.host
    scheme = "https" if tls_context is not None else "http"
    return loopback_serve.serve(server, "vendor stand-in", f"{scheme}://{url_host}:{port}",
                                args.port_file)


if __name__ == "__main__":
    sys.exit(main())
