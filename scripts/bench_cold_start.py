#!/usr/bin/env python3
"""The cold-start benchmark's harness (run it through scripts/bench.sh).

Four contenders under the same minimal Lambda Runtime API on loopback,
against the same stand-ins (moto, the vendor stand-in), in one run:

  function  target/release/p1-key-broker
  floor     target/floor/release/examples/floor (examples/floor.rs: only the calls,
            built with aws-lc's defaults by scripts/bench.sh)
  python    bench/python/handler.py, boto3 + requests under awslambdaric
  runner    target/release/p1-retrain, the retrain runner (cold starts only)

Cold starts: each round spawns every contender once per transport (plain
HTTP; TLS under a local test CA) and trust-store layout (the host's; bundle
only), hands it one issuing request that creates its target secret (the
runner: one `start` of a new --runner-object-kib CSV object, see below),
and records

  init_ms          spawn -> the first GET /runtime/invocation/next
  first_ms         that event written -> its response received (a train key:
                   target read, secret key read, vendor call, CreateSecret)
  cold_ms          init_ms + first_ms, per round
  cpu_init_ms      the process's CPU (all threads) when it first asks /next
  cpu_first_ms     the process's CPU by the end of the first invocation
                   (when it asks /next again): the sum over its threads'
                   /proc/<pid>/task/*/schedstat (the JSON also has wait4()'s
                   rusage after SIGKILL, which counts ended threads too)
  rss_first_mib    VmHWM at that point

The runner's first invocation is {"action": "start", "bucket", "key"} for
an object put into moto (path-style) before the spawn, under a new key and
a new model each time (a `start` of the same object version would answer
the recorded job without an upload): it claims the object's start record
(an S3 conditional write under P1_RETRAIN_RESULTS_PREFIX), reads the secret
key from its own secret, issues the model's retrain key and creates its
secret under P1_RETRAIN_SECRET_PREFIX, gets an upload URL from the vendor
stand-in, streams the object into it and writes the start record.

Warm requests: one long-lived instance per contender and transport (host
layout; not the runner, whose requests are not the broker's), the
contenders interleaved request by request; each does
--warmup + --warm `fresh` requests ({"credential_type": "train"}) and as
many issuing ones ({"credential_type": "train", "force": true}):

  wall_ms          event written -> response received (p50, p99)
  cpu_ms           the process's own CPU for that invocation: the sum over
                   /proc/<pid>/task/*/schedstat from one /next to the next
  rss_warm_mib     VmHWM after all of them

Transfers (--transfers MiB, default 1024; --no-transfers; only with the
runner among the contenders): after the rest, scripts/bench_transfer.sh (bench/transfer.py) moves MiB each way
through the same runner binary, with stand-ins of its own; its rows are
printed under the table and kept in the JSON ("transfers").

Medians unless said otherwise. Prints one table and writes the same figures
(and every sample) as JSON. A benchmark, not a test: it asserts only that
each answer has the expected status. Starts its own stand-ins on loopback
(moto from .venv, the vendor stand-in; for TLS under a test CA made here)
and stops them; see bench/standins.py for how they differ from the tests'.
"""
import argparse
import datetime
import http.server
import json
import math
import os
import platform
import queue
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTENDERS = ("function", "floor", "python", "runner")
LABELS = {"function": "p1-key-broker", "floor": "floor", "python": "Python", "runner": "p1-retrain"}
# (column, numerator, denominator), shown when both are measured.
RATIOS = (("function/floor", "function", "floor"), ("Python/function", "python", "function"),
          ("runner/function", "runner", "function"))
# What openssl-probe (rustls-native-certs) looks for on Linux.
SYSTEM_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                  "/etc/ssl/ca-bundle.pem", "/etc/pki/tls/cacert.pem",
                  "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", "/etc/ssl/cert.pem")
SYSTEM_DIRS = ("/etc/ssl/certs", "/etc/pki/tls/certs", "/etc/security/certificates")
LAYOUTS = {
    "host": "the host's trust store (bundle + certificate directory)",
    "bundle": "bundle only (SSL_CERT_DIR empty, as on Amazon Linux 2023)",
}
TRANSPORTS = {"http": "plain HTTP", "tls": "TLS (test CA)"}
REGION = "us-east-1"


