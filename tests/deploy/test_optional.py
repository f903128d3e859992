"""The HTTP gateway is an optional wing: without its package (aiohttp, the http extra) the server
imports, starts and serves gRPC, and only ``http_address`` is refused, naming the extra."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys

    class NoAiohttp:
        # As on a machine where `pip install featuremap` left the http extra out.
        def find_spec(self, name, path=None, target=None):
            if name == "aiohttp" or name.startswith("aiohttp."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoAiohttp())
    import tempfile

    from featuremap.service.edge.server import create_server
    from featuremap.service.settings import Settings

    with tempfile.TemporaryDirectory() as data:
        server, port = create_server("127.0.0.1:0", Settings(data_dir=data))
        print("served", port > 0, "aiohttp" in sys.modules)
        server.drain(0)
        try:
            create_server("127.0.0.1:0", Settings(data_dir=data, http_address="127.0.0.1:0"))
        except RuntimeError as error:
            print("refused:", error)
    """
)


def test_the_server_runs_without_the_gateways_package():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "served True False"  # gRPC served, aiohttp never imported
    assert lines[1].startswith("refused: http_address needs the HTTP gateway's packages (aiohttp is missing)")
    assert "pip install 'featuremap[http]'" in lines[1]
