"""Data: the four formats on small generated fixtures, split selection, augmentation, resume order."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, make_pix2pix, write_rgb
from gan.config import make_config
from gan.datasets.loader import (Pair, detect_format, example_order, find_pairs, load_dataset, load_pair, read_image,
                      select_splits, train_pipeline)
from gan.errors import UserError
from gan.datasets.synthetic import PALETTE, draw_scene, ensure_synthetic


def test_synthetic_is_deterministic_and_in_palette(tmp_path):
    photo, label = draw_scene(0, 3, 64)
    photo2, label2 = draw_scene(0, 3, 64)
    assert np.array_equal(photo, photo2) and np.array_equal(label, label2)
    colours = {tuple(c) for c in label.reshape(-1, 3)}
    assert colours <= set(PALETTE.values()) and len(colours) >= 5
    # The rendering depends on the labels, and is not a recolouring of them.
    assert photo.std() > 20 and not np.array_equal(draw_scene(0, 4, 64)[0], photo)
    root = ensure_synthetic(32, cache_dir=tmp_path, split_sizes={"train": 4, "val": 2, "test": 2})
    assert ensure_synthetic(32, cache_dir=tmp_path, split_sizes={"train": 4, "val": 2, "test": 2}) == root
    assert [len(list((root / s).iterdir())) for s in ("train", "val", "test")] == [4, 2, 2]


def test_pix2pix_format_and_input_side(tmp_path):
    root = make_pix2pix(tmp_path / "p2p", ext=".png")
    assert detect_format(root) == "pix2pix"
    pools = find_pairs(root, "pix2pix")
    assert [len(pools[s]) for s in ("train", "val", "test")] == [8, 3, 3]
    label, photo = load_pair(pools["train"][0], 32, "right")
    expected_photo, expected_label = draw_scene(7, 0, 32)
    assert np.array_equal(label, expected_label) and np.array_equal(photo, expected_photo)
    label_l, photo_l = load_pair(pools["train"][0], 32, "left")
    assert np.array_equal(label_l, expected_photo)


def test_cityscapes_format(tmp_path):
    root = tmp_path / "cs"
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            photo, label = draw_scene(1, i, 64)
            stem = f"aachen_{i:06d}_000019"
            write_rgb(root / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png", photo[:, :, ::-1].copy())
            write_rgb(root / "gtFine" / split / "aachen" / f"{stem}_gtFine_color.png", label)
    assert detect_format(root) == "cityscapes"
    pools = find_pairs(root, "cityscapes")
    assert len(pools["train"]) == 3 and len(pools["val"]) == 2 and pools["test"] == []
    label, photo = load_pair(pools["train"][1], 32, "right")
    assert {tuple(c) for c in label.reshape(-1, 3)} <= set(PALETTE.values())
    cfg = make_config("tiny", {"data.source": str(root), "data.n_train": 3, "data.n_val": 1, "data.n_test": 1})
    data = load_dataset(cfg)
    assert len(data.test.ids) == 1 and data.test.ids[0].startswith("val/")  # carved from val
    assert not set(data.test.ids) & set(data.val.ids)


def test_paired_folders_format(tmp_path):
    root = tmp_path / "pf"
    for i in range(6):
        photo, label = draw_scene(2, i, 32)
        write_rgb(root / "A" / f"{i}.png", label)
        write_rgb(root / "B" / f"{i}.png", photo)
    assert detect_format(root) == "paired-folders"
    cfg = make_config("tiny", {"data.source": str(root), "data.n_train": 4, "data.n_val": 1, "data.n_test": 1})
    data = load_dataset(cfg)
    assert (len(data.train.ids), len(data.val.ids), len(data.test.ids)) == (4, 1, 1)
    assert len(set(data.train.ids) | set(data.val.ids) | set(data.test.ids)) == 6


def test_split_selection_is_reproducible_and_disjoint():
    pools = {"train": [Pair(f"t{i}", "") for i in range(20)], "val": [Pair(f"v{i}", "") for i in range(5)],
             "test": []}
    a, notes = select_splits(pools, 10, 3, 4, seed=0)
    b, _ = select_splits(pools, 10, 3, 4, seed=0)
    c, _ = select_splits(pools, 10, 3, 4, seed=1)
    assert a == b and a != c
    ids = [p.id for s in a.values() for p in s]
    assert len(ids) == len(set(ids)) == 17
    assert all(p.id.startswith("v") for p in a["test"])  # test carved from val first
    assert [p.id for p in a["val"]][:1][0].startswith("v") and notes == []
    _, notes = select_splits(pools, 400, 3, 4, seed=0)
    assert notes == ["train: 18 images available, 400 asked"]


def test_augmentation_is_identical_for_input_and_target():
    cfg = make_config("tiny", {"aug.crop_scale_min": 0.7})
    from gan.datasets.loader import Split
    photo, _ = draw_scene(0, 0, 32)
    split = Split(["a"], photo[None], photo[None].copy())  # input == target
    for x, y in train_pipeline(split, cfg, 0).take(6):
        assert np.array_equal(x.numpy(), y.numpy())


def test_pipeline_resumes_at_the_exact_example():
    cfg = make_config("tiny", {"train.steps": 30})
    from gan.datasets.loader import Split
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (7, 32, 32, 3), dtype=np.uint8)
    split = Split([str(i) for i in range(7)], images, images)
    full = [x.numpy() for x, _ in train_pipeline(split, cfg, 0)]
    tail = [x.numpy() for x, _ in train_pipeline(split, cfg, 13)]
    assert len(full) == 30 and len(tail) == 17
    assert all(np.array_equal(a, b) for a, b in zip(full[13:], tail))
    order = example_order(7, 0, 0, 21)
    assert sorted(order[:7]) == sorted(order[7:14]) == list(range(7))  # every image once per epoch


def test_bad_files_are_named(tmp_path):
    truncated = tmp_path / "cut.jpg"
    ok = tmp_path / "ok.jpg"
    write_rgb(ok, draw_scene(0, 0, 32)[0])
    truncated.write_bytes(ok.read_bytes()[:200])
    with pytest.raises(UserError, match="cut.jpg: truncated JPEG"):
        read_image(str(truncated))
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image")
    with pytest.raises(UserError, match="garbage.png: not a readable image"):
        read_image(str(garbage))
    square = tmp_path / "square.png"
    write_rgb(square, draw_scene(0, 0, 32)[0])
    with pytest.raises(UserError, match="square.png: a side-by-side pair must be twice as wide"):
        load_pair(Pair("x", str(square)), 32)


def test_split_follows_split_seed_not_training_seed(tmp_path):
    from gan.config import make_config
    from gan.datasets.loader import load_dataset
    root = make_pix2pix(tmp_path / "ds", counts=(10, 6, 0))
    ids = lambda **o: load_dataset(make_config("tiny", {"data.source": str(root), "data.n_train": 5,  # noqa: E731
                                                        "data.n_val": 2, "data.n_test": 2, **o})).test.ids
    assert ids() == ids(**{"train.seed": 7})  # another training seed: the same test photos
    assert ids() != ids(**{"data.split_seed": 3}) or ids() != ids(**{"data.split_seed": 5})


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU: the generator writes without a process pool")
def test_killed_generator_takes_its_workers_along(tmp_path):
    """kill -9 mid-generation: the pool's workers end too instead of waiting for tasks for ever."""
    script = ("from gan.datasets.synthetic import ensure_synthetic\n"
              f"ensure_synthetic(128, cache_dir={str(tmp_path)!r}, split_sizes={{'train': 5000, 'val': 1, 'test': 1}})")
    generator = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob(".synthetic-*/train/*.png"))) < 20:
        assert generator.poll() is None and time.monotonic() < deadline, "the generator wrote nothing"
        time.sleep(0.1)
    workers = [int(p) for p in Path(f"/proc/{generator.pid}/task/{generator.pid}/children").read_text().split()]
    assert len(workers) >= 2
    generator.kill()
    generator.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{w}").exists() and Path(f"/proc/{w}/stat").read_text().split()[2] != "Z"
              for w in workers):
        assert time.monotonic() < deadline, "workers outlived their killed generator"
        time.sleep(0.1)


