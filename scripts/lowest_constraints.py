"""The lowest versions setup.py declares for the Hugging Face stack and torch, as pip constraints (`make test-lowest`).

    python scripts/lowest_constraints.py            # prints `name==lowest` lines (a constraints file)
    python scripts/lowest_constraints.py --check    # the installed versions equal them (else exit 1)
    python scripts/lowest_constraints.py --show     # prints the installed versions (CI logs)

setup.py gives these packages a lower bound only (`name>=X`, no upper bound below the newest release): `make test`
runs the suite on the newest releases, `make test-lowest` the core tests on exactly `X`. Stdlib only (it runs before
the packages are installed).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from importlib import metadata
from pathlib import Path

SETUP = Path(__file__).resolve().parents[1] / "setup.py"
#: the packages whose lowest declared version is tested
PACKAGES = (
    "torch", "diffusers", "transformers", "huggingface_hub", "accelerate", "datasets", "peft", "evaluate",
)  # fmt: skip
SHOWN = (*PACKAGES, "gradio", "selenium")


def _requirements() -> list[str]:
    tree = ast.parse(SETUP.read_text(encoding="utf-8"))
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    keywords = {k.arg: k.value for k in call.keywords}
    requirements = list(ast.literal_eval(keywords["install_requires"]))
    for extra in ast.literal_eval(keywords["extras_require"]).values():
        requirements += extra
    return requirements


def lowest_versions() -> dict[str, str]:
    """`{package: lowest version}` from setup.py's `package>=version` requirements of `PACKAGES`."""
    found = {}
    for requirement in _requirements():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)(\s*,.*)?", requirement.strip())
        if match and match.group(1) in PACKAGES:
            found[match.group(1)] = match.group(2)
    missing = [p for p in PACKAGES if p not in found]
    if missing:
        raise SystemExit(f"setup.py declares no `>=` lower bound for {missing}")
    return found


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _same(installed: str, wanted: str) -> bool:
    """`2.13.0+cpu` is `2.13.0`; `5.23` is `5.23.0`."""
    parts = lambda v: [int(x) for x in re.findall(r"\d+", v.split("+")[0])[:3]]  # noqa: E731
    a, b = parts(installed), parts(wanted)
    return a + [0] * (3 - len(a)) == b + [0] * (3 - len(b))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="check that the installed versions are the lowest")
    parser.add_argument("--show", action="store_true", help="print the installed versions")
    args = parser.parse_args(argv)
    if args.show:
        print("installed: " + ", ".join(f"{n} {_installed(n) or '-'}" for n in SHOWN))
        return 0
    lowest = lowest_versions()
    if args.check:
        wrong = {n: (_installed(n), v) for n, v in lowest.items() if not _same(_installed(n) or "0", v)}
        for name, (installed, wanted) in wrong.items():
            print(f"{name}: installed {installed}, lowest declared {wanted}", file=sys.stderr)
        print("lowest versions installed: " + ", ".join(f"{n} {_installed(n)}" for n in lowest))
        return 1 if wrong else 0
    for name, version in lowest.items():
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
