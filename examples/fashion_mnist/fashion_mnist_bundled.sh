#!/usr/bin/env bash
# Recipe of the bundled Fashion-MNIST model (src/bar_hf/bundled/bar-fashion-mnist), trained on this project's
# 2-core CPU machine (no GPU); wall-clock times in docs/guides/training.md.
# Needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist).
set -e
# 1) tokenizer: 32x32 grayscale, 4x4 patches -> 8x8 tokens of 10 bits (640 bits per image); one thread
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
OMP_NUM_THREADS=1 .venv/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
  examples/tokenizer/train_bar_vq.py --dataset_name fashion_mnist_local --model_config examples/tokenizer/configs/vq_fashion_mnist.json \
  --output_dir runs/vq_fmnist --max_train_steps 2500 --train_batch_size 64 --learning_rate 1e-3 --encoder_lr_mult 1.0 \
  --min_learning_rate 1e-5 --lr_warmup_steps 150 --use_ema --ema_decay 0.999 --random_flip --checkpointing_steps 500 \
  --checkpoints_total_limit 2 --logging_steps 50 --seed 0 --resume_from_checkpoint latest
# 2) pretokenize the 60k training images and their flips; 3) generator (raster order only), two threads
export OMP_NUM_THREADS=2
.venv/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
  examples/generator/pretokenize.py --vqvae_model_name_or_path runs/vq_fmnist/vqvae --dataset_name fashion_mnist_local \
  --output_dir runs/tokens_fmnist --batch_size 500 --shard_size 10000
.venv/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
  examples/generator/train_bar.py --pretokenized_dataset runs/tokens_fmnist --vqvae_model_name_or_path runs/vq_fmnist/vqvae \
  --model_config examples/generator/configs/bar_fashion_mnist.json --output_dir runs/bar_fmnist --max_train_steps 2400 \
  --train_batch_size 64 --learning_rate 1e-3 --min_learning_rate 1e-5 --lr_warmup_steps 150 --adam_beta2 0.96 \
  --adam_weight_decay 0.03 --guidance_scale 2.0 --temperature 1.0 --num_inference_steps 4 \
  --checkpointing_steps 200 --checkpoints_total_limit 2 --validation_steps 800 --num_validation_images 4 \
  --logging_steps 50 --seed 42 --resume_from_checkpoint latest
# 4) editing: continue the generator with "kept first" orders of random editing masks for half of the samples
#    (BARInpaintPipeline's default order for this model); the shipped transformer is runs/bar_fmnist_edit/pipeline.
#    One thread (measured while other jobs shared the machine).
OMP_NUM_THREADS=1 .venv/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
  examples/generator/train_bar.py --pretokenized_dataset runs/tokens_fmnist --vqvae_model_name_or_path runs/vq_fmnist/vqvae \
  --pretrained_model_name_or_path runs/bar_fmnist/pipeline/transformer --output_dir runs/bar_fmnist_edit \
  --max_train_steps 400 --train_batch_size 64 --learning_rate 3e-4 --min_learning_rate 1e-5 --lr_warmup_steps 30 \
  --adam_beta2 0.96 --adam_weight_decay 0.03 --guidance_scale 3.0 --temperature 1.8 --num_inference_steps 4 \
  --edit_order_ratio 0.5 --checkpointing_steps 100 --checkpoints_total_limit 2 --logging_steps 25 --seed 43 \
  --resume_from_checkpoint latest
