#!/usr/bin/env python3
"""Local stand-in for Sony Prediction One's "Get API Key" endpoint and its
retraining API (SPEC 1 and 11; /work/shared/vendor-retrain-api.md).

Used by tests and local runs of the p1-key-broker Lambda and the p1-retrain
runner. Standard library only (Python 3.11+). Binds to loopback addresses
only.

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
That URL (BASE below) is also the scheme/host/port of the pre-signed
upload and download URLs the retraining API hands out.

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

    Every api_key issued (a normal 200, not a scripted one) is remembered:
    api_key -> {credential_type, model_id (string, or None), revoked: False}
    (the newest 100000; an older one then counts as never issued).

Retraining endpoints (all need header x-api-key = an issued retrain key; the
key's model_id is the model the call acts on). Errors have the key
endpoint's body {"code", "error", "message"}: HTTP 400, code 4001000204,
error PREDA_EXTERNAL_BAD_REQUEST unless said otherwise.
    Credential checks, in this order, before anything else:
        missing/empty x-api-key           -> 403 {"message": "Forbidden"}
        a key never issued                -> "invalid_api_key."
        a revoked key                     -> "Inactive_credential."
        credential_type other than retrain -> "Not_found_credential."
    Then a scripted response queued for (model, endpoint), if any, answers
    the call instead of the behaviour below (it does not move the job on).

    GET /v1/external/retrain_jobs/upload_url?filename=NAME     endpoint "upload_url"
        model id starting "deleted"  -> "This model may be deleted."
            (the key endpoint issues no retrain key for a "deleted..."
            model, so in practice this answer comes only from a script)
        model id starting "noconfig" -> HTTP 500, code 5001000201,
            error PREDA_EXTERNAL_INTERNAL_SERVER_ERROR,
            "Not found configuration_file."
        missing/empty filename       -> "filename is required."
        else 200 {"retrain_job_id": "rj-<16 hex>",
                  "upload_url": "BASE/_upload/<32 hex>?X-Amz-Signature=<64 hex>"}
        and a new job (state "waiting_upload") that keeps the model's
        retrain settings (POST /_standin/retrain) as they were at creation.

    PUT BASE/_upload/<token>?X-Amz-Signature=<sig>             endpoint "upload"
        (the pre-signed S3 upload URL). Checks, in order:
        an x-api-key header (even empty) -> 400 S3-style XML error
            "x-api-key must not be sent to a pre-signed URL"
        no Content-Length, or any Transfer-Encoding (chunked) -> 411
            MissingContentLength; a bad Content-Length -> 400
        unknown token, wrong signature, deleted job -> 403 AccessDenied /
            SignatureDoesNotMatch
        (refused bodies are read and discarded so the client sees the answer)
        then a scripted "upload" response: sent after reading and discarding
        the body; with "drop" the connection is closed after reading at most
        64 KiB of it, with no answer; with "accept" (and "delay_ms") the
        upload is taken as a normal one after the delay, before the body is
        read (a slow but successful upload).
        Else the body is read in 64 KiB chunks (never held whole), its SHA-256
        and byte count computed, and the job's upload becomes {bytes, sha256,
        content_length_header, content_type (or None), x_api_key_seen: False};
        200 with an ETag (the body's MD5, quoted, as S3 does). The job is
        then "running". A later PUT replaces the recorded upload (S3
        semantics) but does not restart the job. A body that ends early
        (client gone, or 60 s without data) records nothing on the job.

    GET /v1/external/retrain_jobs/{retrain_job_id}              endpoint "status"
        unknown id, or a job of another model -> "Not found retrain job."
        deleted job (POST /_standin/delete_job) -> "This job may be deleted."
        else 200 {"status": S, "model_id": M, "message": MSG (only when set,
        with the final status), "download_url": U (only with job_finished,
        unless no_download_url), "metadata": {"retrain_job_id": ID}}
        M is an integer when the model id is all ASCII digits, else the string.
        S: "waiting_upload" before any upload; after the upload, the first
        running_polls status calls (default 2) answer "running", every later
        one the final status (default "job_finished"). With never_finish it
        stays "running". Scripted answers are not counted.
        U = "BASE/_download/<32 hex>?X-Amz-Signature=<64 hex>", made when the
        job first reports job_finished and stable from then on.

    PUT /v1/external/retrain_jobs/{retrain_job_id}/update_model  endpoint "update_model"
        (no body) unknown id / another model's job -> "Not found retrain job."
        deleted job                  -> "This job may be deleted."
        model id starting "noclassifier" -> "Not found classifier."
        job status (as last reported by a status call) not job_finished
                                     -> "Retrain job is not finished."
        else 200 {"metadata": {"retrain_job_id": ID}}; the job's switched
        becomes true and switch_calls counts these answers.

    GET BASE/_download/<token>?X-Amz-Signature=<sig>           endpoint "download"
        (the pre-signed results file) an x-api-key header -> 400 XML error;
        unknown token / wrong signature -> 403; a deleted job -> 404
        NoSuchKey; then a scripted "download" response; else 200,
        Content-Type application/zip, results_size bytes (default 2048),
        with Content-Length, or Transfer-Encoding: chunked (no length) when
        results_chunked. The content is deterministic and made 64 KiB at a
        time: block i (from 0) = SHAKE-256(b"p1-standin-results\0" + job id
        + b"\0" + decimal i).digest(65536), the last one cut short. Just before
        the last bytes of a body go out, the job records results_sha256
        (hex) and results_size (bytes) of the whole file (null until a
        download got that far).

Control endpoints (tests only; JSON bodies; a model id may be given as a
string or an integer):
    POST /_standin/script  {"secret_key": K, "responses": [R, ...]}
        queues responses for the key endpoint, one per call with that key.
    POST /_standin/script  {"model_id": M, "endpoint": E, "responses": [R, ...]}
        E: upload_url | status | update_model | upload | download. Queues
        responses for that retraining endpoint of model M (see above).
    POST /_standin/reset   {"secret_key": K} and/or {"model_id": M}
        forgets K's script and calls; M's jobs (and their URLs), scripts,
        settings and calls (issued keys and revocations stay).
    GET  /_standin/calls?secret_key=K
        {"count", "calls": [{credential_type, model_id, status}, ...]}
    GET  /_standin/calls?model_id=M
        {"count", "calls": [{endpoint, status_code, had_api_key,
        retrain_job_id}, ...]} the retraining calls of model M, in order
        (credential errors of M's keys included; status_code 0 = no answer
        sent: a drop, or the client went away mid-upload).
    POST /_standin/retrain {"model_id": M, "running_polls": 2,
        "final_status": "job_finished", "message": null, "never_finish": false,
        "no_download_url": false, "results_size": 2048, "results_chunked": false}
        sets the behaviour of M's jobs created after this call (earlier jobs
        keep theirs); it replaces M's settings whole, so omitted fields take
        the defaults shown. Answers {"model_id", "settings"}.
    POST /_standin/revoke  {"model_id": M}
        revokes every retrain key issued so far for M; answers {"revoked": n}.
    POST /_standin/delete_job {"retrain_job_id": ID}
        the job answers "This job may be deleted." from then on (unknown id
        -> 400).
    GET  /_standin/jobs?model_id=M
        a JSON list of M's jobs, in creation order: {retrain_job_id, model_id,
        filename, upload: null | {bytes, sha256, content_length_header,
        content_type, x_api_key_seen}, status_calls, status, switched,
        switch_calls, results_sha256, results_size, upload_puts,
        download_gets, deleted, settings}. status_calls counts the status
        calls the job answered (200s); upload_puts and download_gets count
        every request to its URLs, refused ones too. No tokens or URLs.
    GET  /_standin/health

Scripted response R (all fields optional):
    status (int, default 200), json (any JSON value), body (str),
    content_type (str), headers (object str->str), delay_ms (number >= 0),
    body_size (int >= 0), chunked (bool), drop (bool),
    cut_after (int >= 0: announce the whole body's Content-Length, or with
    chunked send chunks without the last one, send only that many bytes,
    close the connection)

Secret keys, issued api keys and the tokens of the upload and download URLs
are never printed or logged (those two routes are logged as /_upload/* and
/_download/*).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import hashlib
import hmac
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
from urllib.parse import parse_qs, unquote, urlsplit

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

RETRAIN_PREFIX = "/v1/external/retrain_jobs/"
UPLOAD_PREFIX = "/_upload/"
DOWNLOAD_PREFIX = "/_download/"
INTERNAL_ERROR_CODE = 5001000201
INTERNAL_ERROR_NAME = "PREDA_EXTERNAL_INTERNAL_SERVER_ERROR"

MSG_JOB_NOT_FOUND = "Not found retrain job."
MSG_JOB_DELETED = "This job may be deleted."
MSG_NO_CONFIGURATION = "Not found configuration_file."
MSG_NO_CLASSIFIER = "Not found classifier."
MSG_NOT_FINISHED = "Retrain job is not finished."
MSG_FILENAME_REQUIRED = "filename is required."
MSG_KEY_TO_PRESIGNED = "x-api-key must not be sent to a pre-signed URL"
MSG_BAD_SIGNATURE = ("The request signature we calculated does not match "
                     "the signature you provided.")

RETRAIN_ENDPOINTS = ("upload_url", "status", "update_model", "upload", "download")
JOB_FINISHED = "job_finished"
DEFAULT_RETRAIN_SETTINGS = {
    "running_polls": 2,
    "final_status": JOB_FINISHED,
    "message": None,
    "never_finish": False,
    "no_download_url": False,
    "results_size": 2048,
    "results_chunked": False,
}
SINK_CHUNK = 64 * 1024
MAX_REMEMBERED_KEYS = 100_000
SINK_IDLE_TIMEOUT = 60.0
RESULTS_SEED = b"p1-standin-results\0"

SCRIPT_FIELDS = {
    "status", "json", "body", "content_type", "headers",
    "delay_ms", "body_size", "chunked", "drop", "cut_after", "accept",
}
# Framing headers are always computed by the stand-in; scripted values for
# these are ignored so keep-alive clients never get a desynchronised stream.
FRAMING_HEADERS = {"content-length", "transfer-encoding", "connection"}


class BadRequest(Exception):
    """Malformed control request; message is safe to echo back."""


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def model_id_field(obj: dict) -> str:
    """A control body's model_id: a non-empty string, or an integer."""
    m = obj.get("model_id")
    if is_int(m):
        return str(m)
    if not isinstance(m, str) or not m:
        raise BadRequest("model_id must be a non-empty string or an integer")
    return m


