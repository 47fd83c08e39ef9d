"""Detect objects: python -m minissd.detect --checkpoint CKPT | --weights FILE [--prototxt F]
                  INPUT... [--out DIR] [--save-json FILE] [--save-txt DIR]
                  [--coco-ann FILE.json] [--threshold T] [--batch-size B]

INPUT: image files, folders (the images directly inside, sorted by name), globs ("photos/*.jpg",
"data/**/*.png"; quote them) and video files (.mp4, .avi, .mov, .mkv, .webm, ...; frames
decoded by ffmpeg through imageio: pip install imageio imageio-ffmpeg). Images go through the
network --batch-size at a time: run at the config's input size, decoded and NMS'd
(postprocess.detect), detections scoring at least --threshold kept.

What it writes:
  stdout            per image, "class score xmin ymin xmax ymax" in the image's pixels (short
                    inputs; long ones show a progress bar instead), then images per second
  --out DIR         each image drawn with its boxes, class names and scores, <stem>.png, at most
                    drawing.MAX_SIDE pixels on its longer side; each video as <stem>.mp4
  --save-json FILE  COCO's results format: [{"image_id", "category_id", "bbox": [x, y, w, h]
                    in pixels, "score"}, ...], what pycocotools' COCO.loadRes reads. With
                    --coco-ann, the image ids and category ids are that file's (each input
                    matched by its file_name, each class by its name); without it, image ids
                    count the images (and frames) from 1 in input order, category ids are the
                    labels 1..K, and FILE's "images" twin, <FILE stem>.images.json, lists
                    {"id", "file_name", "width", "height"} (and "frame") for them.
  --save-txt DIR    YOLO's format, one <stem>.txt per image (per frame: <stem>_<frame>.txt):
                    "class cx cy w h" normalised, class ids from 0 (--save-conf adds the score)

Nothing is overwritten: every file gets a name that did not exist (x.png taken: x_2.png), so
--out may be the photos' own folder and two inputs with the same stem keep both results;
--save-json refuses an existing file. A bad input (a missing file, an undecodable image or
frame, a folder or glob without images) is one line on stderr; the rest goes on, and the
count is printed at the end. Only when no input at all could be read does the command fail.

--weights takes a detector trained elsewhere as it is: torchvision's ssd300_vgg16 .pth (its
COCO file ssd300_vgg16_coco-b556d3b4.pth prints COCO's class names) or ssd.pytorch's SSD300,
read without torch (minissd/pretrained.py), with that library's preprocessing, default boxes
and post-processing. A Caffe SSD (--weights FILE.caffemodel, its deploy prototxt beside it
or given with --prototxt) and OpenCV's face detector (--weights opencv-face) are read without
Caffe (minissd/caffe/).
"""
from __future__ import annotations

import glob
import json
import os
import sys
import time

import numpy as np

from . import backend
from .cli import Parser, add_weights_flags, fail
from .data.folders import IMAGE_EXTENSIONS
from .data.voc import DataError, load_image
from .inference import CheckpointError, load_chosen, predict, priors_for

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
PROGRESS_FROM = 20           # inputs (images, or any video) from which a progress bar shows
VIDEO_HINT = "pip install imageio imageio-ffmpeg (or pip install -e \".[video]\")"


def build_parser():
    p = Parser("detect", description="Detect objects in images, folders, globs and videos; "
               "print them, draw them, and write COCO results JSON or YOLO txt files.")
    add_weights_flags(p)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders of images, globs (quoted) and video files")
    p.add_argument("--out", metavar="DIR", help="folder for the images (and videos) with the "
                   "boxes drawn (created if needed; existing files are never replaced)")
    p.add_argument("--save-json", metavar="FILE", help="write the detections in COCO's "
                   "results format (pycocotools' loadRes reads it)")
    p.add_argument("--coco-ann", metavar="FILE.json", help="with --save-json: take the image "
                   "ids and category ids of this COCO file (inputs matched by file_name)")
    p.add_argument("--save-txt", metavar="DIR", help="write one YOLO-format .txt per image")
    p.add_argument("--save-conf", action="store_true", help="--save-txt: add the score as a "
                   "sixth field")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="keep detections scoring at least this (default 0.5)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where to run the network")
    return p


