"""What the three commands (prm-builder, prm-train, prm-eval) share: one flag convention and one way to fail.

- Every flag is accepted as `--a-b` and as `--a_b`, and never by a prefix: argparse's abbreviations would take
  `--problem` for `--problems` today and for something else once a flag that starts alike is added.
- An unknown flag is named with the closest valid one (difflib), in one line.
- A usage error (a flag or its value) exits 2, as argparse does; a failure while running exits 1 with one line
  (failures.explain); an interrupt exits 130. `--debug` prints the traceback above the line. A reader that stops
  reading (`prm-builder stats DIR | head -1`) ends the command quietly, with a shell's SIGPIPE code, 141.
- A path that looks local and does not exist fails at once, naming it, before a library asks the Hub for it
  (and retries for a minute) and then blames the network.

This module imports nothing heavy: it runs before and after every command.
"""

import argparse
import difflib
import os
import sys
from pathlib import Path

USAGE_ERROR, RUNTIME_ERROR, INTERRUPTED, BROKEN_PIPE = 2, 1, 130, 141


class UsageError(ValueError):
    """A mistake in the command line itself (exit code 2) found after parsing, e.g. a required flag left out.

    A ValueError, so that code calling the commands' functions from Python catches it as before. `prog` names the
    subcommand whose help to point to (`prm-builder report`), when it is not the command itself."""

    def __init__(self, message: str, prog: str | None = None):
        super().__init__(message)
        self.prog = prog


# -- flags ------------------------------------------------------------------------------------------------------------


def other_spelling(flag: str) -> str | None:
    """`--a-b` for `--a_b` and the reverse; None for a flag with neither (or a short one)."""
    if not flag.startswith("--"):
        return None
    name = flag[2:]
    if "_" in name:
        return "--" + name.replace("_", "-")
    if "-" in name:
        return "--" + name.replace("-", "_")
    return None


def parsers_of(parser: argparse.ArgumentParser):
    """The parser and every parser of its subcommands, depth first."""
    yield parser
    for action in parser._actions:  # argparse has no public walk over subcommands
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                yield from parsers_of(child)


