#!/usr/bin/env bash
# Issue 12: a TakeCover dream with side walls. The shipped dream lets a player who keeps
# strafing one way live 4.5x longer than the game does (docs/take_cover_passes.md, "The dream
# has no side walls"): its data players are pinned at a wall in ~1.4 % of their steps. This
# pass adds 200 episodes of the `wall_hugger` player (pinned in 66 % of its strafe steps) to the
# 200 of data/take_cover96, continues the shipped world's stage 1 on the mix (mirrored, as it
# was trained), exports it as the shipped world is (4 Euler steps, guidance 10), relearns the
# heads on its own dream bank and scores the wall hugger and the random player in the new dream.
#   bash training/recipes/take_cover_hugger.sh           # ~65 min on one core (data ~5 min)
# Rerun to resume: collection, latents, stage 1 and the heads continue from what they wrote.
# STAGE1_INIT: the generator stage 1 continues from. worlds/take_cover is this pass's result now;
# to redo this pass from the eleventh: git archive a6a2bfc worlds/take_cover | tar -x -C runs/tc11
# and STAGE1_INIT=runs/tc11/worlds/take_cover.
# PLAYER: who plays the added episodes (into ADDED): a scripted player, or agent:MODEL, a trained
# agent in the real game (World Models' loop: the data shows the world what the agent met;
# AGENT_FLAGS, e.g. "--epsilon 0.2", go to `aapt-world agent collect`). The thirteenth pass:
#   PLAYER=agent:runs/ppo_hug/model.zip AGENT_FLAGS="--epsilon 0.2" BASE=data/take_cover96_hug \
#   ADDED=data/take_cover96_agent DATA=data/take_cover96_loop1 RUN=runs/tc_loop1 \
#   bash training/recipes/take_cover_hugger.sh
set -euo pipefail
PY=${PY:-python}
BASE=${BASE:-data/take_cover96}
ADDED=${ADDED:-data/take_cover96_hugger}
DATA=${DATA:-data/take_cover96_hug}
RUN=${RUN:-runs/tc_hug}
S1_MINUTES=${S1_MINUTES:-20}   # stage 1 continuation (the tenth pass's arms: 20 min, 394 steps)
S1_STEPS=${S1_STEPS:-394}
EPISODES=${EPISODES:-200}  # added episodes
PLAYER=${PLAYER:-wall_hugger}
STAGE1_INIT=${STAGE1_INIT:-worlds/take_cover}
recipe="$(dirname "$0")/take_cover_cpu.sh"
export PY MODEL=dream96 THREADS=1 PRECISION=bf16 WORKERS=1
export MODEL_OVERRIDES="world.momentum=true data.mirror=true"
WORLD_CONFIG=take_cover
SCALE=1
source "$(dirname "$0")/world_stages.sh"  # aw, train (model, world, data, run, precision)

if [ ! -e "$BASE/manifest.json" ]; then  # deterministic: the shipped world's 200 episodes
  DATA=$BASE RUN=$RUN STAGES=collect bash "$recipe"
fi
if [[ $PLAYER == agent:* ]]; then
  # shellcheck disable=SC2086
  aw agent collect --model "${PLAYER#agent:}" --root "$ADDED" --episodes "$EPISODES" \
    --max-steps 525 --seed 1000 --threads 1 ${AGENT_FLAGS:-}
else
  aw collect root="$ADDED" scenario=take_cover "maps=[MAP01]" "policies=[$PLAYER]" \
    num_episodes="$EPISODES" steps_per_episode=525 width=128 height=96 workers=1 seed=1000
fi
aw merge-data --out "$DATA" "$BASE" "$ADDED"
if [ ! -e "$RUN/vae/model.safetensors" ]; then  # the shipped world's latent space, bit for bit
  "$PY" -m training.seed_run --world worlds/take_cover-training/world96 \
    --vae worlds/take_cover-training/vae96.safetensors --run "$RUN"
fi
# stage 1 from the shipped generator, the tenth pass's settings; run.steps counts this run's
DATA=$DATA RUN=$RUN SCALE=2 STAGE1_INIT=$STAGE1_INIT \
  DIFF_EXTRA="diffusion.cond_dropout=0.15 run.ema_decay=0.98 optim.lr=3e-4 run.steps=$S1_STEPS \
run.max_minutes=$S1_MINUTES" STAGES="latents diffusion" bash "$recipe"
train stage=export export.source=diffusion export.sample_steps=4 export.context_noise=0.25 \
  export.termination=sample export.out="$RUN/world-s1-4nfe"
# the heads on the new dream's own sampler (the eleventh pass's bank settings)
train stage=heads heads.max_pos_weight=1 heads.generated=1 heads.generator="$RUN/world-s1-4nfe" \
  heads.rollout_steps=8 heads.sample_steps=4 heads.guidance=10 data.clip_steps=8 \
  run.batch_size=128 optim.lr=1e-3 heads.bank_clips=1024 heads.bank_val_clips=256 \
  heads.bank_deaths=0.5 run.steps=800
# export again: the run's heads stage is in now (termination sampled from the learned head)
train stage=export export.source=diffusion export.sample_steps=4 export.context_noise=0.25 \
  export.termination=sample export.out="$RUN/world-s1-4nfe-heads"
aw retune --world "$RUN/world-s1-4nfe-heads" --out "$RUN/world" --guidance 10
for policy in wall_hugger random_dodge; do
  aw agent eval --policy "$policy" --env neural --world "$RUN/world" --episodes 30 \
    --dtype bf16 --threads 1 --json "$RUN/dream_$policy.json"
done
echo "take_cover_hugger: world in $RUN/world, dream scores in $RUN/dream_*.json"
