"""A LocalStack Lambda runtime executor that runs a function's `bootstrap` as
a local process, for machines without a container engine (the open-source
core registers only a Docker executor; `localstack.lambda.runtime_executor`
is the plugin point it loads executors from, by `LAMBDA_RUNTIME_EXECUTOR`).

What a function gets, as on Lambda's `provided.al2023`:
- its code, unpacked by LocalStack, run as `<code>/bootstrap` with that
  folder as its working directory and `LAMBDA_TASK_ROOT`;
- the Lambda Runtime API (`/2018-06-01/runtime/...`) on a loopback port of
  its own, named by `AWS_LAMBDA_RUNTIME_API`, with the request id, the
  deadline (now + the function's timeout), the function ARN and the trace id
  in the headers of `invocation/next`;
- an environment of Lambda's own variables (region, name, memory, version,
  log group and stream, the role's credentials from LocalStack's STS,
  `_HANDLER`, `TZ`) and the function's configured variables, plus only
  `AWS_ENDPOINT_URL` (LocalStack), `SSL_CERT_FILE` (the test CA bundle, when
  `P1_EXECUTOR_CA_BUNDLE` names one) and `AWS_LAMBDA_RUNTIME_API`. Nothing of
  LocalStack's internals (`LOCALSTACK_*`, `EDGE_PORT`) and nothing of the
  host's environment reaches it.

What Lambda does on failure, done the same way:
- the function's timeout is enforced: past its deadline the process is
  killed and the invocation answers `Sandbox.Timedout`;
- a process that exits during an invocation answers `Runtime.ExitError`
  (its exit status named), one that reports `/runtime/init/error` or exits
  before asking for its first event fails its start-up with that error;
- after either, the next invocation starts a fresh process (a new init), as
  Lambda resets an execution environment.

Each process's output goes to LocalStack's invocation logs (so to its
CloudWatch Logs) and, when `P1_EXECUTOR_LOG_DIR` is set, to
`<dir>/<function name>.log`, so that tests can search every line.

It builds nothing and isolates nothing: the code must hold a binary for the
host's architecture (a function declared `arm64` runs the host build).
"""

import json
import logging
import os
import queue
import signal
import stat
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from localstack.services.lambda_.invocation.executor_endpoint import StatusErrorException
from localstack.services.lambda_.invocation.lambda_models import FunctionVersion, InvocationResult
from localstack.services.lambda_.invocation.plugins import RuntimeExecutorPlugin
from localstack.services.lambda_.invocation.runtime_executor import RuntimeExecutor

LOG = logging.getLogger(__name__)

API = "/2018-06-01/runtime"
# Lambda's own PATH for provided runtimes.
LAMBDA_PATH = "/usr/local/bin:/usr/bin/:/bin:/opt/bin"
# What LocalStack gives its container init and Lambda never gives a function.
NOT_LAMBDAS = ("LOCALSTACK_", "EDGE_PORT", "AWS_LAMBDA_FUNCTION_TIMEOUT")
STARTUP_SECONDS = float(os.environ.get("LAMBDA_RUNTIME_ENVIRONMENT_TIMEOUT") or 20)


def error_payload(error_type, message):
    return json.dumps({"errorType": error_type, "errorMessage": message}).encode()


class Invocation:
    """One event handed to the process, and what it answered."""

    def __init__(self, request_id, payload, function_arn, trace_id, deadline):
        self.request_id = request_id
        self.payload = payload.encode() if isinstance(payload, str) else payload
        self.function_arn = function_arn
        self.trace_id = trace_id
        self.deadline = deadline
        self.done = threading.Event()
        self.answer = None  # (is_error, body)

    def finish(self, is_error, body):
        if not self.done.is_set():
            self.answer = (is_error, body)
            self.done.set()


