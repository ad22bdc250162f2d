#!/usr/bin/env bash
# Issue 10's compute-optimal size sweep for the VAE (the generator's is doom_size_sweep.sh): the
# Doom VAE from scratch at half, the shipped and twice the shipped width (every 2D, temporal and
# light-decoder width scaled; the shipped 32 latent channels and block counts kept), each for
# the same wall time on the same data. Judged on its validation PSNR (full and light decoder,
# the same 8 held-out batches) and the latents' step-change ratio (logged as latent_change).
#   bash training/recipes/doom_vae_size_sweep.sh          # 3 x 25 min
# A killed arm resumes from its last checkpoint (the budget is per call, as in doom_size_sweep).
set -euo pipefail
DATA=${DATA:-data/doom_mix}
OUT=${OUT:-runs/doom_vae_size}
ARMS=${ARMS:-half base double}
MINUTES=${MINUTES:-25}
THREADS=${THREADS:-1}
PRECISION=${PRECISION:-bf16}
# hi enc temporal dec light_temporal light_dec: the six widths of VAEConfig
declare -A WIDTHS=([half]="8 32 48 32 32 16" [base]="16 64 96 64 64 32" [double]="32 128 192 128 128 64")
for arm in $ARMS; do
  read -r hi enc temporal dec light_temporal light_dec <<< "${WIDTHS[$arm]}"
  # shellcheck disable=SC2086
  aapt-world train data.root="$DATA" run.out_dir="$OUT/$arm" run.threads="$THREADS" \
    run.progress=false run.precision="$PRECISION" stage=vae \
    model.vae.latent_channels=32 model.dit.latent_channels=32 model.vae.enc_blocks=2 \
    model.vae.dec_blocks=3 model.vae.light_dec_blocks=2 model.vae.hi_channels="$hi" \
    model.vae.enc_channels="$enc" model.vae.temporal_channels="$temporal" \
    model.vae.dec_channels="$dec" model.vae.light_temporal_channels="$light_temporal" \
    model.vae.light_dec_channels="$light_dec" \
    run.steps=100000 run.batch_size=4 data.clip_steps=4 data.val_batches=8 run.log_every=25 \
    run.eval_every=100 run.ckpt_every=50 optim.lr=1e-3 optim.warmup_steps=100 \
    vae.kl_weight=1e-4 vae.decoder_noise=0.1 run.max_minutes="$MINUTES"
done
echo "doom_vae_size_sweep: validation PSNR in $OUT/*/vae/val_log.csv"
