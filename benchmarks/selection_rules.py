"""Selection rules replayed offline: which rule's choice does best on the test fold, apart from time noise.

``run``: for each data set and fold of ``benchmarks/accuracy.py`` (the same 5 folds, the same
validation ninth), one search with a fixed number of trials and no timeout (so the same
machine gives the same trials: no time noise), each in a fresh process. Every configuration the
search cross-validated is kept: its out-of-fold outputs on train + validation (what every rule
chooses on) and the test-fold outputs of its final model, its fold models at the epoch the
cross-validation chose (``search.final = "bag"``). One ``<data>_fold<f>.npz`` per search in
``--out``; folds already there are skipped, so a stopped run resumes.

``report``: replays every rule of :data:`RULES` on those outputs (``choose`` of
``autogenome_sc/search/_choose.py``, as the search calls it), and the ensembles of
:data:`BUILT` (built otherwise than the package's greedy selection on the loss, each kept only
where the default rule prefers it to the best single configuration), and scores what each would have
built on the test fold: mean test accuracy / macro-F1 over the folds per data set, and, pooled
over every fold, the test cells each rule gets right that the default gets wrong and the
reverse. The test fold never enters a choice; ``best single on test`` (the configuration with
the best test accuracy, chosen with hindsight) is the ceiling of a rule that chooses one
configuration (an ensemble can pass it). ``--details`` prints what each rule chose in each fold.

Cost: the trials, then each cross-validated configuration's folds twice (once to score them,
once more to stop at the chosen epoch, as the final model does). On 2 busy cores a fold of ALL
(126 x 12,625) with 12 trials took about 4 minutes; on HSMM (47,192 genes) 20 trials alone took
25 minutes, wide MLPs 3-7 minutes each, so the wide sets want fewer trials or narrower spaces
(``--config``).

``--timeout`` (with ``--n-trials 0``) runs each search as a user does, for that many seconds:
the trials then differ from machine to machine, but every rule still chooses among the same ones.

Run (from the repository root)::

    PYTHONPATH=. python benchmarks/selection_rules.py run --datasets hsmm,all --n-trials 20 --out rules
    PYTHONPATH=. python benchmarks/selection_rules.py run --n-trials 0 --timeout 60 --out rules60
    PYTHONPATH=. python benchmarks/selection_rules.py report rules [--details]

``--config`` passes an expert config (JSON text) to the searches, e.g.
``'{"search": {"cv_configs": 5}}'`` to cross-validate more configurations. Not run by CI.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.special import softmax
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).resolve().parent))  # accuracy.py: the data sets and their folds

import accuracy  # noqa: E402

import autogenome_sc as ag  # noqa: E402
from autogenome_sc.search._choose import (  # noqa: E402
    ALONE,
    Scored,
    best_single,
    choose,
    greedy_weights,
    probs_loss,
    scores,
    stack_block,
    stack_features,
    stacked,
)

#: name -> (search.select_by, members tempered, standard errors of "within_noise", most members of an ensemble).
RULES: dict[str, tuple[str, bool, float, int]] = {
    "accuracy_f1": ("accuracy_f1", True, 1.0, 3),
    "accuracy_f1, untempered": ("accuracy_f1", False, 1.0, 3),
    "accuracy_f1, single only": ("accuracy_f1", True, 1.0, 1),
    "loss": ("loss", True, 1.0, 3),
    "loss_or_accuracy": ("loss_or_accuracy", True, 1.0, 3),
    "within_noise (1 SE)": ("within_noise", True, 1.0, 3),
}
#: Ensembles built otherwise than the package's greedy selection on the loss, each kept (as the package keeps its
#: own) only where ``accuracy_f1`` prefers it to the best single configuration: name -> (how, most members).
#: ``score``: greedy selection on the mean of accuracy and macro-F1 (ties by the loss); ``families``: the plain
#: average of the best configuration of each of the 2..m best families, the best of those by the score;
#: ``families, always``: the plain average of the best of the two best families, kept whatever it scores.
BUILT: dict[str, tuple[str, int]] = {
    "ensemble by score": ("score", 3),
    "families": ("families", 3),
    "families, always": ("families_always", 2),
}
DEFAULT = "accuracy_f1"
#: The default's choice, or the stack of the package (``stacked``) where its nested out-of-fold score beats the
#: choice's by more than the margin (``search.stack_margin``): name -> margin.
STACKS: dict[str, float] = {"default + stack": 0.005, "default + stack, any margin": 0.0}


# ------------------------------------------------------------------------------------ run
def _search_fold(
    name: str, f: int, n_trials: int | None, timeout: float | None, config: dict | None, out: str, tmp: str
) -> str:
    """One fold's search (in a fresh process): every cross-validated configuration's outputs, saved to ``out``."""
    from autogenome_sc.search import run_search

    ag.settings.verbosity = 0
    ag.settings.progress_bar = False
    a, key, _ = accuracy.fold_split(name, f)
    cfg = ag.config.validate(config)
    outcome = run_search(
        a, key, cfg=cfg, n_trials=n_trials, timeout=timeout, split_key="fold", run_dir=Path(tmp) / "runs",
        study_name=f"{name}{f}", rng=0,
    )  # fmt: skip
    arrays = collect(outcome)
    arrays["max_members"] = np.asarray(cfg.search.ensemble)
    arrays["select_by"] = np.asarray(cfg.search.select_by)
    path = Path(out) / f"{name}_fold{f + 1}.npz"
    np.savez_compressed(path, **arrays)
    return str(path)


def collect(outcome) -> dict[str, np.ndarray]:
    """What the rules are replayed on: each scored configuration's held-out outputs and its final model's test outputs.

    As ``final_model`` builds it: after a cross-validation, a solved family (and every
    configuration under ``search.final = "refit"``) trained once more on train + validation
    (``_refit``), any other its fold models at the chosen epoch (trained again where they ran
    longer, with the same keys: ``_bag``); on the validation split, the trial's own model.
    """
    from autogenome_sc.search._driver import outputs_of
    from autogenome_sc.search._final import _bag, _refit
    from autogenome_sc.search._spaces import is_solved

    sel, searcher = outcome.selection, outcome.searcher
    test = searcher.data.idx["test"]
    folds = sel.scored[0].folds
    arrays = {
        "y": np.asarray(sel.y, np.int64),
        "y_test": np.asarray(searcher.data.y[test], np.int64),
        "folds": np.zeros(0, np.int64) if folds is None else np.asarray(folds, np.int64),
        "method": np.asarray(sel.method),
        "chosen": np.asarray(sel.chosen),
        "weights": np.asarray(sel.weights, np.float64),
        "modes": np.asarray([s.mode for s in sel.scored]),
        "trials": np.asarray([s.trial for s in sel.scored], np.int64),
        "epochs": np.asarray([s.epochs[0] for s in sel.scored], np.int64),
        "n_trials": np.asarray(searcher.n_counted()),
    }
    final = outcome.cfg.search.final
    for i, s in enumerate(sel.scored):
        if sel.method != "cv":
            fits = s.fits
        elif final == "refit" or is_solved(s.mode):
            fits = [_refit(searcher, s)]  # as final_model builds it: the solved families on every training cell
        else:
            fits = _bag(searcher, s)
        arrays[f"held_{i}"] = np.asarray(s.held_out, np.float32)
        arrays[f"test_{i}"] = np.stack([np.asarray(outputs_of(fit, test), np.float32) for fit in fits])
    return arrays


def run(
    datasets: list[str], folds: list[int], n_trials: int | None, timeout: float | None, config: dict | None, out: Path
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        for name in datasets:
            if accuracy.DATASETS[name]() is None:
                print(f"{name}: not found in {accuracy.DEVDATA}; skipped", flush=True)
                continue
            for f in folds:
                if (out / f"{name}_fold{f}.npz").exists():
                    continue
                with ctx.Pool(1) as pool:  # a fresh process per search, as in accuracy.py
                    path = pool.apply(_search_fold, (name, f - 1, n_trials, timeout, config, str(out), tmp))
                print(f"{name} fold {f}: {path}", flush=True)


# ------------------------------------------------------------------------------------ replay
def replay(rec, rule: str) -> tuple[np.ndarray, str, np.ndarray]:
    """(weights, "single" | "ensemble", test predictions) of ``rule`` on one saved search."""
    by, temper, z, max_members = RULES[rule]
    y = rec["y"]
    n_out = rec["held_0"].shape[1]
    folds = rec["folds"] if len(rec["folds"]) else None
    scored = []
    for i, (mode, trial) in enumerate(zip(rec["modes"], rec["trials"], strict=True)):
        s = Scored(int(trial), str(mode), [], rec[f"held_{i}"], [0], 0.0, folds)
        s.score_on(y, "classification", n_out, temper=temper)
        scored.append(s)
    w, chosen, _ = choose(scored, y, "classification", min(max_members, int(rec["max_members"])), by, z=z)
    return w, chosen, test_prediction(rec, w, [s.temperature for s in scored] if chosen == "ensemble" else None)


def _scored(rec) -> list[Scored]:
    y, n_out = rec["y"], rec["held_0"].shape[1]
    folds = rec["folds"] if len(rec["folds"]) else None
    out = []
    for i, (mode, trial) in enumerate(zip(rec["modes"], rec["trials"], strict=True)):
        s = Scored(int(trial), str(mode), [], rec[f"held_{i}"], [0], 0.0, folds)
        s.score_on(y, "classification", n_out)
        out.append(s)
    return out


def replay_built(rec, rule: str) -> tuple[np.ndarray, str, np.ndarray]:
    """(weights, "single" | "ensemble", test predictions) of an ensemble of :data:`BUILT` against the best single one."""
    how, max_members = BUILT[rule]
    y = rec["y"]
    scored = _scored(rec)
    held = [s.scores for s in scored]
    n, n_out = len(scored), rec["held_0"].shape[1]
    best = best_single(held, y, "accuracy_f1")
    joins = [i for i, s in enumerate(scored) if s.mode not in ALONE]
    probs = {i: softmax(scored[i].tempered, axis=1) for i in joins}
    folds = scored[0].folds

    def judged(w: np.ndarray):
        mix = sum(w[i] * probs[i] for i in joins if w[i] > 0)
        return scores(mix, y, "classification", n_out, loss=probs_loss(mix, y), folds=folds)

    cands: list[np.ndarray] = []
    if how == "score" and len(joins) >= 2:

        def neg_score(p):
            sc = scores(p, y, "classification", n_out, loss=probs_loss(p, y))
            return -sc.score + 1e-4 * sc.loss

        wj = greedy_weights([probs[i] for i in joins], neg_score, max_members)
        w = np.zeros(n)
        w[joins] = wj
        cands.append(w)
    if how.startswith("families"):
        tops: dict[str, int] = {}
        for i in sorted(joins, key=lambda i: (-held[i].score, held[i].loss)):
            tops.setdefault(scored[i].mode, i)
        order = list(tops.values())
        for m in range(2, min(max_members, len(order)) + 1):
            w = np.zeros(n)
            w[order[:m]] = 1.0 / m
            cands.append(w)
    cands = [w for w in cands if (w > 0).sum() >= 2]
    if not cands:
        return np.eye(n)[best], "single", test_prediction(rec, np.eye(n)[best], None)
    judged_c = [(judged(w), w) for w in cands]
    sc_best, w_best = max(judged_c, key=lambda t: (t[0].score, -t[0].loss))
    if (
        how == "families_always"
        or sc_best.score > held[best].score
        or (sc_best.score == held[best].score and sc_best.loss < held[best].loss - 1e-6)
    ):
        return w_best, "ensemble", test_prediction(rec, w_best, [s.temperature for s in scored])
    return np.eye(n)[best], "single", test_prediction(rec, np.eye(n)[best], None)


def replay_stack(rec, rule: str) -> tuple[np.ndarray, str, np.ndarray]:
    """(weights, "single" | "ensemble" | "stack", test predictions) of the default with the stack of :data:`STACKS`."""
    w, chosen, pred = replay(rec, DEFAULT)
    scored = _scored(rec)
    y, n_out = rec["y"], rec["held_0"].shape[1]
    st = stacked(scored, y, n_out) if len(rec["folds"]) else None
    if st is None:
        return w, chosen, pred
    mix = sum(w[i] * softmax(scored[i].tempered, axis=1) for i in range(len(w)) if w[i] > 0)
    if st.scores.score <= scores(mix, y, "classification", n_out).score + STACKS[rule]:
        return w, chosen, pred
    # the final model's groups: each member's test outputs (its refit, or its fold models averaged)
    blocks = [
        stack_block(rec[f"test_{i}"].astype(np.float64) / scored[i].temperature, scored[i].mode) for i in st.members
    ]
    w = np.zeros(len(scored))
    w[st.members] = 1.0 / len(st.members)
    return w, "stack", (stack_features(blocks) @ st.coef + st.intercept).argmax(axis=1)


def test_prediction(rec, weights: np.ndarray, temperatures: list[float] | None) -> np.ndarray:
    """What the final model built from ``weights`` predicts on the test fold: the weighted mean of member probabilities."""
    mix = 0.0
    for i, w in enumerate(weights):
        if w > 0:
            t = 1.0 if temperatures is None else temperatures[i]
            mix = mix + w * softmax(rec[f"test_{i}"].astype(np.float64) / t, axis=2).mean(axis=0)
    return np.asarray(mix).argmax(axis=1)


def _hindsight(rec) -> np.ndarray:
    """The test predictions of the configuration with the best test accuracy (the ceiling of a single choice)."""
    n = len(rec["modes"])
    preds = [test_prediction(rec, np.eye(n)[i], None) for i in range(n)]
    return max(preds, key=lambda p: (p == rec["y_test"]).mean())


def _family(rec, w: np.ndarray, chosen: str) -> str:
    names = [str(rec["modes"][i]) for i in np.argsort(-w) if w[i] > 0]
    names = list(dict.fromkeys("rrfcn" if m == "enas" else m for m in names))
    form = "stack of " if chosen == "stack" else "ensemble of "
    return names[0] if chosen == "single" or len(names) < 2 else form + "+".join(names)


def report(paths: list[Path], details: bool) -> None:
    files = sorted(p for d in paths for p in (sorted(d.glob("*.npz")) if d.is_dir() else [d]))
    results: dict[str, dict[str, list]] = {}  # data set -> rule -> [(fold, right per cell, macro-F1, family)]
    for path in files:
        name, fold = path.stem.rsplit("_fold", 1)
        rec = dict(np.load(path))
        y_test = rec["y_test"]
        got = {rule: replay(rec, rule) for rule in RULES} | {rule: replay_built(rec, rule) for rule in BUILT}
        got |= {rule: replay_stack(rec, rule) for rule in STACKS}
        if str(rec["select_by"]) == DEFAULT and not np.allclose(got[DEFAULT][0], rec["weights"]):
            print(f"{path.name}: the replayed default chose {got[DEFAULT][0]}, the search {rec['weights']}")
        per = results.setdefault(name, {})
        for rule, (w, chosen, pred) in got.items():
            per.setdefault(rule, []).append((int(fold), pred == y_test, _f1(y_test, pred), _family(rec, w, chosen)))
        best = _hindsight(rec)
        per.setdefault("best single on test", []).append((int(fold), best == y_test, _f1(y_test, best), "(hindsight)"))
    print("mean test accuracy / macro-F1 over folds of what each rule chose\n")
    print(_table(results))
    print("\ncells right where the default (accuracy_f1) is wrong / wrong where it is right, pooled over folds\n")
    print(_paired(results))
    if details:
        print("\nwhat each rule chose, per fold\n")
        print(_details(results))


def _f1(y: np.ndarray, pred: np.ndarray) -> float:
    return float(f1_score(y, pred, average="macro"))


def _rules(results: dict) -> list[str]:
    return [*RULES, *BUILT, *STACKS, "best single on test"]


def _table(results: dict) -> str:
    rules = _rules(results)
    lines = ["| data | folds | " + " | ".join(rules) + " |", "| --- | --- |" + " --- |" * len(rules)]
    for name, per in results.items():
        cells = []
        for rule in rules:
            runs = per[rule]
            acc, f1 = np.mean([r[1].mean() for r in runs]), np.mean([r[2] for r in runs])
            cells.append(f"{acc:.3f} / {f1:.3f}")
        lines.append(f"| {name} | {len(per[DEFAULT])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _paired(results: dict) -> str:
    rules = [r for r in _rules(results) if r != DEFAULT]
    lines = ["| data | " + " | ".join(rules) + " |", "| --- |" + " --- |" * len(rules)]
    for name, per in results.items():
        base = np.concatenate([r[1] for r in per[DEFAULT]])
        cells = []
        for rule in rules:
            right = np.concatenate([r[1] for r in per[rule]])
            cells.append(f"+{int((right & ~base).sum())} / -{int((base & ~right).sum())}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _details(results: dict) -> str:
    lines = ["| data | fold | rule | test accuracy | macro-F1 | chose |", "| --- | --- | --- | --- | --- | --- |"]
    for name, per in results.items():
        for rule, runs in per.items():
            for fold, right, f1, family in sorted(runs, key=lambda r: r[0]):
                lines.append(f"| {name} | {fold} | {rule} | {right.mean():.3f} | {f1:.3f} | {family} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the searches and keep every cross-validated configuration's outputs")
    r.add_argument("--datasets", default=",".join(accuracy.DATASETS))
    r.add_argument("--folds", default="1,2,3,4,5")
    r.add_argument("--n-trials", type=int, default=20, help="trials per search (0: as many as --timeout allows)")
    r.add_argument(
        "--timeout", type=float, default=None, help="seconds per search, as a user runs it (time noise included)"
    )
    r.add_argument("--config", default=None, help="expert config (JSON text) for the searches")
    r.add_argument("--out", required=True, type=Path)
    s = sub.add_parser("report", help="replay every rule on saved searches and print the tables")
    s.add_argument("paths", nargs="+", type=Path, help="folders of .npz files (or files)")
    s.add_argument("--details", action="store_true")
    args = p.parse_args()
    if args.command == "run":
        config = json.loads(args.config) if args.config else None
        folds = [int(f) for f in args.folds.split(",")]
        run(args.datasets.split(","), folds, args.n_trials or None, args.timeout, config, args.out)
    else:
        report(args.paths, args.details)


if __name__ == "__main__":
    main()
