"""The `ace` command line: `ace demo`, `ace info`, `ace models` (more subcommands join as they land).

Each subcommand is a small function taking the parsed arguments; the work itself lives in the library.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

log = logging.getLogger("ace_interp")


def cmd_models(args: argparse.Namespace) -> int:
    from ace_interp.model import available_models

    for name, description in available_models().items():
        print(f"{name:15s} {description}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ace_interp.model import load_model, model_spec

    bridge = load_model(args.model, device=args.device)
    print(model_spec(bridge).summary())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ace_interp.demo import DemoConfig, run_demo

    out = run_demo(DemoConfig(model=args.model, out=Path(args.out), device=args.device, quick=args.quick))
    print(f"\nOutputs written to {out.resolve()}")
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from ace_interp.analysis.figures import FigureConfig, make_figures
    from ace_interp.data.mquake import load_mquake
    from ace_interp.evaluation.protocol import default_cases, multi_hop_asker
    from ace_interp.model import load_model

    config = FigureConfig.quick() if args.quick else FigureConfig()
    cases_of = {model: load_mquake(args.cases or default_cases(model)) for model in args.model}  # all, before any work
    for model in args.model:
        cases = cases_of[model]
        if args.max_cases:
            cases = cases[: args.max_cases]
        out = Path(args.out) / Path(model).name
        print(f"[{model}] analysing {len(cases)} cases -> {out}")
        bridge = load_model(model, device=args.device)
        summary = make_figures(bridge, cases, out, config, multi_hop_asker(model))
        print(json.dumps(summary, indent=1, default=str))
    print(f"\nFigures written under {Path(args.out).resolve()}")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    from ace_interp.editing import EditRequest, EditWarning, edit, validate_requests
    from ace_interp.evaluation.answers import generate_greedy, target_scores
    from ace_interp.model import load_model, save_model

    bridge = load_model(args.model, device=args.device)
    # the prompt may spell the subject out or mark it with {} (from_rewrite turns the first mention into {})
    request = EditRequest.from_rewrite(
        {"prompt": args.prompt, "subject": args.subject, "target_new": args.target_new, "target_true": args.target_true}
    )
    validate_requests(bridge, [request])  # before the first generation
    prompts = [request.text, *args.ask]

    def show(when: str) -> None:
        answers = generate_greedy(bridge, prompts, max_new_tokens=args.max_new_tokens)
        probs = target_scores(bridge, [request.text], [request.target_new])
        print(f"\n{when}: p(first token of {request.target_new!r} | {request.text!r}) = {float(probs['first_token_prob'][0]):.4f}")
        for prompt, answer in zip(prompts, answers):
            print(f"  {prompt.splitlines()[-1]!r} -> {answer.strip()!r}")

    show("before")
    monitor = side_effect_monitor(bridge, args.no_monitor)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EditWarning)
        applied = edit(bridge, [request], method=args.method, preset=args.preset, monitor=monitor,
                       on_failure=args.on_failure)
    print(f"\n{args.method} wrote layers {applied.layers} in {applied.seconds:.1f} s; {applied.verification.summary()}")
    for check in applied.verification.checks:
        print(f"  {'reached' if check.success else 'NOT reached'}: {check.describe()}")
    if applied.side_effects is not None:
        print(f"side effects {applied.side_effects.describe()}")
    print_edit_warnings(caught)
    show("after")
    if args.save:
        print(f"saved the edited model to {save_model(bridge, args.save)}")
    return 0


def side_effect_monitor(bridge, disabled: bool):
    """The default `SideEffectMonitor` for the CLI, or None (disabled, or no probe facts the model knows)."""
    from ace_interp.editing import SideEffectMonitor

    if disabled:
        return None
    try:
        return SideEffectMonitor(bridge)
    except ValueError as e:
        print(f"side-effect monitor unavailable: {e}")
        return None


def print_edit_warnings(caught) -> None:
    """Show the EditWarnings an edit raised (targets not reached, side-effect alarms) on stdout, once each."""
    from ace_interp.editing import EditWarning

    for message in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, EditWarning)):
        print(f"WARNING: {message}")


def usable_cases(bridge, cases):
    """(cases whose requested rewrites this model can edit, [(case id, reason)] for the others)."""
    from ace_interp.editing import EditRequestError, validate_requests
    from ace_interp.evaluation.protocol import case_requests

    usable, skipped = [], []
    for case in cases:
        try:
            validate_requests(bridge, case_requests(case))
            usable.append(case)
        except EditRequestError as e:
            skipped.append((case.case_id, str(e)))
    return usable, skipped


def cmd_evaluate(args: argparse.Namespace) -> int:
    import time

    from ace_interp.data.mquake import MQuAKEFormatError, load_mquake_checked
    from ace_interp.editing import EditWarning, check_hparam_layers, default_hparams, overridden_hparams
    from ace_interp.evaluation.batched import batched_summary, evaluate_batched
    from ace_interp.evaluation.general_ability import heldout_texts
    from ace_interp.evaluation.hops import hop_prompts_for
    from ace_interp.evaluation.main_table import sample_by_edits
    from ace_interp.evaluation.protocol import askings_for, default_cases, evaluate
    from ace_interp.editing import DEFAULT_PRESET
    from ace_interp.model import load_model
    from ace_interp.provenance import write_run_json

    start = time.perf_counter()
    # everything the run needs is checked before its first expensive step (the base evaluation)
    cases_path = args.cases or default_cases(args.model)
    try:  # every case checked before the model is even loaded; invalid ones are skipped, not fatal
        cases, invalid = load_mquake_checked(cases_path)
    except (MQuAKEFormatError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    bridge = load_model(args.model, device=args.device)
    methods = [None if m == "base" else m for m in args.method]
    # --preset names the preset of every evaluated method; without it the default preset, and only overridden
    # methods get explicit hyper-parameters
    hparams = overridden_hparams(bridge, {m: getattr(args, m) for m in EDITORS if m in methods}, args.preset)
    used = {m: hparams.get(m) or default_hparams(m, bridge, args.preset) for m in methods if m}
    for method, hp in used.items():
        check_hparam_layers(bridge, hp, method)
    cases, unusable = usable_cases(bridge, cases)  # requests this model's tokenizer cannot edit, before any pass
    skipped = [(e.case_id, str(e)) for e in invalid] + unusable
    if skipped:
        print(f"skipping {len(skipped)} invalid case(s), ids {[i for i, _ in skipped]}:")
        for _, reason in skipped[:10]:
            print(f"  {reason}")
    cases = [c for c in cases if c.n_edits in args.edits]
    if args.per_edits:
        cases = sample_by_edits(cases, args.per_edits, args.seed)
    if not cases:
        raise ValueError(f"{cases_path} has no cases with {args.edits} edits")
    promptings = list(dict.fromkeys([*args.prompting, *(["cot"] if args.cot else []), *(["cot-ood"] if args.ood else [])]))
    askings = askings_for(bridge, promptings)
    texts = None if args.no_perplexity else heldout_texts(bridge)
    # ACE's query write (attribution variant) gets multi-hop prompts the cases do not ask, and its implicit-subject
    # write noun phrases that reach the edited entity through other entities (evaluation.hops)
    monitor = side_effect_monitor(bridge, args.no_monitor or methods == [None] or args.protocol == "batched")
    if monitor is not None:
        monitor.warn = True
    common = dict(n_specificity=args.n_specificity, seed=args.seed, hparams=hparams or None, known_only=not args.all_cases,
                  hop_prompts=hop_prompts_for(bridge, cases_path), perplexity_texts=texts)
    if args.protocol == "batched":
        result = evaluate_batched(bridge, cases, [m for m in methods if m], askings, batch_size=args.batch_size or None,
                                  n_unedited=args.n_unedited, packing=args.batch_packing, **common)
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", EditWarning)
            result = evaluate(bridge, cases, methods, askings=askings, monitor=monitor, **common)
        print_edit_warnings(caught)
    prefix = f"{Path(args.model).name}_" + ("batched_" if args.protocol == "batched" else "")
    paths = result.to_csv(args.out, prefix=prefix)
    write_run_json(args.out, hparams=used, preset=args.preset or DEFAULT_PRESET,
                   overrides={m: getattr(args, m) for m in used if getattr(args, m, None)},
                   case_file=cases_path, seeds=[args.seed], wall_s=time.perf_counter() - start, model=args.model,
                   protocol=args.protocol, batch_size=args.batch_size,
                   **({"batching": args.batch_packing} if args.protocol == "batched" else {}),
                   promptings=[a.label for a in askings],
                   n_cases=len(cases), known_only=not args.all_cases, skipped_cases=[i for i, _ in skipped])
    print(result.summary.to_string(index=False))
    if args.protocol == "batched":
        print(batched_summary(result.per_case).to_string(index=False))
    if skipped:
        print(f"skipped {len(skipped)} invalid case(s): ids {[i for i, _ in skipped]}")
    print(f"\nwritten: {', '.join(map(str, paths))}, {Path(args.out) / 'run.json'}")
    return 0


def cmd_main_table(args: argparse.Namespace) -> int:
    from ace_interp.editing import DEFAULT_PRESET
    from ace_interp.evaluation.checkpoint import Shard
    from ace_interp.evaluation.main_table import TableConfig, run_main_table
    from ace_interp.evaluation.protocol import default_cases
    from ace_interp.model.loading import REPO_ROOT

    config = TableConfig(models=tuple(args.models), per_edits=args.per_edits, out=Path(args.out),
                         methods=tuple(None if m == "base" else m for m in args.methods),
                         ablations=() if args.no_ablations else TableConfig.ablations, cot=not args.no_cot,
                         ace_variants=tuple(args.ace_variants),
                         seeds=tuple(args.seeds), protocols=tuple(args.protocols), batch_size=args.batch_size or None,
                         batched_methods=tuple(args.batched_methods), batch_packing=args.batch_packing,
                         perplexity=not args.no_perplexity, preset=args.preset or DEFAULT_PRESET, resume=args.resume,
                         shard=Shard.parse(args.shard) if args.shard else None,
                         rows_from=tuple(Path(d) for d in args.rows_from))
    cases = {m: default_cases(m) for m in config.models}
    if args.interim:
        from ace_interp.evaluation.main_table import interim_report

        print(interim_report(config, cases))
        return 0
    command = "ace main-table " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "ace main-table"
    # the README is for users: its headline table comes from experiments.results_index, so only --readme writes here
    readme = REPO_ROOT / "README.md" if args.readme and not args.no_readme else None
    print(run_main_table(config, cases, readme, command))
    return 0


def cmd_bridge_lag(args: argparse.Namespace) -> int:
    """Value-curve lag between each 2-hop question's bridge entity and its answer (analysis.bridge_lag)."""
    import time

    from ace_interp.analysis.bridge_lag import LAG_KINDS, bridge_lag
    from ace_interp.evaluation.protocol import default_cases, multi_hop_asker
    from ace_interp.data.mquake import load_mquake
    from ace_interp.model import load_model
    from ace_interp.provenance import write_run_json

    for model in args.model:
        start = time.perf_counter()
        cases_path = args.cases or default_cases(model)
        bridge = load_model(model, device=args.device)
        lag = bridge_lag(bridge, load_mquake(cases_path), multi_hop_asker(model), args.n_cases,
                         args.n_value_neurons, progress=True)
        out = Path(args.out) / Path(model).name
        out.mkdir(parents=True, exist_ok=True)
        lag.lags.to_csv(out / "lags.csv", index=False)
        lag.curves.to_csv(out / "curves.csv", index=False)
        summary = {which: lag.summary(which) for which in LAG_KINDS}
        if lag.lags.answer_is_top.any():  # the cases the model answers (its next token is the answer's first)
            summary |= {f"{which}_answered": lag.summary(which, answered_only=True) for which in LAG_KINDS}
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        write_run_json(out, case_file=cases_path, wall_s=time.perf_counter() - start,
                       n_cases=args.n_cases, n_value_neurons=args.n_value_neurons, model=model)
        print(f"[{model}] {json.dumps(summary, indent=1)}\nwritten under {out}")
    return 0


