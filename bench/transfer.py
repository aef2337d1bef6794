#!/usr/bin/env python3
"""The retrain runner's streamed transfers on loopback (run it through
scripts/bench_transfer.sh, or scripts/bench.sh, which runs it after the
cold starts).

The release binary of p1-retrain, under the cold-start benchmark's minimal
Lambda Runtime API (scripts/bench_cold_start.py), moves an object of N MiB
from S3 (moto) to the upload URL (the vendor stand-in), and the job's
results file of N MiB back into S3, in two passes:

  pass 1   `start` of retrain/<model>/large-1.csv, then `save_results` of a
           download with a Content-Length (one streamed PutObject)
  pass 2   `start` of retrain/<model>/large-2.csv (another object: a
           `start` of the same one would answer pass 1's job without an
           upload), then `save_results` of a chunked download (a multipart
           upload in 8 MiB parts)

For each transfer it records

  seconds      event written -> answer received
  MiB/s        N MiB / seconds
  cpu_s        the runner's own CPU for that invocation (all threads,
               /proc/<pid>/task/*/schedstat, from one /next to the next)
  peak_rss     VmHWM over that invocation alone (reset before it through
               /proc/<pid>/clear_refs)

and checks what arrived: the stand-in's SHA-256 of the upload against the
data, and the saved object's against the stand-in's results. One runner
process serves all four invocations, as one warm Lambda instance would.

The stand-ins are moto_server and scripts/vendor_standin.py as the tests
run them (stock: moto closes every connection), plain HTTP, on loopback,
started and stopped here. Loopback only, and moto keeps objects in memory
and temporary files: the figures say what the runner itself costs, not what
S3 or a real pre-signed host would sustain. A benchmark, not a test.
"""
import argparse
import datetime
import hashlib
import json
import os
import signal
import sys
import time
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import bench_cold_start as harness  # noqa: E402  (RuntimeAPI, Instance, StandIns)

