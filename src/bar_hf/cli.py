"""`bar-hf` command line."""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from .vq_model_bar import BARVQModel

    # Until the bundled model ships, the demo is an honest tokenizer round trip with a randomly initialised tiny
    # BARVQModel: it shows the data flow image -> bits -> image, not a trained reconstruction.
    torch.manual_seed(0)
    vq = BARVQModel(
        sample_size=32,
        patch_size=4,
        num_bits=10,
        encoder_hidden_size=64,
        encoder_num_layers=2,
        encoder_num_heads=4,
        encoder_intermediate_size=128,
        encoder_num_position_embeddings=64,
        decoder_hidden_size=64,
        decoder_num_layers=2,
        decoder_num_heads=4,
        decoder_intermediate_size=128,
    ).eval()
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    image = np.stack([xx, yy, 1 - xx], 0)[None].astype("float32") * 2 - 1
    with torch.no_grad():
        bits = vq.encode_to_bits(torch.from_numpy(image))
        recon = vq.decode_bits(bits).sample
    print(f"encoded a 32x32 image into {tuple(bits.shape)} bits ({vq.bit_budget} bits; untrained tokenizer)")
    out = ((recon[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    from pathlib import Path

    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(out).save(args.output)
    print(f"wrote {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bar-hf", description="BAR image generation with diffusers/transformers")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the quickstart demo")
    demo.add_argument("--output", default="outputs/demo.png")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
