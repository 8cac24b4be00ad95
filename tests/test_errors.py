"""Error policy (docs/design.md): one clear line naming the file or flag, exit 2, existing runs untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_pix2pix, run_cli, tree_digest, write_rgb
from gan.config import make_config
from gan.datasets.synthetic import draw_scene
from gan.train import train

pytestmark = pytest.mark.slow  # the fixture and most cases train or start the trainer


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory):
    """A finished tiny run that every bad command below must leave exactly as it is."""
    out = tmp_path_factory.mktemp("out")
    assert train(make_config("tiny", {"model.generator": "hybrid", "train.steps": 4}), out) == 0
    return out


def dataset(tmp_path: Path, name: str, **kwargs) -> Path:
    return make_pix2pix(tmp_path / name, **kwargs)


def truncated_jpeg(tmp_path: Path) -> tuple[Path, str]:
    root = dataset(tmp_path, "cut")
    bad = root / "train" / "003.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    return root, f"{bad}: truncated JPEG"


def unreadable_png(tmp_path: Path) -> tuple[Path, str]:
    root = dataset(tmp_path, "garbage")
    bad = root / "val" / "zz.png"
    bad.write_bytes(b"\x89PNG but not really")
    return root, f"{bad}: not a readable image"


def empty_train_split(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "empty"
    (root / "train").mkdir(parents=True)
    (root / "val").mkdir()
    return root, f"{root / 'train'}: missing or empty training split"


def not_side_by_side(tmp_path: Path) -> tuple[Path, str]:
    root = dataset(tmp_path, "square")
    bad = root / "train" / "000.jpg"
    write_rgb(bad, draw_scene(0, 0, 32)[0])
    return root, f"{bad}: a side-by-side pair must be twice as wide as high"


def mismatched_pair(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "pf"
    for i in range(20):
        photo, label = draw_scene(0, i, 32)
        write_rgb(root / "A" / f"{i}.png", label)
        write_rgb(root / "B" / f"{i}.png", photo if i != 2 else draw_scene(0, i, 64)[0])
    return root, f"{root / 'A' / '2.png'}: size 32x32 does not match {root / 'B' / '2.png'} (64x64)"


def unmatched_name(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "pf2"
    write_rgb(root / "A" / "x.png", draw_scene(0, 0, 32)[1])
    write_rgb(root / "B" / "y.png", draw_scene(0, 0, 32)[0])
    return root, f"{root / 'A' / 'x.png'}: no matching file in {root / 'B'}"


def unknown_layout(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "odd" / "images").mkdir(parents=True)
    return tmp_path / "odd", "cannot tell the layout"


@pytest.mark.parametrize("make", [truncated_jpeg, unreadable_png, empty_train_split, not_side_by_side,
                                  mismatched_pair, unmatched_name, unknown_layout])
def test_bad_dataset(tmp_path, existing_run, make):
    root, message = make(tmp_path)
    before = tree_digest(existing_run)
    done = run_cli("train.py", "--preset", "tiny", "--gens", "hybrid", "--data", str(root),
                   "--out", str(existing_run))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert tree_digest(existing_run) == before


@pytest.mark.parametrize("args,message", [
    (["--gens", "vgg"], "--gens: unknown generator 'vgg'"),
    (["--data.image_size", "48"], "--data.image_size: 48 is not a power of two from 32 to 512"),
    (["--train.steps", "-3"], "--train.steps: must be >= 0, got -3"),
    (["--optim.lr_x", "1"], "--optim.lr_x: unknown config field"),
    (["--train.eval_every", "ten"], "--train.eval_every: expected int, got 'ten'"),
    (["--data", "/nonexistent/cityscapes"], "--data /nonexistent/cityscapes: no such folder"),
    (["--preset", "huge"], "--preset: unknown preset 'huge'"),
    (["--optim.adam", "sgd"], "--optim.adam: unknown value 'sgd'"),
    (["--model.upsample", "bilinear"], "--model.upsample: unknown value 'bilinear'"),
    (["--model.conv", "fft"], "--model.conv: unknown value 'fft'"),
    (["--lr", "1"], "--lr: unknown argument"),
])
def test_bad_flags(existing_run, args, message):
    before = tree_digest(existing_run)
    done = run_cli("train.py", "--preset", "tiny", "--gens", "hybrid", "--out", str(existing_run), *args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), done.stderr
    assert tree_digest(existing_run) == before


def test_different_run_in_the_folder_is_refused_then_moved_aside(existing_run):
    before = tree_digest(existing_run)
    args = ["--preset", "tiny", "--gens", "hybrid", "--train.steps", "4", "--out", str(existing_run)]
    done = run_cli("train.py", *args, "--optim.lr_g", "1e-3")
    assert done.returncode == 2
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: --out {existing_run / 'default' / 'hybrid'}: holds a different run "
                           "(optim.lr_g: 0.0002 there, 0.001 now")
    assert tree_digest(existing_run) == before


def test_run_written_before_the_kernel_switches_resumes(tmp_path):
    """A ResNet run whose config.json predates `optim.adam` / `model.upsample` / `model.conv` (the Keras
    kernels' checkpoint layout) resumes under the defaults instead of being refused as a different run."""
    cfg = make_config("tiny", {"model.generator": "resnet", "train.steps": 4})
    textbook = {"optim.adam": "keras", "model.upsample": "keras", "model.conv": "keras"}
    assert train(make_config("tiny", {**cfg.flat(), **textbook}), tmp_path) == 0
    run = tmp_path / "default" / "resnet"
    stored = json.loads((run / "config.json").read_text())
    del stored["config"]["optim"]["adam"], stored["config"]["model"]["upsample"], stored["config"]["model"]["conv"]
    (run / "config.json").write_text(json.dumps(stored))
    first = (run / "timings.csv").read_text()
    assert train(make_config("tiny", {**cfg.flat(), "train.steps": 8}), tmp_path) == 0
    assert json.loads((run / "status.json").read_text())["step"] == 8
    timings = (run / "timings.csv").read_text()
    assert timings.startswith(first) and len(timings.splitlines()) == len(first.splitlines()) + 1
    model = json.loads((run / "config.json").read_text())["config"]["model"]
    assert (model["upsample"], model["conv"]) == ("subpixel", "auto")


def test_run_folder_that_is_a_file(tmp_path):
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "unet").write_text("not a folder")
    done = run_cli("train.py", "--preset", "tiny", "--gens", "unet", "--out", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: --out {tmp_path / 'default' / 'unet'}: exists and is not a directory"]
    assert (tmp_path / "default" / "unet").read_text() == "not a folder"


def test_evaluate_without_checkpoint(tmp_path):
    (tmp_path / "run").mkdir()
    done = run_cli("evaluate.py", str(tmp_path / "run"), "--split", "val")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {tmp_path / 'run'}: not a run directory (config.json missing)"]
    (tmp_path / "run" / "config.json").write_text(json.dumps({"config": make_config("tiny").to_dict()}))
    done = run_cli("evaluate.py", str(tmp_path / "run"), "--split", "val")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'run' / 'checkpoints'}: no checkpoint yet"
    assert done.stderr.count("error:") == 1  # TensorFlow's start-up lines may precede it
