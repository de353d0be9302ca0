#!/usr/bin/env python
"""HRSC2016: GGHL teacher -> LO-Det student -> LO-Det student with DKED, evaluated and exported.

    python recipes/hrsc_lodet.py                         # built-in realistic HRSC2016-format set, 25-35 min on 2 cores
    python recipes/hrsc_lodet.py --quick                 # real but minimal run (< 4 min): a smoke check
    python recipes/hrsc_lodet.py --data-root ~/data/HRSC2016 --paper   # the real thing, on a GPU

Stages (each skippable with --stages, each resumable: finished models are reloaded from
checkpoints/, an interrupted training continues from its last backup, taken every
train.checkpoint_every epochs):

1. teacher   train the GGHL teacher (model.teacher, teacher_train schedule)
2. student   train the LO-Det student alone: the baseline (model.student, train schedule), per seed
3. dked      train the same student with DKED from the teacher, same schedule and seed as 2
4. evaluate  mAP(07) and mAP(12) of all three on the test split, params, GFLOPs, CPU latency
5. export    SavedModel and TFLite of the distilled student
6. report    report.md: the paper-style table next to the paper's HRSC2016 figures (80.05 -> 85.17)

Output (--out, default runs/hrsc_lodet/): config.yaml/json, checkpoints/, results.json,
report.md, pr_curves/, detections/ (test images with detections drawn), export/.
The stages live in dked_tf.experiment.recipe.
"""

import sys

from dked_tf.experiment.recipe import Recipe, run_recipe


def main(argv=None):
    return run_recipe(
        argv, recipe_class=Recipe, task="hrsc", name="hrsc_lodet", default_out="runs/hrsc_lodet", description=__doc__
    )


if __name__ == "__main__":
    sys.exit(main())
