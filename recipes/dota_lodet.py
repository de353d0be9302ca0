#!/usr/bin/env python
"""DOTA: GGHL teacher -> LO-Det student -> LO-Det student with DKED, on split scenes.

    python recipes/dota_lodet.py                          # built-in synthetic DOTA-format set
    python recipes/dota_lodet.py --quick                  # minimal smoke run
    python recipes/dota_lodet.py --data-root ~/data/DOTA --paper --set data.classes=dota1.0

The scenes of train/ are cut into patches (data.patch_size, data.patch_gap; devkit naming
`P0000__1__0___824`, cached), the three models are trained on the patches, the test scenes
(val/ or test/) are cut the same way, predicted patch by patch, the patch detections merged back
to scene coordinates with class-wise polygon NMS (IoU 0.1, as the devkit's merge) and scored
on the merged scenes with the DOTA devkit semantics (mAP(07) is the devkit's metric). The
distilled student's merged detections are written as a server-ready Task1 zip
(`task1_student_dked.zip`: one `Task1_<class>.txt` per class).

Stages and output as in recipes/hrsc_lodet.py (--stages, --out, results.json, report.md).
"""

import os
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hrsc_lodet  # noqa: E402  (the shared recipe machinery)

# The DKED poster's DOTA figures (shared/reference/gghl_lodet_dked.md §3.2).
PAPER_DOTA = {
    "teacher": ("GGHL (teacher)", 76.95),
    "student": ("LO-Det (student)", 66.17),
    "student_dked": ("LO-Det + DKED", 71.39),
}

MERGE_IOU = 0.1


def parse_patch_id(patch_id):
    """`P0000__1__0___824` -> ("P0000", rate 1.0, x 0, y 824) (devkit patch naming)."""
    parts = patch_id.split("__")
    if len(parts) < 4:
        raise ValueError(f"{patch_id!r} is not a DOTA patch name like P0000__1__0___824")
    scene = "__".join(parts[:-3])
    rate, x, y = parts[-3], parts[-2], parts[-1].lstrip("_")
    return scene, float(rate), int(x), int(y)


def merge_patch_detections(patch_detections, iou_threshold=MERGE_IOU):
    """dict class -> [(patch_id, score, poly)] in patch pixels -> the same per scene, in scene
    pixels, after class-wise polygon NMS per scene (`dked_tf.data.split.merge_detections` when
    the data package provides it)."""
    try:
        from dked_tf.data.split import merge_detections

        return merge_detections(patch_detections, **hrsc_lodet._accepted(merge_detections,
                                                                         {"iou_threshold": iou_threshold}))
    except ImportError:
        pass
    import numpy as np

    from dked_tf.ops.nms import rotated_nms

    merged = {}
    for name, entries in patch_detections.items():
        per_scene = {}
        for patch_id, score, poly in entries:
            scene, rate, x, y = parse_patch_id(patch_id)
            poly = (np.asarray(poly, np.float64).reshape(4, 2) + [x, y]) / rate
            per_scene.setdefault(scene, []).append((float(score), poly.reshape(8)))
        merged[name] = []
        for scene, items in per_scene.items():
            scores = np.array([s for s, _ in items])
            polys = np.stack([p for _, p in items])
            for i in np.asarray(rotated_nms(polys, scores, iou_threshold)):
                merged[name].append((scene, float(scores[i]), polys[i]))
    return merged


class DotaRecipe(hrsc_lodet.Recipe):
    title = "DOTA"
    paper = PAPER_DOTA

    def eval_records(self):
        """The test scenes (merged detections are scored on these)."""
        from dked_tf import training as T

        if "scenes" not in self._data:
            self._data["scenes"] = T.load_records(self.cfg.data, "test", verbose=self.verbose)
        return self._data["scenes"][0]

    def evaluate_model(self, model):
        from dked_tf import training as T
        from dked_tf.evaluation.runner import predict_records

        cfg = self.cfg
        patches = self.records("test")[0]
        patch_detections = predict_records(model, patches, cfg.data.image_size, batch_size=cfg.eval_batch_size,
                                           score_threshold=cfg.model.score_threshold,
                                           iou_threshold=cfg.model.iou_threshold,
                                           max_detections=cfg.model.max_detections,
                                           class_names=list(self.class_names), verbose=self.verbose)
        detections = merge_patch_detections(patch_detections)
        return T.score_detections(detections, self.eval_records(), self.class_names, return_results=True)

    def pictures(self, key, evals, detections):
        super().pictures(key, evals, detections)
        if key == "student_dked":
            self.write_task1_zip(key, detections)

    def write_task1_zip(self, key, detections):
        from dked_tf.data.dota import write_task1

        folder = os.path.join(self.out, f"task1_{key}")
        paths = write_task1(detections, folder, list(self.class_names))
        archive = os.path.join(self.out, f"task1_{key}.zip")
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as handle:
            for path in paths:
                handle.write(path, arcname=os.path.basename(path))
        self.extra_results.setdefault("task1", {})[key] = archive
        self.log(f"evaluate: Task1 results of {key} -> {archive}")


def main(argv=None):
    return hrsc_lodet.main(argv, recipe_class=DotaRecipe, task="dota", name="dota_lodet",
                           default_out="runs/dota_lodet", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
