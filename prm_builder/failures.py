"""One clear line per failure on the command line: what failed, where, and the ways out.

Errors raised by prm_builder's own code already say what was expected and how to fix it; they
are printed as they are, in the command line's words (`--data-dir`, not `data_dir=`). Errors
raised inside a library are explained here: datasets' `DatasetGenerationError` is unwrapped to
its cause, and a network failure anywhere in the chain of causes (httpx, huggingface_hub's
offline mode, transformers' "couldn't connect") becomes one line naming the URL and the ways
to build without it. Anything else is shown as its type and message, with `--debug` for the
traceback. Everything printed is redacted (redact.py).

This module imports nothing heavy: it runs on the command line's error path.
"""

import ast
import functools
import logging
import os
import re
import shlex
import socket
from pathlib import Path

from .redact import redact

_PACKAGE_DIR = str(Path(__file__).resolve().parent)
# What a URL that could not be reached was for, and how to build without it (CLI wording).
NETWORK_WAYS_OUT = [
    (
        re.compile(r"openai/gsm8k"),
        "the GSM8K problems (the default --problems gsm8k) come from the Hub; without network use "
        "--problems sample (problems bundled with prm-builder), --problems DIR (a local GSM8K copy: "
        "train.jsonl and/or test.jsonl with question and answer){offline}",
    ),
    (
        re.compile(r"prm800k/math_splits"),
        "MATH500 comes from the openai/prm800k repository; without network pass --problems PATH with a "
        "local copy of its test.jsonl (from prm800k/math_splits/)",
    ),
    (
        re.compile(r"prm800k"),
        "PRM800K comes from the openai/prm800k repository; without network pass --data-dir with a local "
        "copy (git clone https://github.com/openai/prm800k with git-lfs installed, then --data-dir "
        "prm800k/prm800k/data)",
    ),
    (
        re.compile(r"huggingface\.co/(?!api/|datasets/)(?P<repo>[^/\s]+/[^/\s]+)/resolve/"),
        "the model {repo} is not in the local Hugging Face cache; download it once with network "
        "(hf download {repo}) or pass {model_flag} with a local folder{offline}",
    ),
    (
        re.compile(r"Qwen/ProcessBench"),
        "ProcessBench comes from the Hub's Qwen/ProcessBench; without network pass --data DIR with its "
        "<subset>.json files (fetched once with: hf download Qwen/ProcessBench --repo-type dataset --local-dir DIR)"
        "{offline}",
    ),
]
OFFLINE_WAY_OUT = ", or set HF_HUB_OFFLINE=1 to use a copy already in the cache"
# Module prefixes of the HTTP stacks whose connection errors mean "no network" (or a dead server).
_NETWORK_MODULES = ("httpx", "httpcore", "aiohttp", "requests", "urllib3")
_NETWORK_NAMES = re.compile(r"Connect|Timeout|Network|Transport|Proxy|Offline")
# huggingface_hub's "not in the cache and the network is off or unreachable".
_NOT_CACHED = "LocalEntryNotFoundError"
_URL = re.compile(r"https?://[^\s'\"()<>,]+")
# Options the command line spells differently from Python.
_SPECIAL_WORDING = {"download_mode='force_redownload'": "--force-rebuild"}


def explain(error: BaseException, option_names: set[str], model: str | None = None, model_flag: str = "--model") -> str:
    """The one line printed for `error` (without the "prm-builder: error: " prefix).

    `model` is the model a build loads, named when a library's error does not say which failed; `model_flag` the flag
    that takes a local folder instead (`--model_name_or_path` in prm-train).
    """
    error = unwrap(error)
    network = _network_failure(error)
    ours = raised_by_us(error) or _raised_by_the_trainer(error)
    if network is not None and not ours:
        message = _network_message(error, network, model, model_flag)
    elif ours or isinstance(error, (ValueError, FileNotFoundError, NotADirectoryError)):
        message = str(error)
    elif isinstance(error, OSError) and error.strerror:  # a full disk, a permission: the OS's words
        message = f"{error.strerror}: {error.filename}" if error.filename else str(error)
    else:
        message = f"{type(error).__name__}: {error} (run again with --debug for the traceback)"
    return redact(cli_wording(" ".join(message.split()), option_names))


def unwrap(error: BaseException) -> BaseException:
    """The error behind datasets' generic `DatasetGenerationError` ("An error occurred while generating")."""
    while type(error).__name__ == "DatasetGenerationError" and error.__cause__ is not None:
        error = error.__cause__
    return error


def raised_by_us(error: BaseException) -> bool:
    """Was `error` raised by prm_builder's own code (so its message already explains itself)?"""
    traceback = error.__traceback__
    if traceback is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    # co_filename is the path the module was imported by, which a symlinked install (or a
    # symlinked folder on sys.path) leaves unresolved: compare real paths.
    return _real_path(traceback.tb_frame.f_code.co_filename).startswith(_PACKAGE_DIR + os.sep)


@functools.lru_cache(maxsize=256)
def _real_path(path: str) -> str:
    return os.path.realpath(path)


