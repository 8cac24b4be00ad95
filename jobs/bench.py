"""Benchmark the training step, evaluation and input pipeline (nanoGPT's bench.py, beside train.py).

    python jobs/bench.py                          # paper settings: 256px, batch 1, all generators
    python jobs/bench.py --gens unet --train.batch_size 4 --jit
    python jobs/bench.py --train.precision mixed_bfloat16   # CPUs with AVX512_BF16/AMX; mixed_float16 on GPUs
    python jobs/bench.py --gens hybrid --data.image_size 128 --steps 4 --growth-steps 2000   # memory over 2,000 steps
    python jobs/bench.py --gens resnet --profile /tmp/prof    # + time per TensorFlow op type (tf.profiler)
    python jobs/bench.py --real /data/cityscapes-mini           # also time the pipeline on real JPEGs
    python jobs/bench.py --data.image_size 32 --steps 3 --eval-images 4 --preset tiny   # seconds, for tests

Per generator, each in its own process and in alternating rounds (so the
machine's drift hits all alike, and no process shares another's allocator
state): the textbook TensorFlow pix2pix step (`gan/profiling.py`: one
tf.function, two GradientTapes, Keras's BatchNormalization, UpSampling2D +
Conv2D, Conv2D for every conv and Adam, float32) as a plain
script on the system's malloc and on the caching allocator, and the
project's end-to-end `jobs/train.py` (steady-state intervals of its
timings.csv); ms per step and kernel (system) CPU ms per step for each, and
the ratios (median, and each round's own). In the bench's own process: the project's step on a fixed batch,
achieved GFLOP/s from an analytic (direct-conv) FLOP count against the
attainable matmul/conv rate, inference ms per image, seconds per evaluation
(generation and the metrics on the validation split and the train subset)
and its share of a 1,000-step interval, peak resident memory, optionally
memory growth over N steps and time per op type. Also the input pipeline's
images per second (synthetic, and a real pix2pix folder with --real).
Prints Markdown; --json writes every figure.
"""

import argparse
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from cluster import costs
from gan.cli import add_gens_flag, generator_list, parse_overrides, run_main
from gan.config import make_config
from gan.contract import CONFIG, TIMINGS_CSV, run_path
from gan.errors import UserError
from gan.fastpath import ALLOCATOR_ENV, allocator_env
from gan.files import read_csv


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
    """Every figure for one generator: the project's step in this process, evaluation, and the separate
    processes (textbook step on both allocators, the end-to-end trainer)."""
    cfg = make_config(args.preset, {"model.generator": name, "data.image_size": args.size,
                                    "train.batch_size": args.batch, "data.n_val": args.eval_images,
                                    "eval.train_subset": args.eval_images, "train.jit_compile": args.jit,
                                    "train.precision": args.precision, "model.batchnorm": args.batchnorm,
                                    **args.overrides})
    step, generator = project_step(cfg, args)
    evaluation_figures = evaluate_once(cfg, generator)
    processes = separate_processes(name, args)
    interval_s = step["step_ms_median"] / 1000 * cfg.train.eval_every
    eval_s = evaluation_figures["eval_seconds"]
    return {"generator": name, "size": args.size, "batch": args.batch, "jit": args.jit, **step,
            **evaluation_figures, **processes,
            # The rounds' median: each round pairs processes run minutes apart, so drift cancels.
            "ratio_to_textbook_plain": float(median(processes["ratio_to_textbook_plain_by_round"])),
            "ratio_to_textbook_fast": processes["end_to_end_ms"] / processes["textbook_fast_ms"],
            "kernel_share": processes["end_to_end_system_ms"] / processes["end_to_end_ms"],
            "gflops": step["step_flops"] / 1e9 / (processes["end_to_end_ms"] / 1000),
            "reference_gflops": step["step_flops"] / 1e9 / (processes["textbook_plain_ms"] / 1000),
            "eval_share_of_interval": eval_s / (interval_s + eval_s)}