# --- inputs --------------------------------------------------------------------------------

def expand_inputs(inputs, warn):
    """[(path, is_video)] of the command line's inputs, in order, each path once; warn(line)
    is told about each input that gives nothing (missing, empty folder, glob without match)."""
    found, seen = [], set()

    def add(path):
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            found.append((path, path.lower().endswith(VIDEO_EXTENSIONS)))

    for arg in inputs:
        if os.path.isdir(arg):
            names = sorted(n for n in os.listdir(arg)
                           if n.lower().endswith(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS))
            if not names:
                warn(f"{arg}: a folder with no images or videos in it; skipped")
            for n in names:
                add(os.path.join(arg, n))
        elif os.path.isfile(arg):
            add(arg)
        elif glob.has_magic(arg):
            matches = sorted(m for m in glob.glob(arg, recursive=True) if os.path.isfile(m))
            if not matches:
                warn(f"{arg}: no file matches this pattern; skipped")
            for m in matches:
                add(m)
        else:
            warn(f"{arg}: image not found; check the path")
    return found


class Frame:
    """One image to run: where it came from and its pixels (or the error reading it)."""

    def __init__(self, path, image, frame=None, error=None):
        self.path, self.image, self.frame, self.error = path, image, frame, error


def read_frames(inputs, fps_of):
    """Frames in input order: an image file is one Frame, a video one per frame. A video that
    cannot be opened, or stops on a bad frame, ends in a Frame with an error. fps_of[path] is
    set to each video's frame rate (for the annotated copy)."""
    for path, is_video in inputs:
        if not is_video:
            try:
                yield Frame(path, load_image(path))
            except DataError as e:
                yield Frame(path, None, error=str(e))
            continue
        try:
            import imageio.v2 as imageio
        except ImportError:
            yield Frame(path, None, error=f"{path}: reading videos needs imageio and its ffmpeg "
                        f"plugin; {VIDEO_HINT}")
            continue
        k, opened = 0, False
        try:
            reader = imageio.get_reader(path, "ffmpeg")
            fps_of[path] = float(reader.get_meta_data().get("fps") or 25.0)
            opened = True
            with reader:
                for k, image in enumerate(reader):
                    yield Frame(path, np.ascontiguousarray(np.asarray(image)[..., :3],
                                                           np.uint8), frame=k)
        except Exception as e:             # ffmpeg's errors have no common class
            where = f"frame {k}" if opened else "opening it"
            yield Frame(path, None, frame=k, error=f"{path}: video unreadable at {where} "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
                        "; check the file (ffmpeg -i FILE) or re-encode it")


# --- outputs -------------------------------------------------------------------------------

def claim(folder, stem, ext):
    """A new file <folder>/<stem><ext> (or <stem>_2<ext>, _3, ...), created empty so that no
    other writer can take the name; returns its path. Existing files are never opened."""
    n = 1
    while True:
        path = os.path.join(folder, f"{stem}{ext}" if n == 1 else f"{stem}_{n}{ext}")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return path
        except FileExistsError:
            n += 1


class CocoIds:
    """Image ids and category ids for --save-json: a COCO file's, or counted from 1."""

    def __init__(self, ann, class_names):
        self.images, self.next_id = [], 1
        self.by_name = self.categories = None
        if ann is None:
            return
        from .data.coco import read_coco_file
        f = read_coco_file(ann)
        self.by_name = {}
        for cid, name, w, h in f.images:
            self.by_name.setdefault(os.path.normpath(name), cid)
        cats = {n: c for c, n in f.categories}
        missing = [n for n in class_names if n not in cats]
        if missing:
            raise DataError(f"{ann}: the model's class {missing[0]!r} is not a category of "
                            "this file; give the annotation file of the model's classes")
        self.categories = [cats[n] for n in class_names]

    def image_id(self, path, frame, width, height):
        """The id of one image (None: --coco-ann given but the input is not in it)."""
        if self.by_name is not None:
            norm = os.path.normpath(os.path.abspath(path))
            for name, cid in self.by_name.items():
                if norm == name or norm.endswith(os.sep + name):
                    return cid
            return None
        entry = {"id": self.next_id, "file_name": path, "width": width, "height": height}
        if frame is not None:
            entry["frame"] = frame
        self.images.append(entry)
        self.next_id += 1
        return entry["id"]

    def category_id(self, label):
        return int(label) if self.categories is None else self.categories[int(label) - 1]


