#!/usr/bin/env bash
# The pose-conditioned humanoid world (issue 11) on this CPU: MuJoCo's humanoid driven by the
# performer (fixed and orbiting camera), then every AAPT stage conditioned per video frame on
# the body's 16 2D keypoints (world=humanoid), the export, and the pose probe that measures it.
#   bash training/recipes/humanoid_cpu.sh                       # data/humanoid, runs/humanoid
#   STAGES="diffusion consistency" bash training/recipes/humanoid_cpu.sh   # some stages only
# Dry run with the tiny model (what the tests check):
#   MODEL=tiny WIDTH=64 HEIGHT=48 SCALE=0.005 EPISODES=4 STEPS=12 bash training/recipes/humanoid_cpu.sh
# Every stage resumes where it stopped (rerun the same command); SCALE multiplies the budgets.
# Then: env = envs.neural_humanoid.NeuralHumanoidEnv("runs/humanoid/world")
set -euo pipefail
PY=${PY:-python3}
MODEL=${MODEL:-small}
WIDTH=${WIDTH:-128}
HEIGHT=${HEIGHT:-96}
SCALE=${SCALE:-1}
EPISODES=${EPISODES:-32}
STEPS=${STEPS:-450}  # 60 s episodes at 30 fps
WORKERS=${WORKERS:-2}
THREADS=${THREADS:-2}
DATA=${DATA:-data/humanoid}
RUN=${RUN:-runs/humanoid}
OUT_WORLD=${OUT_WORLD:-$RUN/world}
VAE_INIT=${VAE_INIT:-worlds/humanoid-training/vae.safetensors}  # this VAE so far (24 min);
# worlds/doom-training/vae.safetensors started it (convolutional: a head start)
FOLLOW_STEPS=${FOLLOW_STEPS:-360}  # 1440-frame scripted performances
PERFORMANCES=${PERFORMANCES:-3}
LONG_MINUTES=${LONG_MINUTES:-5}  # plus one 5-minute performance
# a fresh run may start stage 1 from the committed generator (sixth pass, 4177 + 1358 + 1551
# steps with the joint maps, weight average, fp16; the shipped world is it at 1 NFE):
#   STAGE1_INIT=worlds/humanoid-training/stage1/model.safetensors
STAGE1_INIT=${STAGE1_INIT:-}
# DIFF_EXTRA / ADV_EXTRA: more stage-1 / stage-3 overrides (word-split), after the stage's own,
# e.g. DIFF_EXTRA="optim.lr=3e-4 optim.decay_start=100 optim.decay_steps=2600" to continue the
# committed stage 1 at a lower LR, ADV_EXTRA="adversarial.recon_weight=0.3"
STAGES=${STAGES:-collect vae latents diffusion consistency adversarial export probe follow}
WORLD_CONFIG=humanoid
# the shipped pose world must stay < 15 MB of fp16: a DiT of width 192 (5.7 M parameters, the
# small model's 8 blocks) instead of 256 (10.1 M, 20 MB); the joints also as maps on the
# latent grid (sixth pass; the committed stage 1 has their weights)
if [ "$MODEL" = small ]; then
  MODEL_OVERRIDES=${MODEL_OVERRIDES:-model.dit.dim=192 world.pose_map_sigma=0.6}
fi
source "$(dirname "$0")/world_stages.sh"  # train, vae_stage .. adversarial_stage, run_stages

stage_collect() {
  aw collect world=humanoid root="$DATA" num_episodes="$EPISODES" steps_per_episode="$STEPS" \
    width="$WIDTH" height="$HEIGHT" workers="$WORKERS"
}
stage_vae() { vae_stage 4 15; }
stage_diffusion() {
  local init=()
  if [ -n "$STAGE1_INIT" ]; then init=(run.init_from="$STAGE1_INIT"); fi
  # shellcheck disable=SC2086
  diffusion_stage 6 45 "${init[@]}" ${DIFF_EXTRA:-}
}
stage_consistency() { consistency_stage 6 5; }
stage_adversarial() {  # the D that learns
  # shellcheck disable=SC2086
  adversarial_stage 2 20 adversarial.d_steps=3 ${ADV_EXTRA:-}
}
stage_export() {
  train stage=export export.context_noise=0.25 export.out="$OUT_WORLD"
  echo "humanoid: world at $OUT_WORLD"
}
stage_probe() {  # the keypoint probe on real frames: the ceiling of pose following
  aw pose-probe --root "$DATA" --out "$RUN/pose_probe.safetensors" --no-progress \
    --threads "$THREADS" --minutes "$(minutes 10)"
}
stage_follow() {  # pose following of the exported world against the real render
  aw pose-follow --world "$OUT_WORLD" --probe "$RUN/pose_probe.safetensors" --no-progress \
    --threads "$THREADS" --steps "$FOLLOW_STEPS" --performances "$PERFORMANCES" \
    --long-minutes "$LONG_MINUTES" --out "$RUN/pose_following"
}

run_stages
