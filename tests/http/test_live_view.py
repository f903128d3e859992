"""The live view in a real browser: Debian's chromium, driven by Playwright, its fake camera playing a
clip with a known object path (tests/browser.py). Nothing here waits a fixed time: each step waits
for what the page shows (with a generous deadline) and checks what it drew."""

import base64

import cv2
import numpy as np
import pytest

from featuremap.service.edge.config import Settings
from featuremap.service.edge.server import create_server
from featuremap.v1 import featuremap_pb2 as pb

from browser import browser, frame_index, need_browser, write_clip, write_video
from gateway_helpers import encoded
from service_helpers import all_templates, create, free_port, running_server, scene, wait_serving

WAIT_MS = 90_000


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def chromium(clip):
    with browser(need_browser(), clip.file) as launched:
        yield launched


@pytest.fixture(scope="module")
def module_server_settings():
    return {"http_address": "127.0.0.1:0"}


@pytest.fixture
def page(chromium):
    """A fresh page (its own storage), and the console errors and page errors it logs."""
    context = chromium.new_context(permissions=["camera"])
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    yield page
    context.close()


def model(page, expression: str):
    return page.evaluate(f"() => window.featuremapLive.{expression}")


def test_the_page_lists_the_bank_and_adds_a_template_drawn_on_a_dropped_image(module_server, page):
    stub, _, server = module_server
    picture = scene(60, 150, 200, 3)
    create(stub, picture[10:42, 10:42], "first")
    page.goto(f"http://127.0.0.1:{server.http_port}/")
    page.wait_for_selector('#templates li[data-name="templates/first"]', timeout=WAIT_MS)
    # The thumbnail is the template's pixels (GetTemplate over HTTP, raw BGR drawn as RGB).
    page.wait_for_function("""() => { const c = document.querySelector('#templates li canvas');
        return c.getContext('2d').getImageData(32, 32, 1, 1).data[3] === 255; }""", timeout=WAIT_MS)
    # Drop an image on the bank, as a drag from the desktop does, and draw a box on it.
    page.evaluate("""(data) => {
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const files = new DataTransfer();
        files.items.add(new File([bytes], 'picture.png', {type: 'image/png'}));
        document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: files, bubbles: true,
                                                                              cancelable: true}));
    }""", base64.b64encode(encoded(picture)).decode())
    page.wait_for_selector("#editor:not([hidden])", timeout=WAIT_MS)
    page.wait_for_function("() => document.getElementById('crop').width === 200", timeout=WAIT_MS)
    box = page.locator("#crop").bounding_box()
    scale = box["width"] / 200
    page.mouse.move(box["x"] + 40 * scale, box["y"] + 30 * scale)
    page.mouse.down()
    page.mouse.move(box["x"] + 70 * scale, box["y"] + 55 * scale, steps=4)
    page.mouse.move(box["x"] + 100 * scale, box["y"] + 80 * scale, steps=4)
    page.mouse.up()
    page.fill("#template-id", "drawn")
    page.fill("#template-name", "Drawn on the page")
    page.click("#add")
    page.wait_for_selector('#templates li[data-name="templates/drawn"]', timeout=WAIT_MS)
    # Over gRPC: the template is the box drawn, pixel for pixel.
    stored = all_templates(stub)["drawn"]
    assert stored.display_name == "Drawn on the page"
    pixels = np.frombuffer(stored.image.raw.data, np.uint8).reshape(stored.height, stored.width, stored.channels)
    assert pixels.shape == (50, 60, 3)
    assert np.abs(pixels.astype(int) - picture[30:80, 40:100]).max() <= 1
    assert page.errors == []


def test_the_camera_stream_draws_boxes_where_the_object_is(module_server, page, clip):
    stub, _, server = module_server
    create(stub, clip.template, "object")
    sent = frames_sent(page)  # sequence -> the clip's frame index, read from the frame the page sent
    page.goto(f"http://127.0.0.1:{server.http_port}/")
    page.wait_for_selector('#templates li[data-name="templates/object"]', timeout=WAIT_MS)
    page.click("#camera")
    page.wait_for_function("() => window.featuremapLive.drawn.length >= 40", timeout=WAIT_MS)
    assert page.get_attribute("#status", "data-state") == "streaming"
    drawn = model(page, "drawn")
    close = 0
    for result in drawn:
        boxes = [b for b in result["boxes"] if b["template"] == "templates/object"]
        truth = clip.truth(sent[result["sequence"]])
        if boxes and np.abs(np.array(boxes[0]["corners"]) - truth).max() <= 4:
            close += 1
    assert close >= 0.95 * len(drawn), f"{close} of {len(drawn)} boxes within 4 px"
    # The live numbers, as the page shows them.
    assert float(page.text_content("#fps")) > 0 and page.text_content("#latency").endswith(" ms")
    assert int(page.text_content("#answered")) >= 40
    # A heatmap on demand: the maps come back (UINT8) and are drawn under the boxes.
    page.check('#templates li[data-name="templates/object"] input.heatmap')
    page.wait_for_function("() => (window.featuremapLive.latest.heatmaps || []).length === 1", timeout=WAIT_MS)
    assert page.errors == []


