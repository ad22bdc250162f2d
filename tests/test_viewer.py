"""The pygame-ce viewer (``aapt-world play``), headless, driven by scripted key events."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aapt_world.video import read_mp4

H, W = 48, 64  # the tiny world of conftest.py
SCALE = 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def viewer_mod(monkeypatch):
    """``agents.play.viewer`` imported with SDL's dummy video driver (no display needed)."""
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    import agents.play.viewer as viewer_mod

    return viewer_mod


@pytest.fixture(scope="module")
def continuous_world(tiny_world_factory):
    return tiny_world_factory(action_type="continuous")


def key(viewer_mod, name: str, up: bool = False):
    pygame = viewer_mod.pygame
    return pygame.event.Event(pygame.KEYUP if up else pygame.KEYDOWN,
                              key=pygame.key.key_code(name))


def make_viewer(viewer_mod, world, tmp_path: Path, **overrides):
    config = viewer_mod.ViewerConfig(world=world, headless=True, fps=0, scale=SCALE,
                                     out_dir=tmp_path / "play", **overrides)
    return viewer_mod.Viewer(config)


def record_actions(env) -> list:
    """Wrap ``env.step`` to log the actions it receives (and the frames it returns)."""
    log, step = [], env.step

    def logged(action):
        out = step(action)
        log.append((np.copy(action), out[-1]["frames"]))
        return out

    env.step = logged
    return log


def press(viewer, viewer_mod, name: str, ticks: int = 1) -> list[np.ndarray]:
    viewer_mod.pygame.event.post(key(viewer_mod, name))
    return run_ticks(viewer, ticks)


def run_ticks(viewer, n: int) -> list[np.ndarray]:
    shown = []
    for _ in range(n):
        viewer.tick()
        shown.append(viewer.frame.copy())
    return shown


# ------------------------------------------------------------------------------ controls
def test_held_keys_add_up_and_snap_to_discrete_actions(viewer_mod) -> None:
    pygame = viewer_mod.pygame
    to_cmd, to_action = viewer_mod.keys_to_command, viewer_mod.command_to_action
    names = viewer_mod.DISCRETE_ACTION_NAMES
    cases = {
        (): ([0, 0, 0, 0], "noop"),
        (pygame.K_w,): ([1, 0, 0, 0], "forward"),
        (pygame.K_w, pygame.K_RIGHT): ([1, 0, 1, 0], "forward_turn_right"),
        (pygame.K_w, pygame.K_LEFT): ([1, 0, -1, 0], "forward_turn_left"),
        (pygame.K_w, pygame.K_s): ([0, 0, 0, 0], "noop"),
        (pygame.K_s, pygame.K_a): ([-1, -1, 0, 0], "backward"),
        (pygame.K_d,): ([0, 1, 0, 0], "strafe_right"),
        (pygame.K_UP,): ([0, 0, 0, -1], "look_up"),
        (pygame.K_DOWN,): ([0, 0, 0, 1], "look_down"),
    }
    for held, (command, name) in cases.items():
        got = to_cmd(held)
        assert got.dtype == np.float32 and np.array_equal(got, command), held
        assert names[to_action(got, "discrete")] == name, held
        assert np.array_equal(to_action(got, "continuous"), command)
    # mouse x motion turns (and is clipped to the action space)
    assert np.allclose(to_cmd((), mouse_dx=10, mouse_sensitivity=0.02), [0, 0, 0.2, 0])
    assert np.array_equal(to_cmd((pygame.K_RIGHT,), mouse_dx=500), [0, 0, 1, 0])


