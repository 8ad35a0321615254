"""Scoring the rows of a benchmark with a PRM, resumable: what `prm-eval` hands each benchmark as its scorer.

With a `scores_dir`, the step scores of every chunk of rows are appended to `<scores_dir>/<name>.jsonl` as soon as
they are computed, one line per row (`index`, a fingerprint of the row's text, `scores`), after a first line that
records the model and the scoring settings. A run that was interrupted starts again where it stopped; the file also
holds the per-case predictions for analysis. Scores written with other settings are refused rather than mixed in.
"""

import hashlib
import json
from pathlib import Path

from .evaluation import MAX_BATCH_TOKENS, score_steps
from ..common.tokenization import StepFormat

# Rows scored between two writes: small enough to lose little on an interruption, large enough to batch by length.
CHUNK_ROWS = 256


def row_fingerprint(row: dict) -> str:
    """A short hash of what is scored, so a changed data file is rescored instead of trusted."""
    text = json.dumps([row["prompt"], list(row["completions"])], ensure_ascii=False)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


class Scorer:
    """`scorer(rows, name) -> step scores per row`, batching by tokens on the model's device, with a progress bar.

    Args:
        model, tokenizer: the PRM and its tokenizer.
        step_format: the training separator and truncation (see `score_steps`).
        batch_size: rows per forward pass, at most; max_batch_tokens: padded tokens per forward pass, at most.
        progress: show a progress bar per call.
        scores_dir: where to keep the scores of each call (`<name>.jsonl`) and resume from; None keeps nothing.
        model_name: recorded with the scores, so another model's file is not resumed.
    """

    def __init__(self, model, tokenizer, step_format: StepFormat, batch_size: int, progress: bool = True,
                 scores_dir: str | Path | None = None, model_name: str = "", *, max_batch_tokens=MAX_BATCH_TOKENS):
        self.model, self.tokenizer, self.batch_size, self.progress = model, tokenizer, batch_size, progress
        self.step_format, self.max_batch_tokens = step_format, max_batch_tokens
        self.scores_dir = Path(scores_dir) if scores_dir is not None else None
        self.settings = {"model": model_name, **step_format.as_dict()}

    def __call__(self, rows: list[dict], name: str) -> list[list[float]]:
        from tqdm.auto import tqdm

        path = self.scores_dir / f"{name}.jsonl" if self.scores_dir is not None else None
        fingerprints = [row_fingerprint(row) for row in rows] if path is not None else []
        done = self._resume(path, fingerprints) if path is not None else {}
        todo = [index for index in range(len(rows)) if index not in done]
        with tqdm(total=len(rows), initial=len(done), desc=f"Scoring {name}", unit="row",
                  disable=not self.progress) as bar:
            for start in range(0, len(todo), CHUNK_ROWS):
                chunk = todo[start : start + CHUNK_ROWS]
                scores = score_steps(self.model, self.tokenizer, [rows[i] for i in chunk], self.step_format,
                                     batch_size=self.batch_size, max_batch_tokens=self.max_batch_tokens)
                if path is not None:
                    with open(path, "a", encoding="utf-8") as out:
                        for index, row_scores in zip(chunk, scores, strict=True):
                            line = {"index": index, "fingerprint": fingerprints[index], "scores": row_scores}
                            out.write(json.dumps(line) + "\n")
                done.update(zip(chunk, scores, strict=True))
                bar.update(len(chunk))
        return [done[index] for index in range(len(rows))]

    def _resume(self, path: Path, fingerprints: list[str]) -> dict[int, list[float]]:
        """The scores already in `path` for rows that are unchanged; a new file starts with the settings."""
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"settings": self.settings}) + "\n", encoding="utf-8")
            return {}
        header, *lines = path.read_text(encoding="utf-8").split("\n")
        settings = json.loads(header).get("settings") if header.startswith("{") else None
        if settings != self.settings:
            raise ValueError(
                f"{path} holds scores computed with {settings}, not {self.settings}: remove it, or pass another "
                "scores folder"
            )
        done, complete = {}, []
        for line in lines:
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue  # the cut last line of an interrupted run (or the empty string after the last newline)
            complete.append(line)
            index = item["index"]
            if index < len(fingerprints) and item["fingerprint"] == fingerprints[index]:
                done[index] = item["scores"]
        # Rewritten without a cut line, so that what is appended next starts on a line of its own.
        path.write_text("\n".join([header, *complete]) + "\n", encoding="utf-8")
        return done
