#!/usr/bin/env bash
# Pretokenize ImageNet-1k train (image + horizontal flip) with the 16-bit tokenizer, as the authors (docs/method.md §7).
# Hardware: any number of GPUs (accelerate splits the shards); ~1.28M images. Resumable: finished shards are skipped.
# Note: the authors use ADM center cropping; examples/generator/pretokenize.py resizes the shorter edge (bicubic) + center-crops.
accelerate launch --multi_gpu --num_processes 8 examples/generator/pretokenize.py \
  --vqvae_model_name_or_path runs/bar_fsq_16bits/vqvae --dataset_name imagenet-1k \
  --output_dir runs/imagenet_tokens_16bits --batch_size 256 --shard_size 20000 "$@"