def validate_retrain_settings(obj: dict) -> dict:
    unknown = sorted(set(obj) - set(DEFAULT_RETRAIN_SETTINGS) - {"model_id"})
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(unknown)}")
    settings = dict(DEFAULT_RETRAIN_SETTINGS)
    for name in ("running_polls", "results_size"):
        if name in obj:
            if not (is_int(obj[name]) and obj[name] >= 0):
                raise BadRequest(f"{name} must be a non-negative integer")
            settings[name] = obj[name]
    if "final_status" in obj:
        if not isinstance(obj["final_status"], str) or not obj["final_status"]:
            raise BadRequest("final_status must be a non-empty string")
        settings["final_status"] = obj["final_status"]
    if "message" in obj:
        if obj["message"] is not None and not isinstance(obj["message"], str):
            raise BadRequest("message must be a string or null")
        settings["message"] = obj["message"]
    for name in ("never_finish", "no_download_url", "results_chunked"):
        if name in obj:
            if not isinstance(obj[name], bool):
                raise BadRequest(f"{name} must be a boolean")
            settings[name] = obj[name]
    return settings


def results_blocks(job_id: str, size: int):
    """The deterministic results file of a job, SINK_CHUNK bytes at a time."""
    seed = RESULTS_SEED + job_id.encode("utf-8") + b"\0"
    i = 0
    left = size
    while left > 0:
        n = min(SINK_CHUNK, left)
        yield hashlib.shake_256(seed + str(i).encode("ascii")).digest(SINK_CHUNK)[:n]
        left -= n
        i += 1