def project_step(cfg, args) -> tuple[dict, object]:
    """The project's train step on a fixed batch in this process: ms per step, FLOPs, memory estimate,
    resident-memory growth over --growth-steps, op times with --profile; and the trained generator."""
    import numpy as np
    import tensorflow as tf

    from gan import profiling
    from gan.devices import make_strategy, resolve_precision
    from gan.step import build_models, make_train_step
    strategy = make_strategy(cfg.train.devices)
    with strategy.scope():
        generator, discriminator, opt_g, opt_d = build_models(cfg)
    project = make_train_step(cfg, strategy, generator, discriminator, opt_g, opt_d)
    rng = np.random.default_rng(0)
    x, y = (tf.constant(rng.uniform(-1, 1, (args.batch, args.size, args.size, 3)).astype("float32"))
            for _ in range(2))
    iterator = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((x, y)).repeat()))
    run_project = lambda: float(project(iterator)["gen_total"])  # float() waits for the step  # noqa: E731
    for _ in range(args.warmup):
        run_project()
    p_ms = np.array(timed_steps(run_project, args.steps)) * 1000
    rss_trace = [(0, rss_mb())]  # resident MB after each quarter of the growth steps
    for quarter in range(4 if args.growth_steps else 0):
        timed_steps(run_project, args.growth_steps // 4)
        rss_trace.append(((quarter + 1) * (args.growth_steps // 4), rss_mb()))
    flops = profiling.train_step_flops(generator, discriminator) * args.batch
    return {"precision": resolve_precision(cfg.train.precision), "batchnorm": cfg.model.batchnorm,
            "parameters": int(generator.count_params()), "step_flops": flops, "step_gflop": flops / 1e9,
            "step_ms_median": float(np.median(p_ms)), "step_ms_p90": float(np.percentile(p_ms, 90)),
            **profiling.memory_estimate(generator, discriminator),
            "op_ms_per_step": profiling.op_time_breakdown(run_project, 3, f"{args.profile}/{cfg.model.generator}")
            if args.profile else None,
            "memory_growth_mb": rss_trace[-1][1] - rss_trace[0][1], "growth_steps": args.growth_steps,
            "rss_mb_by_step": rss_trace}, generator


def evaluate_once(cfg, generator) -> dict:
    """Inference ms per image and one evaluation's seconds (generation and metrics on val and the train
    subset), written into a temporary run directory."""
    from gan.evaluators import evaluation
    from gan.datasets.loader import load_dataset
    from gan.evaluators.metrics import MetricPool
    from gan.rundir import RunDir
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
    return {"inference_ms_per_image": infer_ms, "eval_seconds": eval_s,
            "eval_images": len(data.val.ids) + len(evaluator.sets["train"][0])}


def _exit_on_term(signum, frame):
    sys.exit("bench.py: terminated; no figures written")


def run_child(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run, with TERM (kill, a scheduler's time limit) unwinding like Ctrl-C meanwhile:
    subprocess.run then kills the child instead of leaving it running on, and an enclosing temporary
    run folder is removed. Only while waiting: elsewhere (pools, data generation) TERM keeps its default."""
    previous = signal.signal(signal.SIGTERM, _exit_on_term)
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    finally:
        signal.signal(signal.SIGTERM, previous)


def textbook_in_process(name: str, args, fast: bool) -> dict:
    """The textbook step in a fresh process (gan/profiling.py), on the caching allocator or on
    the system's malloc, as a user's plain script would run."""
    env = allocator_env() if fast else {**os.environ, ALLOCATOR_ENV: "system"}
    if not fast:
        env.pop("LD_PRELOAD", None)
    done = run_child([sys.executable, "-m", "gan.profiling", name, str(args.size), str(args.batch),
                      str(args.steps), str(args.warmup), args.preset], env=env)
    if done.returncode:
        raise RuntimeError(f"textbook step process failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def end_to_end(name: str, args) -> dict:
    """A real short `jobs/train.py` run (3 intervals of --steps steps, tiny evaluations): ms and kernel ms
    per step over the steady-state intervals (after the first, which includes tracing), from timings.csv."""
    with tempfile.TemporaryDirectory() as out:
        flags = {"data.image_size": args.size, "train.batch_size": args.batch,
                 "train.steps": 3 * args.steps, "train.eval_every": args.steps, "data.n_val": 1, "data.n_test": 1,
                 "eval.train_subset": 1, "eval.samples": 1, "eval.workers": 1, "train.jit_compile": args.jit,
                 "train.precision": args.precision, "model.batchnorm": args.batchnorm, **args.overrides}
        done = run_child([sys.executable, str(Path(__file__).with_name("train.py")), "--gens", name, "--preset",
                          args.preset, "--out", out, *[a for k, v in flags.items() for a in (f"--{k}", str(v))]])
        if done.returncode:
            raise RuntimeError(f"jobs/train.py failed: {done.stderr.strip()[-2000:]}")
        run = run_path(out, "default", name)
        steady = read_csv(run / TIMINGS_CSV)[1:]
        steps = sum(int(r["steps"]) for r in steady)
        allocator = json.loads((run / CONFIG).read_text())["environment"]["allocator"]
        return {"ms": 1000 * sum(float(r["train_seconds"]) for r in steady) / steps,
                "system_ms": 1000 * sum(float(r["system_seconds"]) for r in steady) / steps, "allocator": allocator}


def separate_processes(name: str, args) -> dict:
    """Alternating rounds of: textbook step on the system's malloc, textbook step on the caching allocator,
    the project's end-to-end jobs/train.py; each in its own process, so drift in the machine hits all alike."""
    plain, fast, e2e = [], [], []
    for _ in range(args.rounds):
        plain.append(textbook_in_process(name, args, fast=False))
        fast.append(textbook_in_process(name, args, fast=True))
        e2e.append(end_to_end(name, args))
    import numpy as np
    # Each round's own ratio too: the spread says how much of the difference is the machine's drift.
    rounds = [e["ms"] / float(np.median(p["step_ms"])) for p, e in zip(plain, e2e)]
    return {"ratio_to_textbook_plain_by_round": rounds,
            "textbook_plain_ms": float(np.median([t for r in plain for t in r["step_ms"]])),
            "textbook_plain_system_ms": float(np.median([r["system_ms_per_step"] for r in plain])),
            "textbook_fast_ms": float(np.median([t for r in fast for t in r["step_ms"]])),
            "textbook_fast_system_ms": float(np.median([r["system_ms_per_step"] for r in fast])),
            "end_to_end_ms": float(np.median([r["ms"] for r in e2e])),
            "end_to_end_system_ms": float(np.median([r["system_ms"] for r in e2e])),
            "allocators": {"textbook_plain": plain[0]["allocator"], "textbook_fast": fast[0]["allocator"],
                           "end_to_end": e2e[0]["allocator"]}}


def bench_pipeline(source: str, args, steps_per_second: float | None) -> dict:
    from gan.datasets.loader import load_dataset, train_pipeline
    cfg = make_config(args.preset, {**args.overrides, "data.source": source, "data.image_size": args.size,
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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_gens_flag(parser)
    # The config's own names for the two shapes that matter (--size / --batch: old spellings).
    parser.add_argument("--data.image_size", "--size", dest="size", type=int, default=256, help="(default 256)")
    parser.add_argument("--train.batch_size", "--batch", dest="batch", type=int, default=1, help="(default 1)")
    parser.add_argument("--timed-steps", dest="steps", type=int, default=8, help="timed steps per generator and "
                        "process (the end-to-end run trains 3 intervals of this many)")
    parser.add_argument("--steps", dest="steps", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # older spelling
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the separate processes")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--eval-images", type=int, default=50, help="validation images (and train subset)")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--jit", action="store_true", help="XLA-compile the project's step")
    parser.add_argument("--train.precision", "--precision", dest="precision", default="auto",
                        help="the project step's precision (default auto)")
    parser.add_argument("--model.batchnorm", "--batchnorm", dest="batchnorm", default="auto",
                        help="the project step's BatchNorm kernel (default auto)")
    parser.add_argument("--growth-steps", type=int, default=0, help="steps over which to watch memory growth")
    parser.add_argument("--profile", default=None, help="trace 3 project steps per generator into this folder "
                        "(TensorBoard profile) and print the time per op type")
    parser.add_argument("--real", default=None, help="a pix2pix folder to time the input pipeline on")
    parser.add_argument("--json", default=None, help="also write the figures here")
    g = parser.add_argument_group("cost model (--plan) and GPU check (--gpu-check)")
    g.add_argument("--plan", action="store_true", help="the cost model per trial and per sweep on GPUs "
                   "(cluster/costs.py), from the nets' FLOPs and this machine's measured host costs")
    g.add_argument("--devices", default="A100,H100", help=f"with --plan: GPUs from {', '.join(costs.DEVICES)}")
    g.add_argument("--efficiency", type=float, default=costs.BATCH1_EFFICIENCY,
                   help="with --plan: share of the dense rate a batch-1 step sustains (default %(default)s)")
    g.add_argument("--measured-ms", default=None, metavar="GEN=MS,...",
                   help="with --plan: a lent GPU's measured ms per step (from --gpu-check) instead of the FLOP estimate")
    g.add_argument("--trials", type=int, default=1000, help="with --plan: trials in the sweep (default 1000)")
    g.add_argument("--nodes", type=int, default=64, help="with --plan: nodes (default 64)")
    g.add_argument("--gpus-per-node", type=int, default=8, help="with --plan: GPUs per node (default 8)")
    g.add_argument("--per-gpu", type=int, default=2, help="with --plan: trials packed per GPU (default 2)")
    g.add_argument("--cores", type=int, default=4, help="with --plan: CPU cores per trial for the metrics (default 4)")
    g.add_argument("--write-gbps", type=float, default=1.0, help="with --plan: checkpoint write GB/s per trial")
    g.add_argument("--gpu-check", action="store_true", help="on one GPU, within 8 minutes: ms per step of every "
                   "generator in float32 and mixed precision, with and without XLA; the evaluation with and without "
                   "overlap; two trials packed on the device; peak memory; the cost model's prediction beside each")
    g.add_argument("--gpu-check-child", default=None, help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args()
    # Every other config field by its dotted name, as in every job (the textbook step takes size and batch
    # only: it is the reference, not the project).
    args.overrides = parse_overrides(extra)
    args.gens = generator_list(args.gens)
    for g in args.gens:  # bad flags fail here, in one line, before anything is measured
        make_config(args.preset, {"model.generator": g, "data.image_size": args.size, "train.batch_size": args.batch,
                                  "train.precision": args.precision, "model.batchnorm": args.batchnorm,
                                  **args.overrides})
    if args.growth_steps and args.growth_steps < 4:
        raise UserError(f"--growth-steps: {args.growth_steps} is fewer than the 4 quarters it is sampled at")
    return args


def main() -> int:
    args = parse_args()
    if args.gpu_check_child:
        return gpu_check_child(json.loads(args.gpu_check_child))
    if args.plan:
        return plan_main(args)
    if args.gpu_check:
        return gpu_check_main(args)
    from gan import profiling
    roof = profiling.attainable_gflops()
    print(f"attainable on this machine: matmul {roof['matmul_gflops']:.1f} GFLOP/s, "
          f"conv {roof['conv_gflops']:.1f} GFLOP/s", flush=True)
    results = []
    for g in args.gens:
        r = bench_generator(g, args)
        r["share_of_attainable"] = r["gflops"] / roof["attainable_gflops"]
        results.append(r)
        print(f"{g}: end-to-end {r['end_to_end_ms']:.1f} ms/step, textbook {r['textbook_plain_ms']:.1f} "
              f"(system malloc) / {r['textbook_fast_ms']:.1f} (caching allocator), eval {r['eval_seconds']:.1f} s",
              flush=True)
    fastest = max(1000 / r["step_ms_median"] for r in results)
    pipelines = [bench_pipeline("synthetic", args, fastest)]
    if args.real:
        pipelines.append(bench_pipeline(args.real, args, fastest))
    print_step_table(results, args)
    print_pipeline_and_memory(results, pipelines, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"roof": roof, "generators": results, "pipelines": pipelines, "peak_rss_mb": peak_rss_mb()},
                      f, indent=2)
    return 0


# -- the cost model (--plan) ------------------------------------------------------------------------

def net_figures(name: str, size: int, preset: str, overrides: dict) -> dict:
    """FLOPs of a training step and of one generated image, and the checkpoint bytes, at `size`."""
    from gan import profiling
    from gan.step import build_models
    cfg = make_config(preset, {"model.generator": name, "data.image_size": size, **overrides})
    generator, discriminator, _, _ = build_models(cfg)
    g, d = generator.count_params(), discriminator.count_params()
    return {"step_gflop": profiling.train_step_flops(generator, discriminator) / 1e9,
            "infer_gflop": profiling.model_flops(generator) / 1e9,
            "checkpoint_bytes": int(4 * 3 * (g + d)), "best_bytes": int(4 * g), "parameters": int(g)}


def host_overhead(name: str, attainable_gflops: float, steps: int = 30) -> dict:
    """The project's step at a near-zero-FLOP size (the tiny preset: 32 px, 8 filters), one step per call and
    ten: its ms are nearly all host (a tf.function call, the strategy, Python between steps)."""
    import numpy as np
    import tensorflow as tf

    from gan import profiling
    from gan.devices import make_strategy
    from gan.step import build_models, make_train_step
    cfg = make_config("tiny", {"model.generator": name})
    strategy = make_strategy("auto")
    with strategy.scope():
        generator, discriminator, opt_g, opt_d = build_models(cfg)
    step = make_train_step(cfg, strategy, generator, discriminator, opt_g, opt_d)
    rng = np.random.default_rng(0)
    x, y = (tf.constant(rng.uniform(-1, 1, (1, 32, 32, 3)).astype("float32")) for _ in range(2))
    iterator = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((x, y)).repeat()))
    one = lambda: float(step(iterator)["gen_total"])  # noqa: E731
    ten = lambda: float(step.many(iterator, tf.constant(10))["gen_total"])  # noqa: E731
    for fn in (one, ten, one, ten):  # trace and warm up both
        fn()
    ms_one = 1000 * median(timed_steps(one, steps))
    ms_ten = 1000 * median(timed_steps(ten, max(3, steps // 10))) / 10
    # one = call + graph, ten = call / 10 + graph: the call's own part, and the graph's beyond its FLOPs.
    call = max(0.0, (ms_one - ms_ten) * 10 / 9)
    flops_ms = profiling.train_step_flops(generator, discriminator) / (attainable_gflops * 1e9) * 1000
    return {"ms_per_step_at_1_per_call": ms_one, "ms_per_step_at_10_per_call": ms_ten, "host_ms_per_call": call,
            "host_ms_per_step": max(0.0, ms_one - call - flops_ms), "tiny_flops_ms": flops_ms}


def metric_ms_per_image(size: int, images: int = 8) -> float:
    """The four metrics of one generated-like image at `size` on one core (synthetic street scenes scored
    against their neighbours: as many ORB features as photos give)."""
    from gan.datasets.loader import load_dataset
    from gan.evaluators.metrics import MetricPool
    cfg = make_config("small", {"data.image_size": size, "data.n_val": images})
    photos = load_dataset(cfg).val.targets[:images]
    import numpy as np
    with MetricPool(1) as pool:
        pool(photos[:1], photos[:1])
        t0 = time.perf_counter()
        pool(np.roll(photos, 1, axis=0), photos)
    return 1000 * (time.perf_counter() - t0) / len(photos)


def plan_main(args) -> int:
    devices = [d for d in args.devices.split(",") if d]
    unknown = [d for d in devices if d not in costs.DEVICES]
    if unknown:
        raise UserError(f"--devices: {unknown[0]} is not in the table (choose from {', '.join(costs.DEVICES)})")
    measured = {}
    for item in (args.measured_ms or "").split(","):
        if item:
            gen, _, ms = item.partition("=")
            try:
                measured[gen] = float(ms)
            except ValueError:
                raise UserError(f"--measured-ms {item}: not GEN=MS") from None
    cfg = make_config(args.preset, args.overrides)
    from gan import profiling
    per_image = metric_ms_per_image(args.size)
    attainable = profiling.attainable_gflops()["attainable_gflops"]
    rows, sweeps = [], []
    for g in args.gens:
        nets, host = net_figures(g, args.size, args.preset, args.overrides), host_overhead(g, attainable)
        hc = costs.HostCosts(host["host_ms_per_call"], per_image, args.cores, args.write_gbps, host["host_ms_per_step"])
        print(f"{g}: {nets['step_gflop']:.0f} GFLOP per step at {args.size} px; host overhead here: the step at a "
              f"near-zero-FLOP size {host['ms_per_step_at_1_per_call']:.2f} ms at 1 step per call, "
              f"{host['ms_per_step_at_10_per_call']:.2f} ms at 10 (a call's own {host['host_ms_per_call']:.2f} ms, the "
              f"graph's {host['host_ms_per_step']:.2f} ms per step beyond its FLOPs); metrics {per_image:.0f} ms per "
              "image", flush=True)
        for device in devices:
            for precision in ("float32", "mixed_bfloat16"):
                plan = costs.TrialPlan(g, args.size, device, precision, nets["step_gflop"], nets["infer_gflop"],
                                       nets["checkpoint_bytes"], nets["best_bytes"], steps=cfg.train.steps,
                                       eval_every=cfg.train.eval_every,
                                       eval_images=cfg.data.n_val + cfg.eval.train_subset,
                                       checkpoint_minutes=cfg.train.checkpoint_minutes,
                                       steps_per_call=cfg.train.steps_per_call, overlap=cfg.eval.overlap != "off",
                                       efficiency=args.efficiency, measured_ms=measured.get(g))
                figures = plan.predict(hc)
                rows.append({**costs.as_dict(plan), **host, "metric_ms_per_image": per_image, **figures})
                sweeps.append({"generator": g, "device": device, "precision": precision,
                               **costs.sweep(figures, args.trials, args.nodes, args.gpus_per_node, args.per_gpu,
                                             cfg.train.checkpoints_to_keep)})
    print(f"\ncost model per trial ({cfg.train.steps:,} steps, evaluation every {cfg.train.eval_every:,} on "
          f"{cfg.data.n_val + cfg.eval.train_subset} images, checkpoints every {cfg.train.checkpoint_minutes:g} min, "
          f"{cfg.train.steps_per_call} step(s) per call, overlap {cfg.eval.overlap}; batch-1 efficiency "
          f"{args.efficiency:g} of the dense rate{', measured steps: ' + args.measured_ms if measured else ''}; "
          f"metrics on {args.cores} cores; float32 runs at the TF32 rate)\n")
    print("| generator | device | precision | GFLOP/step | ms/step (host) | eval s blocking (metrics s) "
          "| checkpoint GB | ckpt MB/s | trial h | GPU busy |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['generator']} | {r['device']} | {r['precision']} | {r['step_gflop']:.0f} "
              f"| {r['step_ms']:.1f} ({r['host_ms']:.1f}) | {r['eval_blocking_s']:.1f} ({r['eval_metrics_s']:.1f}) "
              f"| {r['checkpoint_gb']:.2f} | {r['checkpoint_mb_per_s']:.2f} | {r['wall_s'] / 3600:.2f} "
              f"| {100 * r['gpu_busy']:.0f} % |")
    print(f"\nsweep: {args.trials} trials of one generator on {args.nodes} nodes x {args.gpus_per_node} GPUs, "
          f"{args.per_gpu} per GPU\n")
    print("| generator | device | precision | waves | wall h | GPU h | writes MB/s | disk peak GB | head reports/s |"
          "\n|---|---|---|---|---|---|---|---|---|")
    for w in sweeps:
        print(f"| {w['generator']} | {w['device']} | {w['precision']} | {w['waves']} | {w['wall_h']:.2f} "
              f"| {w['gpu_h']:.0f} | {w['write_mb_per_s']:.0f} | {w['disk_peak_gb']:.0f} | {w['head_reports_per_s']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"trials": rows, "sweeps": sweeps}, f, indent=2)
    return 0


# -- the GPU check (--gpu-check) -----------------------------------------------------------------------

GPU_CHECK_BUDGET_S = 7 * 60  # the check stops starting new measurements past this: it fits 8 minutes


def gpu_check_child(job: dict) -> int:
    """One measurement in its own process (precision and XLA are process-wide): ms per step, peak memory,
    and with `eval` the evaluation's blocking seconds with and without overlap."""
    import numpy as np
    import tensorflow as tf

    from gan.devices import make_strategy
    from gan.step import build_models, make_train_step
    cfg = make_config(job["preset"], {"model.generator": job["generator"], "data.image_size": job["size"],
                                      "train.precision": job["precision"], "train.jit_compile": job["xla"],
                                      "data.n_val": job["eval_images"], "eval.train_subset": job["eval_images"]})
    strategy = make_strategy("auto")
    with strategy.scope():
        generator, discriminator, opt_g, opt_d = build_models(cfg)
    step = make_train_step(cfg, strategy, generator, discriminator, opt_g, opt_d)
    rng = np.random.default_rng(0)
    x, y = (tf.constant(rng.uniform(-1, 1, (1, job["size"], job["size"], 3)).astype("float32")) for _ in range(2))
    iterator = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((x, y)).repeat()))
    run = lambda: float(step(iterator)["gen_total"])  # noqa: E731
    for _ in range(3):
        run()
    ms = 1000 * median(timed_steps(run, job["steps"]))
    out = {"ms_per_step": ms, "steps": job["steps"]}
    gpus = tf.config.list_physical_devices("GPU")
    if job.get("eval"):
        from gan.datasets.loader import load_dataset
        from gan.evaluators import evaluation
        from gan.evaluators.metrics import MetricPool
        from gan.rundir import RunDir
        data = load_dataset(cfg)
        with MetricPool(job.get("workers", 0)) as pool, tempfile.TemporaryDirectory() as tmp:
            evaluator = evaluation.Evaluator(cfg, data, pool)
            run_dir = RunDir(tmp)
            run_dir.samples.mkdir()
            evaluator.evaluate(generator.get_weights(), 0, run_dir)  # traces, starts the workers
            for overlap in (False, True):
                (Path(tmp) / "metrics.csv").unlink(missing_ok=True)
                t0 = time.perf_counter()
                pending = evaluator.start(generator.get_weights(), 1, run_dir, overlap=overlap)
                if not overlap:
                    evaluator.finish(pending, run_dir)
                out[f"eval_blocking_s_{'overlap' if overlap else 'sync'}"] = time.perf_counter() - t0
                if overlap:
                    evaluator.finish(pending, run_dir)
                    out["eval_total_s_overlap"] = time.perf_counter() - t0
    out["peak_memory_mb"] = (tf.config.experimental.get_memory_info("GPU:0")["peak"] / 1e6 if gpus
                             else peak_rss_mb())
    out["device"] = (tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "cpu")
    if job.get("nets"):  # after the peak is read: the counted nets are not the measured ones
        out["nets"] = net_figures(job["generator"], job["size"], job["preset"], job.get("overrides", {}))
    print("GPU-CHECK " + json.dumps(out), flush=True)
    return 0


def _child(job: dict) -> subprocess.Popen:
    env = {**os.environ, "TF_FORCE_GPU_ALLOW_GROWTH": "true"}  # two packed trials each grow, as under Tune
    return subprocess.Popen([sys.executable, __file__, "--gpu-check-child", json.dumps(job)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _result(proc: subprocess.Popen, timeout: float) -> dict:
    try:
        out, err = proc.communicate(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        proc.kill()
        return {"error": "ran past the check's budget"}
    lines = [line for line in out.splitlines() if line.startswith("GPU-CHECK ")]
    if proc.returncode or not lines:
        return {"error": (err.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:300]}
    return json.loads(lines[-1][len("GPU-CHECK "):])


def gpu_check_main(args) -> int:
    """Every figure of the check, each in its own process, within GPU_CHECK_BUDGET_S; Markdown and --json.

    This process never imports TensorFlow: on a GPU it would reserve the device's memory for itself (no
    memory growth) and leave the measured processes the rest. The first row of each generator (float32,
    no XLA) also counts its nets' FLOPs and names the device, which picks the mixed precision to measure."""
    started, rows, skipped = time.monotonic(), [], []
    base = {"preset": args.preset, "size": args.size, "steps": args.steps, "eval_images": args.eval_images}
    device, nets_of = None, {}
    for g in args.gens:
        for kind in ("float32", "mixed"):
            for xla in (False, True):
                left = GPU_CHECK_BUDGET_S - (time.monotonic() - started)
                if left < 20:
                    skipped.append(f"{g} {kind} xla={xla}")
                    continue
                if kind == "mixed" and device is None:
                    rows.append({"generator": g, "precision": kind, "xla": xla,
                                 "error": "no float32 row finished to name the device"})
                    continue
                precision = kind if kind == "float32" else "mixed_bfloat16" if device == "cpu" else "mixed_float16"
                first = kind == "float32" and not xla
                r = _result(_child({**base, "generator": g, "precision": precision, "xla": xla, "eval": first,
                                    "nets": first, "overrides": args.overrides}), left)
                device = device or r.get("device")
                if "nets" in r:
                    nets_of[g] = r.pop("nets")
                rows.append({"generator": g, "precision": precision, "xla": xla, **r})
    device = device or "unknown (no row finished)"
    table = next((name for name in costs.DEVICES if name in device), None)
    for r in rows:
        nets = nets_of.get(r["generator"])
        r["step_gflop"] = nets["step_gflop"] if nets else None
        r["predicted_ms"] = (costs.TrialPlan(r["generator"], args.size, table, r["precision"], nets["step_gflop"],
                                             nets["infer_gflop"], nets["checkpoint_bytes"])
                             .predict(costs.HostCosts(0.0, 0.0, 1))["device_ms"] if table and nets else None)
    packed = {}
    left = GPU_CHECK_BUDGET_S - (time.monotonic() - started)
    if left > 30:  # two trials sharing the device, as --gpus-per-trial 0.5 packs them
        pair = [_child({**base, "generator": args.gens[0], "precision": "float32", "xla": False}) for _ in range(2)]
        packed = {"generator": args.gens[0], "trials": [_result(p, left) for p in pair]}
        alone = next((r for r in rows if r["generator"] == args.gens[0] and r["precision"] == "float32"
                      and not r["xla"] and "ms_per_step" in r), None)
        packed["alone_ms_per_step"] = alone["ms_per_step"] if alone else None
    else:
        skipped.append("two packed trials")
    print(f"\nGPU check on {device} ({platform.node()}), {args.size} px, batch 1, median of {args.steps} steps; "
          f"cost model row: {table or 'none (device not in cluster/costs.py DEVICES)'}, batch-1 efficiency "
          f"{costs.BATCH1_EFFICIENCY}\n")
    print("| generator | precision | XLA | ms/step | predicted ms | peak memory MB | eval s sync | eval s blocking "
          "with overlap |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['generator']} | {r['precision']} | {r['xla']} | failed: {r['error']} | | | | |")
            continue
        pred = f"{r['predicted_ms']:.1f}" if r["predicted_ms"] is not None else "-"
        sync = f"{r['eval_blocking_s_sync']:.2f}" if "eval_blocking_s_sync" in r else ""
        over = f"{r['eval_blocking_s_overlap']:.2f}" if "eval_blocking_s_overlap" in r else ""
        print(f"| {r['generator']} | {r['precision']} | {r['xla']} | {r['ms_per_step']:.1f} | {pred} "
              f"| {r['peak_memory_mb']:.0f} | {sync} | {over} |")
    if packed:
        both = all("ms_per_step" in t for t in packed["trials"])
        print(f"\ntwo {packed['generator']} trials packed on one device: "
              + ("both finished; " + ", ".join(f"{t['ms_per_step']:.1f} ms/step, {t['peak_memory_mb']:.0f} MB"
                                               for t in packed["trials"])
                 + (f" (alone: {packed['alone_ms_per_step']:.1f} ms/step)" if packed["alone_ms_per_step"] else "")
                 if both else "failed: " + "; ".join(t.get("error", "ok") for t in packed["trials"])))
    if skipped:
        print(f"\nnot measured (past the {GPU_CHECK_BUDGET_S} s budget): {', '.join(skipped)}")
    print(f"\nchecked in {time.monotonic() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "size": args.size, "rows": rows, "packed": packed, "skipped": skipped,
                       "seconds": time.monotonic() - started}, f, indent=2)
    failed = [r for r in rows if "error" in r] + [t for t in packed.get("trials", []) if "error" in t]
    return 1 if failed else 0


# -- Markdown ---------------------------------------------------------------------------------------

def print_step_table(results: list[dict], args) -> None:
    print(f"\nbench on {platform.node()} ({platform.machine()}), {args.size}px, batch {args.batch}"
          f"{', XLA' if args.jit else ''}; project step: {results[0]['precision']}, batchnorm "
          f"{results[0]['batchnorm']}; median of {args.steps} steps after {args.warmup} warm-up\n")
    print("Each step figure in its own process (alternating rounds): the textbook step as a plain script on the "
          "system's malloc and on the caching allocator, and the project's end-to-end jobs/train.py "
          "(steady-state intervals of timings.csv); kernel = system CPU ms per step.\n")
    print("| generator | params | GFLOP/step | end-to-end ms (kernel) | textbook ms, system malloc (kernel) "
          "| textbook ms, allocator (kernel) | ratio to plain textbook (rounds) | ratio to textbook on allocator "
          "| kernel share | GFLOP/s (of attainable) | in-bench step ms (p50 / p90) | inference ms/img "
          "| eval s | eval share of 1k steps |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['generator']} | {r['parameters']:,} | {r['step_gflop']:.1f} "
              f"| {r['end_to_end_ms']:.0f} ({r['end_to_end_system_ms']:.0f}) "
              f"| {r['textbook_plain_ms']:.0f} ({r['textbook_plain_system_ms']:.0f}) "
              f"| {r['textbook_fast_ms']:.0f} ({r['textbook_fast_system_ms']:.0f}) "
              f"| {r['ratio_to_textbook_plain']:.2f} ({min(r['ratio_to_textbook_plain_by_round']):.2f}-"
              f"{max(r['ratio_to_textbook_plain_by_round']):.2f}) | {r['ratio_to_textbook_fast']:.2f} "
              f"| {100 * r['kernel_share']:.1f} % "
              f"| {r['gflops']:.1f} ({100 * r['share_of_attainable']:.0f} %) "
              f"| {r['step_ms_median']:.0f} / {r['step_ms_p90']:.0f} | {r['inference_ms_per_image']:.1f} "
              f"| {r['eval_seconds']:.1f} ({r['eval_images']} img) | {100 * r['eval_share_of_interval']:.1f} % |")
    print("\nallocators: " + "; ".join(f"{k}: {v}" for k, v in results[0]["allocators"].items()))


def print_pipeline_and_memory(results: list[dict], pipelines: list[dict], args) -> None:
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


if __name__ == "__main__":
    run_main(main)
