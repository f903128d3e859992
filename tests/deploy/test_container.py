"""The image's entrypoint, run here exactly as the container runs it.

Docker does not run on our machines, so the test reads deploy/Dockerfile:
the build step that compiles the kernels, the runtime ENV and the
ENTRYPOINT, and runs them with the container's paths moved under a
temporary folder.
"""

import json
import platform
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import grpc
import pytest

from service_helpers import free_port, wait_serving

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def runtime_stage() -> list[str]:
    """The logical lines (continuations joined) of the Dockerfile's last stage."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    last_from = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    return lines[last_from:]


def container_env(stage: list[str], paths: dict[str, str]) -> dict[str, str]:
    env = {}
    arguments = {}  # ARG defaults, as a build without --build-arg sets them
    for line in stage:
        if line.startswith("ARG "):
            key, _, value = line[4:].partition("=")
            arguments[key.strip()] = value.strip()
        if line.startswith("ENV "):
            for key, value in re.findall(r"(\w+)=(\S+)", line[4:]):
                for name, default in arguments.items():
                    value = value.replace("${" + name + "}", default)
                env[key] = value
    for key, value in env.items():
        for inside, outside in paths.items():
            value = value.replace(inside, outside)
        env[key] = value
    env["PATH"] = str(Path(sys.executable).parent) + ":/usr/bin:/bin"
    return env


def kernel_files(folder: Path) -> dict[str, bytes]:
    """Numba's cache files under ``folder`` (indexes and compiled code), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.suffix in (".nbi", ".nbc")}