def follow_conventions(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make `parser` (and its subcommands) take both spellings of every flag, no prefixes, and name unknown flags.

    The other spelling is rewritten to the declared one before argparse sees it, rather than registered as a second
    option string: actions such as BooleanOptionalAction read the option string they were called with (`--no-x`
    sets False), and help shows each flag once. transformers' HfArgumentParser declares both spellings itself.
    """
    for each in parsers_of(parser):
        each.allow_abbrev = False
        declared = {flag for action in each._actions for flag in action.option_strings}
        aliases = {other_spelling(flag): flag for flag in declared if other_spelling(flag) not in (None, *declared)}
        each.parse_known_args = _with_spellings(each, each.parse_known_args, aliases)
        each.error = _one_line_error(each)
    return parser


def _with_spellings(parser, parse_known_args, aliases: dict[str, str]):
    def parse(args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        rewritten = []
        for index, arg in enumerate(args):
            if arg == "--":  # what follows is not flags
                rewritten.extend(args[index:])
                break
            flag, equals, value = arg.partition("=")
            rewritten.append(aliases[flag] + equals + value if flag in aliases else arg)
        parser.prm_arguments = rewritten  # for the error message: which subcommand the unknown flag was given to
        return parse_known_args(rewritten, namespace)

    return parse


def all_flags(parser: argparse.ArgumentParser) -> list[str]:
    """Every flag that `parser` and its subcommands take, as shown in help (both spellings are valid)."""
    return sorted({flag for each in parsers_of(parser) for action in each._actions for flag in action.option_strings})


def closest_flag(flag: str, valid: list[str]) -> str | None:
    """The valid flag nearest to `flag`, compared with dashes and underscores alike; None when nothing is close."""
    def canonical(text: str) -> str:
        return text.replace("_", "-")

    flag = flag.split("=", 1)[0]
    by_canonical = {canonical(name): name for name in valid}
    found = difflib.get_close_matches(canonical(flag), list(by_canonical), n=1, cutoff=0.6)
    if not found:
        return None
    near = by_canonical[found[0]]
    if near.startswith("--") and "_" in flag[2:]:  # in the spelling the user chose
        return "--" + near[2:].replace("-", "_")
    if near.startswith("--") and "-" in flag[2:]:
        return "--" + near[2:].replace("_", "-")
    return near


def unknown_flags_message(unknown: list[str], valid: list[str]) -> str:
    """`unknown flag --max_stpes (did you mean --max_steps?)`, for each flag among `unknown` (values are skipped)."""
    flags = [item for item in unknown if item.startswith("-")] or list(unknown)
    parts = []
    for flag in flags:
        near = closest_flag(flag, valid) if flag.startswith("-") else None
        parts.append(f"{flag.split('=', 1)[0]} (did you mean {near}?)" if near else flag.split("=", 1)[0])
    noun = "unknown flag" if len(parts) == 1 else "unknown flags"
    return f"{noun} {', '.join(parts)}"


def _one_line_error(parser: argparse.ArgumentParser):
    def error(message: str):
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            # argparse reports a subcommand's unknown flags from the top parser: name the subcommand's flags.
            chosen = _chosen_subcommand(parser, getattr(parser, "prm_arguments", []))
            message = unknown_flags_message(message[len(prefix):].split(), all_flags(chosen))
            usage_error(chosen.prog, message)
        usage_error(parser.prog, message)

    return error


def _chosen_subcommand(parser: argparse.ArgumentParser, args: list[str]) -> argparse.ArgumentParser:
    """The deepest subcommand that `args` name (`build synthetic` -> its parser), else `parser`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            word = next((arg for arg in args if arg in action.choices), None)
            if word is not None:
                return _chosen_subcommand(action.choices[word], args[args.index(word) + 1:])
    return parser


def usage_error(prog: str, message: str):
    """Print `PROG: error: MESSAGE (see PROG --help)` on one line and exit 2."""
    print(f"{prog}: error: {message} (see {prog} --help)", file=sys.stderr)
    sys.exit(USAGE_ERROR)


# -- running ----------------------------------------------------------------------------------------------------------


def run_command(prog: str, run, *, debug: bool = False, option_names=frozenset, model=None,
                model_flag: str = "--model", on_interrupt: str = "interrupted") -> int:
    """`run()`'s exit code, every failure as one line on stderr: 2 for a UsageError, 130 on Ctrl-C, 1 otherwise.

    `option_names()` are the Python names the messages may quote that are flags here (failures.cli_wording);
    `model()` is what to name when a library's network error does not say which model it was fetching. Both are
    functions, called only on a failure (they may import what a successful run does not need); `model_flag` is the
    flag that takes a local model folder instead.
    """
    from .common import failures

    try:
        code = run() or 0
        sys.stdout.flush()  # here, so that a reader gone away (`| head -1`) is caught below, not at exit
        return code
    except BrokenPipeError:
        # The reader of our output stopped reading: not a failure to report. Later writes (and the flush at exit)
        # go nowhere instead of raising again; the exit code is a shell's for a process ended by SIGPIPE.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE
    except KeyboardInterrupt:
        print(f"{prog}: {on_interrupt() if callable(on_interrupt) else on_interrupt}", file=sys.stderr)
        return INTERRUPTED
    except UsageError as error:
        named = error.prog or prog
        print(f"{named}: error: {error} (see {named} --help)", file=sys.stderr)
        return USAGE_ERROR
    except Exception as error:  # noqa: BLE001 - every failure becomes one line (the traceback with --debug)
        if debug:
            print(failures.traceback_text(error), file=sys.stderr, end="")
        explained = failures.explain(error, set(option_names()), model() if model is not None else None,
                                     model_flag=model_flag)
        print(f"{prog}: error: {explained}", file=sys.stderr)
        return RUNTIME_ERROR


# -- local paths ------------------------------------------------------------------------------------------------------


def looks_local(value: str) -> bool:
    """Is `value` meant as a local path rather than a Hub id (`name` or `namespace/name`)?

    Yes when it starts with `/`, `.` or `~`, holds a backslash, has more than one `/` (a Hub id has at most one), or
    its first part exists here (`out/ms` when `out/` does).
    """
    if value.startswith(("/", ".", "~")) or "\\" in value or value.count("/") > 1 or value.endswith("/"):
        return True
    return "/" in value and Path(value.split("/", 1)[0]).is_dir()


def missing_path(value: str, flag: str, what: str) -> str | None:
    """The message for `flag value` when it looks local and does not exist (None when it exists or looks like a
    Hub id): names the path as given and as resolved, and a near name in its folder when there is one."""
    path = Path(os.path.expanduser(value))
    if path.exists() or not looks_local(value):
        return None
    parent = path.parent
    while not parent.is_dir() and parent != parent.parent:
        parent = parent.parent
    resolved = path.resolve()
    message = f"{flag} {value!r}: no such {what} ({resolved} does not exist)"
    if parent == path.parent:
        near = difflib.get_close_matches(path.name, [p.name for p in parent.iterdir()], n=1, cutoff=0.6)
        if near:
            message += f"; did you mean {str(path.parent / near[0]) if str(path.parent) != '.' else near[0]}?"
    else:
        message += f"; the first existing folder above it is {parent.resolve()}"
    return message


def folder_contents(path: str | Path, limit: int = 8) -> str:
    """What a folder holds, for messages: `config.json, model.safetensors, ... (12 entries)` or `nothing`."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in Path(path).iterdir())
    if not names:
        return "nothing (it is empty)"
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} entries)" if len(names) > limit else "")


def read_escapes(text: str) -> str:
    """A separator typed on a command line: "\\n" arrives as backslash + n, read here as a newline, as in Python.
    unicode_escape reads bytes as Latin-1, so other text goes through as \\uXXXX escapes and "é" stays "é"."""
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
