#!/usr/bin/env bash
# Issue 10: the pixel fine-tune's stage 1 (committed as worlds/doom-training/stage1_pixel) through
# stages 2-3. Stage 2 once, then two stage-3 arms side by side from it, one per core: the
# recipe's stage 3 (no anchor) and the same with stage 3's pixel anchor
# (adversarial.pixel_weight=WEIGHT: the rollout's pixel MSE against the real continuation through
# the frozen light decoder). Each arm is exported and laddered.
#   bash training/recipes/doom_pixel_aapt.sh          # ~15 min data on a fresh clone, then ~70 min
# SEED=1 runs both stage-3 arms again with another seed (dirs <run>_seed1), from the same stage 2:
# a single stage-3 run per arm cannot tell a lever from the run's own noise.
# Rerun to resume: data, stage 2 and each stage-3 arm continue from what they wrote.
set -euo pipefail
RUN=${RUN:-runs/doom_px}
WEIGHT=${WEIGHT:-5}
ADV_MINUTES=${ADV_MINUTES:-50}
ADV_STEPS=${ADV_STEPS:-400}
STAGE1=${STAGE1:-worlds/doom-training/stage1_pixel}
SEED=${SEED:-0}
suffix=$([ "$SEED" = 0 ] || echo "_seed$SEED")
PLAIN_RUN=$RUN$suffix
PIX_RUN=${RUN}_pix$WEIGHT$suffix
recipe="$(dirname "$0")/doom_cpu_v8.sh"
# the pixel fine-tune's world settings (its stage 1 was trained with them)
export PRECISION=bf16 ADV_MINUTES
export WORLD_EXTRA="world.view_warp_fov=90 world.momentum=true diffusion.timestep_shift=20"

if [ ! -e "$RUN/latents/stats.json" ]; then  # data, the shipped VAE, its latents
  RUN=$RUN THREADS=2 STAGES="collect vae latents" bash "$recipe"
fi
mkdir -p "$RUN/diffusion"
if [ ! -e "$RUN/diffusion/model.safetensors.index.json" ]; then  # stage 2 loads it as stage 1
  cp "$STAGE1"/* "$RUN/diffusion/"
fi
RUN=$RUN THREADS=2 STAGES=consistency bash "$recipe"

for arm in "$PLAIN_RUN" "$PIX_RUN"; do  # the arms share everything up to stage 2
  [ "$arm" = "$RUN" ] && continue
  mkdir -p "$arm"
  for part in vae latents diffusion consistency; do
    ln -sfn "$(realpath "$RUN/$part")" "$arm/$part"
  done
done
stage3() {  # run dir, extra stage-3 overrides
  local run=$1
  shift
  RUN=$run THREADS=1 ADV_EXTRA="run.steps=$ADV_STEPS run.seed=$SEED $*" \
    WORLD_OUT="$run/world-aapt" \
    STAGES="adversarial_d3 export" bash "$recipe"
  aapt-world ladder --world "$run/world-aapt" --rollout-maps MAP04,MAP01 \
    --out "$run/ladder-aapt" --threads 1
}
stage3 "$PLAIN_RUN" > "$PLAIN_RUN/stage3.log" 2>&1 &
plain=$!
stage3 "$PIX_RUN" "adversarial.pixel_weight=$WEIGHT" > "$PIX_RUN/stage3.log" 2>&1 &
anchored=$!
wait "$plain"
wait "$anchored"
echo "doom_pixel_aapt: ladders in $PLAIN_RUN/ladder-aapt and $PIX_RUN/ladder-aapt"
