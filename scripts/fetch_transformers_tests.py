"""Fetch transformers' generic test suite (the `tests/` folder of its source distribution) once, outside the repo.

transformers ships `ModelTesterMixin` / `ConfigTester` only in its sdist on PyPI, not in the wheel. This downloads the
sdist of the *installed* version with pip (`pip download --no-deps --no-binary :all:`), extracts its `tests/` folder to
`~/.cache/bar_hf/transformers-<version>-tests/tests` (or `$BAR_HF_TRANSFORMERS_TESTS`) and prints that folder.
Nothing upstream is copied into bar_hf; `tests/test_transformers_upstream.py` imports it from the cache.

    python scripts/fetch_transformers_tests.py          # idempotent; `make test` runs it
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers


def default_cache_dir(version: str = transformers.__version__) -> Path:
    override = os.environ.get("BAR_HF_TRANSFORMERS_TESTS")
    if override:
        return Path(override)
    return Path.home() / ".cache" / "bar_hf" / f"transformers-{version}-tests"


def fetch(version: str, target: Path) -> Path:
    """Download and extract the sdist's `tests/` into `target/tests`; no-op when already there."""
    tests_dir = target / "tests"
    if not (tests_dir / "test_modeling_common.py").is_file():
        _download(version, target)
    # the repository's `tests/__init__.py` (empty) is not in the sdist; `test_configuration_common.py` needs the file
    (tests_dir / "__init__.py").touch()
    return tests_dir


def _download(version: str, target: Path) -> None:
    tests_dir = target / "tests"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             f"transformers=={version}", "--dest", tmp],
            check=True,
        )  # fmt: skip
        archives = list(Path(tmp).glob(f"transformers-{version}.tar.gz"))
        if not archives:
            raise RuntimeError(f"pip did not produce transformers-{version}.tar.gz in {tmp}")
        staging = Path(tempfile.mkdtemp(dir=target.parent if target.parent.exists() else None))
        with tarfile.open(archives[0]) as archive:
            prefix = f"transformers-{version}/tests/"
            members = [m for m in archive.getmembers() if m.name.startswith(prefix) and (m.isfile() or m.isdir())]
            for member in members:
                member.name = member.name[len(f"transformers-{version}/") :]
            archive.extractall(staging, members=members, filter="data")
        target.mkdir(parents=True, exist_ok=True)
        os.replace(staging / "tests", tests_dir)  # atomic: a half-extracted folder is never visible
        staging.rmdir()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--version", default=transformers.__version__, help="transformers version (default: installed)"
    )
    parser.add_argument("--cache_dir", type=Path, default=None, help="default: ~/.cache/bar_hf/transformers-V-tests")
    args = parser.parse_args(argv)
    target = args.cache_dir or default_cache_dir(args.version)
    target.parent.mkdir(parents=True, exist_ok=True)
    print(fetch(args.version, target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
