"""The benchmark: its output in a tiny mode (not its timings), and that the project's step computes
what the textbook step computes."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_cli
from gan.config import make_config
from gan.models import names

pytestmark = pytest.mark.slow


def test_bench_tiny_mode_reports_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    # Any config field by its dotted name, as in every job (here the hybrid's own block count).
    done = run_cli("bench.py", "--size", "32", "--timed-steps", "2", "--warmup", "1", "--eval-images", "4",
                   "--preset", "tiny", "--gens", "hybrid", "--growth-steps", "4", "--profile", str(tmp_path / "prof"),
                   "--rounds", "1", "--json", str(out), "--model.hybrid.blocks", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    (g,) = report["generators"]
    for key in ("step_ms_median", "step_ms_p90", "textbook_plain_ms", "textbook_fast_ms", "end_to_end_ms",
                "ratio_to_textbook_plain", "ratio_to_textbook_fast", "gflops", "share_of_attainable",
                "inference_ms_per_image", "eval_seconds", "eval_share_of_interval", "state_mb",
                "activations_mb_per_image"):
        assert np.isfinite(g[key]) and g[key] > 0, key
    for key in ("textbook_plain_system_ms", "textbook_fast_system_ms", "end_to_end_system_ms", "kernel_share"):
        assert np.isfinite(g[key]) and g[key] >= 0, key
    # The reference really ran on the system's malloc, the project and the fast reference on the allocator.
    assert g["allocators"]["textbook_plain"] == "system"
    assert "mimalloc" in g["allocators"]["textbook_fast"] and "mimalloc" in g["allocators"]["end_to_end"]
    assert g["step_ms_p90"] >= g["step_ms_median"]
    from gan.models import build_discriminator, build_generator
    one_block = make_config("tiny", {"model.generator": "hybrid", "model.hybrid.blocks": 1, "data.image_size": 32})
    assert g["parameters"] == build_generator(one_block.model, 32).count_params()  # the override reached the step
    d_params = build_discriminator(make_config("tiny").model, 32).count_params()
    assert g["state_mb"] == pytest.approx(16 * (g["parameters"] + d_params) / 1e6)  # 4 float32 per parameter
    assert [q for q, _ in g["rss_mb_by_step"]] == [0, 1, 2, 3, 4]
    ops = dict(g["op_ms_per_step"])
    assert any(op.endswith("Conv2D") or "Conv2DBackprop" in op for op in ops) and all(v > 0 for v in ops.values())
    assert g["ratio_to_textbook_plain"] == pytest.approx(float(np.median(g["ratio_to_textbook_plain_by_round"])))
    # One round (as here): its ratio is the end-to-end figure over that round's textbook figure.
    assert g["ratio_to_textbook_plain_by_round"] == [pytest.approx(g["end_to_end_ms"] / g["textbook_plain_ms"])]
    assert g["kernel_share"] == pytest.approx(g["end_to_end_system_ms"] / g["end_to_end_ms"])
    assert report["roof"]["attainable_gflops"] >= max(report["roof"]["matmul_gflops"], report["roof"]["conv_gflops"])
    assert report["pipelines"][0]["images_per_second"] > 0
    assert "| hybrid |" in done.stdout and "| synthetic |" in done.stdout


def test_terminated_bench_takes_its_child_along(tmp_path):
    """kill (TERM) while a textbook or train.py child runs: one line, non-zero exit, no figures,
    and the child ends with it instead of running on as an orphan."""
    out = tmp_path / "bench.json"
    bench = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "bench.py"), "--size", "32", "--steps", "3",
                              "--eval-images", "4", "--preset", "tiny", "--gens", "hybrid", "--json", str(out)],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    def measuring_child() -> int | None:
        for pid in Path(f"/proc/{bench.pid}/task/{bench.pid}/children").read_text().split():
            try:
                if b"gan.profiling" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return int(pid)
            except FileNotFoundError:  # a short-lived helper process that is already gone
                continue
        return None

    deadline = time.monotonic() + 300
    while (child := measuring_child()) is None:
        assert bench.poll() is None and time.monotonic() < deadline, "bench.py started no textbook process"
        time.sleep(0.1)
    bench.terminate()
    _, err = bench.communicate(timeout=60)
    assert bench.returncode == 1 and err.strip().splitlines()[-1] == "bench.py: terminated; no figures written"
    assert not Path(f"/proc/{child}").exists() and not out.exists()


def test_analytic_flops_of_a_known_conv():
    import keras
    from gan.profiling import model_flops
    inp = keras.Input([32, 32, 3])
    model = keras.Model(inp, keras.layers.Conv2D(8, 3, padding="same")(inp))
    assert model_flops(model) == 2 * 32 * 32 * 9 * 3 * 8


def project_and_textbook_losses(gen: str, precision: str = "float32", steps: int = 4, jit: bool = False):
    """gen_total of the project's step (fused BatchNorm and Adam, subpixel upsampling, the distributed
    loop, `precision`) and of the textbook step (Keras's BatchNorm, UpSampling2D + Conv2D and Adam,
    float32) from the same weights on the same batches, one row per step."""
    return project_and_textbook(gen, precision, steps, jit)[0]


def trainables(generator, discriminator) -> np.ndarray:
    return np.concatenate([np.ravel(v.numpy()) for v in generator.trainable_weights + discriminator.trainable_weights])


def project_and_textbook(gen: str, precision: str = "float32", steps: int = 4, jit: bool = False):
    """The losses of `project_and_textbook_losses` and what the first update moved every trainable weight
    of both networks by: (losses, project's moves, textbook's moves)."""
    import tensorflow as tf
    from gan import inference, profiling
    from gan.models.layers import FusedBatchNorm
    from gan.devices import make_strategy
    from gan.step import build_models, make_train_step
    cfg = make_config("tiny", {"model.generator": gen, "model.dropout": 0.0, "train.precision": precision,
                               "train.jit_compile": jit})
    strategy = make_strategy("auto")
    with strategy.scope():
        generator, discriminator, opt_g, opt_d = build_models(cfg)
    assert any(isinstance(layer, FusedBatchNorm) for layer in generator._flatten_layers())
    project = make_train_step(cfg, strategy, generator, discriminator, opt_g, opt_d)
    textbook = make_config("tiny", {**cfg.flat(), "model.batchnorm": "keras", "model.upsample": "keras",
                                    "model.conv": "keras", "train.precision": "float32", "train.jit_compile": False})
    ref_g, ref_d = inference.build_generator(textbook), inference.build_discriminator(textbook)
    ref_g.set_weights(generator.get_weights())
    ref_d.set_weights(discriminator.get_weights())
    reference = profiling.reference_step(ref_g, ref_d, cfg.optim.l1_weight)
    rng = np.random.default_rng(0)
    batches = [tuple(tf.constant(rng.uniform(-1, 1, (1, 32, 32, 3)).astype("float32")) for _ in range(2))
               for _ in range(steps)]
    iterator = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(
        (tf.concat([b[0] for b in batches], 0), tf.concat([b[1] for b in batches], 0))).batch(1)))
    start = trainables(generator, discriminator)
    losses = []
    for x, y in batches:
        losses.append((float(project(iterator)["gen_total"]), float(reference(x, y))))
        if len(losses) == 1:
            moves = trainables(generator, discriminator) - start, trainables(ref_g, ref_d) - start
    return np.array(losses), *moves


@pytest.mark.parametrize("gen", names())
def test_project_step_matches_textbook_step(gen, winograd_everywhere):
    """Same weights, same batches: the optimised step (fused BatchNorm and Adam kernels, subpixel
    upsampling, Winograd convs, distributed loop) computes the textbook step's loss to rtol 1e-4 before
    any update, and its first update moves every weight as the textbook's does.

    The update is the strict check: Adam's first step is lr * g / (|g| + eps), about lr for every weight
    whatever rounding did to g, so a wrong bias correction or learning rate shows in all of them (one
    step of bias correction off moves them 6 % less). A few weights whose gradient is rounding noise
    may step the other way: at most 2 in 1,000 (1.3 in 1,000 seen for the U-Net once, its 1 x 1 maps
    making more of its gradients noise; a wrong correction moves all of them). The losses of the next 3 steps agree to 5e-4 only: Adam
    divides near-zero gradients by their own RMS, which turns the kernels' rounding into steps (1.4e-4
    was seen on an AVX-512 CPU)."""
    losses, project_moves, textbook_moves = project_and_textbook(gen)
    np.testing.assert_allclose(losses[0, 0], losses[0, 1], rtol=1e-4)
    lr = 2e-4
    # At 32 px the U-Net's innermost maps are 1 x 1, where batch-1 BatchNorm zeroes the output: the
    # weights above them get no gradient, and stay put in both steps (the gap below covers them too).
    moved = np.abs(textbook_moves) > 1e-2 * lr
    assert moved.mean() > 0.3 and np.median(np.abs(textbook_moves[moved])) == pytest.approx(lr, rel=1e-2)
    gap = np.abs(project_moves - textbook_moves)
    assert np.median(gap[moved]) <= 1e-3 * lr, f"first update off by a median {np.median(gap[moved]):.3g}"
    assert np.mean(gap > 1e-2 * lr) <= 2e-3, f"{np.mean(gap > 1e-2 * lr):.2%} of the weights moved otherwise"
    np.testing.assert_allclose(losses[1:, 0], losses[1:, 1], rtol=5e-4)


def test_xla_step_matches_textbook_step():
    """train.jit_compile: XLA compiles the forward and backward passes; same losses to rtol 1e-4."""
    losses = project_and_textbook_losses("hybrid", jit=True)
    np.testing.assert_allclose(losses[:, 0], losses[:, 1], rtol=1e-4)


def test_bfloat16_step_tracks_float32_step():
    """mixed_bfloat16 (8-bit mantissa) stays within 2 % of the float32 textbook losses over 4 updates."""
    losses = project_and_textbook_losses("hybrid", "mixed_bfloat16")
    np.testing.assert_allclose(losses[:, 0], losses[:, 1], rtol=2e-2)
    assert not np.allclose(losses[:, 0], losses[:, 1], rtol=1e-6)  # it really ran in bfloat16


def test_trial_packing_arithmetic():
    """Two 1-CPU trials at 0.5 s/step finish 2 x 3600 / (0.5 x 1000) = 14.4 trials/hour of 1,000 steps;
    one 2-CPU trial at 0.3 s/step, 12 - so side by side is sooner there."""
    from jobs import bench_cluster
    assert bench_cluster.trials_per_hour(0.5, 1000, 2) == pytest.approx(14.4)
    assert bench_cluster.trials_per_hour(0.3, 1000, 1) == pytest.approx(12.0)


def test_steady_state_leaves_out_the_tracing_interval(tmp_path):
    from jobs import bench_cluster
    (tmp_path / "timings.csv").write_text("step,steps,train_seconds\n20,20,60.0\n40,20,10.0\n60,20,12.0\n")
    assert bench_cluster.steady_seconds_per_step(tmp_path) == pytest.approx(22.0 / 40)
