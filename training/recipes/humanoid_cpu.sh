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
STAGES=${STAGES:-collect vae latents diffusion consistency adversarial export probe}
minutes() { "$PY" -c "print(round($1 * $SCALE, 3))"; }
aw() { "$PY" -m agents.cli "$@"; }
train() {
  aw train model="$MODEL" world=humanoid data.root="$DATA" run.out_dir="$RUN" \
    run.threads="$THREADS" run.progress=false "$@"
}

stage_collect() {
  aw collect world=humanoid root="$DATA" num_episodes="$EPISODES" steps_per_episode="$STEPS" \
    width="$WIDTH" height="$HEIGHT" workers="$WORKERS"
}
stage_vae() {
  local init=()
  if [ "$MODEL" != tiny ] && [ -f "$VAE_INIT" ]; then init=(run.init_from="$VAE_INIT"); fi
  train stage=vae "${init[@]}" run.steps=100000 run.batch_size=4 data.clip_steps=4 \
    optim.lr=3e-4 optim.warmup_steps=20 vae.kl_weight=1e-4 vae.decoder_noise=0.1 \
    run.log_every=25 run.eval_every=200 run.ckpt_every=50 run.max_minutes="$(minutes 15)"
}
stage_latents() { train stage=latents; }
stage_diffusion() {  # clips longer than the window, context noise, self-forcing (Doom v4's set)
  train stage=diffusion run.steps=100000 run.batch_size=6 data.clip_steps=12 optim.lr=6e-4 \
    optim.warmup_steps=50 diffusion.context_noise=0.5 diffusion.self_forcing=0.5 \
    diffusion.self_forcing_passes=2 run.log_every=10 run.eval_every=200 run.ckpt_every=25 \
    run.max_minutes="$(minutes 45)"
}
stage_consistency() {
  train stage=consistency run.steps=100000 run.batch_size=6 data.clip_steps=12 optim.lr=2e-4 \
    optim.warmup_steps=10 run.log_every=5 run.eval_every=50 run.ckpt_every=10 \
    run.max_minutes="$(minutes 5)"
}
stage_adversarial() {  # 3 D updates per G update: the D that learns (Doom, fifth pass)
  train stage=adversarial run.steps=100000 run.batch_size=2 data.clip_steps=10 \
    adversarial.rollout_steps=10 adversarial.g_lr=5e-5 adversarial.d_lr=1e-4 \
    adversarial.r1_weight=100 adversarial.d_steps=3 run.log_every=5 run.eval_every=25 \
    run.ckpt_every=5 optim.warmup_steps=10 run.max_minutes="$(minutes 20)"
}
stage_export() {
  train stage=export export.context_noise=0.25 export.out="$OUT_WORLD"
  echo "humanoid: world at $OUT_WORLD"
}
stage_probe() {  # the keypoint probe on real frames: the ceiling of pose following
  aw pose-probe --root "$DATA" --out "$RUN/pose_probe.safetensors" --no-progress \
    --threads "$THREADS" --minutes "$(minutes 10)"
}

for stage in $STAGES; do
  "stage_$stage"
done
