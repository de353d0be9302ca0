"""`dked-tf convert`: a dataset from one format into another (HRSC2016, DOTA, YOLO-OBB), split
names, image ids, classes and (where the format has them) difficult flags kept; the layouts are
those of `dked_tf.data.convert`.

    dked-tf convert --from hrsc --to yolo-obb data/hrsc data/hrsc_yolo
    dked-tf convert --from yolo-obb --to dota data/hrsc_yolo data/hrsc_dota
"""

from dked_tf.data.convert import FORMATS, convert_dataset
from dked_tf.data.yolo_obb import CLIP_CHOICES, DIFFICULT_CHOICES

DESCRIPTION = (
    "Convert a dataset between HRSC2016 (FullDataSet/{AllImages,Annotations} + ImageSets/<split>.txt), "
    "DOTA (<split>/images/ + <split>/labelTxt/) and YOLO-OBB (Ultralytics: images/<split>/, "
    "labels/<split>/, data.yaml). Split names, image ids, classes and difficult flags (where the "
    "format has one) are kept; images are hard-linked, or copied when linking fails."
)


def add_arguments(parser):
    parser.add_argument("--from", dest="src_format", choices=FORMATS, required=True, help="format of SRC")
    parser.add_argument("--to", dest="dst_format", choices=FORMATS, required=True, help="format to write in DST")
    parser.add_argument("src", metavar="SRC", help="the dataset folder to read")
    parser.add_argument("dst", metavar="DST", help="the folder to write (created; files of the same names replaced)")
    parser.add_argument(
        "--classes",
        default=None,
        help="class list of a DOTA source: dota1.0, dota1.5, dota2.0 or a comma-separated list "
        "(default: SRC/classes.txt, else dota1.0)",
    )
    parser.add_argument(
        "--hrsc-classes", choices=("ship", "31"), default="ship", help="task of an HRSC2016 source: one class or 31"
    )
    parser.add_argument(
        "--difficult",
        choices=DIFFICULT_CHOICES,
        default="keep",
        help="YOLO-OBB has no difficult flag: write difficult objects as ordinary ones (keep) or leave them out",
    )
    parser.add_argument(
        "--clip",
        choices=CLIP_CHOICES,
        default="auto",
        help="YOLO-OBB corners outside the image: clip only objects Ultralytics would reject (auto), all, or none",
    )
    parser.add_argument("--copy", action="store_true", help="copy the images instead of hard-linking them")


def run(args):
    """Converts and prints one line per split. Bad input -> one line and exit code 2 (cli.py)."""
    summary = convert_dataset(
        args.src_format,
        args.dst_format,
        args.src,
        args.dst,
        classes=args.classes,
        hrsc_classes=args.hrsc_classes,
        link=not args.copy,
        difficult=args.difficult,
        clip=args.clip,
    )
    for split, counts in summary["splits"].items():
        details = [f"{counts['images']} images", f"{counts['objects']} objects"]
        if counts.get("reshaped"):
            details.append(f"{counts['reshaped']} polygons written as their minimum-area rectangles")
        if counts.get("clipped"):
            details.append(f"{counts['clipped']} clipped to the image")
        if counts.get("copied"):
            details.append(f"{counts['copied']} images copied (not linked)")
        print(f"{split}: " + ", ".join(details))
    difficult = summary["difficult"]
    if args.dst_format == "yolo-obb":
        kept = args.difficult == "keep"
        print(
            f"YOLO-OBB has no difficult flag: {difficult} difficult objects "
            + ("kept as ordinary objects" if kept else "dropped")
        )
    else:
        print(f"{difficult} difficult objects kept with their flag")
    print(f"{', '.join(summary['class_names'])} -> {summary['dst']} ({args.dst_format})")
    return 0
