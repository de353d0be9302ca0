import cv2
import numpy as np
import pytest

from dked_tf.data.augment import AugmentConfig, letterbox_params
from dked_tf.data.pipeline import build_dataset, unletterbox_polygons
from dked_tf.data.records import ImageRecord


def rect(cx, cy, w, h, angle=0.0):
    c, s = np.cos(angle), np.sin(angle)
    corners = ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))
    pts = [(cx + c * x - s * y, cy + s * x + c * y) for x, y in corners]
    return np.ravel(pts)


@pytest.fixture
def records(tmp_path):
    """Five images of different sizes (PNG, JPEG, BMP): white rotated boxes on a gradient."""
    out = []
    sizes = [(96, 64), (64, 96), (80, 80), (120, 72), (50, 100)]
    exts = [".png", ".jpg", ".bmp", ".png", ".png"]
    for k, ((w, h), ext) in enumerate(zip(sizes, exts)):
        image = np.zeros((h, w, 3), np.uint8)
        image[..., 1] = np.linspace(0, 120, w)[None, :]
        polys = [rect(w * 0.35, h * 0.4, w * 0.35, 8, 0.4 * k), rect(w * 0.7, h * 0.7, 12, 6, -0.3)][: 1 + k % 2]
        for p in polys:
            cv2.fillPoly(
                image, [np.round((p.reshape(4, 2) - 0.5) * 16).astype(np.int32)], (255, 255, 255), cv2.LINE_AA, shift=4
            )
        path = str(tmp_path / f"img{k}{ext}")
        cv2.imwrite(path, image[..., ::-1])
        out.append(ImageRecord(path, f"img{k}", w, h, polys, np.arange(len(polys)), [False, True][: len(polys)]))
    return out


def test_eval_batches_letterbox_exactly(records):
    ds = build_dataset(records, 64, 2, training=False, max_objects=4)
    batches = list(ds)
    assert [b[0].shape[0] for b in batches] == [2, 2, 1]  # no drop when not training
    images, targets = batches[0]
    assert images.shape == (2, 64, 64, 3) and images.dtype.name == "float32"
    assert targets["polygons"].shape == (2, 4, 8) and targets["classes"].dtype.name == "int32"
    assert targets["difficult"].dtype.name == "bool" and targets["offset"].shape == (2, 2)
    seen = 0
    for images, targets in batches:
        for b in range(images.shape[0]):
            idx = int(targets["image_index"][b])
            r = records[idx]
            scale, offset = letterbox_params(r.width, r.height, 64)
            assert float(targets["scale"][b]) == pytest.approx(scale, rel=1e-6)
            np.testing.assert_allclose(targets["offset"][b], offset, atol=1e-4)
            n = r.num_objects
            np.testing.assert_array_equal(targets["weights"][b].numpy(), [1.0] * n + [0.0] * (4 - n))
            np.testing.assert_array_equal(targets["classes"][b, :n], r.classes)
            np.testing.assert_array_equal(targets["difficult"][b, :n], r.difficult)
            back = unletterbox_polygons(targets["polygons"][b, :n].numpy(), targets["scale"][b], targets["offset"][b])
            np.testing.assert_allclose(back, r.polygons, atol=1e-3)
            # padding is 0.5 and the content matches OpenCV's bilinear resize of the file
            img = images[b].numpy()
            x0, y0 = int(np.ceil(offset[0])), int(np.ceil(offset[1]))
            if x0 > 0:
                np.testing.assert_allclose(img[:, : x0 - 1], 0.5)
            if y0 > 0:
                np.testing.assert_allclose(img[: y0 - 1], 0.5)
            src = cv2.imread(r.image_path)[..., ::-1].astype(np.float32) / 255
            nw, nh = round(r.width * scale), round(r.height * scale)
            ref = cv2.resize(src, (nw, nh), interpolation=cv2.INTER_LINEAR)
            inner = img[y0 + 1 : y0 + nh - 2, x0 + 1 : x0 + nw - 2]
            assert np.abs(inner - ref[1 : nh - 2, 1 : nw - 2]).mean() < 0.02
            seen += 1
    assert seen == len(records)


def test_training_is_deterministic_under_a_seed(records):
    def first(seed):
        ds = build_dataset(records, 64, 2, training=True, seed=seed, max_objects=4)
        images, targets = next(iter(ds))
        return images.numpy(), targets["polygons"].numpy(), targets["image_index"].numpy()

    a, b, c = first(5), first(5), first(6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_training_polygons_cover_the_white_boxes(records):
    config = AugmentConfig(mixup_prob=0.0, hsv_prob=0.0, rotate_prob=1.0, scale_prob=1.0)
    ds = build_dataset(records, 96, 5, training=True, seed=3, augment=config, max_objects=4)
    images, targets = next(iter(ds))
    for b in range(5):
        img = images[b].numpy()
        white = img.min(axis=2) > 0.8
        mask = np.zeros((96, 96), np.uint8)
        for p, w in zip(targets["polygons"][b].numpy(), targets["weights"][b].numpy()):
            if w > 0:
                cv2.fillPoly(mask, [np.round((p.reshape(4, 2) - 0.5) * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
        mask = mask.astype(bool)
        if mask.sum() > 30:
            assert (mask & white).sum() / mask.sum() > 0.6


def test_multiscale_sizes_per_batch(records):
    ds = build_dataset(
        records,
        64,
        2,
        training=True,
        seed=0,
        multiscale_sizes=(64, 96),
        repeat=True,
        cache=True,
        augment=AugmentConfig(mixup_prob=0.5),
        max_objects=4,
    )
    shapes = [tuple(images.shape) for images, _ in ds.take(8)]
    assert {s[1] for s in shapes} == {64, 96}
    assert all(s[0] == 2 and s[1] == s[2] for s in shapes)


def test_max_objects_warning(records):
    with pytest.warns(UserWarning, match="max_objects=1"):
        ds = build_dataset(records, 64, 5, training=False, max_objects=1)
    _, targets = next(iter(ds))
    assert targets["polygons"].shape == (5, 1, 8)


def test_too_few_records_for_a_training_batch(records):
    with pytest.raises(ValueError, match="every batch would be dropped"):
        build_dataset(records, 64, 8, training=True)
