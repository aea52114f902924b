"""What the training scripts share (kept out of the inference package's import path): data (`data`), atomic
checkpoints and exact resume (`checkpoints`), flags/accelerator/tracker helpers (`utils`), the tokenizer's
perceptual and adversarial losses (`losses`, `discriminator`) and LoRA fine-tuning (`lora`)."""