def test_a_video_file_dropped_on_the_view_streams_too(module_server, page, clip, tmp_path):
    stub, _, server = module_server
    if "templates/object" not in {t.name for t in stub.ListTemplates(pb.ListTemplatesRequest()).templates}:
        create(stub, clip.template, "object")
    video = write_video(clip, tmp_path)
    sent = frames_sent(page)
    page.goto(f"http://127.0.0.1:{server.http_port}/")
    page.wait_for_selector('#templates li[data-name="templates/object"]', timeout=WAIT_MS)
    page.evaluate("""(data) => {
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const files = new DataTransfer();
        files.items.add(new File([bytes], 'clip.webm', {type: 'video/webm'}));
        document.getElementById('stage').dispatchEvent(new DragEvent('drop', {dataTransfer: files, bubbles: true,
                                                                               cancelable: true}));
    }""", base64.b64encode(video.read_bytes()).decode())
    page.wait_for_function("() => window.featuremapLive.drawn.length >= 20", timeout=WAIT_MS)
    assert model(page, "source") == "file"
    drawn = model(page, "drawn")
    close = sum(1 for result in drawn for box in result["boxes"][:1]
                if np.abs(np.array(box["corners"]) - clip.truth(sent[result["sequence"]])).max() <= 4)
    assert close >= 0.95 * len(drawn), f"{close} of {len(drawn)} boxes within 4 px"
    assert page.errors == []


def test_a_server_stopped_mid_stream_is_said_and_the_page_reconnects_when_it_returns(tmp_path, chromium, clip):
    port = free_port()
    settings = Settings(data_dir=str(tmp_path / "data"), http_address=f"127.0.0.1:{port}")

    def start():
        server, grpc_port = create_server("127.0.0.1:0", settings)
        import grpc

        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        wait_serving(channel)
        return server, channel

    server, channel = start()
    from featuremap.v1 import featuremap_pb2_grpc as pb_grpc

    create(pb_grpc.FeatureMapServiceStub(channel), clip.template, "object")
    channel.close()
    context = chromium.new_context(permissions=["camera"])
    page = context.new_page()
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#templates li", timeout=WAIT_MS)
        page.click("#camera")
        page.wait_for_function("() => window.featuremapLive.drawn.length >= 5", timeout=WAIT_MS)
        server.drain(0)
        page.wait_for_function("() => window.featuremapLive.state === 'lost'", timeout=WAIT_MS)
        message = page.text_content("#status")
        assert "Lost the server" in message and "reconnecting" in message, message
        before = model(page, "drawn.length")
        server, channel = start()  # back, on the same port, with the same bank
        channel.close()
        page.wait_for_function(f"() => window.featuremapLive.drawn.length >= {before + 5}", timeout=WAIT_MS)
        assert page.get_attribute("#status", "data-state") == "streaming"
    finally:
        context.close()
        server.drain(0)


def test_a_token_protected_server_refuses_the_page_without_a_token(tmp_path, chromium, clip):
    token = "page-0123456789abcdefgh"
    (tmp_path / "tokens").write_text(f"{token} admin\n")
    with running_server(tmp_path / "data", http_address="127.0.0.1:0",
                        tokens_file=str(tmp_path / "tokens")) as (stub, _, server):
        stub.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=pb.Image(encoded=encoded(
            clip.template))), template_id="object"), metadata=(("authorization", f"Bearer {token}"),))
        context = chromium.new_context(permissions=["camera"])
        page = context.new_page()
        try:
            page.goto(f"http://127.0.0.1:{server.http_port}/")
            page.wait_for_selector("#token-form:not([hidden])", timeout=WAIT_MS)
            assert page.get_attribute("#status", "data-state") == "needs-token"
            assert "missing token" in page.text_content("#token-error")
            page.click("#camera")  # the stream is refused too, and said so
            page.wait_for_function("() => (window.featuremapLive.refused || {}).source === 'stream'",
                                   timeout=WAIT_MS)
            assert "refused" in page.text_content("#status")
            assert page.locator("#templates li").count() == 0
            # With the token: the bank, then the stream (the token offered as a WebSocket subprotocol).
            page.fill("#token", token)
            page.click("#token-form button")
            page.wait_for_selector("#token-form", state="hidden", timeout=WAIT_MS)
            page.wait_for_function("() => window.featuremapLive.stats.answered >= 3", timeout=WAIT_MS)
        finally:
            context.close()


def frames_sent(page) -> dict[int, int]:
    """Filled as the page streams: each frame's sequence -> the clip's frame index, read from the frame
    the page sent (decoded with the page's own protobuf encoding)."""
    sent: dict[int, int] = {}

    def watch(socket):
        def frame(payload):
            if isinstance(payload, bytes):
                request = pb.StreamMatchRequest.FromString(payload)
                image = cv2.imdecode(np.frombuffer(request.frame.image.encoded, np.uint8), cv2.IMREAD_COLOR)
                sent[request.frame.sequence] = frame_index(image)
        socket.on("framesent", frame)

    page.on("websocket", watch)
    return sent
