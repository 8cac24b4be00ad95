"""Use a trained run: evaluate a checkpoint on a split, translate label maps, export a SavedModel.

    python jobs/evaluate.py runs/default/unet --split test            # metrics, mean (std)
    python jobs/evaluate.py runs/default/unet --translate labels/ --to photos/
    python jobs/evaluate.py runs/default/unet --export exported/unet   # SavedModel, uint8 in/out
    python jobs/evaluate.py runs/default/unet --rejudge runs/judge/segmenter  # the test under another segmenter

By default the model the run's test was scored with (for `eval.select
best_val_<metric>` the kept best checkpoint, else the newest); `--step N`
picks another (the run's own or the best), `--last` the newest. Evaluation writes
`eval_<split>_step<N>.csv` (per image) into the run directory. Photos are
made as during training's evaluations (dropout on, with the run's one fixed
mask), so the same label map always gives the same photo, here, in the run's
own rows and from the exported model. `--translate` never writes into its
input folder, nor over existing files without `--overwrite`. `--rejudge`
scores a finished run's test again with another segmenter (its FCN-score
and segmenter FID) without retraining: the image metrics must come out
identical, and the previous record is kept in `rejudged/<segmenter id>/`.
"""

import argparse
from pathlib import Path

from gan.cli import run_main
from gan.errors import UserError


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run directory (holds config.json and checkpoints/)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the one the run's test "
                        "was scored with: the best for eval.select best_val_*, else the newest)")
    parser.add_argument("--last", action="store_true", help="the newest checkpoint, whatever the run selected")
    parser.add_argument("--split", choices=["train", "val", "test"], help="evaluate on this split")
    parser.add_argument("--data", default=None, help="dataset to evaluate on (default: the run's own)")
    parser.add_argument("--translate", type=Path, help="folder of label-map images to turn into photos")
    parser.add_argument("--to", type=Path, help="output folder for --translate (not the input folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace same-named files in --to, or a previous --export")
    parser.add_argument("--export", type=Path, help="write a SavedModel here")
    parser.add_argument("--rejudge", type=Path, metavar="SEGMENTER", help="score the finished run's test again "
                        "with this segmenter (a jobs/train_segmenter.py run); the old record is kept")
    parser.add_argument("--eval.workers", "--workers", dest="workers", type=int, default=0,
                        help="metric worker processes (0: one per core)")
    args = parser.parse_args()
    if not (args.split or args.translate or args.export or args.rejudge):
        raise UserError("nothing to do: give --split, --translate, --export or --rejudge")
    if args.rejudge and (args.split or args.translate or args.export or args.step is not None or args.last or args.data):
        raise UserError("--rejudge: alone (it scores the checkpoint and data the run's test was scored with)")
    if args.data and not args.split:
        raise UserError("--data: the dataset of --split (give --split train, val or test)")
    if args.data and args.data != "synthetic":  # a missing folder is refused before TensorFlow starts
        from gan.datasets.fetch import dataset_folder
        dataset_folder(args.data)
    if args.step is not None and args.step < 0:
        raise UserError(f"--step: a checkpoint's step is >= 0, got {args.step}")
    args.files = label_maps_to_translate(args) if args.translate else []
    if args.export and args.export.exists() and not (args.export.is_dir() and not any(args.export.iterdir())):
        if not args.export.is_dir():
            raise UserError(f"--export {args.export}: exists and is not a folder")
        if not args.overwrite:
            raise UserError(f"--export {args.export}: holds files already (a previous export?); pass --overwrite to "
                            "replace it, or choose another folder")
    if args.export:  # under a file: refused before TensorFlow starts, as the checks above
        above = next((p for p in args.export.absolute().parents if p.exists()), None)
        if above is not None and not above.is_dir():
            raise UserError(f"--export {args.export}: cannot write the SavedModel ({above} is a file, not a folder)")
    return args


