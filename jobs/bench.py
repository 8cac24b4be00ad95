"""Benchmark the training step and evaluation of each generator (nanoGPT's bench.py, beside train.py).

    python jobs/bench.py                          # paper settings: 256px, batch 1, all generators
    python jobs/bench.py --gens unet --batch 4    # one generator, another batch
    python jobs/bench.py --size 32 --steps 3 --eval-images 4 --preset tiny   # seconds, for tests

Measures, in one process on this machine: median and p90 milliseconds per
training step after warm-up (the exact step `gan/train.py` runs, on a fixed
batch so the input pipeline is not in the way), inference milliseconds per
image, seconds per evaluation (generating and measuring the validation split
and the train subset) and that as a fraction of one `eval_every` interval,
and peak resident memory. Prints a Markdown table; `--json` writes the figures.
"""

import argparse
import json
import platform
import resource
import tempfile
import time

from gan.cli import run_main
from gan.config import GENERATOR_NAMES, make_config


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def bench_generator(name: str, args) -> dict:
    import numpy as np
    import tensorflow as tf

    from gan import evaluation
    from gan.data import load_dataset
    from gan.metrics import MetricPool
    from gan.rundir import RunDir
    from gan.train import build_models, make_strategy, make_train_step

    cfg = make_config(args.preset, {"model.generator": name, "data.image_size": args.size,
                                    "train.batch_size": args.batch, "data.n_val": args.eval_images,
                                    "eval.train_subset": args.eval_images, "train.jit_compile": args.jit})
    strategy = make_strategy(cfg.train.devices)
    with strategy.scope():
        generator, discriminator, opt_g, opt_d = build_models(cfg)
    step = make_train_step(cfg, strategy, generator, discriminator, opt_g, opt_d)
    rng = np.random.default_rng(0)
    batch = rng.uniform(-1, 1, (2, args.batch, args.size, args.size, 3)).astype("float32")
    dataset = tf.data.Dataset.from_tensors((batch[0], batch[1])).repeat()
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    for _ in range(args.warmup):
        float(step(iterator)["gen_total"])
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        float(step(iterator)["gen_total"])  # float() waits for the step to finish
        times.append(time.perf_counter() - t0)
    step_ms = np.array(times) * 1000

    data = load_dataset(cfg)
    with MetricPool(cfg.eval.workers) as pool:
        evaluator = evaluation.Evaluator(cfg, data, pool)
        inference = evaluator.generator
        inference.set_weights(generator.get_weights())
        inference(data.val.inputs[:1])  # trace
        t0 = time.perf_counter()
        inference(data.val.inputs)
        infer_ms = (time.perf_counter() - t0) / len(data.val.ids) * 1000
        pool(data.val.targets[:2], data.val.targets[:2])  # start the workers outside the timing

        with tempfile.TemporaryDirectory() as tmp:  # evaluation writes rows and samples: keep them out of runs
            run = RunDir(tmp)
            run.samples.mkdir()
            t0 = time.perf_counter()
            evaluator.evaluate(generator.get_weights(), 0, run)
            eval_s = time.perf_counter() - t0
    interval_s = np.median(step_ms) / 1000 * cfg.train.eval_every
    return {"generator": name, "size": args.size, "batch": args.batch,
            "parameters": int(generator.count_params()),
            "step_ms_median": float(np.median(step_ms)), "step_ms_p90": float(np.percentile(step_ms, 90)),
            "inference_ms_per_image": infer_ms, "eval_seconds": eval_s,
            "eval_images": len(data.val.ids) + len(evaluator.sets["train"][0]),
            "eval_fraction_of_interval": eval_s / (interval_s + eval_s),
            "peak_rss_mb": peak_rss_mb()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gens", default="all", help="generators (comma list or all)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per generator")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--eval-images", type=int, default=50, help="validation images (and train subset)")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--jit", action="store_true", help="XLA-compile the step")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    gens = list(GENERATOR_NAMES) if args.gens == "all" else args.gens.split(",")
    results = [bench_generator(g, args) for g in gens]
    print(f"\nbench on {platform.node()} ({platform.processor() or platform.machine()}), "
          f"{args.size}px, batch {args.batch}, median of {args.steps} steps after {args.warmup} warm-up\n")
    print("| generator | params | step ms (median) | step ms (p90) | inference ms/img | eval s "
          "| eval share of 1k-step interval | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['generator']} | {r['parameters']:,} | {r['step_ms_median']:.1f} | {r['step_ms_p90']:.1f} "
              f"| {r['inference_ms_per_image']:.1f} | {r['eval_seconds']:.1f} ({r['eval_images']} img) "
              f"| {100 * r['eval_fraction_of_interval']:.1f} % | {r['peak_rss_mb']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    run_main(main)