def test_entrypoint_reaches_serving_with_the_image_env_and_warm_kernels_of_another_cpu(tmp_path):
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the image's kernels are warmed per x86-64 level")
    # The image's build step warms one x86-64 level here (x86-64-v2: not this machine's own CPU,
    # as a build machine's CPU is not the one a container later runs on); the entrypoint then
    # picks that level, copies its kernels, and compiles nothing: every kernel it loads was warm.
    stage = runtime_stage()
    paths = {p: str(tmp_path / p.strip("/").replace("/", "_"))
             for p in ("/opt/featuremap-kernels", "/var/cache/featuremap", "/var/lib/featuremap")}
    env = container_env(stage, paths)
    # The build step: the RUN that compiles the kernels into the seed folder.
    (build,) = [line for line in stage if line.startswith("RUN ") and "featuremap-server warmup" in line]
    warm = build[4:].split("&&")[0].strip()
    for inside, outside in paths.items():
        warm = warm.replace(inside, outside)
    built = subprocess.run(shlex.split(warm), env={**env, "FEATUREMAP_WARM_LEVELS": "x86-64-v2"},
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    seed = Path(paths["/opt/featuremap-kernels"]) / "x86-64-v2"
    warm_kernels = kernel_files(seed)
    assert any(name.endswith(".nbi") for name in warm_kernels), "the build step cached no kernels"
    for folder in paths.values():
        Path(folder).mkdir(exist_ok=True)
    # The entrypoint, on a free port instead of 50051 (a flag, as a deployment would override it).
    (entry,) = [line for line in stage if line.startswith("ENTRYPOINT")]
    argv = json.loads(entry[len("ENTRYPOINT"):].strip())  # the exec form is a JSON list
    port = free_port()
    env["FEATUREMAP_ADDRESS"] = f"127.0.0.1:{port}"
    env["FEATUREMAP_METRICS_ADDRESS"] = f"127.0.0.1:{free_port()}"
    health_port = free_port()
    env["FEATUREMAP_HEALTH_ADDRESS"] = f"127.0.0.1:{health_port}"
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        wait_serving(channel, timeout=120)
        channel.close()
        probe = grpc.insecure_channel(f"127.0.0.1:{health_port}")  # the probes' own port answers too
        wait_serving(probe, timeout=30)
        probe.close()
        # Warm-up ran through every kernel before SERVING: had one compiled afresh (another CPU's
        # key), its index would have changed or a new one appeared beside the copied ones.
        assert kernel_files(Path(paths["/var/cache/featuremap"])) == warm_kernels
        assert (Path(paths["/var/lib/featuremap"]) / "bank.db").exists()
    finally:
        process.terminate()
        assert process.wait(60) == 0
        err = process.stderr.read()
        process.stdout.close()
        process.stderr.close()
    assert '"message": "listening"' in err  # FEATUREMAP_LOG_FORMAT=json from the image
    assert '"kernels_for": "x86-64-v2"' in err


def test_kubernetes_manifests_hang_together():
    import yaml

    k8s = ROOT / "deploy" / "k8s"
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    assert all((k8s / resource).exists() for resource in kustomization["resources"])
    docs = [d for f in sorted(k8s.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d and "metadata" in d]
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    deployment = by_kind[("Deployment", "featuremap")]["spec"]
    config = by_kind[("ConfigMap", "featuremap")]["data"]
    pod = deployment["template"]["spec"]
    (container,) = pod["containers"]
    # The pod outlives the server's drain, so in-flight frames finish before the kill.
    assert pod["terminationGracePeriodSeconds"] > float(config["FEATUREMAP_GRACE_SECONDS"])
    assert deployment["replicas"] == 3
    # The probes go to the health port of their own, which the ConfigMap opens.
    probes = {container[p]["grpc"]["port"] for p in ("readinessProbe", "livenessProbe", "startupProbe")}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert probes == {ports["health"]} and ports["grpc"] == 50051
    assert config["FEATUREMAP_HEALTH_ADDRESS"].endswith(f":{ports['health']}")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    # Every path the image writes to is a volume (NUMBA_CACHE_DIR, the data dir).
    stage = runtime_stage()
    env = container_env(stage, {})
    assert {env["NUMBA_CACHE_DIR"], env["FEATUREMAP_DATA_DIR"]} <= mounts
    # The bank URL carries the Redis password from a Secret, which Redis requires.
    env_of = {e["name"]: e for e in container["env"]}
    assert env_of["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "featuremap-redis"
    assert env_of["FEATUREMAP_BANK"]["value"] == "redis://:$(REDIS_PASSWORD)@featuremap-redis:6379/0"
    assert "FEATUREMAP_BANK" not in config
    redis_pod = by_kind[("Deployment", "featuremap-redis")]["spec"]["template"]["spec"]
    (redis_container,) = redis_pod["containers"]
    assert "--requirepass" in redis_container["args"] and "livenessProbe" in redis_container
    assert by_kind[("Secret", "featuremap-redis")]["stringData"]["password"]
    # No service-account token, replicas spread over nodes, a pinned image.
    assert pod["automountServiceAccountToken"] is False and redis_pod["automountServiceAccountToken"] is False
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    image, _, tag = container["image"].partition(":")
    assert tag and tag != "latest" and kustomization["images"][0]["newTag"] == tag
    # Tokens and TLS material can come from Secrets (optional volumes).
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"featuremap-tokens", "featuremap-tls"}
    assert all(v["secret"]["optional"] for v in pod["volumes"] if "secret" in v)
    # gRPC only from labelled clients, metrics only from labelled scrapers.
    policy = by_kind[("NetworkPolicy", "featuremap")]["spec"]
    labels = [rule["from"][0]["podSelector"]["matchLabels"] for rule in policy["ingress"]]
    assert labels == [{"featuremap.io/client": "true"}, {"featuremap.io/metrics": "true"}]
    # The pod and compose run the server's own command, as the image does.
    (entry,) = [line for line in stage if line.startswith("ENTRYPOINT")]
    server_command = json.loads(entry[len("ENTRYPOINT"):].strip())
    assert server_command == ["featuremap-server", "serve"]
    assert container["command"] == server_command
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    assert compose["x-featuremap"]["entrypoint"] == server_command
    # Compose restarts what dies, and starts the replicas once Redis answers.
    assert compose["x-featuremap"]["restart"] == compose["services"]["redis"]["restart"] == "unless-stopped"
    assert compose["services"]["replica"]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert "healthcheck" in compose["services"]["redis"]
    assert compose["services"]["replica"]["environment"]["FEATUREMAP_BANK"].startswith("redis://:${REDIS_PASSWORD")

    headless = by_kind[("Service", "featuremap-headless")]["spec"]
    assert headless["clusterIP"] == "None" and headless["ports"][0]["name"] == "grpc"


def test_the_image_installs_its_dependencies_in_a_layer_of_their_own(tmp_path):
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    build = lines[:next(i for i, line in enumerate(lines) if line.startswith("FROM ") and i > 0)]
    deps = next(i for i, line in enumerate(build) if "requirements.txt" in line and line.startswith("RUN "))
    sources = next(i for i, line in enumerate(build) if line.startswith("COPY featuremap"))
    assert deps < sources and build[deps - 2].startswith("COPY pyproject.toml")
    assert build[deps - 1] == "COPY deploy/constraints.txt ./"  # the lock, in the same layer's inputs
    # The command that lists the dependencies lists exactly pyproject's, and the http extra's (the gateway).
    command = build[deps][4:].split(">")[0].strip()
    listed = subprocess.run(["sh", "-c", command.replace("python ", f"{sys.executable} ", 1)], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert listed.split() == project["dependencies"] + project["optional-dependencies"]["http"]


def test_the_gpu_overlay_patches_the_deployment_it_means():
    import jsonpatch
    import yaml

    k8s = ROOT / "deploy" / "k8s"
    overlay = yaml.safe_load((k8s / "gpu" / "kustomization.yaml").read_text())
    assert overlay["resources"] == [".."]
    docs = [d for f in sorted(k8s.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d and "metadata" in d]
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    patched = {}
    for patch in overlay["patches"]:
        key = (patch["target"]["kind"], patch["target"]["name"])
        # Every path must exist in the base as the patch expects (add into an existing object, replace a value).
        patched[key] = jsonpatch.apply_patch(by_kind[key], yaml.safe_load(patch["patch"]))
    container = patched[("Deployment", "featuremap")]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 300
    assert patched[("ConfigMap", "featuremap")]["data"]["FEATUREMAP_DEVICE"] == "cuda"
    assert overlay["images"][0]["newTag"].endswith("-cuda")


def test_the_image_is_built_from_the_lock_and_stops_within_every_orchestrators_timeout():
    import yaml

    from featuremap.service.edge.config import Settings

    text = DOCKERFILE.read_text()
    # Every dependency (and theirs) at an exact version from the lock; no Debian package pinned
    # to a version the distribution replaces.
    pins = dict(line.split("==") for line in (ROOT / "deploy" / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    assert all(version for version in pins.values())
    wanted = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~ ;\[]", dep, maxsplit=1)[0].lower().replace("_", "-") for dep in wanted}
    assert names <= {name.lower().replace("_", "-") for name in pins}
    assert "-c constraints.txt -r /tmp/requirements.txt" in text
    assert not re.search(r"apt-get install[^\n]*=[0-9]", text)
    # SIGTERM drains within a grace shorter than docker stop's 10 s (Kubernetes' default is 30 s).
    assert "STOPSIGNAL SIGTERM" in text and Settings().grace_seconds < 10
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    assert "name" not in compose  # Compose v1 refuses a top-level name
    assert compose["x-featuremap"]["stop_grace_period"] == "30s"
    for mount in compose["services"]["replica"]["tmpfs"]:
        assert "uid=10001" in mount  # writable by the image's user
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "build", "tests"} <= set(ignored)