def label_maps_to_translate(args) -> list[Path]:
    """The images of --translate, refused before TensorFlow starts (a refusal costs nothing) when the output
    would land in the input folder or over existing photos without --overwrite."""
    if not args.to:
        raise UserError("--translate: needs --to OUTPUT_FOLDER")
    if not args.translate.is_dir():
        raise UserError(f"--translate {args.translate}: no such folder")
    if args.to.resolve() == args.translate.resolve():
        raise UserError(f"--to {args.to}: is the --translate folder; the photos would replace the label maps "
                        "(choose another --to)")
    from gan.datasets.loader import IMAGE_SUFFIXES
    files = sorted(p for p in args.translate.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"--translate {args.translate}: no images")
    stems: dict[str, list[str]] = {}
    for p in files:
        stems.setdefault(p.stem, []).append(p.name)
    clash = next((names for names in stems.values() if len(names) > 1), None)
    if clash:
        raise UserError(f"--translate {args.translate}: {' and '.join(clash)} would both become {Path(clash[0]).stem}.png; "
                        "rename one, or translate them from separate folders")
    existing = [args.to / f"{p.stem}.png" for p in files if (args.to / f"{p.stem}.png").exists()]
    if existing and not args.overwrite:
        raise UserError(f"--to {args.to}: {len(existing)} of the photos exist already (e.g. {existing[0].name}); "
                        "pass --overwrite to replace them, or choose another --to")
    return files


def main() -> int:
    args = parse_args()
    if args.rejudge:
        from gan.evaluators.evaluation import rejudge
        summary = rejudge(args.run, args.rejudge, workers=args.workers)
        print("  ".join(f"{k} {v['mean']:.4f}" for k, v in summary["test"].items() if k.startswith("fcn_")))
        return 0
    from gan import inference
    cfg, generator, step = inference.restore_generator(args.run, args.step, last=args.last)
    if args.split:
        evaluate_split(args, cfg, generator, step)
    if args.translate:
        translate(args.files, args.to, generator, cfg.data.image_size)
    if args.export:
        inference.export_saved_model(generator, cfg.data.image_size, args.export, replace=args.overwrite)
        size = cfg.data.image_size
        print(f"SavedModel (uint8 labels [N,{size},{size},3] -> uint8 photos) in {args.export}")
    return 0


def evaluate_split(args, cfg, generator, step: int) -> None:
    """Per-image metrics of one split into eval_<split>_step<N>.csv, and their mean (std)."""
    from gan.contract import EVAL_CSV
    from gan.evaluators import evaluation
    from gan.datasets.loader import load_dataset
    from gan.files import write_csv
    from gan.evaluators.metrics import MetricPool, metric_names
    if args.data:
        cfg.data.source = args.data
    split = getattr(load_dataset(cfg), args.split)
    with MetricPool(args.workers) as pool:
        rows = pool(generator(split.inputs), split.targets)
    out = Path(args.run) / EVAL_CSV.format(split=args.split, step=step)
    write_csv(out, ["image", *metric_names()], [{"image": i, **r} for i, r in zip(split.ids, rows)])
    print(f"{args.run} step {step}, {args.split} ({len(rows)} images):")
    for name, s in evaluation.summarise(rows).items():
        print(f"  {name:15s} {s['mean']:.4f} ({s['std']:.4f})")
    print(f"per-image metrics: {out}")


def translate(files: list[Path], to: Path, generator, size: int) -> None:
    import cv2

    from gan import inference
    from gan.datasets.loader import read_image
    # Every input is read before anything is written: a bad file leaves no partial output folder.
    labels = [cv2.resize(read_image(str(path)), (size, size), interpolation=cv2.INTER_NEAREST) for path in files]
    from gan.errors import raise_for_write
    from gan.lease import remove_empty
    created = [p for p in (to, *to.parents) if not p.exists()]
    try:
        to.mkdir(parents=True, exist_ok=True)
        for path, label in zip(files, labels):
            inference.write_png(to / f"{path.stem}.png", generator(label[None])[0])
    except OSError as e:
        remove_empty(created)  # a disk full before the first photo leaves no empty --to behind
        raise_for_write(e, f"--to {to}: cannot write the photos")
    print(f"translated {len(files)} label maps into {to}")


if __name__ == "__main__":
    run_main(main)
