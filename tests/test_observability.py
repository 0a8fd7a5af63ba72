"""Observability: the alert rules, the scrape config and the dashboard refer to metrics the code
exports, and the metrics agree with what actually happened on a live API and worker (also with
several uvicorn processes sharing PROMETHEUS_MULTIPROC_DIR).

``promtool`` (Debian package ``prometheus``) is used when it is on PATH: ``check rules``,
``check config``, ``check metrics`` on real scrapes, and unit tests that make each alert fire
(and stay quiet) on synthetic series. Without it those parts are skipped.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conftest import CORPUS, ROOT, corpus_files, require_tool, upload
from scripts.lib.procs import free_port

DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROM_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboard.json"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
UPLOAD_ROUTE = "/api/v1/index-product-with-image"
HOSTILE_DECODE = CORPUS / "hostile" / "truncated_jpeg.jpg"  # passes the API's header probe, fails decode
PROMTOOL = shutil.which("promtool")
PROMTOOL_HOW = "apt-get install prometheus (Debian), or run .ci/run as root, which installs it"

DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                "bool", "offset", "inf", "nan", "atan2"}


# -- helpers ------------------------------------------------------------------------------------
def load_alerts() -> dict:
    return yaml.safe_load(ALERTS.read_text())


def alert_rules() -> list[dict]:
    return [rule for group in load_alerts()["groups"] for rule in group["rules"]]


def dashboard_panels(panels: list[dict] | None = None) -> list[dict]:
    """Every panel, rows' nested panels included."""
    out = []
    for p in panels if panels is not None else json.loads(DASHBOARD.read_text())["panels"]:
        out.append(p)
        out += dashboard_panels(p.get("panels", []))
    return out


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p.get("targets", []) if t.get("expr")]


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers that are not functions, keywords,
    label names (in {...} and by/without/on/ignoring lists), strings or ranges."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^{}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", e):
        if m.group().lower() in PROMQL_WORDS or e[m.end():].lstrip().startswith("("):
            continue
        names.add(m.group())
    return names