REGION = harness.REGION
MIB = 1 << 20
PASSES = (
    ("length", False, "download URL -> S3, with a length (`save_results`: one PutObject)"),
    ("chunked", True, "download URL -> S3, chunked (`save_results`: multipart, 8 MiB parts)"),
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mib", type=int, default=1024, help="size of the object and of the results (1024)")
    p.add_argument("--binary", default="target/release/p1-retrain")
    p.add_argument("--no-verify", action="store_true", help="skip the SHA-256 checks of what arrived")
    p.add_argument("--json", default="target/bench/transfer.json", help="where the figures go")
    a = p.parse_args(argv)
    if a.mib < 1:
        p.error("--mib must be at least 1")
    return a


def log(msg):
    print(f"bench transfer: {msg}", file=sys.stderr, flush=True)


def make_data(path, size):
    """`size` bytes of non-repeating data (a 1 MiB block, each copy
    numbered), written to `path`; returns its SHA-256."""
    block = hashlib.shake_256(b"p1-bench-transfer").digest(MIB)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        i, left = 0, size
        while left:
            chunk = (i.to_bytes(8, "little") + block[8:])[:left]
            f.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
            i += 1
    return digest.hexdigest()


def reset_peak(inst):
    """Resets the process's VmHWM to its current RSS (Linux 4.0+)."""
    try:
        with open(f"/proc/{inst.proc.pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Transfers:
    def __init__(self, args):
        self.args = args
        self.run = uuid.uuid4().hex[:8]
        self.out_dir = os.path.dirname(os.path.abspath(args.json))
        self.logs = os.path.join(self.out_dir, "logs", "transfer")
        os.makedirs(self.logs, exist_ok=True)
        self.model = f"bench-transfer-{self.run}"
        self.bucket = f"p1-bench-transfer-{self.run}"

    def vendor(self, method, path, body=None):
        req = urllib.request.Request(self.standins.vendor + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def job(self, job_id):
        jobs = self.vendor("GET", f"/_standin/jobs?model_id={self.model}")
        return next(j for j in jobs if j["retrain_job_id"] == job_id)

    def object_sha256(self, key):
        digest, n = hashlib.sha256(), 0
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        for chunk in body.iter_chunks(MIB):
            digest.update(chunk)
            n += len(chunk)
        return digest.hexdigest(), n

    def measure(self, inst, payload):
        peak_reset = reset_peak(inst)
        wall_ms, cpu_ms, answer = inst.invoke(payload)
        return answer, {"seconds": wall_ms / 1000, "mib_per_s": self.args.mib / (wall_ms / 1000),
                        "cpu_s": cpu_ms / 1000, "peak_rss_mib": inst.hwm_mib(),
                        "peak_is_since_start": not peak_reset}

    def env(self, secret_key_id):
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "TZ": ":UTC",
            "LAMBDA_TASK_ROOT": ROOT,
            "AWS_LAMBDA_FUNCTION_NAME": "bench-transfer-runner",
            # RetrainRunnerMemorySize's default.
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL": self.standins.aws,
            "P1_API_BASE_URL": self.standins.vendor,
            "P1_SECRET_KEY_SECRET_ID": secret_key_id,
            "P1_RETRAIN_SECRET_PREFIX": f"bench-transfer-{self.run}/retrain/",
        }

    def run_all(self):
        import boto3
        from botocore.config import Config

        a = self.args
        size = a.mib * MIB
        started = time.monotonic()
        data_path = os.path.join(self.out_dir, f"transfer-data-{self.run}.bin")
        inst = None
        self.standins = None
        try:
            self.standins = harness.StandIns("http", None, self.logs, stock=True)
            creds = {"endpoint_url": self.standins.aws, "region_name": REGION,
                     "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
            self.s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"},
                                                       request_checksum_calculation="when_required",
                                                       retries={"max_attempts": 1}), **creds)
            sm = boto3.client("secretsmanager", **creds)
            secret_key_id = f"bench-transfer-{self.run}/secret-key"
            sm.create_secret(Name=secret_key_id, SecretString=f"sk-bench-transfer-{self.run}")
            self.s3.create_bucket(Bucket=self.bucket)
            log(f"writing {a.mib} MiB of data")
            data_sha = make_data(data_path, size)

            inst = harness.Instance("runner", [os.path.abspath(a.binary)], self.env(secret_key_id), ROOT,
                                    os.path.join(self.logs, "runner.log"),
                                    deadline_ms=900_000)
            inst.wait_parked(1)
            out = {"rss_init_mib": inst.hwm_mib(), "passes": []}
            for n, (name, chunked, label) in enumerate(PASSES, 1):
                key = f"retrain/{self.model}/large-{n}.csv"
                log(f"pass {n}: putting {a.mib} MiB into moto")
                with open(data_path, "rb") as body:
                    self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentLength=size)
                # Settings are taken by the jobs created after them.
                self.vendor("POST", "/_standin/retrain", {"model_id": self.model, "running_polls": 0,
                                                           "results_size": size, "results_chunked": chunked})
                log(f"pass {n}: start ({a.mib} MiB S3 -> upload URL)")
                answer, start = self.measure(inst, {"action": "start", "bucket": self.bucket, "key": key})
                if answer.get("bytes") != size or not answer.get("retrain_job_id"):
                    raise harness.Failure(f"start answered {answer}")
                job_id = answer["retrain_job_id"]
                if not a.no_verify:
                    upload = self.job(job_id)["upload"] or {}
                    if upload.get("sha256") != data_sha or upload.get("bytes") != size:
                        raise harness.Failure(f"pass {n}: the stand-in got {upload}, not the data")
                _, _, status = inst.invoke({"action": "status", "model_id": self.model,
                                            "retrain_job_id": job_id})
                if status.get("state") != "finished":
                    raise harness.Failure(f"status answered {status}")
                results_key = f"retrain-results/{self.model}/{job_id}/results"
                log(f"pass {n}: save_results ({a.mib} MiB download URL -> S3, "
                    f"{'chunked' if chunked else 'with a length'})")
                answer, save = self.measure(inst, {"action": "save_results", "model_id": self.model,
                                                   "retrain_job_id": job_id, "bucket": self.bucket,
                                                   "key": results_key})
                if answer.get("bytes") != size:
                    raise harness.Failure(f"save_results answered {answer}")
                if not a.no_verify:
                    sha, n_bytes = self.object_sha256(results_key)
                    if sha != self.job(job_id)["results_sha256"] or n_bytes != size:
                        raise harness.Failure(f"pass {n}: the saved results differ from the stand-in's")
                out["passes"].append({"pass": n, "results": name, "label": label,
                                      "start": start, "save_results": save})
                for k in (key, results_key):  # moto's memory and temporary files
                    self.s3.delete_object(Bucket=self.bucket, Key=k)
            out["threads"] = inst.threads()
        finally:
            if inst is not None:
                inst.stop()
            if self.standins is not None:
                self.standins.stop()
            if os.path.exists(data_path):
                os.remove(data_path)
        out["seconds"] = time.monotonic() - started
        return out


