"""Getting real data: download the public pix2pix Cityscapes archive, or prepare the official release.

    python jobs/get_data.py download cityscapes            # the pix2pix authors' archive (~100 MB)
    python jobs/get_data.py prepare --gtfine gtFine_trainvaltest.zip --leftimg leftImg8bit_trainvaltest.zip
    python jobs/train.py --data cityscapes ...              # either copy, by name

Everything lands under the data root: `--root`, else `$PIX2PIX_DATA`, else
`~/.cache/pix2pix-suite/datasets` (point it at storage every node sees on a
cluster). Each dataset folder holds a `manifest.json`: where it came from,
the archive's SHA-256, split counts, and a content fingerprint (hash of every
file's relative path and size) that every run records, so two runs on
different copies are never compared silently.

Download: streamed to `<name>.tar.gz.part` with a progress bar; an
interrupted download resumes with an HTTP range request; `--sha256` pins the
archive (a mismatch is refused and the file kept aside as `*.bad-<time>`).
Extraction checks every member first (no absolute paths, no `..`, no links
or devices) and unpacks into a temporary folder that is renamed into place
only after the split counts and image sizes are verified.

Prepare: the official `gtFine_trainvaltest.zip` and
`leftImg8bit_trainvaltest.zip` (or their extracted folders) -> the pix2pix
layout at 256x256 (`train/`, `val/`: PNG, photo left, colour label right;
exact colours, unlike the archive's JPEGs) plus `labelIds/<split>/<id>.png`
with the exact label ids, written by worker processes; rerunning skips what
is done.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from gan.errors import UserError

DATA_ENV = "PIX2PIX_DATA"
MANIFEST = "manifest.json"

# The pix2pix authors' archives (phillipi/pix2pix datasets/download_dataset.sh), with what to expect.
ARCHIVES = {
    "cityscapes": {"url": "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/cityscapes.tar.gz",
                   "splits": {"train": 2975, "val": 500}, "image_size": (256, 512)},  # (height, width)
}


def data_root(root: str | os.PathLike | None = None) -> Path:
    if root:
        return Path(root).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return Path("~/.cache/pix2pix-suite/datasets").expanduser()


def resolve_name(name: str) -> Path | None:
    """The folder a dataset name (`cityscapes`) stands for, or None when `name` is no known name."""
    if name not in ARCHIVES:
        return None
    folder = data_root() / name
    if not (folder / MANIFEST).exists():
        raise UserError(f"--data {name}: not under {data_root()} yet; get it with: python jobs/get_data.py "
                        f"download {name}  (or from the official release: python jobs/get_data.py prepare "
                        "--gtfine gtFine_trainvaltest.zip --leftimg leftImg8bit_trainvaltest.zip)")
    return folder


def dataset_folder(source: str) -> Path:
    """The folder `--data SOURCE` names (a path, or a dataset name), refused in one line when there is none:
    cheap, so a command checks it before TensorFlow starts."""
    root = Path(source).expanduser()
    if root.is_dir():
        return root
    named = resolve_name(source)  # `--data cityscapes`: the downloaded or prepared copy
    if named is None:
        raise UserError(f"--data {root}: no such folder (names: synthetic, {', '.join(ARCHIVES)})")
    return named


def fingerprint(folder: str | os.PathLike) -> str:
    """SHA-256 of every file's relative path and size under `folder` (the manifest itself excluded):
    cheap (no file is read) and different for any added, removed or resized file."""
    folder = Path(folder)
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        h.update(f"{path.relative_to(folder).as_posix()}\0{path.stat().st_size}\n".encode())
    return h.hexdigest()


def data_fingerprint(folder: str | os.PathLike) -> str:
    """The manifest's fingerprint when there is one (as downloaded or prepared), else computed."""
    manifest = Path(folder) / MANIFEST
    if manifest.exists():
        try:
            return json.loads(manifest.read_text())["fingerprint"]
        except (json.JSONDecodeError, KeyError) as e:
            raise UserError(f"{manifest}: damaged ({e}); delete it and fetch or prepare the data again") from None
    return fingerprint(folder)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _progress(total: int | None, initial: int, desc: str):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc=desc, dynamic_ncols=True,
                mininterval=1.0)