def exposed_names(families) -> set[str]:
    """The sample names a set of metric families can expose (labelled families may have no
    sample yet, so the names come from the family's type)."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "gauge": ("",), "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}
    names = set()
    for fam in families:
        names |= {fam.name + s for s in suffixes.get(fam.type, ("",))}
        names |= {s.name for s in fam.samples}
    return names


def code_metric_names() -> set[str]:
    from api.metrics import ApiMetrics
    from batcher.metrics import WorkerMetrics

    api = ApiMetrics()
    worker = WorkerMetrics(CollectorRegistry())
    # the API's scrape-time gauges (queue depth, Redis up) come from a real exposition
    scrape = list(text_string_to_metric_families(api.exposition(0).decode()))
    return exposed_names(api.registry.collect()) | exposed_names(worker.registry.collect()) \
        | exposed_names(scrape) | {"up"}


def parse_scrape(text: str) -> list[tuple[str, dict, float]]:
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def sample(samples, name: str, **labels) -> float | None:
    """The one sample called ``name`` whose labels include ``labels``; None when there is none."""
    found = [v for n, l, v in samples if n == name and all(l.get(k) == v2 for k, v2 in labels.items())]
    assert len(found) <= 1, f"{len(found)} samples {name}{labels}: {found}"
    return found[0] if found else None


def promtool(*args: str, cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    exe = require_tool("promtool", PROMTOOL_HOW)
    return subprocess.run([exe, *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=60)


# -- (a) the alert rules ----------------------------------------------------------------------
def test_alert_rules_structure():
    doc = load_alerts()
    assert set(doc) == {"groups"} and doc["groups"], "alerts.yml must be {groups: [...]}"
    group_names = [g["name"] for g in doc["groups"]]
    assert len(group_names) == len(set(group_names)), f"duplicate group names: {group_names}"
    seen = set()
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"}, group.keys()
        assert group["rules"], f"group {group['name']} has no rules"
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule
            name = rule["alert"]
            assert re.fullmatch(r"Clipq[A-Z][A-Za-z0-9]+", name), name
            assert name not in seen, f"duplicate alert {name}"
            seen.add(name)
            assert isinstance(rule["expr"], str) and rule["expr"].strip(), name
            assert DURATION.match(str(rule["for"])), f"{name}: for={rule['for']!r}"
            assert rule["labels"]["severity"] in ("warning", "critical"), name
            assert rule["annotations"]["summary"].strip() and rule["annotations"]["description"].strip(), name

    def one(pattern: str) -> dict:
        found = [r for r in alert_rules() if re.search(pattern, re.sub(r"\s+", " ", r["expr"]))]
        assert found, f"no alert whose expr matches {pattern!r}"
        return found[0]

    one(r'rate\(clipq_jobs_total\{outcome="failed"\}')
    growing = one(r"(deriv|delta)\(clipq_queue_depth\[10m\]\)\)* > 0")
    assert growing["for"] == "10m"
    one(r"absent\(clipq_worker_info|up\{job=\"worker\"\} == 0")
    one(r"histogram_quantile\(0\.99, .*clipq_enqueue_duration_seconds_bucket.*\) > 0\.05")


def test_promtool_checks_rules_and_config(tmp_path):
    res = promtool("check", "rules", str(ALERTS))
    assert res.returncode == 0, res.stdout + res.stderr
    # the config names the rules at their path in the container; point it at the real file
    config = PROM_CONFIG.read_text().replace("/etc/prometheus/alerts.yml", str(ALERTS))
    (tmp_path / "prometheus.yml").write_text(config)
    res = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert res.returncode == 0, res.stdout + res.stderr


# Synthetic series for each alert: it fires when it should and stays quiet when it should not.
ALERT_UNIT_TESTS = """
rule_files: [{alerts}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'clipq_jobs_total{{outcome="failed", instance="w1", job="worker"}}'
        values: '0+2x30'
      - series: 'clipq_jobs_total{{outcome="completed", instance="w1", job="worker"}}'
        values: '0+10x30'
    alert_rule_test:
      - {{eval_time: 15m, alertname: ClipqJobsFailing,
          exp_alerts: [{{exp_labels: {{severity: warning}}}}]}}
      - {{eval_time: 25m, alertname: ClipqJobFailureRatioHigh,
          exp_alerts: [{{exp_labels: {{severity: critical}}}}]}}
  - interval: 1m
    input_series:
      - series: 'clipq_jobs_total{{outcome="failed", instance="w1", job="worker"}}'
        values: '0x30'
      - series: 'clipq_jobs_total{{outcome="completed", instance="w1", job="worker"}}'
        values: '0+10x30'
    alert_rule_test:
      - {{eval_time: 25m, alertname: ClipqJobsFailing, exp_alerts: []}}
      - {{eval_time: 25m, alertname: ClipqJobFailureRatioHigh, exp_alerts: []}}
  - interval: 1m
    input_series:
      - series: 'clipq_queue_depth{{instance="api:8000", job="api"}}'
        values: '0+5x40'
      - series: 'clipq_queue_depth{{instance="api2:8000", job="api"}}'
        values: '0+5x40'
    alert_rule_test:
      - {{eval_time: 5m, alertname: ClipqQueueGrowing, exp_alerts: []}}
      - {{eval_time: 25m, alertname: ClipqQueueGrowing, exp_alerts: [{{exp_labels: {{severity: warning}}}}]}}
  - interval: 1m
    input_series:
      - series: 'clipq_queue_depth{{instance="api:8000", job="api"}}'
        values: '500x40'
    alert_rule_test:
      - {{eval_time: 30m, alertname: ClipqQueueGrowing, exp_alerts: []}}
  - interval: 1m
    input_series:
      - series: 'up{{job="worker", instance="w1:9100"}}'
        values: '1 1 1 0x15'
      - series: 'clipq_worker_info{{job="worker", instance="w1:9100", worker_id="w1", device="cpu", model="m"}}'
        values: '1 1 1 _x15'
    alert_rule_test:
      - {{eval_time: 2m, alertname: ClipqNoWorker, exp_alerts: []}}
      - {{eval_time: 2m, alertname: ClipqWorkerDown, exp_alerts: []}}
      # the last sample stays visible for the 5m look-back, then absent() holds for 2m
      - {{eval_time: 6m, alertname: ClipqNoWorker, exp_alerts: []}}
      - {{eval_time: 12m, alertname: ClipqNoWorker, exp_alerts: [{{exp_labels: {{severity: critical}}}}]}}
      - {{eval_time: 9m, alertname: ClipqWorkerDown,
          exp_alerts: [{{exp_labels: {{severity: warning, job: worker, instance: "w1:9100"}}}}]}}
  - interval: 1m
    input_series:
      # 100 uploads a minute; slow: 10% of them over 50 ms
      - series: 'clipq_enqueue_duration_seconds_bucket{{le="0.025", instance="a", job="api"}}'
        values: '0+90x30'
      - series: 'clipq_enqueue_duration_seconds_bucket{{le="0.05", instance="a", job="api"}}'
        values: '0+90x30'
      - series: 'clipq_enqueue_duration_seconds_bucket{{le="0.1", instance="a", job="api"}}'
        values: '0+100x30'
      - series: 'clipq_enqueue_duration_seconds_bucket{{le="+Inf", instance="a", job="api"}}'
        values: '0+100x30'
      # fast: all of them under 25 ms
      - series: 'clipq_enqueue_duration_seconds_bucket{{le="0.025", instance="b", job="api2"}}'
        values: '0+100x30'
      - series: 'clipq_enqueue_duration_seconds_bucket{{le="0.05", instance="b", job="api2"}}'
        values: '0+100x30'
      - series: 'clipq_enqueue_duration_seconds_bucket{{le="0.1", instance="b", job="api2"}}'
        values: '0+100x30'
      - series: 'clipq_enqueue_duration_seconds_bucket{{le="+Inf", instance="b", job="api2"}}'
        values: '0+100x30'
    alert_rule_test:
      - {{eval_time: 20m, alertname: ClipqEnqueueLatencyHigh,
          exp_alerts: [{{exp_labels: {{severity: warning}}}}]}}
  - interval: 1m
    input_series:
      - series: 'clipq_enqueue_duration_seconds_bucket{{le="0.025", instance="b", job="api"}}'
        values: '0+100x30'
      - series: 'clipq_enqueue_duration_seconds_bucket{{le="0.05", instance="b", job="api"}}'
        values: '0+100x30'
      - series: 'clipq_enqueue_duration_seconds_bucket{{le="+Inf", instance="b", job="api"}}'
        values: '0+100x30'
      - series: 'clipq_redis_up{{instance="b", job="api"}}'
        values: '1 1 0 0 0 0'
    alert_rule_test:
      - {{eval_time: 20m, alertname: ClipqEnqueueLatencyHigh, exp_alerts: []}}
      - {{eval_time: 1m, alertname: ClipqRedisDown, exp_alerts: []}}
      - {{eval_time: 4m, alertname: ClipqRedisDown,
          exp_alerts: [{{exp_labels: {{severity: critical, instance: b, job: api}}}}]}}
  - interval: 1m
    input_series:
      - series: 'clipq_unreplicated_acks_total{{instance="w1", job="worker"}}'
        values: '0x10 1+1x20'
      - series: 'clipq_unreplicated_acks_total{{instance="w2", job="worker"}}'
        values: '0x30'
    alert_rule_test:
      - {{eval_time: 9m, alertname: ClipqAcksUnreplicated, exp_alerts: []}}
      - {{eval_time: 20m, alertname: ClipqAcksUnreplicated,
          exp_alerts: [{{exp_labels: {{severity: warning, instance: w1}}}}]}}
"""


def test_alerts_fire_on_synthetic_series(tmp_path):
    # promtool compares annotations too; their templates are checked by `promtool check rules`
    doc = load_alerts()
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(doc))
    (tmp_path / "tests.yml").write_text(ALERT_UNIT_TESTS.format(alerts="alerts.yml"))
    res = promtool("test", "rules", "tests.yml", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_prometheus_scrapes_the_api_and_the_workers():
    config = yaml.safe_load(PROM_CONFIG.read_text())
    assert any(Path(f).name == ALERTS.name for f in config["rule_files"])
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}

    def targets(job: dict) -> set[str]:
        out = {t for sc in job.get("static_configs", []) for t in sc["targets"]}
        out |= {f"{n}:{sd['port']}" for sd in job.get("dns_sd_configs", []) for n in sd["names"]}
        return out

    assert targets(jobs["api"]) == {"api:8000"}
    assert targets(jobs["worker"]) == {"worker:9100"}
    assert jobs["api"].get("metrics_path", "/metrics") == "/metrics"
    assert jobs["worker"].get("metrics_path", "/metrics") == "/metrics"


# -- the dashboard --------------------------------------------------------------------------
def test_dashboard_structure():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] and dash["uid"] and isinstance(dash["schemaVersion"], int)
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        grid = p["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, p["title"]
        if p["type"] != "row":
            assert p.get("targets"), f"panel {p['title']!r} has no query"
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), p["title"]
    exprs = [re.sub(r"\s+", " ", e) for e in dashboard_exprs()]

    def covered(pattern: str) -> None:
        assert any(re.search(pattern, e) for e in exprs), f"no dashboard query matches {pattern!r}"

    covered(r"clipq_queue_depth")
    covered(r'rate\(clipq_jobs_total\{outcome=~"completed\|unchanged\|reused"\}')  # every completion
    covered(r"clipq_batch_size_bucket")
    covered(r"by \(le, stage\) \(rate\(clipq_stage_duration_seconds_bucket|by \(stage\)")
    covered(r'clipq_jobs_total\{outcome="failed"\}')
    covered(r'clipq_jobs_total\{outcome="retried"\}')
    assert any(p["type"] == "heatmap" for p in panels)

    # the datasource the panels use is the provisioned one
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    provisioned = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    uids = {d["uid"] for d in provisioned["datasources"] if d["type"] == "prometheus"}
    assert variables["datasource"]["current"]["value"] in uids
    for p in panels:
        if p["type"] != "row":
            assert p["datasource"]["uid"] in {"${datasource}"} | uids, p["title"]
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "clipq.yml").read_text())["providers"]
    assert providers and providers[0]["type"] == "file"


# -- (b) every metric the rules and the dashboard use is exported ---------------------------
def test_metric_name_extraction():
    assert metric_names('sum by (le, stage) (rate(clipq_stage_duration_seconds_bucket{stage=~"a|b"}'
                        '[$__rate_interval])) / on(job) group_left(x) up offset 5m > 1e-9') == \
        {"clipq_stage_duration_seconds_bucket", "up"}
    assert metric_names("absent(clipq_worker_info == 1) or vector(0)") == {"clipq_worker_info"}
    assert metric_names("histogram_quantile(0.99, sum(rate(x_bucket[5m])) by (le))") == {"x_bucket"}


def test_every_metric_in_rules_and_dashboard_is_exported():
    known = code_metric_names()
    assert {"clipq_jobs_total", "clipq_batch_size_bucket", "clipq_queue_depth", "clipq_redis_up",
            "clipq_enqueue_duration_seconds_bucket", "clipq_worker_info", "up"} <= known
    used = {}
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            used.setdefault(name, []).append(f"alert {rule['alert']}")
    for expr in dashboard_exprs():
        for name in metric_names(expr):
            used.setdefault(name, []).append(f"dashboard: {expr[:60]}")
    assert used, "no metric found in the rules and the dashboard"
    unknown = {n: where for n, where in used.items() if n not in known}
    assert not unknown, f"metrics used but not exported by the code: {unknown}"


# -- (c) the metrics agree with what happened ------------------------------------------------
def test_metrics_agree_with_a_live_run(client, run_burst):
    photos = corpus_files("index")
    n = len(photos)
    for i, path in enumerate(photos):
        assert upload(client, path, f"obs-{i}").status_code == 202
    assert upload(client, HOSTILE_DECODE, "obs-hostile").status_code == 202  # fails later, in decode
    rejected = upload(client, None, "obs-text", data=b"just some text, not an image\n")
    assert rejected.status_code == 415, rejected.text

    before = parse_scrape(client.get("/metrics").text)
    assert sample(before, "clipq_queue_depth") == n + 1
    assert sample(before, "clipq_redis_up") == 1
    assert sample(before, "clipq_uploads_total", outcome="queued") == n + 1
    assert sample(before, "clipq_uploads_total", outcome="rejected") == 1
    assert sample(before, "clipq_enqueue_duration_seconds_count") == n + 1
    http = dict(route=UPLOAD_ROUTE, method="POST")
    assert sample(before, "clipq_http_request_duration_seconds_count", status="2xx", **http) == n + 1
    assert sample(before, "clipq_http_request_duration_seconds_count", status="4xx", **http) == 1

    app, totals = run_burst()
    assert (totals.completed, totals.failed, totals.retried) == (n, 1, 0)
    assert totals.batches >= 1
    reg = app.metrics.registry

    def worker(name: str, **labels) -> float | None:
        return reg.get_sample_value(name, labels)

    assert worker("clipq_batch_size_sum") == n           # images embedded
    assert worker("clipq_batch_size_count") == totals.batches
    assert worker("clipq_jobs_total", outcome="completed") == n
    assert worker("clipq_jobs_total", outcome="failed") == 1
    assert worker("clipq_jobs_total", outcome="retried") == 0
    assert worker("clipq_stage_duration_seconds_count", stage="infer") == totals.batches
    assert worker("clipq_stage_duration_seconds_count", stage="upsert") == totals.batches
    # every claimed batch is decoded and acknowledged, even one whose jobs all failed decoding
    claims = worker("clipq_stage_duration_seconds_count", stage="claim")
    assert claims >= totals.batches
    assert worker("clipq_stage_duration_seconds_count", stage="decode") == claims
    assert worker("clipq_stage_duration_seconds_count", stage="ack") == claims
    assert worker("clipq_job_latency_seconds_count") == n
    assert worker("clipq_queue_wait_seconds_count") == n + 1  # the hostile job was claimed too
    assert worker("clipq_oom_splits_total") == 0
    s = app.settings
    assert worker("clipq_worker_info", worker_id=s.worker_id, device="cpu", model="clipq-tiny",
                  precision="fp32") == 1

    after_text = client.get("/metrics").text
    after = parse_scrape(after_text)
    assert sample(after, "clipq_queue_depth") == 0
    assert sample(after, "clipq_uploads_total", outcome="queued") == n + 1  # unchanged by the worker
    assert (sample(after, "clipq_http_request_duration_seconds_count", route="/metrics", method="GET",
                   status="2xx") or 0) >= 1

    if PROMTOOL:  # what Prometheus will parse: both expositions are valid
        for text in (after_text, generate_latest(reg).decode()):
            res = promtool("check", "metrics", stdin=text)
            assert "parsing error" not in res.stdout + res.stderr, res.stdout + res.stderr


# -- (d) several API processes: one /metrics for all of them ---------------------------------
@pytest.fixture
def multiprocess_api(redis_url, namespace, tmp_path):
    """``uvicorn api.main:app --workers 2`` with PROMETHEUS_MULTIPROC_DIR, on a free port."""
    mp_dir = tmp_path / "prom"
    mp_dir.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "PROMETHEUS_"))}
    env |= {"PROMETHEUS_MULTIPROC_DIR": str(mp_dir), "REDIS_URL": redis_url, "QUEUE_NAMESPACE": namespace,
            "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT), "ALLOW_ANONYMOUS": "true"}
    log = open(tmp_path / "uvicorn.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "2", "--log-level", "warning"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 45  # slow when other processes load the CPU
        while True:
            assert proc.poll() is None, f"uvicorn exited: {log.seek(0) or log.read()}"
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"uvicorn not ready: {log.seek(0) or log.read()}"
            time.sleep(0.2)
        # both processes must be serving before we count on them
        deadline = time.monotonic() + 20
        while len(set(pids_in(mp_dir, "histogram"))) < 2 and time.monotonic() < deadline:
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda _: httpx.get(base + "/healthz", timeout=5), range(16)))
        yield base, mp_dir
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def pids_in(mp_dir: Path, kind: str) -> list[str]:
    return [m.group(1) for f in mp_dir.iterdir() if (m := re.fullmatch(rf"{kind}_(\d+)\.db", f.name))]


def test_multiprocess_api_counts_uploads_of_every_process(multiprocess_api):
    base, mp_dir = multiprocess_api
    photos = corpus_files("index")[:8]

    def send(i: int) -> int:
        path = photos[i]
        with httpx.Client(base_url=base, timeout=10) as c:  # a new connection each: spread over processes
            return c.post(UPLOAD_ROUTE, data={"product_id": f"mp-{i}", "name": f"mp {i}"},
                          files={"image_file": (path.name, path.read_bytes())}).status_code

    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(send, range(len(photos))))
    assert codes == [202] * len(photos)
    assert len(set(pids_in(mp_dir, "histogram"))) == 2, "both uvicorn processes should have answered"

    for _ in range(8):  # whichever process answers the scrape, it reports the sum of all
        with httpx.Client(timeout=10) as c:
            text = c.get(base + "/metrics").text
        samples = parse_scrape(text)
        assert sample(samples, "clipq_uploads_total", outcome="queued") == len(photos)
        assert sample(samples, "clipq_enqueue_duration_seconds_count") == len(photos)
        upload_2xx = [v for n, l, v in samples if n == "clipq_http_request_duration_seconds_count"
                      and l.get("route") == UPLOAD_ROUTE and l.get("status") == "2xx"]
        assert sum(upload_2xx) == len(photos)


def test_multiprocess_scrape_has_one_queue_depth(multiprocess_api):
    """In multiprocess mode the scrape-time gauges must appear once, without a pid label, and
    the exposition must be one Prometheus can parse (no metric family twice)."""
    base, _ = multiprocess_api
    path = corpus_files("index")[0]
    assert httpx.post(base + UPLOAD_ROUTE, data={"product_id": "mp-depth", "name": "x"},
                      files={"image_file": (path.name, path.read_bytes())}, timeout=10).status_code == 202
    for _ in range(4):
        with httpx.Client(timeout=10) as c:
            text = c.get(base + "/metrics").text
        families = [f.name for f in text_string_to_metric_families(text)]
        assert len(families) == len(set(families)), \
            f"metric families exposed twice: {sorted({f for f in families if families.count(f) > 1})}"
        depth = [(labels, v) for n, labels, v in parse_scrape(text) if n == "clipq_queue_depth"]
        assert depth == [({}, 1.0)], depth
        if PROMTOOL:
            res = promtool("check", "metrics", stdin=text)
            assert "parsing error" not in res.stdout + res.stderr, res.stdout + res.stderr
