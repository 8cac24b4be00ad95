"""Benchmark the training step, evaluation and input pipeline (nanoGPT's bench.py, beside train.py).

    python jobs/bench.py                          # paper settings: 256px, batch 1, all generators
    python jobs/bench.py --gens unet --batch 4 --jit
    python jobs/bench.py --precision mixed_bfloat16   # CPUs with AVX512_BF16/AMX; mixed_float16 on GPUs
    python jobs/bench.py --gens hybrid --size 128 --steps 4 --growth-steps 2000   # memory over 2,000 steps
    python jobs/bench.py --gens resnet --profile /tmp/prof    # + time per TensorFlow op type (tf.profiler)
    python jobs/bench.py --real ../shared/data/cityscapes-mini    # also time the pipeline on real JPEGs
    python jobs/bench.py --size 32 --steps 3 --eval-images 4 --preset tiny   # seconds, for tests

In one process on this machine, per generator: median and p90 ms per
training step after warm-up for the project's step (`gan/train.py` with the
config's defaults or the flags below, on a fixed batch so the input pipeline
is not in the way) and for a textbook reference step (`gan/profiling.py`: one
tf.function, two GradientTapes, Keras BatchNormalization, float32, no XLA),
measured in alternating blocks; their ratio; achieved GFLOP/s from an
analytic FLOP count against the attainable matmul/conv rate measured in the
same run; inference ms per image; seconds per evaluation (generation and the
six metrics on the validation split and the train subset) and its share of a
1,000-step interval; peak resident memory; optionally memory growth over N
steps. Also the input pipeline's images per second (synthetic, and a real
pix2pix folder with --real). Prints Markdown; --json writes every figure.
"""

import argparse
import json
import platform
import resource
import tempfile
import time

