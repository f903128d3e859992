"""Server settings: command-line flags, each also a FEATUREMAP_* environment variable.

Read once at start (house rule 7). Precedence: flag, then environment, then
the default. A bad setting stops the server at start with a message that
names the setting and says what is accepted.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import fields

from ..settings import Settings


class SettingsError(ValueError):
    """A setting that cannot be used; the message names it."""


_HELP = {
    "address": "host:port to serve gRPC on ([::]:0 picks a free port)",
    "data_dir": "directory of the template bank's SQLite file",
    "bank": "where the bank lives: sqlite:///path/bank.db, or redis://host:port/db to share it between "
            "replicas; empty: sqlite in the data dir",
    "metrics_address": "host:port for Prometheus metrics over HTTP; empty: off",
    "health_address": "host:port for grpc.health.v1 alone, on threads of its own (Kubernetes probes), "
                      "plaintext; empty: health on the main port only",
    "http_address": "host:port for the HTTP/JSON gateway and the live view page (featuremap[http]; TLS and "
                    "tokens as for gRPC); empty: off",
    "http_allow_origin": "origins whose pages may call the HTTP gateway (CORS), comma-separated "
                         "(https://app.example.com), or *; empty: only the gateway's own page",
    "log_format": "text or json (one line per event, on stderr)",
    "log_level": "debug, info, warning or error",
    "max_message_bytes": "largest gRPC message accepted or sent",
    "max_frame_pixels": "largest frame, in pixels (checked before decoding)",
    "max_template_pixels": "largest template, in pixels",
    "max_templates": "most templates in the bank",
    "max_templates_per_request": "most templates one config may match",
    "max_streams": "most concurrent StreamMatch calls",
    "stream_idle_seconds": "a stream that sends nothing for this long (nothing of its own in flight) is ended "
                           "with DEADLINE_EXCEEDED, freeing its slot",
    "max_calls": "most Match calls running or queued at once; more are refused with RESOURCE_EXHAUSTED",
    "max_in_flight": "frames buffered per stream before the client is slowed down",
    "max_variants_per_request": "most template variants (templates x their scales x angles) one config may match",
    "max_jpeg_scans": "most scans a progressive JPEG may have (counted before decoding; normal files have ~10)",
    "memory_budget": "bytes matching may hold at once, all calls together; 0: half the container's memory limit "
                     "(cgroup memory.max), or of the machine's memory",
    "cpus": "CPUs to size the compute pool and Numba's threads by; 0: the container's CPU quota (cgroup "
            "cpu.max), or the CPUs this process may run on",
    "grace_seconds": "on SIGTERM, how long in-flight calls may take to finish (below docker stop's 10 s; an "
                     "orchestrator's stop timeout must be longer)",
    "tokens_file": "bearer tokens with scopes, one 'token scope[,scope]' per line; empty: no authentication",
    "tls_cert": "PEM certificate chain of the server: serve TLS",
    "tls_key": "PEM private key of --tls-cert",
    "tls_client_ca": "PEM CA bundle: require client certificates it signed (mutual TLS)",
    "device": "cpu, or cuda: match on an NVIDIA GPU (needs featuremap[cuda] and a driver; frames of all calls "
              "with the same templates and options are batched)",
    "gpu_memory_budget": "--device cuda: bytes of GPU memory the batches may use together (a batch that cannot fit "
                         "is split; a frame that cannot fit is refused); 0: three quarters of the GPU's memory",
    "gpu_batch": "--device cuda: most frames in one GPU batch",
    "gpu_batch_wait_ms": "--device cuda: longest a frame waits for others to share its batch (a realtime stream's "
                         "frame: at most its frame interval, from the capture times)",
    "gpu_workers": "--device cuda: threads that run GPU batches, each with its own CUDA stream",
}


#: Settings where 0 means "work it out from the container".
_AUTO = {"memory_budget": "half the memory limit", "cpus": "the CPU quota",
         "gpu_memory_budget": "three quarters of the GPU's memory"}


def env_name(field: str) -> str:
    return "FEATUREMAP_" + field.upper()


def _check(settings: Settings) -> Settings:
    for field in fields(Settings):
        value = getattr(settings, field.name)
        if field.name in _AUTO:
            if value < 0:
                raise SettingsError(f"{field.name} must be >= 0 (0: {_AUTO[field.name]}), got {value}")
        elif field.type in ("int", "float") and value <= 0:
            raise SettingsError(f"{field.name} must be > 0, got {value}")
    if settings.log_format not in ("text", "json"):
        raise SettingsError(f"log_format must be text or json, got {settings.log_format!r}")
    if settings.log_level not in ("debug", "info", "warning", "error"):
        raise SettingsError(f"log_level must be debug, info, warning or error, got {settings.log_level!r}")
    for name in ("address", "metrics_address", "health_address", "http_address"):
        value = getattr(settings, name)
        if value and (":" not in value or not value.rsplit(":", 1)[1].isdigit()):
            raise SettingsError(f"{name} must be host:port, got {value!r}")
    if not settings.address:
        raise SettingsError("address must be host:port")
    if settings.http_allow_origin and not settings.http_address:
        raise SettingsError("http_allow_origin needs http_address: it opens the HTTP gateway to other origins")
    for origin in allowed_origins(settings):
        if origin != "*" and not re.fullmatch(r"https?://[^/\s?#]+", origin):
            raise SettingsError(f"http_allow_origin must be origins like https://app.example.com (scheme and host, "
                                f"no path) or *, comma-separated; got {origin!r}")
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise SettingsError("tls_cert and tls_key go together: give both or neither")
    if settings.tls_client_ca and not settings.tls_cert:
        raise SettingsError("tls_client_ca needs tls_cert and tls_key: mutual TLS is TLS first")
    for name in ("tokens_file", "tls_cert", "tls_key", "tls_client_ca"):
        path = getattr(settings, name)
        if path and not os.path.isfile(path):
            raise SettingsError(f"{name}: no such file {path!r}")
    if settings.device not in ("cpu", "cuda"):
        raise SettingsError(f"device must be cpu or cuda, got {settings.device!r}")
    if settings.bank and not settings.bank.startswith(("sqlite:///", "redis://", "rediss://")):
        raise SettingsError(f"bank must be sqlite:///path or redis://host:port/db, got {settings.bank!r}")
    return settings


def allowed_origins(settings: Settings) -> list[str]:
    """``http_allow_origin`` as a list (empty: CORS off)."""
    return [origin.strip().rstrip("/") for origin in settings.http_allow_origin.split(",") if origin.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's flags, on a parser (``featuremap-server serve``)."""
    for field in fields(Settings):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, dest=field.name, default=None, metavar=field.name.upper(),
                            help=f"{_HELP[field.name]} (env {env_name(field.name)}; default {field.default!r})")


def settings_from(args: argparse.Namespace | None = None, environ: dict | None = None) -> Settings:
    """Settings from parsed flags and the environment; raises SettingsError on a bad one."""
    environ = os.environ if environ is None else environ
    values = {}
    for field in fields(Settings):
        raw = getattr(args, field.name, None) if args is not None else None
        if raw is None:
            raw = environ.get(env_name(field.name))
        if raw is None:
            continue
        kind = {"int": int, "float": float}.get(field.type, str)
        try:
            values[field.name] = kind(raw)
        except ValueError:
            raise SettingsError(f"{field.name} must be a{'n integer' if kind is int else ' number'}, got {raw!r}") from None
    return _check(Settings(**values))
