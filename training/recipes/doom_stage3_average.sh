#!/usr/bin/env bash
# Issue 10: does stage 3 rank better from a weight average, or with a learning rate that falls
# late? One stage-3 run per seed cannot rank a lever (docs/doom_passes.md: two seeds of one
# recipe differ by up to 4 dB of loop closure at 340 G steps), so every arm here runs both
# seeds side by side (one core each), each continued from its seed's plain stage 3 of
# doom_pixel_aapt.sh, and exports BOTH the live generator and its weight average.
#   ARM=avg bash training/recipes/doom_stage3_average.sh                  # run.ema_decay only
#   ARM=avg_decay EXTRA="optim.decay_start=447 optim.decay_steps=150 optim.min_lr_ratio=0.1" \
#     bash training/recipes/doom_stage3_average.sh                         # + G and D LR decay
#   ARM=avg_recon1 EXTRA="adversarial.recon_weight=1" bash training/recipes/doom_stage3_average.sh
#   ARM=avg_recon1_decay WEIGHTS=average EXTRA="adversarial.recon_weight=1 optim.decay_start=447
#     optim.decay_steps=150 optim.min_lr_ratio=0.1" bash ...   # both (the committed candidate)
#   ARM=avg_recon1_decay_strafer DATA=data/doom_mix_strafe WEIGHTS=average EXTRA="..." \
#     bash ...   # the candidate's recipe on the mix plus the strafer player's episodes
#     (made by stage_strafer_data in doom_cpu_v8.sh: collect + merge-data)
# DATA: the stage-3 dataset (default the v8 mix). Another root gets its own latents dir
# (<RUN>_latents_<root name>: the base's latents hard-linked, the new episodes encoded by the
# same VAE and normalisation). SEEDS: which seeds run (default both, side by side).
# WEIGHTS: which exports get a ladder. doom_cpu_v8.sh's stage 3 keeps the average by default
# now; EMA_DECAY here overrides its decay.
# Needs the two plain seeds' stage 3 at ~447 G steps first (both resume what they wrote; the
# anchor arms run beside them, unused here):
#   ADV_STEPS=447 ADV_MINUTES=70 bash training/recipes/doom_pixel_aapt.sh
#   SEED=1 ADV_STEPS=447 ADV_MINUTES=70 bash training/recipes/doom_pixel_aapt.sh
# Rerun to resume: each arm's stage 3 continues from its own checkpoint.
set -euo pipefail
RUN=${RUN:-runs/doom_px}
ARM=${ARM:-avg}
EXTRA=${EXTRA:-}
STEPS=${STEPS:-600}          # total G steps at the end of the continuation
ADV_MINUTES=${ADV_MINUTES:-30}
WEIGHTS=${WEIGHTS:-average live}  # which exports to ladder
EMA_DECAY=${EMA_DECAY:-0.99}  # warmed up as min(d, (1+n)/(10+n)): ~the last n/9 of n updates
SEEDS=${SEEDS:-0 1}
DATA=${DATA:-data/doom_mix}
recipe="$(dirname "$0")/doom_cpu_v8.sh"
export PRECISION=bf16 ADV_MINUTES DATA
export WORLD_EXTRA="world.view_warp_fov=90 world.momentum=true diffusion.timestep_shift=20"

continue_seed() {  # seed
  local seed=$1 base arm
  base=$RUN$([ "$seed" = 0 ] || echo "_seed$seed")
  arm=${base}_$ARM
  if [ ! -e "$base/adversarial/model.safetensors.index.json" ]; then
    echo "doom_stage3_average: no stage 3 in $base (see this file's header)" >&2
    return 1
  fi
  mkdir -p "$arm"
  for part in vae diffusion consistency; do
    ln -sfn "$(realpath "$base/$part")" "$arm/$part"
  done
  ln -sfn "$(realpath "$latents")" "$arm/latents"
  [ -e "$arm/adversarial" ] || cp -r "$base/adversarial" "$arm/adversarial"
  # shellcheck disable=SC2086
  RUN=$arm THREADS=1 ADV_EXTRA="run.steps=$STEPS run.seed=$seed run.ema_decay=$EMA_DECAY $EXTRA" \
    WORLD_OUT="$arm/world-average" STAGES="adversarial_d3 export" bash "$recipe"
  RUN=$arm THREADS=1 WORLD_OUT="$arm/world-live" EXPORT_EXTRA="export.ema=false" \
    STAGES=export bash "$recipe"
  for weights in $WEIGHTS; do
    aapt-world ladder --world "$arm/world-$weights" --rollout-maps MAP04,MAP01 \
      --out "$arm/ladder-$weights" --threads 1
  done
}
latents=$RUN/latents
if [ "$DATA" != data/doom_mix ]; then  # the base's latents plus the new episodes'
  latents=${RUN}_latents_$(basename "$DATA")
  if [ ! -e "$latents/latents/stats.json" ]; then
    mkdir -p "$latents"
    ln -sfn "$(realpath "$RUN/vae")" "$latents/vae"
    [ -e "$latents/latents" ] || cp -al "$(realpath "$RUN/latents")" "$latents/latents"
  fi
  RUN=$latents THREADS=2 STAGES=latents bash "$recipe"
  latents=$latents/latents
fi
pids=()
for seed in $SEEDS; do
  log=$RUN$([ "$seed" = 0 ] || echo "_seed$seed")_$ARM.log
  continue_seed "$seed" > "$log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do
  wait "$pid"
done
echo "doom_stage3_average: ladders in ${RUN}{,_seed1}_$ARM/ladder-{$WEIGHTS}"
