"""The recipe's report: seed statistics (mean, spread, DKED gain per seed) and report.md."""

import numpy as np

# The DKED poster's mAPs (metric not stated in the sources we have; see
# shared/reference/gghl_lodet_dked.md §3.2): (label, mAP) per model key.
PAPER_HRSC = {
    "teacher": ("GGHL (teacher)", 87.30),
    "student": ("LO-Det (student)", 80.05),
    "student_dked": ("LO-Det + DKED", 85.17),
}
PAPER_SELF = {
    "teacher": ("GGHL (teacher)", 87.30),
    "student": ("GGHL (student)", 87.30),
    "student_dked": ("GGHL + DKED (self)", 93.45),
}
PAPER_DOTA = {
    "teacher": ("GGHL (teacher)", 76.95),
    "student": ("LO-Det (student)", 66.17),
    "student_dked": ("LO-Det + DKED", 71.39),
}


def summary_has_spread(results):
    """True when results.json holds a multi-seed summary (gain vs seed-to-seed spread)."""
    return bool(results.get("seed_summary"))


def seed_summary(seeds):
    """Per model: mean and spread (max - min) of mAP(07) and mAP(12) over seeds, and the DKED gain
    per seed (metrics missing from older results are left out)."""
    summary = {}
    for metric in ("map07", "map12"):
        for key in ("student", "student_dked"):
            values = [v[key][metric] for v in seeds.values() if metric in v.get(key, {})]
            if values:
                summary.setdefault(key, {}).update(
                    {
                        f"{metric}_mean": float(np.mean(values)),
                        f"{metric}_spread": float(np.ptp(values)),
                        metric: [float(v) for v in values],
                    }
                )
        gains = [
            v["student_dked"][metric] - v["student"][metric]
            for v in seeds.values()
            if metric in v.get("student", {}) and metric in v.get("student_dked", {})
        ]
        if gains:
            summary[f"dked_gain_{metric}"] = [float(g) for g in gains]
            summary[f"dked_gain_{metric}_mean"] = float(np.mean(gains))
    pairs = [
        (v["student"]["quality_median"], v["student_dked"]["quality_median"])
        for v in seeds.values()
        if "quality_median" in v.get("student", {}) and "quality_median" in v.get("student_dked", {})
    ]
    if pairs:
        student_q, dked_q = (np.array(x, np.float64) for x in zip(*pairs))
        summary["quality"] = {
            "student": student_q.tolist(),
            "student_dked": dked_q.tolist(),
            "student_spread": float(np.ptp(student_q)),
            "student_dked_spread": float(np.ptp(dked_q)),
            "dked_gain": (dked_q - student_q).tolist(),
            "dked_gain_mean": float(np.mean(dked_q - student_q)),
        }
    return summary


def _quality(entry):
    """The median localisation quality of a results entry as text ('-' for older results)."""
    value = entry.get("quality_median", entry.get("localisation", {}).get("quality_median"))
    return "-" if value is None else f"{value:.3f}"


def _first_hit(entry):
    """The rank of the first true positive as text, per class ('-' for none or older results), of a
    seed entry or a `top_ranked` result (both keep `first_true_positive_rank`)."""
    ranks = entry.get("first_true_positive_rank") or {}
    return ", ".join("-" if rank is None else str(rank) for rank in ranks.values()) or "-"


