"""Downloads against a local HTTP server (127.0.0.1 only) and extraction of hostile archives."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from anomalens.data import download as dl
from anomalens.data.download import OFFICIAL_FILES, RemoteFile, download, download_all, extract, sha256_of
from anomalens.errors import ChecksumError, DataFormatError, DownloadError

PAYLOAD = bytes(range(256)) * 1000  # 256 kB, not a multiple of the chunk size used below
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range: bytes=N-``; can cut a response or answer with an error."""

    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv, name = self.server, self.path.lstrip("/")
        srv.requests.append((name, self.headers.get("Range")))
        if srv.statuses:
            self.send_error(srv.statuses.pop(0))
            return
        if name not in srv.files:
            self.send_error(404)
            return
        data, start = srv.files[name], 0
        range_header = self.headers.get("Range")
        if range_header and not srv.ignore_range:
            start = int(range_header.removeprefix("bytes=").rstrip("-"))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_after is not None:  # promise the full body, send part of it, hang up
            body, srv.cut_after = body[: srv.cut_after], None
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # keep test output quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.statuses: list[int] = []  # error codes answered to the next requests, in order
        self.cut_after: int | None = None  # cut the next response after this many body bytes
        self.ignore_range = False

    def remote(self, name: str, data: bytes = PAYLOAD, sha256: str | None = SHA, **kw) -> RemoteFile:
        self.files[name] = data
        return RemoteFile(f"http://127.0.0.1:{self.server_port}/{name}", sha256, **kw)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    for var in ("ANOMALENS_OFFLINE", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(dl, "_RETRY_DELAY", 0.01)


@pytest.fixture
def server():
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def get(remote: RemoteFile, folder: Path, **kw) -> Path:
    return download(remote, folder, progress=False, chunk_size=10_000, timeout=5, **kw)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ------------------------------------------------------------------------------------------- downloads


def test_download_verifies_and_leaves_only_the_final_file(server, tmp_path):
    path = get(server.remote("data.bin"), tmp_path / "d")
    assert path == tmp_path / "d" / "data.bin"
    assert path.read_bytes() == PAYLOAD and sha256_of(path) == SHA
    assert leftovers(tmp_path / "d") == ["data.bin"]
    assert server.requests == [("data.bin", None)]


def test_corrupt_download_raises_and_leaves_nothing(server, tmp_path):
    remote = server.remote("bad.bin", data=PAYLOAD[:-1] + b"x")
    with pytest.raises(ChecksumError) as err:
        get(remote, tmp_path)
    msg = str(err.value)
    assert "bad.bin" in msg and remote.url in msg
    assert f"sha256 {sha256_of_bytes(PAYLOAD[:-1] + b'x')}, expected {SHA}" in msg
    assert leftovers(tmp_path) == []


def sha256_of_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_connection_cut_midway_is_resumed_with_range(server, tmp_path):
    remote = server.remote("cut.bin")
    server.cut_after = len(PAYLOAD) // 2
    path = get(remote, tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [("cut.bin", None), ("cut.bin", f"bytes={len(PAYLOAD) // 2}-")]
    assert leftovers(tmp_path) == ["cut.bin"]


def test_gives_up_after_retries_and_keeps_the_part_for_later(server, tmp_path, monkeypatch):
    remote = server.remote("flaky.bin")

    def always_cut(self, *args):  # each answer is cut after 1000 more bytes
        server.cut_after = 1000
        return original(self, *args)

    original = _Handler.do_GET
    monkeypatch.setattr(_Handler, "do_GET", always_cut)
    with pytest.raises(DownloadError, match=r"interrupted 3 times.*resume from the 3000 bytes"):
        get(remote, tmp_path, retries=2)
    assert len(server.requests) == 3
    assert (tmp_path / "flaky.bin.part").read_bytes() == PAYLOAD[:3000]
    assert not (tmp_path / "flaky.bin").exists()


def test_existing_part_is_resumed(server, tmp_path):
    remote = server.remote("part.bin")
    (tmp_path / "part.bin.part").write_bytes(PAYLOAD[:12345])
    assert get(remote, tmp_path).read_bytes() == PAYLOAD
    assert server.requests == [("part.bin", "bytes=12345-")]
    assert leftovers(tmp_path) == ["part.bin"]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    remote = server.remote("norange.bin")
    (tmp_path / "norange.bin.part").write_bytes(b"stale bytes from an older run")
    server.ignore_range = True
    assert get(remote, tmp_path).read_bytes() == PAYLOAD
    assert server.requests == [("norange.bin", "bytes=29-")]


def test_complete_part_answered_416_is_verified_and_kept(server, tmp_path):
    remote = server.remote("done.bin")
    (tmp_path / "done.bin.part").write_bytes(PAYLOAD)
    assert get(remote, tmp_path).read_bytes() == PAYLOAD
    assert server.requests == [("done.bin", f"bytes={len(PAYLOAD)}-")]
    assert leftovers(tmp_path) == ["done.bin"]


def test_present_correct_file_makes_no_request(server, tmp_path):
    remote = server.remote("here.bin")
    (tmp_path / "here.bin").write_bytes(PAYLOAD)
    assert get(remote, tmp_path) == tmp_path / "here.bin"
    assert server.requests == []


def test_present_corrupt_file_is_replaced(server, tmp_path):
    remote = server.remote("stale.bin")
    (tmp_path / "stale.bin").write_bytes(b"truncated")
    assert get(remote, tmp_path).read_bytes() == PAYLOAD
    assert len(server.requests) == 1


def test_server_error_is_retried_but_not_found_is_not(server, tmp_path):
    remote = server.remote("busy.bin")
    server.statuses = [503, 502]
    assert get(remote, tmp_path).read_bytes() == PAYLOAD
    assert len(server.requests) == 3

    missing = RemoteFile(f"http://127.0.0.1:{server.server_port}/nope.bin", None)
    with pytest.raises(DownloadError, match=r"nope\.bin.*HTTP 404") as err:
        get(missing, tmp_path / "x")
    assert missing.url in str(err.value) and str(tmp_path / "x") in str(err.value)
    assert len(server.requests) == 4


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_host_fails_fast_naming_file_and_folder(tmp_path, monkeypatch):
    remote = RemoteFile(f"http://127.0.0.1:{_closed_port()}/train-images-idx3-ubyte.gz", SHA)
    folder = tmp_path / "mnist"
    calls = []
    real_urlopen = dl.urllib.request.urlopen
    monkeypatch.setattr(dl.urllib.request, "urlopen", lambda *a, **k: calls.append(a) or real_urlopen(*a, **k))
    began = time.monotonic()
    with pytest.raises(DownloadError) as err:
        get(remote, folder, retries=3)
    assert time.monotonic() - began < 5 and len(calls) == 1  # a refused connection is not retried
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and f"{folder}{os.sep}" in msg and remote.url in msg
    assert not isinstance(err.value, ChecksumError)


def test_offline_env_forbids_any_request(server, tmp_path, monkeypatch):
    monkeypatch.setenv("ANOMALENS_OFFLINE", "1")
    with pytest.raises(DownloadError, match="ANOMALENS_OFFLINE") as err:
        get(server.remote("a.bin"), tmp_path)
    assert "a.bin" in str(err.value) and str(tmp_path) in str(err.value)
    assert server.requests == []
    (tmp_path / "a.bin").write_bytes(PAYLOAD)  # a verified local copy is still fine offline
    assert get(server.remote("a.bin"), tmp_path).read_bytes() == PAYLOAD


def test_download_all_lists_every_missing_file_once(tmp_path):
    base = f"http://127.0.0.1:{_closed_port()}/"
    names = ["one.gz", "two.gz", "three.gz"]
    (tmp_path / "two.gz").write_bytes(PAYLOAD)  # present and valid: not listed
    (tmp_path / "three.gz").write_bytes(b"bad")  # present but wrong: listed as such
    files = [RemoteFile(base + n, SHA) for n in names]
    with pytest.raises(DownloadError) as err:
        download_all(files, tmp_path, progress=False, timeout=5)
    msg = str(err.value)
    assert "2 files could not be downloaded" in msg and f"into {tmp_path}{os.sep}" in msg
    assert "one.gz" in msg and "three.gz (the copy there fails its checksum" in msg and "two.gz" not in msg


def test_download_all_returns_paths_in_order(server, tmp_path):
    files = [server.remote("x.bin"), server.remote("y.bin", data=b"y" * 10, sha256=None)]
    assert download_all(files, tmp_path, progress=False) == [tmp_path / "x.bin", tmp_path / "y.bin"]


def test_md5_is_checked_when_no_sha256(server, tmp_path):
    good = server.remote("m.bin", sha256=None, md5=hashlib.md5(PAYLOAD).hexdigest())
    assert get(good, tmp_path).read_bytes() == PAYLOAD
    bad = server.remote("w.bin", sha256=None, md5="0" * 32)
    with pytest.raises(ChecksumError, match=r"w\.bin.*md5 .*expected 0{32}"):
        get(bad, tmp_path)
    assert leftovers(tmp_path) == ["m.bin"]


def test_without_any_hash_only_emptiness_is_refused(server, tmp_path):
    assert get(server.remote("u.bin", data=b"abc", sha256=None), tmp_path).read_bytes() == b"abc"
    with pytest.raises(ChecksumError, match="empty"):
        get(server.remote("e.bin", data=b"", sha256=None), tmp_path)


def test_remote_file_names_and_official_table():
    assert RemoteFile("https://h/a/b%20c.gz?x=1", None).filename == "b c.gz"
    assert RemoteFile("https://h/a/", None, filename="f.zip").filename == "f.zip"
    with pytest.raises(ValueError, match="filename"):
        RemoteFile("https://h/a/", None)
    assert [f.filename for f in OFFICIAL_FILES["mnist"]][0] == "train-images-idx3-ubyte.gz"
    for files in OFFICIAL_FILES.values():
        for f in files:
            assert f.sha256 is None or len(f.sha256) == 64
            assert f.md5 is None or len(f.md5) == 32
    assert OFFICIAL_FILES["cifar10"][0].md5 == "c58f30108f718f92721af3b95e74349a"
    assert OFFICIAL_FILES["kmnist"][2].sha256 is None and OFFICIAL_FILES["kmnist"][2].md5 is None


# --------------------------------------------------------------------------------------------- extract


def _tar(path: Path, entries: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tf:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tf.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                tf.addfile(info, io.BytesIO(entry[1]))
    return path


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _zip(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def _hostile_archives(arch: Path, outside: Path) -> list[Path]:
    ok = ("fine.txt", b"fine")
    return [
        _tar(arch / "dotdot.tar", [ok, ("../evil", b"x")]),
        _tar(arch / "abs.tar", [ok, (str(outside / "evil"), b"x")]),
        _zip(arch / "dotdot.zip", [ok, ("sub/../../evil", b"x")]),
        _tar(arch / "symlink.tar.gz", [ok, _link("link", str(outside))], "w:gz"),
        _tar(arch / "rel-symlink.tar", [ok, _link("d/link", "../../outside")]),
        _tar(arch / "hardlink.tar", [ok, _link("hard", "../outside/evil", tarfile.LNKTYPE)]),
        # each member alone stays inside, but "p/.." really is the parent of the target
        _tar(arch / "chain.tar", [ok, _link("p", "."), ("p/../evil", b"x")]),
        _tar(arch / "through-link.tar", [ok, _link("q", str(outside)), ("q/evil", b"x")]),
    ]


def test_extract_refuses_members_leaving_the_target(tmp_path):
    (tmp_path / "arch").mkdir()
    outside = tmp_path / "outside"
    for archive in _hostile_archives(tmp_path / "arch", outside):
        work = tmp_path / "work" / archive.name
        with pytest.raises(DataFormatError, match="refusing to extract") as err:
            extract(archive, work / "target")
        assert str(archive) in str(err.value), archive
        assert leftovers(work) == [], archive  # neither the target nor a temporary folder
    assert not outside.exists()
    assert [p.name for p in tmp_path.rglob("*evil*")] == []


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip"])
def test_extract_valid_archive(tmp_path, suffix):
    entries = [("top.txt", b"top"), ("sub/inner.bin", b"\x00\x01"), ("sub/deeper/x.txt", b"x")]
    archive = tmp_path / f"a{suffix}"
    if suffix == ".zip":
        _zip(archive, entries)
    else:
        mode = {".tar.gz": "w:gz", ".tgz": "w:gz", ".tar.bz2": "w:bz2", ".tar.xz": "w:xz"}.get(suffix, "w")
        _tar(archive, [*entries, _link("sub/alias.txt", "deeper/x.txt")], mode)
    target = tmp_path / "out"
    got = extract(archive, target)
    expected = {name: data for name, data in entries}
    if suffix != ".zip":
        expected["sub/alias.txt"] = b"x"
        assert (target / "sub" / "alias.txt").is_symlink()
    assert sorted(got) == sorted(target / n for n in expected)
    assert {n: (target / n).read_bytes() for n in expected} == expected
    assert leftovers(tmp_path) == sorted([archive.name, "out"])


def test_extract_merges_into_an_existing_folder(tmp_path):
    target = tmp_path / "data"
    (target / "sub").mkdir(parents=True)
    (target / "sub" / "keep.txt").write_bytes(b"keep")
    archive = _tar(target / "a.tar.gz", [("sub/new.txt", b"new"), ("top.txt", b"top")], "w:gz")
    assert extract(archive, target) == [target / "sub" / "new.txt", target / "top.txt"]
    assert (target / "sub" / "keep.txt").read_bytes() == b"keep"
    assert (target / "sub" / "new.txt").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_extract_failing_midway_leaves_nothing(tmp_path):
    archive = _zip(tmp_path / "crc.zip", [("first.txt", b"first"), ("second.txt", b"second member")])
    raw = archive.read_bytes()
    archive.write_bytes(raw.replace(b"second member", b"SECOND member"))  # CRC check fails on member 2
    with pytest.raises(DataFormatError, match=r"crc\.zip"):
        extract(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crc.zip"]  # member 1 was not left behind


def test_extract_rejects_damaged_or_unknown_archives(tmp_path):
    archive = _tar(tmp_path / "t.tar.gz", [("a.txt", PAYLOAD)], "w:gz")
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(DataFormatError, match="download it again"):
        extract(archive, tmp_path / "out")
    (tmp_path / "z.zip").write_bytes(b"not a zip")
    with pytest.raises(DataFormatError, match=r"z\.zip"):
        extract(tmp_path / "z.zip", tmp_path / "out")
    (tmp_path / "r.rar").write_bytes(b"rar")
    with pytest.raises(DataFormatError, match="unsupported archive type"):
        extract(tmp_path / "r.rar", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.rar", "t.tar.gz", "z.zip"]
