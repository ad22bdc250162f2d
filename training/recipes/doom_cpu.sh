#!/usr/bin/env bash
# The recipe that trained the shipped default world (worlds/doom) on a 2-core CPU, no GPU.
#   DATA=/path/to/dataset RUN=/path/to/run bash training/recipes/doom_cpu.sh
#   STAGES="adversarial export" bash training/recipes/doom_cpu.sh     # some stages only
# The dataset: aapt-world collect root=$DATA num_episodes=64 steps_per_episode=500 workers=1
# Every stage resumes where it stopped (rerun to continue; a finished stage is a no-op).
# Wall-time budgets (run.max_minutes) cap each stage; run.steps and the LR decay are sized to
# what the budget reaches on that machine (the model card lists what each stage reached).
set -euo pipefail
DATA=${DATA:-data/doom}
RUN=${RUN:-runs/doom}
THREADS=${THREADS:-2}
STAGES=${STAGES:-vae latents diffusion consistency adversarial export}
train() {
  aapt-world train data.root="$DATA" run.out_dir="$RUN" run.threads="$THREADS" \
    run.progress=false "$@"
}

stage_vae() {  # 3200 steps; the first 2300 at constant LR (an earlier session), then decay
  train stage=vae run.steps=3200 run.batch_size=4 data.clip_steps=4 run.log_every=25 \
    run.eval_every=250 run.ckpt_every=50 optim.lr=1e-3 optim.warmup_steps=100 \
    optim.decay_start=2300 optim.decay_steps=900 optim.min_lr_ratio=0.05
}
stage_latents() { train stage=latents; }
stage_diffusion() {  # stage 1 from scratch: no pretrained video model exists offline
  train stage=diffusion run.steps=1700 run.batch_size=8 data.clip_steps=8 run.log_every=10 \
    run.eval_every=250 run.ckpt_every=25 optim.lr=5e-4 optim.warmup_steps=50 \
    optim.decay_start=1150 optim.decay_steps=550 run.max_minutes=60
}
stage_consistency() {  # stage 2: a short distillation, it only initialises stage 3
  train stage=consistency run.steps=80 run.batch_size=8 data.clip_steps=8 run.log_every=5 \
    run.eval_every=40 run.ckpt_every=10 optim.lr=2e-4 optim.warmup_steps=10 run.max_minutes=9
}
stage_adversarial() {  # stage 3: AAPT with student forcing, what the CPU budget allows
  train stage=adversarial run.steps=550 run.batch_size=2 data.clip_steps=6 \
    adversarial.rollout_steps=6 adversarial.g_lr=5e-5 adversarial.d_lr=1e-4 \
    run.log_every=5 run.eval_every=50 run.ckpt_every=5 optim.warmup_steps=10 \
    run.max_minutes=40
}
stage_export() {  # the shipped world (AAPT, 1 NFE) and the drift evaluation's baselines
  train stage=export
  train stage=export export.source=consistency
  train stage=export export.source=diffusion export.sample_steps=4
}

for stage in $STAGES; do
  "stage_$stage"
done
