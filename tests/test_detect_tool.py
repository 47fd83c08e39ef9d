"""python -m minissd.detect as a tool: folders, globs, videos, batches, COCO results JSON that
pycocotools' loadRes accepts, YOLO txt, drawn images that never replace a file, bad inputs
reported one line each while the rest goes on, and drawing at a bounded size and memory."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from minissd import detect
from minissd.config import tiny
from minissd.data.synthetic import CLASSES, generate, write_coco_files
from minissd.drawing import MAX_SIDE, draw_detections
from minissd.model import SSD
from minissd.weights import save_checkpoint

from cli_checks import fails


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A random tiny checkpoint and a small synthetic set with its COCO files."""
    base = tmp_path_factory.mktemp("detect")
    config = tiny(class_names=CLASSES)
    ckpt = str(base / "last.npz")
    save_checkpoint(ckpt, SSD(config).state_dict(), {"config": config.to_dict()})
    data = str(base / "syn")
    generate(data, num_train=3, num_val=2, image_size=96, seed=1)
    write_coco_files(data)
    return ckpt, data


def _run(argv, capsys):
    code = detect.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_folder_glob_and_bad_inputs_go_on_with_json_txt_and_drawings(setup, tmp_path, capsys):
    pycocotools = pytest.importorskip("pycocotools.coco")
    ckpt, data = setup
    images = os.path.join(data, "JPEGImages")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    empty = tmp_path / "empty"
    empty.mkdir()
    out, js, txt = tmp_path / "drawn", str(tmp_path / "res.json"), tmp_path / "txt"
    code, printed, err = _run(
        ["--checkpoint", ckpt, images, os.path.join(images, "00000[34].jpg"), str(broken),
         str(empty), str(tmp_path / "missing.jpg"), "--out", str(out), "--save-json", js,
         "--coco-ann", os.path.join(data, "coco_train.json"), "--save-txt", str(txt),
         "--threshold", "0.1", "--batch-size", "2", "--device", "cpu"], capsys)
    assert code == 0
    warnings = [ln for ln in err.splitlines() if "warning:" in ln]
    # broken, empty folder, missing file: one line each; val images 000003/4 not in the file
    assert len(warnings) == 5 and "images/s" in printed and "3 bad input(s)" not in printed
    assert "5 bad input(s) skipped" in printed and "5 image(s) in" in printed
    assert len(os.listdir(out)) == 5 and len(os.listdir(txt)) == 5
    results = json.load(open(js))
    gt = pycocotools.COCO(os.path.join(data, "coco_train.json"))
    dt = gt.loadRes(js)
    assert len(dt.getAnnIds()) == len(results) > 0
    assert {r["image_id"] for r in results} <= set(gt.getImgIds())
    for line in open(os.path.join(txt, os.listdir(txt)[0])):
        c, *box = line.split()
        assert 0 <= int(c) < 6 and len(box) == 4 and all(0 <= float(v) <= 1 for v in box)
    assert fails(["--checkpoint", ckpt, images, "--save-json", js], capsys,
                 module=detect).endswith("the file exists; choose a new name (detect never "
                                         "replaces a file)")


def test_nothing_is_overwritten(setup, tmp_path, capsys):
    """--out = the photos' own folder: x.png stays; two inputs named x keep both results."""
    ckpt, data = setup
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        Image.fromarray(np.full((50, 70, 3), 120, np.uint8)).save(tmp_path / folder / "x.png")
    before = (tmp_path / "a" / "x.png").read_bytes()
    code, printed, _ = _run(["--checkpoint", ckpt, str(tmp_path / "a" / "x.png"),
                             str(tmp_path / "b" / "x.png"), "--out", str(tmp_path / "a"),
                             "--device", "cpu"], capsys)
    assert code == 0
    assert (tmp_path / "a" / "x.png").read_bytes() == before
    assert sorted(os.listdir(tmp_path / "a")) == ["x.png", "x_2.png", "x_3.png"]