def s3_error(code: str, message: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message></Error>").encode("utf-8")


def json_model_id(model_id: str):
    return int(model_id) if model_id.isascii() and model_id.isdigit() else model_id


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
    if "cut_after" in item and not (is_int(item["cut_after"]) and item["cut_after"] >= 0):
        raise BadRequest(f"{where}.cut_after must be a non-negative integer")
    for flag in ("chunked", "drop", "accept"):
        if flag in item and not isinstance(item[flag], bool):
            raise BadRequest(f"{where}.{flag} must be a boolean")
    return item


class StandinState:
    def __init__(self):
        self.lock = threading.Lock()
        self.queues: dict[str, collections.deque] = {}
        self.calls: dict[str, list] = {}
        # Retraining: issued keys, jobs (creation order), the URL tokens,
        # per-(model, endpoint) scripts, per-model settings and calls.
        self.keys: dict[str, dict] = {}
        self.jobs: dict[str, dict] = {}
        self.upload_tokens: dict[str, str] = {}
        self.download_tokens: dict[str, str] = {}
        self.model_queues: dict[tuple[str, str], collections.deque] = {}
        self.retrain_settings: dict[str, dict] = {}
        self.model_calls: dict[str, list] = {}

    def pop_model_script(self, model_id, endpoint: str):
        """The next scripted response for (model, endpoint); call with the lock held."""
        if model_id is None:
            return None
        queue = self.model_queues.get((model_id, endpoint))
        return queue.popleft() if queue else None

    def record_model_call(self, model_id, endpoint: str, status_code: int,
                          had_api_key: bool, job_id=None) -> None:
        """Call with the lock held."""
        if model_id is None:
            return
        self.model_calls.setdefault(model_id, []).append({
            "endpoint": endpoint,
            "status_code": status_code,
            "had_api_key": had_api_key,
            "retrain_job_id": job_id,
        })


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
        # The base of the pre-signed URLs; main() sets it to the URL it prints.
        host, port = self.server_address[:2]
        host = f"[{host}]" if self.address_family == socket.AF_INET6 else host
        scheme = "https" if tls_context is not None else "http"
        self.base_url = f"{scheme}://{host}:{port}"

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
        if raw.startswith(("http://", "https://")):
            path = urlsplit(raw).path
        # The tokens of pre-signed URLs are credentials: log the route only.
        for prefix in (UPLOAD_PREFIX, DOWNLOAD_PREFIX):
            if path.startswith(prefix):
                return prefix + "*"
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
            elif method == "POST" and path == "/_standin/retrain":
                self._control_retrain()
            elif method == "POST" and path == "/_standin/revoke":
                self._control_revoke()
            elif method == "POST" and path == "/_standin/delete_job":
                self._control_delete_job()
            elif method == "GET" and path == "/_standin/jobs":
                self._read_body()
                self._control_jobs()
            elif method == "PUT" and path.startswith(UPLOAD_PREFIX):
                self._upload_sink(path[len(UPLOAD_PREFIX):])
            elif method == "GET" and path.startswith(DOWNLOAD_PREFIX):
                self._read_body()
                self._download_sink(path[len(DOWNLOAD_PREFIX):])
            elif path.startswith(RETRAIN_PREFIX) and self._retrain_route(method, path):
                pass
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
        api_key = "p1k_" + secrets.token_hex(16)
        end_date = format_end_date(now, self.server.validity_seconds,
                                   self.server.end_date_format)
        # Called with the state lock held: remember the key for the retraining API.
        keys = self.server.state.keys
        keys[api_key] = {
            "credential_type": credential_type,
            "model_id": model_id or None,
            "revoked": False,
        }
        if len(keys) > MAX_REMEMBERED_KEYS:
            del keys[next(iter(keys))]  # the oldest
        return 200, {"api_key": api_key, "end_date": end_date}

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

        if r.get("cut_after") is not None:
            # The whole body's Content-Length, then only its first bytes and
            # a closed connection: a transfer cut short.
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            for k, v in extra:
                self.send_header(k, v)
            cut = body[:r["cut_after"]]
            if r.get("chunked"):
                # Chunks up to the cut, and no last chunk.
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(cut), CHUNK_SIZE):
                    chunk = cut[i:i + CHUNK_SIZE]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            else:
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(cut)
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(status, body, content_type, extra, chunked=bool(r.get("chunked")))

    # ------------------------------------------------------------------ retraining API

    def _retrain_route(self, method: str, path: str) -> bool:
        """Serves a retraining API call; False when the path is not one."""
        rest = path[len(RETRAIN_PREFIX):]
        suffix = "/update_model"
        if method == "GET" and rest == "upload_url":
            endpoint, job_id = "upload_url", None
        elif method == "GET" and rest and "/" not in rest:
            endpoint, job_id = "status", unquote(rest)
        elif (method == "PUT" and rest.endswith(suffix) and rest.count("/") == 1
              and rest != suffix):
            endpoint, job_id = "update_model", unquote(rest[:-len(suffix)])
        else:
            return False
        self._read_body()
        self._retrain_call(endpoint, job_id)
        return True

    def _retrain_call(self, endpoint: str, job_id) -> None:
        api_key = (self.headers.get("x-api-key") or "").strip()
        if not api_key:
            self._send_json(403, {"message": "Forbidden"},
                            headers=[("x-amzn-ErrorType", "ForbiddenException")])
            return
        state = self.server.state
        scripted = None
        obj = None
        with state.lock:
            rec = state.keys.get(api_key)
            model_id = rec["model_id"] if rec is not None else None
            if rec is None:
                status, obj = self._vendor_error(MSG_INVALID_API_KEY)
            elif rec["revoked"]:
                status, obj = self._vendor_error(MSG_INACTIVE)
            elif rec["credential_type"] != "retrain" or model_id is None:
                status, obj = self._vendor_error(MSG_NOT_FOUND)
            else:
                scripted = state.pop_model_script(model_id, endpoint)
                if scripted is not None:
                    status = 0 if scripted.get("drop") else scripted.get("status", 200)
                else:
                    decide = getattr(self, "_decide_" + endpoint)
                    status, obj = decide(state, model_id, job_id)
            if job_id is None and status == 200 and isinstance(obj, dict):
                job_id = obj.get("retrain_job_id")
            state.record_model_call(model_id, endpoint, status, True, job_id)
        if scripted is not None:
            self._serve_scripted(scripted)
        else:
            self._send_json(status, obj)

    # The _decide_* methods run with the state lock held and touch no socket.

    def _decide_upload_url(self, state: StandinState, model_id: str, _job_id):
        if model_id.startswith("deleted"):
            return self._vendor_error(MSG_MODEL_DELETED)
        if model_id.startswith("noconfig"):
            return 500, {"code": INTERNAL_ERROR_CODE, "error": INTERNAL_ERROR_NAME,
                         "message": MSG_NO_CONFIGURATION}
        filename = self._query().get("filename", [""])[0]
        if not filename:
            return self._vendor_error(MSG_FILENAME_REQUIRED)
        job_id = "rj-" + secrets.token_hex(8)
        token = secrets.token_hex(16)
        signature = secrets.token_hex(32)
        state.jobs[job_id] = {
            "retrain_job_id": job_id,
            "model_id": model_id,
            "filename": filename,
            "settings": dict(state.retrain_settings.get(model_id, DEFAULT_RETRAIN_SETTINGS)),
            "status": "waiting_upload",
            "finished": False,
            "upload": None,
            "upload_token": token,
            "upload_sig": signature,
            "download_token": None,
            "download_sig": None,
            "status_calls": 0,
            "polls_after_upload": 0,
            "switched": False,
            "switch_calls": 0,
            "results_sha256": None,
            "results_size": None,
            "upload_puts": 0,
            "download_gets": 0,
            "deleted": False,
        }
        state.upload_tokens[token] = job_id
        return 200, {
            "retrain_job_id": job_id,
            "upload_url": f"{self.server.base_url}{UPLOAD_PREFIX}{token}"
                          f"?X-Amz-Signature={signature}",
        }

    def _job_for(self, state: StandinState, model_id: str, job_id):
        """(job, None), or (None, the error answer)."""
        job = state.jobs.get(job_id)
        if job is None or job["model_id"] != model_id:
            return None, self._vendor_error(MSG_JOB_NOT_FOUND)
        if job["deleted"]:
            return None, self._vendor_error(MSG_JOB_DELETED)
        return job, None

    def _decide_status(self, state: StandinState, model_id: str, job_id):
        job, error = self._job_for(state, model_id, job_id)
        if error is not None:
            return error
        settings = job["settings"]
        job["status_calls"] += 1
        if job["status"] != "waiting_upload" and not job["finished"]:
            job["polls_after_upload"] += 1
            if (not settings["never_finish"]
                    and job["polls_after_upload"] > settings["running_polls"]):
                job["status"] = settings["final_status"]
                job["finished"] = True
        body = {"status": job["status"], "model_id": json_model_id(model_id)}
        if job["finished"] and settings["message"] is not None:
            body["message"] = settings["message"]
        if (job["finished"] and job["status"] == JOB_FINISHED
                and not settings["no_download_url"]):
            if job["download_token"] is None:
                job["download_token"] = secrets.token_hex(16)
                job["download_sig"] = secrets.token_hex(32)
                state.download_tokens[job["download_token"]] = job_id
            body["download_url"] = (f"{self.server.base_url}{DOWNLOAD_PREFIX}"
                                    f"{job['download_token']}"
                                    f"?X-Amz-Signature={job['download_sig']}")
        body["metadata"] = {"retrain_job_id": job_id}
        return 200, body

    def _decide_update_model(self, state: StandinState, model_id: str, job_id):
        job, error = self._job_for(state, model_id, job_id)
        if error is not None:
            return error
        if model_id.startswith("noclassifier"):
            return self._vendor_error(MSG_NO_CLASSIFIER)
        if not (job["finished"] and job["status"] == JOB_FINISHED):
            return self._vendor_error(MSG_NOT_FINISHED)
        job["switched"] = True
        job["switch_calls"] += 1
        return 200, {"metadata": {"retrain_job_id": job_id}}

    # ------------------------------------------------------------------ pre-signed URLs

    def _signature_ok(self, expected) -> bool:
        given = self._query().get("X-Amz-Signature", [""])[0]
        return expected is not None and hmac.compare_digest(
            given.encode("utf-8", "replace"), expected.encode("ascii"))

    def _content_length(self):
        """The request's Content-Length as an int, or None (absent or bad)."""
        cl = self.headers.get("Content-Length")
        if cl is None:
            return None
        try:
            n = int(cl.strip())
        except ValueError:
            return None
        return n if n >= 0 else None

    def _sink_reads(self, length):
        """Yields the request body in pieces of at most SINK_CHUNK bytes,
        then True when it was read whole, or False when it ended early (the
        connection is then closed). `length` None means chunked when the
        request says so, else no body to read."""
        try:
            self.connection.settimeout(SINK_IDLE_TIMEOUT)
        except OSError:
            pass
        try:
            if length is None and "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                while True:
                    line = self.rfile.readline(1024)
                    try:
                        size = int(line.split(b";", 1)[0].strip(), 16)
                    except ValueError:
                        yield False
                        return
                    if size == 0:
                        while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                            pass
                        yield True
                        return
                    while size > 0:
                        piece = self.rfile.read(min(SINK_CHUNK, size))
                        if not piece:
                            yield False
                            return
                        size -= len(piece)
                        yield piece
                    self.rfile.readline(16)
            else:
                left = length or 0
                while left > 0:
                    piece = self.rfile.read(min(SINK_CHUNK, left))
                    if not piece:
                        yield False
                        return
                    left -= len(piece)
                    yield piece
                yield True
        except (OSError, ValueError):
            yield False
        finally:
            try:
                self.connection.settimeout(None)
            except OSError:
                pass

    def _discard_body(self, length) -> bool:
        """Reads and drops the request body; False (connection closed) when
        it ended early or its length is unknown."""
        te = self.headers.get("Transfer-Encoding")
        if length is None and te is None and self.headers.get("Content-Length") is not None:
            self.close_connection = True  # a bad Content-Length: no way to resync
            return False
        for piece in self._sink_reads(length):
            if piece is False:
                self.close_connection = True
                return False
            if piece is True:
                return True
        return True

    def _sink_error(self, status: int, code: str, message: str, length,
                    model_id, endpoint: str, had_key: bool, job_id) -> None:
        if endpoint == "upload":
            self._discard_body(length)
        state = self.server.state
        with state.lock:
            state.record_model_call(model_id, endpoint, status, had_key, job_id)
        self._send(status, s3_error(code, message), "application/xml")

    def _sink_job(self, tokens: dict, token: str, counter: str):
        """The job a pre-signed URL's token belongs to, counting the call
        (`counter`): (job_id, job, a copy of the job taken under the lock),
        the last two None for an unknown token."""
        state = self.server.state
        with state.lock:
            job_id = tokens.get(token)
            job = state.jobs.get(job_id) if job_id is not None else None
            if job is None:
                return job_id, None, None
            job[counter] += 1
            return job_id, job, dict(job, settings=dict(job["settings"]))

    def _upload_sink(self, token: str) -> None:
        had_key = self.headers.get("x-api-key") is not None
        state = self.server.state
        job_id, job, seen = self._sink_job(state.upload_tokens, token, "upload_puts")
        model_id = seen["model_id"] if seen else None
        length = self._content_length()
        has_te = self.headers.get("Transfer-Encoding") is not None
        err = (model_id, "upload", had_key, job_id)
        if had_key:
            self._sink_error(400, "InvalidRequest", MSG_KEY_TO_PRESIGNED, length, *err)
            return
        if has_te or self.headers.get("Content-Length") is None:
            self._sink_error(411, "MissingContentLength",
                             "You must provide the Content-Length HTTP header.", length, *err)
            return
        if length is None:
            self._sink_error(400, "InvalidArgument", "Invalid Content-Length.", length, *err)
            return
        if job is None:
            self._sink_error(403, "AccessDenied", "Access Denied", length, *err)
            return
        if not self._signature_ok(seen["upload_sig"]):
            self._sink_error(403, "SignatureDoesNotMatch", MSG_BAD_SIGNATURE, length, *err)
            return
        if seen["deleted"]:
            self._sink_error(403, "AccessDenied", "Access Denied", length, *err)
            return

        with state.lock:
            scripted = state.pop_model_script(model_id, "upload")
        if scripted is not None and scripted.get("accept"):
            time.sleep((scripted.get("delay_ms") or 0) / 1000.0)
            scripted = None
        if scripted is not None:
            if scripted.get("drop"):
                delay_ms = scripted.get("delay_ms") or 0
                if delay_ms:
                    time.sleep(delay_ms / 1000.0)
                for piece in self._sink_reads(min(length, SINK_CHUNK)):
                    pass
                with state.lock:
                    state.record_model_call(model_id, "upload", 0, had_key, job_id)
                self.close_connection = True
                self._log_status = 0
                self.log_message("%s", "drop")
                return
            self._discard_body(length)
            with state.lock:
                state.record_model_call(model_id, "upload", scripted.get("status", 200),
                                        had_key, job_id)
            self._serve_scripted(scripted)
            return

        sha = hashlib.sha256()
        md5 = hashlib.md5(usedforsecurity=False)
        count = 0
        whole = False
        for piece in self._sink_reads(length):
            if piece is True or piece is False:
                whole = piece
                break
            sha.update(piece)
            md5.update(piece)
            count += len(piece)
        if not whole:
            # The client went away: nothing is recorded on the job.
            self.close_connection = True
            with state.lock:
                state.record_model_call(model_id, "upload", 0, had_key, job_id)
            return
        with state.lock:
            job["upload"] = {
                "bytes": count,
                "sha256": sha.hexdigest(),
                "content_length_header": length,
                "content_type": self.headers.get("Content-Type"),
                "x_api_key_seen": False,
            }
            if job["status"] == "waiting_upload":
                job["status"] = "running"
            state.record_model_call(model_id, "upload", 200, had_key, job_id)
        self._send(200, b"", None, [("ETag", f'"{md5.hexdigest()}"')])

    def _download_sink(self, token: str) -> None:
        had_key = self.headers.get("x-api-key") is not None
        state = self.server.state
        job_id, job, seen = self._sink_job(state.download_tokens, token, "download_gets")
        model_id = seen["model_id"] if seen else None
        err = (None, model_id, "download", had_key, job_id)
        if had_key:
            self._sink_error(400, "InvalidRequest", MSG_KEY_TO_PRESIGNED, *err)
            return
        if job is None:
            self._sink_error(403, "AccessDenied", "Access Denied", *err)
            return
        if not self._signature_ok(seen["download_sig"]):
            self._sink_error(403, "SignatureDoesNotMatch", MSG_BAD_SIGNATURE, *err)
            return
        size = seen["settings"]["results_size"]
        chunked = seen["settings"]["results_chunked"]
        if seen["deleted"]:
            self._sink_error(404, "NoSuchKey", "The specified key does not exist.", *err)
            return
        with state.lock:
            scripted = state.pop_model_script(model_id, "download")
            if scripted is not None:
                status = 0 if scripted.get("drop") else scripted.get("status", 200)
            else:
                status = 200
            state.record_model_call(model_id, "download", status, had_key, job_id)
        if scripted is not None:
            self._serve_scripted(scripted)
            return

        http10 = self.request_version == "HTTP/1.0"
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        if chunked and not http10:
            self.send_header("Transfer-Encoding", "chunked")
        elif chunked:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(size))
        sha = hashlib.sha256()
        hashed = 0

        def record_when_whole():
            # Recorded just before the last bytes go out, so that a client
            # that has read the whole body finds it recorded.
            if hashed == size:
                with state.lock:
                    job["results_sha256"] = sha.hexdigest()
                    job["results_size"] = size

        try:
            if size == 0:
                record_when_whole()
            self.end_headers()
            for block in results_blocks(job_id, size):
                sha.update(block)
                hashed += len(block)
                record_when_whole()
                if chunked and not http10:
                    self.wfile.write(b"%x\r\n" % len(block))
                    self.wfile.write(block)
                    self.wfile.write(b"\r\n")
                else:
                    self.wfile.write(block)
            if chunked and not http10:
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    # ------------------------------------------------------------------ control

    def _control_script(self) -> None:
        obj = self._control_json()
        if "model_id" in obj and "secret_key" in obj:
            raise BadRequest("give either secret_key or model_id, not both")
        if "model_id" in obj:
            model_id = model_id_field(obj)
            endpoint = obj.get("endpoint")
            if endpoint not in RETRAIN_ENDPOINTS:
                raise BadRequest("endpoint must be one of " + ", ".join(RETRAIN_ENDPOINTS))
            queue_key = (model_id, endpoint)
        else:
            queue_key = self._secret_key_field(obj)
        responses = obj.get("responses")
        if not isinstance(responses, list):
            raise BadRequest("responses must be an array")
        items = [validate_script_item(r, i) for i, r in enumerate(responses)]
        state = self.server.state
        queues = state.model_queues if isinstance(queue_key, tuple) else state.queues
        with state.lock:
            queues.setdefault(queue_key, collections.deque()).extend(items)
            queued = len(queues[queue_key])
        self._send_json(200, {"queued": queued})

    def _control_reset(self) -> None:
        obj = self._control_json()
        if "secret_key" not in obj and "model_id" not in obj:
            raise BadRequest("secret_key or model_id is required")
        key = self._secret_key_field(obj) if "secret_key" in obj else None
        model_id = model_id_field(obj) if "model_id" in obj else None
        state = self.server.state
        with state.lock:
            if key is not None:
                state.queues.pop(key, None)
                state.calls.pop(key, None)
            if model_id is not None:
                for job_id in [j for j, job in state.jobs.items()
                               if job["model_id"] == model_id]:
                    job = state.jobs.pop(job_id)
                    state.upload_tokens.pop(job["upload_token"], None)
                    if job["download_token"] is not None:
                        state.download_tokens.pop(job["download_token"], None)
                for endpoint in RETRAIN_ENDPOINTS:
                    state.model_queues.pop((model_id, endpoint), None)
                state.retrain_settings.pop(model_id, None)
                state.model_calls.pop(model_id, None)
        self._send_json(200, {"reset": True})

    def _control_calls(self) -> None:
        query = self._query()
        key = query.get("secret_key", [""])[0]
        model_id = query.get("model_id", [""])[0]
        if not key and not model_id:
            raise BadRequest("secret_key or model_id query parameter is required")
        state = self.server.state
        with state.lock:
            if key:
                calls = [dict(c) for c in state.calls.get(key, [])]
            else:
                calls = [dict(c) for c in state.model_calls.get(model_id, [])]
        self._send_json(200, {"count": len(calls), "calls": calls})

    def _control_retrain(self) -> None:
        obj = self._control_json()
        model_id = model_id_field(obj)
        settings = validate_retrain_settings(obj)
        state = self.server.state
        with state.lock:
            state.retrain_settings[model_id] = settings
        self._send_json(200, {"model_id": model_id, "settings": settings})

    def _control_revoke(self) -> None:
        obj = self._control_json()
        model_id = model_id_field(obj)
        state = self.server.state
        revoked = 0
        with state.lock:
            for rec in state.keys.values():
                if (rec["credential_type"] == "retrain" and rec["model_id"] == model_id
                        and not rec["revoked"]):
                    rec["revoked"] = True
                    revoked += 1
        self._send_json(200, {"revoked": revoked})

    def _control_delete_job(self) -> None:
        obj = self._control_json()
        job_id = obj.get("retrain_job_id")
        if not isinstance(job_id, str) or not job_id:
            raise BadRequest("retrain_job_id must be a non-empty string")
        state = self.server.state
        with state.lock:
            job = state.jobs.get(job_id)
            if job is not None:
                job["deleted"] = True
        if job is None:
            raise BadRequest("unknown retrain_job_id")
        self._send_json(200, {"deleted": True})

    def _control_jobs(self) -> None:
        model_id = self._query().get("model_id", [""])[0]
        if not model_id:
            raise BadRequest("model_id query parameter is required")
        state = self.server.state
        with state.lock:
            jobs = [{
                "retrain_job_id": job["retrain_job_id"],
                "model_id": job["model_id"],
                "filename": job["filename"],
                "upload": dict(job["upload"]) if job["upload"] is not None else None,
                "status_calls": job["status_calls"],
                "status": job["status"],
                "switched": job["switched"],
                "switch_calls": job["switch_calls"],
                "results_sha256": job["results_sha256"],
                "results_size": job["results_size"],
                "upload_puts": job["upload_puts"],
                "download_gets": job["download_gets"],
                "deleted": job["deleted"],
                "settings": dict(job["settings"]),
            } for job in state.jobs.values() if job["model_id"] == model_id]
        self._send_json(200, jobs)


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
        description="Local stand-in for Prediction One's Get API Key endpoint "
                    "and retraining API.")
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
    server.base_url = f"{scheme}://{url_host}:{port}"
    return loopback_serve.serve(server, "vendor stand-in", server.base_url, args.port_file)


if __name__ == "__main__":
    sys.exit(main())
