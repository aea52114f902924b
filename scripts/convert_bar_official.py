#!/usr/bin/env python
"""Convert the authors' BAR checkpoints (generator + BAR-FSQ tokenizer `.bin` files) into a `BARPipeline` folder.

Example (BAR-B, evaluated by the authors with the fine-tuned tokenizer):

    python scripts/convert_bar_official.py \
        --generator_checkpoint assets/generator/bar_b.bin --generator_config configs/generator/bar_b.yaml \
        --tokenizer_checkpoint assets/tokenizer/bar_fsq_16bits_ft.bin \
        --tokenizer_config configs/tokenizer/bar_fsq_16bits.yaml \
        --preset bar-b --output_dir converted/bar-b

Same code as `bar-hf convert`; see docs/guides/convert.md.
"""

import argparse
import sys

from bar_hf.conversion.convert import add_convert_arguments, run_convert


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_convert_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_convert(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"convert_bar_official.py: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
