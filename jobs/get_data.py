"""Get real Cityscapes: download the pix2pix authors' archive, or prepare the official release.

    python jobs/get_data.py download cityscapes                       # ~100 MB, resumable
    python jobs/get_data.py download cityscapes --sha256 <hex>        # refuse any other archive
    python jobs/get_data.py prepare --gtfine gtFine_trainvaltest.zip --leftimg leftImg8bit_trainvaltest.zip
    python jobs/train.py --data cityscapes ...                        # then use it by name

The data root is --root, else $PIX2PIX_DATA, else ~/.cache/pix2pix-suite/datasets;
on a cluster point it at storage every node sees. Each dataset gets a
manifest.json (source, archive SHA-256, counts, content fingerprint) that
every run records. Cityscapes' terms allow research use and no
redistribution: the official release needs a login at cityscapes-dataset.com.
"""

import argparse

from gan.cli import interrupt_on_term, run_main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    down = commands.add_parser("download", help="the public pix2pix archive")
    down.add_argument("name", help="cityscapes")
    down.add_argument("--sha256", default=None, help="pin the archive: refuse any other")
    down.add_argument("--url", default=None, help="another mirror of the same archive")
    prep = commands.add_parser("prepare", help="the official release (gtFine + leftImg8bit) -> pix2pix layout")
    prep.add_argument("--gtfine", required=True, help="gtFine_trainvaltest.zip or its extracted folder")
    prep.add_argument("--leftimg", required=True, help="leftImg8bit_trainvaltest.zip or its extracted folder")
    prep.add_argument("--name", default="cityscapes", help="dataset name under the root (default: cityscapes)")
    prep.add_argument("--data.image_size", "--size", dest="size", type=int, default=256,
                      help="square side of each half (default: 256)")
    prep.add_argument("--workers", type=int, default=0, help="worker processes (default: one per core)")
    for sub in (down, prep):
        sub.add_argument("--root", default=None, help="data root (default: $PIX2PIX_DATA or "
                         "~/.cache/pix2pix-suite/datasets)")
    args = parser.parse_args()
    interrupt_on_term()

    from gan.datasets import fetch
    if args.command == "download":
        folder = fetch.download(args.name, args.root, sha256=args.sha256, url=args.url)
    else:
        folder = fetch.prepare(args.gtfine, args.leftimg, args.root, name=args.name, size=args.size,
                               workers=args.workers)
    print(f"use it with: --data {folder.name}" + ("" if args.root is None else f" (with PIX2PIX_DATA={args.root})")
          + f"  or --data {folder}")
    return 0


if __name__ == "__main__":
    run_main(main)
