#!/usr/bin/env bash
# The fifth CPU pass of the default Doom world (issue 10): stage 3 as the world runs.
# Every world since v2 runs at inference with context noise 0.25 on the recycled frame (the
# level that made it hold), but its stage 3 rolled out with CLEAN recycled frames: the
# adversarial post-training never saw the inputs the world is run on. This pass
#   - seeds the run with the shipped world's VAE and sharpened light decoder (seed_run) and
#     encodes the latents (a fresh clone needs only the data),
#   - continues stage 3 from the SHIPPED generator (run.init_from=worlds/doom), D's backbone
#     from the same generator (adversarial.disc_init), with student rollouts at context noise
#     ADV_CTX (0.25 = the inference level; 0 = the control arm of the ablation),
#   - exports the result at inference context noise 0.25.
#   RUN=runs/doom5 ADV_CTX=0.25 bash training/recipes/doom_cpu_v5.sh
#   The equal-minute ablation (both arms side by side, 1 thread each, latents shared):
#   STAGES="seed latents" bash training/recipes/doom_cpu_v5.sh
#   for arm in 0 0.25; do RUN=runs/doom5-ctx$arm SRC=runs/doom5 ADV_CTX=$arm THREADS=1 \
#     STAGES="link stage3 export" bash training/recipes/doom_cpu_v5.sh & done; wait
#   Round 2 (both arms from the shipped world again, clean rollouts, d_steps 1 vs 3, 30 min):
#   for d in 1 3; do RUN=runs/doom5-r2-d$d SRC=runs/doom5 ADV_CTX=0 ADV_DSTEPS=$d THREADS=1 \
#     ADV_MINUTES=30 STAGES="link stage3 export" bash training/recipes/doom_cpu_v5.sh & done
#   ("fork" instead of "link" continues SRC's own stage 3 checkpoint instead.)
# The dataset (deterministic): aapt-world collect root=$DATA num_episodes=64 steps_per_episode=500
# Every stage resumes where it stopped: rerun the same command to continue.
set -euo pipefail
DATA=${DATA:-data/doom}
RUN=${RUN:-runs/doom5}
SRC=${SRC:-runs/doom5}
WORLD=${WORLD:-worlds/doom}
THREADS=${THREADS:-2}
ADV_CTX=${ADV_CTX:-0.25}
ADV_MINUTES=${ADV_MINUTES:-45}
ADV_DSTEPS=${ADV_DSTEPS:-1}  # D updates per G update
STAGES=${STAGES:-seed latents stage3 export}
source "$(dirname "$0")/cpu_stages.sh"  # train, stage_adversarial

stage_seed() {  # the shipped world's VAE (training copy) and its sharpened light decoder
  python -m training.seed_run --world "$WORLD" --vae worlds/doom-training/vae.safetensors \
    --run "$RUN"
}
stage_latents() { train stage=latents; }
stage_link() {  # another arm of the ablation: the seeded VAE, decoder and latents, unchanged
  mkdir -p "$RUN"
  for dir in vae decoder latents; do
    [ -e "$RUN/$dir" ] || cp -al "$SRC/$dir" "$RUN/$dir"
  done
}
stage_fork() {  # another arm continuing SRC's stage 3 (its checkpoint copied, then resumed)
  stage_link
  [ -e "$RUN/adversarial" ] || cp -r "$SRC/adversarial" "$RUN/adversarial"
}
stage_stage3() {  # stage 3 from the shipped world, rollouts at context noise ADV_CTX
  stage_adversarial run.init_from="$WORLD" adversarial.disc_init="$WORLD" \
    adversarial.context_noise="$ADV_CTX" adversarial.d_steps="$ADV_DSTEPS"
}
stage_export() {
  train stage=export export.context_noise=0.25 export.out="$RUN/world-ctx25"
}
run_stages
