#!/usr/bin/env python
"""HRSC2016 self-distillation: GGHL teacher -> GGHL student with DKED (the paper's 87.30 -> 93.45).

    python recipes/hrsc_gghl_selfdistill.py               # synthetic HRSC2016-format set
    python recipes/hrsc_gghl_selfdistill.py --quick
    python recipes/hrsc_gghl_selfdistill.py --data-root ~/data/HRSC2016 --paper

The same six stages as recipes/hrsc_lodet.py, with the student architecture = the teacher's
(model.student is set to model.teacher; `--set model.student=...` or
`--set model.student_overrides=...` can make it narrower). The teacher trains with the
teacher_train schedule; the student alone and the DKED student with the (shorter) train schedule
and the same seed, so their difference is the effect of distillation.
Output: runs/hrsc_gghl_selfdistill/ (results.json, report.md, ...).
"""

import sys

from dked_tf.experiment.recipe import SelfDistillRecipe, run_recipe


def main(argv=None):
    return run_recipe(
        argv,
        recipe_class=SelfDistillRecipe,
        task="hrsc",
        name="hrsc_gghl_selfdistill",
        default_out="runs/hrsc_gghl_selfdistill",
        description=__doc__,
        student_is_teacher=True,
    )


if __name__ == "__main__":
    sys.exit(main())
