"""Getting real data (gan/datasets/fetch.py, jobs/get_data.py) against an HTTP server this test starts on 127.0.0.1:
complete and resumed downloads, a pinned checksum, a 404, a dropped connection, a hostile archive,
preparing the official layout, names and provenance."""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import ROOT, run_cli
from gan.datasets import fetch
from gan.errors import UserError
from gan.datasets.synthetic import draw_scene

SPEC = {"splits": {"train": 6, "val": 3}, "image_size": (32, 64)}


def jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image[:, :, ::-1])
    assert ok
    return buf.tobytes()


def archive(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def pix2pix_archive(name: str = "tinyscapes") -> bytes:
    members, index = {}, 0
    for split, n in SPEC["splits"].items():
        for _ in range(n):
            photo, label = draw_scene(3, index, 32)
            members[f"{name}/{split}/{index + 1}.jpg"] = jpeg(np.concatenate([photo, label], axis=1))
            index += 1
    return archive(members)


class Server:
    """Serves `files` with HTTP range support; `cut_after` bytes then a dropped connection (once)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_after: int | None = None
        self.close_at_once = False
        self.requests: list[tuple[str, int, int]] = []  # (path, range start, bytes sent)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                if server.close_at_once:
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
                body = data[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if server.cut_after is not None:
                    body, server.cut_after = body[: server.cut_after], None
                    self.close_connection = True
                self.wfile.write(body)
                server.requests.append((self.path, start, len(body)))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    s = Server()
    monkeypatch.setitem(fetch.ARCHIVES, "tinyscapes", {"url": f"{s.url}/tinyscapes.tar.gz", **SPEC})
    yield s
    s.stop()


def test_complete_download_then_found_again(server, tmp_path, monkeypatch):
    server.files["/tinyscapes.tar.gz"] = pix2pix_archive()
    lines = []
    folder = fetch.download("tinyscapes", str(tmp_path), log=lines.append)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 6, "val": 3} and manifest["fingerprint"] == fetch.fingerprint(folder)
    import hashlib
    assert manifest["archive_sha256"] == hashlib.sha256(server.files["/tinyscapes.tar.gz"]).hexdigest()
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*extracting"))
    lines.clear()
    assert fetch.download("tinyscapes", str(tmp_path), log=lines.append) == folder
    assert "already at" in lines[0] and len(server.requests) == 1  # nothing fetched the second time
    # By name: --data tinyscapes is that folder, and the run records its fingerprint.
    monkeypatch.setenv(fetch.DATA_ENV, str(tmp_path))
    from gan.config import make_config
    from gan.train import train
    cfg = make_config("tiny", {"data.source": "tinyscapes", "model.generator": "hybrid", "data.n_train": 4,
                               "data.n_val": 1, "data.n_test": 1})
    assert train(cfg, tmp_path / "runs") == 0
    run = tmp_path / "runs" / "default" / "hybrid"
    assert json.loads((run / "config.json").read_text())["data"]["fingerprint"] == manifest["fingerprint"]
    assert json.loads((run / "summary.json").read_text())["data"]["fingerprint"] == manifest["fingerprint"]


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    data = pix2pix_archive()
    server.files["/tinyscapes.tar.gz"] = data
    server.cut_after = len(data) // 2
    with pytest.raises(UserError, match="rerun the same command to resume"):
        fetch.download("tinyscapes", str(tmp_path), log=lambda line: None)
    part = tmp_path / "tinyscapes.tar.gz.part"
    assert part.stat().st_size == len(data) // 2 and not (tmp_path / "tinyscapes").exists()
    fetch.download("tinyscapes", str(tmp_path), log=lambda line: None)
    (_, first_start, first_bytes), (_, second_start, second_bytes) = server.requests
    assert first_start == 0 and second_start == len(data) // 2
    assert second_bytes == len(data) - len(data) // 2  # only the missing half was fetched again
    assert (tmp_path / "tinyscapes" / "manifest.json").exists()


def test_wrong_pinned_checksum_is_refused_and_kept_aside(server, tmp_path):
    server.files["/tinyscapes.tar.gz"] = pix2pix_archive()
    with pytest.raises(UserError, match="is not the pinned 00ff"):
        fetch.download("tinyscapes", str(tmp_path), sha256="00ff" * 16, log=lambda line: None)
    assert not (tmp_path / "tinyscapes").exists() and not list(tmp_path.glob(".*extracting"))
    assert len(list(tmp_path.glob("tinyscapes.tar.gz.bad-*"))) == 1


def test_404_and_a_dropped_connection_are_one_clear_line(server, tmp_path):
    done = run_cli("get_data.py", "download", "cityscapes", "--url", f"{server.url}/missing.tar.gz",
                   "--root", str(tmp_path))
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and errors == [f"error: download {server.url}/missing.tar.gz: HTTP 404 Not Found"]
    server.files["/tinyscapes.tar.gz"] = pix2pix_archive()
    server.close_at_once = True
    with pytest.raises(UserError, match=f"download {server.url}/tinyscapes.tar.gz: "):
        fetch.download("tinyscapes", str(tmp_path), log=lambda line: None)
    assert not (tmp_path / "tinyscapes").exists()


def test_archive_member_escaping_the_folder_is_refused(server, tmp_path):
    server.files["/tinyscapes.tar.gz"] = archive({"tinyscapes/train/1.jpg": b"x", "../escaped.txt": b"gotcha"})
    root = tmp_path / "root"
    with pytest.raises(UserError, match="refused: member '../escaped.txt' would escape"):
        fetch.download("tinyscapes", str(root), log=lambda line: None)
    assert not (tmp_path / "escaped.txt").exists() and not (root / "escaped.txt").exists()
    assert not (root / "tinyscapes").exists()


def test_unknown_and_missing_names_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv(fetch.DATA_ENV, str(tmp_path))
    done = run_cli("train.py", "--preset", "tiny", "--data", "cityscapes", "--out", str(tmp_path / "runs"))
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1
    assert "python jobs/get_data.py download cityscapes" in errors[0], errors
    done = run_cli("train.py", "--preset", "tiny", "--data", "kitti", "--out", str(tmp_path / "runs"))
    assert "no such folder (names: synthetic, cityscapes)" in done.stderr


def official_release(root: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """A miniature of the official layout (gtFine colour + labelIds, leftImg8bit), as folders."""
    from gan.datasets.labels import TRAIN_CLASSES
    label_ids = {}
    rng = np.random.default_rng(0)
    ids_available = np.array([c[1] for c in TRAIN_CLASSES], np.uint8)
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            stem = f"aachen_{split}_{i:06d}"
            photo, colour = draw_scene(5, i + (10 if split == "val" else 0), 64)
            ids = rng.choice(ids_available, (64, 64)).astype(np.uint8)
            label_ids[stem] = ids
            for path, image in ((root / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png", photo[:, :, ::-1]),
                                (root / "gtFine" / split / "aachen" / f"{stem}_gtFine_color.png", colour[:, :, ::-1]),
                                (root / "gtFine" / split / "aachen" / f"{stem}_gtFine_labelIds.png", ids)):
                path.parent.mkdir(parents=True, exist_ok=True)
                assert cv2.imwrite(str(path), image)
    return root / "gtFine", root / "leftImg8bit", label_ids


def zip_folder(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as z:
        for p in sorted(folder.rglob("*")):
            z.write(p, p.relative_to(folder.parent))
    return out


@pytest.mark.parametrize("as_zip", [False, True])
def test_prepare_the_official_release(tmp_path, as_zip):
    gt, left, label_ids = official_release(tmp_path / "release")
    if as_zip:
        gt, left = (zip_folder(f, tmp_path / f"{f.name}_trainvaltest.zip") for f in (gt, left))
    folder = fetch.prepare(str(gt), str(left), str(tmp_path / "data"), size=32, workers=2, log=lambda line: None)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 3, "val": 2} and manifest["source"] == "official release"
    pair = cv2.imread(str(folder / "train" / "aachen_train_000000.png"))
    assert pair.shape == (32, 64, 3)
    for stem, ids in label_ids.items():  # exact label ids, nearest-resized like the colour labels
        split = stem.split("_")[1]
        got = cv2.imread(str(folder / "labelIds" / split / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(got, cv2.resize(ids, (32, 32), interpolation=cv2.INTER_NEAREST))
    # The loader reads it as a pix2pix folder (photo left, label right).
    from gan.config import make_config
    from gan.datasets.loader import load_dataset
    data = load_dataset(make_config("tiny", {"data.source": str(folder), "data.n_train": 2, "data.n_val": 1,
                                             "data.n_test": 1}))
    assert data.format == "pix2pix" and data.fingerprint == manifest["fingerprint"]
    lines = []
    fetch.prepare(str(gt), str(left), str(tmp_path / "data"), size=32, log=lines.append)
    assert "already at" in lines[0]


def test_a_wrong_or_partial_zip_is_named(tmp_path):
    gt, left, _ = official_release(tmp_path / "release")
    bad = tmp_path / "gtFine_trainvaltest.zip"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match=f"{bad}: not a zip file"):
        fetch.prepare(str(bad), str(left), str(tmp_path / "data"), log=lambda line: None)
    (gt / "train" / "aachen" / "aachen_train_000001_gtFine_color.png").unlink()
    with pytest.raises(UserError, match="aachen_train_000001_leftImg8bit.png: no aachen_train_000001_gtFine_color"):
        fetch.prepare(str(gt), str(left), str(tmp_path / "data"), log=lambda line: None)
    assert not (tmp_path / "data" / "cityscapes").exists()


# -- issue 19: read-only roots, foreign folders, non-archives, interrupted prepare ---------------------

def test_a_read_only_root_is_one_line(server, tmp_path):
    from services import tmpfs
    with tmpfs(tmp_path / "ro", "ro,size=1m", "a read-only filesystem for this test") as root:
        done = run_cli("get_data.py", "download", "cityscapes", "--url", f"{server.url}/tinyscapes.tar.gz",
                       "--root", str(root))
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and errors == [f"error: --root {root}: cannot write there (Read-only file "
                                               f"system); choose another --root or set {fetch.DATA_ENV}"], done.stderr
    assert "Traceback" not in done.stderr


def test_a_foreign_folder_in_the_way_and_a_non_archive_are_named(server, tmp_path):
    server.files["/tinyscapes.tar.gz"] = pix2pix_archive()
    (tmp_path / "tinyscapes").mkdir()
    (tmp_path / "tinyscapes" / "notes.txt").write_text("someone's")
    with pytest.raises(UserError, match=f"{tmp_path / 'tinyscapes'}: exists but holds no manifest.json"):
        fetch.download("tinyscapes", str(tmp_path), log=lambda line: None)
    assert server.requests == []  # refused before downloading anything
    server.files["/page.html"] = b"<html>a login page, not an archive</html>"
    done = run_cli("get_data.py", "download", "cityscapes", "--url", f"{server.url}/page.html",
                   "--root", str(tmp_path / "other"))
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"not a tar archive (is {server.url}/page.html the archive itself?)" in errors[0]


def big_release(root: Path, n: int = 240) -> tuple[Path, Path]:
    """The official layout with `n` full-size (2048x1024) train images: slow enough to interrupt."""
    photo, colour = draw_scene(5, 0, 256)
    big = [cv2.resize(x, (2048, 1024), interpolation=cv2.INTER_NEAREST) for x in (photo, colour)]
    first = {}
    for split, i in [("train", i) for i in range(n)] + [("val", 0), ("val", 1)]:
        stem = f"aachen_{split}_{i:06d}"
        for path, image in ((root / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png", big[0]),
                            (root / "gtFine" / split / "aachen" / f"{stem}_gtFine_color.png", big[1]),
                            (root / "gtFine" / split / "aachen" / f"{stem}_gtFine_labelIds.png", big[1][:, :, 0])):
            path.parent.mkdir(parents=True, exist_ok=True)
            kind = path.name.split("_")[-1]
            if kind in first:
                os.link(first[kind], path)  # the same bytes under every name: quick to make
            else:
                assert cv2.imwrite(str(path), image)
                first[kind] = path
    return root / "gtFine", root / "leftImg8bit"


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT to the group"])
def test_interrupted_prepare_ends_in_one_line_with_no_orphans(tmp_path, how):
    import signal
    import subprocess
    import sys
    import time
    gt, left = big_release(tmp_path / "release")
    args = ["prepare", "--gtfine", str(gt), "--leftimg", str(left), "--root", str(tmp_path / "data"),
            "--workers", "2", "--data.image_size", "64"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "get_data.py"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    pairs = tmp_path / "data" / ".cityscapes.preparing" / "train" / "pair"
    deadline = time.time() + 120
    while not (pairs.is_dir() and any(pairs.iterdir())):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    workers = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                              text=True).stdout.split()]
    assert workers
    if how == "SIGTERM":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("interrupted: the images prepared so far are kept in "), err
    time.sleep(1)
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    done = run_cli("get_data.py", *args)  # going on finishes the job
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list((tmp_path / "data" / "cityscapes" / "train").glob("*.png"))) == 240
