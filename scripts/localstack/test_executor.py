#!/usr/bin/env python3
"""The executor plugin's own test (plugin/p1_process_executor.py): functions
made through LocalStack's Lambda API, each a small bootstrap speaking the
Runtime API, invoked as Lambda would invoke them.

- one that echoes: the event comes back; the deadline is the function's
  timeout; the environment is Lambda's, the function's own variables, and
  only the endpoint, the CA bundle and the Runtime API address added;
- one that crashes on an event: `Runtime.ExitError` naming the exit status,
  and the next invocation runs on a new process;
- one that hangs: `Sandbox.Timedout` at the function's timeout, the process
  killed, and the next invocation runs on a new process;
- one that exits before asking for an event: its invocation fails with
  `Runtime.ExitError`, nothing hangs.

Environment: P1_STACK_LOCALSTACK_URL (`scripts/localstack.sh start stack`),
P1_STACK_CA (the bundle given to the plugin is its sibling bundle.pem).
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
import zipfile

import stack as stk

ENDPOINT = os.environ["P1_STACK_LOCALSTACK_URL"]
BUNDLE = os.path.join(os.path.dirname(os.environ["P1_STACK_CA"]), "bundle.pem")

# A Runtime API client in a few lines: the event's "do" says how to behave.
FUNCTION = r'''
import json, os, sys, time, urllib.request
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"
if os.environ.get("EXIT_AT_INIT"):
    sys.exit(7)
while True:
    with urllib.request.urlopen(api + "next") as r:
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        left_ms = int(r.headers["Lambda-Runtime-Deadline-Ms"]) - int(time.time() * 1000)
        event = json.loads(r.read() or b"null")
    print("event", json.dumps(event), flush=True)
    if event.get("do") == "crash":
        sys.exit(3)
    if event.get("do") == "hang":
        time.sleep(3600)
    body = json.dumps({"event": event, "pid": os.getpid(), "left_ms": left_ms,
                       "env": dict(os.environ)}).encode()
    urllib.request.urlopen(urllib.request.Request(api + rid + "/response", data=body, method="POST"))
'''


def package() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        boot = zipfile.ZipInfo("bootstrap")
        boot.external_attr = 0o755 << 16
        z.writestr(boot, f'#!/bin/sh\nexec "{sys.executable}" "$LAMBDA_TASK_ROOT/function.py"\n')
        z.writestr("function.py", FUNCTION)
    return buf.getvalue()


class Failed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failed(message)


def main() -> int:
    lam = stk.clients(ENDPOINT)["lambda"]
    code = package()

    def function(name, timeout, variables):
        lam.create_function(
            FunctionName=name, Runtime="provided.al2023", Handler="bootstrap", Timeout=timeout,
            Role="arn:aws:iam::000000000000:role/p1-executor-test", Code={"ZipFile": code},
            Environment={"Variables": variables})
        lam.get_waiter("function_active_v2").wait(FunctionName=name)

    def invoke(name, event):
        start = time.monotonic()
        r = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode())
        return r.get("FunctionError"), json.loads(r["Payload"].read()), time.monotonic() - start

    def echoes():
        function("p1-echo", 7, {"MINE": "from the function's configuration"})
        err, out, _ = invoke("p1-echo", {"hello": "world"})
        check(err is None, f"echo failed: {out}")
        check(out["event"] == {"hello": "world"}, f"echoed {out['event']}")
        check(5000 < out["left_ms"] <= 7000, f"deadline {out['left_ms']} ms away, timeout 7 s")
        env = out["env"]
        check(env.get("MINE") == "from the function's configuration", "the function's variable")
        check(env.get("AWS_ENDPOINT_URL", "").startswith("http://127.0.0.1:"), f"endpoint {env.get('AWS_ENDPOINT_URL')}")
        check(env.get("SSL_CERT_FILE") == BUNDLE, f"CA bundle {env.get('SSL_CERT_FILE')}")
        check(env.get("AWS_LAMBDA_RUNTIME_API", "").startswith("127.0.0.1:"), "runtime API address")
        check(env.get("AWS_LAMBDA_FUNCTION_NAME") == "p1-echo", "Lambda's own variables")
        leaked = sorted(k for k in env if k.startswith("LOCALSTACK_") or k in (
            "EDGE_PORT", "GATEWAY_LISTEN", "FILESYSTEM_ROOT", "SERVICES", "HOME",
            "LAMBDA_RUNTIME_EXECUTOR", "P1_EXECUTOR_CA_BUNDLE", "AWS_LAMBDA_FUNCTION_TIMEOUT"))
        check(not leaked, f"variables of LocalStack or the host reached the function: {leaked}")
        err, again, _ = invoke("p1-echo", {"n": 2})
        check(err is None and again["pid"] == out["pid"], "a warm invocation reuses the process")

    def crashes():
        function("p1-crash", 7, {})
        _, first, _ = invoke("p1-crash", {"n": 1})
        err, out, _ = invoke("p1-crash", {"do": "crash"})
        check(err == "Unhandled", f"a crash answered {err}: {out}")
        check(out.get("errorType") == "Runtime.ExitError" and "exit status 3" in out.get("errorMessage", ""),
              f"crash error {out}")
        err, after, _ = invoke("p1-crash", {"n": 2})
        check(err is None and after["pid"] != first["pid"], f"after a crash: {err} {after.get('pid')}")

    def times_out():
        function("p1-hang", 2, {})
        _, first, _ = invoke("p1-hang", {"n": 1})
        err, out, took = invoke("p1-hang", {"do": "hang"})
        check(err == "Unhandled" and out.get("errorType") == "Sandbox.Timedout", f"a hang answered {out}")
        check("Task timed out after 2.00 seconds" in out.get("errorMessage", ""), out.get("errorMessage"))
        check(2 <= took < 10, f"the timeout took {took:.1f} s for a 2 s function")
        check(not pid_alive(first["pid"]), f"the hung process {first['pid']} still runs")
        err, after, _ = invoke("p1-hang", {"n": 2})
        check(err is None and after["pid"] != first["pid"], f"after a timeout: {err} {after}")

    def fails_init():
        function("p1-init-fails", 5, {"EXIT_AT_INIT": "1"})
        err, out, took = invoke("p1-init-fails", {"n": 1})
        check(err is not None and "Runtime.ExitError" in json.dumps(out), f"an init that exits: {err} {out}")
        check(took < 15, f"an init failure took {took:.1f} s")

    cases = [("echoes", echoes), ("crashes", crashes), ("times out", times_out),
             ("fails its init", fails_init)]
    passed = failed = 0
    for name, case in cases:
        start = time.monotonic()
        try:
            case()
            passed += 1
            print(f"executor: ok    {time.monotonic() - start:5.1f} s  a bootstrap that {name}", flush=True)
        except Exception as err:  # noqa: BLE001 - report every case
            failed += 1
            print(f"executor: FAIL  {time.monotonic() - start:5.1f} s  a bootstrap that {name}: "
                  f"{type(err).__name__}: {err}", flush=True)
    print(f"executor: {passed} passed, {failed} failed")
    return 1 if failed else 0


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "State:\tZ" not in f.read()
    except FileNotFoundError:
        return False


if __name__ == "__main__":
    sys.exit(main())
