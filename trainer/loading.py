"""Loading the models prm-train and prm-eval are given: checked paths, a LoRA adapter's base found, quiet loads.

- A model path that looks local and is missing, or a folder that holds no model, fails at once with one line.
- A LoRA adapter names its base model in `adapter_config.json`. prm-train writes an absolute path there for a local
  base; an adapter saved with a relative one (older runs, other tools) is resolved from the working directory, then
  from the adapter's folder and the folder holding it, and a base that is in neither place is named in the error.
- transformers prints a LOAD REPORT whenever a checkpoint lacks weights of the model class it is loaded into. Loading a
  causal LM as a token classifier always lacks the classification head (and leaves the LM head unused): that report
  is expected when prm-train starts a new head, and at evaluation the adapter supplies the head, so it only alarms.
  `expected_head_report()` hides exactly that report; any other finding (a missing layer, a size mismatch) shows.
- transformers draws a "Loading weights" bar for every model it loads (and huggingface_hub one per download):
  `loading_bars(False)` hides them, for `prm-eval --no_progress`.
"""

import logging
import re
import warnings
from contextlib import contextmanager
from pathlib import Path

from prm_builder.command_line import folder_contents, looks_local, missing_path

# The token classification heads of transformers' models (Qwen2, Llama, Mistral: `score`; BERT-likes: `classifier`),
# and the language-modelling head a causal LM checkpoint carries that a token classifier does not use.
_HEAD = re.compile(r"^(score|classifier)\.")
_LM_HEAD = re.compile(r"^lm_head\.")
MODEL_FILES = ("config.json", "adapter_config.json")


def check_model_path(path: str, flag: str) -> None:
    """Refuse a model path that looks local and is missing, or a folder without config.json / adapter_config.json."""
    missing = missing_path(path, flag, "folder")
    if missing:
        raise FileNotFoundError(missing)
    folder = Path(path).expanduser()
    if folder.is_dir() and not any((folder / name).is_file() for name in MODEL_FILES):
        dataset = (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()
        hint = ("; it looks like a dataset saved by `prm-builder build`: pass it as data, not as the model" if dataset
                else "")
        raise ValueError(
            f"{flag} {path!r} is a folder but not a model (no config.json, nor adapter_config.json for a LoRA "
            f"adapter); it holds {folder_contents(folder)}{hint}"
        )


def absolute_if_local(path: str) -> str:
    """`path` made absolute when it is a local folder, so what is saved with the model (a LoRA adapter's base model)
    still points to it from any other working directory; a Hub id is returned unchanged."""
    folder = Path(path).expanduser()
    return str(folder.resolve()) if folder.is_dir() else path


def adapter_base(adapter_path: str, base: str | None) -> str:
    """The base model a LoRA adapter at `adapter_path` names, found: as given (a Hub id, an absolute path, or relative
    to the working directory), else relative to the adapter's folder or the folder holding it. A missing local base
    is a one-line error."""
    if not base:
        raise ValueError(f"{adapter_path}: adapter_config.json names no base model (base_model_name_or_path is empty)")
    if Path(base).expanduser().is_dir():
        return base
    if not Path(base).is_absolute() and Path(adapter_path).is_dir():
        # Saved relative to the folder training ran in: the adapter's folder or the one holding it, most often.
        for beside in (Path(adapter_path, base), Path(adapter_path).resolve().parent / base):
            if beside.is_dir():
                return str(beside.resolve())
    if looks_local(base):
        raise FileNotFoundError(
            f"{adapter_path} is a LoRA adapter of the base model {base!r}, which is not there (looked in "
            f"{Path.cwd()} and beside the adapter): put the base model back, or set base_model_name_or_path in "
            f"{Path(adapter_path, 'adapter_config.json')} to where it is now"
        )
    return base  # a Hub id: transformers fetches it, or says it is not cached


class _ExpectedHeadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "LOAD REPORT" not in message or not only_the_head(message)


def only_the_head(report: str) -> bool:
    """Does a LOAD REPORT list nothing but the classification head as MISSING and the LM head as UNEXPECTED?"""
    rows = []
    for line in report.splitlines():
        cells = [re.sub(r"\x1b\[[0-9;]*m", "", cell).strip() for cell in line.split("|")]
        if len(cells) < 2 or cells[0] in ("Key", "") or set(cells[0]) <= {"-", "+"}:
            continue
        rows.append((cells[0], cells[1]))
    return bool(rows) and all(
        (status == "MISSING" and _HEAD.match(key)) or (status == "UNEXPECTED" and _LM_HEAD.match(key))
        for key, status in rows
    )


@contextmanager
def expected_head_report():
    """Inside: transformers' LOAD REPORT is not printed when it only says the classification head is new."""
    logger = logging.getLogger("transformers.modeling_utils")
    hide = _ExpectedHeadReport()
    logger.addFilter(hide)
    try:
        yield
    finally:
        logger.removeFilter(hide)


@contextmanager
def peft_reading_deprecated_checkpointing_flag():
    """PEFT 0.21 reads `model.is_gradient_checkpointing` when it wraps a model (`PeftModel.__init__`), a property
    transformers 5 deprecated for `is_activation_checkpointing` (the same value). The FutureWarning is about PEFT's
    line, not the user's options, so it is hidden exactly there, in training and at evaluation alike."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        yield


@contextmanager
def loading_bars(show: bool):
    """Inside, with `show` False: no progress bar from transformers' loading ("Loading weights") nor from
    huggingface_hub's downloads. Both switches are global, so each is put back as it was on the way out."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars
    from transformers.utils import logging as transformers_logging

    if show or not transformers_logging.is_progress_bar_enabled():
        yield
        return
    hub_bars_were_off = are_progress_bars_disabled()
    transformers_logging.disable_progress_bar()  # turns huggingface_hub's off too
    try:
        yield
    finally:
        transformers_logging.enable_progress_bar()  # and on again: unless they were off before
        if hub_bars_were_off:
            disable_progress_bars()
