"""Run a script with a SIGKILL injected at a chosen point (crash tests; nothing of this is in the library or scripts).

    python tests/kill_after.py [--only-output-name NAME] POINT STEP SCRIPT [SCRIPT ARGS ...]

POINT:
  checkpoint          right after checkpoint STEP is complete (the run dies between two steps)
  before-checkpoint   when checkpoint STEP is about to be written (the steps since the previous checkpoint are lost)
  checkpoint-files    after the files of checkpoint STEP are written, before it is marked complete
  shard               `pretokenize.py`: right after shard STEP is complete

It replaces `bar_hf.training.checkpoints.save_training_checkpoint` / `_finalize_checkpoint` (or
`datasets.Dataset.save_to_disk` for `shard`) by wrappers that call `os.kill(os.getpid(), SIGKILL)` at that point, then
runs SCRIPT as `__main__` with `runpy.run_path` (its folder first on `sys.path`, as `python SCRIPT` does). With
`--only-output-name`, only checkpoints of an output folder with that name count (one cell of the head study).
Torch runs with one thread: the thread count under which resumed runs are promised bit-identical.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path

import torch

POINTS = ("checkpoint", "before-checkpoint", "checkpoint-files", "shard")


def kill() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str, step: int, only_output_name: str | None) -> None:
    import bar_hf.training.checkpoints as checkpoints

    save, finalize = checkpoints.save_training_checkpoint, checkpoints._finalize_checkpoint

    def chosen(output_dir, global_step: int) -> bool:
        return global_step == step and only_output_name in (None, Path(output_dir).name)

    def save_training_checkpoint(accelerator, output_dir, progress, total_limit):
        if point == "before-checkpoint" and chosen(output_dir, progress.global_step):
            kill()
        result = save(accelerator, output_dir, progress, total_limit)
        if point == "checkpoint" and chosen(output_dir, progress.global_step):
            kill()
        return result

    def _finalize_checkpoint(tmp, final, marker):
        if point == "checkpoint-files" and chosen(Path(final).parent, marker["global_step"]):
            kill()
        return finalize(tmp, final, marker)

    checkpoints.save_training_checkpoint = save_training_checkpoint
    checkpoints._finalize_checkpoint = _finalize_checkpoint
    if point == "shard":
        import datasets

        save_to_disk = datasets.Dataset.save_to_disk

        def save_shard(self, path, *args, **kwargs):
            if Path(path).name == f".tmp-shard-{step + 1:05d}":  # shard `step` was renamed into place just before
                kill()
            return save_to_disk(self, path, *args, **kwargs)

        datasets.Dataset.save_to_disk = save_shard


def main(argv: list[str]) -> None:
    only_output_name = None
    if argv[:1] == ["--only-output-name"]:
        only_output_name, argv = argv[1], argv[2:]
    if len(argv) < 3 or argv[0] not in POINTS:
        raise SystemExit(__doc__)
    point, step, script, *script_args = argv
    torch.set_num_threads(1)
    install(point, int(step), only_output_name)
    sys.argv = [script, *script_args]
    sys.path[0] = str(Path(script).resolve().parent)
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
