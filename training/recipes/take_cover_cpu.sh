#!/usr/bin/env bash
# The TakeCover world (issue 12) on this CPU: the real take_cover scenario played by a random
# and a heuristic strafing player (deaths included), then every AAPT stage plus the reward /
# termination heads, at the small `dream` model size (64x48, 48 tokens per latent frame) that
# RL in the dream needs. About 50 minutes at SCALE=1 on 2 cores.
#   bash training/recipes/take_cover_cpu.sh                          # data/take_cover, runs/take_cover
#   STAGES="diffusion consistency" bash training/recipes/take_cover_cpu.sh    # some stages only
# Dry run with the tiny model (what the tests check):
#   MODEL=tiny SCALE=0.01 EPISODES=8 bash training/recipes/take_cover_cpu.sh
# Every stage resumes where it stopped (rerun the same command); SCALE multiplies the budgets.
set -euo pipefail
PY=${PY:-python3}
MODEL=${MODEL:-dream}
SCALE=${SCALE:-1}
EPISODES=${EPISODES:-200}
WORKERS=${WORKERS:-2}
THREADS=${THREADS:-2}
DATA=${DATA:-data/take_cover}
RUN=${RUN:-runs/take_cover}
OUT_WORLD=${OUT_WORLD:-$RUN/world}
VAE_INIT=${VAE_INIT:-worlds/doom-training/vae.safetensors}  # convolutional: any frame size
STAGES=${STAGES:-collect vae latents diffusion consistency adversarial heads export}
minutes() { "$PY" -c "print(round($1 * $SCALE, 3))"; }
aw() { "$PY" -m agents.cli "$@"; }
train() {
  aw train model="$MODEL" world=take_cover data.root="$DATA" run.out_dir="$RUN" \
    run.threads="$THREADS" run.progress=false "$@"
}

stage_collect() {  # 2100 tics at most per episode, as World Models' evaluation
  aw collect root="$DATA" scenario=take_cover "maps=[MAP01]" "policies=[random_dodge,dodger]" \
    num_episodes="$EPISODES" steps_per_episode=525 width=64 height=48 workers="$WORKERS"
}
stage_vae() {
  local init=()
  if [ "$MODEL" = dream ] && [ -f "$VAE_INIT" ]; then init=(run.init_from="$VAE_INIT"); fi
  train stage=vae "${init[@]}" run.steps=100000 run.batch_size=8 data.clip_steps=4 \
    optim.lr=3e-4 optim.warmup_steps=20 vae.kl_weight=1e-4 vae.decoder_noise=0.1 \
    run.log_every=25 run.eval_every=200 run.ckpt_every=50 run.max_minutes="$(minutes 8)"
}
stage_latents() { train stage=latents; }
stage_diffusion() {
  train stage=diffusion run.steps=100000 run.batch_size=16 data.clip_steps=12 optim.lr=6e-4 \
    optim.warmup_steps=50 diffusion.context_noise=0.5 diffusion.self_forcing=0.5 \
    diffusion.self_forcing_passes=2 run.log_every=10 run.eval_every=200 run.ckpt_every=25 \
    run.max_minutes="$(minutes 22)"
}
stage_consistency() {
  train stage=consistency run.steps=100000 run.batch_size=16 data.clip_steps=12 optim.lr=2e-4 \
    optim.warmup_steps=10 run.log_every=5 run.eval_every=50 run.ckpt_every=10 \
    run.max_minutes="$(minutes 3)"
}
stage_adversarial() {
  train stage=adversarial run.steps=100000 run.batch_size=4 data.clip_steps=10 \
    adversarial.rollout_steps=10 adversarial.g_lr=5e-5 adversarial.d_lr=1e-4 \
    adversarial.r1_weight=100 run.log_every=5 run.eval_every=25 run.ckpt_every=5 \
    optim.warmup_steps=10 run.max_minutes="$(minutes 12)"
}
stage_heads() {  # termination comes from this head in the dream: plain BCE (max_pos_weight 1)
  # keeps sigmoid(logit) a calibrated death probability, which the env samples (export);
  # 1-step clips: with K-step clips an episode's last (death) step is drawn K times less often
  # than the others, and the head would learn a K times smaller hazard; trained on the
  # generator's own (teacher-forced) latents: on real ones it read the dream as deadly
  train stage=heads heads.max_pos_weight=1 heads.generated=1 \
    heads.generator="$RUN/adversarial/model.safetensors" run.steps=100000 run.batch_size=256 \
    data.clip_steps=1 optim.lr=1e-3 \
    run.log_every=25 run.eval_every=100 run.ckpt_every=50 run.max_minutes="$(minutes 3)"
}
stage_export() {
  train stage=export export.context_noise=0.25 export.termination=sample export.out="$OUT_WORLD"
  echo "take_cover: world at $OUT_WORLD"
}

for stage in $STAGES; do
  "stage_$stage"
done