def test_abandoned_partial_dataset_is_removed(tmp_path):
    """A killed generator's partial folder is removed by the next generation once untouched for an hour;
    a live one (recently written) is left alone."""
    from gan.datasets.synthetic import ABANDONED_AFTER_S
    old, live = tmp_path / ".synthetic-old", tmp_path / ".synthetic-live"
    for partial in (old, live):
        (partial / "train").mkdir(parents=True)
        (partial / "train" / "00000.png").write_bytes(b"partial")
    past = time.time() - ABANDONED_AFTER_S - 60
    for path in (old / "train" / "00000.png", old / "train", old):
        os.utime(path, (past, past))
    ensure_synthetic(32, cache_dir=tmp_path, split_sizes={"train": 2, "val": 1, "test": 1})
    assert not old.exists() and (live / "train" / "00000.png").exists()


def test_split_file_draws_exactly_that_split_from_any_copy(tmp_path):
    """A run's split.json, given as data.split_file to another copy of the dataset with another split_seed,
    gives exactly the same images in every split; a copy missing one of them is named in one line."""
    import json
    import shutil

    from gan.config import make_config
    from gan.datasets.loader import load_dataset
    from gan.errors import UserError
    original = make_pix2pix(tmp_path / "a", counts=(10, 6, 0))
    sizes = {"data.n_train": 6, "data.n_val": 3, "data.n_test": 2}
    first = load_dataset(make_config("tiny", {"data.source": str(original), **sizes}))
    record = tmp_path / "split.json"
    record.write_text(first.split_record())
    copy = tmp_path / "b"
    shutil.copytree(original, copy)
    other_seed = load_dataset(make_config("tiny", {"data.source": str(copy), "data.split_seed": 5, **sizes}))
    assert other_seed.files != first.files  # another seed draws another split...
    again = load_dataset(make_config("tiny", {"data.source": str(copy), "data.split_seed": 5,
                                              "data.split_file": str(record)}))
    assert again.files == first.files == json.loads(record.read_text())["files"]  # ...the file, exactly this one
    assert np.array_equal(again.train.inputs, first.train.inputs)
    (copy / first.files["test"][0]).unlink()
    with pytest.raises(UserError, match=f"1 of its images are not in {copy} \\(e.g. {first.files['test'][0]}\\)"):
        load_dataset(make_config("tiny", {"data.source": str(copy), "data.split_file": str(record)}))
