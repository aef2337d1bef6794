#!/usr/bin/env python3
"""Cold-start benchmark: runs the function binary under a minimal Lambda
Runtime API on loopback, once per round, and reports

  init_ms         process start -> first GET /runtime/invocation/next
                  (what Lambda bills as Init Duration, less the sandbox)
  first_invoke_ms that first event -> its response (a direct train request
                  against moto and the vendor stand-in: secret read, vendor
                  call, store); the stand-ins' own latency is included
  peak_rss_mib    VmHWM of the function process after the response
  binary / zip    size of the binary and of a deflated bootstrap.zip

Needs the services of scripts/services.sh (reads .local/env). A benchmark,
not a test: it prints figures and asserts nothing.

  scripts/services.sh start
  python3 scripts/bench_cold_start.py [--binary target/release/p1-key-broker] [--rounds 7]
"""
import argparse, http.server, io, json, os, statistics, subprocess, threading, time, uuid, zipfile

parser = argparse.ArgumentParser()
parser.add_argument("--binary", default="target/release/p1-key-broker")
parser.add_argument("--rounds", type=int, default=7)
args = parser.parse_args()

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
env = dict(os.environ)
for line in open(os.path.join(root, ".local/env")):
    if line.startswith("export "):
        k, _, v = line[len("export "):].strip().partition("=")
        env[k] = v

import boto3  # from the project's .venv (moto depends on it)
sm = boto3.client("secretsmanager", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
run = uuid.uuid4().hex[:8]
sm.create_secret(Name=f"bench-{run}/secret-key", SecretString=f"sk-bench-{run}")


class Runtime(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state = {}

    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.state.get("served"):
            time.sleep(30)  # park the runtime's next poll until we kill it
            return
        self.state["t_next"] = time.monotonic()
        self.state["served"] = True
        body = json.dumps({"credential_type": "train", "force": True}).encode()
        self.send_response(200)
        for k, v in {"Lambda-Runtime-Aws-Request-Id": str(uuid.uuid4()),
                     "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 60000),
                     "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:123456789012:function:p1",
                     "Content-Type": "application/json", "Content-Length": str(len(body))}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        self.state["response"] = self.rfile.read(n)
        self.state["t_resp"] = time.monotonic()
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # the killed function drops its parked poll: expected


def one_round(i):
    Runtime.state = {}
    server = QuietServer(("127.0.0.1", 0), Runtime)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    e = dict(env, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{server.server_address[1]}",
             AWS_LAMBDA_FUNCTION_NAME="p1-key-broker", AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256",
             AWS_LAMBDA_FUNCTION_VERSION="$LATEST", AWS_LAMBDA_LOG_FORMAT="JSON",
             P1_SECRET_KEY_SECRET_ID=f"bench-{run}/secret-key",
             P1_TRAIN_SECRET_ID=f"bench-{run}/train-{i}")
    t0 = time.monotonic()
    proc = subprocess.Popen([args.binary], env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while "t_resp" not in Runtime.state:
        if proc.poll() is not None:
            raise SystemExit(f"the function exited with {proc.returncode}")
        time.sleep(0.001)
    with open(f"/proc/{proc.pid}/status") as f:
        hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM"))
    proc.kill(); proc.wait(); server.shutdown()
    result = json.loads(Runtime.state["response"])
    assert result.get("status") == "issued", result
    return ((Runtime.state["t_next"] - t0) * 1000, (Runtime.state["t_resp"] - Runtime.state["t_next"]) * 1000, hwm / 1024)


rounds = [one_round(i) for i in range(args.rounds)]
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
    z.write(args.binary, "bootstrap")
print(json.dumps({
    "binary": args.binary,
    "rounds": args.rounds,
    "init_ms_median": round(statistics.median(r[0] for r in rounds), 1),
    "init_ms_max": round(max(r[0] for r in rounds), 1),
    "first_invoke_ms_median": round(statistics.median(r[1] for r in rounds), 1),
    "peak_rss_mib_median": round(statistics.median(r[2] for r in rounds), 1),
    "binary_mib": round(os.path.getsize(args.binary) / 2**20, 2),
    "zip_mib": round(len(buf.getvalue()) / 2**20, 2),
}, indent=2))