class Failure(Exception):
    pass


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=15, help="cold starts per contender and set-up (15)")
    p.add_argument("--warm", type=int, default=300, help="measured warm requests of each kind (300)")
    p.add_argument("--warmup", type=int, default=5, help="warm requests of each kind not counted (5)")
    p.add_argument("--transports", default="http,tls", help="http,tls")
    p.add_argument("--layouts", default="host,bundle", help="trust-store layouts for cold starts: host,bundle")
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument("--function", default="target/release/p1-key-broker")
    p.add_argument("--floor", default="target/floor/release/examples/floor")
    p.add_argument("--python", default=".venv-bench/bin/python", help="the baseline's interpreter")
    p.add_argument("--runner", default="target/release/p1-retrain")
    p.add_argument("--runner-object-kib", type=int, default=64,
                   help="size of the CSV object each runner cold start uploads (64)")
    p.add_argument("--transfers", type=int, default=1024, metavar="MiB",
                   help="after the rest, scripts/bench_transfer.sh MiB: the runner's transfers of MiB "
                        "each way (1024; 0: none; only with the runner among the contenders)")
    p.add_argument("--no-transfers", dest="transfers", action="store_const", const=0,
                   help="no transfers (--transfers 0)")
    p.add_argument("--arm64-zip", action="append", default=[], metavar="NAME=PATH",
                   help="an arm64 bootstrap.zip to report (function=..., floor=...)")
    p.add_argument("--arm64-note", default="", help="why there is no arm64 zip, for the table")
    p.add_argument("--stock-stand-ins", action="store_true",
                   help="moto_server and scripts/vendor_standin.py as the tests run them: moto then "
                        "closes every connection (see bench/standins.py)")
    p.add_argument("--out", default="target/bench/results.json")
    a = p.parse_args()
    a.transports = [t for t in a.transports.split(",") if t]
    a.layouts = [x for x in a.layouts.split(",") if x]
    a.contenders = [c for c in a.contenders.split(",") if c]
    for t in a.transports:
        if t not in TRANSPORTS:
            p.error(f"unknown transport {t!r}")
    for x in a.layouts:
        if x not in LAYOUTS:
            p.error(f"unknown layout {x!r}")
    for c in a.contenders:
        if c not in CONTENDERS:
            p.error(f"unknown contender {c!r}")
    if a.rounds < 1 or a.warm < 0 or a.warmup < 0:
        p.error("--rounds must be at least 1, --warm and --warmup not negative")
    if a.runner_object_kib < 1 or a.transfers < 0:
        p.error("--runner-object-kib must be at least 1, --transfers not negative")
    return a


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------- Runtime API

class RuntimeAPI:
    """A minimal Lambda Runtime API for one process, on loopback.

    GET .../invocation/next parks until the harness hands it an event; the
    times of every /next, every event written and every answer are kept.
    Each event's deadline is `deadline_ms` after it is handed out.
    """

    def __init__(self, deadline_ms=60000):
        self.cond = threading.Condition()
        self.nexts = []  # monotonic time of each GET /next
        self.sent = []  # monotonic time each event was written
        self.done = []  # (monotonic time, kind, body) of each answer
        self.events = queue.Queue()
        self.deadline_ms = deadline_ms
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *a):
                pass

            def _body(self):
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self):
                if not self.path.endswith("/runtime/invocation/next"):
                    self.wfile.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    return
                with api.cond:
                    api.nexts.append(time.monotonic())
                    api.cond.notify_all()
                event = api.events.get()
                if event is None:  # the harness is done with this process
                    self.close_connection = True
                    return
                request_id, body = event
                deadline = int(time.time() * 1000) + api.deadline_ms
                head = (
                    "HTTP/1.1 200 OK\r\n"
                    f"Lambda-Runtime-Aws-Request-Id: {request_id}\r\n"
                    f"Lambda-Runtime-Deadline-Ms: {deadline}\r\n"
                    "Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:bench\r\n"
                    f"Lambda-Runtime-Trace-Id: Root=1-00000000-{request_id[:24]};Sampled=0\r\n"
                    "Content-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
                with api.cond:
                    api.sent.append(time.monotonic())
                self.wfile.write(head + body)  # one write: no Nagle stall

            def do_POST(self):
                body = self._body()
                t = time.monotonic()
                path = self.path
                if "/invocation/" in path and path.endswith("/response"):
                    kind = "response"
                elif "/invocation/" in path and path.endswith("/error"):
                    kind = "error"
                elif path.endswith("/init/error"):
                    kind = "init_error"
                else:
                    self.wfile.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    return
                ok = b'{"status":"OK"}'
                self.wfile.write(b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(ok), ok))
                with api.cond:
                    api.done.append((t, kind, body))
                    api.cond.notify_all()

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request, client_address):
                pass  # a killed process drops its parked /next: expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self):
        for _ in range(4):
            self.events.put(None)
        self.server.shutdown()
        self.server.server_close()


