"""Atomic training checkpoints and exact resume: `checkpoint-N` folders with a completion marker (sizes and SHA-256 of
every file, verified before a resume), and the batches of an epoch replayed so a resumed run continues bit for bit like
an uninterrupted one (CPU, fixed seeds, one thread: see docs/guides/training.md)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
#: Written last into a checkpoint folder (before the folder gets its final name): the training position, the size of
#: every file (`files`) and its SHA-256 (`sha256`), so that a folder missing it, or with a missing or truncated file, is
#: never resumed from, and one whose bytes changed is refused by [`verify_checkpoint`].
CHECKPOINT_MARKER = "checkpoint_complete.json"
_TMP_PREFIX = ".tmp-"


class CorruptCheckpointError(ValueError):
    """A checkpoint file whose SHA-256 differs from the one recorded in the completion marker."""


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checkpoint(path: str | os.PathLike) -> dict:
    """The completion marker of a complete checkpoint after checking every file against its recorded SHA-256.

    Raises a `ValueError` when the checkpoint is incomplete and a [`CorruptCheckpointError`] naming the first file
    whose content changed (e.g. a flipped bit: same size, other bytes). Markers written before checksums were recorded
    (sizes only) are accepted with a warning."""
    path = Path(path)
    marker = read_checkpoint_marker(path)
    if marker is None:
        raise ValueError(f"{path} is not a complete checkpoint (no valid {CHECKPOINT_MARKER}).")
    checksums = marker.get("sha256")
    if checksums is None:
        logger.warning("%s records no checksums (written by an older version): its content is not verified", path)
        return marker
    for name, expected in sorted(checksums.items()):
        actual = file_sha256(path / name)
        if actual != expected:
            raise CorruptCheckpointError(
                f"checkpoint file {path / name} is corrupt: its SHA-256 is {actual}, the completion marker recorded "
                f"{expected} when it was written; resume from another checkpoint (`--resume_from_checkpoint "
                "checkpoint-<step>`) or delete this one."
            )
    return marker


def read_checkpoint_marker(path: str | os.PathLike) -> dict | None:
    """The completion marker of a checkpoint folder, or None when the checkpoint is incomplete (no marker, or a file
    it lists is missing or has another size)."""
    path = Path(path)
    try:
        marker = json.loads((path / CHECKPOINT_MARKER).read_text())
    except (OSError, ValueError):
        return None
    for name, size in marker.get("files", {}).items():
        file = path / name
        if not file.is_file() or file.stat().st_size != size:
            return None
    return marker


def list_checkpoints(output_dir: str | os.PathLike, complete_only: bool = False) -> list[Path]:
    """`checkpoint-N` folders sorted by N (only the complete ones with `complete_only`)."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    paths = [p for _, p in sorted(found)]
    return [p for p in paths if read_checkpoint_marker(p) is not None] if complete_only else paths


def prune_checkpoints(output_dir: str | os.PathLike, limit: int | None) -> None:
    """Keep the `limit` newest complete checkpoints; incomplete `checkpoint-N` folders older than the newest complete
    one are deleted too (they cannot be resumed from). Call it only after the new checkpoint is complete."""
    if limit is None:
        return
    complete = list_checkpoints(output_dir, complete_only=True)
    doomed = complete[: max(0, len(complete) - limit)]
    if complete:
        newest = checkpoint_step(complete[-1])
        doomed += [p for p in list_checkpoints(output_dir) if p not in complete and checkpoint_step(p) < newest]
    for path in doomed:
        shutil.rmtree(path)


def resolve_resume_checkpoint(output_dir: str | os.PathLike, resume: str | None) -> Path | None:
    """`"latest"` → the newest complete `checkpoint-N` (None if there is none; incomplete ones are skipped with a
    warning); a path or folder name → that checkpoint, which must be complete."""
    if resume is None:
        return None
    if resume == "latest":
        for path in reversed(list_checkpoints(output_dir)):
            if read_checkpoint_marker(path) is not None:
                return path
            logger.warning("skipping the incomplete checkpoint %s (interrupted while it was written)", path)
        return None
    path = Path(resume)
    if not path.is_dir():
        path = Path(output_dir) / resume
    if not path.is_dir():
        raise ValueError(
            f"`--resume_from_checkpoint` must be 'latest' or an existing checkpoint folder, got {resume!r}."
        )
    if read_checkpoint_marker(path) is None:
        raise ValueError(
            f"`--resume_from_checkpoint` {resume!r} is incomplete (no valid {CHECKPOINT_MARKER}: the run was "
            "interrupted while writing it, or a file was removed or truncated); use 'latest' or an older checkpoint."
        )
    return path


def checkpoint_step(path: Path) -> int:
    match = _CHECKPOINT.match(path.name)
    if match is None:
        raise ValueError(f"checkpoint folder names must look like 'checkpoint-<step>', got {path.name!r}.")
    return int(match.group(1))