from gan.cli import run_main
from gan.config import GENERATOR_NAMES, make_config
from gan.errors import UserError


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def timed_steps(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench_generator(name: str, args) -> dict:
    import numpy as np
    import tensorflow as tf

    from gan import evaluation, profiling
    from gan.data import load_dataset
    from gan.metrics import MetricPool
    from gan.rundir import RunDir
    from gan.train import build_models, make_strategy, make_train_step, resolve_precision

    cfg = make_config(args.preset, {"model.generator": name, "data.image_size": args.size,
                                    "train.batch_size": args.batch, "data.n_val": args.eval_images,
                                    "eval.train_subset": args.eval_images, "train.jit_compile": args.jit,
                                    "train.precision": args.precision, "model.batchnorm": args.batchnorm})
    strategy = make_strategy(cfg.train.devices)
    with strategy.scope():
        generator, discriminator, opt_g, opt_d = build_models(cfg)
    project = make_train_step(cfg, strategy, generator, discriminator, opt_g, opt_d)
    textbook = make_config(args.preset, {**cfg.flat(), "model.batchnorm": "keras"})
    ref_g, ref_d = evaluation.build_generator(textbook), evaluation.build_discriminator(textbook)
    reference = profiling.reference_step(ref_g, ref_d, cfg.optim.l1_weight)
    rng = np.random.default_rng(0)
    x, y = (tf.constant(rng.uniform(-1, 1, (args.batch, args.size, args.size, 3)).astype("float32"))
            for _ in range(2))
    iterator = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((x, y)).repeat()))
    run_project = lambda: float(project(iterator)["gen_total"])  # float() waits for the step  # noqa: E731
    run_reference = lambda: float(reference(x, y))  # noqa: E731
    for _ in range(args.warmup):
        run_project()
        run_reference()
    project_s, reference_s = [], []
    block = max(1, args.steps // 4)
    while len(project_s) < args.steps:  # alternate, so drift in the machine hits both alike
        project_s += timed_steps(run_project, block)
        reference_s += timed_steps(run_reference, block)
    flops = profiling.train_step_flops(generator, discriminator) * args.batch
    memory = profiling.memory_estimate(generator, discriminator)
    rss_trace = [(0, rss_mb())]  # resident MB after each quarter of the growth steps
    for quarter in range(4 if args.growth_steps else 0):
        timed_steps(run_project, args.growth_steps // 4)
        rss_trace.append(((quarter + 1) * (args.growth_steps // 4), rss_mb()))
    growth = rss_trace[-1][1] - rss_trace[0][1]

    profile = None
    if args.profile:
        profile = profiling.op_time_breakdown(run_project, 3, f"{args.profile}/{name}")

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
    p_ms, r_ms = np.array(project_s) * 1000, np.array(reference_s) * 1000
    interval_s = np.median(p_ms) / 1000 * cfg.train.eval_every
    return {"generator": name, "size": args.size, "batch": args.batch, "jit": args.jit,
            "precision": resolve_precision(cfg.train.precision), "batchnorm": cfg.model.batchnorm,
            "parameters": int(generator.count_params()), "step_gflop": flops / 1e9,
            "step_ms_median": float(np.median(p_ms)), "step_ms_p90": float(np.percentile(p_ms, 90)),
            "reference_ms_median": float(np.median(r_ms)), "reference_ms_p90": float(np.percentile(r_ms, 90)),
            "ratio_to_reference": float(np.median(p_ms) / np.median(r_ms)),
            "gflops": flops / 1e9 / (np.median(p_ms) / 1000),
            "reference_gflops": flops / 1e9 / (np.median(r_ms) / 1000),
            "inference_ms_per_image": infer_ms, "eval_seconds": eval_s,
            "eval_images": len(data.val.ids) + len(evaluator.sets["train"][0]),
            "eval_share_of_interval": eval_s / (interval_s + eval_s),
            **memory, "op_ms_per_step": profile,
            "memory_growth_mb": growth, "growth_steps": args.growth_steps, "rss_mb_by_step": rss_trace}


def bench_pipeline(source: str, args, steps_per_second: float | None) -> dict:
    from gan.data import load_dataset, train_pipeline
    cfg = make_config(args.preset, {"data.source": source, "data.image_size": args.size,
                                    "train.batch_size": args.batch, "train.steps": 100_000})
    t0 = time.perf_counter()
    data = load_dataset(cfg)
    load_s = time.perf_counter() - t0
    ds = iter(train_pipeline(data.train, cfg, 0))
    for _ in range(20):
        next(ds)
    n = 400
    t0 = time.perf_counter()
    for _ in range(n):
        next(ds)
    rate = n * args.batch / (time.perf_counter() - t0)
    return {"source": source, "images_per_second": rate, "load_seconds": load_s,
            "images_loaded": len(data.train.ids) + len(data.val.ids) + len(data.test.ids),
            "times_step_rate": rate / (steps_per_second * args.batch) if steps_per_second else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gens", default="all", help="generators (comma list or all)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per generator (each of project, reference)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--eval-images", type=int, default=50, help="validation images (and train subset)")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--jit", action="store_true", help="XLA-compile the project's step")
    parser.add_argument("--precision", default="auto", help="the project step's train.precision")
    parser.add_argument("--batchnorm", default="auto", help="the project step's model.batchnorm")
    parser.add_argument("--growth-steps", type=int, default=0, help="steps over which to watch memory growth")
    parser.add_argument("--profile", default=None, help="trace 3 project steps per generator into this folder "
                        "(TensorBoard profile) and print the time per op type")
    parser.add_argument("--real", default=None, help="a pix2pix folder to time the input pipeline on")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    gens = list(GENERATOR_NAMES) if args.gens == "all" else args.gens.split(",")
    for g in gens:  # bad flags fail here, in one line, before anything is measured
        make_config(args.preset, {"model.generator": g, "data.image_size": args.size, "train.batch_size": args.batch,
                                  "train.precision": args.precision, "model.batchnorm": args.batchnorm})
    if args.growth_steps and args.growth_steps < 4:
        raise UserError(f"--growth-steps: {args.growth_steps} is fewer than the 4 quarters it is sampled at")

    from gan import profiling
    roof = profiling.attainable_gflops()
    print(f"attainable on this machine: matmul {roof['matmul_gflops']:.1f} GFLOP/s, "
          f"conv {roof['conv_gflops']:.1f} GFLOP/s", flush=True)
    results = []
    for g in gens:
        r = bench_generator(g, args)
        r["share_of_attainable"] = r["gflops"] / roof["attainable_gflops"]
        results.append(r)
        print(f"{g}: {r['step_ms_median']:.1f} ms/step (reference {r['reference_ms_median']:.1f}), "
              f"eval {r['eval_seconds']:.1f} s", flush=True)
    fastest = max(1000 / r["step_ms_median"] for r in results)
    pipelines = [bench_pipeline("synthetic", args, fastest)]
    if args.real:
        pipelines.append(bench_pipeline(args.real, args, fastest))

    print(f"\nbench on {platform.node()} ({platform.machine()}), {args.size}px, batch {args.batch}"
          f"{', XLA' if args.jit else ''}; project step: {results[0]['precision']}, batchnorm "
          f"{results[0]['batchnorm']}; median of {args.steps} steps after {args.warmup} warm-up\n")
    print("| generator | params | GFLOP/step | step ms (p50 / p90) | reference ms (p50 / p90) | ratio "
          "| GFLOP/s (of attainable) | inference ms/img | eval s | eval share of 1k steps |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['generator']} | {r['parameters']:,} | {r['step_gflop']:.1f} "
              f"| {r['step_ms_median']:.1f} / {r['step_ms_p90']:.1f} "
              f"| {r['reference_ms_median']:.1f} / {r['reference_ms_p90']:.1f} | {r['ratio_to_reference']:.2f} "
              f"| {r['gflops']:.1f} ({100 * r['share_of_attainable']:.0f} %) | {r['inference_ms_per_image']:.1f} "
              f"| {r['eval_seconds']:.1f} ({r['eval_images']} img) | {100 * r['eval_share_of_interval']:.1f} % |")
    print("\n| input pipeline | images/s | x fastest step rate | load s (images) |\n|---|---|---|---|")
    for p in pipelines:
        print(f"| {p['source']} | {p['images_per_second']:.0f} | {p['times_step_rate']:.1f} "
              f"| {p['load_seconds']:.1f} ({p['images_loaded']}) |")
    print("\n| generator | weights + grads + Adam MB | activations MB per image | at batch 1 / 8 / 32 (GB) |"
          "\n|---|---|---|---|")
    for r in results:
        at = " / ".join(f"{(r['state_mb'] + b * r['activations_mb_per_image']) / 1e3:.1f}" for b in (1, 8, 32))
        print(f"| {r['generator']} | {r['state_mb']:.0f} | {r['activations_mb_per_image']:.0f} | {at} |")
    for r in results:
        if r["op_ms_per_step"]:
            total = sum(ms for _, ms in r["op_ms_per_step"])
            print(f"\n{r['generator']}: ms per step by op type (tf.profiler, summed over executor threads; "
                  f"trace in {args.profile}/{r['generator']})\n" + "\n".join(
                      f"  {ms:9.1f}  {100 * ms / total:5.1f} %  {op}" for op, ms in r["op_ms_per_step"]))
    if args.growth_steps:
        for r in results:
            trace = ", ".join(f"{mb:.0f} MB at +{step}" for step, mb in r["rss_mb_by_step"])
            print(f"\n{r['generator']}: RSS growth {r['memory_growth_mb']:+.0f} MB over {args.growth_steps} "
                  f"steps ({trace})")
    print(f"\npeak resident memory: {peak_rss_mb():.0f} MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"roof": roof, "generators": results, "pipelines": pipelines, "peak_rss_mb": peak_rss_mb()},
                      f, indent=2)
    return 0


if __name__ == "__main__":
    run_main(main)
