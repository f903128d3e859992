"""The template bank over real gRPC: CRUD, paging, validation, persistence."""

import struct
import threading
import zlib

import cv2
import grpc
import numpy as np
import pytest

from featuremap.service.store.bank import Bank
from featuremap.service.pipeline.codec import decode_image
from featuremap.service.errors import LimitExceeded
from featuremap.service.store.sqlite_store import SQLiteStore
from featuremap.wire import image_message as raw_image
from featuremap.v1 import featuremap_pb2 as pb

from service_helpers import create, running_server, scene


def code_of(call, *args, **kwargs) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value.code(), caught.value.details()


def test_create_get_list_delete(server):
    stub, _, _ = server
    image = scene()[10:26, 20:44]
    created = create(stub, image, "corner", display_name="A corner", labels={"site": "a"})
    assert created.name == "templates/corner"
    assert (created.height, created.width, created.channels) == (16, 24, 1)
    assert created.etag and created.create_time.seconds > 0
    got = stub.GetTemplate(pb.GetTemplateRequest(name="templates/corner")).template
    assert np.array_equal(decode_image(got.image, "t", 10**6)[:, :, 0], image)
    assert got.display_name == "A corner" and dict(got.labels) == {"site": "a"}
    generated = create(stub, image)
    assert generated.name.startswith("templates/t")
    listed = stub.ListTemplates(pb.ListTemplatesRequest()).templates
    assert [t.name for t in listed] == ["templates/corner", generated.name]
    assert not listed[0].HasField("image")  # the BASIC view leaves pixels out
    full = stub.ListTemplates(pb.ListTemplatesRequest(view=pb.TEMPLATE_VIEW_FULL)).templates
    assert full[0].image.raw.data == image.tobytes()
    stub.DeleteTemplate(pb.DeleteTemplateRequest(name="corner"))
    assert code_of(stub.GetTemplate, pb.GetTemplateRequest(name="templates/corner"))[0] == grpc.StatusCode.NOT_FOUND
    assert [t.name for t in stub.ListTemplates(pb.ListTemplatesRequest()).templates] == [generated.name]


def test_paging_visits_every_template_once(server):
    stub, _, _ = server
    ids = [f"p{i:02d}" for i in range(23)]
    for tid in ids:
        create(stub, scene(len(tid))[:8, :8], tid)
    seen, token, pages = [], "", 0
    while True:
        page = stub.ListTemplates(pb.ListTemplatesRequest(page_size=5, page_token=token))
        seen += [t.name.split("/")[1] for t in page.templates]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == ids and pages == 5
    assert code_of(stub.ListTemplates, pb.ListTemplatesRequest(page_token="garbage"))[0] == \
        grpc.StatusCode.INVALID_ARGUMENT


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (no real pixel data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def test_bad_templates_are_refused_and_the_bank_is_intact(server):
    stub, _, _ = server
    good = create(stub, scene()[:10, :10], "good")
    image = scene()[:10, :10]
    ok, png = cv2.imencode(".png", image)
    cases = [
        (pb.CreateTemplateRequest(template=pb.Template(image=raw_image(image)), template_id="good"),
         grpc.StatusCode.ALREADY_EXISTS, "already exists"),
        (pb.CreateTemplateRequest(template=pb.Template(image=raw_image(image)), template_id="Bad_Id"),
         grpc.StatusCode.INVALID_ARGUMENT, "not a template name"),
        (pb.CreateTemplateRequest(template=pb.Template()), grpc.StatusCode.INVALID_ARGUMENT, "has no image"),
        (pb.CreateTemplateRequest(template=pb.Template(image=pb.Image(encoded=png.tobytes()[:40]))),
         grpc.StatusCode.INVALID_ARGUMENT, "could not be decoded"),
        (pb.CreateTemplateRequest(template=pb.Template(image=pb.Image(encoded=b"GIF89a...."))),
         grpc.StatusCode.INVALID_ARGUMENT, "not PNG, JPEG or WebP"),
        (pb.CreateTemplateRequest(template=pb.Template(image=pb.Image(encoded=_png_header_only(100000, 100000)))),
         grpc.StatusCode.RESOURCE_EXHAUSTED, "over the limit of 1048576 (max_template_pixels)"),
        (pb.CreateTemplateRequest(template=pb.Template(image=pb.Image(raw=pb.RawImage(
            height=10, width=10, channels=1, dtype=pb.DATA_TYPE_UINT8, data=b"short")))),
         grpc.StatusCode.INVALID_ARGUMENT, "needs 100"),
        (pb.CreateTemplateRequest(template=pb.Template(image=pb.Image(raw=pb.RawImage(
            height=2, width=2, channels=2, dtype=pb.DATA_TYPE_UINT8, data=b"12345678")))),
         grpc.StatusCode.INVALID_ARGUMENT, "2 channels"),
        (pb.CreateTemplateRequest(template=pb.Template(image=raw_image(np.full((3, 3), np.nan, np.float32)))),
         grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
        (pb.CreateTemplateRequest(template=pb.Template(image=raw_image(image), mask=raw_image(image[:5])),
                                  template_id="masked"),
         grpc.StatusCode.INVALID_ARGUMENT, "mask has shape (5, 10)"),
    ]
    for request, code, message in cases:
        got_code, details = code_of(stub.CreateTemplate, request)
        assert got_code == code, (details, request.template_id)
        assert message in details
    listed = stub.ListTemplates(pb.ListTemplatesRequest()).templates
    assert [t.name for t in listed] == [good.name]
    assert code_of(stub.DeleteTemplate, pb.DeleteTemplateRequest(name="templates/nope"))[0] == grpc.StatusCode.NOT_FOUND


def test_encoded_templates_and_masks(server):
    stub, _, _ = server
    image = scene(channels=3)[:20, :30]
    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 5:25] = 255
    created = stub.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(
        image=pb.Image(encoded=cv2.imencode(".png", image)[1].tobytes()),
        mask=pb.Image(encoded=cv2.imencode(".png", mask)[1].tobytes())), template_id="png")).template
    assert (created.height, created.width, created.channels) == (20, 30, 3)
    assert np.array_equal(decode_image(created.image, "t", 10**6), image)
    assert np.array_equal(decode_image(created.mask, "m", 10**6)[:, :, 0], mask)


