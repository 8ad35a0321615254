"""prm-eval: measure a trained PRM on ProcessBench, on a built split, or as a best-of-N reranker.

    prm-eval --model qwen2.5-0.5b-prm --benchmark processbench
    prm-eval --model qwen2.5-0.5b-prm --benchmark built --dataset out/synthetic --split test
    prm-eval --model qwen2.5-0.5b-prm --benchmark best_of_n --candidates samples.jsonl --plot bon.png
    prm-eval --judge-model Qwen/QwQ-32B --base-url http://localhost:8000/v1 --benchmark processbench

`--model` is a folder or Hub id of a full model or a LoRA adapter (its base model is loaded from the adapter config).
`--judge-model` scores an LLM judge behind an OpenAI-compatible server as a critic instead (ProcessBench or a
built split), with the same metrics and tables, so PRMs and critics compare in one table.
Progress goes to stderr, the report to stdout (`--json` for machines). Heavy modules load inside `main`, so
`prm-eval --help` is instant.
"""

import argparse
import json
import sys
from pathlib import Path

from prm_builder.command_line import follow_conventions, read_escapes, run_command

AGGREGATIONS = ("min", "prod", "last", "mean")  # evaluation.AGGREGATIONS, without importing numpy for --help
SUBSETS = ("gsm8k", "math", "olympiadbench", "omnimath")  # processbench.SUBSETS, likewise