# the editing methods (`editing.METHODS`, spelled out so that `ace --help` does not import torch) and the unedited model
EDITORS = ["ft", "rome", "memit", "pmet", "ace"]
ROWS = ["base", *EDITORS]


def add_override_flags(parser: argparse.ArgumentParser, methods: list[str] = EDITORS) -> None:
    """`--{method} FIELD=VALUE ...` for each editing method: hyper-parameter overrides on its defaults (dotted names
    reach nested fields; `editing.overridden_hparams` reads them back as `{method: getattr(args, method)}`)."""
    examples = {"ft": "lr=0.01", "ace": '"implicit_layers=(4,)" (the implicit-subject write; docs/ace.md)'}
    for method in methods:
        parser.add_argument(f"--{method}", nargs="*", default=[], metavar="FIELD=VALUE",
                            help=f"{method.upper()}HParams overrides, e.g. "
                                 + examples.get(method, "covariance.min_realised=0 (the reference solve)"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ace", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="on an error, show the traceback instead of one line")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list named models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("info", help="neuron-level summary of a model")
    p.add_argument("model", nargs="?", default="smollm2-135m", help="named model, local folder or hub id")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("figures", help="regenerate every analysis figure (HTML + PNG + CSV)")
    p.add_argument("--model", nargs="+", default=["toy-gptj", "toy-qwen3", "smollm2-135m"])
    p.add_argument("--cases", default=None, help="MQuAKE-format file (default: the model's own case set)")
    p.add_argument("--max-cases", type=int, default=None)
    p.add_argument("--out", default="figures")
    p.add_argument("--device", default=None)
    p.add_argument("--quick", action="store_true", help="a few prompts only (for tests)")
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser("edit", help="apply one edit, show answers before/after, optionally save the edited model")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--prompt", required=True, help='e.g. "The capital of {} is" or "The capital of France is" (the subject is found in it)')
    p.add_argument("--subject", required=True)
    p.add_argument("--target-new", required=True)
    p.add_argument("--target-true", default=None)
    p.add_argument("--method", default="ace", choices=EDITORS)
    p.add_argument("--ask", nargs="*", default=[], help="more prompts to answer before and after")
    p.add_argument("--max-new-tokens", type=int, default=6)
    p.add_argument("--preset", default=None, help="tuned (the default) or reference (docs/presets.md)")
    p.add_argument("--save", default=None, help="folder to save the edited model to (save_pretrained format)")
    p.add_argument("--on-failure", default="warn", choices=["raise", "warn", "keep"],
                   help="when the target is not reached: undo and stop, keep with a warning, keep silently")
    p.add_argument("--no-monitor", action="store_true", help="skip the side-effect check on known facts and perplexity")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_edit)

    p = sub.add_parser("evaluate", help="MQuAKE protocol on a case file (multi-hop, efficacy, paraphrase, specificity)")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--cases", default=None, help="MQuAKE-format JSON (default: the model's own case set)")
    p.add_argument("--method", nargs="+", default=["base", "pmet", "ace"], choices=ROWS)
    p.add_argument("--edits", nargs="+", type=int, default=[1, 2, 3, 4])
    p.add_argument("--per-edits", type=int, default=None, help="sample this many cases per number of edits")
    p.add_argument("--protocol", choices=["per-case", "batched"], default="per-case",
                   help="per-case: each case edited alone and restored (the ACE paper); batched: the edits of "
                        "--batch-size cases at once, MQuAKE-Remastered contamination masking (evaluation.batched)")
    p.add_argument("--batch-size", type=int, default=100, help="batched protocol: cases per batch (0 = all)")
    p.add_argument("--batch-packing", default="contradictions", choices=["plain", "contradictions", "contamination"],
                   help="batched protocol: which cases may not share a batch (evaluation.batched.make_batches); the "
                   "default keeps apart only two that edit one fact two ways, so MQuAKE-CF-3k-v2 gets MQuAKE's plain cut")
    p.add_argument("--n-unedited", type=int, default=None,
                   help="batched protocol: unedited cases asked per batch (default: as many as the batch)")
    p.add_argument("--prompting", nargs="+", default=["direct"], choices=["direct", "cot", "cot-ood"],
                   help="how the multi-hop questions are asked, all of the same edited model")
    p.add_argument("--cot", action="store_true", help="add chain-of-thought prompting (= --prompting ... cot)")
    p.add_argument("--ood", action="store_true", help="add chain of thought with other relations' demonstrations")
    p.add_argument("--all-cases", action="store_true",
                   help="edit every case, not only those the unedited model answers")
    p.add_argument("--no-perplexity", action="store_true", help="skip the held-out perplexity column (ppl_ratio)")
    p.add_argument("--n-specificity", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    add_override_flags(p)
    p.add_argument("--preset", default=None, help="hyper-parameter preset of every edited method: tuned (the default) or "
                   "reference (the paper code's released algorithm and settings; docs/presets.md); --METHOD overrides "
                   "apply on top")
    p.add_argument("--no-monitor", action="store_true", help="skip the side-effect check on known facts and perplexity")
    p.add_argument("--out", default="results")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("main-table", help="the main table into results/main-table (with run.json)")
    p.add_argument("--models", nargs="+", default=["smollm2-135m", "toy-gptj", "toy-qwen3"])
    p.add_argument("--per-edits", type=int, default=None,
                   help="a seeded sample of this many cases per number of edits (default: every case)")
    p.add_argument("--protocols", nargs="+", default=["per-case", "batched"], choices=["per-case", "batched"])
    p.add_argument("--batch-size", type=int, default=100, help="the batched protocol's cases per batch (0 = all)")
    p.add_argument("--batched-methods", nargs="+", default=["ft", "memit", "pmet", "ace"],
                   choices=["ft", "rome", "memit", "pmet", "ace"], help="the batched protocol's rows (ROME, a "
                   "one-fact editor, is left out by default: main_table.BATCHED_METHODS)")
    p.add_argument("--batch-packing", default="contamination", choices=["plain", "contradictions", "contamination"],
                   help="which cases may not share a batch: none (MQuAKE's plain cut), two that edit one fact two "
                   "ways, or also one whose edit contaminates another's edited path (the default: each batch one write)")
    p.add_argument("--no-perplexity", action="store_true", help="skip the held-out perplexity column")
    p.add_argument("--methods", nargs="+", default=ROWS, choices=ROWS, help="the table's rows (ablations and "
                   "variants of ACE come with --no-ablations / --ace-variants)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="case samples (ACE's advantage is reported per seed)")
    p.add_argument("--out", default="results/main-table")
    p.add_argument("--no-ablations", action="store_true")
    p.add_argument("--no-cot", action="store_true")
    p.add_argument("--ace-variants", nargs="*", default=["implicit"], choices=["implicit"],
                   help="ACE with an option on, a row each: implicit = the implicit-subject write (docs/ace.md); "
                        "none when given without a value")
    p.add_argument("--preset", default=None, help="every row's hyper-parameter preset: tuned (the default) or "
                   "reference (docs/presets.md)")
    p.add_argument("--resume", action="store_true", help="continue a stopped run (or assemble shards) from the "
                   "items saved under OUT/MODEL/checkpoint")
    p.add_argument("--shard", default=None, metavar="I/N", help="run only every N-th item from the I-th (0-based), "
                   "e.g. 0/2 and 1/2 in two processes; then the same command with --resume assembles the table")
    p.add_argument("--rows-from", nargs="+", default=[], metavar="OUT", help="earlier --out folders whose model "
                   "tables of the same settings lend the rows they hold with the same hyper-parameters (not run again; "
                   "with --resume, OUT's own tables lend theirs too)")
    p.add_argument("--interim", action="store_true", help="print the table over the items saved so far by a run "
                   "in progress (its checkpoint under OUT/MODEL); runs nothing")
    p.add_argument("--readme", action="store_true", help="also write the table into README.md between its markers")
    p.add_argument("--no-readme", action="store_true", help="(the default) leave README.md alone")
    p.set_defaults(func=cmd_main_table)

    p = sub.add_parser("bridge-lag", help="does a 2-hop question's bridge entity surface before its answer? (value curves)")
    p.add_argument("--model", nargs="+", default=["toy-gptj", "toy-qwen3", "smollm2-135m"])
    p.add_argument("--cases", default=None, help="MQuAKE-format file (default: the model's own case set)")
    p.add_argument("--n-cases", type=int, default=None, help="the first N 2-hop cases (default all)")
    p.add_argument("--n-value-neurons", type=int, default=100)
    p.add_argument("--out", default="results/bridge-lag")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_bridge_lag)

    p = sub.add_parser("demo", help="the end-to-end demo on the real default model")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--out", default="outputs/demo", help="folder for figures and tables")
    p.add_argument("--device", default=None)
    p.add_argument("--quick", action="store_true", help="smaller budget (used by the tests)")
    p.set_defaults(func=cmd_demo)
    return parser


# What a library call raises for bad input (a request, a model name or folder, a case file, a hyper-parameter):
# the CLI prints these as one line. Anything else is a bug and keeps its traceback.
LIBRARY_ERRORS = (ValueError, LookupError, OSError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the hub; fail fast instead of hanging
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("choreographer", "kaleido", "httpx", "urllib3"):  # PNG export chatter
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except LIBRARY_ERRORS as e:
        if args.debug:
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"ace {args.command}: error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
