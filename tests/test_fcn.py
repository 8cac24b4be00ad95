"""FCN-score and FID/KID: label mapping, a segmenter trained here, score identities."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import run_cli
from gan.datasets.labels import IGNORE, TRAIN_CLASSES, colours_to_train_ids, label_ids_to_train_ids, train_ids_to_colours
from gan.datasets.synthetic import draw_scene

pytestmark = pytest.mark.slow


def test_exact_palette_maps_exactly():
    ids = np.arange(19, dtype=np.uint8).repeat(4).reshape(4, 19)
    assert np.array_equal(colours_to_train_ids(train_ids_to_colours(ids)), ids)
    void = np.array([[[0, 0, 0], [250, 170, 160]]], np.uint8)  # unlabeled, parking
    assert (colours_to_train_ids(void) == IGNORE).all()


def test_jpeg_compressed_labels_map_to_their_class():
    _, label = draw_scene(3, 5, 128)
    exact = colours_to_train_ids(label)
    ok, buf = cv2.imencode(".jpg", label[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 75])
    noisy = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
    assert not np.array_equal(noisy, label)  # the colours really are noisy
    assert np.mean(colours_to_train_ids(noisy) == exact) > 0.95  # only pixels near edges may differ


def test_label_ids():
    label_ids = np.array([[7, 8, 26, 0, 33]], np.uint8)
    assert label_ids_to_train_ids(label_ids).tolist() == [[0, 1, 13, IGNORE, 18]]
    assert {c[2] for c in TRAIN_CLASSES} == set(range(19))


@pytest.fixture(scope="module")
def segmenter_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("seg")
    done = run_cli("train_segmenter.py", "--preset", "tiny", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    return out / "segmenter" / "segmenter"


def test_segmenter_learns_above_chance(segmenter_run):
    summary = json.loads((segmenter_run / "summary.json").read_text())["val_real_photos"]
    assert summary["pixel_acc"] > 0.3 and summary["class_acc"] > 1 / 19 and summary["iou"] > 1 / 19 / 2
    assert len((segmenter_run / "metrics.csv").read_text().splitlines()) == 13  # header + 12 epochs


def test_real_photos_score_at_least_a_constant_image(segmenter_run):
    from gan.evaluators.segmenter import Segmenter
    segmenter = Segmenter.load(segmenter_run)
    scenes = [draw_scene(0, 450 + i, 32) for i in range(16)]
    photos, labels = np.stack([p for p, _ in scenes]), np.stack([lab for _, lab in scenes])
    _, real = segmenter.fcn_scores(photos, labels)
    _, constant = segmenter.fcn_scores(np.full_like(photos, 128), labels)
    # A flat image is segmented as one or two classes: the class-level scores expose it. The margin is
    # half the one measured (real ~0.45-0.5, constant ~0.23), so thread-order noise cannot flip it.
    assert real["class_acc"] > constant["class_acc"] + 0.1 and real["iou"] > constant["iou"] + 0.1, (real, constant)


def test_training_reports_the_fcn_score(segmenter_run, tmp_path):
    done = run_cli("train.py", "--preset", "tiny", "--gens", "hybrid", "--out", str(tmp_path),
                   "--eval.segmenter", str(segmenter_run), "--eval.fcn_every_eval", "true",
                   "--report", str(tmp_path / "report"))
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / "default" / "hybrid"
    header = (run / "test_metrics.csv").read_text().splitlines()[0]
    assert header.endswith("fcn_pixel_acc,fcn_class_acc,fcn_iou")
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["fcn"]["real"]) == {"pixel_acc", "class_acc", "iou"}  # dataset level, as the paper
    assert set(summary["fcn"]["real_image_mean"]) == {"fcn_pixel_acc", "fcn_class_acc", "fcn_iou"}
    assert "fcn_iou" in summary["test"]
    # The segmenter's Fréchet distance and KID, each beside its real-vs-real floor.
    seg = summary["segmenter_fid"]
    assert set(seg) == {"fid", "fid_floor", "kid", "kid_floor"} and seg["fid"] >= 0 and seg["fid_floor"] >= 0
    assert "fid_floor" in (tmp_path / "report" / "tables" / "segmenter_fid.md").read_text()
    study = (tmp_path / "report" / "tables" / "study.md").read_text()
    assert "| real photos (reference) |" in study and "fcn_pixel_acc" in study

    # At every evaluation (tiny: steps 4 and 8): generated and real rows per split, beside an unchanged
    # metrics.csv; the real photos' score is computed once and is the same at every step.
    import pandas as pd
    from gan.contract import metrics_columns
    from gan.evaluators.metrics import metric_names
    assert (run / "metrics.csv").read_text().splitlines()[0] == ",".join(metrics_columns(metric_names()))
    fcn = pd.read_csv(run / "fcn_metrics.csv")
    assert sorted(zip(fcn.step, fcn.split)) == sorted(
        (s, p) for s in (4, 8) for p in ("train", "train_real", "val", "val_real"))
    metrics = ["fcn_pixel_acc", "fcn_class_acc", "fcn_iou"]
    assert fcn[metrics].ge(0).all().all() and fcn[metrics].le(1).all().all()
    real = fcn[fcn.split == "val_real"].set_index("step")[metrics]
    assert np.allclose(real.loc[4], real.loc[8])
    # The real val photos scored at step 4 equal a direct computation with the same segmenter.
    from gan.config import Config
    from gan.datasets.loader import load_dataset
    from gan.evaluators.segmenter import Segmenter
    cfg = Config.from_dict(json.loads((run / "config.json").read_text())["config"])
    val = load_dataset(cfg).val
    rows, _ = Segmenter.load(segmenter_run).fcn_scores(val.targets, val.inputs)
    assert real.loc[4].tolist() == pytest.approx([np.mean([r[m] for r in rows]) for m in metrics], abs=1e-6)
    figures = tmp_path / "report" / "figures"
    assert (figures / "fcn_evolution.png").stat().st_size > 0 and (figures / "fcn_test.png").stat().st_size > 0


def test_the_same_command_trains_the_same_judge_and_runs_name_theirs(segmenter_run, tmp_path):
    # The judge of a study must be reproducible: with a stateful random flip in a parallel map the same
    # command trained a different segmenter each time (real Cityscapes: pixel accuracy 0.822 vs 0.843).
    from gan.evaluators.segmenter import weights_identity
    done = run_cli("train_segmenter.py", "--preset", "tiny", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    again = tmp_path / "segmenter" / "segmenter" / "segmenter.weights.h5"
    assert weights_identity(again) == weights_identity(segmenter_run / "segmenter.weights.h5")
    from gan.config import make_config
    from gan.train import train  # in this process: `train.py --preset tiny --gens unet --eval.segmenter S`
    assert train(make_config("tiny", {"model.generator": "unet", "eval.segmenter": str(segmenter_run)}),
                 tmp_path / "runs") == 0
    summary = json.loads((tmp_path / "runs" / "default" / "unet" / "summary.json").read_text())
    assert summary["fcn"]["segmenter_id"] == weights_identity(again)
    # Runs judged by different segmenters are not compared without a word.
    from analysis.runs import consistency_warnings, find_runs
    import shutil
    shutil.copytree(tmp_path / "runs" / "default" / "unet", tmp_path / "runs" / "other" / "unet")
    path = tmp_path / "runs" / "other" / "unet" / "summary.json"
    path.write_text(json.dumps({**summary, "fcn": {**summary["fcn"], "segmenter_id": "0" * 16}}))
    config = json.loads((path.parent / "config.json").read_text())
    config["config"]["train"]["seed"] = 1  # another seed, so that it is not merged as a copy
    (path.parent / "config.json").write_text(json.dumps(config))
    warnings = consistency_warnings(find_runs(tmp_path / "runs"))
    assert any("different segmenters" in w for w in warnings), warnings


def test_fid_and_kid_identities(tmp_path):
    import keras
    from gan.evaluators.fid import InceptionFeatures, fid, kid
    weights = tmp_path / "inception.weights.h5"
    keras.utils.set_random_seed(0)
    keras.applications.InceptionV3(include_top=False, pooling="avg", weights=None).save_weights(weights)
    features = InceptionFeatures(weights, image_size=75)  # the weights fit any input size; 75 is the least
    images = np.stack([draw_scene(0, i, 64)[0] for i in range(10)])
    real = features(images)
    assert real.shape == (10, 2048)
    shifted = features(np.clip(images.astype(int) + 40, 0, 255).astype(np.uint8))
    far = features(np.clip(images.astype(int) + 120, 0, 255).astype(np.uint8))
    assert 0 < fid(real, shifted) < fid(real, far)
    assert fid(real, real) < 1e-3 * fid(real, shifted)  # zero up to the matrix square root's rounding
    assert abs(kid(real, real)) < kid(real, shifted) / 5
    assert kid(real, shifted) < kid(real, far)


@pytest.mark.parametrize("n, d", [(12, 40), (40, 12)], ids=["fewer-images-than-dims", "more-images"])
def test_frechet_distance_is_the_textbook_formula(n, d):
    """Both routes of fid (the samples' nuclear norm, the d x d root) equal ||mu_r - mu_g||^2 +
    Tr(S_r + S_g - 2 sqrtm(S_r S_g)) computed the textbook way."""
    from scipy import linalg

    from gan.evaluators.fid import fid
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(n, d)), rng.normal(0.3, 1.5, size=(n + 3, d)) @ rng.normal(size=(d, d)) / d ** 0.5
    cov_r, cov_f = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    textbook = (((real.mean(0) - fake.mean(0)) ** 2).sum() + np.trace(cov_r + cov_f)
                - 2 * np.trace(linalg.sqrtm(cov_r @ cov_f)).real)
    assert fid(real, fake) == pytest.approx(textbook, rel=1e-6)
    assert fid(real, real) == pytest.approx(0, abs=1e-9 * textbook)


def test_segmenter_epochs_follow_the_image_budget():
    from gan.segmenter_config import make_segmenter_config
    from gan.evaluators.segmenter import resolve_epochs
    cfg = make_segmenter_config()
    assert resolve_epochs(cfg, 80) == 40  # cityscapes-mini: capped at 40
    assert resolve_epochs(cfg, 2975) == 4  # full Cityscapes: ~12,000 images, well under an hour on CPU
    assert resolve_epochs(cfg, 100_000) == 1
    assert resolve_epochs(make_segmenter_config("default", {"train.epochs": 7}), 2975) == 7  # --train.epochs wins


def test_segmenter_features_and_their_distances(segmenter_run):
    """Penultimate-layer features, one vector per photo; the real photos' halves are closer to each other
    than to flat grey images."""
    from gan.evaluators.fid import distribution_scores
    from gan.evaluators.segmenter import Segmenter
    segmenter = Segmenter.load(segmenter_run)
    photos = np.stack([draw_scene(3, i, 32)[0] for i in range(16)])
    real = segmenter.features(photos)
    assert real.shape == (16, segmenter.model.layers[-2].output.shape[-1])
    flat = segmenter.features(np.full_like(photos, 128))
    scores = distribution_scores(real, flat)
    assert scores["fid"] > scores["fid_floor"] and scores["kid"] > scores["kid_floor"]
    assert distribution_scores(real, real)["fid"] == pytest.approx(scores["fid_floor"])  # same halves compared


def test_segmenter_follows_the_trainers_rules(segmenter_run, tmp_path):
    """Dotted flags, a finished run left alone, another config refused untouched, a live holder refused,
    a run written in the old flat layout still read (its config and status)."""
    import shutil

    from conftest import tree_digest
    from gan.lease import Lease
    from gan.evaluators.segmenter import Segmenter
    out = tmp_path / "runs"
    shutil.copytree(segmenter_run, out / "segmenter" / "segmenter")
    run = out / "segmenter" / "segmenter"
    config = json.loads((run / "config.json").read_text())
    assert config["kind"] == "segmenter" and config["config"]["train"]["epochs"] == 12

    again = run_cli("train_segmenter.py", "--preset", "tiny", "--out", str(out))
    assert again.returncode == 0 and "already finished after 12 epochs" in again.stdout + again.stderr
    before = tree_digest(run)
    for args, message in ((["--train.lr", "0.01"], "holds a different run (train.lr: 0.001 there, 0.01 now"),
                          (["--image-size", "64"], "--image-size: unknown argument"),
                          (["--data.image_size", "48"], "--data.image_size: 48 is not a power of two")):
        done = run_cli("train_segmenter.py", "--preset", "tiny", "--out", str(out), *args)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and message in lines[0], done.stderr
    lease = Lease(run / "lease.json").acquire()
    try:
        done = run_cli("train_segmenter.py", "--preset", "tiny", "--out", str(out))
        assert done.returncode == 2 and "in use by another trainer" in done.stderr, done.stderr
    finally:
        lease.release()
    assert tree_digest(run) == before

    # The layout of segmenters trained before the shared contract: one flat config object, {"epoch": n} status.
    flat = {k: v for group in config["config"].values() if isinstance(group, dict) for k, v in group.items()}
    (run / "config.json").write_text(json.dumps({"kind": "segmenter", "config": flat}))
    (run / "status.json").write_text(json.dumps({"state": "finished", "epoch": 12}))
    assert Segmenter.load(run).size == 32
    again = run_cli("train_segmenter.py", "--preset", "tiny", "--out", str(out))
    assert again.returncode == 0 and "already finished" in again.stdout + again.stderr, again.stderr


@pytest.mark.slow
def test_interrupted_segmenter_resumes_after_its_last_epoch(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from conftest import ROOT
    args = [sys.executable, str(ROOT / "jobs" / "train_segmenter.py"), "--preset", "tiny", "--train.epochs", "8",
            "--out", str(tmp_path)]
    run = tmp_path / "segmenter" / "segmenter"
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "metrics.csv").exists()
                                          and len((run / "metrics.csv").read_text().splitlines()) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    status = json.loads((run / "status.json").read_text())
    assert proc.returncode == 75 and status["state"] == "preempted", err
    assert "rerun the same command to resume" in out.strip().splitlines()[-1]
    epochs = len((run / "metrics.csv").read_text().splitlines()) - 1
    assert status["step"] == epochs >= 2
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, 9))  # each epoch once, none repeated or lost
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


def test_rejudge_scores_the_test_as_training_under_that_judge_would(segmenter_run, tmp_path):
    # A judge trained after the runs: re-scoring a run's test with it gives exactly what training under
    # that judge gives, the old record is kept, and the settle rule refuses a mix of judges until then.
    # The runs and the second judge are trained in this process (what `train_segmenter.py --preset tiny
    # --train.seed 1 --train.epochs 3` and `train.py --preset tiny --gens unet --eval.fcn_every_eval true --eval.segmenter J`
    # do); the commands under test here are evaluate.py's.
    from analysis.runs import find_runs
    from analysis.settle import scores_of
    from gan.config import make_config
    from gan.evaluators.segmenter import train_segmenter
    from gan.segmenter_config import make_segmenter_config
    from gan.train import train
    assert train_segmenter(make_segmenter_config("tiny", {"train.seed": 1, "train.epochs": 3}), tmp_path / "judge") == 0
    other = tmp_path / "judge" / "segmenter" / "segmenter"
    for name, judge in (("old", segmenter_run), ("new", other)):
        cfg = make_config("tiny", {"model.generator": "unet", "eval.fcn_every_eval": True, "eval.segmenter": str(judge)})
        assert train(cfg, tmp_path / name) == 0
    run, direct = tmp_path / "old" / "default" / "unet", tmp_path / "new" / "default" / "unet"
    old_summary, old_rows = json.loads((run / "summary.json").read_text()), (run / "test_metrics.csv").read_text()
    with pytest.raises(ValueError, match="2 different segmenters"):
        scores_of(find_runs(tmp_path / "old", tmp_path / "new"), ["fcn_pixel_acc"])

    done = run_cli("evaluate.py", str(run), "--rejudge", str(other))
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run / "test_metrics.csv").read_text() == (direct / "test_metrics.csv").read_text()
    assert (run / "test_metrics.csv").read_text() != old_rows  # the FCN columns changed, nothing else
    summary = json.loads((run / "summary.json").read_text())
    assert summary["fcn"] == json.loads((direct / "summary.json").read_text())["fcn"]
    kept = run / "rejudged" / old_summary["fcn"]["segmenter_id"]
    assert summary["rejudged"]["kept"] == f"rejudged/{kept.name}"
    assert (kept / "test_metrics.csv").read_text() == old_rows and json.loads((kept / "summary.json").read_text()) == old_summary
    assert (kept / "fcn_metrics.csv").exists() and not (run / "fcn_metrics.csv").exists()  # the old judge's evolution
    assert not (run / "rejudged" / ".pending").exists()
    scores = scores_of(find_runs(tmp_path / "old", tmp_path / "new"), ["fcn_pixel_acc"])
    assert scores["unet"][0]["fcn_pixel_acc"] == pytest.approx(summary["test"]["fcn_pixel_acc"]["mean"])

    # Each refusal is one line and changes nothing.
    before = (run / "summary.json").read_text()
    for args, says in (((str(run), "--rejudge", str(other)), "already scored by"),
                       ((str(run), "--rejudge", str(tmp_path)), f"--rejudge {tmp_path}: no segmenter.weights.h5"),
                       ((str(run), "--rejudge", str(other), "--split", "test"), "--rejudge: alone"),
                       ((str(tmp_path / "judge"), "--rejudge", str(other)), "no summary.json")):
        done = run_cli("evaluate.py", *args)
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and len(lines) == 1 and says in lines[0], done.stderr
    assert (run / "summary.json").read_text() == before

    # Cut off after the new rows were moved in but before summary.json: the run still reads as the old
    # judge's, a leftover .pending is cleared, the same command completes it, and the kept copy stays the
    # original record (not the half-switched one).
    (run / "summary.json").write_text(json.dumps(old_summary))
    (run / "rejudged" / ".pending").mkdir()
    (run / "rejudged" / ".pending" / "summary.json").write_text("{")
    done = run_cli("evaluate.py", str(run), "--rejudge", str(other))
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run / "test_metrics.csv").read_text() == (direct / "test_metrics.csv").read_text()
    assert json.loads((run / "summary.json").read_text())["fcn"] == summary["fcn"]
    assert (kept / "test_metrics.csv").read_text() == old_rows and not (run / "rejudged" / ".pending").exists()
