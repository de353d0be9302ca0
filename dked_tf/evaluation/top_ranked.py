"""What a detector's highest-scored detections are: the top of the ranking, which decides mAP(07).

The 11-point AP's first point is the best precision at any recall, so a true positive ranked
first is worth 1/11 = 9.09 AP on its own and a false positive ranked above every true positive
costs up to that much: for a detector whose precision falls fast, the few highest-scored
detections decide its mAP(07). Per class, the detections of all test images are ranked as the
VOC evaluation ranks them (`metrics.ranked_matches`, the same matching), and each of the first
`count` (default: as many as the class has ground truths that count) is one of

- ``true_positive``: IoU > `pass_iou` (0.5) with a free ground truth (what the AP counts);
- ``duplicate``: IoU > `pass_iou` with a ground truth a higher-ranked detection already took;
- ``near_miss``: on an object, not enough: best IoU in (`found_iou`, `pass_iou`];
- ``background``: best IoU at most `found_iou` (0.1) with every object of the class;
- ``difficult``: a match on a difficult ground truth (ignored by the AP).

Returned as fractions of the ranked detections, pooled over the classes, with the precision at
ranks 1, 5, 10, 20, 50, 100 (as the PR curve has it: true positives over true and false
positives among the first k detections, difficult matches left out; mean over the classes with
ground truth) and the rank of each class's first true positive. Pure numpy.
"""

import numpy as np

from dked_tf.evaluation.metrics import ranked_matches

OUTCOMES = ("true_positive", "duplicate", "near_miss", "background", "difficult")
PRECISION_RANKS = (1, 5, 10, 20, 50, 100)


def _ranked(detections, records, class_names, found_iou, pass_iou, comparison, difficult):
    """`metrics.ranked_matches` with IoUs exact from `found_iou` and the given match rule."""
    return ranked_matches(
        detections,
        records,
        list(class_names),
        exact_from=found_iou,
        iou_threshold=pass_iou,
        comparison=comparison,
        difficult=difficult,
    )


def outcomes(ranked, found_iou=0.1, pass_iou=0.5, comparison=">"):
    """Outcome name of each detection of one `metrics.RankedClass` (matched at IoU `comparison`
    `pass_iou`), in rank order: object array [D] of OUTCOMES."""
    overlap = np.where(np.isfinite(ranked.best_iou), ranked.best_iou, 0.0)
    result = np.full(len(overlap), "background", dtype=object)
    result[overlap > found_iou] = "near_miss"
    matched = overlap > pass_iou if comparison == ">" else overlap >= pass_iou
    result[ranked.false_positive & matched] = "duplicate"
    result[ranked.true_positive] = "true_positive"
    result[~(ranked.true_positive | ranked.false_positive)] = "difficult"
    return result


def top_ranked(
    detections, records, class_names, count=None, found_iou=0.1, pass_iou=0.5, comparison=">", difficult="ignore"
):
    """The figures of the module docstring as a dict.

    detections: class name -> [(image_id, score, polygon [8])] in image pixels; records:
    `data.records.ImageRecord`s (or the ground-truth dict `metrics.evaluate_detections` takes);
    class_names: the evaluated classes; pass_iou / comparison / difficult: the VOC match rule
    (`metrics.evaluate_detections`). count: how many of each class's top detections to classify
    (None: its number of ground truths that count).
    Returns {"ranked": N, <outcome>: fraction of N (None when N is 0) for each of OUTCOMES,
    "precision_at": {str(rank): mean precision}, "first_true_positive_rank": {class: rank
    (1-based) or None}}.
    """
    ranked = _ranked(detections, records, class_names, found_iou, pass_iou, comparison, difficult)
    totals = dict.fromkeys(OUTCOMES, 0)
    precision = {rank: [] for rank in PRECISION_RANKS}
    first = {}
    for name, matches in ranked.items():
        flags = outcomes(matches, found_iou, pass_iou, comparison)
        hits = np.flatnonzero(matches.true_positive)
        first[name] = int(hits[0]) + 1 if len(hits) else None
        if matches.positives == 0:
            continue
        keep = matches.positives if count is None else int(count)
        for outcome in flags[:keep]:
            totals[outcome] += 1
        for rank in PRECISION_RANKS:
            true_count = np.sum(matches.true_positive[:rank])
            false_count = np.sum(matches.false_positive[:rank])
            counted = true_count + false_count
            precision[rank].append(float(true_count / counted) if counted else 0.0)
    total = sum(totals.values())
    return {
        "ranked": total,
        **{outcome: (totals[outcome] / total if total else None) for outcome in OUTCOMES},
        "precision_at": {str(rank): (float(np.mean(values)) if values else None) for rank, values in precision.items()},
        "first_true_positive_rank": first,
    }


def describe(figures):
    """One line of text for a `top_ranked` result (None when nothing was ranked)."""
    if not figures["ranked"]:
        return None
    first = ", ".join(
        f"{'none' if rank is None else rank} ({name})" for name, rank in figures["first_true_positive_rank"].items()
    )
    precision = figures["precision_at"]
    shares = ", ".join(
        f"{100 * figures[name]:.0f} % {label}"
        for name, label in (
            ("true_positive", "true positives"),
            ("duplicate", "duplicates"),
            ("near_miss", "near misses"),
            ("background", "background"),
            ("difficult", "on difficult objects"),
        )
        if figures[name]
    )
    return (
        f"top of the ranking: first true positive at rank {first}; precision at 1 / 10 / 100: "
        f"{precision['1']:.2f} / {precision['10']:.2f} / {precision['100']:.2f}; "
        f"of the first {figures['ranked']} detections: {shares}"
    )


def ranked_false_positives(
    detections, records, class_names, count=12, found_iou=0.1, pass_iou=0.5, comparison=">", difficult="ignore"
):
    """The `count` highest-scored false positives over all classes (what costs the top of the
    ranking), highest score first: [{"class", "rank" (1-based, within its class), "image_id",
    "score", "polygon" [8], "outcome" ("duplicate", "near_miss" or "background"), "iou"}].
    Arguments as in `top_ranked`."""
    ranked = _ranked(detections, records, class_names, found_iou, pass_iou, comparison, difficult)
    found = []
    for name, matches in ranked.items():
        flags = outcomes(matches, found_iou, pass_iou, comparison)
        for index in np.flatnonzero(matches.false_positive):
            iou = float(matches.best_iou[index])
            found.append(
                {
                    "class": name,
                    "rank": int(index) + 1,
                    "image_id": matches.image_ids[index],
                    "score": float(matches.scores[index]),
                    "polygon": np.asarray(matches.polygons[index], np.float64),
                    "outcome": str(flags[index]),
                    "iou": iou if np.isfinite(iou) else 0.0,
                }
            )
    found.sort(key=lambda entry: -entry["score"])
    return found[: int(count)]
