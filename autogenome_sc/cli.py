"""The ``autogenome-sc`` command line: ``search``, ``worker`` and ``predict``.

Errors a user can fix (a missing file, an unknown label column, a bad config) are printed
as one sentence on stderr with exit code 1; argparse's usage errors exit with 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Literal

from ._checks import check_key_added
from ._names import SUPERVISED_MODES
from .config._presets import PRESETS, preset_modes, with_preset

_EXAMPLES_SEARCH = """\
example:
  autogenome-sc search data.h5ad --label-key cell_type --config expert.json --out out.h5ad
  autogenome-sc search data.h5ad --label-key cell_type --study pbmc --storage postgresql://ag:ag@db/ag --out out.h5ad
"""
_EXAMPLES_WORKER = """\
example (one per process or machine; all share the study):
  autogenome-sc worker --storage postgresql://ag:ag@db/ag --study pbmc --data data.h5ad --label-key cell_type
"""


class _UserError(Exception):
    """Something the user can fix; printed as one sentence."""


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layer", default=None, help="read adata.layers[LAYER] instead of adata.X")
    p.add_argument("--use-raw", action="store_true", help="read adata.raw.X")
    p.add_argument(
        "--batch-key",
        default=None,
        help="column of adata.obs naming each cell's batch: each batch is standardised on its own cells",
    )
    p.add_argument(
        "--backed", action="store_true", help="leave the matrix on disk (anndata backed mode), read by chunks"
    )
    p.add_argument(
        "--gene-symbols",
        default=None,
        metavar="COLUMN",
        help="column of adata.var naming the genes (e.g. gene symbols where var_names are Ensembl IDs); "
        "genes are recorded and matched by it",
    )


def _add_study_args(p: argparse.ArgumentParser, *, need_study: bool) -> None:
    p.add_argument("--label-key", required=True, help="column of adata.obs to learn")
    p.add_argument(
        "--modes", nargs="+", default=None, help=f"any of {' '.join(SUPERVISED_MODES)} (default: the config's)"
    )
    p.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default=None,
        help="budget, model families and ensemble depth by one word (fast: 30 s; default: 60 s; "
        "best: 15 min); --modes, --n-trials, --timeout and --config win over it",
    )
    p.add_argument("--n-trials", type=int, default=None, help="trials the study should have in total")
    p.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    p.add_argument("--config", default=None, help="expert-mode JSON config (see docs/config_reference.md)")
    p.add_argument("--storage", default=None, help="Optuna storage URL, e.g. postgresql://user:pw@host/db")
    p.add_argument("--study", required=need_study, default=None, help="study name; the same name continues or joins it")
    p.add_argument("--run-dir", default=None, help="folder of journal files when no --storage (default ag_runs)")
    p.add_argument("--rng", type=int, default=0, help="seed (split, sampler, training); same for every worker")
    p.add_argument(
        "--genes",
        default=None,
        metavar="FILE",
        help="train on a panel: a text file of gene names (one per line) or an .h5ad query whose genes "
        "(var_names, or its --gene-symbols column) the reference is cut to",
    )
    _add_data_args(p)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``autogenome-sc``."""
    parser = argparse.ArgumentParser(
        prog="autogenome-sc", description="AutoML for single-cell data: search, distributed workers, prediction."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{search,worker,predict}")

    p = sub.add_parser(
        "search",
        help="search models on an .h5ad file and write the results",
        description="Search architectures and hyperparameters (ag.tl.search), evaluate the winner on the "
        "test split, save the model and write the annotated data.",
        epilog=_EXAMPLES_SEARCH,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data", help="input .h5ad file")
    _add_study_args(p, need_study=False)
    p.add_argument("--key-added", default="ag", help="prefix of the keys written (default ag)")
    p.add_argument("--out", required=True, help="output .h5ad file")

    p = sub.add_parser(
        "worker",
        help="run trials of a shared study (no evaluation, no output file)",
        description="Join a study and run trials until it has --n-trials trials (or --timeout passes). "
        "Start one per process or machine; finish with `autogenome-sc search` on the same study.",
        epilog=_EXAMPLES_WORKER,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, help="input .h5ad file (the same for every worker)")
    _add_study_args(p, need_study=True)
    p.add_argument(
        "--worker-index", type=int, default=None, help="distinct per worker; seeds its sampler (default: the pid)"
    )

    p = sub.add_parser(
        "predict",
        help="label an .h5ad file with a saved model",
        description="Label the cells of an .h5ad file with a saved model (ag.tl.predict).",
    )
    p.add_argument("data", help="input .h5ad file")
    p.add_argument("--model", required=True, help="model directory written by search or train")
    p.add_argument("--key-added", default="ag", help="prefix of the keys written (default ag)")
    p.add_argument("--out", required=True, help="output .h5ad file")
    p.add_argument(
        "--reject",
        default=None,
        metavar="P|auto",
        help="label 'Unassigned' the cells with confidence below P, or unlike the reference; 'auto': by "
        "ag_uncertainty alone, about 5%% of cells like the reference (see ag.tl.predict)",
    )
    p.add_argument(
        "--query-aware",
        action="store_true",
        help="ag_uncertainty also reads the query as a whole, to tell cells of types the reference lacks "
        "(see ag.tl.predict's query_aware)",
    )
    _add_data_args(p)
    return parser


def _read(path: str, backed: bool = False):
    import anndata

    p = Path(path)
    if not p.is_file():
        raise _UserError(f"Data file '{path}' does not exist.")
    try:
        return anndata.read_h5ad(p, backed="r" if backed else None)
    except Exception as e:  # noqa: BLE001 - any reader error means the file is not usable
        raise _UserError(f"Cannot read '{path}' as .h5ad ({type(e).__name__}).") from None


def _check_out(path: str) -> None:
    """The output file, checked before any work: a file name in an existing folder, not a folder."""
    out = Path(path)
    if not path.strip() or out.is_dir() or path.endswith(("/", os.sep)):
        raise _UserError(f"--out '{path}' is a folder; give the path of the .h5ad file to write.")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise _UserError(f"Output folder '{parent}' does not exist.")


def _check_label(adata, key: str, path: str) -> None:
    if key not in adata.obs.columns:
        cols = ", ".join(map(str, adata.obs.columns[:10]))
        raise _UserError(f"Label key '{key}' is not a column of adata.obs in '{path}' (columns: {cols}).")


def _panel_genes(path: str | None, gene_symbols: str | None) -> list[str] | None:
    """The gene names of ``--genes``: a text file (one per line, ``#`` comments) or an .h5ad query's genes."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise _UserError(f"--genes '{path}' is not a file (a text file of gene names, or an .h5ad query).")
    if p.suffix == ".h5ad":
        query = _read(path, backed=True)  # only .var is read
        try:
            if gene_symbols is not None and gene_symbols in query.var.columns:
                names = query.var[gene_symbols].astype(str).tolist()
            else:
                names = query.var_names.astype(str).tolist()
        finally:
            query.file.close()
    else:
        try:
            text = p.read_text()
        except UnicodeDecodeError:
            raise _UserError(f"--genes '{path}' is neither an .h5ad file nor a text file of gene names.") from None
        names = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not names:
        raise _UserError(f"--genes '{path}' names no genes.")
    return names


def _search(args) -> None:
    import autogenome_sc as ag

    _check_out(args.out)
    check_key_added(args.key_added, "--key-added")
    genes = _panel_genes(args.genes, args.gene_symbols)
    adata = _read(args.data, args.backed)
    _check_label(adata, args.label_key, args.data)
    ag.tl.search(
        adata,
        args.label_key,
        modes=args.modes,
        preset=args.preset,
        n_trials=args.n_trials,
        timeout=args.timeout,
        layer=args.layer,
        use_raw=args.use_raw,
        batch_key=args.batch_key,
        gene_symbols=args.gene_symbols,
        genes=genes,
        key_added=args.key_added,
        config=args.config,
        storage=args.storage,
        study_name=args.study,
        run_dir=args.run_dir,
        rng=args.rng,
    )
    adata.write_h5ad(args.out)
    best = adata.uns[args.key_added]["best"]
    m = adata.uns[args.key_added]["metrics"]
    score = f"test accuracy {m['accuracy']:.3f}" if "accuracy" in m else f"test R2 {m.get('r2', float('nan')):.3f}"
    print(
        f"best trial {best['trial']} ({best['mode']}); {score}; "
        f"model {adata.uns[args.key_added]['model_path']}; wrote {args.out}"
    )


def _worker(args) -> None:
    import autogenome_sc as ag
    from autogenome_sc.search import Budget, open_study

    genes = _panel_genes(args.genes, args.gene_symbols)
    adata = _read(args.data, args.backed)
    _check_label(adata, args.label_key, args.data)
    budget_given = args.n_trials is not None or args.timeout is not None
    cfg = with_preset(ag.config.validate(args.config), args.preset, budget_given=budget_given)
    opened = open_study(
        adata,
        args.label_key,
        cfg=cfg,
        modes=args.modes,
        n_trials=args.n_trials,
        timeout=args.timeout,
        layer=args.layer,
        use_raw=args.use_raw,
        split_key=None,
        storage=args.storage,
        study_name=args.study,
        run_dir=args.run_dir,
        rng=args.rng,
        worker_index=args.worker_index if args.worker_index is not None else os.getpid(),
        batch_key=args.batch_key,
        gene_symbols=args.gene_symbols,
        genes=genes,
        preset_modes=preset_modes(args.preset),
    )
    s = opened.searcher
    s.run(opened.n_trials, Budget.of(opened.timeout, opened.cfg.search))
    if s.stopped_by_failures is not None:
        raise RuntimeError(f"worker {os.getpid()} stopped: {s.stopped_by_failures}.")
    trials = s.study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in sorted(states.items()))
    print(f"worker {os.getpid()} done; study '{args.study}' has {len(trials)} trials ({summary})")


def _predict(args) -> None:
    import autogenome_sc as ag

    _check_out(args.out)
    check_key_added(args.key_added, "--key-added")
    reject = _reject(args.reject)
    adata = _read(args.data, args.backed)
    ag.tl.predict(  # without --use-raw or --layer: the matrix the model was trained on, when the file has it
        adata, args.model, layer=args.layer, use_raw=args.use_raw or None, batch_key=args.batch_key,
        gene_symbols=args.gene_symbols, key_added=args.key_added, reject=reject, query_aware=args.query_aware,
    )  # fmt: skip
    adata.write_h5ad(args.out)
    print(f"labelled {adata.n_obs} cells with '{args.model}'; wrote {args.out}")


def _reject(value: str | None) -> float | Literal["auto"] | None:
    """``--reject``: ``"auto"`` or a number (its range is ag.tl.predict's to check), else a one-sentence error."""
    if value is None:
        return None
    if value == "auto":
        return "auto"
    try:
        return float(value)
    except ValueError:
        raise _UserError(f"--reject must be a probability in (0, 1) or 'auto', not {value!r}.") from None


def _sentence(e: BaseException) -> str:
    """The message of ``e``; a bare word (a KeyError's key, a codec's name) gets its kind said."""
    msg = str(e.args[0]) if e.args else ""
    if " " not in msg.strip():  # not a sentence of ours: say what kind of failure it was
        return f"{type(e).__name__} {msg!r}" if msg else type(e).__name__
    return msg


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``autogenome-sc``; returns the exit code."""
    args = build_parser().parse_args(argv)
    run = {"search": _search, "worker": _worker, "predict": _predict}[args.command]
    try:
        run(args)
    except _UserError as e:
        print(f"autogenome-sc: error: {e}", file=sys.stderr)
        return 1
    except (KeyError, ValueError, TypeError, OSError) as e:
        print(f"autogenome-sc: error: {_sentence(e)}", file=sys.stderr)
        return 1
    except (ConnectionError, ImportError, RuntimeError) as e:
        print(f"autogenome-sc: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("autogenome-sc: interrupted; run the same command again to continue the study.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