def _names(choices):
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list from {', '.join(choices)}, got {text!r}")
        return names

    return parse


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _threshold(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text}")
    return value


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prm-eval", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Docs: docs/evaluation.md",
    )
    parser.add_argument("--model", help="PRM folder or Hub id (full model or LoRA adapter)")
    parser.add_argument("--benchmark", required=True, choices=["processbench", "built", "best_of_n"])
    scoring = parser.add_argument_group(
        "scoring (default: the PRM's training settings, from the prm_step_format.json prm-train saves with it)")
    scoring.add_argument("--step_separator", type=read_escapes,
                         help="separator to split and score steps at; escapes like \\n are read (default: the saved "
                         "one, else \\n; another than the saved one warns)")
    scoring.add_argument("--max_length", type=_positive,
                         help="truncation (default: the saved one, else none; never past the model's length)")
    scoring.add_argument("--max_prompt_length", type=_positive, help="truncation (default: the saved one, else none)")
    scoring.add_argument("--max_completion_length", type=_positive,
                         help="truncation (default: the saved one, else none)")
    scoring.add_argument("--batch_size", type=_positive, default=8, help="rows per forward pass, at most (default: 8)")
    scoring.add_argument("--max_batch_tokens", "--max-batch-tokens", type=_positive, default=16384,
                         help="padded tokens per forward pass, at most (default: 16384)")
    scoring.add_argument("--threshold", type=_threshold, default=0.5,
                         help="a step is predicted correct when its score is at least this (default: 0.5)")
    scoring.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    scoring.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                         help="weights' precision (default: auto, the checkpoint's)")
    critic = parser.add_argument_group("a judge as a critic (instead of --model)")
    critic.add_argument("--judge-model", "--judge_model", dest="judge_model",
                        help="the judge's name as its OpenAI-compatible server serves it (thinking allowed)")
    critic.add_argument("--base-url", "--base_url", dest="base_url", action="append",
                        help="the judge's server, e.g. http://localhost:8000/v1 (repeat for several, used round-robin)")
    critic.add_argument("--judge-samples", "--judge_samples", dest="judge_samples", type=_positive, default=1,
                        help="verdicts per solution, majority vote; a tie is a miss (default: 1)")
    critic.add_argument("--max-new-tokens", "--max_new_tokens", dest="max_new_tokens", type=_positive, default=8192,
                        help="tokens per verdict, thinking included (default: 8192)")
    critic.add_argument("--judge-temperature", "--judge_temperature", dest="judge_temperature", type=float, default=0.6,
                        help="the judge's sampling temperature (default: 0.6)")
    critic.add_argument("--concurrency", type=_positive, default=32, help="requests in flight (default: 32)")
    critic.add_argument("--max-retries", "--max_retries", dest="max_retries", type=int, default=3,
                        help="new verdicts for an unparsable one, and retries of a failed request (default: 3)")
    processbench = parser.add_argument_group("--benchmark processbench")
    processbench.add_argument("--subsets", type=_names(SUBSETS), default=list(SUBSETS),
                              help=f"comma-separated, from {','.join(SUBSETS)} (default: all)")
    processbench.add_argument("--data", help="folder with <subset>.json files (default: the Hub's Qwen/ProcessBench)")
    processbench.add_argument("--revision", help="revision of Qwen/ProcessBench on the Hub (default: main)")
    processbench.add_argument("--calibrate", choices=SUBSETS, metavar="SUBSET",
                              help="pick the threshold with the best F1 on this subset and report it")
    built = parser.add_argument_group("--benchmark built")
    built.add_argument("--dataset", help="folder saved by prm-builder build, prm_builder:CONFIG, or a Hub dataset")
    built.add_argument("--dataset_options", nargs="*", help="builder options as key=value (as in prm-train)")
    built.add_argument("--split", default="test", help="split to score (default: test)")
    best = parser.add_argument_group("--benchmark best_of_n")
    best.add_argument("--candidates", help="JSONL of prompt, reference_answer, candidates (texts or step lists)")
    best.add_argument("--aggregations", type=_names(AGGREGATIONS), default=list(AGGREGATIONS),
                      help=f"comma-separated, from {','.join(AGGREGATIONS)} (default: all)")
    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    output.add_argument("--plot", metavar="IMAGE", help="write a chart (png, svg, pdf) of the results")
    output.add_argument("--update-card", "--update_card", action="store_true", dest="update_card",
                        help="write the scores into the model folder's README.md, replacing this benchmark's last")
    output.add_argument("--scores_dir", metavar="DIR",
                        help="keep every row's step scores here (one JSONL per data file) and resume from them")
    output.add_argument("--html", metavar="FILE",
                        help="write a self-contained page of the evaluated rows, most confident PRM mistakes first "
                             "(processbench and built)")
    output.add_argument("--html_rows", "--html-rows", dest="html_rows", type=_positive, default=None,
                        help="rows on the --html page (default: 200)")
    output.add_argument("--no_progress", action="store_true", help="hide progress bars")
    output.add_argument("--debug", action="store_true", help="on failure, also print the full traceback")
    return follow_conventions(parser)


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if (args.model is None) == (args.judge_model is None):
        parser.error("give either --model (a PRM) or --judge-model (a judge scored as a critic)")
    if args.judge_model is not None:
        if not args.base_url:
            parser.error("--judge-model needs --base-url, the judge's OpenAI-compatible server")
        if args.benchmark == "best_of_n":
            parser.error("--judge-model scores a critic on --benchmark processbench or built, not best_of_n")
        for option in ("calibrate", "scores_dir", "html"):
            if getattr(args, option) is not None:
                parser.error(f"--{option} does not apply to --judge-model (a PRM's step scores, not a judge's verdicts)")
        for option in ("step_separator", "max_length", "max_prompt_length", "max_completion_length"):
            if getattr(args, option) is not None:
                parser.error(f"--{option} does not apply to --judge-model: the judge reads the steps as given")
        if args.update_card:
            parser.error("--update-card writes into a PRM's folder; it does not apply to --judge-model")
        if args.max_retries < 0:
            parser.error(f"--max-retries must be >= 0, got {args.max_retries}")
    elif args.base_url:
        parser.error("--base-url is the judge's server: it goes with --judge-model")
    # Each benchmark's input is required with it, and only with it: a stray option is a mistake worth reporting.
    needs = {"built": "dataset", "best_of_n": "candidates"}
    if args.benchmark in needs and getattr(args, needs[args.benchmark]) is None:
        parser.error(f"--benchmark {args.benchmark} needs --{needs[args.benchmark]}")
    foreign = {"processbench": ("dataset", "dataset_options", "candidates"),
               "built": ("data", "calibrate", "candidates"),
               "best_of_n": ("data", "calibrate", "dataset", "dataset_options")}
    for option in foreign[args.benchmark]:
        if getattr(args, option) is not None:
            parser.error(f"--{option} does not apply to --benchmark {args.benchmark}")
    if args.html is not None and args.benchmark == "best_of_n":
        parser.error("--html shows step labels beside the PRM's scores: use it with --benchmark processbench or built")
    if args.html_rows is not None and args.html is None:
        parser.error("--html_rows applies to the page that --html writes; add --html FILE")
    if args.update_card and not Path(args.model).is_dir():
        parser.error(f"--update-card writes README.md into the model's folder; {args.model} is not a local folder")

    again = "run the same command again to resume" if args.scores_dir else "pass --scores_dir to make runs resumable"

    def checked_run():
        check_paths(args)  # before torch is imported: a mistyped path fails at once
        run(args)

    return run_command("prm-eval", checked_run, debug=args.debug, model=lambda: args.model or args.judge_model,
                       on_interrupt=f"interrupted; {again}")


