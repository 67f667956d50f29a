"""study.md: the comparison table with intervals, the targets, the interference table."""

from __future__ import annotations

from typing import Any


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _ci(pair: tuple[float, float] | list[float]) -> str:
    return f"[{100 * pair[0]:.1f}, {100 * pair[1]:.1f}]"


def _mb(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB"


def _table(arms: dict[str, Any], tasks: list[str]) -> list[str]:
    lines = [
        "| run | lr | " + " | ".join(tasks) + " | avg | 95% interval | bytes (mean) | "
        "validation avg |",
        "|---|---|" + "---|" * (len(tasks) + 4),
    ]
    for label, row in arms.items():
        lines.append(
            f"| {label} | {row.get('lr', '-')} | "
            + " | ".join(_pct(row["per_task"][t]) for t in tasks)
            + f" | {_pct(row['mean'])} | {_ci(row['interval'])} | "
            + f"{_mb(row.get('bytes_mean'))} | {_pct(row.get('validation_mean'))} |"
        )
    return lines


def _differences(differences: dict[str, Any], only: set[str] | None = None) -> list[str]:
    lines = []
    for name, d in differences.items():
        # SO-LoRA's auto gate against every other run, and the oracle gate against it.
        if not (
            name.startswith("solora (auto gate) - ")
            or name == "solora (oracle gate) - solora (auto gate)"
        ):
            continue
        if only is not None and name.split(" - ", 1)[1] not in only:
            continue
        lines.append(f"- {name}: {100 * d['mean']:+.1f} {_ci(d['interval'])} ({d['verdict']})")
    return lines


def markdown(summary: dict[str, Any]) -> str:
    arms = summary["arms"]
    tasks = sorted(summary["examples_per_task"])
    seeds = summary["seeds"]
    lines = [
        f"Seeds {seeds}; scored examples per task {summary['examples_per_task']}; "
        "accuracy in % (mean over seeds, 95% bootstrap interval over examples and seeds).",
        "",
        *_table(arms, tasks),
    ]
    fewer = summary.get("fewer_seeds")
    if fewer:
        lines += [
            "",
            f"Runs with fewer seeds ({', '.join(fewer['partial_runs'])}), compared with the "
            f"others on the seeds they all have, {fewer['seeds']}:",
            "",
            *_table(fewer["arms"], tasks),
            "",
            *_differences(fewer["differences"], set(fewer["partial_runs"])),
        ]
    lines += ["", "| target | measured | met? |", "|---|---|---|"]
    for t in summary["targets"]:
        lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'no'} |")
    if summary.get("interference"):
        lines += [
            "",
            "Interference: accuracy minus the task's own expert (hard MoE's, trained on that "
            "task's data alone), points, with 95% intervals.",
            "",
            "| run | " + " | ".join(tasks) + " |",
            "|---|" + "---|" * len(tasks),
        ]
        for label, per_task in summary["interference"].items():
            cells = [
                f"{100 * per_task[t]['mean']:+.1f} {_ci(per_task[t]['interval'])}" for t in tasks
            ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if summary.get("selection"):
        lines += [
            "",
            "Learning-rate choice (seed 0, final validation accuracy; the best per method "
            "was kept):",
            "",
            "| method | lr | validation avg |",
            "|---|---|---|",
        ]
        chosen = summary.get("chosen_lr", {})
        tops = {
            r["method"]: max(x["lr"] for x in summary["selection"] if x["method"] == r["method"])
            for r in summary["selection"]
        }
        for row in summary["selection"]:
            mark = ""
            if chosen.get(row["method"]) == row["lr"]:
                mark = (
                    " (chosen, top of the grid)"
                    if row["lr"] == tops[row["method"]]
                    else " (chosen)"
                )
            lines.append(f"| {row['method']} | {row['lr']}{mark} | {_pct(row['validation'])} |")
    pareto = summary.get("pareto")
    if pareto:
        lines += [
            "",
            "Accuracy against bytes (SO-LoRA at each density with the learning rate scaled "
            "as 1/density from the chosen one; each row over its own seeds, with its paired "
            "difference to hard MoE on those seeds):",
            "",
            "| run | density | lr | seeds | avg | 95% interval | bytes (mean) | minus hard MoE |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for p in sorted(pareto["points"], key=lambda p: p["bytes_mean"]):
            density = "-" if p["density"] is None else f"{p['density']:g}"
            gap = p.get("minus_hard_moe")
            gap_text = "-" if not gap else f"{100 * gap['mean']:+.1f} {_ci(gap['interval'])}"
            lines.append(
                f"| {p['label']} | {density} | {p['lr']:.3g} | {len(p['seeds'])} | "
                f"{_pct(p['mean'])} | {_ci(p['interval'])} | {_mb(p['bytes_mean'])} | "
                f"{gap_text} |"
            )
    lines += ["", "Paired differences (row minus column run, points, 95% interval):", ""]
    lines += _differences(summary["differences"])
    return "\n".join(lines) + "\n"
