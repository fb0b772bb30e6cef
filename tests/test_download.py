"""The real download code against a local HTTP server (Range support, a corrupt file, a dropped
connection) and file:// URLs."""

import hashlib
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import toy_images, write_idx

from gankit.data import load_dataset
from gankit.data.download import Remote, download, extract_members
from gankit.data.mnist import SPECS, IdxSpec, load_idx_dataset
from gankit.errors import GankitError

PAYLOAD = bytes(range(256)) * 4000  # ~1 MB


class Server:
    """Serves `files` on 127.0.0.1; `cut_after` makes the first GET of a file stop mid-transfer;
    `no_length` sends no Content-Length (the client cannot tell a short transfer from a whole one)."""

    def __init__(self, files: dict[str, bytes], cut_after: int | None = None, no_length: bool = False):
        self.files, self.cut_after, self.no_length, self.requests = files, cut_after, no_length, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                server.requests.append((name, rng))
                if name not in server.files:
                    self.send_error(404)
                    return
                body, start = server.files[name], 0
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                if not server.no_length:
                    self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                first = sum(1 for n, _ in server.requests if n == name) == 1
                if server.cut_after and first:
                    self.wfile.write(body[start : start + server.cut_after])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # drop the connection mid-transfer
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    servers = []

    def make(files, cut_after=None, no_length=False):
        servers.append(Server(files, cut_after, no_length))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def md5(b: bytes) -> str:
    return "md5:" + hashlib.md5(b).hexdigest()


def test_download_checks_hash_and_caches(server, tmp_path):
    srv = server({"data.bin": PAYLOAD})
    remote = Remote(srv.url + "data.bin", md5(PAYLOAD))
    path = download(remote, tmp_path / "c", progress=False)
    assert path.read_bytes() == PAYLOAD and not (tmp_path / "c" / "data.bin.part").exists()
    download(remote, tmp_path / "c", progress=False)
    assert len(srv.requests) == 1  # second call served from the cache


def test_sha256_digests_work(server, tmp_path):
    srv = server({"d": PAYLOAD})
    remote = Remote(srv.url + "d", "sha256:" + hashlib.sha256(PAYLOAD).hexdigest())
    assert download(remote, tmp_path, progress=False).read_bytes() == PAYLOAD


