#!/usr/bin/env bash
# The recipe that trained the shipped default world (worlds/doom) on a 2-core CPU, no GPU.
# Every stage resumes where it stopped: rerun the script (or one line of it) to continue.
#   DATA=/path/to/dataset RUN=/path/to/run bash training/recipes/doom_cpu.sh
# The dataset: aapt-world collect root=$DATA num_episodes=64 steps_per_episode=500 workers=1
# Wall-time budgets (run.max_minutes) cap each stage; run.steps and the LR decay are sized to
# what the budget reaches on that machine (see the model card for what each stage reached).
set -euo pipefail
DATA=${DATA:-data/doom}
RUN=${RUN:-runs/doom}
THREADS=${THREADS:-2}
T="aapt-world train data.root=$DATA run.out_dir=$RUN run.threads=$THREADS run.progress=false"

# VAE (the shipped one: 3200 steps; the first 2300 at constant LR, see worlds/doom/MODEL_CARD.md)
$T stage=vae run.steps=3200 run.batch_size=4 data.clip_steps=4 run.log_every=25 \
   run.eval_every=250 run.ckpt_every=50 optim.lr=1e-3 optim.warmup_steps=100 \
   optim.decay_start=2300 optim.decay_steps=900 optim.min_lr_ratio=0.05
$T stage=latents
# stage 1: diffusion adaptation (from scratch: no pretrained video model offline)
$T stage=diffusion run.steps=1700 run.batch_size=8 data.clip_steps=8 run.log_every=10 \
   run.eval_every=250 run.ckpt_every=25 optim.lr=5e-4 optim.warmup_steps=50 \
   optim.decay_start=1150 optim.decay_steps=550 run.max_minutes=60
# stage 2: consistency distillation into a 1-step generator
$T stage=consistency run.steps=150 run.batch_size=8 data.clip_steps=8 run.log_every=5 \
   run.eval_every=75 run.ckpt_every=10 optim.lr=2e-4 optim.warmup_steps=10 run.max_minutes=15
# stage 3: adversarial post-training with student forcing
$T stage=adversarial run.steps=150 run.batch_size=2 data.clip_steps=6 \
   adversarial.rollout_steps=6 adversarial.g_lr=3e-5 adversarial.d_lr=1e-4 \
   run.log_every=5 run.eval_every=50 run.ckpt_every=5 optim.warmup_steps=10 run.max_minutes=30
# the shipped world (AAPT, 1 NFE) and the drift evaluation's baselines
$T stage=export
$T stage=export export.source=consistency
$T stage=export export.source=diffusion export.sample_steps=4
