"""Download and unpack the public datasets, safely and resumably, with the standard library only.

Why it is built this way:

* a half-written file never carries its final name: bytes go to ``<name>.part`` and are renamed with
  ``os.replace`` only after the checksum matched, so a crash can't leave a "present" but broken file;
* an interrupted transfer resumes from the ``.part`` with an HTTP ``Range`` request instead of starting over;
* being offline fails fast, with a message saying which files to copy into which folder by hand
  (``ANOMALENS_OFFLINE=1`` forbids the network altogether);
* archives are checked member by member before anything is written (no ``..``, absolute paths or links
  leaving the target) and unpacked into a temporary sibling folder first;
* a hostile or broken server cannot hold a download forever or fill the disk: every file has an overall
  deadline (default ``max(10 min, size / 50 kB/s)``), must keep at least ``MIN_RATE`` bytes/s over any
  ``RATE_WINDOW`` seconds, and may not exceed its published size plus 1 % + 64 KiB (``MAX_DOWNLOAD_BYTES``
  when no size is published). Breaking one of these, or a full disk, is a ``DownloadError`` and the
  ``.part`` file is deleted;
* leftovers of killed runs are swept when a download starts (``remove_stale``): ``*.tmp`` files and
  ``.*.tmp-*`` folders always, ``.part`` files older than ``STALE_PART_DAYS`` days or larger than the
  published size of their file.

Checksums: sha256 is checked when published; where only md5 is published, md5 is checked; files with no
published hash at all (``sha256=None, md5=None``) are only checked to be non-empty.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import http.client
import lzma
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from anomalens.errors import ChecksumError, ConfigError, DataFormatError, DownloadError

__all__ = ["OFFICIAL_FILES", "RemoteFile", "download", "download_all", "extract", "remove_stale", "sha256_of"]

_USER_AGENT = "anomalens-downloader/0.1 (+python urllib)"
_RETRY_DELAY = 0.5  # seconds, multiplied by the attempt number; small because resuming is cheap
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
ARCHIVE_SUFFIXES = (".zip", *_TAR_SUFFIXES)  # what ``extract`` unpacks
_DAMAGED = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)
_TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # extra guard where available
MAX_DOWNLOAD_BYTES = 4 << 30  # size cap when no size is published (the largest official file is ~0.6 GB)
MIN_RATE = 10_000  # bytes/s a transfer must keep up over every RATE_WINDOW seconds
RATE_WINDOW = 60.0
DEADLINE_RATE = 50_000  # bytes/s the default deadline allows for: max(10 min, size / DEADLINE_RATE)
STALE_PART_DAYS = 7
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: where from, what to call it, and the hash that proves it arrived intact.

    ``sha256`` None means the publisher gives no sha256; then ``md5`` is checked if set, else only that
    the file is non-empty. ``filename`` defaults to the last path component of ``url``. ``size`` (bytes),
    when published, caps the download and sets its default deadline.
    """

    url: str
    sha256: str | None
    filename: str | None = None
    md5: str | None = None
    size: int | None = None

    def __post_init__(self) -> None:
        name = self.filename or urllib.parse.unquote(urllib.parse.urlsplit(self.url).path.rsplit("/", 1)[-1])
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ConfigError(f"{self.url}: cannot derive a plain file name from this URL; pass filename=...")
        object.__setattr__(self, "filename", name)


def _mirror(base: str, names: Sequence[str], sha256: Sequence[str | None] = (), md5: Sequence[str] = (),
            sizes: Sequence[int] = ()):
    sha256, md5 = list(sha256) or [None] * len(names), list(md5) or [None] * len(names)
    sizes = list(sizes) or [None] * len(names)
    return tuple(RemoteFile(base + n, s, md5=m, size=z) for n, s, m, z in zip(names, sha256, md5, sizes, strict=True))


_IDX = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz")
_GTSRB = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"

