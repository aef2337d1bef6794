#!/usr/bin/env python3
"""Tests of scripts/vendor_standin.py (standard library only).

Starts the stand-in as a subprocess on port 0 (with --port-file in a
temporary directory), exercises the key endpoint, the retraining API, its
pre-signed upload/download URLs and the control endpoints, and stops it on
exit.

    python3 scripts/test_vendor_standin.py [-v] [unittest arguments]
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
from urllib.parse import quote, urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
STANDIN = os.path.join(HERE, "vendor_standin.py")
BAD = 4001000204


class Standin:
    """The stand-in subprocess."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="standin-test-")
        port_file = os.path.join(self.dir, "port")
        self.log_path = os.path.join(self.dir, "standin.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, STANDIN, "--port", "0", "--port-file", port_file],
            stdout=subprocess.PIPE, stderr=self.log)
        deadline = time.monotonic() + 10
        while not (os.path.exists(port_file) and os.path.getsize(port_file)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the stand-in did not start")
            time.sleep(0.05)
        with open(port_file) as f:
            self.port = int(f.read())
        self.banner = self.proc.stdout.readline().decode().strip()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()

    def logs(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def vm_hwm_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmHWM")


STANDIN_PROC: Standin | None = None


def setUpModule():
    global STANDIN_PROC
    STANDIN_PROC = Standin()


def tearDownModule():
    if STANDIN_PROC is not None:
        STANDIN_PROC.stop()
        shutil.rmtree(STANDIN_PROC.dir, ignore_errors=True)


def request(method, target, body=None, headers=None, port=None):
    """(status, headers, body bytes); target is a path or an absolute URL."""
    if target.startswith("http"):
        u = urlsplit(target)
        port = u.port
        target = u.path + ("?" + u.query if u.query else "")
    conn = http.client.HTTPConnection("127.0.0.1", port or STANDIN_PROC.port, timeout=60)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def call_json(method, target, obj=None, headers=None):
    h = dict(headers or {})
    body = None
    if obj is not None:
        body = json.dumps(obj).encode()
        h["Content-Type"] = "application/json"
    status, hdrs, raw = request(method, target, body, h)
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw


def new_model(prefix="m") -> str:
    return f"{prefix}{uuid.uuid4().int % 10**9}"


def issue_key(model_id=None, credential_type="retrain", secret="good-secret"):
    q = f"/v1/external/api-key?credential_type={credential_type}"
    if model_id is not None:
        q += f"&model_id={quote(model_id)}"
    status, obj = call_json("GET", q, headers={"x-api-key": secret})
    assert status == 200, (status, obj)
    return obj["api_key"]


def api(method, path, key, query=""):
    return call_json(method, "/v1/external/retrain_jobs/" + path + query,
                     headers={"x-api-key": key} if key is not None else {})


def upload_url(key, filename="new.csv"):
    return api("GET", "upload_url", key, f"?filename={quote(filename)}")


def jobs(model_id):
    status, obj = call_json("GET", f"/_standin/jobs?model_id={quote(model_id)}")
    assert status == 200
    return obj


def calls(model_id):
    status, obj = call_json("GET", f"/_standin/calls?model_id={quote(model_id)}")
    assert status == 200
    return obj["calls"]


def control(path, obj):
    status, out = call_json("POST", "/_standin/" + path, obj)
    assert status == 200, (status, out)
    return out


class KeyEndpoint(unittest.TestCase):
    def test_banner_and_health(self):
        self.assertEqual(STANDIN_PROC.banner,
                         f"vendor stand-in listening on http://127.0.0.1:{STANDIN_PROC.port}")
        self.assertEqual(call_json("GET", "/_standin/health"), (200, {"ok": True}))

    def test_issue_and_errors_unchanged(self):
        status, obj = call_json("GET", "/v1/external/api-key?credential_type=train",
                                headers={"x-api-key": "sk-1"})
        self.assertEqual(status, 200)
        self.assertEqual(set(obj), {"api_key", "end_date"})
        self.assertEqual(call_json("GET", "/v1/external/api-key?credential_type=train"),
                         (403, {"message": "Forbidden"}))
        for secret, msg in (("invalid-x", "invalid_api_key."),
                            ("inactive-x", "Inactive_credential."),
                            ("notfound-x", "Not_found_credential."),
                            ("deleted-user-x", "This user may be deleted.")):
            self.assertEqual(call_json("GET", "/v1/external/api-key?credential_type=train",
                                       headers={"x-api-key": secret}),
                             (400, {"code": BAD, "error": "PREDA_EXTERNAL_BAD_REQUEST",
                                    "message": msg}))
        status, obj = call_json("GET", "/v1/external/api-key?credential_type=retrain",
                                headers={"x-api-key": "sk-1"})
        self.assertEqual(obj["message"], "Model id is required.")
        status, obj = call_json("GET", "/v1/external/api-key?credential_type=retrain"
                                "&model_id=deleted9", headers={"x-api-key": "sk-1"})
        self.assertEqual(obj["message"], "This model may be deleted.")

    def test_secret_key_script_and_calls(self):
        sk = "sk-script-" + uuid.uuid4().hex
        self.assertEqual(control("script", {"secret_key": sk, "responses": [
            {"status": 503, "body": "busy"}]}), {"queued": 1})
        status, _, raw = request("GET", "/v1/external/api-key?credential_type=train",
                                 headers={"x-api-key": sk})
        self.assertEqual((status, raw), (503, b"busy"))
        status, obj = call_json("GET", "/v1/external/api-key?credential_type=train",
                                headers={"x-api-key": sk})
        self.assertEqual(status, 200)
        _, c = call_json("GET", f"/_standin/calls?secret_key={sk}")
        self.assertEqual([x["status"] for x in c["calls"]], [503, 200])
        control("reset", {"secret_key": sk})
        _, c = call_json("GET", f"/_standin/calls?secret_key={sk}")
        self.assertEqual(c["count"], 0)


class RetrainFlow(unittest.TestCase):
    def test_happy_path(self):
        model = str(100000 + uuid.uuid4().int % 10**6)
        key = issue_key(model)
        status, obj = upload_url(key, "new.csv")
        self.assertEqual(status, 200, obj)
        job_id, url = obj["retrain_job_id"], obj["upload_url"]
        self.assertRegex(job_id, r"^rj-[0-9a-f]{16}$")
        self.assertRegex(url, rf"^http://127\.0\.0\.1:{STANDIN_PROC.port}/_upload/[0-9a-f]{{32}}"
                              r"\?X-Amz-Signature=[0-9a-f]{64}$")

        status, obj = api("GET", job_id, key)
        self.assertEqual(obj["status"], "waiting_upload")
        self.assertEqual(obj["model_id"], int(model))

        # x-api-key refused; no Content-Length refused; bad signature refused.
        status, hdrs, raw = request("PUT", url, b"a,b\n", {"x-api-key": key})
        self.assertEqual(status, 400)
        self.assertIn(b"x-api-key must not be sent to a pre-signed URL", raw)
        conn = http.client.HTTPConnection("127.0.0.1", STANDIN_PROC.port, timeout=30)
        u = urlsplit(url)
        conn.request("PUT", f"{u.path}?{u.query}", body=iter([b"a,b\n", b"1,2\n"]),
                     encode_chunked=True)
        r = conn.getresponse()
        self.assertEqual(r.status, 411)
        r.read()
        conn.close()
        self.assertEqual(request("PUT", url[:-1] + ("0" if url[-1] != "0" else "1"),
                                 b"x")[0], 403)
        self.assertEqual(request("PUT", f"http://127.0.0.1:{STANDIN_PROC.port}/_upload/"
                                 + "0" * 32 + "?X-Amz-Signature=" + "0" * 64, b"x")[0], 403)
        self.assertIsNone(jobs(model)[0]["upload"])

        data = b"a,b\n" + b"1,2\n" * 1000
        status, hdrs, raw = request("PUT", url, data)
        self.assertEqual(status, 200)
        self.assertEqual(hdrs["ETag"], '"%s"' % hashlib.md5(data).hexdigest())
        job = jobs(model)[0]
        self.assertEqual(job["upload"], {"bytes": len(data),
                                         "sha256": hashlib.sha256(data).hexdigest(),
                                         "content_length_header": len(data),
                                         "content_type": None, "x_api_key_seen": False})
        self.assertEqual(job["status"], "running")
        self.assertEqual(job["upload_puts"], 4)  # the unknown token is no PUT of this job

        self.assertEqual(api("GET", job_id, key)[1]["status"], "running")
        status, obj = api("PUT", job_id + "/update_model", key)
        self.assertEqual(obj["message"], "Retrain job is not finished.")
        self.assertEqual(api("GET", job_id, key)[1]["status"], "running")
        status, obj = api("GET", job_id, key)
        self.assertEqual(obj["status"], "job_finished")
        self.assertNotIn("message", obj)
        self.assertEqual(obj["metadata"], {"retrain_job_id": job_id})
        durl = obj["download_url"]
        self.assertRegex(durl, rf"^http://127\.0\.0\.1:{STANDIN_PROC.port}/_download/"
                               r"[0-9a-f]{32}\?X-Amz-Signature=[0-9a-f]{64}$")
        self.assertEqual(api("GET", job_id, key)[1]["download_url"], durl)  # stable

        self.assertEqual(request("GET", durl, headers={"x-api-key": key})[0], 400)
        self.assertEqual(request("GET", durl[:-3] + "xyz")[0], 403)
        status, hdrs, raw = request("GET", durl)
        self.assertEqual(status, 200)
        self.assertEqual(hdrs["Content-Type"], "application/zip")
        self.assertEqual(hdrs["Content-Length"], "2048")
        self.assertEqual(len(raw), 2048)
        job = jobs(model)[0]
        self.assertEqual(job["results_sha256"], hashlib.sha256(raw).hexdigest())
        self.assertEqual(job["results_size"], 2048)
        self.assertEqual(request("GET", durl)[2], raw)  # deterministic

        status, obj = api("PUT", job_id + "/update_model", key)
        self.assertEqual((status, obj), (200, {"metadata": {"retrain_job_id": job_id}}))
        job = jobs(model)[0]
        self.assertTrue(job["switched"])
        self.assertEqual(job["switch_calls"], 1)
        self.assertEqual(job["status_calls"], 5)
        self.assertEqual(job["download_gets"], 4)

        listing = json.dumps(jobs(model))
        self.assertNotIn(urlsplit(url).path.split("/")[-1], listing)
        self.assertNotIn(key, json.dumps(calls(model)))
        endpoints = [(c["endpoint"], c["status_code"], c["had_api_key"]) for c in calls(model)]
        self.assertEqual(endpoints[:4], [("upload_url", 200, True), ("status", 200, True),
                                         ("upload", 400, True), ("upload", 411, False)])
        self.assertIn(("upload", 200, False), endpoints)
        self.assertIn(("download", 400, True), endpoints)
        self.assertEqual(endpoints[-1], ("update_model", 200, True))

        logs = STANDIN_PROC.logs()
        self.assertNotIn(key, logs)
        self.assertNotIn(urlsplit(url).path, logs)
        self.assertNotIn(urlsplit(durl).path, logs)
        self.assertIn("PUT /_upload/* 200", logs)
        self.assertIn("GET /_download/* 200", logs)

    def test_second_put_replaces_upload(self):
        model = new_model()
        key = issue_key(model)
        _, obj = upload_url(key, "x.zip")
        self.assertEqual(request("PUT", obj["upload_url"], b"first",
                                 {"Content-Type": "application/zip"})[0], 200)
        self.assertEqual(request("PUT", obj["upload_url"], b"second!")[0], 200)
        job = jobs(model)[0]
        self.assertEqual(job["upload"]["bytes"], 7)
        self.assertEqual(job["upload"]["content_type"], None)
        self.assertEqual(job["upload_puts"], 2)
        self.assertEqual(job["filename"], "x.zip")
        self.assertEqual(api("GET", obj["retrain_job_id"], key)[1]["model_id"], model)

    def test_dropped_upload_records_nothing(self):
        model = new_model()
        key = issue_key(model)
        _, obj = upload_url(key)
        u = urlsplit(obj["upload_url"])
        s = socket.create_connection(("127.0.0.1", STANDIN_PROC.port))
        s.sendall(f"PUT {u.path}?{u.query} HTTP/1.1\r\nHost: x\r\n"
                  f"Content-Length: 100000\r\n\r\n".encode() + b"x" * 5000)
        s.close()
        time.sleep(0.3)
        job = jobs(model)[0]
        self.assertIsNone(job["upload"])
        self.assertEqual(job["status"], "waiting_upload")
        self.assertEqual(call_json("GET", "/_standin/health")[0], 200)
        self.assertEqual(request("PUT", obj["upload_url"], b"ok")[0], 200)


class RetrainErrors(unittest.TestCase):
    def test_credentials(self):
        model = new_model()
        self.assertEqual(upload_url(None), (403, {"message": "Forbidden"}))
        self.assertEqual(upload_url("p1k_never"),
                         (400, {"code": BAD, "error": "PREDA_EXTERNAL_BAD_REQUEST",
                                "message": "invalid_api_key."}))
        train = issue_key(None, "train")
        self.assertEqual(upload_url(train)[1]["message"], "Not_found_credential.")
        deploy = issue_key(model, "deploy")
        self.assertEqual(upload_url(deploy)[1]["message"], "Not_found_credential.")

        old = issue_key(model)
        _, obj = upload_url(old)
        job_id = obj["retrain_job_id"]
        self.assertEqual(control("revoke", {"model_id": model}), {"revoked": 1})
        for status, o in (upload_url(old), api("GET", job_id, old),
                          api("PUT", job_id + "/update_model", old)):
            self.assertEqual((status, o["message"]), (400, "Inactive_credential."))
        new = issue_key(model)
        self.assertEqual(api("GET", job_id, new)[1]["status"], "waiting_upload")
        self.assertEqual([c["status_code"] for c in calls(model)], [400, 200, 400, 400, 400, 200])

    def test_documented_errors(self):
        # "deleted…" models get no retrain key at all (the key endpoint
        # refuses them), so upload_url's "This model may be deleted." is
        # reachable only through a script.
        model = new_model("deleted")
        status, obj = call_json("GET", "/v1/external/api-key?credential_type=retrain"
                                f"&model_id={model}", headers={"x-api-key": "sk-1"})
        self.assertEqual(obj["message"], "This model may be deleted.")
        model = new_model("noconfig")
        key = issue_key(model)
        self.assertEqual(upload_url(key), (500, {"code": 5001000201,
                                                 "error": "PREDA_EXTERNAL_INTERNAL_SERVER_ERROR",
                                                 "message": "Not found configuration_file."}))
        model = new_model()
        key = issue_key(model)
        for q in ("", "?filename="):
            self.assertEqual(api("GET", "upload_url", key, q)[1]["message"],
                             "filename is required.")
        self.assertEqual(api("GET", "rj-unknown", key)[1]["message"], "Not found retrain job.")
        self.assertEqual(api("PUT", "rj-unknown/update_model", key)[1]["message"],
                         "Not found retrain job.")
        other = new_model()
        okey = issue_key(other)
        _, obj = upload_url(okey)
        self.assertEqual(api("GET", obj["retrain_job_id"], key)[1]["message"],
                         "Not found retrain job.")
        self.assertEqual(api("PUT", obj["retrain_job_id"] + "/update_model", key)[1]["message"],
                         "Not found retrain job.")

        ncm = new_model("noclassifier")
        nkey = issue_key(ncm)
        control("retrain", {"model_id": ncm, "running_polls": 0})
        _, obj = upload_url(nkey)
        request("PUT", obj["upload_url"], b"x")
        self.assertEqual(api("GET", obj["retrain_job_id"], nkey)[1]["status"], "job_finished")
        self.assertEqual(api("PUT", obj["retrain_job_id"] + "/update_model", nkey)[1]["message"],
                         "Not found classifier.")

    def test_deleted_job(self):
        model = new_model()
        key = issue_key(model)
        control("retrain", {"model_id": model, "running_polls": 0})
        _, obj = upload_url(key)
        job_id = obj["retrain_job_id"]
        request("PUT", obj["upload_url"], b"x")
        durl = api("GET", job_id, key)[1]["download_url"]
        self.assertEqual(control("delete_job", {"retrain_job_id": job_id}), {"deleted": True})
        self.assertEqual(api("GET", job_id, key)[1]["message"], "This job may be deleted.")
        self.assertEqual(api("PUT", job_id + "/update_model", key)[1]["message"],
                         "This job may be deleted.")
        self.assertEqual(request("GET", durl)[0], 404)
        self.assertEqual(request("PUT", obj["upload_url"], b"x")[0], 403)
        self.assertEqual(call_json("POST", "/_standin/delete_job",
                                   {"retrain_job_id": "rj-nope"})[0], 400)


class RetrainControls(unittest.TestCase):
    def test_settings_apply_to_later_jobs(self):
        model = new_model()
        key = issue_key(model)
        _, first = upload_url(key)
        control("retrain", {"model_id": model, "running_polls": 1, "final_status": "job_failed",
                            "message": "bad data", "results_size": 10})
        _, second = upload_url(key)
        for obj in (first, second):
            request("PUT", obj["upload_url"], b"x")
        self.assertEqual(api("GET", second["retrain_job_id"], key)[1]["status"], "running")
        status, obj = api("GET", second["retrain_job_id"], key)
        self.assertEqual((obj["status"], obj["message"]), ("job_failed", "bad data"))
        self.assertNotIn("download_url", obj)
        self.assertEqual(api("PUT", second["retrain_job_id"] + "/update_model", key)[1]["message"],
                         "Retrain job is not finished.")
        statuses = [api("GET", first["retrain_job_id"], key)[1]["status"] for _ in range(3)]
        self.assertEqual(statuses, ["running", "running", "job_finished"])
        listed = jobs(model)
        self.assertEqual([j["retrain_job_id"] for j in listed],
                         [first["retrain_job_id"], second["retrain_job_id"]])
        self.assertEqual(listed[1]["settings"]["final_status"], "job_failed")

        self.assertEqual(call_json("POST", "/_standin/retrain",
                                   {"model_id": model, "bogus": 1})[0], 400)
        self.assertEqual(call_json("POST", "/_standin/retrain",
                                   {"model_id": model, "running_polls": -1})[0], 400)

    def test_never_finish_no_download_url_chunked(self):
        model = new_model()
        key = issue_key(model)
        control("retrain", {"model_id": model, "never_finish": True})
        _, a = upload_url(key)
        request("PUT", a["upload_url"], b"x")
        self.assertEqual({api("GET", a["retrain_job_id"], key)[1]["status"] for _ in range(6)},
                         {"running"})
        control("retrain", {"model_id": model, "running_polls": 0, "no_download_url": True})
        _, b = upload_url(key)
        request("PUT", b["upload_url"], b"x")
        obj = api("GET", b["retrain_job_id"], key)[1]
        self.assertEqual(obj["status"], "job_finished")
        self.assertNotIn("download_url", obj)
        control("retrain", {"model_id": model, "running_polls": 0, "results_chunked": True,
                            "results_size": 200_000})
        _, c = upload_url(key)
        request("PUT", c["upload_url"], b"x")
        durl = api("GET", c["retrain_job_id"], key)[1]["download_url"]
        status, hdrs, raw = request("GET", durl)
        self.assertEqual(status, 200)
        self.assertEqual(hdrs["Transfer-Encoding"], "chunked")
        self.assertIsNone(hdrs["Content-Length"])
        self.assertEqual(len(raw), 200_000)
        job = [j for j in jobs(model) if j["retrain_job_id"] == c["retrain_job_id"]][0]
        self.assertEqual(job["results_sha256"], hashlib.sha256(raw).hexdigest())

    def test_model_scripts(self):
        model = new_model()
        key = issue_key(model)
        control("script", {"model_id": model, "endpoint": "upload_url",
                           "responses": [{"status": 502, "body": "<html>bad gateway</html>"}]})
        status, _, raw = request("GET", "/v1/external/retrain_jobs/upload_url?filename=a.csv",
                                 headers={"x-api-key": key})
        self.assertEqual((status, raw), (502, b"<html>bad gateway</html>"))
        self.assertEqual(jobs(model), [])
        _, obj = upload_url(key)
        job_id = obj["retrain_job_id"]

        control("script", {"model_id": model, "endpoint": "upload",
                           "responses": [{"status": 503, "body": "SlowDown"}, {"drop": True}]})
        self.assertEqual(request("PUT", obj["upload_url"], b"x" * 300_000)[0], 503)
        with self.assertRaises((ConnectionError, http.client.HTTPException)):
            request("PUT", obj["upload_url"], b"x" * 300_000)
        self.assertIsNone(jobs(model)[0]["upload"])
        self.assertEqual(request("PUT", obj["upload_url"], b"x" * 300_000)[0], 200)

        control("script", {"model_id": model, "endpoint": "status", "responses": [
            {"status": 429, "json": {"message": "Too Many Requests"}}]})
        self.assertEqual(api("GET", job_id, key), (429, {"message": "Too Many Requests"}))
        statuses = [api("GET", job_id, key)[1]["status"] for _ in range(3)]
        self.assertEqual(statuses, ["running", "running", "job_finished"])
        durl = api("GET", job_id, key)[1]["download_url"]

        control("script", {"model_id": model, "endpoint": "download",
                           "responses": [{"status": 500, "body": "InternalError"}]})
        self.assertEqual(request("GET", durl)[0], 500)
        self.assertEqual(request("GET", durl)[0], 200)

        control("script", {"model_id": model, "endpoint": "update_model", "responses": [
            {"json": {"code": BAD, "error": "PREDA_EXTERNAL_BAD_REQUEST",
                      "message": "Inactive_credential."}, "status": 400}]})
        self.assertEqual(api("PUT", job_id + "/update_model", key)[1]["message"],
                         "Inactive_credential.")
        self.assertEqual(api("PUT", job_id + "/update_model", key)[0], 200)
        self.assertEqual(jobs(model)[0]["switch_calls"], 1)

        self.assertEqual(call_json("POST", "/_standin/script",
                                   {"model_id": model, "endpoint": "nope", "responses": []})[0],
                         400)
        codes = [(c["endpoint"], c["status_code"]) for c in calls(model)]
        self.assertEqual(codes, [
            ("upload_url", 502), ("upload_url", 200), ("upload", 503), ("upload", 0),
            ("upload", 200), ("status", 429), ("status", 200), ("status", 200), ("status", 200),
            ("status", 200), ("download", 500), ("download", 200), ("update_model", 400),
            ("update_model", 200)])

        control("reset", {"model_id": model})
        self.assertEqual(jobs(model), [])
        self.assertEqual(calls(model), [])
        self.assertEqual(api("GET", job_id, key)[1]["message"], "Not found retrain job.")
        self.assertEqual(upload_url(key)[0], 200)  # the key still works


class BigUpload(unittest.TestCase):
    def test_200_mib_upload_has_bounded_memory(self):
        model = new_model()
        key = issue_key(model)
        _, obj = upload_url(key, "big.csv")
        u = urlsplit(obj["upload_url"])
        size = 200 * 1024 * 1024
        block = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB
        expected = hashlib.sha256()

        def body():
            left = size
            while left:
                piece = block[:min(len(block), left)]
                expected.update(piece)
                left -= len(piece)
                yield piece

        conn = http.client.HTTPConnection("127.0.0.1", STANDIN_PROC.port, timeout=120)
        conn.request("PUT", f"{u.path}?{u.query}", body=body(),
                     headers={"Content-Length": str(size)})
        r = conn.getresponse()
        r.read()
        conn.close()
        self.assertEqual(r.status, 200)
        up = jobs(model)[0]["upload"]
        self.assertEqual((up["bytes"], up["sha256"]), (size, expected.hexdigest()))

        # A big results file, streamed, too.
        control("retrain", {"model_id": model, "running_polls": 0,
                            "results_size": 150 * 1024 * 1024})
        _, obj = upload_url(key, "big2.csv")
        request("PUT", obj["upload_url"], b"x")
        durl = api("GET", obj["retrain_job_id"], key)[1]["download_url"]
        du = urlsplit(durl)
        conn = http.client.HTTPConnection("127.0.0.1", STANDIN_PROC.port, timeout=120)
        conn.request("GET", f"{du.path}?{du.query}")
        r = conn.getresponse()
        got = hashlib.sha256()
        n = 0
        while True:
            piece = r.read(1 << 20)
            if not piece:
                break
            got.update(piece)
            n += len(piece)
        conn.close()
        self.assertEqual(n, 150 * 1024 * 1024)
        job = [j for j in jobs(model) if j["retrain_job_id"] == obj["retrain_job_id"]][0]
        self.assertEqual(job["results_sha256"], got.hexdigest())

        hwm_mib = STANDIN_PROC.vm_hwm_kib() / 1024
        self.assertLess(hwm_mib, 80, f"stand-in VmHWM {hwm_mib:.1f} MiB")
        print(f"stand-in VmHWM {hwm_mib:.1f} MiB", file=sys.stderr)


class Help(unittest.TestCase):
    def test_help(self):
        out = subprocess.run([sys.executable, STANDIN, "--help"], capture_output=True,
                             timeout=30)
        self.assertEqual(out.returncode, 0)
        self.assertIn(b"--tls-cert", out.stdout)


if __name__ == "__main__":
    unittest.main()