def check_paths(args) -> None:
    """Refuse the paths among the inputs that look local and do not exist, or are folders of the wrong kind."""
    from prm_builder.command_line import missing_path

    from .common.data import check_dataset_folder
    from .common.loading import check_model_path

    if args.model is not None:  # a judge (--judge-model) is a name its server serves, not a path
        check_model_path(args.model, "--model")
    if args.dataset is not None and not args.dataset.startswith("prm_builder"):
        check_dataset_folder(args.dataset, "--dataset")
    for flag, value, what in (("--data", args.data, "folder"), ("--candidates", args.candidates, "file")):
        missing = missing_path(value, flag, what) if value is not None else None
        if missing:
            raise FileNotFoundError(missing)


def run(args) -> None:
    """Evaluate as `args` say and write the report (stdout), the chart and the card section."""
    from .evaluating.benchmark_suites import EvalOptions, evaluate
    from .evaluating.eval_report import plot, render_table, update_card
    from .common.tokenization import StepFormat, Truncation

    dataset_options = None
    if args.dataset_options:
        from .common.data import parse_dataset_options

        dataset_options = parse_dataset_options(args.dataset_options)

    if args.judge_model is not None:
        from prm_builder.common.options import check_urls

        from .evaluating.critic import evaluate_critic

        results = evaluate_critic(
            args.judge_model, check_urls("--base-url", args.base_url), args.benchmark,
            samples=args.judge_samples, max_new_tokens=args.max_new_tokens, temperature=args.judge_temperature,
            concurrency=args.concurrency, max_retries=args.max_retries, subsets=args.subsets, data=args.data,
            revision=args.revision, dataset=args.dataset, dataset_options=dataset_options, split=args.split,
        )  # fmt: skip
        print(json.dumps(results, indent=2) if args.json else render_table(results))
        if args.plot:
            print(f"chart written to {plot(results, args.plot)}", file=sys.stderr)
        return
    scored = []  # (name, rows, scores) of each scored set, for --html
    # The flags given override the saved format part by part: `--max_length 512` alone keeps the saved separator.
    step_format = None
    lengths = (args.max_length, args.max_prompt_length, args.max_completion_length)
    if args.step_separator is not None or any(length is not None for length in lengths):
        truncation = Truncation(*lengths) if any(length is not None for length in lengths) else None
        step_format = (StepFormat.saved(args.model) or StepFormat()).override(args.step_separator, truncation)
    options = EvalOptions(
        step_format=step_format, batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens,
        threshold=args.threshold, progress=not args.no_progress, scores_dir=args.scores_dir, device=args.device,
        dtype=args.dtype, subsets=tuple(args.subsets), data=args.data, calibrate=args.calibrate,
        revision=args.revision, dataset=args.dataset, dataset_options=dataset_options, split=args.split,
        candidates=args.candidates, aggregations=tuple(args.aggregations),
        on_scored=(lambda name, rows, scores: scored.append((name, rows, scores))) if args.html else None,
    )
    results = evaluate(args.model, None, args.benchmark, options)
    print(json.dumps(results, indent=2) if args.json else render_table(results))
    if args.plot:
        print(f"chart written to {plot(results, args.plot)}", file=sys.stderr)
    if args.html:
        from prm_builder.publishing.report import EVAL_ROWS, evaluation_page

        page = evaluation_page(results, scored, max_rows=args.html_rows or EVAL_ROWS)
        Path(args.html).write_text(page, encoding="utf-8")
        print(f"page written to {args.html}", file=sys.stderr)
    if args.update_card:
        print(f"scores written to {update_card(args.model, results)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