def _raised_by_the_trainer(error: BaseException) -> bool:
    """Was `error` raised by prm_trainer's code (prm-train, prm-eval), whose messages explain themselves too?"""
    import importlib.util

    spec = importlib.util.find_spec("prm_trainer")  # finds the folder without importing the package
    folders = spec.submodule_search_locations if spec is not None else None
    traceback = error.__traceback__
    if not folders or traceback is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    where = os.path.realpath(traceback.tb_frame.f_code.co_filename)
    return any(where.startswith(os.path.realpath(folder) + os.sep) for folder in folders)


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _network_failure(error: BaseException) -> BaseException | None:
    """The first error in the chain of causes that says the network (or a server) could not be reached."""
    for link in _chain(error):
        if type(link).__name__ == _NOT_CACHED or _is_network_error(link):
            return link
    return None


def _is_network_error(error: BaseException) -> bool:
    if isinstance(error, (ConnectionError, TimeoutError, socket.gaierror)):
        return True
    return any(
        cls.__module__.startswith(_NETWORK_MODULES) and _NETWORK_NAMES.search(cls.__name__)
        for cls in type(error).__mro__
    )


def _network_message(error: BaseException, cause: BaseException, model: str | None, model_flag: str = "--model") -> str:
    url = _failed_url(error)
    known = url is not None and any(pattern.search(url) for pattern, _ in NETWORK_WAYS_OUT)
    if not known and type(cause).__name__ == _NOT_CACHED and model and not os.path.isdir(model):
        # transformers' "couldn't connect to 'https://huggingface.co'" names neither the model nor the file.
        url = f"https://huggingface.co/{model}/resolve/main/"
    # The deepest network error says it best ("[Errno -2] Name or service not known").
    deepest = [link for link in _chain(error) if _is_network_error(link)]
    reason = str(deepest[-1] if deepest else cause).strip() or type(cause).__name__
    offline = "offline mode is enabled" in reason.lower() or "outgoing traffic has been disabled" in reason
    if offline:
        reason = "HF_HUB_OFFLINE is set and no copy is in the cache"
    where = f"could not reach {url}" if url else "could not reach the network"
    for pattern, ways_out in NETWORK_WAYS_OUT:
        match = pattern.search(url or "")
        if match:
            fill = {"offline": "" if offline else OFFLINE_WAY_OUT, "model_flag": model_flag, **match.groupdict()}
            return f"{where} ({reason}): {ways_out.format(**fill)}"
    return f"{where} ({reason}); check the connection, or build from local files"


def _failed_url(error: BaseException) -> str | None:
    for link in _chain(error):
        try:
            request = getattr(link, "request", None)  # httpx errors carry the request they failed on
        except RuntimeError:
            request = None
        if request is not None and getattr(request, "url", None):
            return str(request.url)
    for link in _chain(error):
        found = _URL.search(str(link))
        if found:
            return found[0].rstrip(".:;")
    return None


def cli_wording(message: str, option_names: set[str]) -> str:
    """`message` with Python arguments written as flags: `data_dir='x'` -> `--data-dir x`.

    Library code words its errors for Python callers; the command line shows them in its own terms.
    """
    for python, flag in _SPECIAL_WORDING.items():
        message = message.replace(python, flag)

    def as_flag(match: re.Match) -> str:
        name, value = match["name"], match["value"]
        if name not in option_names:
            return match[0]
        flag = "--" + name.replace("_", "-")
        if value is None:
            return flag
        return f"{flag} {_flag_value(value)}" if value not in ("True", "False") else (
            flag if value == "True" else f"--no-{flag[2:]}"
        )

    message = _PYTHON_ARGUMENT.sub(as_flag, message)
    # "data_dir '/x': expected ...", "seed must be ...": an option named before its value or rule.
    named = lambda m: f"--{m['name'].replace('_', '-')} " if m["name"] in option_names else m[0]  # noqa: E731
    return _NAMED_VALUE.sub(named, message)


# name=VALUE where VALUE is a Python literal: a dict (one level of nesting), a string, a list, a word.
_PYTHON_ARGUMENT = re.compile(
    r"(?<![\w./:?&-])(?P<name>[a-z_][a-z0-9_]*)="
    r"(?P<value>\{(?:[^{}]|\{[^{}]*\})*\}|'[^']*'|\"[^\"]*\"|\[[^\]]*\]|-?\w[\w+-]*(?:\.\w[\w+-]*)*)?"
)

_NAMED_VALUE = re.compile(r"(?<![\w./:?&-])(?P<name>[a-z_][a-z0-9_]*) (?=['\"]|must\b)")


def _flag_value(text: str) -> str:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    if isinstance(value, dict):  # data_files={'train': [...]} -> train=PATH
        items = []
        for split, files in value.items():
            for path in files if isinstance(files, (list, tuple)) else [files]:
                items.append(f"{split}=" + ("PATH" if path is Ellipsis else shlex.quote(str(path))))
        return " ".join(items)
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return shlex.quote(str(value)) if isinstance(value, str) else str(value)


class OncePerKindOfRetry(logging.Filter):
    """Shows each kind of huggingface_hub retry warning once ("Retrying in 8s [Retry 4/5]" x5 is noise).

    Kinds are the message with its numbers blanked; other loggers' records always pass.
    """

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("huggingface_hub") or record.levelno > logging.WARNING:
            return True
        kind = re.sub(r"\d+", "N", record.getMessage())
        if kind in self.seen:
            return False
        self.seen.add(kind)
        return True


def traceback_text(error: BaseException) -> str:
    """The full traceback, for --debug, redacted like every other line."""
    import traceback

    return redact("".join(traceback.format_exception(error)))