#: Official sources. MNIST comes from the PyTorch mirror (yann.lecun.com no longer serves it reliably).
#: Fashion-MNIST, CIFAR, GTSRB, CUB and DTD publish md5 only, so md5 is checked. The KMNIST train files and EMNIST
#: have no hash we could confirm: they are only checked to be non-empty.
OFFICIAL_FILES: dict[str, tuple[RemoteFile, ...]] = {
    "mnist": _mirror("https://ossci-datasets.s3.amazonaws.com/mnist/", _IDX, sha256=(
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ), sizes=(9_912_422, 28_881, 1_648_877, 4_542)),  # sizes as in shared/data/MANIFEST.md
    "fashion_mnist": _mirror("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", _IDX, md5=(
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
        "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310",
    )),
    "kmnist": _mirror(
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        tuple(f"kmnist-{split}-{kind}.npz" for split in ("test", "train") for kind in ("imgs", "labels")),
        sha256=("692d824896bec8f3c357ebf7a0fe904ed67ac632ce953d0b58f7fbef7bb27d87",
                "660f13a4705431ea2a6391c41ecbe384cd0d932c595a101ec4f3b8989e785046", None, None),
    ),
    "cifar10": (RemoteFile("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", None,
                           md5="c58f30108f718f92721af3b95e74349a"),),
    "cifar100": (RemoteFile("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", None,
                            md5="eb9058c3a382ffc7106e4002c42a8d85"),),
    "gtsrb": _mirror(_GTSRB, ("GTSRB_Final_Training_Images.zip", "GTSRB_Final_Test_Images.zip",
                              "GTSRB_Final_Test_GT.zip"), md5=(
        "f33fd80ac59bff73c82d25ab499e03a3", "c7e4e6327067d32654124b0fe9e82185",
        "fe31e9c9270bbcd7b84b7f21a9d9d9e5",
    )),
    "emnist": (RemoteFile("https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip", None),),
    # CUB-200-2011 (Caltech DATA record 65de6-vp158) and DTD (Oxford VGG) publish md5 only; the values are the
    # ones torchvision checks for DTD and CUB loaders such as pytorch-metric-learning's check for CUB.
    "cub": (RemoteFile("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz", None,
                       md5="97eceeb196236b17998738112f37df78"),),
    "dtd": (RemoteFile("https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz", None,
                       md5="fff73e5086ae6bdbea199a49dfb8a4c1"),),
}


# ---------------------------------------------------------------------------------------------- hashing


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks so multi-GB archives don't fill memory."""
    return _digest(Path(path), "sha256")


def _problem(remote: RemoteFile, path: Path) -> str | None:
    """Why ``path`` is not the published file, or None when it checks out."""
    for algorithm, expected in (("sha256", remote.sha256), ("md5", remote.md5)):
        if expected:
            actual = _digest(path, algorithm)
            return None if actual == expected.lower() else f"{algorithm} {actual}, expected {expected}"
    return None if path.stat().st_size > 0 else "0 bytes (the file is empty)"


# --------------------------------------------------------------------------------------------- download


class _Unreachable(Exception):
    """The host could not be reached at all: not worth retrying, reported as 'copy the file by hand'."""


class _Interrupted(ConnectionError):
    """The transfer stopped early (fewer bytes than Content-Length, or an unusable range answer)."""


class _Progress:
    """One self-overwriting stderr line, redrawn at most every 0.5 s, and only on a terminal."""

    def __init__(self, name: str, done: int, total: int | None, enabled: bool):
        self.name, self.first, self.total = name, done, total
        self.enabled = enabled and sys.stderr.isatty()
        self.start = self.last = time.monotonic()

    def update(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < 0.5):
            return
        self.last = now
        rate = (done - self.first) / max(now - self.start, 1e-6) / 1e6
        total = f" / {self.total / 1e6:.1f}" if self.total else ""
        sys.stderr.write(f"\r{self.name}: {done / 1e6:.1f}{total} MB  {rate:.1f} MB/s")
        sys.stderr.write("\n" if final else "")
        sys.stderr.flush()


