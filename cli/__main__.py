"""``kalshi COMMAND [ARGS...]`` / ``python -m cli``: one command in front of the eight scripts.

Why a dispatcher and not one argparse tree (or click): every script already owns its options,
``--help``, error messages and exit codes (documented in the README, relied on by the systemd
units and the tests). ``kalshi record ARGS`` therefore calls ``recorder.__main__.main`` with
``ARGS`` untouched, exactly as ``kalshi-recorder ARGS`` does: the same help text, the same errors,
the same exit code. Only the chosen script's module is imported, so ``kalshi --help`` stays fast.

The table below must name the same ``main`` as ``[project.scripts]`` in ``pyproject.toml``;
``tests/cli/test_cli.py`` pins one to the other.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

PROG = "kalshi"


@dataclass(frozen=True)
class Command:
    """One subcommand: the console script it stands for and that script's entry point."""

    name: str
    script: str  # the console script with the same main (``[project.scripts]``)
    target: str  # "module:function", as in ``[project.scripts]``
    summary: str  # one line for ``kalshi --help``

    def load(self) -> Callable[..., Any]:
        module, _, attr = self.target.partition(":")
        fn: Callable[..., Any] = getattr(importlib.import_module(module), attr)
        return fn


COMMANDS: tuple[Command, ...] = (
    Command(
        "record",
        "kalshi-recorder",
        "recorder.__main__:main",
        "record every market's life into crash-safe segments",
    ),
    Command(
        "simulate",
        "kalshi-simulator",
        "simulator.__main__:main",
        "a local Kalshi exchange on loopback (keygen, serve)",
    ),
    Command(
        "materialize",
        "kalshi-materialize",
        "materialize.__main__:main",
        "load sealed segments once; build training sets, quality",
    ),
    Command(
        "demo-data",
        "kalshi-demo-data",
        "materialize.demo:main",
        "record demo data from the simulator, then materialize it",
    ),
    Command(
        "retention",
        "kalshi-retention",
        "materialize.retention:main",
        "compact past days; delete or archive old ones",
    ),
    Command(
        "replay",
        "kalshi-replay",
        "feed.replay:main",
        "serve a recorded session in the tap's protocol",
    ),
    Command(
        "paper",
        "kalshi-paper",
        "paper.__main__:main",
        "paper-trade a policy on the tap or a replay",
    ),
    Command(
        "probe",
        "kalshi-probe",
        "probe.__main__:main",
        "ask the real exchange every open protocol question",
    ),
)
BY_NAME = {c.name: c for c in COMMANDS}

EXIT_USAGE = 2  # what argparse uses for bad usage, as every script does


def usage() -> str:
    """The text of ``kalshi --help``: one line per subcommand."""
    name_w = max(len(c.name) for c in COMMANDS)
    script_w = max(len(c.script) for c in COMMANDS)
    lines = [
        f"usage: {PROG} COMMAND [ARGS...]",
        "",
        "The Kalshi lifecycle recorder's commands. Each is also a script of its own (the",
        "second column) with the same options, help and exit codes.",
        "",
        "commands:",
        *(f"  {c.name:<{name_w}}  {c.script:<{script_w}}  {c.summary}" for c in COMMANDS),
        "",
        f"`{PROG} COMMAND --help` shows a command's options.",
    ]
    return "\n".join(lines)


def run(command: Command, args: Sequence[str]) -> Any:
    """Call ``command``'s main exactly as its console script would, with ``args`` as its
    command line. Mains that take ``argv`` get it; the ones that read ``sys.argv`` themselves
    find it there. ``sys.argv[0]`` is the script's name, so any parser without an explicit
    ``prog`` still names the script; ``sys.argv`` is restored afterwards."""
    fn = command.load()
    saved = sys.argv
    sys.argv = [command.script, *args]
    try:
        return fn(list(args)) if inspect.signature(fn).parameters else fn()
    finally:
        sys.argv = saved


def main(argv: Sequence[str] | None = None) -> Any:
    """``kalshi COMMAND ARGS...``: the return value (or ``SystemExit``) is the command's own."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(usage(), file=sys.stderr)
        return EXIT_USAGE
    if args[0] in ("-h", "--help"):
        print(usage())
        return 0
    command = BY_NAME.get(args[0])
    if command is None:
        names = ", ".join(BY_NAME)
        print(
            f"{PROG}: unknown command {args[0]!r}; use one of {names} (see {PROG} --help)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return run(command, args[1:])


if __name__ == "__main__":
    sys.exit(main())