def coco_results(image_id, boxes, scores, labels, width, height, ids):
    """COCO results entries of one image: bbox [x, y, w, h] in pixels (rounded to 0.01)."""
    px = np.clip(boxes, 0, 1) * np.array([width, height, width, height])       # (K, 4)
    return [{"image_id": image_id, "category_id": ids.category_id(l),
             "bbox": [round(float(b[0]), 2), round(float(b[1]), 2),
                      round(float(b[2] - b[0]), 2), round(float(b[3] - b[1]), 2)],
             "score": round(float(s), 5)} for b, s, l in zip(px, scores, labels)]


def yolo_lines(boxes, scores, labels, with_score):
    b = np.clip(boxes.astype(np.float64), 0, 1)                                 # (K, 4)
    centre, size = (b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]
    return "".join(f"{int(l) - 1} {c[0]:.6f} {c[1]:.6f} {s[0]:.6f} {s[1]:.6f}"
                   + (f" {float(p):.5f}" if with_score else "") + "\n"
                   for c, s, p, l in zip(centre, size, scores, labels))


class VideoOut:
    """The annotated copy of one video (<out>/<stem>.mp4, H.264 through imageio-ffmpeg)."""

    def __init__(self, out, path, fps):
        import imageio.v2 as imageio
        self.path = claim(out, os.path.splitext(os.path.basename(path))[0], ".mp4")
        self.writer = imageio.get_writer(self.path, "ffmpeg", fps=fps, codec="libx264",
                                         macro_block_size=2, quality=7)

    def add(self, frame):
        self.writer.append_data(frame)

    def close(self):
        self.writer.close()


# --- the command ---------------------------------------------------------------------------

def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        fail("detect", f"--batch-size: {args.batch_size}; give 1 or more")
    if args.coco_ann is not None and args.save_json is None:
        fail("detect", "--coco-ann: it gives the ids of --save-json; add --save-json FILE")
    if args.save_json is not None and os.path.exists(args.save_json):
        fail("detect", f"--save-json {args.save_json}: the file exists; choose a new name "
             "(detect never replaces a file)")
    try:
        backend.set_device(args.device)
    except backend.DeviceError as e:
        fail("detect", str(e))
    bad = []

    def warn(line):
        bad.append(line)
        print(f"minissd.detect: warning: {line}", file=sys.stderr)

    unused = []
    inputs = expand_inputs(args.inputs, unused.append)
    if not inputs:
        fail("detect", unused[0] if len(unused) == 1 else
             f"none of the {len(args.inputs)} inputs gives an image ({unused[0]}, ...); check "
             "the paths")
    try:
        model, config, _ = load_chosen(args.checkpoint, args.weights, args.prototxt)
        ids = CocoIds(args.coco_ann, config.class_names) if args.save_json else None
    except (CheckpointError, DataError) as e:
        fail("detect", str(e))
    for folder in (args.out, args.save_txt):
        if folder is not None:
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as e:
                fail("detect", f"{folder}: cannot create the folder ({e.strerror}); choose "
                     "another")
    for line in unused:                    # told once the command is sure to run
        warn(line)
    run = _Run(args, model, config, ids, warn)
    t0 = time.perf_counter()
    run.go(inputs)
    seconds = time.perf_counter() - t0
    if args.save_json is not None:
        run.write_json()
    n = run.images
    print(f"{n} image(s) in {seconds:.1f} s: {n / max(seconds, 1e-9):.1f} images/s "
          f"(batch {args.batch_size}, {backend.get_device()})"
          + (f"; {len(bad)} bad input(s) skipped" if bad else ""))
    if n == 0:
        fail("detect", f"no input could be read ({len(bad)} bad); see the lines above")
    return 0