def rows(result):
    """(figure, {column: value}) for the table; columns as COLUMNS."""
    out = []
    for p in result["passes"]:
        out.append((f"S3 -> upload URL (`start`), pass {p['pass']}", p["start"]))
    for p in result["passes"]:
        out.append((p["label"], p["save_results"]))
    return out


COLUMNS = (("seconds", "time, s"), ("mib_per_s", "MiB/s"), ("cpu_s", "runner CPU, s"),
           ("peak_rss_mib", "runner peak RSS, MiB"))


def _fmt(v):
    return "-" if v is None else f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def heading(result):
    return (f"transfers, p1-retrain (release): {result['mib']} MiB each way, plain HTTP, loopback, "
            f"stock moto and vendor stand-in; {result['seconds']:.0f} s")


def notes(result):
    return (f"peak RSS is VmHWM over that invocation alone (reset before it); the runner's at its "
            f"first /next: {result['rss_init_mib']:.1f} MiB. One process, the four transfers in "
            f"this order: start 1, save with a length, start 2, save chunked.")


def render_text(result):
    width = max(len(name) for name, _ in rows(result)) + 2
    lines = [heading(result), "  " + "transfer".ljust(width) + "".join(c.rjust(22) for _, c in COLUMNS)]
    for name, v in rows(result):
        lines.append("  " + name.ljust(width) + "".join(_fmt(v.get(k)).rjust(22) for k, _ in COLUMNS))
    lines.append("  " + notes(result))
    return "\n".join(lines)


def render_markdown(result):
    lines = [f"**{heading(result)}**", "",
             f"| transfer of {result['mib']} MiB | " + " | ".join(c for _, c in COLUMNS) + " |",
             "| --- |" + " ---: |" * len(COLUMNS)]
    for name, v in rows(result):
        lines.append(f"| {name.replace('->', '→')} | " + " | ".join(_fmt(v.get(k)) for k, _ in COLUMNS) + " |")
    lines += ["", notes(result).replace("/next", "`/next`")]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.chdir(ROOT)
    if not os.path.exists(args.binary):
        raise SystemExit(f"bench transfer: {args.binary} is missing (scripts/bench_transfer.sh builds it)")
    out = Transfers(args).run_all()
    result = {"schema": 1,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "mib": args.mib, "binary": args.binary, "verified": not args.no_verify,
              "stand_ins": "stock moto_server and scripts/vendor_standin.py, plain HTTP, loopback",
              "runtime": "the cold-start benchmark's minimal Runtime API (scripts/bench_cold_start.py)",
              **out}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print(render_text(result))
    log(f"wrote {args.json}")


if __name__ == "__main__":
    try:
        main()
    except harness.Failure as e:
        raise SystemExit(f"bench transfer: {e}")
