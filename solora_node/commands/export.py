"""`solora-node export`: a checkpoint's experts as stock PEFT LoRA folders (and merged models)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from solora_node.commands._common import add_checkpoint_args, emit_json

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export experts as stock PEFT LoRA folders (optionally merged models)"
    )
    add_checkpoint_args(parser)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--task", help="export this task's expert")
    which.add_argument("--all", action="store_true", help="export every task's expert")
    parser.add_argument("--out", type=Path, required=True, help="a new (or empty) folder")
    parser.add_argument(
        "--merged",
        action="store_true",
        help="also save the base model with each exported expert merged (save_pretrained)",
    )
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip loading the export back with stock PEFT to compare logits",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    # Imported here so that `solora-node --help` stays fast.
    import torch

    from solora_node.adapter.checkpoint import (
        config_from_manifest,
        load_checkpoint,
        read_manifest,
    )
    from solora_node.export.bundle import check_out_folder, select_tasks, write_export

    # Refuse a bad folder, task or output before spending seconds on loading the model.
    manifest = read_manifest(args.checkpoint)
    tasks = select_tasks(config_from_manifest(manifest).tasks, None if args.all else args.task)
    check_out_folder(args.out)
    torch.set_num_threads(args.threads)
    loaded = load_checkpoint(args.checkpoint, args.cache_dir)
    result = write_export(loaded, args.checkpoint, args.out, tasks, args.cache_dir, args.merged)
    report: dict[str, object] = {
        "out": str(result.out),
        "tasks": tasks,
        "round": result.manifest["round"],
        "fingerprint": result.manifest["fingerprint"],
        "merged": args.merged,
    }
    if args.verify:
        from solora_node.export.verify import (
            load_peft_experts,
            logit_differences,
            merged_matches_adapter,
        )

        base = manifest["base_model"]
        peft = load_peft_experts(
            result.out, tasks, str(base.get("name")), int(base.get("seed", 0)), args.cache_dir
        )
        differences, effects = logit_differences(loaded, peft, tasks)
        report["max_abs_logit_diff"] = differences
        report["expert_vs_base_max_abs_logit_diff"] = effects
        if args.merged:
            report["merged_greedy_tokens_equal"] = {
                t: merged_matches_adapter(peft, result.out, t) for t in tasks
            }
    if args.json:
        emit_json(report)
    else:
        log.info("exported %s to %s", ", ".join(tasks), result.out)
        for task, diff in dict(report.get("max_abs_logit_diff", {})).items():  # type: ignore[call-overload]
            log.info("stock PEFT vs SO-LoRA, task %s: max |logit diff| %.2e", task, diff)
        print(result.out)
    return 0
