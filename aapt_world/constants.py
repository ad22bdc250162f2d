"""The facts every layer shares, written once.

A latent frame (one generator step, one env step, one action) spans ``FRAMES_PER_STEP`` video
frames: the causal VAE's compression in time. The Doom source world runs at ``DOOM_FPS``
(one video frame per ViZDoom tic), its episodes last 60 s of game time; the humanoid world
renders ``HUMANOID_FPS``.
"""

from __future__ import annotations

FRAMES_PER_STEP = 4  # video frames per latent frame = per action step (the VAE's 4x in time)
DOOM_FPS = 35  # ViZDoom tics per second: one video frame each
DOOM_EPISODE_STEPS = 60 * DOOM_FPS // FRAMES_PER_STEP  # 525 steps: aapt/Doom-v0's time limit
DEFAULT_MAP = "MAP01"  # Freedoom2 map of the real env when nothing else says which
COLLECTION_MAPS = ("MAP01", "MAP02", "MAP03", "MAP04")  # the default dataset's maps
HUMANOID_FPS = 30  # video frames per second of the MuJoCo humanoid world
HUMANOID_EPISODE_STEPS = 60 * HUMANOID_FPS // FRAMES_PER_STEP  # 450: aapt/Humanoid-v0's limit
# the humanoid record's floor anchor (<name>_col / _row): the floor point under the previous
# frame's root in this frame's image; a pose world may take it as one more 2D point
FLOOR_ANCHOR = "floor"
HELD_OUT_SEED = 1000  # evaluation episodes start here; the collection plan uses 0 .. N-1