def _fetch(url: str, part: Path, timeout: float) -> None:
    """Append the rest of `url` to `part` (HTTP range request when part of it is there)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the range starts at the end: nothing is missing
            return
        raise UserError(f"download {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"download {url}: {getattr(e, 'reason', e)}") from None
    with response:
        if have and response.status != 206:  # the server ignored the range: start again
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else None
        with open(part, "ab" if have else "wb") as f, _progress(total, have, part.name) as bar:
            while True:
                try:
                    block = response.read(1 << 16)
                except (OSError, http.client.HTTPException) as e:  # reset, or IncompleteRead
                    raise UserError(f"download {url}: connection lost after {f.tell()} bytes ({e}); "
                                    "rerun the same command to resume") from None
                if not block:
                    break
                f.write(block)
                bar.update(len(block))
        got = part.stat().st_size
        if total is not None and got < total:
            raise UserError(f"download {url}: connection closed after {got} of {total} bytes; "
                            "rerun the same command to resume")


def _safe_members(archive: tarfile.TarFile, source: Path) -> list[tarfile.TarInfo]:
    """Every member, refusing the whole archive if one could land outside the target folder."""
    members = archive.getmembers()
    for m in members:
        parts = Path(m.name).parts
        if m.name.startswith(("/", "\\")) or ".." in parts or not (m.isfile() or m.isdir()):
            raise UserError(f"{source}: refused: member {m.name!r} would escape the target folder "
                            "or is a link/device; nothing was extracted")
    return members


def verify(folder: Path, expected: dict) -> dict[str, int]:
    """Split counts and image sizes as the archive's authors publish them."""
    import cv2
    counts = {}
    for split, n in expected["splits"].items():
        files = sorted((folder / split).glob("*.jpg")) if (folder / split).is_dir() else []
        if len(files) != n:
            raise UserError(f"{folder / split}: {len(files)} images, expected {n}; the archive is incomplete")
        for f in files[:: max(1, len(files) // 20)]:  # a sample: decoding 3,475 files adds nothing
            image = cv2.imread(str(f))
            if image is None or image.shape[:2] != tuple(expected["image_size"]):
                raise UserError(f"{f}: {'unreadable' if image is None else image.shape[:2]}, "
                                f"expected {expected['image_size']} images")
        counts[split] = len(files)
    return counts


def _check_target(target: Path) -> None:
    """A dataset folder is only ever made whole, with its manifest: anything else there is not ours."""
    if target.exists() and not (target / MANIFEST).exists():
        raise UserError(f"{target}: exists but holds no {MANIFEST} (not a dataset this tool finished); move it "
                        "aside or delete it, or choose another --root or --name")


def _writable(folder: Path) -> None:
    """Create `folder` if needed and prove it takes a file (UserError otherwise)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UserError(f"--root {folder}: cannot write there ({e.strerror}); choose another --root or set "
                        f"{DATA_ENV}") from None


def download(name: str, root: str | None = None, sha256: str | None = None, url: str | None = None,
             timeout: float = 60.0, log=print) -> Path:
    """Download, check and extract a pix2pix archive into `<root>/<name>`; returns that folder."""
    if name not in ARCHIVES:
        raise UserError(f"download {name}: unknown dataset (known: {', '.join(ARCHIVES)})")
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise UserError(f"--sha256 {sha256!r}: not a SHA-256 digest (64 hexadecimal digits)")
    spec = {**ARCHIVES[name], **({"url": url} if url else {})}
    root_dir = data_root(root)
    target = root_dir / name
    if (target / MANIFEST).exists():
        manifest = json.loads((target / MANIFEST).read_text())
        log(f"{name}: already at {target} (archive sha256 {manifest.get('archive_sha256', '?')[:12]}, "
            f"{manifest.get('counts')}); nothing to do")
        return target
    _check_target(target)
    _writable(root_dir)
    part = root_dir / f"{name}.tar.gz.part"
    _fetch(spec["url"], part, timeout)
    digest = _sha256(part)
    if sha256 and digest != sha256.lower():
        aside = part.with_name(f"{name}.tar.gz.bad-{time.strftime('%Y%m%d-%H%M%S')}")
        part.rename(aside)
        raise UserError(f"download {spec['url']}: sha256 {digest} is not the pinned {sha256}; "
                        f"file kept aside as {aside}, nothing extracted")
    staging = root_dir / f".{name}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with tarfile.open(part) as archive:
            members = _safe_members(archive, part)
            log(f"extracting {len(members)} members of {part.name}")
            archive.extractall(staging, members=members, filter="data")
        # The pix2pix archives hold one top folder (cityscapes/train, cityscapes/val).
        inner = staging / name if (staging / name).is_dir() else staging
        counts = verify(inner, spec)
        manifest = {"name": name, "source": "pix2pix archive", "url": spec["url"], "archive_sha256": digest,
                    "counts": counts, "fingerprint": fingerprint(inner),
                    "downloaded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (inner / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        inner.rename(target)
    except tarfile.ReadError:
        raise UserError(f"{part}: not a tar archive (is {spec['url']} the archive itself?); delete it and "
                        "rerun") from None
    except (tarfile.TarError, EOFError) as e:
        raise UserError(f"{part}: a damaged archive ({str(e).splitlines()[0]}); delete it and rerun") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    part.unlink()
    log(f"{name}: {counts} at {target} (sha256 {digest})")
    return target


# -- the official release -----------------------------------------------------

def _official_pairs(gtfine: Path, leftimg: Path, work: Path) -> dict[str, list[tuple[str, Path, Path, Path]]]:
    """{split: [(id, photo, colour label, labelIds)]} from the zips (extracted into `work`) or folders."""
    roots = []
    for given, inner in ((gtfine, "gtFine"), (leftimg, "leftImg8bit")):
        if given.is_dir():
            roots.append(given if given.name == inner else given / inner)
            continue
        if not given.is_file():
            raise UserError(f"{given}: no such file or folder")
        try:
            with zipfile.ZipFile(given) as z:
                bad = z.testzip()
                if bad:
                    raise UserError(f"{given}: damaged member {bad}; download it again")
                done = work / f".{given.name}.done"
                if not done.exists():
                    for m in z.namelist():
                        if m.startswith("/") or ".." in Path(m).parts:
                            raise UserError(f"{given}: refused: member {m!r} would escape the target folder")
                    z.extractall(work)
                    done.write_text("")
        except zipfile.BadZipFile as e:
            raise UserError(f"{given}: not a zip file ({e}); is the download complete?") from None
        roots.append(work / inner)
    gt, left = roots
    if not gt.is_dir() or not left.is_dir():
        raise UserError(f"{gtfine} / {leftimg}: expected gtFine/ and leftImg8bit/ inside "
                        "(the official gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip)")
    pairs: dict[str, list] = {}
    for split in ("train", "val"):
        rows = []
        for photo in sorted((left / split).glob("*/*_leftImg8bit.png")):
            stem = photo.name[: -len("_leftImg8bit.png")]
            colour = gt / split / photo.parent.name / f"{stem}_gtFine_color.png"
            ids = gt / split / photo.parent.name / f"{stem}_gtFine_labelIds.png"
            if not colour.exists() or not ids.exists():
                raise UserError(f"{photo}: no {colour.name} / {ids.name} beside it in {gt / split}; "
                                "is the gtFine release complete?")
            rows.append((stem, photo, colour, ids))
        if not rows:
            raise UserError(f"{left / split}: no *_leftImg8bit.png images; a partial or wrong zip?")
        pairs[split] = rows
    return pairs


def _worker_start(parent: int) -> None:
    """Workers leave Ctrl-C and TERM to the parent (which stops the pool) and end with it if it is killed."""
    import signal

    from gan.workers import end_with_parent
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    end_with_parent(parent)


def _prepare_one(job: tuple[str, str, str, str, str, int]) -> str:
    import cv2
    import numpy as np
    stem, photo, colour, ids, out_dir, size = job
    out = Path(out_dir)
    pair_path, ids_path = out / "pair" / f"{stem}.png", out / "ids" / f"{stem}.png"
    if pair_path.exists() and ids_path.exists():
        return "skipped"
    images = [cv2.imread(p, cv2.IMREAD_UNCHANGED if p == ids else cv2.IMREAD_COLOR) for p in (photo, colour, ids)]
    for p, image in zip((photo, colour, ids), images):
        if image is None:
            raise UserError(f"{p}: not a readable image")
    photo_px = cv2.resize(images[0], (size, size), interpolation=cv2.INTER_AREA)
    colour_px = cv2.resize(images[1], (size, size), interpolation=cv2.INTER_NEAREST)
    ids_px = cv2.resize(images[2], (size, size), interpolation=cv2.INTER_NEAREST)
    for path, image in ((ids_path, ids_px), (pair_path, np.concatenate([photo_px, colour_px], axis=1))):
        tmp = path.with_name(f".{path.name}.tmp.png")
        if not cv2.imwrite(str(tmp), image):
            raise UserError(f"{path}: cannot write")
        tmp.replace(path)
    return "written"


def prepare(gtfine: str, leftimg: str, root: str | None = None, name: str = "cityscapes", size: int = 256,
            workers: int = 0, log=print) -> Path:
    """The official release -> `<root>/<name>` in the pix2pix layout (PNG), with exact labelIds."""
    target = data_root(root) / name
    if (target / MANIFEST).exists():
        log(f"{name}: already at {target}; nothing to do (another --name keeps both)")
        return target
    for given in (gtfine, leftimg):  # before anything is created under the root
        if not Path(given).exists():
            raise UserError(f"{given}: no such file or folder")
    _check_target(target)
    _writable(data_root(root))
    work = data_root(root) / f".{name}.preparing"
    work.mkdir(parents=True, exist_ok=True)
    pairs = _official_pairs(Path(gtfine), Path(leftimg), work / "official")
    jobs = []
    for split, rows in pairs.items():
        for sub in ("pair", "ids"):
            (work / split / sub).mkdir(parents=True, exist_ok=True)
        jobs += [(stem, str(p), str(c), str(i), str(work / split), size) for stem, p, c, i in rows]
    from tqdm import tqdm
    with ProcessPoolExecutor(workers or os.cpu_count() or 1, initializer=_worker_start,
                             initargs=(os.getpid(),)) as pool:
        try:
            for _ in tqdm(pool.map(_prepare_one, jobs, chunksize=8), total=len(jobs), desc=f"preparing {name}",
                          unit="img", mininterval=1.0):
                pass
        except KeyboardInterrupt:  # Ctrl-C or TERM (jobs/get_data.py): drop the queue, keep what is done
            pool.shutdown(wait=True, cancel_futures=True)
            raise KeyboardInterrupt(f"the images prepared so far are kept in {work}; rerun the same command "
                                    "to go on") from None
    staging = work / "out"
    shutil.rmtree(staging, ignore_errors=True)
    for split in pairs:
        shutil.copytree(work / split / "pair", staging / split)
        shutil.copytree(work / split / "ids", staging / "labelIds" / split)
    counts = {split: len(rows) for split, rows in pairs.items()}
    manifest = {"name": name, "source": "official release", "inputs": [str(gtfine), str(leftimg)],
                "size": size, "counts": counts, "fingerprint": fingerprint(staging),
                "prepared": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    staging.rename(target)
    shutil.rmtree(work, ignore_errors=True)
    log(f"{name}: {counts} at {target}")
    return target