def _offline_env() -> bool:
    return os.environ.get("ANOMALENS_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


class _Fatal(Exception):
    """A limit was broken (deadline, throughput, size, disk): not retried, the .part is deleted."""

    def __init__(self, problem: str, fix: str):
        super().__init__(problem)
        self.problem, self.fix = problem, fix


def _default_deadline(size: int | None) -> float:
    return max(600.0, (size or 0) / DEADLINE_RATE)


class _Budget:
    """The limits of one file's download, over all its attempts: deadline, throughput, size."""

    def __init__(self, remote: RemoteFile, deadline: float | None, max_bytes: int):
        self.fixed = deadline is not None
        self.seconds = deadline if deadline is not None else _default_deadline(remote.size)
        self.limit = remote.size + remote.size // 100 + (1 << 16) if remote.size else max_bytes
        self.start = time.monotonic()
        self.mark = (self.start, 0)

    def left(self) -> float:
        return self.start + self.seconds - time.monotonic()

    def begin(self, done: int, total: int | None) -> None:
        """A new attempt: restart the throughput window; a Content-Length beyond the cap is refused."""
        self.mark = (time.monotonic(), done)
        if total is not None and total > self.limit:
            raise _Fatal(f"the server announces {total} bytes, more than the cap of {self.limit}",
                         "check the URL; pass max_bytes= if the file really is that large")
        if total is not None and not self.fixed:
            self.seconds = max(self.seconds, _default_deadline(total))

    def check(self, done: int) -> None:
        if done > self.limit:
            raise _Fatal(f"the server sent more than the cap of {self.limit} bytes",
                         "the server is not sending the expected file: try another source; pass "
                         "max_bytes= if the file really is that large")
        now = time.monotonic()
        if now - self.start > self.seconds:
            raise _Fatal(f"not finished within the deadline of {self.seconds:g} s ({done} bytes received)",
                         "run again on a faster connection or pass a longer deadline=")
        if now - self.mark[0] >= RATE_WINDOW:
            if done - self.mark[1] < MIN_RATE * RATE_WINDOW:
                raise _Fatal(f"fewer than {MIN_RATE} bytes/s arrived over the last {RATE_WINDOW:.0f} s",
                             "run again later or on a faster connection")
            self.mark = (now, done)


def _fetch(url: str, part: Path, timeout: float, chunk_size: int, progress: bool, budget: _Budget) -> None:
    """One HTTP attempt: append to ``part`` from where it stops (or restart if the server ignores Range)."""
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT, **({"Range": f"bytes={start}-"} if start else {})}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=max(min(timeout, budget.left()), 0.01))
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # nothing left to send: the part is complete; the caller verifies it
            exc.close()
            return
        raise
    with response:
        resumed = response.status == 206
        if resumed:
            content_range = response.headers.get("Content-Range", "")
            if not re.fullmatch(rf"bytes {start}-\d+/(\d+|\*)", content_range.strip()):
                part.unlink()  # a slice we did not ask for: start from zero on the next attempt
                raise _Interrupted(f"asked for bytes {start}- but got Content-Range {content_range!r}")
        done = start if resumed else 0
        length = response.headers.get("Content-Length", "")
        total = done + int(length) if length.isdigit() else None
        budget.begin(done, total)
        bar = _Progress(part.name.removesuffix(".part"), done, total, progress)
        try:
            with open(part, "ab" if resumed else "wb") as out:
                while chunk := response.read1(chunk_size):  # read1: returns what arrived, so a trickle can't stall
                    out.write(chunk)
                    done += len(chunk)
                    bar.update(done)
                    budget.check(done)
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                raise _Fatal(f"the disk is full ({exc.strerror})",
                             "free space there, or point --data-root / ANOMALENS_DATA at a larger disk") from exc
            raise
        finally:
            bar.update(done, final=True)
    if total is not None and done < total:  # http.client returns b"" rather than raising on early close
        raise _Interrupted(f"connection closed after {done} of {total} bytes")


def _fetch_verified(
    remote: RemoteFile, final: Path, *, timeout: float = 30, retries: int = 3, progress: bool = True,
    chunk_size: int = 1 << 20, deadline: float | None = None, max_bytes: int = MAX_DOWNLOAD_BYTES,
) -> Path:
    """Download with resume and bounded retries, verify, then atomically give the file its final name."""
    name, where = remote.filename, os.path.abspath(final.parent)
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(f"{name}.part")
    budget = _Budget(remote, deadline, max_bytes)
    for attempt in range(retries + 1):
        try:
            budget.check(part.stat().st_size if part.exists() else 0)  # the deadline covers retries too
            _fetch(remote.url, part, timeout, chunk_size, progress, budget)
            break
        except _Fatal as exc:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{name}: the download from {remote.url} into {where}{os.sep} was stopped: {exc.problem}; "
                f"the partial file was deleted. Fix: {exc.fix}, or download {name} yourself and copy it "
                f"into {where}{os.sep}"
            ) from exc
        except urllib.error.HTTPError as exc:  # before URLError: it is a subclass
            exc.close()
            if exc.code < 500 or attempt == retries:
                raise DownloadError(
                    f"{name} could not be downloaded from {remote.url}: the server answered HTTP {exc.code} "
                    f"{exc.reason}. Try again later, or download it yourself and copy it into {where}{os.sep}"
                ) from exc
        except urllib.error.URLError as exc:  # refused, DNS failure, connect timeout: don't insist
            raise _Unreachable(str(exc.reason)) from exc
        except (http.client.HTTPException, ConnectionError, TimeoutError) as exc:  # cut mid-transfer
            if attempt == retries:
                kept = part.stat().st_size if part.exists() else 0
                raise DownloadError(
                    f"{name}: the download from {remote.url} was interrupted {retries + 1} times "
                    f"(last: {exc!r}). Run again to resume from the {kept} bytes kept in {part}, "
                    f"or copy {name} into {where}{os.sep} yourself."
                ) from exc
        time.sleep(_RETRY_DELAY * (attempt + 1))
    problem = _problem(remote, part)
    if problem:
        part.unlink()
        raise ChecksumError(
            f"{name} downloaded from {remote.url} has {problem}; the download was deleted. Run again to "
            f"download it afresh; if it keeps failing, the server copy changed: fetch {name} from another "
            f"source, check it, and copy it into {where}{os.sep}"
        )
    os.replace(part, final)
    return final


