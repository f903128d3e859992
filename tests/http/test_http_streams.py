"""StreamMatch over the gateway's WebSocket: the servicer's own stream, its limits, and a flood."""

import json
import threading

import grpc
import pytest
from google.protobuf import json_format

from featuremap.service.pipeline import frames as frames_module
from featuremap.v1 import featuremap_pb2 as pb

from gateway_helpers import encoded, frame_bytes, websocket
from service_helpers import create, running_server, scene


def config_text(**config) -> str:
    return json.dumps({"config": config})


@pytest.fixture(scope="module")
def module_server_settings():
    return {"http_address": "127.0.0.1:0", "max_message_bytes": 4 << 20}


def test_frames_one_way_results_the_other_as_grpc_answers_them(module_server):
    stub, _, server = module_server
    frames = [scene(20 + i, 120, 160, 3) for i in range(4)]
    create(stub, frames[0][30:60, 40:80], "piece")
    url = f"ws://127.0.0.1:{server.http_port}/v1/frames:stream"
    got = websocket(url, [config_text(templates=["piece"], peaks={"topK": 2})]
                    + [frame_bytes(f, i + 1) for i, f in enumerate(frames)], receive=4, protocols=("featuremap.v1",))
    assert got["protocol"] == "featuremap.v1"
    results = [json_format.ParseDict(text, pb.StreamMatchResponse()).result for text in got["texts"]]
    assert [r.sequence for r in results] == [1, 2, 3, 4]
    grpc_results = stub.StreamMatch(iter(
        [pb.StreamMatchRequest(config=pb.MatchConfig(templates=["piece"], peaks=pb.PeakOptions(top_k=2)))]
        + [pb.StreamMatchRequest.FromString(frame_bytes(f, i + 1)) for i, f in enumerate(frames)]))
    for over_http, over_grpc in zip(results, grpc_results, strict=True):
        assert [(p.x, p.y, p.score) for p in over_http.peaks] == [(p.x, p.y, p.score) for p in over_grpc.result.peaks]
    assert (results[0].peaks[0].x, results[0].peaks[0].y) == (40, 30)
    # JSON text frames too (the image in base64), in the same stream as binary ones.
    text_frame = json_format.MessageToJson(pb.StreamMatchRequest.FromString(frame_bytes(frames[1], 7)))
    got = websocket(url, [config_text(templates=["piece"]), text_frame, frame_bytes(frames[2], 8)], receive=2)
    assert [int(t["result"]["sequence"]) for t in got["texts"]] == [7, 8]


def test_bad_messages_end_the_stream_with_the_servicers_status_and_a_close_code(module_server):
    stub, _, server = module_server
    create(stub, scene(30, 40, 40, 3)[:20, :20], "tiny")
    url = f"ws://127.0.0.1:{server.http_port}/v1/frames:stream"
    image = scene(31, 60, 80, 3)
    cases = [
        ([b"\x0a\xff\xff garbage"], 3, "not a valid StreamMatchRequest", 1008),
        (['{"config": {"topk": 1}}'], 3, "unknown field config.topk", 1008),
        (["{nope"], 3, "not valid JSON", 1008),
        ([frame_bytes(image, 1)], 9, "a frame came before any config", 1008),  # FAILED_PRECONDITION
        ([config_text(templates=["missing"]), frame_bytes(image, 1)], 5, "missing", 1008),
    ]
    for messages, code, words, close in cases:
        got = websocket(url, messages)
        (error,) = [t["error"] for t in got["texts"] if "error" in t]
        assert error["code"] == code and words in error["message"], error
        assert got["code"] == close
    # A message over max_message_bytes: closed before it is read, 1009 with the reason.
    got = websocket(url, [config_text(templates=["tiny"]), b"\0" * (server.settings.max_message_bytes + 1)])
    assert got["code"] == 1009 and "max_message_bytes" in got["reason"], got
    # The server goes on.
    got = websocket(url, [config_text(templates=["tiny"]), frame_bytes(image, 5)], receive=1)
    assert got["texts"][0]["result"]["sequence"] == "5"


def test_streams_over_both_doors_share_max_streams(tmp_path):
    with running_server(tmp_path, http_address="127.0.0.1:0", max_streams=1) as (stub, _, server):
        create(stub, scene(40, 40, 40, 3)[:16, :16], "t")
        requests = [pb.StreamMatchRequest(config=pb.MatchConfig(templates=["t"]))]
        gate = threading.Event()

        def feed():
            yield from requests
            yield pb.StreamMatchRequest(frame=pb.Frame(sequence=1, image=pb.Image(
                encoded=encoded(scene(41, 60, 80, 3), ".jpg"))))
            gate.wait(60)  # the gRPC stream stays open until the WebSocket has been refused

        responses = stub.StreamMatch(feed())
        assert next(responses).result.sequence == 1  # open and answering: it holds the one slot
        got = websocket(f"ws://127.0.0.1:{server.http_port}/v1/frames:stream", [config_text(templates=["t"])])
        gate.set()
        (error,) = [t["error"] for t in got["texts"]]
        assert error["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and "max_streams" in error["message"]
        assert got["code"] == 1013  # try again later
        list(responses)


def test_a_flood_is_closed_1008_with_the_reason(tmp_path, monkeypatch):
    # Matching paused (an injected stage): a client that sends frames without reading results, in
    # a stream that is not realtime, fills the pipeline's bounded queues, then the gateway's.
    release = threading.Event()
    process = frames_module.FrameProcessor.process

    def paused(self, *args, **kwargs):
        release.wait(60)
        return process(self, *args, **kwargs)

    monkeypatch.setattr(frames_module.FrameProcessor, "process", paused)
    with running_server(tmp_path, http_address="127.0.0.1:0", max_in_flight=2) as (stub, _, server):
        try:
            create(stub, scene(50, 40, 40, 3)[:16, :16], "t")
            frame = frame_bytes(scene(51, 60, 80, 3), 1)
            got = websocket(f"ws://127.0.0.1:{server.http_port}/v1/frames:stream",
                            [config_text(templates=["t"])] + [frame] * 200)
        finally:
            release.set()
        (error,) = [t["error"] for t in got["texts"] if "error" in t]
        assert got["code"] == 1008 and "unread" in got["reason"], got
        assert error["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and "realtime" in error["message"]