class _Run:
    """The batches of one detect command and what each image's detections become."""

    def __init__(self, args, model, config, ids, warn):
        self.args, self.model, self.config, self.ids, self.warn = args, model, config, ids, warn
        self.priors = priors_for(model, config)
        self.names = config.class_names
        self.results, self.images, self.videos, self.fps = [], 0, {}, {}
        self.verbose = True

    def go(self, inputs):
        long = len(inputs) >= PROGRESS_FROM or any(v for _, v in inputs)
        self.verbose = not long
        bar = None
        if long and not self.args.no_progress:
            from tqdm import tqdm
            bar = tqdm(unit="img", file=sys.stderr, desc="detect")
        batch = []
        for frame in read_frames(inputs, self.fps):
            if frame.error is not None:
                self.warn(frame.error)
                continue
            batch.append(frame)
            if len(batch) == self.args.batch_size:
                self.run_batch(batch, bar)
                batch = []
        if batch:
            self.run_batch(batch, bar)
        if bar is not None:
            bar.close()
        for video in self.videos.values():
            video.close()
            print(f"  -> {video.path}")

    def run_batch(self, batch, bar):
        dets = predict(self.model, self.config, [f.image for f in batch], self.priors)
        for frame, (boxes, scores, labels) in zip(batch, dets):
            keep = scores >= self.args.threshold
            self.handle(frame, boxes[keep], scores[keep], labels[keep])
            frame.image = None                         # free the pixels as soon as done
        self.images += len(batch)
        if bar is not None:
            bar.update(len(batch))

    def handle(self, frame, boxes, scores, labels):
        h, w = frame.image.shape[:2]
        stem = os.path.splitext(os.path.basename(frame.path))[0]
        name = frame.path if frame.frame is None else f"{frame.path} frame {frame.frame}"
        if self.verbose:
            pixels = np.clip(boxes, 0, 1) * np.array([w, h, w, h])             # (K, 4)
            print(f"{name}: {len(scores)} detection(s)")
            for b, s, l in zip(pixels, scores, labels):
                print(f"  {self.names[int(l) - 1]:<12s} {float(s):.3f}  "
                      f"{b[0]:.1f} {b[1]:.1f} {b[2]:.1f} {b[3]:.1f}")
        if self.ids is not None:
            image_id = self.ids.image_id(frame.path, frame.frame, w, h)
            if image_id is None:
                self.warn(f"{frame.path}: not an image of {self.args.coco_ann}; its "
                          "detections are left out of the JSON")
            else:
                self.results += coco_results(image_id, boxes, scores, labels, w, h, self.ids)
        if self.args.save_txt is not None:
            txt_stem = stem if frame.frame is None else f"{stem}_{frame.frame:06d}"
            with open(claim(self.args.save_txt, txt_stem, ".txt"), "w") as f:
                f.write(yolo_lines(boxes, scores, labels, self.args.save_conf))
        if self.args.out is not None:
            self.draw(frame, stem, boxes, scores, labels)

    def draw(self, frame, stem, boxes, scores, labels):
        from PIL import Image

        from .drawing import draw_detections
        video = frame.frame is not None
        drawn = draw_detections(frame.image, boxes, labels, scores, self.names, even=video)
        if not video:
            dest = claim(self.args.out, stem, ".png")
            Image.fromarray(drawn).save(dest)
            if self.verbose:
                print(f"  -> {dest}")
            return
        if frame.path not in self.videos:
            self.videos[frame.path] = VideoOut(self.args.out, frame.path,
                                               self.fps.get(frame.path, 25.0))
        self.videos[frame.path].add(drawn)

    def write_json(self):
        path = self.args.save_json
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except OSError as e:
            fail("detect", f"--save-json {path}: cannot create it ({e.strerror}); choose a "
                 "new name in a writable folder")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.results, f)
        print(f"{len(self.results)} detection(s) -> {path}")
        if self.ids.by_name is None:
            stem = os.path.splitext(os.path.basename(path))[0] + ".images"
            twin = claim(os.path.dirname(os.path.abspath(path)), stem, ".json")
            with open(twin, "w", encoding="utf-8") as f:
                json.dump(self.ids.images, f)
            print(f"the image ids of {path} -> {twin}")


if __name__ == "__main__":
    sys.exit(main())