class Instance:
    """One process of a contender under its own Runtime API."""

    def __init__(self, name, cmd, env, cwd, log_path, deadline_ms=60000):
        self.name = name
        self.api = RuntimeAPI(deadline_ms)
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.rusage_cpu_ms = None
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, env=dict(env, AWS_LAMBDA_RUNTIME_API=self.api.address),
                                     cwd=cwd, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def _fail(self, what):
        self.log.flush()
        try:
            tail = open(self.log_path, errors="replace").read()[-2000:]
        except OSError:
            tail = ""
        return Failure(f"{self.name}: {what}\n--- its output ({self.log_path}), last lines:\n{tail}")

    def wait(self, predicate, what, timeout=60.0):
        deadline = time.monotonic() + timeout
        with self.api.cond:
            while not predicate():
                if any(kind == "init_error" for _, kind, _ in self.api.done):
                    raise self._fail(f"reported an init error {what}")
                if self.proc.poll() is not None:
                    raise self._fail(f"exited with {self.proc.returncode} {what}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._fail(f"timed out {what}")
                self.api.cond.wait(min(left, 0.05))

    def wait_parked(self, n):
        self.wait(lambda: len(self.api.nexts) >= n, f"waiting for /next #{n}")

    def invoke(self, payload):
        """Hands one event to the parked process; returns (wall ms, own CPU
        ms from this /next to the next, answer)."""
        k, n = len(self.api.done), len(self.api.nexts)
        cpu0 = self.cpu_ns()
        self.api.events.put((str(uuid.uuid4()), json.dumps(payload).encode()))
        self.wait(lambda: len(self.api.done) > k, f"waiting for the answer to {payload}")
        self.wait(lambda: len(self.api.nexts) > n, "waiting for /next after an answer")
        cpu1 = self.cpu_ns()
        t_done, kind, body = self.api.done[k]
        if kind != "response":
            raise self._fail(f"answered {payload} with an error: {body[:500]!r}")
        return (t_done - self.api.sent[-1]) * 1000, (cpu1 - cpu0) / 1e6, json.loads(body)

    def cpu_ns(self):
        """CPU time of the process's live threads, ns (schedstat's first field)."""
        total = 0
        task_dir = f"/proc/{self.proc.pid}/task"
        for tid in os.listdir(task_dir):
            try:
                with open(f"{task_dir}/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                pass  # a thread that ended meanwhile
        return total

    def hwm_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024

    def threads(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/task"))

    def stop(self):
        """SIGKILL (the process is parked on /next), reap, keep its rusage."""
        if self.proc.returncode is None:
            try:
                self.proc.kill()
                _, status, ru = os.wait4(self.proc.pid, 0)
                self.proc.returncode = -signal.SIGKILL if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
                self.rusage_cpu_ms = (ru.ru_utime + ru.ru_stime) * 1000
            except ChildProcessError:
                pass
        self.api.close()
        self.log.close()


# --------------------------------------------------------------- TLS stand-ins

def make_tls(directory):
    """A test CA, a server certificate for 127.0.0.1 and localhost, and the
    bundle the contenders trust (scripts/test_ca.py)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import test_ca
    return test_ca.make_tls(directory, system_bundle())


def system_bundle():
    return next((p for p in SYSTEM_BUNDLES if os.path.isfile(p)), None)


def wait_url(url, context=None, what="", timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1, context=context)
            return
        except Exception as e:  # not up yet
            if time.monotonic() > deadline:
                raise Failure(f"{what} did not come up at {url}: {e}")
            time.sleep(0.1)


class StandIns:
    """moto and the vendor stand-in for one transport, started and stopped
    here, on loopback. By default through bench/standins.py (HTTP
    keep-alive for moto, TCP_NODELAY for both, as the real services behave
    on the wire); with --stock-stand-ins as the tests run them."""

    def __init__(self, transport, tls, logs, stock):
        self.procs = []
        scheme = "https" if transport == "tls" else "http"
        tls_args = ["-c", tls["cert"], "-k", tls["key"]] if transport == "tls" else []
        moto_port = free_port()
        moto_args = ["-H", "127.0.0.1", "-p", str(moto_port), *tls_args]
        moto_cmd = ([os.path.join(ROOT, ".venv/bin/moto_server")] if stock else
                    [sys.executable, os.path.join(ROOT, "bench/standins.py"), "moto"])
        self._start(moto_cmd + moto_args, os.path.join(logs, f"moto-{transport}.log"))
        port_file = os.path.join(logs, f"standin-{transport}.port")
        if os.path.exists(port_file):
            os.remove(port_file)
        vendor_args = ["--port", "0", "--port-file", port_file]
        if transport == "tls":
            vendor_args += ["--tls-cert", tls["cert"], "--tls-key", tls["key"]]
        vendor_cmd = ([sys.executable, os.path.join(ROOT, "scripts/vendor_standin.py")] if stock else
                      [sys.executable, os.path.join(ROOT, "bench/standins.py"), "vendor"])
        self._start(vendor_cmd + vendor_args, os.path.join(logs, f"standin-{transport}.log"))
        deadline = time.monotonic() + 20
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise Failure(f"the vendor stand-in ({transport}) did not start: see {logs}")
            time.sleep(0.05)
        self.aws = f"{scheme}://127.0.0.1:{moto_port}"
        self.vendor = f"{scheme}://127.0.0.1:{open(port_file).read().strip()}"
        context = ssl.create_default_context(cafile=tls["ca"]) if transport == "tls" else None
        wait_url(f"{self.aws}/moto-api/", context, f"moto ({transport})")
        wait_url(f"{self.vendor}/_standin/health", context, f"the vendor stand-in ({transport})")

    def _start(self, cmd, log_path):
        with open(log_path, "wb") as out:
            self.procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                               stderr=subprocess.STDOUT, start_new_session=True))

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


# --------------------------------------------------------------- the run

class Bench:
    def __init__(self, args):
        self.args = args
        self.run = uuid.uuid4().hex[:8]
        self.out_dir = os.path.dirname(os.path.abspath(args.out))
        self.logs = os.path.join(self.out_dir, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.empty_dir = os.path.join(self.out_dir, "empty-cert-dir")
        os.makedirs(self.empty_dir, exist_ok=True)
        self.endpoints = {}
        self.tls = None
        self.secret_key_id = f"bench-{self.run}/secret-key"
        # The runner's own secret key (a deployment's runner shares the
        # broker's; here its own, so that the stand-in's calls of each key
        # are one contender's) and its bucket, per transport.
        self.runner_secret_key_id = f"bench-{self.run}/runner-secret-key"
        self.runner_bucket = {}
        self.s3 = {}
        self.commands = {
            "function": ([os.path.abspath(args.function)], ROOT),
            "floor": ([os.path.abspath(args.floor)], ROOT),
            "python": ([os.path.abspath(args.python), "-m", "awslambdaric", "handler.handler"],
                       os.path.join(ROOT, "bench/python")),
            "runner": ([os.path.abspath(args.runner)], ROOT),
        }

    def store_secret_key(self, transport):
        import boto3
        from botocore.config import Config
        client = dict(endpoint_url=self.endpoints[transport]["aws"], region_name=REGION,
                      aws_access_key_id="testing", aws_secret_access_key="testing",
                      verify=self.tls["ca"] if transport == "tls" else None)
        sm = boto3.client("secretsmanager", **client)
        sm.create_secret(Name=self.secret_key_id, SecretString=f"sk-bench-{self.run}")
        if "runner" in self.args.contenders:
            sm.create_secret(Name=self.runner_secret_key_id, SecretString=f"sk-bench-{self.run}-runner")
            # Path-style, as the runner addresses S3 on loopback.
            s3 = self.s3[transport] = boto3.client("s3", config=Config(s3={"addressing_style": "path"}),
                                                   **client)
            bucket = self.runner_bucket[transport] = f"p1-bench-{self.run}-{transport}"
            s3.create_bucket(Bucket=bucket)

    def runner_object(self, transport, layout, round_):
        """A new CSV object for one runner cold start: (bucket, key, bytes).
        Its own model too, so that each start issues a key and creates its
        secret, as the broker's first invocation does."""
        size = self.args.runner_object_kib * 1024
        model = f"bench-{self.run}-{transport}-{layout}-{round_}"
        key = f"retrain/{model}/cold-{round_}.csv"
        head = b"id,feature_a,feature_b,label\n"
        rows, i = [head], 0
        while sum(map(len, rows)) < size:
            rows.append(b"%d,%d.%03d,%s,%d\n" % (i, (i * 7919) % 1000, i % 997, b"abc"[i % 3:i % 3 + 1], i % 2))
            i += 1
        body = b"".join(rows)[:size - 1] + b"\n"
        self.s3[transport].put_object(Bucket=self.runner_bucket[transport], Key=key, Body=body,
                                      ContentType="text/csv")
        return self.runner_bucket[transport], key, len(body)

    def env(self, contender, transport, layout, target):
        e = {
            # Lambda's environment, not the shell's: no RUST_LOG,
            # RUST_BACKTRACE or HOME leaking in.
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "TZ": ":UTC",
            "LAMBDA_TASK_ROOT": self.commands[contender][1],
            "AWS_LAMBDA_FUNCTION_NAME": f"bench-{contender}",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL": self.endpoints[transport]["aws"],
            "P1_API_BASE_URL": self.endpoints[transport]["vendor"],
            "P1_SECRET_KEY_SECRET_ID": self.secret_key_id,
            "P1_TRAIN_SECRET_ID": target,
        }
        if contender == "runner":
            e["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = "512"  # RetrainRunnerMemorySize's default
            e["P1_SECRET_KEY_SECRET_ID"] = self.runner_secret_key_id
            e["P1_RETRAIN_SECRET_PREFIX"] = f"bench-{self.run}/{transport}-{layout}/runner/retrain/"
            e["P1_RETRAIN_DATA_PREFIX"] = "retrain/"
            e["P1_RETRAIN_RESULTS_PREFIX"] = "retrain-results/"
            del e["P1_TRAIN_SECRET_ID"]
        if contender == "python":
            # /var/task is read-only on Lambda: the handler is compiled at
            # every cold start (the libraries' .pyc files exist).
            e["PYTHONDONTWRITEBYTECODE"] = "1"
        if transport == "tls":
            # The CA on top of the system's roots. rustls-native-certs reads
            # only SSL_CERT_FILE/SSL_CERT_DIR once either is set; botocore
            # and requests read their own bundle variables.
            e["SSL_CERT_FILE"] = self.tls["bundle"]
            if layout == "host":
                dirs = [d for d in SYSTEM_DIRS if os.path.isdir(d)]
                e["SSL_CERT_DIR"] = ":".join(dirs) if dirs else self.empty_dir
            if contender == "python":
                e["AWS_CA_BUNDLE"] = e["REQUESTS_CA_BUNDLE"] = self.tls["bundle"]
        if layout == "bundle":
            e["SSL_CERT_DIR"] = self.empty_dir
            if transport == "http":
                e["SSL_CERT_FILE"] = system_bundle() or os.path.join(self.empty_dir, "none.pem")
        return e

    def spawn(self, contender, transport, layout, target):
        cmd, cwd = self.commands[contender]
        return Instance(contender, cmd, self.env(contender, transport, layout, target), cwd,
                        os.path.join(self.logs, f"{contender}-{transport}-{layout}.log"))

    def cold_start(self, contender, transport, layout, round_):
        target = f"bench-{self.run}/{transport}-{layout}/{contender}/cold-{round_}"
        if contender == "runner":
            bucket, key, size = self.runner_object(transport, layout, round_)
            payload = {"action": "start", "bucket": bucket, "key": key}

            def answered(a):
                return a.get("action") == "start" and a.get("bytes") == size and bool(a.get("retrain_job_id"))
        else:
            payload = {"credential_type": "train"}

            def answered(a):
                return a.get("status") == "issued"
        inst = self.spawn(contender, transport, layout, target)
        try:
            inst.wait_parked(1)
            init_ms = (inst.api.nexts[0] - inst.t0) * 1000
            cpu_init_ms = inst.cpu_ns() / 1e6
            first_ms, _, answer = inst.invoke(payload)
            if not answered(answer):
                raise inst._fail(f"first invocation answered {answer}")
            cpu_first_sched_ms = inst.cpu_ns() / 1e6
            rss = inst.hwm_mib()
            threads = inst.threads()
        finally:
            inst.stop()
        return {"init_ms": init_ms, "first_ms": first_ms, "cold_ms": init_ms + first_ms,
                "cpu_init_ms": cpu_init_ms,
                "cpu_first_ms": cpu_first_sched_ms,
                # A check on threads that ended before the end of the first
                # invocation (schedstat sees only live ones): wait4's rusage
                # after SIGKILL counts them, and also the exit's teardown
                # (about 1 ms for the Rust processes, 4 ms for Python).
                "cpu_first_rusage_ms": inst.rusage_cpu_ms,
                "rss_first_mib": rss, "threads": threads}

    def warm(self, transport):
        fresh = {"credential_type": "train"}
        issuing = {"credential_type": "train", "force": True}
        contenders = [c for c in self.args.contenders if c != "runner"]
        insts = {}
        out = {c: {"fresh": {"wall_ms": [], "cpu_ms": []}, "issuing": {"wall_ms": [], "cpu_ms": []}}
               for c in contenders}
        try:
            for c in contenders:
                inst = insts[c] = self.spawn(c, transport, "host", f"bench-{self.run}/{transport}/{c}/warm")
                inst.wait_parked(1)
                _, _, answer = inst.invoke(fresh)  # creates the target
                if answer.get("status") != "issued":
                    raise inst._fail(f"first invocation answered {answer}")
            total = self.args.warmup + self.args.warm
            for i in range(total):
                if i % 50 == 0:
                    log(f"warm {TRANSPORTS[transport]}: request {i + 1}/{total} of each kind")
                order = contenders[i % len(contenders):] + contenders[:i % len(contenders)]
                for kind, payload, status in (("fresh", fresh, "fresh"), ("issuing", issuing, "issued")):
                    for c in order:
                        wall, cpu, answer = insts[c].invoke(payload)
                        if answer.get("status") != status:
                            raise insts[c]._fail(f"{kind} request answered {answer}")
                        if i >= self.args.warmup:
                            out[c][kind]["wall_ms"].append(wall)
                            out[c][kind]["cpu_ms"].append(cpu)
            for c in contenders:
                out[c]["rss_warm_mib"] = insts[c].hwm_mib()
                out[c]["threads"] = insts[c].threads()
        finally:
            for inst in insts.values():
                inst.stop()
        return out

    def run_all(self):
        a = self.args
        stand_ins = []
        started = time.monotonic()
        try:
            if "tls" in a.transports:
                self.tls = make_tls(os.path.join(self.out_dir, "tls"))
            for t in a.transports:
                s = StandIns(t, self.tls, self.logs, a.stock_stand_ins)
                stand_ins.append(s)
                self.endpoints[t] = {"aws": s.aws, "vendor": s.vendor}
                self.store_secret_key(t)
            cold = {}
            for r in range(a.rounds):
                log(f"cold starts: round {r + 1}/{a.rounds}")
                order = a.contenders[r % len(a.contenders):] + a.contenders[:r % len(a.contenders)]
                for t in a.transports:
                    for layout in a.layouts:
                        for c in order:
                            cold.setdefault(f"{t}/{layout}", {}).setdefault(c, []).append(
                                self.cold_start(c, t, layout, r))
            warm = {}
            if a.warm > 0 and any(c != "runner" for c in a.contenders):
                for t in a.transports:
                    warm[t] = self.warm(t)
        finally:
            for s in stand_ins:
                s.stop()
        seconds = time.monotonic() - started
        transfers = self.transfers() if a.transfers and "runner" in a.contenders else None
        return cold, warm, seconds, transfers

    def transfers(self):
        """scripts/bench_transfer.sh on the same runner binary, after the
        rest (its own stand-ins; these are stopped by now). A failure is
        reported in the table, not fatal: the cold starts stand."""
        path = os.path.join(self.out_dir, "transfer.json")
        log_path = os.path.join(self.logs, "transfer.log")
        if os.path.exists(path):
            os.remove(path)
        log(f"transfers: {self.args.transfers} MiB each way (scripts/bench_transfer.sh; log {log_path})")
        env = dict(os.environ, P1_BENCH_SKIP_BUILD="1", P1_RETRAIN_BINARY=os.path.abspath(self.args.runner))
        with open(log_path, "wb") as out:
            proc = subprocess.Popen([os.path.join(ROOT, "scripts/bench_transfer.sh"), str(self.args.transfers),
                                     "--json", path], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = proc.wait()
            finally:
                if proc.poll() is None:  # interrupted: it stops its own stand-ins on TERM
                    os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
        if rc != 0 or not os.path.exists(path):
            tail = open(log_path, errors="replace").read()[-1500:]
            log(f"transfers failed (exit {rc}); see {log_path}:\n{tail}")
            return {"error": f"scripts/bench_transfer.sh failed (exit {rc}); see {os.path.relpath(log_path, ROOT)}"}
        with open(path) as f:
            return json.load(f)


# --------------------------------------------------------------- the report

def median(xs):
    return statistics.median(xs) if xs else None


def p99(xs):
    if not xs:
        return None
    s = sorted(xs)
    return s[max(0, math.ceil(0.99 * len(s)) - 1)]


def zip_mib(path):
    """Size of a deflated zip holding the binary as `bootstrap`."""
    zpath = os.path.join(ROOT, "target/bench", os.path.basename(path) + ".zip")
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(path, "bootstrap")
    return os.path.getsize(zpath) / 2**20


def build_table(args, cold, warm, sizes):
    """Rows of (section, figure, unit, {contender: value})."""
    rows = []
    first = "first invocation (issues a key, creates the secret)"
    if "runner" in args.contenders:
        first = ("first invocation (issues a key, creates the secret; "
                 f"p1-retrain: `start` of {args.runner_object_kib} KiB)")
    for key, per in cold.items():
        t, layout = key.split("/")
        section = f"cold start, {TRANSPORTS[t]}, {LAYOUTS[layout]}"

        def fig(name, unit, field):
            rows.append((section, name, unit, {c: median([r[field] for r in per[c]]) for c in per}))
        fig("init: spawn to first /next", "ms", "init_ms")
        fig(first, "ms", "first_ms")
        fig("cold start (init + first invocation)", "ms", "cold_ms")
        fig("CPU by the first /next", "ms", "cpu_init_ms")
        fig("CPU by the end of the first invocation", "ms", "cpu_first_ms")
        fig("peak RSS after the first invocation", "MiB", "rss_first_mib")
    for t, per in warm.items():
        section = f"warm, {TRANSPORTS[t]}, host trust store"
        for kind, label in (("fresh", "warm `fresh` request"), ("issuing", "warm issuing request")):
            rows.append((section, f"{label}, wall p50", "ms",
                         {c: median(per[c][kind]["wall_ms"]) for c in per}))
            rows.append((section, f"{label}, wall p99", "ms",
                         {c: p99(per[c][kind]["wall_ms"]) for c in per}))
            rows.append((section, f"{label}, own CPU (median)", "ms",
                         {c: median(per[c][kind]["cpu_ms"]) for c in per}))
        rows.append((section, "peak RSS, warm", "MiB", {c: per[c]["rss_warm_mib"] for c in per}))
    rows.append(("size", "binary (x86_64, stripped)", "MiB", sizes["binary_mib"]))
    rows.append(("size", "zip of the x86_64 binary (deflated)", "MiB", sizes["zip_x86_64_mib"]))
    if sizes["zip_arm64_mib"]:
        rows.append(("size", "arm64 zip (cargo lambda build --release --arm64)", "MiB", sizes["zip_arm64_mib"]))
    return rows


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "MiB":
        return f"{v:.2f}" if v < 10 else f"{v:.1f}"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def fmt_ratio(v):
    if v is None:
        return "-"
    return f"{v:.2f}x" if v < 10 else f"{v:.1f}x" if v < 100 else f"{v:.0f}x"


def ratio_columns(contenders):
    return [r for r in RATIOS if r[1] in contenders and r[2] in contenders]


def render(rows, contenders, header):
    cols = [LABELS[c] for c in contenders]
    ratio_cols = ratio_columns(contenders)
    lines = [header, ""]
    section = None
    width = max(len(f"{r[1]}, {r[2]}") for r in rows) + 2
    for sec, name, unit, values in rows:
        if sec != section:
            section = sec
            lines.append("")
            lines.append(f"{sec}")
            lines.append("  " + "figure".ljust(width) + "".join(c.rjust(15) for c in cols)
                         + "".join(rc[0].rjust(17) for rc in ratio_cols))
        cells = "".join(fmt(values.get(c), unit).rjust(15) for c in contenders)
        rcells = "".join(fmt_ratio(ratio(values.get(a), values.get(b))).rjust(17) for _, a, b in ratio_cols)
        lines.append("  " + f"{name}, {unit}".ljust(width) + cells + rcells)
    return "\n".join(lines)


def render_markdown(rows, contenders, header):
    """The same table in Markdown, for docs/performance.md."""
    ratio_cols = ratio_columns(contenders)
    lines = [header.replace("\n", "; ")]
    section = None
    for sec, name, unit, values in rows:
        if sec != section:
            section = sec
            lines += ["", f"**{sec}**", "",
                      "| figure | " + " | ".join(LABELS[c] for c in contenders)
                      + "".join(f" | {rc[0]}" for rc in ratio_cols) + " |",
                      "| --- |" + " ---: |" * (len(contenders) + len(ratio_cols))]
        cells = " | ".join(fmt(values.get(c), unit) for c in contenders)
        rcells = "".join(f" | {fmt_ratio(ratio(values.get(a), values.get(b))).replace('x', '×')}"
                         for _, a, b in ratio_cols)
        lines.append(f"| {name.replace('/next', '`/next`')}, {unit} | {cells}{rcells} |")
    return "\n".join(lines)


def runner_note(args):
    return (f"p1-retrain (the retrain runner, target/release/p1-retrain): cold starts only, no warm "
            f"rows (its requests are not the broker's). Its first invocation is a `start` of a new "
            f"{args.runner_object_kib} KiB CSV object (a new key and model every round): the "
            f"object's start record claimed (S3 conditional write), the secret key read, the "
            f"model's retrain key issued and its secret created, an upload URL from the vendor "
            f"stand-in, the object streamed into it, the start record written.")


def render_transfers(transfers):
    """The transfer rows (bench/transfer.py's), as text and Markdown."""
    if "error" in transfers:
        line = f"transfers: {transfers['error']}"
        return line, line
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import transfer
    return transfer.render_text(transfers), transfer.render_markdown(transfers)


def host_info():
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                      if line.startswith("model name")), "")
    except OSError:
        pass
    osname = ""
    try:
        osname = next((line.split("=", 1)[1].strip().strip('"') for line in open("/etc/os-release")
                       if line.startswith("PRETTY_NAME=")), "")
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(), "os": osname,
            "python": platform.python_version()}


def git_head():
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip() + (
            "" if subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD", "--", "src", "Cargo.toml",
                                  "Cargo.lock", "examples", "bench"]).returncode == 0 else "+changes")
    except (OSError, subprocess.CalledProcessError):
        return None


