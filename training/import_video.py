"""Import recorded gameplay (video files plus per-frame action arrays) into the dataset format.

    aapt-world import-video --root data/mygame --action-space discrete:5 \
        --video run1.mp4 run2.mp4 --actions run1.npy run2.npy --steps 100

Each video comes with a ``.npy`` of per-frame actions: ``actions[j]`` is the action taken
after frame j (the one that led to frame j+1); int (N,) for ``discrete:N``, float (N, *shape)
for ``box:LOW,HIGH:SHAPE`` (e.g. ``box:-1,1:2``); N = the video's frame count (the last entry
is unused) or one less. Frames are resized to ``width`` x ``height``. One dataset step spans
``FRAMES_PER_STEP`` frames; its command is the mean of the encoded actions that produced them
(``envs.game_actions``: one-hot for discrete, [-1, 1] for box), so a held action stays exact.
Videos are cut into episodes of ``steps`` steps (0: one episode per video); one episode in
``val_every`` validates. Re-running skips what is on disk and refuses other settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from aapt_world.cli_options import command_parser
from envs.game_actions import ActionEncoding
from training.dataset import (
    FRAMES_PER_STEP,
    Episode,
    check_dataset_meta,
    check_episodes_match,
    completed_episode_ids,
    remove_stale_temporaries,
    validation_episodes,
    write_episode,
    write_manifest,
)
from training.record import add_dataset_options, run_recorder


def parse_action_space(spec: str) -> ActionEncoding:
    """``discrete:N`` or ``box:LOW,HIGH:SHAPE`` (SHAPE like ``2`` or ``2x3``)."""
    kind, _, rest = spec.partition(":")
    try:
        if kind == "discrete":
            return ActionEncoding("discrete", n=int(rest))
        if kind == "box":
            bounds, _, shape_text = rest.partition(":")
            low, high = (float(v) for v in bounds.split(","))
            shape = tuple(int(s) for s in shape_text.split("x"))
            size = int(np.prod(shape))
            return ActionEncoding("box", low=(low,) * size, high=(high,) * size, shape=shape)
    except ValueError as err:
        raise ValueError(f"bad --action-space {spec!r} ({err}): expected discrete:N or "
                         f"box:LOW,HIGH:SHAPE, e.g. box:-1,1:2") from None
    raise ValueError(f"bad --action-space {spec!r}: expected discrete:N or box:LOW,HIGH:SHAPE")


@dataclass
class ImportConfig:
    root: str
    videos: list[str]
    actions: list[str]
    action_space: str  # discrete:N | box:LOW,HIGH:SHAPE
    name: str = "game"
    steps: int = 0  # steps per episode (0: one episode per video)
    width: int = 64
    height: int = 48
    fps: float = 0.0  # 0: the first video's own
    val_every: int = 8

    def validate(self) -> None:
        if len(self.videos) != len(self.actions) or not self.videos:
            raise ValueError(f"give one --actions file per --video, got {len(self.videos)} "
                             f"videos and {len(self.actions)} action files")
        if self.width % 8 or self.height % 8 or self.width <= 0 or self.height <= 0:
            raise ValueError(f"width and height must be positive multiples of 8, got "
                             f"{self.width}x{self.height}")
        if self.steps < 0 or self.val_every < 2:
            raise ValueError(f"steps must be >= 0 and val_every >= 2, got {self.steps} and "
                             f"{self.val_every}")


def read_video(path: Path, width: int, height: int) -> tuple[np.ndarray, float]:
    """uint8 (N, height, width, 3) frames and the video's fps."""
    import imageio.v2 as imageio

    if not path.is_file():
        raise ValueError(f"no video at {path}")
    try:
        with imageio.get_reader(path) as reader:
            fps = float(reader.get_meta_data().get("fps") or 0.0)
            frames = [np.asarray(f)[..., :3] for f in reader]
    except (OSError, RuntimeError, ValueError) as err:
        raise ValueError(f"cannot read video {path}: {err}") from err
    if len(frames) < FRAMES_PER_STEP + 1:
        raise ValueError(f"{path} has {len(frames)} frames: at least {FRAMES_PER_STEP + 1} "
                         f"make one step")
    resized = [f if f.shape[:2] == (height, width) else
               cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames]
    return np.stack(resized).astype(np.uint8), fps