def test_a_video_gives_an_annotated_video_and_loadres_json(setup, tmp_path, capsys):
    imageio = pytest.importorskip("imageio.v2", reason="pip install imageio imageio-ffmpeg")
    pytest.importorskip("imageio_ffmpeg", reason="pip install imageio-ffmpeg")
    pycocotools = pytest.importorskip("pycocotools.coco")
    ckpt, _ = setup
    video = str(tmp_path / "clip.mp4")
    rng = np.random.default_rng(0)
    with imageio.get_writer(video, "ffmpeg", fps=5, codec="libx264", macro_block_size=2) as w:
        for _ in range(7):
            w.append_data(rng.integers(0, 256, (48, 64, 3), np.uint8))
    js = str(tmp_path / "video.json")
    code, printed, err = _run(["--checkpoint", ckpt, video, "--out", str(tmp_path / "o"),
                               "--save-json", js, "--threshold", "0.1", "--no-progress",
                               "--device", "cpu"], capsys)
    assert code == 0 and "7 image(s)" in printed and "warning" not in err
    drawn = imageio.get_reader(str(tmp_path / "o" / "clip.mp4"))
    assert drawn.count_frames() == 7
    images = json.load(open(str(tmp_path / "video.images.json")))
    assert [im["frame"] for im in images] == list(range(7))
    gt = {"images": images, "annotations": [],
          "categories": [{"id": k + 1, "name": n} for k, n in enumerate(CLASSES)]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    coco = pycocotools.COCO(str(tmp_path / "gt.json"))
    assert len(coco.loadRes(js).getAnnIds()) == len(json.load(open(js))) > 0


def test_a_broken_video_is_one_line_and_the_rest_goes_on(setup, tmp_path, capsys):
    pytest.importorskip("imageio_ffmpeg", reason="pip install imageio-ffmpeg")
    ckpt, data = setup
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 broken" * 10)
    image = os.path.join(data, "JPEGImages", "000000.jpg")
    code, printed, err = _run(["--checkpoint", ckpt, str(bad), image, "--no-progress",
                               "--device", "cpu"], capsys)
    assert code == 0 and "1 image(s)" in printed and "1 bad input(s)" in printed
    assert [ln for ln in err.splitlines() if "bad.mp4: video unreadable" in ln]


def test_only_bad_inputs_fail_with_one_line(setup, tmp_path, capsys):
    ckpt, _ = setup
    line = fails(["--checkpoint", ckpt, str(tmp_path / "nothere.jpg")], capsys, module=detect)
    assert "nothere.jpg: image not found" in line


def test_drawing_is_bounded(tmp_path):
    image = np.zeros((4000, 6000, 3), np.uint8)
    drawn = draw_detections(image, np.array([[0.1, 0.1, 0.5, 0.6]]), np.array([1]),
                            np.array([0.9]), ("cat",))
    assert drawn.shape == (MAX_SIDE * 4000 // 6000 + 1, MAX_SIDE, 3) or \
        max(drawn.shape[:2]) == MAX_SIDE
    assert drawn[:, :, 0].max() > 0                      # the box is there
    small = draw_detections(np.zeros((30, 40, 3), np.uint8), np.zeros((0, 4)), [], [], ())
    assert small.shape == (30, 40, 3)                    # never enlarged


def test_detect_on_a_24_megapixel_photo_needs_little_memory(setup, tmp_path):
    """The whole command on a 6000x4000 JPEG stays under 700 MB of peak memory (it needed
    4 GB when matplotlib drew the photo at its own size; now about 390 MB, of which 150 MB
    are the imports and 230 MB the decoded photo)."""
    ckpt, _ = setup
    photo = tmp_path / "big.jpg"
    ramp = Image.linear_gradient("L").resize((6000, 4000))
    Image.merge("RGB", (ramp, ramp.transpose(Image.FLIP_LEFT_RIGHT), ramp)).save(photo)
    if not os.path.exists("/proc/self/status"):
        pytest.skip("the peak memory is read from /proc/self/status (Linux)")
    code = ("from minissd import detect; "
            f"detect.main(['--checkpoint', {ckpt!r}, {str(photo)!r}, '--out', "
            f"{str(tmp_path / 'o')!r}, '--threshold', '0.1', '--device', 'cpu']); "
            "print(next(ln.split()[1] for ln in open('/proc/self/status') "
            "if ln.startswith('VmHWM')))")             # this process's own peak (kB)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    peak_mb = int(r.stdout.split()[-1]) / 1024
    assert peak_mb < 700, f"peak {peak_mb:.0f} MB"
    drawn = Image.open(tmp_path / "o" / "big.png")
    assert max(drawn.size) == MAX_SIDE
