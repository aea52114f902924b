#!/usr/bin/env bash
# The authors' BAR-FSQ 10-bit 512-px tokenizer recipe (docs/method.md §2.6) on ImageNet-1k 512 px.
# Hardware: the authors used 8 GPUs x batch 32 (global 256), 200k steps, bf16 — days on 8 x A100/H100-class GPUs.
# Losses: 0.1*L1 + 1.0*MSE + 0.7*SigLIP2 distillation + 10*Gram + 1.1*(1.0*LPIPS + 0.1*ConvNeXt-S logit MSE)/1.1
# + 0.05*GAN (DINO ViT-S/8 + 5 heads, hinge) from step 100k, G and D alternating (docs/guides/training.md).
# Needs, downloaded at first use: SigLIP2, torchvision's VGG16 (Gram, LPIPS; `pip install -e ".[perceptual]"` with a
# torchvision matching your torch), facebook/convnext-small-224 (the official ConvNeXt-S ImageNet-1k weights; the
# authors used torchvision's IMAGENET1K_V1 ConvNeXt-S) and facebook/dino-vits8.
accelerate launch --multi_gpu --num_processes 8 --mixed_precision bf16 examples/tokenizer/train_bar_vq.py \
  --dataset_name imagenet-1k --resize_to 512 --random_crop --random_flip \
  --model_config examples/tokenizer/configs/vq_imagenet_10bits_512.json \
  --init_encoder_from google/siglip2-so400m-patch16-naflex --freeze_encoder_embeddings --fsq_bias_init default \
  --output_dir runs/bar_fsq_10bits_res512 --train_batch_size 32 --max_train_steps 200000 \
  --learning_rate 1e-4 --min_learning_rate 1e-5 --encoder_lr_mult 0.1 --lr_warmup_steps 10000 \
  --adam_beta1 0.9 --adam_beta2 0.999 --adam_weight_decay 0.0 --max_grad_norm 1.0 \
  --use_ema --ema_decay 0.999 --l1_weight 0.1 --l2_weight 1.0 --distill_weight 0.7 --gram_weight 10.0 \
  --perceptual_weight 1.1 --lpips_weight 1.0 --logit_weight 0.1 --logit_model facebook/convnext-small-224 \
  --logit_image_size 224 --adversarial_weight 0.05 --disc_start_step 100000 --disc_model facebook/dino-vits8 \
  --disc_image_size 224 --disc_learning_rate 1e-4 --disc_adam_beta1 0.9 --disc_adam_beta2 0.999 --disc_weight_decay 0.0 \
  --mixed_precision bf16 --checkpointing_steps 5000 --checkpoints_total_limit 3 --resume_from_checkpoint latest \
  --report_to tensorboard "$@"
