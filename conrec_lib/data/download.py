"""Download helpers for online users: the official archives of MovieLens and KuaiRand, verified and unpacked.

Nothing in the tutorial calls these (it runs on the simulator and the copies bundled in data/); they are tested up
to the network boundary with a local server. `download(name)` returns the folder to pass to `loaders.load`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from conrec_lib import runs
from conrec_lib.data.loaders import ChecksumError


@dataclasses.dataclass(frozen=True)
class Source:
    """An official archive: where it is, the folder it unpacks to, and how it is verified."""

    url: str
    folder: str  # folder holding the data files after extraction, relative to `dest`
    md5: Optional[str]  # published checksum, or None when none is published
    size: Optional[int]  # bytes; checked when no checksum is published
    note: str = ""


SOURCES = {
    # GroupLens publishes <archive>.md5 files; the ml-100k / ml-1m values are those quoted by several public
    # loaders (e.g. eli-osherovich/papers_with_code). ml-latest-small: no checksum found, so its size is checked
    # (978,202 bytes, the 2018-09-26 release; see data/movielens-ml-latest-small/SOURCE.md).
    "ml-latest-small": Source("https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
                              "ml-latest-small", md5=None, size=978_202, note="1 MB"),
    "ml-100k": Source("https://files.grouplens.org/datasets/movielens/ml-100k.zip", "ml-100k",
                      md5="0e33842e24a9c977be4e0107933c0723", size=None, note="5 MB"),
    "ml-1m": Source("https://files.grouplens.org/datasets/movielens/ml-1m.zip", "ml-1m",
                    md5="c4d9eecfca2ab87c1945afe126590906", size=None, note="6 MB"),
    # Zenodo record 10439422; md5 values from the official README (github.com/chongminggao/KuaiRand).
    "kuairand-pure": Source("https://zenodo.org/records/10439422/files/KuaiRand-Pure.tar.gz", "KuaiRand-Pure/data",
                            md5="0820331067a3784d9691136f772b35a7", size=None, note="45 MB, 194 MB unpacked"),
    "kuairand-1k": Source("https://zenodo.org/records/10439422/files/KuaiRand-1K.tar.gz", "KuaiRand-1K/data",
                          md5="6b0b9c8222d67fcd4c676218edca3f1f", size=None, note="1 GB, 4.3 GB unpacked"),
    "kuairand-27k": Source("https://zenodo.org/records/10439422/files/KuaiRand-27K.tar.gz", "KuaiRand-27K/data",
                           md5="3e3c799a24e2d23a4d2c757fbf9adf59", size=None, note="9.2 GB, 46 GB unpacked"),
}
DOWNLOAD_ALIASES = {"movielens": "ml-latest-small", "kuairand": "kuairand-pure"}
MARKER = ".conrec_download.json"  # written inside the unpacked folder: it is complete and verified
TIMEOUT_S = 30


def download(name: str, dest: str | Path = "data/raw", url: Optional[str] = None, progress: bool = True) -> Path:
    """Download, verify and unpack an official archive into `dest`; return the folder to pass to `load`.

    `name` is a key of SOURCES ("ml-latest-small", "ml-100k", "ml-1m", "kuairand-pure", "kuairand-1k",
    "kuairand-27k") or an alias ("movielens", "kuairand"). `url` replaces the official URL (a mirror; the
    file must still match the published checksum). The archive goes to a temporary file, is checked (md5
    where published, else its size; the sha256 is recorded either way), unpacked into a temporary folder
    and moved into place in one step, then deleted. A second call finds the verified folder and returns it
    without downloading. Offline, it raises ConnectionError saying how to proceed by hand.
    `dest` is relative to the current folder: the repository root under `make`, so pass "../data/raw" from
    a notebook in notebooks/.
    """
    key = DOWNLOAD_ALIASES.get(name, name)
    if key not in SOURCES:
        raise ValueError(f"unknown download {name!r}; use one of {sorted(SOURCES)} or {sorted(DOWNLOAD_ALIASES)}")
    src, dest = SOURCES[key], Path(dest)
    top = dest / src.folder.split("/")[0]
    if (top / MARKER).is_file():
        _check_marker(top / MARKER, src)
        return dest / src.folder
    if top.exists():
        raise FileExistsError(f"{top} exists but was not written by download(); delete it to download again, "
                              f"or load it directly with loaders.load(..., path={str(dest / src.folder)!r})")
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / Path(src.url).name
    digest = _fetch(url or src.url, archive, src, progress)
    try:
        _unpack(archive, top, {"name": key, "url": url or src.url, **digest})
    finally:
        archive.unlink(missing_ok=True)
    return dest / src.folder


def _check_marker(marker: Path, src: Source) -> None:
    """Raise if an earlier download recorded another checksum/size than `src` now expects."""
    seen = runs.read_json(marker)
    if (src.md5 and seen.get("md5") != src.md5) or (not src.md5 and src.size and seen.get("size") != src.size):
        raise ChecksumError(f"{marker.parent} was downloaded from a file that does not match {src.url} "
                            f"(recorded {seen}); delete the folder and download again")


def _fetch(url: str, target: Path, src: Source, progress: bool) -> dict:
    """Stream `url` into `target` atomically, verifying md5/size before the file is moved into place."""
    offline = (f"you appear to be offline: download {url} by hand, unpack it, and pass DATA_PATH=<the unpacked "
               f"folder holding the data files> (for this archive: .../{src.folder})")
    try:
        response = urllib.request.urlopen(url, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        raise ConnectionError(f"{url} answered HTTP {err.code} ({err.reason}); check the URL, or {offline}") from err
    except (urllib.error.URLError, OSError) as err:
        raise ConnectionError(f"could not reach {url} ({getattr(err, 'reason', err)}); {offline}") from err
    md5, sha256, size = hashlib.md5(), hashlib.sha256(), 0
    total = int(response.headers.get("Content-Length") or 0) or None
    with response, runs.atomic_path(target) as tmp:
        with open(tmp, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=target.name,
                                          disable=not progress) as bar:
            try:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    md5.update(chunk)
                    sha256.update(chunk)
                    bar.update(len(chunk))
                    size += len(chunk)
            except OSError as err:
                raise ConnectionError(f"the download of {url} broke off after {size} bytes ({err}); "
                                      "run download() again") from err
        _verify(url, md5.hexdigest(), size, src)
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest(), "size": size}


def _verify(url: str, md5: str, size: int, src: Source) -> None:
    if src.md5 and md5 != src.md5:
        raise ChecksumError(f"{url}: md5 {md5} but the published md5 is {src.md5}; the download is corrupt or "
                            "the file changed upstream. Nothing was kept; try again or download it by hand")
    if not src.md5 and src.size and size != src.size:
        raise ChecksumError(f"{url}: {size} bytes but {src.size} expected (no checksum is published, so the size "
                            "is checked); the download is corrupt or the file changed upstream. Nothing was kept")


def _unpack(archive: Path, top: Path, record: dict) -> None:
    """Extract `archive` into a temporary folder beside `top`, write the marker, then move it into place."""
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=top.parent))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)  # zipfile strips absolute paths and '..'
        else:
            try:
                with tarfile.open(archive) as tf:
                    tf.extractall(tmp, filter="data")  # refuses links and paths outside tmp
            except tarfile.TarError as err:
                raise ValueError(f"{archive}: neither a zip nor a tar archive ({err}); download it again") from err
        if not (tmp / top.name).is_dir():
            raise ValueError(f"{archive}: the archive has no top folder {top.name!r} (it has "
                             f"{sorted(p.name for p in tmp.iterdir())}); it is not the expected dataset")
        (tmp / top.name / MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp / top.name, top)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
