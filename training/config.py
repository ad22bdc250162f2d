"""Structured training configs (hydra 1.3, ``version_base="1.3"``).

One ``TrainConfig`` for every stage; ``stage`` picks which part runs. Groups shipped in
``training/configs``: ``model`` (tiny | small | base) and ``world`` (doom). Every field can be
overridden on the command line, e.g.::

    aapt-world train stage=diffusion model=tiny run.steps=200 data.root=data/doom

Stages read the previous stage's weights from the same ``run.out_dir``:
vae -> latents (cached) -> diffusion -> consistency -> adversarial; heads need the latents;
export assembles a shippable world directory from whatever stages exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aapt_world.constants import DOOM_FPS
from aapt_world.transformer import DiTConfig
from aapt_world.vae import VAEConfig
from aapt_world.world import ACTION_TYPES as WORLD_ACTION_TYPES

STAGES = ("vae", "decoder", "latents", "diffusion", "consistency", "adversarial", "heads",
          "export")
PRECISIONS = ("auto", "fp32", "bf16")  # run.precision: the generator stages' autocast


@dataclass
class DataConfig:
    root: str = "data/doom"  # dataset recorded by `aapt-world collect`
    clip_steps: int = 8  # K: clips of 4K+1 video frames = K+1 latent frames
    val_batches: int = 4  # validation batches per evaluation
    # DiT stages: half the training clips from the episodes mirrored left-right (frames flipped,
    # strafe and turn negated; training.latents.MIRRORED_COMMANDS); stage=latents with it on
    # encodes the mirror images too. Validation stays on the recorded episodes.
    mirror: bool = False


@dataclass
class WorldConfig:
    name: str = "doom"
    condition: str = "action"  # condition encoder kind: action | camera | pose
    action_dim: int = 4  # width of the per-frame command (Doom: forward, strafe, turn, look)
    action_type: str = "discrete"  # the exported env's action space: discrete | continuous |
    # dodge (Doom; dodge = TakeCover's noop / left / right) | game (the recorded game's own
    # space, from the dataset manifest)
    fps: int = DOOM_FPS
    # Doom: > 0 turns the recycled frame by the commanded yaw, a pinhole camera of this
    # horizontal field of view (ViZDoom's: 90); see aapt_world.view_warp. 0 = off.
    view_warp_fov: float = 0.0
    # pose worlds: > 0 also hands the generator Gaussian maps of the joints on the latent grid
    # (std in latent pixels; see PoseConditionEncoder.heatmaps). 0 = off.
    pose_map_sigma: float = 0.0
    # pose worlds: true also hands the generator the floor anchor (the humanoid record's
    # floor_col / floor_row) as one more 2D point per frame: the camera follows the root, so
    # the body's keypoints cannot say how far the floor moved. action_dim counts it (+2).
    floor_anchor: bool = False
    # Doom's commands: true also hands the generator the player's velocity, the forward and
    # strafe commands integrated with Doom's friction per tic (aapt_world.momentum): the
    # player keeps moving after a command ends, which the step's own commands do not say
    momentum: bool = False
    # with world.momentum: != 0 slides the recycled frame sideways by this many pixels per video
    # frame at full strafe speed (TakeCover's far wall: -1.2, the fit's peak; the scene moves
    # left when the player strafes right); see aapt_world.view_warp.slide_view. 0 = off.
    slide_view_px: float = 0.0


@dataclass
class ModelConfig:
    name: str = "small"
    vae: VAEConfig = field(default_factory=VAEConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    cond_hidden: int = 256  # condition encoder MLP width


@dataclass
class RunConfig:
    out_dir: str = "runs/doom"
    steps: int = 1000  # optimizer steps of the stage (resume continues up to this)
    batch_size: int = 8  # per process
    log_every: int = 10
    eval_every: int = 200
    ckpt_every: int = 100
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads per process (0 = leave torch's default)
    init_from: str = ""  # safetensors to start a fresh stage from (e.g. a shipped stage's fp16
    # weights, to fine-tune on your own game), or a world directory (a generator stage starts
    # from the world's generator: continue the shipped world); ignored when the stage resumes
    fsdp: bool = False  # under torchrun: FSDP2 fully_shard per block instead of DDP
    # (diffusion, consistency, heads; the VAE pair and stage 3 use DDP / one process)
    progress: bool = True
    max_minutes: float = 0.0  # stop (checkpoint + eval) after this much wall time in this
    # invocation, 0 = no limit; rerun to continue (a CPU time budget per session)
    precision: str = "auto"  # the VAE's and generator stages' autocast: auto (bf16 on CUDA,
    # fp32 on CPU), fp32, or bf16 (also on CPU: with AMX units a stage-1 step runs ~1.5x faster)
    compile: bool = False  # torch.compile (inductor) the generator's training forward in
    # stages 1 and 2: one compile of ~0.5-2 min per stage start, then faster steps
    ema_decay: float = 0.0  # > 0: the generator stages (1-3) also keep an exponential moving
    # average of the generator's weights (saved as <module>_ema.*; export ships it), 0 = off


@dataclass
class OptimConfig:
    lr: float = 3e-4
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    warmup_steps: int = 50
    # Optional linear decay to min_lr_ratio * lr over decay_steps, starting at decay_start
    # (-1 = constant after warm-up). Set it when resuming a run to anneal what is there.
    decay_start: int = -1
    decay_steps: int = 1000
    min_lr_ratio: float = 0.1


@dataclass
class VAEStageConfig:
    kl_weight: float = 1e-6
    l1_weight: float = 1.0
    ssim_weight: float = 0.5  # multi-scale SSIM: sharpness without a downloaded perceptual net
    gradient_weight: float = 0.5  # L1 on image gradients: keeps edges crisp
    # L1 over the bright pixels alone (max channel of the real frame > bright_threshold, in
    # [-1, 1] units; dilated 3x3), averaged over those pixels: small bright objects (TakeCover's
    # fireballs, muzzle flashes) carry the game in a few pixels, and the frame-mean L1 / SSIM
    # let a VAE smear them away (0 = off)
    bright_weight: float = 0.0
    bright_threshold: float = 0.6  # 204 of 255
    # weight of the latents' step-to-step change over each position's variance in time
    # (losses.latent_change_ratio, logged as latent_change; a static code cannot lower it): a
    # latent the generator can predict from the previous one (0 = off). Measured on Doom: the
    # latent MSE got easier but the decoded one-step prediction worse (docs/doom_passes.md)
    temporal_weight: float = 0.0
    decoder_noise: float = 0.0  # decoders also train on latents + s * std(latent) * n with
    # s ~ U(0, decoder_noise) per clip: an imperfect predicted latent then decodes to a
    # plausible frame rather than mush (0 = off)


@dataclass
class DecoderStageConfig:
    adv_weight: float = 0.05  # patch-GAN weight next to the reconstruction loss
    d_lr: float = 2e-4
    disc_width: int = 32
    init_light: str = ""  # start the light decoder from this file's light_decoder.* (e.g. a
    # seeded run's decoder/model.safetensors: a shipped world's sharpened decoder)
    # Decode what the world will decode: this fraction of clips replaces latents 1..K by the
    # generator's teacher-forced 1-NFE predictions (real previous latents, context noise as at
    # inference), paired with the REAL frames: the decoder learns to turn the generator's
    # imperfect latents into the frame they stand for. Needs ``generator`` (world dir or file).
    generated: float = 0.0
    generator: str = ""
    context_noise: float = 0.25
    generated_loss: str = "paired"  # paired: reconstruct the real frames from them |
    # adversarial: only the patch D judges their decodes (real latents keep the L1 loss)


@dataclass
class DiffusionStageConfig:
    timestep_shift: float = 3.0  # shift(t, s) = s t / (1 + (s - 1) t); paper: 24 at 736x416
    sample_steps: int = 32  # Euler steps when sampling the diffusion model (eval, baselines)
    context_noise: float = 0.0  # max context-noise level of the recycled frames in training
    # (per frame, U(0, max)); give the model the level with model.dit.context_noise_buckets
    # Self-forcing (exposure bias): this fraction of clips recycle the model's OWN one-step
    # predictions instead of the real previous frames; ``self_forcing_passes`` parallel
    # no-grad unrolls make frame k's context carry up to that many steps of its own error.
    self_forcing: float = 0.0
    self_forcing_passes: int = 1
    cond_dropout: float = 0.0  # this fraction of clips trains without conditions (the null
    # condition): the unconditional model that classifier-free guidance (export.guidance) needs
    # + pixel_weight x the pixel MSE (frames in [-1, 1]) between the decoded clean estimate
    # x_t - t v and the decoded real latent, on pixel_steps random steps per clip (0 = all);
    # the run's light decoder, frozen (training/pixel_loss.py). 0 = off
    pixel_weight: float = 0.0
    pixel_steps: int = 4


@dataclass
class ConsistencyStageConfig:
    teacher_steps: int = 32  # discrete-time schedule, shifted like stage 1
    timestep_shift: float = 3.0
    loss: str = "pseudo_huber"  # improved consistency models: pseudo-Huber | l2
    guidance: float = 1.0  # distill the classifier-free-guided teacher (1 = plain); its stage
    # 1 must have trained the null condition (diffusion.cond_dropout)


@dataclass
class AdversarialStageConfig:
    d_lr: float = 1e-4
    g_lr: float = 1e-4
    r1_sigma: float = 0.1  # approximated R1/R2 perturbation (paper 0.1)
    r1_weight: float = 1000.0  # paper 1000
    rmsprop_alpha: float = 0.9  # Adam(beta1=0, beta2=alpha): RMSProp-like, paper 0.9
    disc_layers: list[int] = field(default_factory=lambda: [1, 3, 5, 7])
    disc_queries: int = 4  # learnable query tokens per head
    student_forcing: bool = True  # False = teacher-forced adversarial ablation (fails)
    rollout_steps: int = 8  # latent frames generated per segment
    segments: int = 1  # >1 = long-video training beyond the real clip length
    segment_overlap: int = 1  # frames of the previous segment shown to D with the next one
    d_steps: int = 1  # D updates per G update, on the same rollout (fresh t_D and noise)
    # + recon_weight * latent MSE between the student rollout and the real continuation of the
    # same start and commands (first segment only: later segments have no real continuation).
    # D alone trades PSNR for motion (Doom passes 5-8); this anchors G to the data.
    recon_weight: float = 0.0
    # + pixel_weight x the pixel MSE of the same pair decoded by the run's frozen light decoder
    # (pixel_steps random steps per clip, 0 = all; training/pixel_loss.py): the anchor measured
    # where the world is judged. 0 = off
    pixel_weight: float = 0.0
    pixel_steps: int = 4
    context_noise: float = 0.0  # noise level of the recycled frame in student rollouts: set
    # it to export.context_noise, so the generator is post-trained as the world will run it
    disc_init: str = ""  # start D's backbone from this world dir / generator file instead of
    # the run's stage-1 weights (e.g. worlds/doom with run.init_from=worlds/doom: stage 3
    # continues a shipped world when the run holds no stage-1/2 checkpoints)


@dataclass
class HeadsStageConfig:
    reward_weight: float = 1.0
    termination_weight: float = 1.0
    max_pos_weight: float = 100.0  # deaths are rare: positives weighted by their rarity, up
    # to this; 1 = plain BCE, a calibrated probability (what termination=sample needs)
    # Learn on what the dream shows: this fraction of batches replaces each step's new latent
    # by the frozen generator's teacher-forced 1-NFE prediction (the real step's labels kept)
    generated: float = 0.0
    generator: str = ""  # world directory or generator stage file
    context_noise: float = 0.25  # the recycled frame's noise, as at inference
    # > 0: generated batches are the generator's free rollout (this many steps, KV cache and
    # context noise as in the env) from a real start with the real commands, and the heads
    # learn on each clip's last step only: the dream drifts away from what teacher-forced
    # frames look like, and a head that never saw that drift reads it as death. One step per
    # clip keeps every step of an episode (its death too) equally likely. Needs
    # data.clip_steps == rollout_steps.
    rollout_steps: int = 0
    # how the rollouts sample: Euler steps per latent frame (shift diffusion.timestep_shift when
    # > 1) and classifier-free guidance, as the world the heads ship in samples (a stage-1
    # dream exported with export.sample_steps and retuned with --guidance)
    sample_steps: int = 1
    guidance: float = 1.0
    # > 0: dream this many rollouts once (and bank_val_clips for validation), saved beside the
    # heads, and learn on them for every step; bank_deaths of them end in a death, importance
    # weights keep the head calibrated to uniform clips (pair with max_pos_weight 1)
    bank_clips: int = 0
    bank_val_clips: int = 256
    bank_deaths: float = 0.5


@dataclass
class ExportConfig:
    source: str = "auto"  # generator stage: auto (latest of adversarial > consistency >
    # diffusion) | adversarial | consistency | diffusion
    sample_steps: int = 0  # Euler steps per frame; 0 = 1 (1 NFE), or diffusion.sample_steps
    # when source=diffusion (the N-step baseline of the drift evaluation)
    out: str = ""  # world directory; "" = <run.out_dir>/world (auto) or world-<source>
    light_decoder: bool = True  # ship the light decoder (faster) instead of the full one
    start_frames: int = 16  # first frames of validation episodes, the env's reset images
    context_noise: float = 0.0  # inference noise level of the recycled frame (a world trained
    # with diffusion.context_noise and model.dit.context_noise_buckets is told it)
    termination: str = "threshold"  # the env's rule for the head's logit (WorldConfig):
    # threshold | sample (pair with heads.max_pos_weight=1)
    temperature: float = 1.0  # scale of the generator's input noise (WorldConfig)
    ema: bool = True  # ship the stage's weight average (run.ema_decay) when it kept one
    guidance: float = 1.0  # classifier-free guidance on the conditions (WorldConfig; 1 = off)


@dataclass
class TrainConfig:
    stage: str = "vae"
    world: WorldConfig = field(default_factory=WorldConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    vae: VAEStageConfig = field(default_factory=VAEStageConfig)
    decoder: DecoderStageConfig = field(default_factory=DecoderStageConfig)
    diffusion: DiffusionStageConfig = field(default_factory=DiffusionStageConfig)
    consistency: ConsistencyStageConfig = field(default_factory=ConsistencyStageConfig)
    adversarial: AdversarialStageConfig = field(default_factory=AdversarialStageConfig)
    heads: HeadsStageConfig = field(default_factory=HeadsStageConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    @property
    def adversarial_clip_steps(self) -> int:
        """Real latent steps one stage-3 batch needs (the overlap only with segments > 1)."""
        a = self.adversarial
        return a.rollout_steps + (a.segment_overlap if a.segments > 1 else 0)

    def validate(self) -> None:
        """Raise ValueError naming the first field that makes no sense."""
        checks = [
            (self.stage in STAGES, f"stage must be one of {STAGES}, got {self.stage!r}"),
            (self.run.steps >= 0, f"run.steps must be >= 0, got {self.run.steps}"),
            (self.run.batch_size >= 1, f"run.batch_size must be >= 1, got {self.run.batch_size}"),
            (self.decoder.generated_loss in ("paired", "adversarial"),
             f"decoder.generated_loss must be paired or adversarial, got "
             f"{self.decoder.generated_loss!r}"),
            (self.run.max_minutes >= 0,
             f"run.max_minutes must be >= 0, got {self.run.max_minutes}"),
            (self.run.ckpt_every >= 1, f"run.ckpt_every must be >= 1, got {self.run.ckpt_every}"),
            (self.run.device in ("auto", "cpu", "cuda"),
             f"run.device must be auto, cpu or cuda, got {self.run.device!r}"),
            (self.run.precision in PRECISIONS,
             f"run.precision must be one of {PRECISIONS}, got {self.run.precision!r}"),
            (self.data.clip_steps >= 1,
             f"data.clip_steps must be >= 1, got {self.data.clip_steps}"),
            (self.optim.lr > 0, f"optim.lr must be > 0, got {self.optim.lr}"),
            (self.vae.bright_weight >= 0,
             f"vae.bright_weight must be >= 0, got {self.vae.bright_weight}"),
            (self.diffusion.pixel_weight >= 0,
             f"diffusion.pixel_weight must be >= 0, got {self.diffusion.pixel_weight}"),
            (self.diffusion.pixel_steps >= 0,
             f"diffusion.pixel_steps must be >= 0, got {self.diffusion.pixel_steps}"),
            (self.adversarial.pixel_weight >= 0,
             f"adversarial.pixel_weight must be >= 0, got {self.adversarial.pixel_weight}"),
            (self.adversarial.pixel_steps >= 0,
             f"adversarial.pixel_steps must be >= 0, got {self.adversarial.pixel_steps}"),
            (self.vae.temporal_weight >= 0,
             f"vae.temporal_weight must be >= 0, got {self.vae.temporal_weight}"),
            (-1 < self.vae.bright_threshold < 1,
             f"vae.bright_threshold must be in (-1, 1) (pixel units), got "
             f"{self.vae.bright_threshold}"),
            (self.optim.decay_steps >= 1,
             f"optim.decay_steps must be >= 1, got {self.optim.decay_steps}"),
            (0 <= self.optim.min_lr_ratio <= 1,
             f"optim.min_lr_ratio must be in [0, 1], got {self.optim.min_lr_ratio}"),
            (self.consistency.guidance >= 0,
             f"consistency.guidance must be >= 0 (1 = off), got {self.consistency.guidance}"),
            (0 <= self.diffusion.cond_dropout < 1,
             f"diffusion.cond_dropout must be in [0, 1), got {self.diffusion.cond_dropout}"),
            (0 <= self.run.ema_decay < 1,
             f"run.ema_decay must be in [0, 1) (0 = off), got {self.run.ema_decay}"),
            (not (self.run.fsdp and self.run.ema_decay > 0),
             "run.ema_decay is not supported with run.fsdp (the average would be sharded)"),
            (not self.run.fsdp or self.stage in ("diffusion", "consistency", "heads"),
             f"run.fsdp is supported by stages diffusion, consistency, heads, not {self.stage!r}"),
            (self.world.action_type in WORLD_ACTION_TYPES,
             f"world.action_type must be discrete, continuous, dodge (Doom), game (a "
             f"recorded game's own space) or pose (humanoid), got {self.world.action_type!r}"),
            ((self.world.action_type == "pose") == (self.world.condition == "pose"),
             f"world.action_type pose goes with world.condition pose, got "
             f"{self.world.action_type!r} / {self.world.condition!r}"),
            (not self.world.floor_anchor or self.world.condition == "pose",
             f"world.floor_anchor needs a pose world, got world.condition="
             f"{self.world.condition!r}"),
            (self.world.condition in ("action", "camera", "pose"),
             f"world.condition must be action, camera or pose, got {self.world.condition!r}"),
            (self.diffusion.timestep_shift > 0, "diffusion.timestep_shift must be > 0"),
            (0 <= self.diffusion.context_noise < 1,
             f"diffusion.context_noise must be in [0, 1), got {self.diffusion.context_noise}"),
            (0 <= self.diffusion.self_forcing <= 1,
             f"diffusion.self_forcing must be in [0, 1], got {self.diffusion.self_forcing}"),
            (self.diffusion.self_forcing_passes >= 1,
             f"diffusion.self_forcing_passes must be >= 1, got "
             f"{self.diffusion.self_forcing_passes}"),
            (self.export.source in ("auto", "adversarial", "consistency", "diffusion"),
             f"export.source must be auto, adversarial, consistency or diffusion, got "
             f"{self.export.source!r}"),
            (self.export.sample_steps >= 0,
             f"export.sample_steps must be >= 0, got {self.export.sample_steps}"),
            (0 <= self.export.context_noise < 1,
             f"export.context_noise must be in [0, 1), got {self.export.context_noise}"),
            (self.export.start_frames >= 1,
             f"export.start_frames must be >= 1, got {self.export.start_frames}"),
            (self.consistency.teacher_steps >= 2, "consistency.teacher_steps must be >= 2"),
            (self.consistency.loss in ("pseudo_huber", "l2"),
             f"consistency.loss must be pseudo_huber or l2, got {self.consistency.loss!r}"),
            (self.adversarial.rollout_steps >= 1, "adversarial.rollout_steps must be >= 1"),
            (self.adversarial.segments >= 1, "adversarial.segments must be >= 1"),
            (self.adversarial.d_steps >= 1, "adversarial.d_steps must be >= 1"),
            (self.adversarial.recon_weight >= 0, "adversarial.recon_weight must be >= 0"),
            (self.heads.rollout_steps >= 0, "heads.rollout_steps must be >= 0"),
            (self.stage != "heads" or self.heads.rollout_steps == 0
             or self.data.clip_steps == self.heads.rollout_steps,
             f"heads.rollout_steps ({self.heads.rollout_steps}) needs data.clip_steps equal to "
             f"it, got {self.data.clip_steps}"),
            (self.heads.rollout_steps == 0 or self.heads.generated > 0,
             "heads.rollout_steps > 0 needs heads.generated > 0 (and heads.generator)"),
            (self.heads.sample_steps >= 1 and self.heads.guidance >= 0,
             f"heads.sample_steps must be >= 1 and heads.guidance >= 0, got "
             f"{self.heads.sample_steps} and {self.heads.guidance}"),
            ((self.heads.sample_steps == 1 and self.heads.guidance == 1.0)
             or self.heads.rollout_steps > 0,
             "heads.sample_steps / heads.guidance shape the free rollouts: they need "
             "heads.rollout_steps > 0"),
            (self.heads.bank_clips == 0 or (self.heads.rollout_steps > 0
                                            and self.heads.bank_val_clips > 0
                                            and 0 <= self.heads.bank_deaths < 1),
             f"heads.bank_clips > 0 needs heads.rollout_steps > 0, heads.bank_val_clips > 0 and "
             f"0 <= heads.bank_deaths < 1 (got {self.heads.rollout_steps}, "
             f"{self.heads.bank_val_clips}, {self.heads.bank_deaths})"),
            (0 <= self.adversarial.context_noise < 1,
             f"adversarial.context_noise must be in [0, 1), got "
             f"{self.adversarial.context_noise}"),
            (0 <= self.adversarial.segment_overlap < self.adversarial.rollout_steps,
             "adversarial.segment_overlap must be in [0, rollout_steps)"),
            (self.stage != "adversarial" or self.data.clip_steps >= self.adversarial_clip_steps,
             f"adversarial.rollout_steps + segment_overlap ({self.adversarial_clip_steps}) "
             f"needs data.clip_steps >= {self.adversarial_clip_steps}, got "
             f"{self.data.clip_steps}"),
            (all(0 <= i < self.model.dit.depth for i in self.adversarial.disc_layers),
             f"adversarial.disc_layers {self.adversarial.disc_layers} must index blocks "
             f"0..{self.model.dit.depth - 1}"),
            (self.model.vae.height % 8 == 0 and self.model.vae.width % 8 == 0,
             "model.vae.height/width must be multiples of 8"),
            (self.model.dit.latent_height * 8 == self.model.vae.height
             and self.model.dit.latent_width * 8 == self.model.vae.width,
             f"model.dit.latent_height x latent_width ({self.model.dit.latent_height}x"
             f"{self.model.dit.latent_width}) must be model.vae.height x width / 8 "
             f"({self.model.vae.height // 8}x{self.model.vae.width // 8})"),
            (self.model.dit.latent_channels == self.model.vae.latent_channels,
             f"model.dit.latent_channels ({self.model.dit.latent_channels}) must equal "
             f"model.vae.latent_channels ({self.model.vae.latent_channels})"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"invalid training config: {message}")
