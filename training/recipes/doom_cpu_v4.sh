#!/usr/bin/env bash
# The fourth CPU pass of the default Doom world (issue 10): stage 1 against exposure bias.
# v3's stage-1 world won the PSNR margin by fading to the mean frame: at inference it recycles
# its own blurred predictions, which teacher forcing never showed it. This pass
#   - starts from the SHIPPED world (run.init_from=worlds/doom) and its VAE / sharpened light
#     decoder, so a fresh clone needs only the data (stage_seed writes them into the run),
#   - continues stage 1 with self-forcing: half of the clips recycle the model's own one-step
#     predictions (2 parallel no-grad unrolls) instead of the real previous frames,
#   - then consistency and stage 3 as in v3, and exports the stage-1 (1 NFE) and stage-3
#     generators at the shipped inference context noise (0.25) for the ladder.
#   RUN=runs/doom4 bash training/recipes/doom_cpu_v4.sh
#   STAGES="adversarial export" bash training/recipes/doom_cpu_v4.sh    # some stages only
# The dataset (deterministic): aapt-world collect root=$DATA num_episodes=64 steps_per_episode=500
# Every stage resumes where it stopped: rerun the same command to continue.
set -euo pipefail
DATA=${DATA:-data/doom}
RUN=${RUN:-runs/doom4}
WORLD=${WORLD:-worlds/doom}
THREADS=${THREADS:-2}
STAGES=${STAGES:-seed latents diffusion consistency adversarial export}
ADV_MINUTES=30
source "$(dirname "$0")/cpu_stages.sh"  # train, stage_consistency, stage_adversarial

stage_seed() {  # the shipped world's VAE (training copy) and its sharpened light decoder
  python -m training.seed_run --world "$WORLD" --vae worlds/doom-training/vae.safetensors \
    --run "$RUN"
}
stage_latents() { train stage=latents; }
stage_diffusion() {
  train stage=diffusion run.init_from="$WORLD" run.steps=1000 run.batch_size=6 \
    data.clip_steps=12 run.log_every=10 run.eval_every=150 run.ckpt_every=25 optim.lr=3e-4 \
    optim.warmup_steps=30 optim.decay_start=500 optim.decay_steps=500 \
    diffusion.context_noise=0.5 diffusion.self_forcing=0.5 diffusion.self_forcing_passes=2 \
    run.max_minutes=60
}
stage_export() {
  train stage=export export.context_noise=0.25 export.out="$RUN/world-ctx25"
  train stage=export export.source=diffusion export.sample_steps=1 export.context_noise=0.25 \
    export.out="$RUN/world-diffusion-ctx25"
}

run_stages
