#!/usr/bin/env python
"""DOTA: GGHL teacher -> LO-Det student -> LO-Det student with DKED, on split scenes.

    python recipes/dota_lodet.py                          # built-in synthetic DOTA-format set
    python recipes/dota_lodet.py --quick                  # minimal smoke run
    python recipes/dota_lodet.py --data-root ~/data/DOTA --paper --set data.classes=dota1.0

The scenes of train/ are cut into patches (data.patch_size, data.patch_gap; devkit naming
`P0000__1__0___824`, cached), the three models are trained on the patches, the test scenes
(val/ or test/) are cut the same way, predicted patch by patch, the patch detections merged back
to scene coordinates with class-wise polygon NMS (IoU 0.1, as the devkit's merge) and scored
on the merged scenes with the DOTA devkit semantics (mAP(07) is the devkit's metric; the paper:
66.17 -> 71.39). The distilled student's merged detections are written as a server-ready Task1
zip (`task1_student_dked.zip`: one `Task1_<class>.txt` per class).

Stages and output as in recipes/hrsc_lodet.py (--stages, --out, results.json, report.md).
"""

import sys

from dked_tf.experiment.recipe import DotaRecipe, run_recipe


def main(argv=None):
    return run_recipe(
        argv,
        recipe_class=DotaRecipe,
        task="dota",
        name="dota_lodet",
        default_out="runs/dota_lodet",
        description=__doc__,
    )


if __name__ == "__main__":
    sys.exit(main())
