"""Train the Cityscapes segmenter that judges generated photos (the pix2pix paper's FCN-score).

    python jobs/train_segmenter.py --data cityscapes                                 # real photos
    python jobs/train_segmenter.py --data /data/cityscapes --data.image_size 256 --train.epochs 60
    python jobs/train_segmenter.py --preset tiny                                     # seconds, for tests

Then give it to training or evaluation: `--eval.segmenter runs/segmenter/segmenter`.
The trainer's rules: any field of the segmenter's config by its dotted name
(gan/config.py SegmenterConfig); rerunning the same command resumes after the
last finished epoch; a folder holding another segmenter is refused unless
--overwrite (moved aside); one process per run directory. Exit codes: 0
finished, 2 bad input, 74 disk full, 75 interrupted (rerun to resume).
"""

import argparse

from gan.cli import add_common_flags, config_from_args, interrupt_on_term, run_main


def main() -> int:
    from gan.segmenter_config import SEGMENTER_PRESETS, make_segmenter_config
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(parser, SEGMENTER_PRESETS, default_preset="default")
    parser.add_argument("--run-name", default=None, help="run folder name (default: segmenter)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a different segmenter in the same folder (the old one is moved aside)")
    args, extra = parser.parse_known_args()
    fixed = {"run_name": args.run_name} if args.run_name else {}
    cfg = config_from_args(args, extra, make=make_segmenter_config, **fixed)
    interrupt_on_term()  # scancel / kill: finish as Ctrl-C does, status preempted, exit 75

    from gan.rundir import RunDir
    from gan.files import read_json
    from gan.evaluators.segmenter import train_segmenter
    code = train_segmenter(cfg, args.out, overwrite=args.overwrite)
    if code == 0:
        from gan.contract import run_path
        summary = read_json(RunDir(run_path(args.out, cfg.experiment, cfg.run_name)).summary)
        s = summary["val_real_photos"]
        print(f"segmenter on {summary['val_images']} real validation photos: pixel acc {s['pixel_acc']:.3f}, "
              f"class acc {s['class_acc']:.3f}, mIoU {s['iou']:.3f} ({summary['train_seconds']:.0f} s training)")
    return code


if __name__ == "__main__":
    run_main(main)
