#!/usr/bin/env bash
# The third CPU pass of the default Doom world (issue 10): more compute on the v2 recipe's
# weakest link. v2's stage-1 validation loss was still falling at its last step (t=1: 0.534 at
# step 200 -> 0.343 at 750) and its stage 3 ran only 77 steps. This pass
#   - reuses v2's VAE and latents (hard links: the latent space is unchanged),
#   - continues stage 1 from v2's generator with a warm restart (lr 3e-4, linear decay),
#   - runs consistency and a longer stage 3 from it, then exports the inference context-noise
#     variants the ladder compares.
#   SRC=runs/doom2 RUN=runs/doom3 bash training/recipes/doom_cpu_v3.sh
#   STAGES="adversarial export" bash training/recipes/doom_cpu_v3.sh    # some stages only
# Every stage resumes where it stopped: rerun the same command to continue.
set -euo pipefail
DATA=${DATA:-data/doom}
SRC=${SRC:-runs/doom2}
RUN=${RUN:-runs/doom3}
THREADS=${THREADS:-2}
STAGES=${STAGES:-link diffusion consistency adversarial export}
ADV_MINUTES=35
source "$(dirname "$0")/cpu_stages.sh"  # train, stage_consistency, stage_adversarial

stage_link() {  # v2's VAE, light decoder and latents, unchanged
  mkdir -p "$RUN"
  for dir in vae decoder latents; do
    [ -e "$RUN/$dir" ] || cp -al "$SRC/$dir" "$RUN/$dir"
  done
}
stage_diffusion() {
  train stage=diffusion run.init_from="$SRC/diffusion/model.safetensors" run.steps=1000 \
    run.batch_size=6 data.clip_steps=12 run.log_every=10 run.eval_every=300 run.ckpt_every=25 \
    optim.lr=3e-4 optim.warmup_steps=30 optim.decay_start=500 optim.decay_steps=500 \
    diffusion.context_noise=0.5 run.max_minutes=65
}
stage_export() {
  for level in 0.25 0.4; do
    train stage=export export.context_noise=$level export.out="$RUN/world-ctx${level#0.}"
    train stage=export export.source=diffusion export.sample_steps=1 \
      export.context_noise=$level export.out="$RUN/world-diffusion-ctx${level#0.}"
  done
}

run_stages
