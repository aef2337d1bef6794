#!/usr/bin/env python3
"""The renewal sweep at fleet scale (run it through scripts/bench_sweep.sh).

Creates N managed secrets (default 2,000: retrain keys of N models, tagged
as the function tags what it creates) on a moto server on loopback, a tenth
of them due (expired), the rest fresh; then runs sweeps ({"sweep": "due"})
through the release binary under AWS's Lambda Runtime Interface Emulator,
every AWS call through the fault proxy, which adds --latency-ms to each (a
region's round trip; default 0): handing the due keys to an SQS queue with
each of --read-concurrency (default "8"; e.g. "1,8") reads in flight, then
renewing them itself (P1_RENEW_QUEUE_URL unset) at the last of them. With
--cohort, the fresh keys all expire at one instant, half the jitter window
past the renewal window (now + 1 day + 30 min): the share that a sweep now
finds due shows the jitter spreading the cohort. For each sweep it prints:

  wall_s          invoke sent -> report received
  peak_rss_mib    the function process's VmHWM after the sweep
  calls           AWS calls by operation, as the fault proxy in front of
                  moto saw them (no faults: it only counts), and the vendor
                  calls at the stand-in
  report          the sweep's own report

A benchmark, not a test: CI never runs it, and it asserts only that each
sweep found what was made due. Everything runs on loopback and stops by
itself.
"""
import argparse
import concurrent.futures
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait(url, seconds=20):
    until = time.time() + seconds
    while time.time() < until:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"bench_sweep: {url} did not come up")


