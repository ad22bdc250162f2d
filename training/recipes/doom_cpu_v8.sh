#!/usr/bin/env bash
# The eighth CPU pass of the default Doom world (issue 10): the data a hold needs.
# The ladder's no-op hold (90 no-op steps) was the rung furthest from its target, and the data
# never showed it: 2.6 % of data/doom's steps are no-ops, in pauses of 2-8 steps, so the 8-step
# attention window was never all still, and the explorer turns away from a wall after 2 blocked
# steps. This pass adds 32 episodes of the `lingerer` (envs/scripted.py: pauses of 8-64 steps,
# 45 % of its steps still; walks that push into a wall for 12 steps), merges them with data/doom
# (hard links; ids renumbered after data/doom's, so its latents are reused) and continues the
# seventh pass's stage 1 on the mix (a third of its clips from the lingerer), then stages 2-3.
#   RUN=runs/doom7-deep THREADS=1 PRECISION=bf16 bash training/recipes/doom_cpu_v8.sh
# The latent statistics stay those of the first encoding (stage=latents computes them once): the
# generator was trained on that normalisation (the mix moves the
# channel means by <= 0.04 and the stds by <= 5 %). A fresh clone runs every stage: the seventh
# pass's VAE (VAE_INIT, seeded as it is), its latents, then the generator from the shipped
# world (WORLD).
# Every stage resumes where it stopped: rerun the same command to continue.
set -euo pipefail
BASE_DATA=${BASE_DATA:-data/doom}
LINGER_DATA=${LINGER_DATA:-data/doom_linger}
DATA=${DATA:-data/doom_mix}
RUN=${RUN:-runs/doom7-deep}
THREADS=${THREADS:-1}
LATENT_CHANNELS=32
VAE_INIT=${VAE_INIT:-worlds/doom-training/vae_c32_deep.safetensors}
WORLD=${WORLD:-worlds/doom}
# stage 1 starts (in a fresh run) from the committed stage-1 checkpoint: step 6264, fp16
STAGE1_INIT=${STAGE1_INIT:-worlds/doom-training/stage1/model.safetensors}
DIFF_MINUTES=${DIFF_MINUTES:-85}
# stage 1's LR: linear decay to 0.1x from DECAY_START over DECAY_STEPS (the step counter is the
# run's: a resumed run continues it, a fresh one from STAGE1_INIT starts at 0)
LR=${LR:-3e-4}
DECAY_START=${DECAY_START:-1600}
DECAY_STEPS=${DECAY_STEPS:-2800}
ADV_MINUTES=${ADV_MINUTES:-20}
STAGES=${STAGES:-collect vae latents diffusion consistency adversarial_d3 export}
VAE_SHAPE="model.vae.enc_blocks=2 model.vae.dec_blocks=3 model.vae.light_dec_blocks=2"
# WORLD_EXTRA: overrides every stage shares, e.g. "world.view_warp_fov=90" (the turned view)
MODEL_OVERRIDES="model.vae.latent_channels=32 model.dit.latent_channels=32 $VAE_SHAPE ${WORLD_EXTRA:-}"
source "$(dirname "$0")/cpu_stages.sh"  # train, stage_consistency, stage_adversarial

stage_collect() {  # deterministic: the same command records the same episodes
  aapt-world collect root="$BASE_DATA" num_episodes=64 steps_per_episode=500 workers=1
  aapt-world collect root="$LINGER_DATA" "policies=[lingerer]" num_episodes=32 \
    steps_per_episode=500 workers=1 seed=7
  aapt-world merge-data --out "$DATA" "$BASE_DATA" "$LINGER_DATA"
}
# the v8 mix plus 24 episodes of the strafer player (envs.scripted.strafer_config: pure
# sideways steps into walls, 0.65 % of the mix's steps) as data/doom_mix_strafe: the mix's
# episodes keep their ids, so a run's latents of the mix stay valid and only the new ones encode
stage_strafer_data() {
  aapt-world collect root=data/doom_strafer "policies=[strafer]" num_episodes=24 \
    steps_per_episode=500 workers=1 seed=11
  aapt-world merge-data --out data/doom_mix_strafe "$DATA" data/doom_strafer
}
stage_vae() {  # the shipped world's VAE as it is (no-op when the run has one)
  if [ ! -e "$RUN/vae" ]; then
    python -m training.seed_run --world "$WORLD" --vae "$VAE_INIT" --run "$RUN"
  fi
}
stage_latents() { train stage=latents; }  # new episodes only; the normalisation is kept
stage_diffusion() {  # the seventh pass's stage 1, plus a linear LR decay
  # shellcheck disable=SC2086
  train stage=diffusion run.init_from="$STAGE1_INIT" run.steps=100000 run.batch_size=6 \
    data.clip_steps=12 run.log_every=10 run.eval_every=150 run.ckpt_every=25 optim.lr="$LR" \
    optim.warmup_steps=30 optim.decay_start="$DECAY_START" optim.decay_steps="$DECAY_STEPS" \
    optim.min_lr_ratio=0.1 \
    diffusion.context_noise=0.5 diffusion.self_forcing=0.5 diffusion.self_forcing_passes=2 \
    run.compile=true run.max_minutes="$DIFF_MINUTES"
}
# ADV_EXTRA: more stage-3 overrides, e.g. the ninth pass's "adversarial.recon_weight=1"
# run.ema_decay: stage 3 also keeps a weight average of G and export ships it: over 3 stage-3
# arms x 2 seeds (docs/doom_passes.md, 2026-12-07 evening) it beat the live weights' rollout
# margin by +0.34 dB mean / +0.55 dB worst bucket on average, and most where a run's last
# weights were worst (+1.7 / +2.2 dB)
# shellcheck disable=SC2086
stage_adversarial_d3() {  # D learns (v5)
  stage_adversarial adversarial.d_steps=3 run.ema_decay=0.99 ${ADV_EXTRA:-}
}
# EXPORT_EXTRA: more export overrides, e.g. "export.ema=false" (ship the live weights)
# shellcheck disable=SC2086
stage_export() {
  train stage=export export.context_noise=0.25 export.out="${WORLD_OUT:-$RUN/world-ctx25}" \
    ${EXPORT_EXTRA:-}
}
run_stages
