import argparse
import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

from dked_tf import cli
from dked_tf.data.augment import letterbox_image_np as letterbox
from dked_tf.data.images import list_images
from dked_tf.data.split import tile_windows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_top_level_help_lists_every_command():
    out = subprocess.run(
        [sys.executable, "-m", "dked_tf", "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    for name in ("train", "distill", "evaluate", "predict", "export", "bench"):
        assert name in out.stdout


def _option_helps(parser):
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        yield action


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_explains_every_option(name, capsys):
    try:
        importlib.import_module(f"dked_tf.commands.{name}")
    except ModuleNotFoundError as error:
        if error.name == f"dked_tf.commands.{name}":
            pytest.skip(f"dked_tf/commands/{name}.py is not in this build")
        raise
    _, parser = cli._command_parser(name)
    undocumented = [a.dest for a in _option_helps(parser) if not (a.help and a.help.strip())]
    assert not undocumented, f"`dked-tf {name}` options without help: {undocumented}"
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    assert f"dked-tf {name}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "length, tile, overlap, want",
    [
        (100, 200, 50, [0]),
        (200, 200, 50, [0]),
        (500, 200, 50, [0, 150, 300]),
        (450, 200, 50, [0, 150, 250]),
    ],
)
def test_tile_origins_cover_with_overlap(length, tile, overlap, want):
    columns = tile_windows(length, 1, tile, overlap)  # one row of tiles
    origins = [x for x, _, _, _ in columns]
    assert origins == want
    assert [w for _, _, w, _ in columns] == [min(tile, length - x) for x in origins]
    covered = np.zeros(length, bool)
    for start in origins:
        covered[start : start + tile] = True
    assert covered.all()


def test_letterbox_geometry_maps_back_to_the_original():
    image = np.zeros((60, 120, 3), np.uint8)
    image[10:30, 40:100] = 255  # a bright rectangle, x 40..100, y 10..30
    boxed, scale, (pad_x, pad_y) = letterbox(image, 64)
    assert boxed.shape == (64, 64, 3) and scale == pytest.approx(64 / 120)
    assert boxed[0, 0, 0] == pytest.approx(0.5)  # padding value of the pipeline
    ys, xs = np.nonzero(boxed[..., 0] > 0.75)
    back_x = (np.array([xs.min(), xs.max() + 1]) - pad_x) / scale
    back_y = (np.array([ys.min(), ys.max() + 1]) - pad_y) / scale
    np.testing.assert_allclose(back_x, [40, 100], atol=2.5)
    np.testing.assert_allclose(back_y, [10, 30], atol=2.5)


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        list_images([str(tmp_path / "nope.png")])


def _read_task1(path):
    rows = []
    with open(path) as handle:
        for line in handle:
            fields = line.split()
            assert len(fields) == 10, line
            rows.append((fields[0], float(fields[1]), np.array(fields[2:], float)))
    return rows


def test_train_then_predict_end_to_end(tmp_path):
    """Tiny teacher preset, 64 px, 1 epoch on 8 synthetic images; then predict on the test images
    and on a large image that must be tiled, writing Task1 files and drawn images."""
    pytest.importorskip("dked_tf.data.pipeline")
    cv2 = pytest.importorskip("cv2")
    run_dir = tmp_path / "run"
    code = cli.main(
        [
            "train",
            "--preset",
            "smoke",
            "--role",
            "teacher",
            "--data-cache",
            str(tmp_path / "cache"),
            "--out",
            str(run_dir),
            "--verbose",
            "0",
            "--set",
            "model.score_threshold=0.0",
        ]
    )
    assert code == 0
    for name in ("model.json", "model.weights.h5", "config.yaml", "config.json", "history.json"):
        assert (run_dir / name).exists(), name
    test_images = next(p for p in (tmp_path / "cache").rglob("AllImages"))
    one = cv2.imread(str(sorted(test_images.iterdir())[0]))
    big = np.concatenate([np.concatenate([one, one[:, ::-1]], axis=1)] * 2, axis=0)  # 2 x 2 scenes
    big_path = tmp_path / "big" / "scene.png"
    big_path.parent.mkdir()
    cv2.imwrite(str(big_path), big)
    out = tmp_path / "pred"
    code = cli.main(
        [
            "predict",
            str(test_images),
            str(big_path),
            "--model",
            str(run_dir),
            "--out",
            str(out),
            "--score-threshold",
            "0.0",
            "--tile-size",
            "96",
            "--overlap",
            "32",
            "--verbose",
            "0",
        ]
    )
    assert code == 0
    rows = _read_task1(out / "Task1_ship.txt")
    drawn = sorted(os.listdir(out / "images"))
    assert "scene.png" in drawn and len(drawn) == len(os.listdir(test_images)) + 1
    height, width = big.shape[:2]
    scene_rows = [r for r in rows if r[0] == "scene"]
    # tiles were merged into scene coordinates (not tile coordinates): every box lies on the scene
    # canvas (a box may poke out of its tile's border by a little)
    for _, score, poly in scene_rows:
        assert 0.0 <= score <= 1.0
        assert poly[0::2].min() > -0.5 * width and poly[0::2].max() < 1.5 * width
        assert poly[1::2].min() > -0.5 * height and poly[1::2].max() < 1.5 * height
