#!/usr/bin/env bash
# Issue 10's pixel-term lever as a fine-tune: a trained Doom stage 1 (SOURCE_RUN's diffusion
# stage, e.g. the t-near-1 run) continued MINUTES with diffusion.pixel_weight=WEIGHT and, as the
# control, MINUTES without it (same LR and settings), each exported at 1 Euler step and laddered.
#   SOURCE_RUN=runs/doom_t1 bash training/recipes/doom_pixel_finetune.sh   # 2 x (15 + ~6) min
# Rerunning continues both arms MINUTES more from their checkpoints (ladders in ladder-<step>).
# ARMS="pixel": the pixel arm only. The committed pixel stage 1 on the strafer mix (a data arm;
# its init is worlds/doom-training/stage1_pixel itself, which the run's init/ may hold already):
#   mkdir -p runs/px_strafe_src runs/doom_pixel_strafe/pixel2/init
#   cp worlds/doom-training/stage1_pixel/* runs/doom_pixel_strafe/pixel2/init/
#   ln -sfn "$(realpath runs/doom_px/vae)" runs/px_strafe_src/vae
#   ln -sfn "$(realpath runs/doom_px_latents_doom_mix_strafe/latents)" runs/px_strafe_src/latents
#   SOURCE_RUN=runs/px_strafe_src OUT=runs/doom_pixel_strafe ARMS=pixel MINUTES=30 \
#     DATA=data/doom_mix_strafe bash training/recipes/doom_pixel_finetune.sh
set -euo pipefail
SOURCE_RUN=${SOURCE_RUN:-runs/doom_t1}
OUT=${OUT:-runs/doom_pixel_ft}
WEIGHT=${WEIGHT:-2}
MINUTES=${MINUTES:-15}
DATA=${DATA:-data/doom_mix}
THREADS=${THREADS:-1}
ARMS=${ARMS:-pixel control}
PRECISION=${PRECISION:-bf16}
MODEL_OVERRIDES="model.vae.latent_channels=32 model.dit.latent_channels=32 model.vae.enc_blocks=2
  model.vae.dec_blocks=3 model.vae.light_dec_blocks=2 world.view_warp_fov=90 world.momentum=true
  diffusion.timestep_shift=20"
source "$(dirname "$0")/cpu_stages.sh"  # train: the shared wrapper, with RUN set per arm
for arm in "pixel$WEIGHT diffusion.pixel_weight=$WEIGHT" "control diffusion.pixel_weight=0"; do
  read -r name lever <<< "$arm"
  [[ " $ARMS " == *" ${name%%[0-9]*} "* ]] || continue
  RUN="$OUT/$name"
  mkdir -p "$RUN/init"
  for part in vae latents; do ln -sfn "$(realpath "$SOURCE_RUN/$part")" "$RUN/$part"; done
  if [ ! -e "$RUN/init/model.safetensors.index.json" ] && [ ! -e "$RUN/init/model.safetensors" ]; then
    python -m training.snapshot --stage "$SOURCE_RUN/diffusion" --out "$RUN/init/model.safetensors"
  fi
  # the source run's last LR (its decay ended at 1e-5); clips and context as in its stage 1
  # shellcheck disable=SC2086
  train stage=diffusion run.init_from="$RUN/init/model.safetensors" run.steps=100000 \
    run.batch_size=6 data.clip_steps=12 run.log_every=10 run.eval_every=100 run.ckpt_every=25 \
    optim.lr=3e-5 optim.warmup_steps=10 diffusion.context_noise=0.5 diffusion.self_forcing=0.5 \
    diffusion.self_forcing_passes=2 run.compile=true run.max_minutes="$MINUTES" $lever
  step=$(tail -n 1 "$RUN/diffusion/log.csv" | cut -d, -f1)
  train stage=export export.source=diffusion export.sample_steps=1 export.context_noise=0.25 \
    export.out="$RUN/world-$step"
  aapt-world ladder --world "$RUN/world-$step" --rollout-maps MAP04,MAP01 \
    --out "$RUN/ladder-$step" --threads "$THREADS"
done
echo "doom_pixel_finetune: ladders in $OUT/*/ladder-*"