def test_the_bank_survives_a_restart(tmp_path):
    data = tmp_path / "data"
    image = scene()[30:50, 40:70]
    with running_server(data) as (stub, _, _):
        created = create(stub, image, "kept", labels={"k": "v"})
        create(stub, image, "gone")
        stub.DeleteTemplate(pb.DeleteTemplateRequest(name="templates/gone"))
    with running_server(data) as (stub, _, _):
        listed = stub.ListTemplates(pb.ListTemplatesRequest(view=pb.TEMPLATE_VIEW_FULL)).templates
        assert [t.name for t in listed] == ["templates/kept"]
        assert listed[0].etag == created.etag and dict(listed[0].labels) == {"k": "v"}
        assert listed[0].image.raw.data == image.tobytes()


def test_names_labels_and_variants_at_the_edges_are_refused_with_short_messages(server):
    stub, _, _ = server
    image = raw_image(scene(3)[:10, :10])
    long_id = "a" * 20000
    cases = [
        (pb.CreateTemplateRequest(template=pb.Template(image=image), template_id="abc\n"),
         grpc.StatusCode.INVALID_ARGUMENT, "is not a template name"),
        (pb.CreateTemplateRequest(template=pb.Template(image=image), template_id=long_id),
         grpc.StatusCode.INVALID_ARGUMENT, "(20000 characters)"),
        (pb.CreateTemplateRequest(template=pb.Template(image=image, labels={f"k{i}": "v" for i in range(65)})),
         grpc.StatusCode.INVALID_ARGUMENT, "at most 64"),
        # 10x10 at scale 8 and 45 degrees is 114x114: fine; a 1000x1000 template at scale 1.2 is not.
        (pb.CreateTemplateRequest(template=pb.Template(image=raw_image(np.zeros((1000, 1000), np.uint8)),
                                                       scales=[1.0, 1.2])),
         grpc.StatusCode.RESOURCE_EXHAUSTED, "(max_template_pixels)"),
    ]
    for request, code, message in cases:
        got_code, details = code_of(stub.CreateTemplate, request)
        assert (got_code, message in details) == (code, True), details[:200]
        assert len(details) < 400
    got_code, details = code_of(stub.GetTemplate, pb.GetTemplateRequest(name="templates/" + long_id))
    assert got_code == grpc.StatusCode.INVALID_ARGUMENT and len(details) < 400
    assert stub.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=image, scales=[8], angles=[45]),
                                                        template_id="big")).template.name == "templates/big"
    assert [t.name for t in stub.ListTemplates(pb.ListTemplatesRequest()).templates] == ["templates/big"]


