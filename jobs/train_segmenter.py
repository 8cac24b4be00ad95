"""Train the Cityscapes segmenter that judges generated photos (the pix2pix paper's FCN-score).

    python jobs/train_segmenter.py --data cityscapes                                # real photos
    python jobs/train_segmenter.py --data /data/cityscapes --image-size 256 --epochs 60
    python jobs/train_segmenter.py --preset tiny                                     # seconds, for tests

Then give it to training or evaluation: `--eval.segmenter runs/segmenter/segmenter`.
Rerunning resumes after the last finished epoch.
"""

import argparse

from gan.cli import run_main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="synthetic", help="dataset folder (pix2pix, cityscapes, paired-folders)")
    parser.add_argument("--data-format", default="auto")
    parser.add_argument("--preset", choices=["default", "tiny"], default="default")
    parser.add_argument("--out", default="runs")
    parser.add_argument("--name", default="segmenter")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: up to 40, fewer on large splits (about 12,000 training images in all)")
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args()
    from gan.segmenter import PRESETS, SegmenterConfig, train_segmenter
    cfg = SegmenterConfig(source=args.data, format=args.data_format, **PRESETS[args.preset])
    for key in ("image_size", "epochs", "batch_size"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    summary = train_segmenter(cfg, args.out, args.name)
    s = summary["val_real_photos"]
    print(f"segmenter on {summary['val_images']} real validation photos: pixel acc {s['pixel_acc']:.3f}, "
          f"class acc {s['class_acc']:.3f}, mIoU {s['iou']:.3f} ({summary['train_seconds']:.0f} s training)")
    return 0


if __name__ == "__main__":
    run_main(main)
