#!/usr/bin/env bash
# The TakeCover world (issue 12) on this CPU: the real take_cover scenario played by a random
# and a heuristic strafing player (deaths included), then every AAPT stage plus the reward /
# termination heads, at the small `dream` model size (64x48, 48 tokens per latent frame) that
# RL in the dream needs. About 50 minutes at SCALE=1 on 2 cores.
# MODEL=dream96 records and dreams at 128x96 (the same 48 tokens per latent frame: the DiT costs
# the same, the VAE 4x): at 64x48 the VAE drops most fireballs (see model/dream96.yaml):
#   MODEL=dream96 DATA=data/take_cover96 RUN=runs/take_cover96 bash training/recipes/take_cover_cpu.sh
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
# MODEL=dream96 resumes from the committed 128x96 VAE (bright-pixel term) and stage 1:
#   VAE_INIT=worlds/take_cover-training/vae96.safetensors \
#   STAGE1_INIT=worlds/take_cover-training/stage1/model.safetensors  (1765 + 477 steps, null
#   condition trained: guidance works)
STAGE1_INIT=${STAGE1_INIT:-}
# DIFF_EXTRA: more stage-1 overrides after the stage's own (word-split), e.g.
# "diffusion.cond_dropout=0.15 run.ema_decay=0.98" for a generator that guidance can steer
STAGES=${STAGES:-collect vae latents diffusion consistency adversarial heads export}
WORLD_CONFIG=take_cover
source "$(dirname "$0")/world_stages.sh"  # train, vae_stage .. adversarial_stage, run_stages
# the recorded frame size is the model's (one fact: its config)
read -r WIDTH HEIGHT < <("$PY" -c "from training.train import compose_config as c; \
v = c(['model=$MODEL']).model.vae; print(v.width, v.height)")

stage_collect() {  # 2100 tics at most per episode, as World Models' evaluation
  aw collect root="$DATA" scenario=take_cover "maps=[MAP01]" "policies=[random_dodge,dodger]" \
    num_episodes="$EPISODES" steps_per_episode=525 width="$WIDTH" height="$HEIGHT" workers="$WORKERS"
}
# the bright-pixel term: a far fireball is a few pixels and plain L1 / SSIM smear it away
stage_vae() { vae_stage 8 8 vae.bright_weight="${BRIGHT_WEIGHT:-1}"; }
stage_diffusion() {  # a fresh run may start from a committed stage-1 generator
  local init=()
  if [ -n "$STAGE1_INIT" ]; then init=(run.init_from="$STAGE1_INIT"); fi
  # shellcheck disable=SC2086
  diffusion_stage 16 22 "${init[@]}" ${DIFF_EXTRA:-}
}
# CONS_EXTRA: more stage-2 overrides, e.g. "consistency.guidance=10": the 1-NFE student learns
# the classifier-free-guided teacher (needs a stage 1 trained with diffusion.cond_dropout)
# shellcheck disable=SC2086
stage_consistency() { consistency_stage 16 3 ${CONS_EXTRA:-}; }
# ADV_EXTRA: more stage-3 overrides, e.g. "adversarial.recon_weight=0.3 run.ema_decay=0.98"
# shellcheck disable=SC2086
stage_adversarial() {  # d_steps 3: the D that learns (Doom v5)
  adversarial_stage 4 12 adversarial.d_steps=3 ${ADV_EXTRA:-}
}
# HEADS_ROLLOUT=K: the heads learn on the generator's K-step free rollouts instead (the dream
# as the env runs it; heads.rollout_steps), 128 clips per batch
HEADS_ROLLOUT=${HEADS_ROLLOUT:-0}
stage_heads() {  # termination comes from this head in the dream: plain BCE (max_pos_weight 1)
  local rollout=()
  if [ "$HEADS_ROLLOUT" -gt 0 ]; then
    rollout=(heads.rollout_steps="$HEADS_ROLLOUT" data.clip_steps="$HEADS_ROLLOUT" run.batch_size=128)
  fi
  # keeps sigmoid(logit) a calibrated death probability, which the env samples (export);
  # 1-step clips: with K-step clips an episode's last (death) step is drawn K times less often
  # than the others, and the head would learn a K times smaller hazard; trained on the
  # generator's own (teacher-forced) latents: on real ones it read the dream as deadly
  train stage=heads heads.max_pos_weight=1 heads.generated=1 \
    heads.generator="$RUN/adversarial/model.safetensors" run.steps=100000 run.batch_size=256 \
    data.clip_steps=1 optim.lr=1e-3 \
    run.log_every=25 run.eval_every=100 run.ckpt_every=50 run.max_minutes="$(minutes 3)" \
    "${rollout[@]}"
}
stage_export() {
  train stage=export export.context_noise=0.25 export.termination=sample export.out="$OUT_WORLD"
  echo "take_cover: world at $OUT_WORLD"
}

run_stages
