"""dked_tf.visualize: drawing on copies, exact colours on box edges, files that read back."""

import cv2
import numpy as np
import pytest

from dked_tf import visualize


def blank(size=64):
    return np.zeros((size, size, 3), np.uint8)


def test_draw_polygons_draws_on_a_copy_in_the_given_colour():
    image = blank()
    out = visualize.draw_polygons(image, [[10, 10, 50, 10, 50, 40, 10, 40]], color=(0, 255, 0), thickness=1)
    assert out is not image and out.dtype == np.uint8 and out.shape == image.shape
    assert image.max() == 0  # input untouched
    # the middle of the top edge and of the left edge are green (anti-aliased: mostly full
    # intensity), the box centre stays black
    assert out[10, 30, 1] > 150 and out[25, 10, 1] > 150
    assert tuple(out[25, 30]) == (0, 0, 0)
    assert out[..., 0].max() == 0 and out[..., 2].max() == 0


def test_draw_polygons_with_labels_scores_and_per_box_colours():
    polys = np.array([[5, 20, 30, 20, 30, 40, 5, 40], [35, 20, 60, 20, 60, 40, 35, 40]])
    out = visualize.draw_polygons(
        blank(), polys, labels=["a", "b"], scores=[0.9, 0.5], color=[(255, 0, 0), (0, 0, 255)], thickness=1
    )
    assert out[40, 15, 0] > 150 and out[40, 15, 2] == 0
    assert out[40, 45, 2] > 150 and out[40, 45, 0] == 0


def test_draw_polygons_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[N, 8\]"):
        visualize.draw_polygons(blank(), np.zeros((2, 5)))
    with pytest.raises(ValueError, match="uint8"):
        visualize.draw_polygons(np.zeros((8, 8, 3), np.float32), np.zeros((0, 8)))
    with pytest.raises(ValueError, match="row 1"):
        visualize.draw_polygons(blank(), [[0] * 8, [np.nan] * 8])
    with pytest.raises(ValueError, match="labels"):
        visualize.draw_polygons(blank(), [[0] * 8], labels=["a", "b"])


def test_overlay_uses_two_colours_and_save_image_round_trips(tmp_path):
    gt = [[8, 8, 40, 8, 40, 40, 8, 40]]
    det = [[20, 20, 56, 20, 56, 56, 20, 56]]
    out = visualize.draw_detections_vs_gt(blank(), gt, det, [0.75], ["ship"])
    gt_pixel, det_pixel = out[8, 30].astype(int), out[56, 30].astype(int)
    assert gt_pixel[1] > 100 and gt_pixel[0] == 0  # green ground truth
    assert det_pixel[0] > 100 and det_pixel[0] > 2 * det_pixel[1]  # orange detection
    path = tmp_path / "sub" / "overlay.png"
    visualize.save_image(str(path), out)
    back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, out)


def test_plots_write_png_files(tmp_path):
    pytest.importorskip("matplotlib")
    recall = np.linspace(0.1, 1.0, 10)
    curves = {"a": (recall, 1 - recall / 2), "b": (np.zeros(0), np.zeros(0))}
    pr = visualize.plot_pr_curves(curves, str(tmp_path / "pr.png"), ap={"a": 0.6, "b": 0.0})
    figure = visualize.box_conventions_figure(str(tmp_path / "conventions.png"))
    for path in (pr, figure):
        image = cv2.imread(path)
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
        assert image.std() > 5  # not a blank canvas


def test_draw_record_draws_ground_truth_and_detections_above_the_score(tmp_path):
    from dked_tf.data.records import ImageRecord

    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), np.zeros((60, 120, 3), np.uint8))
    record = ImageRecord(
        str(path), "scene", 120, 60, polygons=[[5, 5, 25, 5, 25, 25, 5, 25]], classes=[0], difficult=[False]
    )
    detections = {
        "ship": [
            ("scene", 0.9, [45, 5, 65, 5, 65, 25, 45, 25]),  # drawn
            ("scene", 0.1, [85, 35, 105, 35, 105, 55, 85, 55]),  # under the score: not drawn
            ("other", 0.9, [5, 35, 25, 35, 25, 55, 5, 55]),  # another image: not drawn
        ]
    }
    picture = visualize.draw_record(record, detections, min_score=0.3)
    assert picture.shape == (60, 120, 3) and picture.dtype == np.uint8
    assert (picture[:, :30] == visualize.GT_COLOR).all(-1).any()
    assert (picture[:, 40:70] == visualize.DET_COLOR).all(-1).any()
    assert not picture[32:, 80:].any() and not picture[32:, :30].any()  # (the label sits above its box)
    missing = ImageRecord(str(tmp_path / "gone.png"), "gone", 10, 10)
    assert visualize.draw_record(missing, detections, min_score=0.3) is None
