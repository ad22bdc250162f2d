"""The ``aapt-world`` command line: every option documented with its default, ``--threads`` on
every compute command, ``--version``, and unknown commands named."""

from __future__ import annotations

import argparse

import pytest

from agents import cli

PARSED = [  # (argv up to the options, whether it computes with torch)
    (["demo"], True), (["drift"], True), (["ladder"], True), (["play"], True),
    (["agent", "train"], True), (["agent", "eval"], True), (["rollout"], False),
    (["plot"], False), (["record"], False), (["import-video"], False),
    (["bench", "collect"], False), (["bench", "stream"], True),
    (["bench", "train"], True), (["bench", "env"], True), (["retune"], False),
]


class Parsed(Exception):
    pass


@pytest.fixture
def capture_parser(monkeypatch):
    """Record the parser a command builds, stop before it runs anything."""
    seen: list[argparse.ArgumentParser] = []

    def parse_args(self, args=None, namespace=None):
        seen.append(self)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    return seen


@pytest.mark.parametrize("argv, computes", PARSED, ids=[" ".join(a) for a, _ in PARSED])
def test_every_option_is_described_with_its_default(capture_parser, argv, computes) -> None:
    with pytest.raises(Parsed):
        cli.main([*argv, "--help"])
    parser, = capture_parser
    assert parser.prog == "aapt-world " + " ".join(argv)
    assert parser.formatter_class is argparse.ArgumentDefaultsHelpFormatter
    undocumented = [a.option_strings or a.dest for a in parser._actions if not a.help]
    assert not undocumented, f"{parser.prog}: options without help {undocumented}"
    options = {s for a in parser._actions for s in a.option_strings}
    if computes:
        assert "--threads" in options, f"{parser.prog} computes but has no --threads"


def test_help_text_matches_behaviour(capture_parser) -> None:
    with pytest.raises(Parsed):
        cli.main(["agent", "eval"])
    parser, = capture_parser
    map_help = next(a.help for a in parser._actions if "--map" in a.option_strings)
    assert "card's map" in map_help  # eval runs the world card's map, MAP01 only without one


def test_threads_are_checked_and_applied(monkeypatch) -> None:
    import torch

    from aapt_world.cli_options import add_threads, apply_threads, command_parser

    parser = command_parser("x")
    add_threads(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--threads", "-1"])
    before = torch.get_num_threads()
    try:
        apply_threads(parser.parse_args(["--threads", "1"]).threads)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_version_and_unknown_command(capsys) -> None:
    cli.main(["--version"])
    assert capsys.readouterr().out.startswith("aapt-world ")
    with pytest.raises(SystemExit, match=r"unknown command 'trian'.*train"):
        cli.main(["trian"])
