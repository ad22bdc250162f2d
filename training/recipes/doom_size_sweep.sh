#!/usr/bin/env bash
# Issue 10's compute-optimal size sweep: Doom stage 1 from scratch at several generator widths
# (the small model's 8 blocks), each for the same wall time on the same latents, exported at 1
# Euler step and measured on the fidelity ladder. The size that wins is the one to scale.
#   SOURCE_RUN=runs/doom_t1 bash training/recipes/doom_size_sweep.sh   # 3 x (25 + ~6) min
# The same arm with one lever changed, against the sweep's row (e.g. the pixel term):
#   SOURCE_RUN=runs/doom_t1 OUT=runs/doom_pixel DIMS=256 EXTRA="diffusion.pixel_weight=20" bash ...
# SOURCE_RUN is any Doom run with the shipped VAE and its latents of DATA (doom_cpu_v8.sh's
# "vae latents" stages make one: RUN=runs/doom_src STAGES="collect vae latents" bash
# training/recipes/doom_cpu_v8.sh). A killed width resumes from its last checkpoint (a finished
# one rerun trains MINUTES more: the budget is per call, so the comparison needs one call each).
set -euo pipefail
DATA=${DATA:-data/doom_mix}
SOURCE_RUN=${SOURCE_RUN:-runs/doom_t1}
OUT=${OUT:-runs/doom_size}
DIMS=${DIMS:-128 192 256}
MINUTES=${MINUTES:-25}
THREADS=${THREADS:-1}
PRECISION=${PRECISION:-bf16}
EXTRA=${EXTRA:-}  # more stage-1 overrides, the same for every width (a lever at equal minutes)
# the shipped world's latent space, and the best 1-step stage-1 settings measured (turned view,
# momentum, t near 1)
MODEL_OVERRIDES="model.vae.latent_channels=32 model.dit.latent_channels=32 model.vae.enc_blocks=2
  model.vae.dec_blocks=3 model.vae.light_dec_blocks=2 world.view_warp_fov=90 world.momentum=true
  diffusion.timestep_shift=20"
for dim in $DIMS; do
  run="$OUT/d$dim"
  mkdir -p "$run"
  for part in vae latents; do  # shared, not copied: the sweep changes only the generator
    ln -sfn "$(realpath "$SOURCE_RUN/$part")" "$run/$part"
  done
  train() {
    # shellcheck disable=SC2086
    aapt-world train data.root="$DATA" run.out_dir="$run" run.threads="$THREADS" \
      run.progress=false run.precision="$PRECISION" $MODEL_OVERRIDES model.dit.dim="$dim" "$@"
  }
  # shellcheck disable=SC2086
  train stage=diffusion run.steps=100000 run.batch_size=6 data.clip_steps=12 run.log_every=10 \
    run.eval_every=100 run.ckpt_every=25 optim.lr=6e-4 optim.warmup_steps=50 \
    diffusion.context_noise=0.5 diffusion.self_forcing=0.5 diffusion.self_forcing_passes=2 \
    run.compile=true run.max_minutes="$MINUTES" $EXTRA
  train stage=export export.source=diffusion export.sample_steps=1 export.context_noise=0.25 \
    export.out="$run/world-s1-1nfe"
  aapt-world ladder --world "$run/world-s1-1nfe" --rollout-maps MAP04,MAP01 --out "$run/ladder" \
    --threads "$THREADS"
done
echo "doom_size_sweep: ladders in $OUT/d*/ladder"
