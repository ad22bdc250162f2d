# Shared by the CPU Doom recipes (doom_cpu_v2.sh .. v4.sh), sourced after they set DATA, RUN,
# THREADS and STAGES: the train wrapper, the stage-2 / stage-3 settings every pass kept, and
# the stage loop. ADV_MINUTES caps stage 3; stage_adversarial takes extra overrides (each pass gave it a different budget).
train() {  # MODEL_OVERRIDES: model settings every stage of a recipe shares (word-split)
  # shellcheck disable=SC2086
  # PRECISION=bf16: autocast on CPUs with AMX (1.4-1.6x faster DiT steps; slower elsewhere)
  aapt-world train data.root="$DATA" run.out_dir="$RUN" run.threads="$THREADS" \
    run.progress=false run.precision="${PRECISION:-fp32}" ${MODEL_OVERRIDES:-} "$@"
}
stage_consistency() {
  train stage=consistency run.steps=80 run.batch_size=6 data.clip_steps=12 run.log_every=5 \
    run.eval_every=40 run.ckpt_every=10 optim.lr=2e-4 optim.warmup_steps=10 run.max_minutes=6
}
stage_adversarial() {
  # r1_weight 100: at the paper's 1000 the first world's D lost all input dependence
  train stage=adversarial run.steps=400 run.batch_size=2 data.clip_steps=10 \
    adversarial.rollout_steps=10 adversarial.g_lr=5e-5 adversarial.d_lr=1e-4 \
    adversarial.r1_weight=100 run.log_every=5 run.eval_every=25 run.ckpt_every=5 \
    optim.warmup_steps=10 run.max_minutes="${ADV_MINUTES:-15}" "$@"
}
run_stages() {
  for stage in $STAGES; do
    "stage_$stage"
  done
}
