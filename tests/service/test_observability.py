"""What operators see: every metric the alert rules and the dashboard use is exported; streams are logged."""

import json
import logging
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
import yaml

from featuremap.v1 import featuremap_pb2 as pb

from service_helpers import create, frame_message, free_port, running_server, scene

ROOT = Path(__file__).resolve().parents[2]
USED = re.compile(r"\b((?:featuremap|process)_[a-z_]+)\b")


def used_metrics() -> set[str]:
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "featuremap-dashboard.json").read_text())
    exprs += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    return {name for expr in exprs for name in USED.findall(expr)}


def test_every_metric_of_the_alerts_and_the_dashboard_is_exported(tmp_path, caplog):
    port = free_port()
    caplog.set_level(logging.INFO, logger="featuremap.server")
    with running_server(tmp_path, metrics_address=f"127.0.0.1:{port}") as (stub, _, _):
        frame = scene(1)
        create(stub, frame[10:30, 20:40], "m")
        stub.Match(pb.MatchRequest(config=pb.MatchConfig(), frame=frame_message(frame)), timeout=30)
        requests = [pb.StreamMatchRequest(config=pb.MatchConfig(realtime=True))]
        requests += [pb.StreamMatchRequest(frame=frame_message(frame, i)) for i in range(20)]
        list(stub.StreamMatch(iter(requests), timeout=60))
        with pytest.raises(grpc.RpcError):
            stub.GetTemplate(pb.GetTemplateRequest(name="templates/missing"), timeout=10)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert used_metrics() <= exported, used_metrics() - exported
    assert 'featuremap_build_info{version="0.1.0"} 1.0' in text
    assert 'featuremap_queue_wait_seconds_count{rpc="StreamMatch"}' in text
    assert 'featuremap_errors_total{code="NOT_FOUND",rpc="GetTemplate"} 1.0' in text
    # Streams are logged as events: who, how many frames, how it ended.
    started = [r for r in caplog.records if r.getMessage() == "stream started"]
    ended = [r for r in caplog.records if r.getMessage() == "stream ended"]
    assert len(started) == len(ended) == 1 and started[0].peer.startswith("ipv")
    assert ended[0].code == "OK" and 1 <= ended[0].frames <= 20  # realtime: some frames may be skipped


def test_the_alert_rules_are_well_formed():
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    for rule in (r for group in rules["groups"] for r in group["rules"]):
        assert rule["alert"].startswith("FeatureMap") and rule["annotations"]["summary"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}


def test_half_open_connections_to_the_metrics_port_cost_no_threads_and_do_not_delay_a_scrape(tmp_path):
    import resource
    import socket
    import threading

    port = free_port()
    wanted = 1000
    # Client and server in one process: each connection costs two descriptors, and the server
    # keeps at most a quarter of the limit for metrics connections.
    needed = 8 * wanted + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} file descriptors (the hard limit is {hard})")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    with running_server(tmp_path, metrics_address=f"127.0.0.1:{port}") as (_, _, server):
        before = threading.active_count()
        idle = []
        try:
            for _ in range(wanted):  # connected, then silent: half-open requests
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            for s in idle[:10]:
                s.sendall(b"GET /metrics HTTP/1.1\r\n")  # a request line and no end of headers
            # Every connection is accepted (the loop holds them), and no thread was started for any.
            deadline = time.monotonic() + 30
            while server.metrics_server.connections < wanted and time.monotonic() < deadline:
                time.sleep(0.01)
            assert server.metrics_server.connections == wanted
            assert threading.active_count() <= before
            # A scrape beside them is answered (a bound on the wait, not a latency claim).
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            assert "featuremap_build_info" in text
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing", timeout=10)
            assert caught.value.code == 404
        finally:
            for s in idle:
                s.close()


def test_a_client_that_ends_its_stream_is_not_an_error_in_the_metrics(tmp_path, caplog):
    """Streams the client stops reading (or cancels) end as the client chose: the server logs them, and
    counts no error; a stream the server refuses is still counted."""
    from featuremap.client import FeatureMapClient, NotFoundError

    port = free_port()
    caplog.set_level(logging.INFO, logger="featuremap.server")
    with running_server(tmp_path, metrics_address=f"127.0.0.1:{port}") as (stub, _, running):
        frame = scene(2)
        create(stub, frame[10:30, 20:40], "ended")
        with FeatureMapClient(f"127.0.0.1:{running.port}", timeout=30) as client:
            for stop_after in (1, 3):
                stream = client.stream(iter([frame] * 50), templates=["ended"], window=2)
                for _ in range(stop_after):
                    next(stream)
                stream.close()  # stops reading: the call is cancelled
            with pytest.raises(NotFoundError):
                list(client.stream(iter([frame]), templates=["missing"]))
        deadline = time.monotonic() + 60  # a bound on the wait, not a measurement: each end is logged
        while len([r for r in caplog.records if r.getMessage() == "stream ended"]) < 3:
            assert time.monotonic() < deadline, "the streams' ends were not logged"
            time.sleep(0.05)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    errors = [line for line in text.splitlines() if line.startswith("featuremap_errors_total{")]
    assert errors == ['featuremap_errors_total{code="NOT_FOUND",rpc="StreamMatch"} 1.0'], errors
    ended = sorted(r.code for r in caplog.records if r.getMessage() == "stream ended")
    assert ended == ["CANCELLED", "CANCELLED", "NOT_FOUND"], ended