def _fsync(path: Path) -> None:
    """Flush a file or a folder entry to disk (best effort where the OS cannot open folders)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _finalize_checkpoint(tmp: Path, final: Path, marker: dict) -> None:
    """fsync the files of `tmp`, write the marker (with every file's size and SHA-256) last, then rename `tmp` to
    `final`."""
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    for file in files:
        _fsync(file)
    marker = {
        **marker,
        "files": {str(p.relative_to(tmp)): p.stat().st_size for p in files},
        "sha256": {str(p.relative_to(tmp)): file_sha256(p) for p in files},
    }
    (tmp / CHECKPOINT_MARKER).write_text(json.dumps(marker, indent=2))
    _fsync(tmp / CHECKPOINT_MARKER)
    _fsync(tmp)
    if final.exists():  # an incomplete leftover, or a checkpoint of the same step from before a resume
        stale = final.with_name(f"{_TMP_PREFIX}stale-{final.name}")
        shutil.rmtree(stale, ignore_errors=True)
        final.rename(stale)
        shutil.rmtree(stale)
    tmp.rename(final)
    _fsync(final.parent)


def save_training_checkpoint(
    accelerator, output_dir: Path, progress: TrainingProgress, total_limit: int | None
) -> Path:
    """Atomically write `checkpoint-<step>`: every process calls `accelerator.save_state` into a temporary folder
    (each saves its own RNG state), the main process writes the completion marker, renames the folder and only then
    prunes old checkpoints down to `total_limit`."""
    final = output_dir / f"checkpoint-{progress.global_step}"
    tmp = output_dir / f"{_TMP_PREFIX}{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _finalize_checkpoint(tmp, final, progress.state_dict())
        for leftover in output_dir.glob(f"{_TMP_PREFIX}*checkpoint-*"):  # from runs killed while saving
            shutil.rmtree(leftover, ignore_errors=True)
        prune_checkpoints(output_dir, total_limit)
    accelerator.wait_for_everyone()
    return final


# ------------------------------------------------------------------------------------------------- input validation


class TrainingProgress:
    """Where a run is: optimizer steps done, the epoch, and the batches of that epoch already consumed (micro-batches
    with gradient accumulation). Stored in each checkpoint's marker; [`training_batches`] resumes from it."""

    def __init__(self, global_step: int = 0, epoch: int = 0, batches_in_epoch: int = 0):
        self.global_step, self.epoch, self.batches_in_epoch = global_step, epoch, batches_in_epoch

    def state_dict(self) -> dict:
        return {"global_step": self.global_step, "epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch}


def resume_training_state(accelerator, output_dir: Path, resume: str | None) -> TrainingProgress:
    """Load `--resume_from_checkpoint` (if any: model, optimizer, LR scheduler, RNG states, registered objects) after
    verifying its checksums ([`verify_checkpoint`]) and return the [`TrainingProgress`] it was saved at.

    `"latest"` without any complete checkpoint in `output_dir` starts from step 0 and says so (logged and printed)."""
    checkpoint = resolve_resume_checkpoint(output_dir, resume)
    if checkpoint is None:
        if resume is not None:
            message = f"no checkpoint found in {output_dir}, starting from step 0"
            logger.warning(message)
            accelerator.print(message)
        return TrainingProgress()
    marker = verify_checkpoint(checkpoint)
    accelerator.print(f"resuming from {checkpoint} (step {marker['global_step']})")
    accelerator.load_state(str(checkpoint))
    return TrainingProgress(marker["global_step"], marker["epoch"], marker["batches_in_epoch"])


def _batches_without_touching_rng(dataloader):
    """Iterate `dataloader` with the global torch RNG state left as it was before the first batch.

    Creating a `DataLoader` iterator draws its worker base seed from the global torch RNG. An uninterrupted run
    drew it at the start of the epoch, before the state a mid-epoch checkpoint holds; re-drawing it after
    `load_state` would shift every later random draw (MBM masks, label dropout, orders) of a resumed run.
    """
    iterator = iter(dataloader)
    state = torch.get_rng_state()
    try:
        first = next(iterator)
    except StopIteration:
        return
    finally:
        torch.set_rng_state(state)
    yield first
    yield from iterator


def training_batches(accelerator, dataloader, progress: TrainingProgress, batch_flag: str = "--train_batch_size"):
    """Batches for ever, epoch after epoch (each reshuffled by its seed), starting where `progress` stands.

    Updates `progress.epoch` / `progress.batches_in_epoch` as it goes (the caller counts `global_step`) and raises a
    `ValueError` naming `batch_flag` when an epoch yields no batch at all (instead of looping forever).
    """
    resumed = progress.batches_in_epoch > 0
    while True:
        if hasattr(dataloader, "set_epoch"):
            dataloader.set_epoch(progress.epoch)
        if resumed:
            loader = accelerator.skip_first_batches(dataloader, progress.batches_in_epoch)
            batches = _batches_without_touching_rng(loader)
        else:
            batches = dataloader
        count = 0
        for batch in batches:
            count += 1
            progress.batches_in_epoch += 1
            yield batch
        if count == 0 and not resumed:
            raise ValueError(
                f"the training data yields no batch (an empty dataset, or fewer examples than `{batch_flag}` with "
                "incomplete batches dropped); use a smaller batch size or more data."
            )
        progress.epoch, progress.batches_in_epoch, resumed = progress.epoch + 1, 0, False
