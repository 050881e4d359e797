"""The REST client against a stand-in server that keeps connections alive, as TF Serving does."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mtmoe.serving.client import RestClient


class _KeepAliveStatus(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # connections stay open between requests
    peers = []

    def do_GET(self):
        self.peers.append(self.client_address)
        body = json.dumps({"model_version_status": [{"version": "1", "state": "AVAILABLE"}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


def test_the_rest_client_reuses_its_connection():
    peers = _KeepAliveStatus.peers = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveStatus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = RestClient(f"http://127.0.0.1:{server.server_address[1]}")
    try:
        for _ in range(3):
            assert client.status()["model_version_status"][0]["state"] == "AVAILABLE"
    finally:
        client.close()
        server.shutdown()
        server.server_close()
    assert len(peers) == 3 and len(set(peers)) == 1  # one client port: one connection


def test_no_server_at_the_address_is_one_clear_line(cli):
    import socket

    with socket.socket() as probe:  # a port nothing listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = cli("predict", "--server", f"http://127.0.0.1:{port}", "hello")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: http://127.0.0.1:{port}/v1/models/mtmoe: no model server answers there (is "
        "`mtmoe serve` or TF Serving running, on that host and port?)"]


def test_versions_lists_the_pushed_versions_and_marks_the_one_that_serves(tmp_path, cli):
    for name in ("1700000005", "1700000012", "tmp-staging"):
        (tmp_path / name).mkdir()
    result = cli("versions", "--serving-dir", tmp_path)
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and len(lines) == 2
    assert lines[0].startswith("version 1700000005  pushed ") and "serving" not in lines[0]
    assert lines[1].startswith("version 1700000012  pushed ") and lines[1].endswith(
        "serving (the newest: TF Serving and `mtmoe serve` load it)")
    empty = cli("versions", "--serving-dir", tmp_path / "none")
    assert empty.returncode == 2 and "no model versions" in empty.stderr


def test_versions_asks_a_server_for_its_versions_and_their_state(cli):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveStatus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = cli("versions", "--server", f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
    assert result.returncode == 0 and result.stdout == "version 1: AVAILABLE\n"