# --------------------------------------------------------------------------------- play
def test_scripted_run_sends_the_held_keys(viewer_mod, continuous_world, tmp_path) -> None:
    viewer = make_viewer(viewer_mod, continuous_world, tmp_path)
    log = record_actions(viewer.env)
    # tick 0 shows the reset frame; step k is taken at tick 1 + 4 (k - 1) with the keys held then
    script = [(1, key(viewer_mod, "w")), (9, key(viewer_mod, "right")),
              (13, key(viewer_mod, "w", up=True)), (17, key(viewer_mod, "right", up=True)),
              (18, key(viewer_mod, "h"))]
    assert viewer.run(max_steps=5, scripted_events=script) == 5
    assert viewer.ticks == 1 + 4 * 5  # every video frame shown once
    expected = [[1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert [a.tolist() for a, _ in log] == expected
    assert np.array_equal(viewer.frame, log[-1][1][-1])  # the last frame of the last step
    assert viewer.show_help and viewer.stats.steps == 5
    assert np.isfinite(viewer.stats.ret) and viewer.step_ms > 0


def test_pause_snapshot_restore_help_reset_quit(viewer_mod, continuous_world, tmp_path) -> None:
    viewer = make_viewer(viewer_mod, continuous_world, tmp_path)
    try:
        reset_frame = viewer.frame.copy()
        assert np.array_equal(run_ticks(viewer, 1)[0], reset_frame)
        press(viewer, viewer_mod, "w", ticks=6)  # step 1 and half of step 2
        assert viewer.total_steps == 2

        # P pauses: the same frame stays on screen, no step is taken
        frame, steps = viewer.frame.copy(), viewer.total_steps
        for shown in press(viewer, viewer_mod, "p", ticks=3):
            assert np.array_equal(shown, frame)
        assert viewer.paused and viewer.total_steps == steps
        press(viewer, viewer_mod, "p", ticks=0)

        # F5 mid-step, then 8 frames with W held
        at_snapshot, snap_steps = viewer.frame.copy(), viewer.stats.steps
        after_snapshot = press(viewer, viewer_mod, "f5", ticks=8)
        assert not viewer.paused
        # somewhere else: turn for a while
        press(viewer, viewer_mod, "right", ticks=8)
        viewer_mod.pygame.event.post(key(viewer_mod, "right", up=True))
        assert viewer.stats.steps > snap_steps

        # F9: the frame on screen at snapshot time is back, and the same keys replay exactly
        restored = press(viewer, viewer_mod, "f9", ticks=1)[0]
        assert np.array_equal(restored, at_snapshot)
        assert viewer.stats.steps == snap_steps
        replay = run_ticks(viewer, 8)
        for a, b in zip(replay, after_snapshot):
            assert np.array_equal(a, b)

        # H draws the help overlay on top of the frame and hides it again
        screen = viewer_mod.pygame.surfarray.array3d
        viewer.paused = True  # keep the frame still while comparing screens
        plain = screen(viewer.screen).copy()
        press(viewer, viewer_mod, "h")
        assert viewer.show_help and not np.array_equal(screen(viewer.screen), plain)
        press(viewer, viewer_mod, "h")
        assert not viewer.show_help
        viewer.paused = False

        # R resets: a new episode from a start frame, counters back to 0
        episode = viewer.stats.episode
        press(viewer, viewer_mod, "r")
        assert viewer.stats.episode == episode + 1 and viewer.stats.steps == 0
        assert f"step 0  episode {episode + 1}" in viewer.hud_lines()[0][0]

        press(viewer, viewer_mod, "escape", ticks=0)
        assert not viewer.tick() and not viewer.running
    finally:
        viewer.close()


def test_record_and_screenshot(viewer_mod, tiny_world_dir, tmp_path) -> None:
    """--record from the start, V stops it, V starts another; --screenshot at exit."""
    record, shot = tmp_path / "rec.mp4", tmp_path / "shot.png"
    viewer = make_viewer(viewer_mod, tiny_world_dir, tmp_path, record=record, screenshot=shot)
    assert viewer.action_type == "discrete"
    script = [(13, key(viewer_mod, "v")), (17, key(viewer_mod, "v"))]  # after 3 steps; at 5
    viewer.run(max_steps=5, scripted_events=script)

    video = read_mp4(record)
    assert video.shape == (1 + 4 * 3, H * SCALE, W * SCALE, 3)  # reset frame + 3 steps
    second = [p for p in viewer.saved if p.suffix == ".mp4" and p != record]
    assert len(second) == 1 and second[0].parent == tmp_path / "play"
    # the frame on screen when V was pressed, then the 4 frames of step 5
    assert read_mp4(second[0]).shape == (1 + 4, H * SCALE, W * SCALE, 3)

    pygame = viewer_mod.pygame
    assert shot.is_file() and pygame.image.load(str(shot)).get_size() == (W * SCALE, H * SCALE)


def test_side_by_side_with_real_doom(viewer_mod, tiny_world_dir, tmp_path) -> None:
    shot = tmp_path / "sbs.png"
    viewer = make_viewer(viewer_mod, tiny_world_dir, tmp_path, side_by_side=True,
                         screenshot=shot)
    assert viewer.composite_size == (2 * W, H)
    real_log = record_actions(viewer.real)
    neural_log = record_actions(viewer.env)
    script = [(1, key(viewer_mod, "w")), (2, key(viewer_mod, "f5")), (9, key(viewer_mod, "f9")),
              (10, key(viewer_mod, "r"))]
    viewer.run(max_steps=4, scripted_events=script)
    # same (discrete) actions to both worlds; the composite is neural | real
    assert [int(a) for a, _ in real_log] == [int(a) for a, _ in neural_log] == [1, 1, 1, 1]
    assert viewer.frame.shape == (H, 2 * W, 3)
    assert np.array_equal(viewer.frame[:, :W], neural_log[-1][1][-1])
    assert np.array_equal(viewer.frame[:, W:], real_log[-1][1][-1])
    assert viewer.stats.episode == 2  # R reset both
    pygame = viewer_mod.pygame
    assert pygame.image.load(str(shot)).get_size() == (2 * W * SCALE, H * SCALE)


# ---------------------------------------------------------------------------------- CLI
def test_cli_play_smoke(tiny_world_dir, tmp_path) -> None:
    shot = tmp_path / "x.png"
    result = subprocess.run(
        [sys.executable, "-m", "agents.cli", "play", "--world", str(tiny_world_dir),
         "--headless", "--steps", "5", "--screenshot", str(shot), "--threads", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "played 5 steps" in result.stdout
    assert shot.is_file() and shot.stat().st_size > 0


def test_cli_without_a_world_says_what_to_pass(viewer_mod, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(viewer_mod, "DEFAULT_WORLD", tmp_path / "no_world")
    with pytest.raises(SystemExit, match="--world"):
        viewer_mod.main(["--headless", "--steps", "1"])


def test_pygame_is_not_imported_by_the_package() -> None:
    code = ("import sys, agents.cli, agents, envs, envs.actions; "
            "assert 'pygame' not in sys.modules, 'pygame imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_pose_world_opens_the_humanoid_viewer(viewer_mod, tiny_world_factory, tmp_path,
                                                capsys) -> None:
    """``aapt-world play --world <pose world>``: keys pick the motion, speed and side; the
    right panel draws the commanded skeleton; headless and scriptable."""
    pygame = viewer_mod.pygame
    from aapt_world.world import save_world
    from agents.play.humanoid import BONE_COLOUR, HumanoidViewer, HumanoidViewerConfig

    save_world(tmp_path / "pose", tiny_world_factory(action_type="pose"))
    down = lambda k: pygame.event.Event(pygame.KEYDOWN, key=k)  # noqa: E731
    viewer = HumanoidViewer(HumanoidViewerConfig(world=str(tmp_path / "pose"), fps=0,
                                                 headless=True, scale=2))
    steps = viewer.run(max_steps=3, scripted_events=[(1, down(pygame.K_2)),
                                                     (2, down(pygame.K_EQUALS)),
                                                     (3, down(pygame.K_m))])
    assert steps == 3 and viewer.primitive == "walk" and viewer.speed == 1.25
    assert viewer.side == -1.0 and viewer.performer.primitive == "walk"
    pixels = pygame.surfarray.array3d(viewer.screen)  # (W, H, 3)
    panel = pixels[viewer.size[0]:]
    assert (np.abs(panel.astype(int) - BONE_COLOUR).sum(-1) == 0).any()  # the skeleton
    viewer.close()
    viewer_mod.main(["--world", str(tmp_path / "pose"), "--headless", "--steps", "2",
                     "--fps", "0"])
    assert "played 2 steps" in capsys.readouterr().out
