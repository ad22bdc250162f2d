"""The ``aapt-world`` command: one entry point for every user-facing job.

    aapt-world demo                      the main job: neural vs real Doom, 1440 frames, mp4
    aapt-world collect key=value ...     record real-world data (hydra overrides)
    aapt-world record --env ID --root R  record ANY Gymnasium game (your own) into a dataset
    aapt-world import-video --root R ... import gameplay videos + per-frame action arrays
    aapt-world merge-data --out R A B    merge recorded datasets into one (hard links)
    aapt-world train stage=... ...       train a world, stage by stage (hydra overrides)
    aapt-world plot runs/doom            training curves of a run, one PNG per stage
    aapt-world rollout --steps 360       a scripted real-world rollout to mp4
    aapt-world play --world DIR          play a neural world with the keyboard (pygame-ce)
    aapt-world agent train|eval ...      PPO in a neural world; eval in the real / neural world
    aapt-world drift --world DIR         long-horizon drift of a neural world vs the real game
    aapt-world ladder --world DIR        the fidelity ladder: VAE, teacher-forced, no-op hold,
                                         loop closure, rollouts, with baselines; image strip
    aapt-world latent-channels --world DIR  which latent channels a one-step generator can
                                         follow, and how much of the picture the rest hold
    aapt-world retune --world DIR ...    copy a world with other inference settings
                                         (noise temperature, context noise, termination)
    aapt-world action-response --world DIR  how far each action moves the view, world vs real
    aapt-world pose-probe --root R       train the keypoint probe on real humanoid frames
    aapt-world pose-follow --world DIR   pose following of a humanoid world vs the real render
    aapt-world bench collect|render|stream|train|env  benchmarks (collection, humanoid render,
                                               stream, training, env)
    aapt-world --version                 the installed version

Every command takes -h for its options (defaults shown); compute commands take --threads.
"""

from __future__ import annotations

import signal
import sys
from importlib.metadata import PackageNotFoundError, version

from aapt_world.cli_options import command_parser
from aapt_world.constants import DEFAULT_MAP


def _demo(argv: list[str]) -> None:
    from agents.evaluation.demo import main

    main(argv)


def _rollout(argv: list[str]) -> None:
    from agents.rollout import write_real_rollout
    from envs.scripted import POLICIES

    parser = command_parser("aapt-world rollout", "a scripted rollout of the real game to mp4")
    parser.add_argument("--steps", type=int, default=360, help="steps of 4 frames (360 = 1440)")
    parser.add_argument("--policy", default="explorer", choices=sorted(POLICIES),
                        help="scripted player")
    parser.add_argument("--map", default=DEFAULT_MAP, help="Freedoom2 map")
    parser.add_argument("--seed", type=int, default=0, help="seed of the game and the player")
    parser.add_argument("--out", default="outputs/real_rollout.mp4", help="mp4 to write")
    args = parser.parse_args(argv)

    write_real_rollout(args.out, args.steps, policy=args.policy, doom_map=args.map,
                       seed=args.seed)
    print(f"wrote {args.out}")


def _collect(argv: list[str]) -> None:
    from training.collect import main

    sys.argv = ["aapt-world collect", *argv]
    main()


def _record(argv: list[str]) -> None:
    from training.record import main

    main(argv)


def _import_video(argv: list[str]) -> None:
    from training.import_video import main

    main(argv)


def _train(argv: list[str]) -> None:
    from training.train import main

    sys.argv = ["aapt-world train", *argv]
    main()


def _plot(argv: list[str]) -> None:
    from training.plot import main

    main(argv)


def _play(argv: list[str]) -> None:
    from agents.play.viewer import main

    main(argv)


def _bench(argv: list[str]) -> None:
    benches = {"collect": "training.bench_collect", "render": "training.bench_render",
               "stream": "aapt_world.bench_stream",
               "train": "training.bench_train",
               "env": "agents.bench_env"}
    if not argv or argv[0] not in benches:
        raise SystemExit(f"usage: aapt-world bench {{{','.join(benches)}}} [options]")
    import importlib

    importlib.import_module(benches[argv[0]]).main(argv[1:])


def _agent(argv: list[str]) -> None:
    if argv[:1] == ["collect"]:
        from agents.agent_data import main as collect_main

        collect_main(argv[1:])
        return
    from agents.ppo import main

    main(argv)


def _drift(argv: list[str]) -> None:
    from agents.evaluation.drift import main

    main(argv)


def _ladder(argv: list[str]) -> None:
    from agents.evaluation.ladder import main

    main(argv)


def _latent_channels(argv: list[str]) -> None:
    from agents.evaluation.latent_channels import main

    main(argv)


def _pose_probe(argv: list[str]) -> None:
    from agents.evaluation.pose_probe import main

    main(argv)


def _retune(argv: list[str]) -> None:
    from aapt_world.world import TERMINATION_RULES, retune_world

    parser = command_parser("aapt-world retune", "copy a world with other inference settings "
                            "(same weights): noise temperature, context noise, termination "
                            "rule, guidance")
    parser.add_argument("--world", required=True, help="world directory to copy")
    parser.add_argument("--out", required=True, help="directory of the retuned copy")
    parser.add_argument("--temperature", type=float, help="scale of the generator's input "
                        "noise (< 1: steadier rollouts; > 1: a harsher dream)")
    parser.add_argument("--context-noise", type=float, help="noise level of the recycled frame")
    parser.add_argument("--termination", choices=TERMINATION_RULES,
                        help="how the termination head's logit ends an episode")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance on the "
                        "actions (1 = off; needs a generator trained with "
                        "diffusion.cond_dropout)")
    args = parser.parse_args(argv)
    settings = {k: v for k, v in {"temperature": args.temperature,
                                  "context_noise": args.context_noise,
                                  "termination": args.termination,
                                  "guidance": args.guidance}.items() if v is not None}
    if not settings:
        parser.error("nothing to change: give --temperature, --context-noise, --termination "
                     "or --guidance")
    retune_world(args.world, args.out, **settings)
    print(f"wrote {args.out} ({settings})")


def _action_response(argv: list[str]) -> None:
    from agents.evaluation.action_response import main

    main(argv)


def _merge_data(argv: list[str]) -> None:
    from training.merge import main

    main(argv)


def _pose_follow(argv: list[str]) -> None:
    from agents.evaluation.pose_following import main

    main(argv)


COMMANDS = {"demo": _demo, "collect": _collect, "record": _record,
            "import-video": _import_video, "merge-data": _merge_data, "train": _train,
            "plot": _plot,
            "rollout": _rollout, "play": _play, "bench": _bench, "agent": _agent,
            "drift": _drift, "ladder": _ladder, "latent-channels": _latent_channels,
            "pose-probe": _pose_probe,
            "pose-follow": _pose_follow, "retune": _retune,
            "action-response": _action_response}


def package_version() -> str:
    try:
        return version("aapt-world")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown (not installed)"


def exit_on_sigterm() -> None:
    """Turn SIGTERM (``timeout``, job schedulers, torchrun) into ``SystemExit``. By default it
    kills Python without running ``finally`` blocks, so an ``agent train --world real:...``
    stopped that way left its ViZDoom game processes running; now every env is closed (and
    every finished checkpoint kept: they are written atomically)."""
    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # the shell's exit status for a signal

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    exit_on_sigterm()
    if argv and argv[0] in ("-V", "--version"):
        print(f"aapt-world {package_version()}")
        return
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if argv else 2)
    if argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        raise SystemExit(f"aapt-world: unknown command {argv[0]!r}: expected one of "
                         f"{', '.join(COMMANDS)} (aapt-world -h for help)")
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