def main():
    args = parse_args()
    # A TERM (or Ctrl-C) unwinds through the finally blocks that stop the
    # contenders and the stand-ins.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.chdir(ROOT)
    for c, path in (("function", args.function), ("floor", args.floor), ("python", args.python),
                    ("runner", args.runner)):
        if c in args.contenders and not os.path.exists(path):
            raise SystemExit(f"bench: {path} is missing (scripts/bench.sh builds and installs it)")
    bench = Bench(args)
    cold, warm, seconds, transfers = bench.run_all()

    sizes = {"binary_mib": {}, "zip_x86_64_mib": {}, "zip_arm64_mib": {}}
    for c, path in (("function", args.function), ("floor", args.floor), ("runner", args.runner)):
        if c in args.contenders:
            sizes["binary_mib"][c] = os.path.getsize(path) / 2**20
            sizes["zip_x86_64_mib"][c] = zip_mib(path)
    for item in args.arm64_zip:
        name, _, path = item.partition("=")
        if os.path.exists(path):
            sizes["zip_arm64_mib"][name] = os.path.getsize(path) / 2**20

    rows = build_table(args, cold, warm, sizes)
    info = host_info()
    header = (f"p1-key-broker benchmark ({git_head() or 'unknown commit'}), "
              f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
              f"{info['cores']} x {info['cpu'] or 'CPU'}, {info['os']}\n"
              f"medians of {args.rounds} cold starts and "
              + (f"{args.warm} warm requests of each kind (after {args.warmup} not counted)"
                 if warm else "no warm requests")
              + "; loopback "
              f"{'stock stand-ins' if args.stock_stand_ins else 'stand-ins with keep-alive (bench/standins.py)'}; "
              f"{seconds:.0f} s")
    notes = []
    if args.arm64_note:
        notes.append(f"arm64 zip: {args.arm64_note}")
    if "runner" in args.contenders:
        notes.append(runner_note(args))
    table = render(rows, args.contenders, header) + "".join(f"\n\n{n}" for n in notes)
    markdown = render_markdown(rows, args.contenders, header) + "".join(
        f"\n\n{n}".replace("/next", "`/next`") for n in notes)
    if transfers is not None:
        text_t, md_t = render_transfers(transfers)
        table += "\n\n" + text_t
        markdown += "\n\n" + md_t
    print(table)

    result = {
        "schema": 1,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_head(),
        "host": info,
        "settings": {"rounds": args.rounds, "warm": args.warm, "warmup": args.warmup,
                     "transports": args.transports, "layouts": args.layouts,
                     "contenders": args.contenders, "runner_object_kib": args.runner_object_kib,
                     "transfers_mib": args.transfers, "seconds": round(seconds, 1)},
        "table": [{"section": s, "figure": n, "unit": u,
                   **{c: (round(v[c], 3) if v.get(c) is not None else None) for c in args.contenders},
                   **{f"{a}/{b}": ratio(v.get(a), v.get(b)) for _, a, b in RATIOS}}
                  for s, n, u, v in rows],
        "arm64_note": args.arm64_note or None,
        "runner_note": runner_note(args) if "runner" in args.contenders else None,
        "transfers": transfers,
        "samples": {"cold": cold, "warm": warm},
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    if os.path.exists(args.out):
        shutil.copyfile(args.out, os.path.splitext(args.out)[0] + ".prev.json")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    stem = os.path.splitext(args.out)[0]
    with open(stem + ".txt", "w") as f:
        f.write(table + "\n")
    with open(stem + ".md", "w") as f:
        f.write(markdown + "\n")
    log(f"wrote {args.out} (the table also as {stem}.txt and {stem}.md)")


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        raise SystemExit(f"bench: {e}")