def step_commands(path: Path, encoding: ActionEncoding, num_frames: int) -> np.ndarray:
    """Per-frame actions -> per-step commands (num_steps, command_dim)."""
    try:
        actions = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read actions {path}: {err}") from err
    if len(actions) not in (num_frames, num_frames - 1):
        raise ValueError(f"{path} holds {len(actions)} actions for a video of {num_frames} "
                         f"frames: expected one per frame ({num_frames} or {num_frames - 1})")
    steps = (num_frames - 1) // FRAMES_PER_STEP
    encoded = np.empty((steps * FRAMES_PER_STEP, encoding.command_dim), dtype=np.float32)
    for j in range(len(encoded)):
        try:
            encoded[j] = encoding.encode(actions[j])
        except ValueError as err:
            raise ValueError(f"{path}, action {j}: {err}") from None
    return encoded.reshape(steps, FRAMES_PER_STEP, -1).mean(axis=1)


def import_videos(cfg: ImportConfig, progress: bool = True) -> dict[str, Any]:
    cfg.validate()
    encoding = parse_action_space(cfg.action_space)
    root = Path(cfg.root)
    clips = []  # (video index, first step, steps) per episode
    loaded: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    fps = cfg.fps
    for v, (video, actions) in enumerate(zip(cfg.videos, cfg.actions)):
        frames, video_fps = read_video(Path(video), cfg.width, cfg.height)
        commands = step_commands(Path(actions), encoding, len(frames))
        loaded[v] = (frames, commands)
        fps = fps or video_fps
        per = cfg.steps or len(commands)
        clips += [(v, s, min(per, len(commands) - s)) for s in range(0, len(commands), per)]
    if len(clips) < 2:
        raise ValueError(f"{len(clips)} episode from the videos: training needs >= 2 (one "
                         f"validates); give more videos or a smaller --steps")
    meta = {"world": cfg.name, "source": "video", "plan_version": 3, "width": cfg.width,
            "height": cfg.height, "frames_per_step": FRAMES_PER_STEP,
            "fps": int(round(fps)) or 30, "action_space": encoding.to_json(),
            "action_dim": encoding.command_dim, "pose_names": []}
    check_dataset_meta(root, meta)
    val = validation_episodes(len(clips), cfg.val_every)
    plans = {f"ep_{i:06d}": {"video": Path(cfg.videos[v]).name, "start_step": s,
                             "split": "val" if i in val else "train"}
             for i, (v, s, _) in enumerate(clips)}
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root)
    write_manifest(root, meta)
    check_episodes_match(root, plans, cfg.steps or max(n for _, _, n in clips))
    have = completed_episode_ids(root)
    written = 0
    for (episode_id, plan), (v, s, n) in tqdm(list(zip(plans.items(), clips)), desc="episodes",
                                             unit="ep", disable=not progress):
        if episode_id in have:
            continue
        frames, commands = loaded[v]
        f0 = s * FRAMES_PER_STEP
        episode = Episode(frames=frames[f0:f0 + n * FRAMES_PER_STEP + 1],
                          poses=np.zeros((n * FRAMES_PER_STEP + 1, 0), np.float32),
                          actions=commands[s:s + n], rewards=np.zeros(n, np.float32),
                          terminated=np.zeros(n, bool),
                          meta={"id": episode_id, **plan, "truncated": True})
        write_episode(root, episode)
        write_manifest(root, meta)
        written += 1
    manifest = write_manifest(root, meta)
    return {"root": str(root), "imported_episodes": written,
            "total_episodes": manifest["num_episodes"], "action_dim": encoding.command_dim,
            "fps": meta["fps"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = command_parser("aapt-world import-video", __doc__.split("\n")[0])
    d = ImportConfig(root="", videos=[], actions=[], action_space="")
    parser.add_argument("--root", required=True, help="dataset directory to write (resumable)")
    parser.add_argument("--video", dest="videos", nargs="+", required=True,
                        help="video files (anything ffmpeg reads: mp4, webm, ...)")
    parser.add_argument("--actions", nargs="+", required=True,
                        help="one .npy of per-frame actions per video")
    parser.add_argument("--action-space", required=True,
                        help="discrete:N or box:LOW,HIGH:SHAPE (e.g. box:-1,1:2)")
    parser.add_argument("--name", default=d.name, help="the game's name in the dataset")
    parser.add_argument("--steps", type=int, default=d.steps,
                        help="steps per episode (0: one episode per video)")
    parser.add_argument("--fps", type=float, default=d.fps, help="frame rate (0: the video's)")
    add_dataset_options(parser, d.width, d.height, d.val_every)
    args = parser.parse_args(argv)
    return run_recorder("import-video", lambda: import_videos(ImportConfig(**vars(args))))


if __name__ == "__main__":
    main()