def _offline_error(missing: Sequence[tuple[RemoteFile, bool]], folder: Path, reason: str) -> DownloadError:
    where = f"{os.path.abspath(folder)}{os.sep}"

    def label(remote: RemoteFile, corrupt: bool) -> str:
        return remote.filename + (" (the copy there fails its checksum: replace it)" if corrupt else "")

    if len(missing) == 1:
        remote, corrupt = missing[0]
        return DownloadError(
            f"{label(remote, corrupt)} could not be downloaded from {remote.url} ({reason}). "
            f"If you are offline, copy {remote.filename} into {where} and run again."
        )
    lines = "".join(f"\n  - {label(r, c)}  from {r.url}" for r, c in missing)
    return DownloadError(
        f"{len(missing)} files could not be downloaded ({reason}):{lines}\n"
        f"If you are offline, copy these files into {where} and run again."
    )


def download(
    remote: RemoteFile, folder: str | Path, *, timeout: float = 30, retries: int = 3, progress: bool = True,
    chunk_size: int = 1 << 20, deadline: float | None = None, max_bytes: int = MAX_DOWNLOAD_BYTES,
) -> Path:
    """Return ``folder/<filename>``, downloading it first unless a verified copy is already there.

    ``timeout`` bounds each network wait; ``deadline`` the whole file, in seconds (default
    ``max(600, size / 50 kB/s)``, the size published or announced); ``max_bytes`` caps files
    without a published size. Raises ``DownloadError`` when offline, the server refuses, a limit
    is broken or the disk is full; ``ChecksumError`` when the bytes are wrong.
    """
    kw = {"timeout": timeout, "retries": retries, "progress": progress, "chunk_size": chunk_size,
          "deadline": deadline, "max_bytes": max_bytes}
    return download_all([remote], folder, **kw)[0]


def download_all(files: Sequence[RemoteFile], folder: str | Path, **kw) -> list[Path]:
    """Download every file (see ``download`` for the keywords).

    Once the network proves unreachable the remaining files are not attempted, and a single
    ``DownloadError`` lists every missing file, so an offline user learns everything to copy at once.
    """
    folder = Path(folder).expanduser()
    remove_stale(folder, files)
    offline = "ANOMALENS_OFFLINE is set, so the network is not used; unset it to download"
    reason = offline if _offline_env() else ""
    paths: list[Path] = []
    missing: list[tuple[RemoteFile, bool]] = []
    cause: BaseException | None = None
    for remote in files:
        final = folder / remote.filename
        present = final.is_file()
        if present and _problem(remote, final) is None:
            paths.append(final)
        elif reason:
            missing.append((remote, present))
        else:
            try:
                paths.append(_fetch_verified(remote, final, **kw))
            except _Unreachable as exc:
                reason, cause = str(exc), exc.__cause__
                missing.append((remote, present))
    if missing:
        raise _offline_error(missing, folder, reason) from cause
    return paths


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale(folder: Path, files: Sequence[RemoteFile] = ()) -> list[Path]:
    """Delete what killed runs left in ``folder``; return what was deleted.

    ``*.tmp`` files and ``.*.tmp-*`` folders (atomic writes, extraction) are deleted always: they are
    never resumed. A ``.part`` is kept for resuming unless older than ``STALE_PART_DAYS`` days or
    larger than the published size of its file. Run one download per folder at a time.
    """
    if not folder.is_dir():
        return []
    sizes = {f"{f.filename}.part": f.size for f in files if f.size}
    old = time.time() - STALE_PART_DAYS * 86400
    removed = []
    for entry in folder.iterdir():
        name = entry.name
        stale = name.endswith(".tmp") or (name.startswith(".") and ".tmp-" in name)
        if name.endswith(".part") and entry.is_file() and not entry.is_symlink():
            stat = entry.stat()
            stale = stat.st_mtime < old or stat.st_size > sizes.get(name, stat.st_size)
        if stale:
            _remove(entry)
            removed.append(entry)
    return removed


