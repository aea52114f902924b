#!/usr/bin/env bash
# The authors' bar-b-2 recipe (docs/method.md §7): global batch 2048, AdamW (0.9, 0.96), wd 0.03, lr 4e-4, warmup 62500,
# cosine to 1e-5 at step 250000, bf16, no EMA, label dropout 0.1, random orders annealed to raster (125000 -> 187500).
# Hardware: the authors' per-GPU batch 128 implies 16 GPUs (e.g. 2 nodes x 8 GPUs); wall-clock NOT FOUND.
# Sampling defaults stored in the pipeline = the authors' evaluation settings (README, docs/method.md §4.5).
accelerate launch --multi_gpu --num_processes 16 --mixed_precision bf16 examples/generator/train_bar.py \
  --pretokenized_dataset runs/imagenet_tokens_16bits --vqvae_model_name_or_path runs/bar_fsq_16bits/vqvae \
  --preset bar-b-2 --output_dir runs/bar-b-2 --train_batch_size 128 --max_train_steps 250000 \
  --learning_rate 4e-4 --min_learning_rate 1e-5 --lr_warmup_steps 62500 --adam_beta1 0.9 --adam_beta2 0.96 \
  --adam_weight_decay 0.03 --max_grad_norm 1.0 --mixed_precision bf16 --seed 42 \
  --random_order_anneal_start 125000 --random_order_anneal_end 187500 \
  --guidance_scale 5.5 --temperature 2.0 --tokens_allocation "[16,16,16,16]" \
  --checkpointing_steps 5000 --checkpoints_total_limit 3 --resume_from_checkpoint latest --report_to tensorboard "$@"