class Sandbox:
    """One process of a function and the Runtime API that serves it (a port
    of its own, so that a killed process's pending `next` can never take
    the event meant for its successor)."""

    def __init__(self, name, code_dir, env, log_file):
        self.name = name
        self.inbox = queue.Queue()
        self.ready = threading.Event()
        self.init_error = None
        self.current = None
        self.lines = []
        self.lines_lock = threading.Lock()
        self.log_file = log_file
        sandbox = self

        class RuntimeApi(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _body(self):
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _send(self, status, body=b"", headers=()):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path != f"{API}/invocation/next":
                    return self._send(404)
                sandbox.ready.set()
                inv = sandbox.inbox.get()
                if inv is None:  # shut down
                    self.close_connection = True
                    return self._send(500, error_payload("Runtime.Shutdown", "shutting down"))
                sandbox.current = inv
                self._send(200, inv.payload, [
                    ("Content-Type", "application/json"),
                    ("Lambda-Runtime-Aws-Request-Id", inv.request_id),
                    ("Lambda-Runtime-Deadline-Ms", str(int(inv.deadline * 1000))),
                    ("Lambda-Runtime-Invoked-Function-Arn", inv.function_arn),
                    ("Lambda-Runtime-Trace-Id", inv.trace_id),
                ])

            def do_POST(self):
                body = self._body()
                parts = self.path[len(API):].strip("/").split("/") if self.path.startswith(API) else []
                if parts == ["init", "error"]:
                    sandbox.init_error = body or error_payload("Runtime.Unknown", "init error")
                    return self._send(202, b'{"status":"OK"}')
                if len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
                    inv = sandbox.current
                    if inv is None or inv.request_id != parts[1]:
                        return self._send(400, error_payload("InvalidRequestID", "unknown request id"))
                    inv.finish(parts[2] == "error", body)
                    return self._send(202, b'{"status":"OK"}')
                self._send(404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, name=f"p1-runtime-api-{name}",
                         daemon=True).start()
        env = dict(env, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{self.port}")
        self.process = subprocess.Popen(
            [str(code_dir / "bootstrap")], cwd=code_dir, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=self._read_output, name=f"p1-output-{name}", daemon=True).start()

    def _read_output(self):
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.lines_lock:
                self.lines.append(line)
            if self.log_file:
                with open(self.log_file, "a", encoding="utf-8") as f:
                    f.write(line + "\n")

    def output_since(self, mark):
        with self.lines_lock:
            return "\n".join(self.lines[mark:]) + ("\n" if len(self.lines) > mark else "")

    def mark(self):
        with self.lines_lock:
            return len(self.lines)

    def wait_ready(self, seconds):
        """True once the process asked for its first event; else why not."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.ready.wait(0.05):
                return None
            if self.init_error is not None:
                return self.init_error
            code = self.process.poll()
            if code is not None:
                return self.init_error or error_payload(
                    "Runtime.ExitError", f"Runtime exited with error: {exit_status(code)}")
        return error_payload("Runtime.Unknown", f"bootstrap did not ask for an event within {seconds:.0f} s")

    def invoke(self, inv):
        """Hands `inv` to the process and waits for its answer, its death or
        its deadline, whichever comes first."""
        self.inbox.put(inv)
        while not inv.done.wait(0.02):
            code = self.process.poll()
            if code is not None:
                time.sleep(0.05)  # a last answer sent just before exiting
                inv.finish(True, error_payload(
                    "Runtime.ExitError",
                    f"RequestId: {inv.request_id} Error: Runtime exited with error: {exit_status(code)}"))
            elif time.time() >= inv.deadline:
                self.kill()
                inv.finish(True, error_payload(
                    "Sandbox.Timedout",
                    f"RequestId: {inv.request_id} Error: Task timed out after "
                    f"{inv.deadline - inv.started:.2f} seconds"))
        return inv.answer

    def alive(self):
        return self.process.poll() is None

    def kill(self):
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.inbox.put(None)
        self.server.shutdown()
        self.server.server_close()


def exit_status(code):
    return f"signal: {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"


class ProcessRuntimeExecutor(RuntimeExecutor):
    def __init__(self, id: str, function_version: FunctionVersion) -> None:
        super().__init__(id=id, function_version=function_version)
        self.env = None
        self.sandbox = None
        self.lock = threading.Lock()
        config = function_version.config
        self.timeout = float(config.timeout or 3)
        self.code_dir = Path(config.code.get_unzipped_code_location())
        log_dir = os.environ.get("P1_EXECUTOR_LOG_DIR")
        self.log_file = (Path(log_dir) / f"{function_version.id.function_name}.log") if log_dir else None

    # -- the environment ------------------------------------------------------
    def _environment(self, env_vars):
        env = {k: str(v) for k, v in env_vars.items()
               if v is not None and not k.startswith(NOT_LAMBDAS)}
        env["LAMBDA_TASK_ROOT"] = str(self.code_dir)
        env["PATH"] = LAMBDA_PATH
        env["LANG"] = "en_US.UTF-8"
        bundle = os.environ.get("P1_EXECUTOR_CA_BUNDLE")
        if bundle:
            env["SSL_CERT_FILE"] = bundle
        return env

    def _new_sandbox(self):
        sandbox = Sandbox(self.function_version.id.function_name, self.code_dir, self.env, self.log_file)
        failure = sandbox.wait_ready(STARTUP_SECONDS)
        if failure is not None:
            output = sandbox.output_since(0)
            sandbox.kill()
            LOG.warning("function %s failed to start: %s\n%s", self.function_version.id.function_name,
                        failure.decode("utf-8", "replace"), output)
            raise StatusErrorException("Environment startup failed", payload=failure)
        return sandbox

    # -- RuntimeExecutor --------------------------------------------------------
    def start(self, env_vars: dict[str, str]) -> None:
        if self.log_file:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.env = self._environment(env_vars)
        self.sandbox = self._new_sandbox()

    def stop(self) -> None:
        with self.lock:
            if self.sandbox is not None:
                self.sandbox.kill()
                self.sandbox = None

    def get_address(self) -> str:
        return "127.0.0.1"

    def get_endpoint_from_executor(self) -> str:
        return "127.0.0.1"

    def get_runtime_endpoint(self) -> str:
        port = self.sandbox.port if self.sandbox else 0
        return f"http://127.0.0.1:{port}{API}"

    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        request_id = payload.get("invoke-id") or str(uuid.uuid4())
        with self.lock:
            if self.sandbox is None or not self.sandbox.alive():
                # Lambda resets an environment after a crash or a timeout:
                # this invocation waits for a new init.
                if self.sandbox is not None:
                    self.sandbox.kill()
                try:
                    self.sandbox = self._new_sandbox()
                except StatusErrorException as e:
                    self.sandbox = None
                    return InvocationResult(request_id, e.payload, is_error=True, logs="")
            sandbox = self.sandbox
        mark = sandbox.mark()
        started = time.time()
        inv = Invocation(request_id, payload.get("payload") or "", payload.get("invoked-function-arn", ""),
                         payload.get("trace-id", ""), started + self.timeout)
        inv.started = started
        is_error, body = sandbox.invoke(inv)
        time.sleep(0.01)  # the output written just before the answer
        return InvocationResult(request_id, body, is_error=is_error, logs=sandbox.output_since(mark))

    def get_logs(self) -> str:
        return self.sandbox.output_since(0) if self.sandbox else ""

    @classmethod
    def prepare_version(cls, function_version: FunctionVersion) -> None:
        code = function_version.config.code
        if not code:
            raise ValueError("only .zip functions with a bootstrap can run as processes")
        code.prepare_for_execution()
        bootstrap = Path(code.get_unzipped_code_location()) / "bootstrap"
        if bootstrap.exists():
            # Unpacked without its mode bits.
            bootstrap.chmod(bootstrap.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    @classmethod
    def cleanup_version(cls, function_version: FunctionVersion) -> None:
        pass

    @classmethod
    def validate_environment(cls) -> bool:
        return True


class ProcessExecutorPlugin(RuntimeExecutorPlugin):
    name = "p1-process"

    def load(self, *args, **kwargs):
        return ProcessRuntimeExecutor