def start(cmd, log, env=None):
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def rfc3339(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_fleet(sm, prefix, owner, n, due_every, cohort=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    fresh_for = datetime.timedelta(days=1, minutes=30) if cohort else datetime.timedelta(days=30)

    def one(i):
        due = i % due_every == 0
        expires = now + (datetime.timedelta(hours=-1) if due else fresh_for)
        record = {"api_key": "p1k_old", "end_date": rfc3339(expires), "expires_at": rfc3339(expires),
                  "credential_type": "retrain", "model_id": str(i),
                  "issued_at": rfc3339(now - datetime.timedelta(days=2))}
        sm.create_secret(Name=f"{prefix}{i}", SecretString=json.dumps(record), Tags=[
            {"Key": "managed-by", "Value": "p1-key-broker"},
            {"Key": "p1:credential_type", "Value": "retrain"},
            {"Key": "p1:model_id", "Value": str(i)},
            {"Key": "p1:secret_key_secret", "Value": owner}])
        return due

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        return sum(pool.map(one, range(n)))


def calls(proxy, match):
    with urllib.request.urlopen(f"{proxy}/_faults/calls?match={urllib.parse.quote(match)}") as r:
        return json.load(r)["operations"]


def vendor_calls(standin, secret_key):
    with urllib.request.urlopen(f"{standin}/_standin/calls?secret_key={secret_key}") as r:
        return len(json.load(r)["calls"])


def fleet(args, moto):
    """One fleet for every sweep (queued sweeps change nothing in it)."""
    aws = dict(endpoint_url=moto, region_name="us-east-1", aws_access_key_id="testing",
               aws_secret_access_key="testing")
    sm = boto3.client("secretsmanager", **aws)
    run_id = f"bench{int(time.time() * 1000) % 10**9}"
    prefix = f"{run_id}/p1-key-broker/retrain/"
    secret_key_id = f"{run_id}/p1-key-broker/secret-key"
    secret_key = f"sk-{run_id}"
    sm.create_secret(Name=secret_key_id, SecretString=secret_key)
    made = time.time()
    due = make_fleet(sm, prefix, secret_key_id, args.secrets, args.due_every, args.cohort)
    print(f"bench_sweep: {args.secrets} secrets made in {time.time() - made:.0f} s ({due} expired)",
          file=sys.stderr, flush=True)
    return {"run_id": run_id, "prefix": prefix, "secret_key_id": secret_key_id,
            "secret_key": secret_key, "due": due, "made_s": round(time.time() - made, 1)}


def run(args, moto, proxy, standin, f, queue_mode, read_concurrency):
    aws = dict(endpoint_url=moto, region_name="us-east-1", aws_access_key_id="testing",
               aws_secret_access_key="testing")
    sqs = boto3.client("sqs", **aws)
    run_id, prefix, secret_key_id, secret_key, due, made = (
        f["run_id"], f["prefix"], f["secret_key_id"], f["secret_key"], f["due"], f["made_s"])
    requests_before = calls(proxy, run_id)
    vendor_before = vendor_calls(standin, secret_key)
    env = dict(os.environ,
               AWS_ENDPOINT_URL=proxy, AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_LAMBDA_FUNCTION_TIMEOUT="900",
               P1_SECRET_KEY_SECRET_ID=secret_key_id, P1_API_BASE_URL=standin,
               P1_TRAIN_SECRET_ID=f"{run_id}/p1-key-broker/train",
               P1_DEPLOY_SECRET_ID=f"{run_id}/p1-key-broker/deploy",
               P1_RETRAIN_SECRET_PREFIX=prefix, P1_SWEEP_ENSURE="none",
               P1_SWEEP_MAX_RENEWALS=str(args.secrets), P1_SWEEP_READ_CONCURRENCY=str(read_concurrency),
               RUST_LOG="warn")
    env.pop("P1_RENEW_QUEUE_URL", None)
    if queue_mode:
        name = f"{run_id}-requests-{read_concurrency}"
        env["P1_RENEW_QUEUE_URL"] = sqs.create_queue(QueueName=name)["QueueUrl"]
    port, api = free_port(), free_port()
    log = open(os.path.join(ROOT, "target", "bench", f"sweep-rie-{run_id}.log"), "w")
    rie = start([os.path.join(ROOT, ".venv", "bin", "aws-lambda-rie"), "--log-level", "error",
                 "--runtime-interface-emulator-address", f"127.0.0.1:{port}",
                 "--runtime-api-address", f"127.0.0.1:{api}",
                 os.path.join(ROOT, "target", "release", "p1-key-broker")], log, env)
    try:
        until = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > until:
                    raise SystemExit("bench_sweep: the emulator did not listen")
                time.sleep(0.05)
        started = time.time()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/2015-03-31/functions/function/invocations",
            data=json.dumps({"sweep": "due"}).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=1000) as r:
            report = json.load(r)
        wall = time.time() - started
        pid = subprocess.run(["pgrep", "-f", os.path.join(ROOT, "target", "release", "p1-key-broker")],
                             capture_output=True, text=True).stdout.split()
        rss = None
        if pid:
            with open(f"/proc/{pid[0]}/status") as f:
                rss = next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
    finally:
        os.killpg(rie.pid, signal.SIGTERM)
        rie.wait(timeout=10)
    if (report.get("due") != due and not args.cohort) or report.get("due", 0) < due:
        raise SystemExit(f"bench_sweep: made {due} due, the sweep found {report}")
    after = calls(proxy, run_id)
    return {"mode": "queue" if queue_mode else "renew itself", "reads_in_flight": read_concurrency,
            "secrets": args.secrets, "expired": due, "latency_ms": args.latency_ms,
            "fleet_made_s": made, "wall_s": round(wall, 2),
            "peak_rss_mib": round(rss, 1) if rss else None,
            "aws_calls": {k: v - requests_before.get(k, 0) for k, v in after.items()
                          if v - requests_before.get(k, 0)},
            "vendor_calls": vendor_calls(standin, secret_key) - vendor_before,
            "report": {k: v for k, v in report.items() if k != "names"}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secrets", type=int, default=2000)
    parser.add_argument("--due-every", type=int, default=10)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--read-concurrency", default="8")
    parser.add_argument("--cohort", action="store_true")
    parser.add_argument("--out", default=os.path.join(ROOT, "target", "bench", "sweep.json"))
    args = parser.parse_args()
    os.makedirs(os.path.join(ROOT, "target", "bench"), exist_ok=True)
    py = os.path.join(ROOT, ".venv", "bin", "python")
    moto_port = free_port()
    logs = open(os.path.join(ROOT, "target", "bench", "sweep-services.log"), "w")
    procs = [start([os.path.join(ROOT, ".venv", "bin", "moto_server"), "-H", "127.0.0.1", "-p",
                    str(moto_port)], logs)]
    try:
        moto = f"http://127.0.0.1:{moto_port}"
        wait(f"{moto}/moto-api/")
        standin_port_file = os.path.join(ROOT, "target", "bench", "sweep-standin.port")
        proxy_port_file = os.path.join(ROOT, "target", "bench", "sweep-proxy.port")
        for f in (standin_port_file, proxy_port_file):
            if os.path.exists(f):
                os.remove(f)
        procs.append(start([py, os.path.join(ROOT, "scripts", "vendor_standin.py"), "--port", "0",
                            "--port-file", standin_port_file], logs))
        procs.append(start([py, os.path.join(ROOT, "scripts", "aws_fault_proxy.py"), "--upstream", moto,
                            "--port", "0", "--port-file", proxy_port_file,
                            "--latency-ms", str(args.latency_ms),
                            "--max-recorded-bytes", str(512 * 1024 * 1024)], logs))
        for f in (standin_port_file, proxy_port_file):
            until = time.time() + 20
            while not (os.path.exists(f) and open(f).read().strip()):
                if time.time() > until:
                    raise SystemExit(f"bench_sweep: {f} never written")
                time.sleep(0.05)
        standin = f"http://127.0.0.1:{open(standin_port_file).read().strip()}"
        proxy = f"http://127.0.0.1:{open(proxy_port_file).read().strip()}"
        f = fleet(args, moto)
        levels = [int(x) for x in args.read_concurrency.split(",")]
        results = [run(args, moto, proxy, standin, f, True, rc) for rc in levels]
        results.append(run(args, moto, proxy, standin, f, False, levels[-1]))
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    print(f"{'mode':<14} {'reads':>5} {'secrets':>7} {'due':>5} {'wall_s':>7} {'rss_mib':>8}  calls"
          f" (latency {args.latency_ms:g} ms a call)")
    for r in results:
        c = ", ".join(f"{k} {v}" for k, v in sorted(r["aws_calls"].items()))
        print(f"{r['mode']:<14} {r['reads_in_flight']:>5} {r['secrets']:>7} {r['report'].get('due'):>5} "
              f"{r['wall_s']:>7} {r['peak_rss_mib']:>8}  {c}, vendor {r['vendor_calls']}")
        print(f"{'':<14} report {json.dumps(r['report'])}")
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"(written to {args.out})")


if __name__ == "__main__":
    import urllib.parse  # noqa: F401  (calls())
    sys.exit(main())