def _box_error_lines(models, labels):
    """report.md lines: why each model's found objects miss IoU 0.5 (`evaluation.box_errors`)."""
    rows = [(key, models[key].get("box_errors")) for key in ("teacher", "student", "student_dked") if key in models]
    rows = [(key, e) for key, e in rows if e and e.get("passed") is not None]
    if not rows:
        return []
    lines = [
        "",
        "Why found objects miss IoU 0.5 (each object's highest-scoring detection with IoU > 0.1, "
        "`dked_tf.evaluation.box_errors`): medians of detection / truth length and width, angle error, "
        "centre offset across the axis (truth widths); the last columns: share passing IoU 0.5 had only that "
        "parameter been exact.",
        "",
        "| Methods | found | pass 0.5 | length × | width × | angle (°) | centre across | "
        "exact centre | exact length | exact width | exact angle |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, e in rows:
        fixed = e["passed_if_exact"]
        centre = max(fixed["centre_across"], fixed["centre_along"])
        lines.append(
            f"| {labels[key]} | {e['found']:.2f} | {e['passed']:.2f} | {e['length_ratio_median']:.2f} | "
            f"{e['width_ratio_median']:.2f} | {e['angle_error_median']:.1f} | {e['centre_across_median']:.2f} | "
            f"{centre:.2f} | {fixed['length']:.2f} | {fixed['width']:.2f} | {fixed['angle']:.2f} |"
        )
    return lines + [""]


def _top_ranked_lines(models, labels):
    """report.md lines: what each model's highest-scored detections are (`evaluation.top_ranked`)."""
    rows = [(key, models[key].get("top_ranked")) for key in ("teacher", "student", "student_dked") if key in models]
    rows = [(key, t) for key, t in rows if t and t.get("ranked")]
    if not rows:
        return []
    lines = [
        "",
        "The top of the ranking (`dked_tf.evaluation.top_ranked`): mAP(07)'s first point is the best precision "
        "at any recall, so a detector whose precision falls fast is judged by its first few detections. Rank of "
        "the first true positive (per class), precision among the first k detections, and what the first N are "
        "(N = the ground truths that count): a true positive, a duplicate, a near miss (IoU 0.1-0.5 with an "
        "object) or background. The highest-scored false positives are drawn in "
        "`detections/<model>_top_false_positives.png`.",
        "",
        "| Methods | first TP | P@1 | P@10 | P@100 | N | TP | duplicate | near miss | background |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, t in rows:
        precision = t["precision_at"]
        lines.append(
            f"| {labels[key]} | {_first_hit(t)} | {precision['1']:.2f} | {precision['10']:.2f} | "
            f"{precision['100']:.2f} | {t['ranked']} | {t['true_positive']:.2f} | {t['duplicate']:.2f} | "
            f"{t['near_miss']:.2f} | {t['background']:.2f} |"
        )
    return lines + [""]


def render_report(results, cfg, title, paper, labels):
    """report.md: the paper-style table (Methods | mAP(07) | mAP(12) | Params | GFLOPs |
    latency), the DKED gain, the paper's figures next to ours, seeds, export."""
    models = results.get("models", {})
    lines = [f"# DKED on {title}: teacher, student, distilled student", ""]
    lines.append(f"Dataset: {results.get('dataset', '?')}. Preset: `{cfg.preset}`. Input {cfg.data.image_size} px.")
    lines.append(
        f"Metric: {results.get('metric', {}).get('name', 'rotated VOC AP')}; mAP(07) = 11-point, "
        f"mAP(12) = all-point. Latency: batch 1, forward pass only, this machine's CPU."
    )
    lines.append("")
    lines.append(
        "| Methods | mAP(07) | mAP(12) | Params (M) | GFLOPs | Latency CPU (ms) | Train (s) | Loc. q | Paper mAP |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key in ("teacher", "student", "student_dked"):
        if key not in models:
            continue
        m = models[key]
        paper_label, paper_map = paper[key]
        lines.append(
            f"| {labels[key]} | {100 * m['map07']:.2f} | {100 * m['map12']:.2f} | {m['params'] / 1e6:.2f} | "
            f"{m['gflops']:.2f} | {m['latency_ms_cpu']:.1f} | {m['train_seconds']:.0f} | "
            f"{_quality(m)} | {paper_map:.2f} ({paper_label}) |"
        )
    lines.append("")
    lines.append(
        "Loc. q: median localisation quality of the box regression at the positive cells of the test "
        "images (`dked_tf.evaluation.diagnostics`; 1 = exact box). mAP(07) cannot fall below 9.09 once the "
        "top-ranked detection is a true positive (11-point AP at recall 0), so near that floor q is the "
        "more telling figure."
    )
    lines += _box_error_lines(models, labels)
    lines += _top_ranked_lines(models, labels)
    seed_count = len(results.get("seeds", {}))
    if seed_count > 1 and int(cfg.seed_jobs) > 1:
        lines.append(
            f"Train (s) of the students: wall time while {min(int(cfg.seed_jobs), seed_count)} seeds "
            "trained side by side (one process each, `--jobs`), sharing the CPU cores."
        )
    lines.append("")
    if "student" in models and "student_dked" in models:
        gain07 = 100 * (models["student_dked"]["map07"] - models["student"]["map07"])
        gain12 = 100 * (models["student_dked"]["map12"] - models["student"]["map12"])
        paper_gain = paper["student_dked"][1] - paper["student"][1]
        lines.append(
            f"**DKED gain over the student:** {gain07:+.2f} mAP(07), {gain12:+.2f} mAP(12) "
            f"(paper: {paper['student'][1]:.2f} → {paper['student_dked'][1]:.2f}, {paper_gain:+.2f})."
        )
        if "teacher" in models:
            gap = 100 * (models["teacher"]["map07"] - models["student"]["map07"])
            if gap > 0:
                lines.append(
                    f"Teacher − student gap: {gap:+.2f} mAP(07); the DKED student closes "
                    f"{gain07 / gap * 100:.0f}% of it."
                )
            else:
                lines.append(
                    f"Teacher − student gap: {gap:+.2f} mAP(07): the teacher is NOT better than "
                    "the student in this run, so distillation has nothing to transfer; train the "
                    "teacher longer (`--set teacher_train.epochs=...`) before reading the DKED gain."
                )
        if not summary_has_spread(results):
            lines.append("A single seed: run `--seeds 0 1` to compare the gain with the seed-to-seed spread.")
        lines.append("")
    summary = results.get("seed_summary")
    if summary:
        lines.append("## Seeds")
        lines.append("")
        lines.append(
            "| seed | student mAP(07) | DKED mAP(07) | gain | student mAP(12) | DKED mAP(12) | gain | "
            "student q | DKED q | first TP student / DKED |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for seed, entry in sorted(results.get("seeds", {}).items()):
            if "student" in entry and "student_dked" in entry:
                cells = []
                for metric in ("map07", "map12"):
                    s, d = entry["student"].get(metric), entry["student_dked"].get(metric)
                    cells += (
                        ["-"] * 3
                        if s is None or d is None
                        else [f"{100 * s:.2f}", f"{100 * d:.2f}", f"{100 * (d - s):+.2f}"]
                    )
                lines.append(
                    f"| {seed} | "
                    + " | ".join(cells)
                    + f" | {_quality(entry['student'])} | {_quality(entry['student_dked'])} | "
                    + f"{_first_hit(entry['student'])} / {_first_hit(entry['student_dked'])} |"
                )
        lines.append("")
        lines.append(
            "First TP: rank of the first true positive among all test detections (per class); a true positive "
            "ranked first alone gives 9.09 mAP(07), so near that floor one detection moves a seed's mAP(07) by "
            "several points."
        )
        for metric, label in (("map07", "mAP(07)"), ("map12", "mAP(12)")):
            spread = summary.get("student", {}).get(f"{metric}_spread")
            if spread is None:
                continue
            gains = summary.get(f"dked_gain_{metric}", [])
            beaten = sum(g > spread for g in gains)
            lines.append("")
            lines.append(
                f"{label}: seed-to-seed spread (max − min) of the student {100 * spread:.2f}, of the DKED "
                f"student {100 * summary.get('student_dked', {}).get(f'{metric}_spread', 0):.2f}; "
                f"mean gain {100 * summary.get(f'dked_gain_{metric}_mean', 0):+.2f}; the gain exceeds "
                f"the student's spread on {beaten} of {len(gains)} seeds."
            )
        quality = summary.get("quality")
        if quality:
            lines.append("")
            lines.append(
                f"Localisation quality q: spread of the student {quality['student_spread']:.3f}, of the DKED "
                f"student {quality['student_dked_spread']:.3f}; DKED gain per seed "
                + ", ".join(f"{g:+.3f}" for g in quality["dked_gain"])
                + f" (mean {quality['dked_gain_mean']:+.3f})."
            )
        lines.append("")
    exported = results.get("export")
    if exported:
        lines.append("## Export of the distilled student")
        lines.append("")
        for name, entry in exported.items():
            extra = ", ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                for k, v in entry.items()
                if k not in ("path", "megabytes")
            )
            lines.append(f"- {name}: `{entry['path']}` ({entry['megabytes']:.2f} MB){'; ' + extra if extra else ''}")
        lines.append("")
    lines.append(
        "Pictures: `pr_curves/` (precision-recall per model and metric), `detections/` (test images: ground "
        "truth and detections with score ≥ 0.3; each model's highest-scored false positives, cropped)."
    )
    lines.append("")
    lines.append(
        f"The paper's figures are for the real {title} with paper-scale models; on the synthetic "
        "set and the small CPU presets compare the ordering and the gain, not the absolute values."
    )
    lines.append("")
    return "\n".join(lines)
