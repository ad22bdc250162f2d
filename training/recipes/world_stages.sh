# Shared by the scaled world recipes (take_cover_cpu.sh, humanoid_cpu.sh), sourced after they
# set PY, MODEL, WORLD_CONFIG, DATA, RUN, THREADS, SCALE, VAE_INIT and STAGES: the train
# wrapper, the stage settings both keep, and the stage loop. Each stage helper takes the batch
# size and the minutes at SCALE=1 (multiplied by SCALE), then extra overrides.
minutes() { "$PY" -c "print(round($1 * $SCALE, 3))"; }
aw() { "$PY" -m agents.cli "$@"; }
train() {  # MODEL_OVERRIDES: model settings every stage shares (word-split)
  # shellcheck disable=SC2086
  # PRECISION=bf16: autocast on CPUs with AMX (1.4-1.6x faster DiT steps; slower elsewhere)
  aw train model="$MODEL" world="$WORLD_CONFIG" data.root="$DATA" run.out_dir="$RUN" \
    run.threads="$THREADS" run.progress=false run.precision="${PRECISION:-fp32}" \
    ${MODEL_OVERRIDES:-} "$@"
}
vae_stage() {  # from VAE_INIT (convolutional: any frame size) unless the tiny dry-run model
  local batch=$1 mins=$2 init=()
  shift 2
  if [ "$MODEL" != tiny ] && [ -f "$VAE_INIT" ]; then init=(run.init_from="$VAE_INIT"); fi
  train stage=vae "${init[@]}" run.steps=100000 run.batch_size="$batch" data.clip_steps=4 \
    optim.lr=3e-4 optim.warmup_steps=20 vae.kl_weight=1e-4 vae.decoder_noise=0.1 \
    run.log_every=25 run.eval_every=200 run.ckpt_every=50 run.max_minutes="$(minutes "$mins")" "$@"
}
stage_latents() { train stage=latents; }
diffusion_stage() {  # clips longer than the window, context noise, self-forcing (Doom v4's set)
  local batch=$1 mins=$2
  shift 2
  train stage=diffusion run.steps=100000 run.batch_size="$batch" data.clip_steps=12 \
    optim.lr=6e-4 optim.warmup_steps=50 diffusion.context_noise=0.5 diffusion.self_forcing=0.5 \
    diffusion.self_forcing_passes=2 run.log_every=10 run.eval_every=200 run.ckpt_every=25 \
    run.max_minutes="$(minutes "$mins")" "$@"
}
consistency_stage() {
  local batch=$1 mins=$2
  shift 2
  train stage=consistency run.steps=100000 run.batch_size="$batch" data.clip_steps=12 \
    optim.lr=2e-4 optim.warmup_steps=10 run.log_every=5 run.eval_every=50 run.ckpt_every=10 \
    run.max_minutes="$(minutes "$mins")" "$@"
}
adversarial_stage() {  # r1_weight 100: at the paper's 1000 the first Doom world's D went blind
  local batch=$1 mins=$2
  shift 2
  train stage=adversarial run.steps=100000 run.batch_size="$batch" data.clip_steps=10 \
    adversarial.rollout_steps=10 adversarial.g_lr=5e-5 adversarial.d_lr=1e-4 \
    adversarial.r1_weight=100 run.log_every=5 run.eval_every=25 run.ckpt_every=5 \
    optim.warmup_steps=10 run.max_minutes="$(minutes "$mins")" "$@"
}
run_stages() {
  for stage in $STAGES; do
    "stage_$stage"
  done
}
