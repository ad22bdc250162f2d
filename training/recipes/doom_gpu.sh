#!/usr/bin/env bash
# The one-command GPU recipe of the default Doom world: on ONE H100/H200-class GPU with 16 CPU
# cores and no network, collect the data there, train every stage (VAE fine-tune, decoder,
# latents, diffusion, consistency, adversarial) in about 9 minutes of wall time, and export
# a world with fp16 shards of at most 15 MB.
#
# The project is not installed there: the code runs from this checkout (PYTHONPATH), the missing
# packages travel as wheels made here by `bash training/recipes/gpu_bundle.sh` (.whl/, 29 MB).
# Device call (the `run` tool), with carry [".whl"]:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
#     && PYTHONPATH=/tmp/site:$PWD OUT_WORLD=$OUT/world bash training/recipes/doom_gpu.sh
# Dry run on a CPU with the tiny model (what CI-class machines can check):
#   DEVICE=cpu MODEL=tiny SCALE=0.02 EPISODES=8 STEPS_PER_EPISODE=40 bash training/recipes/doom_gpu.sh
set -euo pipefail
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
MODEL=${MODEL:-small}
SCALE=${SCALE:-1}  # multiplies every stage's wall-time budget
EPISODES=${EPISODES:-192}
STEPS_PER_EPISODE=${STEPS_PER_EPISODE:-500}
WORKERS=${WORKERS:-16}
DATA=${DATA:-/tmp/aapt/data/doom}
RUN=${RUN:-/tmp/aapt/runs/doom-gpu}
OUT_WORLD=${OUT_WORLD:-$RUN/world}
VAE_INIT=${VAE_INIT:-worlds/doom-training/vae.safetensors}
minutes() { "$PY" -c "print(round($1 * $SCALE, 3))"; }
aw() { "$PY" -m agents.cli "$@"; }
case $MODEL in  # the collected frame size must match the model's (tiny: 64x48)
  tiny) RES=(width=64 height=48) ;;
  *) RES=(width=128 height=96) ;;
esac
train() {
  aw train model="$MODEL" data.root="$DATA" run.out_dir="$RUN" \
    run.device="$DEVICE" run.threads="${THREADS:-0}" run.progress=false "$@"
}
start=$(date +%s)
aw collect root="$DATA" num_episodes="$EPISODES" steps_per_episode="$STEPS_PER_EPISODE" \
  workers="$WORKERS" "${RES[@]}"
INIT=()
if [ "$MODEL" = small ] && [ -f "$VAE_INIT" ]; then INIT=(run.init_from="$VAE_INIT"); fi
train stage=vae "${INIT[@]}" run.steps=100000 run.batch_size=32 data.clip_steps=4 \
  optim.lr=3e-4 optim.warmup_steps=20 vae.kl_weight=1e-4 vae.decoder_noise=0.1 \
  run.log_every=25 run.eval_every=100000 run.ckpt_every=200 run.max_minutes="$(minutes 1.0)"
train stage=decoder run.steps=100000 run.batch_size=32 data.clip_steps=4 optim.lr=1e-4 \
  optim.warmup_steps=20 vae.decoder_noise=0.1 run.log_every=25 run.eval_every=100000 \
  run.ckpt_every=200 run.max_minutes="$(minutes 0.75)"
train stage=latents
train stage=diffusion run.steps=100000 run.batch_size=64 data.clip_steps=12 optim.lr=6e-4 \
  optim.warmup_steps=100 diffusion.context_noise=0.5 run.log_every=25 \
  run.eval_every=100000 run.ckpt_every=200 run.max_minutes="$(minutes 3.5)"
train stage=consistency run.steps=100000 run.batch_size=64 data.clip_steps=12 optim.lr=2e-4 \
  optim.warmup_steps=10 run.log_every=10 run.eval_every=100000 run.ckpt_every=100 \
  run.max_minutes="$(minutes 0.75)"
train stage=adversarial run.steps=100000 run.batch_size=16 data.clip_steps=10 \
  adversarial.rollout_steps=10 adversarial.r1_weight=100 adversarial.g_lr=5e-5 \
  adversarial.d_lr=1e-4 adversarial.d_steps=3 optim.warmup_steps=10 run.log_every=5 run.eval_every=100000 \
  run.ckpt_every=50 run.max_minutes="$(minutes 1.5)"
# d_steps 3: the D that learns (CPU fifth pass: beats 1 at equal minutes in free rollouts)
train stage=export export.context_noise=0.25 export.out="$OUT_WORLD"  # the CPU ladder's pick
echo "doom_gpu: world at $OUT_WORLD after $(( $(date +%s) - start )) s"
