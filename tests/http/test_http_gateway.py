"""The HTTP/JSON gateway over a real port: the registry and Match, 1:1 with gRPC, on one bank."""

import json
import socket
import time

import grpc
import numpy as np
import pytest
from google.protobuf import json_format

from featuremap.v1 import featuremap_pb2 as pb
from featuremap.wire import map_array

from gateway_helpers import Http, b64, encoded, error_field, multipart
from service_helpers import create, frame_message, running_server, scene, wait_serving


@pytest.fixture(scope="module")
def module_server_settings():
    return {"http_address": "127.0.0.1:0", "max_frame_pixels": 1 << 20}


@pytest.fixture(scope="module")
def gateway(module_server):
    """(gRPC stub, an HTTP connection to the gateway, the Server)."""
    stub, _, server = module_server
    connection = Http(server.http_port)
    yield stub, connection, server
    connection.close()


def test_a_template_made_over_http_is_the_one_grpc_lists_and_the_other_way_round(gateway):
    stub, http, _ = gateway
    frame = scene(3, 120, 160, 3)
    patch = frame[20:52, 30:62]
    status, made = http.json("POST", "/v1/templates?templateId=patch&displayName=Patch&template.labels[site]=gate"
                             "&scales=1&scales=0.5", raw=encoded(patch), content_type="image/png")
    assert status == 200, made
    template = made["template"]
    assert template["name"] == "templates/patch" and template["displayName"] == "Patch"
    assert template["labels"] == {"site": "gate"} and template["scales"] == [1.0, 0.5]
    listed = {t.name: t for t in stub.ListTemplates(pb.ListTemplatesRequest(view=pb.TEMPLATE_VIEW_FULL)).templates}
    stored = listed["templates/patch"]
    assert stored.display_name == "Patch" and np.array_equal(
        np.frombuffer(stored.image.raw.data, np.uint8).reshape(32, 32, 3), patch)
    # A multipart form (as curl -F sends it) and a JSON body with the image in base64.
    body, kind = multipart({"image": encoded(frame[60:80, 90:120]), "templateId": "form", "labels[kind]": "form"})
    status, made = http.json("POST", "/v1/templates", raw=body, content_type=kind)
    assert status == 200 and made["template"]["labels"] == {"kind": "form"}, made
    status, made = http.json("POST", "/v1/templates?templateId=json",
                             body={"displayName": "J", "image": {"encoded": b64(encoded(frame[0:16, 0:16]))}})
    assert status == 200 and made["template"]["width"] == 16, made
    # Made over gRPC, read over HTTP, pixels included (raw, base64).
    create(stub, frame[5:25, 5:35], "grpc-made")
    status, got = http.json("GET", "/v1/templates/grpc-made")
    assert status == 200
    raw = got["template"]["image"]["raw"]
    assert (raw["height"], raw["width"], raw["dtype"]) == (20, 30, "DATA_TYPE_UINT8")
    assert np.array_equal(np.frombuffer(json_format.ParseDict(got, pb.GetTemplateResponse()).template.image.raw.data,
                                        np.uint8).reshape(20, 30, 3), frame[5:25, 5:35])
    # AIP paging: a page at a time, by next_page_token, in creation order.
    names, token = [], ""
    while True:
        status, page = http.json("GET", "/v1/templates?pageSize=1" + (f"&pageToken={token}" if token else ""))
        assert status == 200 and len(page["templates"]) <= 1
        names += [t["name"] for t in page["templates"]]
        assert "image" not in page["templates"][0] if page["templates"] else True  # TEMPLATE_VIEW_BASIC
        token = page["nextPageToken"]
        if not token:
            break
    assert names == [t.name for t in stub.ListTemplates(pb.ListTemplatesRequest()).templates]
    assert {"templates/patch", "templates/form", "templates/json", "templates/grpc-made"} <= set(names)
    # Delete, then NOT_FOUND both ways; a taken id is ALREADY_EXISTS (409).
    assert http.json("DELETE", "/v1/templates/json") == (200, {})
    status, answer = http.json("GET", "/v1/templates/json")
    assert status == 404 and answer["code"] == grpc.StatusCode.NOT_FOUND.value[0]
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetTemplate(pb.GetTemplateRequest(name="templates/json"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND and caught.value.details() == answer["message"]
    status, answer = http.json("POST", "/v1/templates?templateId=form", raw=encoded(patch), content_type="image/png")
    assert status == 409 and answer["code"] == grpc.StatusCode.ALREADY_EXISTS.value[0]


def test_match_answers_what_grpc_answers_for_a_raw_jpeg_json_and_multipart(gateway):
    stub, http, _ = gateway
    frame = scene(5, 240, 320, 3)
    create(stub, frame[100:140, 200:248], "target")
    jpeg = encoded(frame, ".jpg")
    config = pb.MatchConfig(templates=["target"], peaks=pb.PeakOptions(top_k=2, threshold=0.2),
                            maps=pb.MapOptions(encoding=pb.MAP_ENCODING_FLOAT32))
    want = stub.Match(pb.MatchRequest(config=config, frame=pb.Frame(sequence=9, image=pb.Image(encoded=jpeg))))
    query = ("config.templates=target&peaks.topK=2&peaks.threshold=0.2&maps.encoding=MAP_ENCODING_FLOAT32"
             "&frame.sequence=9")
    answers = [
        http.json("POST", f"/v1/frames:match?{query}", raw=jpeg, content_type="image/jpeg"),
        http.json("POST", "/v1/frames:match", body={
            "config": json_format.MessageToDict(config),
            "frame": {"sequence": "9", "image": {"encoded": b64(jpeg)}}}),
        http.json("POST", "/v1/frames:match", raw=multipart({
            "image": jpeg, "templates": "target", "peaks.topK": "2", "peaks.threshold": "0.2",
            "maps.encoding": "MAP_ENCODING_FLOAT32", "sequence": "9"})[0],
            content_type=multipart({})[1]),
    ]
    for status, answer in answers:
        assert status == 200, answer
        got = json_format.ParseDict(answer, pb.MatchResponse()).result
        assert got.sequence == 9 and len(got.peaks) == len(want.result.peaks) >= 1
        for peak, expected in zip(got.peaks, want.result.peaks, strict=True):
            assert (peak.template, peak.x, peak.y, peak.width, peak.height, peak.score) == (
                expected.template, expected.x, expected.y, expected.width, expected.height, expected.score)
        assert np.array_equal(map_array(got.maps[0]), map_array(want.result.maps[0]))
    best = answers[0][1]["result"]["peaks"][0]
    assert (best["x"], best["y"], best["template"]) == (200.0, 100.0, "templates/target")


def test_every_bad_request_gets_a_clear_json_error_and_the_server_stays_up(gateway):
    stub, http, server = gateway
    frame = scene(6, 80, 100, 3)
    create(stub, frame[10:30, 10:30], "small")
    jpeg = encoded(frame, ".jpg")
    cases = [
        # (method, path, body, content type) -> (HTTP status, gRPC code, words in the message, the field named)
        (("POST", "/v1/frames:match", b"hello", "text/plain"), (415, 3, "application/json", None)),
        (("POST", "/v1/frames:match", b"{not json", "application/json"), (400, 3, "not valid JSON", None)),
        (("POST", "/v1/frames:match", b"no parts", "multipart/form-data"), (400, 3, "does not parse", None)),
        (("POST", "/v1/templates", b"--b\r\n\r\nnameless\r\n--b--\r\n", "multipart/form-data; boundary=b"),
         (400, 3, "needs a name", None)),
        (("POST", "/v1/frames:match", b'{"config": {"topk": 3}}', "application/json"),
         (400, 3, "unknown field config.topk", "config.topk")),
        (("POST", "/v1/frames:match", b'{"config": []}', "application/json"), (400, 3, "JSON object", "config")),
        (("POST", "/v1/frames:match?config.method=METHOD_NOPE", jpeg, "image/jpeg"),
         (400, 3, "METHOD_NOPE", "config.method")),
        (("POST", "/v1/frames:match?topK=3", jpeg, "image/jpeg"), (400, 3, "unknown parameter 'topK'", "topK")),
        (("POST", "/v1/frames:match?config.realtime=yes", jpeg, "image/jpeg"),
         (400, 3, "true or false", "config.realtime")),
        (("POST", "/v1/frames:match?config.templates=small", b'{"config": {}}', "application/json"),
         (400, 3, "every field of MatchRequest goes in the body", "config.templates")),
        (("POST", "/v1/frames:match?config.templates=small", b"\xff\xd8 not a jpeg", "image/jpeg"),
         (400, 3, "JPEG header is corrupt", None)),
        (("POST", "/v1/frames:match?config.templates=nope", jpeg, "image/jpeg"), (404, 5, "nope", None)),
        (("POST", "/v1/frames:match?config.templates=small",
          encoded(np.zeros((1100, 1000, 3), np.uint8)), "image/png"), (429, 8, "max_frame_pixels", None)),
        (("GET", "/v1/templates?pageToken=forged", None, None), (400, 3, "page_token", None)),
        (("GET", "/v1/templates?pageSize=-1", None, None), (400, 3, "page_size", None)),
        (("POST", "/v1/templates?templateId=Bad_Id", encoded(frame[:8, :8]), "image/png"), (400, 3, "Bad_Id", None)),
        (("PUT", "/v1/templates/small", None, None), (405, 12, "GET or DELETE", None)),
        (("GET", "/v2/nothing", None, None), (404, 5, "/openapi.json", None)),
        (("GET", "/v1/frames:stream", None, None), (426, 3, "WebSocket", None)),
    ]
    for (method, path, body, kind), (status, code, words, field) in cases:
        got, headers, data = http.request(method, path, body, {"Content-Type": kind} if kind else {})
        answer = json.loads(data)
        assert (got, answer["code"]) == (status, code), (path, answer)
        assert words in answer["message"], (path, answer["message"])
        assert headers["content-type"].startswith("application/json")
        assert answer["details"][0]["reason"] == grpc.StatusCode(next(
            c for c in grpc.StatusCode if c.value[0] == code)).name
        if field is not None:
            assert error_field(answer) == field, (path, answer)
    # The servicer's own message, word for word, over both doors (one code path).
    with pytest.raises(grpc.RpcError) as caught:
        stub.Match(pb.MatchRequest(config=pb.MatchConfig(templates=["nope"]), frame=frame_message(frame)))
    _, answer = http.json("POST", "/v1/frames:match?config.templates=nope", raw=jpeg, content_type="image/jpeg")
    assert caught.value.details() == answer["message"]
    # Counted as the servicer counts every failure: by RPC and code, whichever door it came in by.
    sample = server.metrics.errors.labels("Match", "NOT_FOUND")._value.get()
    http.json("POST", "/v1/frames:match?config.templates=nope", raw=jpeg, content_type="image/jpeg")
    assert server.metrics.errors.labels("Match", "NOT_FOUND")._value.get() == sample + 1
    # Still serving, both doors.
    wait_serving(grpc.insecure_channel(f"127.0.0.1:{server.port}"), timeout=10)
    status, answer = http.json("POST", "/v1/frames:match?config.templates=small", raw=jpeg, content_type="image/jpeg")
    assert status == 200 and answer["result"]["peaks"][0]["template"] == "templates/small"


def test_an_oversized_body_is_refused_before_it_is_read(gateway):
    _, _, server = gateway
    limit = server.settings.max_message_bytes
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=30) as sock:
        # A Content-Length over the limit and a few bytes of body: answered at once, nothing more read.
        sock.sendall(f"POST /v1/frames:match HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     f"Content-Length: {limit + 1}\r\n\r\n".encode() + b"\xff\xd8")
        head = sock.recv(65536).decode(errors="replace")
    assert head.startswith("HTTP/1.1 413"), head
    assert "max_message_bytes" in head
    # Chunked, with no length: refused as soon as the bytes read pass the limit.
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=30) as sock:
        sock.sendall(b"POST /v1/frames:match HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"\0" * (1 << 20)
        answer = b""
        for _ in range(limit // len(chunk) + 2):
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(30)
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_the_openapi_document_is_the_proto(gateway):
    _, http, _ = gateway
    status, document = http.json("GET", "/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.")
    operations = {operation["operationId"]: (path, verb) for path, verbs in document["paths"].items()
                  for verb, operation in verbs.items()}
    assert operations == {"CreateTemplate": ("/v1/templates", "post"), "ListTemplates": ("/v1/templates", "get"),
                          "GetTemplate": ("/v1/templates/{name}", "get"),
                          "DeleteTemplate": ("/v1/templates/{name}", "delete"),
                          "Match": ("/v1/frames:match", "post"), "StreamMatch": ("/v1/frames:stream", "get")}
    schemas = document["components"]["schemas"]
    for message in (pb.MatchConfig, pb.PeakOptions, pb.Template, pb.FrameResult, pb.Peak):
        schema = schemas[message.DESCRIPTOR.full_name]
        assert list(schema["properties"]) == [f.json_name for f in message.DESCRIPTOR.fields]
        assert schema["additionalProperties"] is False
    # The proto's comments are the descriptions.
    assert schemas["featuremap.v1.PeakOptions"]["properties"]["topK"]["description"] == "Peaks per template; 0 means 1."
    assert "METHOD_SSIM" in schemas["featuremap.v1.Method"]["enum"]
    match = document["paths"]["/v1/frames:match"]["post"]
    assert {"application/json", "image/*", "multipart/form-data"} == set(match["requestBody"]["content"])
    assert "config.peaks.topK" in {p["name"] for p in match["parameters"]}


def test_a_call_past_its_x_server_timeout_is_504_and_its_work_stops(tmp_path, monkeypatch):
    from featuremap.service.pipeline import frames as frames_module

    process = frames_module.FrameProcessor.process
    waited = []

    def until_cancelled(self, plan, frame, decoded=None, cancelled=lambda: False, *args, **kwargs):
        # An injected slow stage: it holds the frame until the call is no longer wanted (its deadline).
        for _ in range(3000):
            if cancelled():
                break
            time.sleep(0.01)
        waited.append(cancelled())
        return process(self, plan, frame, decoded, cancelled, *args, **kwargs)

    monkeypatch.setattr(frames_module.FrameProcessor, "process", until_cancelled)
    with running_server(tmp_path, http_address="127.0.0.1:0") as (stub, _, server):
        frame = scene(9, 60, 80, 3)
        create(stub, frame[:16, :16], "t")
        http = Http(server.http_port)
        status, answer = http.json("POST", "/v1/frames:match?config.templates=t", raw=encoded(frame),
                                   content_type="image/png", headers={"X-Server-Timeout": "0.2"})
        assert status == 504 and answer["code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], answer
        assert "X-Server-Timeout" in answer["message"] and waited == [True]
        status, answer = http.json("POST", "/v1/frames:match", raw=encoded(frame), content_type="image/png",
                                   headers={"X-Server-Timeout": "soon"})
        assert status == 400 and "X-Server-Timeout" in answer["message"]
        http.close()