def test_corrupted_file_is_rejected_and_removed(server, tmp_path):
    srv = server({"data.bin": PAYLOAD[:-1] + b"X"})
    with pytest.raises(GankitError, match="checksum mismatch.*data.bin.*removed"):
        download(Remote(srv.url + "data.bin", md5(PAYLOAD)), tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    srv = server({"data.bin": PAYLOAD}, cut_after=300_000)
    path = download(Remote(srv.url + "data.bin", md5(PAYLOAD)), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert srv.requests[0] == ("data.bin", None)
    assert srv.requests[1] == ("data.bin", "bytes=300000-")  # only the missing bytes were asked for


def test_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    srv = server({"data.bin": PAYLOAD})
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:123_456])
    path = download(Remote(srv.url + "data.bin", md5(PAYLOAD)), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD and srv.requests == [("data.bin", "bytes=123456-")]


def test_missing_file_and_unreachable_host(server, tmp_path):
    srv = server({})
    with pytest.raises(GankitError, match="HTTP 404"):
        download(Remote(srv.url + "nope", md5(b"")), tmp_path, progress=False)
    with pytest.raises(GankitError, match="failed after 4 tries"):
        download(Remote("http://127.0.0.1:9/x", md5(b"")), tmp_path, progress=False, timeout=1)


def test_file_url(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    path = download(Remote(src.as_uri(), md5(PAYLOAD), "copy.bin"), tmp_path / "out", progress=False)
    assert path.name == "copy.bin" and path.read_bytes() == PAYLOAD


def test_named_dataset_downloads_into_cache(server, tmp_path, monkeypatch):
    images, labels = toy_images(32)
    files = {}
    for stem, arr in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        files[stem + ".gz"] = write_idx(tmp_path / (stem + ".gz"), arr).read_bytes()
    srv = server(files)
    spec = IdxSpec(
        "fashion-mnist",
        SPECS["fashion-mnist"].classes,
        {s[:-3]: Remote(srv.url + s, md5(b)) for s, b in files.items()},
    )
    monkeypatch.setitem(SPECS, "fashion-mnist", spec)
    ds = load_dataset("fashion-mnist", progress=False)
    assert ds.images.shape == (32, 1, 28, 28)
    assert (tmp_path / "cache" / "fashion-mnist" / "train-images-idx3-ubyte.gz").exists()
    load_idx_dataset("fashion-mnist", progress=False)
    assert len(srv.requests) == 2  # the second load used the cache


def test_emnist_split_is_extracted_from_the_zip(server, tmp_path, monkeypatch):
    import gankit.data.mnist as mnist

    images, labels = toy_images(8)
    archive = tmp_path / "gzip.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(
            "gzip/emnist-letters-train-images-idx3-ubyte.gz", write_idx(tmp_path / "i", images).read_bytes()
        )
        zf.writestr(
            "gzip/emnist-letters-train-labels-idx1-ubyte.gz",
            write_idx(tmp_path / "l", labels + 1).read_bytes(),
        )
    blob = archive.read_bytes()
    srv = server({"gzip.zip": blob})
    monkeypatch.setattr(mnist, "EMNIST_ZIP", Remote(srv.url + "gzip.zip", md5(blob), "emnist-gzip.zip"))
    ds = load_dataset("emnist-letters", progress=False)
    assert ds.images.shape == (8, 1, 28, 28) and ds.labels.min() == 1
    assert ds.classes[1] == "a"


def test_bad_zip_is_reported(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(GankitError, match="bad.zip: not a valid zip archive"):
        extract_members(bad, {"x": tmp_path / "x"})


def test_a_short_transfer_without_length_is_never_trusted_and_a_retry_works(server, tmp_path):
    srv = server({"d.zip": PAYLOAD}, cut_after=5000, no_length=True)
    remote = Remote(srv.url + "d.zip", md5(PAYLOAD))
    with pytest.raises(GankitError, match="checksum mismatch .*the file was removed, run again"):
        download(remote, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing kept, no hash recorded as the truth
    assert download(remote, tmp_path, progress=False).read_bytes() == PAYLOAD  # "run again" works


def test_a_transfer_short_of_the_pinned_size_is_kept_and_resumed(server, tmp_path):
    srv = server({"d.zip": PAYLOAD}, cut_after=5000, no_length=True)
    remote = Remote(srv.url + "d.zip", md5(PAYLOAD), size=len(PAYLOAD))
    with pytest.raises(
        GankitError, match=f"ended early \\(5000 of {len(PAYLOAD)} bytes\\).*run again to resume"
    ):
        download(remote, tmp_path, progress=False)
    assert (tmp_path / "d.zip.part").stat().st_size == 5000
    assert download(remote, tmp_path, progress=False).read_bytes() == PAYLOAD
    assert srv.requests[-1] == ("d.zip", "bytes=5000-")


def test_every_built_in_download_is_pinned():
    """No file gankit downloads is trusted on first use: each named set has a digest (and the
    translation archives come over https)."""
    from gankit.data.mnist import EMNIST_ZIP
    from gankit.data.paired import PIX2PIX_SETS, pix2pix_archive
    from gankit.data.unpaired import CYCLEGAN_SETS, cyclegan_archive
    from gankit.metrics.features import STANDARD

    remotes = [pix2pix_archive(n) for n in PIX2PIX_SETS] + [cyclegan_archive(n) for n in CYCLEGAN_SETS]
    assert all(r.url.startswith("https://") for r in remotes)
    remotes += [EMNIST_ZIP, STANDARD] + [r for spec in SPECS.values() for r in (spec.remotes or {}).values()]
    for r in remotes:
        algorithm, _, value = r.digest.partition(":")
        assert len(value) == {"md5": 32, "sha256": 64}[algorithm] and int(value, 16) >= 0, r
    with pytest.raises(ValueError, match="is not md5:HEX or sha256:HEX"):
        Remote("https://example.org/x", None)