def test_a_full_disk_is_resource_exhausted_and_loses_nothing(tmp_path):
    # A real SQLite file that cannot grow (max_page_count): SQLite says "database or disk is full".
    store = SQLiteStore(tmp_path / "bank.db")
    bank = Bank(store, max_templates=100)
    first = bank.create(np.zeros((8, 8, 1), np.uint8), None, template_id="first")
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(LimitExceeded, match="disk is full"):
        bank.create(np.zeros((200, 200, 1), np.uint8), None, template_id="second")
    assert [t.id for t in bank.page(0, 10)[0]] == ["first"]
    store.close()
    assert [t.id for t in SQLiteStore(tmp_path / "bank.db").load()] == [first.id]


def test_reads_and_matches_go_on_while_a_write_waits_on_a_slow_store(server, workers):
    stub, _, srv = server
    frame = scene()
    create(stub, frame[10:30, 20:40], "loaded")
    entered, release = threading.Event(), threading.Event()
    add = srv.store.add

    def slow_add(template):  # an injected slow store: the write waits until released
        entered.set()
        release.wait(60)
        return add(template)

    srv.store.add = slow_add
    try:
        workers.start(lambda: create(stub, frame[40:60, 50:70], "slow"))
        assert entered.wait(30)
        # The bank answers from memory meanwhile (each call bounded: it would block were a lock held).
        names = [t.name for t in stub.ListTemplates(pb.ListTemplatesRequest(), timeout=10).templates]
        assert names == ["templates/loaded"]
        reply = stub.Match(pb.MatchRequest(config=pb.MatchConfig(templates=["loaded"]),
                                           frame=pb.Frame(image=raw_image(frame))), timeout=30)
        assert [p.template for p in reply.result.peaks] == ["templates/loaded"]
        assert stub.GetTemplate(pb.GetTemplateRequest(name="templates/loaded"), timeout=10).template.name
    finally:
        release.set()
        workers.join()
        srv.store.add = add
    names = [t.name for t in stub.ListTemplates(pb.ListTemplatesRequest(), timeout=10).templates]
    assert names == ["templates/loaded", "templates/slow"]


def test_a_retried_create_with_a_request_id_returns_what_the_first_stored(server):
    stub, _, srv = server
    image = scene()[:12, :12]
    request = pb.CreateTemplateRequest(template=pb.Template(image=raw_image(image)), request_id="4f1c-retry")
    first = stub.CreateTemplate(request).template
    again = stub.CreateTemplate(request).template  # the answer to the first was "lost": the client retries
    assert again.name == first.name and again.create_time == first.create_time and again.etag == first.etag
    assert [t.name for t in stub.ListTemplates(pb.ListTemplatesRequest()).templates] == [first.name]
    # Other content under the same request id and id is a conflict; without a request id, a repeat is too.
    other = pb.CreateTemplateRequest(template=pb.Template(image=raw_image(image + 1)), request_id="4f1c-retry")
    assert code_of(stub.CreateTemplate, other)[0] == grpc.StatusCode.ALREADY_EXISTS
    plain = pb.CreateTemplateRequest(template=pb.Template(image=raw_image(image)), template_id="plain")
    stub.CreateTemplate(plain)
    code, details = code_of(stub.CreateTemplate, plain)
    assert code == grpc.StatusCode.ALREADY_EXISTS and "request_id" in details


def test_a_write_the_store_took_but_answered_too_late_is_acknowledged(server):
    # The store writes, then its answer times out: the outcome is unknown, so the bank asks the
    # store before answering, and the client is told the template exists (it does).
    from featuremap.service.errors import Unavailable

    stub, _, srv = server
    add = srv.store.add

    def late(template):
        add(template)
        raise Unavailable("the bank's store timed out")

    srv.store.add = late
    try:
        created = stub.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=raw_image(scene()[:9, :9])),
                                                               template_id="late"), timeout=10).template
    finally:
        srv.store.add = add
    assert created.name == "templates/late"
    assert stub.GetTemplate(pb.GetTemplateRequest(name="templates/late")).template.etag == created.etag
