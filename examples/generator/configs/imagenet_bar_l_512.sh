#!/usr/bin/env bash
# The authors' bar-l-512 recipe (docs/method.md §7): global batch 2048, AdamW (0.9, 0.96), wd 0.03, lr 4e-4, warmup 31250,
# cosine to 1e-5 at step 125000, bf16, no EMA, label dropout 0.1, random orders annealed to raster (62500 -> 93750).
# Hardware: the authors' per-GPU batch 32 implies 64 GPUs (e.g. 8 nodes x 8 GPUs); wall-clock NOT FOUND.
# Sampling defaults stored in the pipeline = the authors' evaluation settings (README, docs/method.md §4.5).
accelerate launch --multi_gpu --num_processes 64 --mixed_precision bf16 examples/generator/train_bar.py \
  --pretokenized_dataset runs/imagenet_tokens_10bits_512 --vqvae_model_name_or_path runs/bar_fsq_10bits_res512/vqvae \
  --preset bar-l-512 --output_dir runs/bar-l-512 --train_batch_size 32 --max_train_steps 125000 \
  --learning_rate 4e-4 --min_learning_rate 1e-5 --lr_warmup_steps 31250 --adam_beta1 0.9 --adam_beta2 0.96 \
  --adam_weight_decay 0.03 --max_grad_norm 1.0 --mixed_precision bf16 --seed 42 \
  --random_order_anneal_start 62500 --random_order_anneal_end 93750 \
  --guidance_scale 4.2 --temperature 2.8 --tokens_allocation "[2,2,2,4]" \
  --checkpointing_steps 5000 --checkpoints_total_limit 3 --resume_from_checkpoint latest --report_to tensorboard "$@"