# ---------------------------------------------------------------------------------------------- extract


def _walk(start: list[str], path: str, links: set[str]) -> list[str] | None:
    """Resolve ``path`` from ``start`` (components below the target); None if it could leave the target.

    Passing *through* a link of the archive counts as leaving: where a link leads is only known once it is
    written, and ``link/..`` is not the folder holding the link when the link points into a subfolder.
    """
    path = path.replace("\\", "/")
    if path.startswith("/") or re.match(r"[A-Za-z]:", path):
        return None
    parts = list(start)
    for component in path.split("/"):
        if component in ("", "."):
            continue
        if parts and "/".join(parts) in links:
            return None
        if component == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(component)
    return parts


def _check_members(archive: Path, members: list[tuple[str, str, str]]) -> None:
    """Refuse the whole archive if any (name, kind, link target) could write or point outside the target."""
    links = {"/".join(_walk([], n, set()) or []) for n, kind, _ in members if kind in ("symlink", "hardlink")}
    for name, kind, link in members:
        parts = _walk([], name, links)
        problem = None
        if parts is None:
            problem = "its path leads outside the extraction folder"
        elif kind == "symlink" and _walk(parts[:-1], link, links) is None:
            problem = f"it is a symbolic link to {link!r}, outside the extraction folder"
        elif kind == "hardlink" and _walk([], link, links) is None:
            problem = f"it is a hard link to {link!r}, outside the extraction folder"
        elif kind == "special":
            problem = "it is a device or pipe, not data"
        if problem:
            raise DataFormatError(
                archive, f"refusing to extract member {name!r}: {problem}; nothing was extracted",
                "this archive is unsafe or damaged: delete it and download it again from the official source",
            )


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    return "dir" if member.isdir() else "file" if member.isfile() else "special"


def _move_into(src: Path, dst: Path) -> None:
    """Move ``src``'s contents into ``dst``, merging folders that already exist there."""
    if not dst.exists():
        os.replace(src, dst)
        return
    for entry in src.iterdir():
        dest = dst / entry.name
        if entry.is_dir() and not entry.is_symlink() and dest.is_dir() and not dest.is_symlink():
            _move_into(entry, dest)
        else:
            os.replace(entry, dest)


def _files_below(root: Path) -> list[Path]:
    found = []
    for here, dirs, files in os.walk(root):  # does not follow symlinks to folders; list them as files
        names = files + [d for d in dirs if Path(here, d).is_symlink()]
        found += [Path(here, n).relative_to(root) for n in names]
    return sorted(found)


def extract(archive: str | Path, target: str | Path) -> list[Path]:
    """Unpack a .zip/.tar[.gz|.bz2|.xz]/.tgz into ``target``; return the extracted files (not folders).

    Every member is checked before anything is written, and the archive is unpacked into a temporary
    sibling folder that is then moved into ``target``: a refused or failing archive leaves nothing behind.
    """
    archive, target = Path(archive), Path(target)
    lower = archive.name.lower()
    if not lower.endswith(ARCHIVE_SUFFIXES):
        raise DataFormatError(archive, "unsupported archive type",
                              f"extract it by hand, or provide one of .zip, {', '.join(_TAR_SUFFIXES)}")
    try:
        with zipfile.ZipFile(archive) if lower.endswith(".zip") else tarfile.open(archive) as arc:
            if isinstance(arc, zipfile.ZipFile):
                kinds = [(i.filename, "dir" if i.is_dir() else "file", "") for i in arc.infolist()]
                _check_members(archive, kinds)
                unpack = arc.extractall
            else:
                _check_members(archive, [(m.name, _tar_kind(m), m.linkname) for m in arc.getmembers()])
                unpack = lambda folder: arc.extractall(folder, **_TAR_FILTER)  # noqa: E731
            target.parent.mkdir(parents=True, exist_ok=True)
            for stale in target.parent.glob(f".{target.name}.tmp-*"):  # left by a killed extraction
                _remove(stale)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
            try:
                unpack(tmp)
                files = _files_below(tmp)
                _move_into(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except _DAMAGED as exc:
        raise DataFormatError(archive, f"cannot be unpacked ({exc}); nothing was extracted",
                              "the file is damaged or incomplete: delete it and download it again") from exc
    return [target / f for f in files]
