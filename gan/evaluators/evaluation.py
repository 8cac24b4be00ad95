"""Evaluation during and after training: generate, measure, write rows, samples and the summary.

The evaluator owns a single-device copy of the generator (`gan/inference.py`)
that receives the trained weights at each evaluation, so the training
model's state is never touched. Metrics are computed in a `MetricPool` of
worker processes; the FCN-score with a segmenter, FID/KID with Inception
weights.
"""

from __future__ import annotations

import numpy as np

from gan.config import Config
from gan.datasets.loader import Dataset
from gan.inference import Generator, sample_grid, write_png
from gan.contract import FCN_COLUMNS, METRICS_VERSION, STEP_SHEET, TEST_SHEET, metrics_columns
from gan.evaluators.metrics import MetricPool, metric_names
from gan.rundir import RunDir
from gan.files import append_csv, read_csv, write_csv, write_json


def summarise(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (ddof=1) of every metric (NaN-aware)."""
    out = {}
    for name in rows[0]:
        values = np.array([r[name] for r in rows], np.float64)
        out[name] = {"mean": float(np.nanmean(values)),
                     "std": float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 else 0.0}
    return out


class Evaluator:
    def __init__(self, cfg: Config, data: Dataset, pool: MetricPool):
        self.cfg, self.data, self.pool = cfg, data, pool
        self.generator = Generator(cfg)
        n = min(cfg.eval.train_subset, len(data.train.ids))
        self.sets = {"train": (data.train.inputs[:n], data.train.targets[:n]),  # fixed subset
                     "val": (data.val.inputs, data.val.targets)}
        self._segmenter = None
        self._fcn_real: dict[str, dict[str, float]] = {}  # real photos' mean FCN-score per split, computed once

    @property
    def segmenter(self):
        if self._segmenter is None:
            from gan.evaluators.segmenter import Segmenter
            self._segmenter = Segmenter.load(self.cfg.eval.segmenter)
        return self._segmenter

    def _fcn_means(self, photos: np.ndarray, label_maps: np.ndarray) -> dict[str, float]:
        rows, _ = self.segmenter.fcn_scores(photos, label_maps)
        return {k: v["mean"] for k, v in summarise(rows).items()}

    def _fcn_rows(self, step: int, outputs: dict[str, np.ndarray]) -> tuple[list[dict], dict]:
        """fcn_metrics.csv rows for the generated photos of each split and for its real photos
        (split `<name>_real`, the reference), and the generated scores by split."""
        rows, scores = [], {}
        for split, generated in outputs.items():
            inputs, targets = self.sets[split]
            if split not in self._fcn_real:
                self._fcn_real[split] = self._fcn_means(targets, inputs)
            scores[split] = self._fcn_means(generated, inputs)
            for name, values in ((split, scores[split]), (f"{split}_real", self._fcn_real[split])):
                rows.append({"step": step, "split": name, **{k: round(v, 6) for k, v in values.items()},
                             "images": len(inputs)})
        return rows, scores

    def evaluate(self, weights, step: int, run: RunDir, writer=None) -> dict[str, dict[str, float]]:
        """Metrics on the train subset and the val split; one metrics.csv row per split."""
        return self.finish(self.start(weights, step, run, overlap=False), run, writer)

    def start(self, weights, step: int, run: RunDir, overlap: bool) -> "PendingEvaluation":
        """The device's part of an evaluation at `step`: the photos generated (and the FCN-score, which is the
        segmenter's device work), the sample sheet written; the metrics computed in the pool's workers while
        the caller goes on (`overlap`), or here. `finish` writes its rows."""
        self.generator.set_weights(weights)
        outputs, pending = {}, {}
        for split, (inputs, targets) in self.sets.items():
            if not len(inputs):
                continue
            outputs[split] = self.generator(inputs)
            pending[split] = self.pool.submit(outputs[split], targets) if overlap else self.pool(outputs[split], targets)
        fcn_rows, fcn_scores = self._fcn_rows(step, outputs) if self.cfg.eval.fcn_every_eval else ([], {})
        k = self.cfg.eval.samples
        grid = sample_grid(self.sets["val"][0][:k], self.sets["val"][1][:k], outputs["val"][:k])
        write_png(run.samples / STEP_SHEET.format(step=step), grid)
        return PendingEvaluation(step, pending, fcn_rows, fcn_scores, grid, weights)

    def finish(self, pending: "PendingEvaluation", run: RunDir, writer=None) -> dict[str, dict[str, float]]:
        """Wait for an evaluation's metrics and write its rows (metrics.csv, fcn_metrics.csv, TensorBoard):
        called in step order, so the rows are in step order whether the metrics overlapped training or not."""
        scores, rows = {}, []
        for split, per_image in pending.metrics.items():
            per_image = per_image.result() if hasattr(per_image, "result") else per_image
            scores[split] = {k: float(np.mean([r[k] for r in per_image])) for k in metric_names()}
            rows.append({"step": pending.step, "split": split, **{k: round(v, 6) for k, v in scores[split].items()},
                         "images": len(per_image)})
        append_csv(run.metrics, metrics_columns(metric_names()), rows)
        if pending.fcn_rows:
            append_csv(run.fcn_metrics, FCN_COLUMNS, pending.fcn_rows)
            for split, values in pending.fcn_scores.items():  # reported to Tune and TensorBoard with the rest
                scores[split].update(values)
        if writer is not None:
            import tensorflow as tf
            with writer.as_default(step=pending.step):
                for split, values in scores.items():
                    for name, value in values.items():
                        tf.summary.scalar(f"{split}/{name}", value)
                tf.summary.image("samples/val", pending.grid[None])
            writer.flush()
        return scores

    def test(self, weights, step: int, run: RunDir, selected: dict | None = None) -> dict:
        """Per-image metrics on the test split, test_metrics.csv and summary.json; `selected` says which
        checkpoint `weights` are ({"rule": "last" or "best_val_<metric>", "step": ...})."""
        self.generator.set_weights(weights)
        test = self.data.test
        outputs = self.generator(test.inputs)
        per_image = self.pool(outputs, test.targets)
        extra = {}
        if self.cfg.eval.segmenter:  # FCN-score: segment the generated photos, score against the input labels
            segmenter = self.segmenter
            fcn_rows, fcn_generated = segmenter.fcn_scores(outputs, test.inputs)
            real_rows, fcn_real = segmenter.fcn_scores(test.targets, test.inputs)  # the reference: real photos
            per_image = [{**a, **b} for a, b in zip(per_image, fcn_rows)]
            # Dataset-level scores (summed confusion matrix, as the paper reports) and per-image means
            # (what the mean (std) tables compare), for the generated and the real test photos.
            extra["fcn"] = {"generated": fcn_generated, "real": fcn_real,
                            "generated_image_mean": summarise(fcn_rows), "real_image_mean": summarise(real_rows),
                            "segmenter": self.cfg.eval.segmenter, "segmenter_id": segmenter.identity}
            # A realism judge that does not saturate: the distance between the real and generated photos'
            # distributions in the segmenter's feature space, beside the real-vs-real floor.
            from gan.evaluators.fid import distribution_scores
            extra["segmenter_fid"] = distribution_scores(segmenter.features(test.targets), segmenter.features(outputs))
        # The control every comparison is held against: trivial outputs scored on these test photos.
        from gan.evaluators.controls import control_means
        extra["control"] = control_means(test.targets, test.inputs, self.pool,
                                         self.segmenter if self.cfg.eval.segmenter else None)
        if self.cfg.eval.inception_weights:
            from gan.evaluators.fid import InceptionFeatures, fid, kid
            features = InceptionFeatures(self.cfg.eval.inception_weights)
            real, fake = features(test.targets), features(outputs)
            extra.update(fid=fid(real, fake), kid=kid(real, fake))
        columns = list(per_image[0])
        write_csv(run.test_metrics, ["image", *columns],
                  [{"image": i, **{k: round(r[k], 6) for k in columns}} for i, r in zip(test.ids, per_image)])
        k = self.cfg.eval.samples
        write_png(run.samples / TEST_SHEET, sample_grid(test.inputs[:k], test.targets[:k], outputs[:k]))
        timings = read_csv(run.timings)
        summary = {
            "generator": self.cfg.model.generator, "steps": step, "images": len(test.ids),
            "selected": selected or {"rule": "last", "step": step},
            "metrics_version": METRICS_VERSION, "split_seed": self.cfg.data.split_seed,
            "data": {"source": self.data.source, "fingerprint": self.data.fingerprint},
            "precision": self.cfg.train.precision,
            "test": summarise(per_image),
            "train_seconds": round(sum(float(r["train_seconds"]) for r in timings), 3),
            "eval_seconds": round(sum(float(r["eval_seconds"]) for r in timings), 3),
            "parameters": {"generator": int(self.generator.model.count_params())},
            **extra,
        }
        write_json(run.summary, summary)
        return summary

    def close(self) -> None:
        self.pool.close()


def _threads_said(recorded: int | None) -> str:
    """What a failed re-scoring ran with, against what the run recorded: the usual cause of other photos."""
    import tensorflow as tf
    have = tf.config.threading.get_intra_op_parallelism_threads() or "all the machine's"
    if recorded is None:
        return f"made with {have} threads per pool; the run recorded no CPU count to match"
    return f"made with {have} threads per pool, the run recorded {recorded} CPU(s)"


def rejudge(run_path, segmenter_dir, workers: int = 0, log=print) -> dict:
    """Score a finished run's test again under another segmenter, as its training would have: the checkpoint
    its test was scored with, the same test photos (the run's one fixed dropout mask), the same images.

    A judge trained after the runs (a reproducible one, a better one) then needs no retraining. The new test
    is scored into `rejudged/.pending/`, and its image metrics must equal the old ones up to float noise
    (the proof that the photos are the same). Only then is the previous record - test_metrics.csv, summary.json
    and fcn_metrics.csv (the evolution scored by the old judge) - kept in `rejudged/<old judge id>/` and the
    new one moved in, summary.json last. Killed midway, the run still reads as the old judge's and the same
    command completes it. Returns the new summary."""
    import math
    import os
    import shutil
    from pathlib import Path

    from gan.contract import REJUDGE_PENDING, REJUDGED, check_summary
    from gan.datasets.loader import load_dataset
    from gan.errors import UserError, raise_for_write
    from gan.evaluators.segmenter import Segmenter, weights_identity
    from gan.fastpath import size_thread_pools
    from gan.files import read_json
    from gan.inference import restore_generator
    from gan.lease import Lease

    run = RunDir(Path(run_path))
    if not run.summary.exists():
        raise UserError(f"{run.path}: no {run.summary.name}: --rejudge re-scores the test of a finished run")
    old = check_summary(read_json(run.summary), run.summary)
    # The photos are made again with the thread pools they were first made with (a kernel's sums split by
    # pool size): the CPUs the run recorded, before anything here starts TensorFlow.
    config = read_json(run.config, default={})  # restore_generator below refuses a damaged one in one line
    environment = config.get("environment") if isinstance(config, dict) else None
    recorded = environment.get("cpus") if isinstance(environment, dict) else None
    threads = recorded if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 1 else None
    # Runs from before the judge's identity was recorded keep their record as "unrecorded".
    old_id = str((old.get("fcn") or {}).get("segmenter_id") or ("unrecorded" if old.get("fcn") else "none"))
    if old_id == weights_identity(Segmenter.weights_of(segmenter_dir, flag="--rejudge")):
        raise UserError(f"{run.path}: its test is already scored by {segmenter_dir} (segmenter {old_id})")
    if old.get("metrics_version") != METRICS_VERSION:
        raise UserError(f"{run.path}: its test was scored with metric definitions v{old.get('metrics_version')}, "
                        f"this code has v{METRICS_VERSION}; its image metrics cannot prove the photos the same")
    if threads:
        size_thread_pools(threads, log)
    judge = Segmenter.load(segmenter_dir, flag="--rejudge")
    # No trainer, and no second re-scoring, may write the run meanwhile.
    lease = Lease(run.lease, log=log, holder="re-scoring process", flag="run").acquire()
    try:
        cfg, generator, step = restore_generator(run.path, log=log)
        selected = old.get("selected") or {"rule": "last", "step": step}
        if int(selected.get("step", step)) != step:
            raise UserError(f"{run.path}: its test was scored with the checkpoint of step {selected['step']}, "
                            f"which is gone (step {step} was found)")
        data = load_dataset(cfg)
        if data.fingerprint != (old.get("data") or {}).get("fingerprint"):
            raise UserError(f"{run.path}: the data read now ({cfg.data.source}) is not the data its test was "
                            "scored on (another fingerprint)")
        pending = RunDir(run.path / REJUDGED / REJUDGE_PENDING)
        shutil.rmtree(pending.path, ignore_errors=True)  # an attempt that was cut off
        pending.samples.mkdir(parents=True)
        shutil.copy2(run.timings, pending.timings)
        cfg.eval.segmenter = str(segmenter_dir)
        with MetricPool(workers) as pool:
            evaluator = Evaluator(cfg, data, pool)
            evaluator._segmenter = judge
            summary = evaluator.test(generator.model.get_weights(), int(old.get("steps", step)), pending, selected)
        # Equal up to float noise in the last digits (thread order in a sum); other photos differ by far more.
        changed = [m for m in metric_names() if m in old.get("test", {}) and not math.isclose(
                   summary["test"][m]["mean"], old["test"][m]["mean"], rel_tol=1e-5, abs_tol=1e-6)]
        if changed:
            shutil.rmtree(pending.path)
            raise UserError(f"{run.path}: the test photos made now are not those of its test ({changed[0]} "
                            f"{summary['test'][changed[0]]['mean']:.6f}, was {old['test'][changed[0]]['mean']:.6f}; "
                            f"{_threads_said(threads)}); its record is unchanged")
        earlier = sorted(p.name for p in (run.path / REJUDGED).iterdir() if p.is_dir() and p.name != REJUDGE_PENDING)
        summary["rejudged"] = {"previous_segmenter_id": old_id, "kept": f"{REJUDGED}/{old_id}",
                               "earlier": [e for e in earlier if e != old_id]}
        write_json(pending.summary, summary)
        keep = run.path / REJUDGED / old_id
        keep.mkdir(exist_ok=True)
        for path in (run.test_metrics, run.summary, run.fcn_metrics):
            if path.exists() and not (keep / path.name).exists():  # a second attempt keeps the first copy
                shutil.copy2(path, keep / path.name)
        run.samples.mkdir(exist_ok=True)
        os.replace(pending.samples / TEST_SHEET, run.samples / TEST_SHEET)  # the same photos, redrawn
        os.replace(pending.test_metrics, run.test_metrics)
        run.fcn_metrics.unlink(missing_ok=True)  # the old judge's evolution; its copy is kept
        os.replace(pending.summary, run.summary)  # last: until here the run reads as the old judge's
        shutil.rmtree(pending.path)
    except OSError as e:  # disk full, read-only: summary.json is replaced last, so nothing is lost
        raise_for_write(e, f"run {run.path}: cannot write its re-scored test (the same command completes it)")
    finally:
        lease.release()
    log(f"{run.path}: test re-scored by {segmenter_dir} (segmenter {judge.identity}); the record scored by "
        f"{old_id} is in {keep}")
    return summary


class PendingEvaluation:
    """An evaluation whose metrics may still be computing: its step, per split the rows or their
    `PendingRows`, the FCN rows and scores, the sample sheet, and the generator's weights at that step
    (the best-checkpoint keeper saves them once the score is known)."""

    def __init__(self, step: int, metrics: dict, fcn_rows: list, fcn_scores: dict, grid, weights):
        self.step, self.metrics, self.fcn_rows, self.fcn_scores = step, metrics, fcn_rows, fcn_scores
        self.grid, self.weights = grid, weights
