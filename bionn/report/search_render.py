"""Rendering a search's report in its four formats: the markdown of its trials (printed, before
summary.md's table), search.csv, best.yaml and search.png, and writing them (write_search).

    search.csv   one row per trial: complete trials best first (by the study's direction), then the
                 trials without a value (pruned, failed, running, waiting) by number
    best.yaml    the best complete trial as a primary config:
                 python train.py --config-dir <sweep folder> --config-name best [more overrides]
    search.png   the objective over trial number (best so far as a line) and against each parameter

best.yaml is `defaults: [train, override <group>: <option>..., _self_]` followed by the
trial's composed, unresolved config (trials/<n>/.hydra/config.yaml). The groups are the
trial's config-group choices: those of its own overrides, and those the search's config
(hparams_search/<name>) or an experiment made, as the trial's .hydra/hydra.yaml records them.
Only the hparams_search choice is left out (it would make the run a search again). Training
from it has the trial's ledger fingerprint: the same result-deciding config.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import yaml

from bionn.io import atomic_write_bytes, figure, write_figure
from bionn.report.read import quiet, read_yaml
from bionn.report.render import markdown_table
from bionn.report.search import SearchSummary, TrialRow, read_search
from bionn.run_folder import HYDRA, RunFolderError
from bionn.search.folder import STUDY_NAME
from bionn.search.space import Param, SearchError

SEARCH_FILES = ("search.csv", "best.yaml", "search.png")
SEARCH_GROUP = "hparams_search"

# ---- table and csv -------------------------------------------------------------------------


def value_text(row: TrialRow) -> str:
    """A trial's value as shown: "0.9123", "0.8 (pruned at epoch 3)" or "-"."""
    if row.value is None:
        return "-"
    text = f"{row.value:.4g}"
    return f"{text} (pruned at epoch {row.value_epoch + 1})" if row.pruned_value else text


def trial_table(summary: SearchSummary) -> tuple[list[str], list[list[str]]]:
    """The headers and rows of the table of trials: number, state, value, each searched key, epochs."""
    keys = list(summary.params) or list(dict.fromkeys(k for t in summary.trials for k in t.params))
    headers = ["trial", "state", summary.metric, *keys, "epochs", "run folder"]
    rows = [
        [
            str(t.number),
            t.state,
            value_text(t),
            *(_param_text(t.params.get(k)) for k in keys),
            "-" if t.epochs is None else str(t.epochs),
            t.run_dir,
        ]
        for t in summary.trials
    ]
    return headers, rows


def render_search_markdown(summary: SearchSummary, best_in: Path | None = None) -> str:
    """The search's part of the report; best_in: the folder best.yaml was written in (None: not written)."""
    counts = summary.counts()
    of = f" of {summary.n_trials}" if summary.n_trials is not None else ""
    parts = [
        f"# Search: {summary.root}",
        "",
        f"Objective: {summary.metric} ({summary.direction}); {len(summary.trials)}{of} trial(s): "
        + (", ".join(f"{n} {s}" for s, n in counts.items()) or "none"),
    ]
    best = summary.best
    if best is not None:
        parts.append(f"Best: trial {best.number}, {summary.metric} = {best.value:.4g} ({best.run_dir})")
        if best_in is not None:
            parts.append(f"Its config: {Path(best_in) / 'best.yaml'}; train it again with")
            parts.append(f"    {best_command(best_in)} [more overrides]")
    parts += ["", markdown_table(*trial_table(summary))]
    if any(t.pruned_value for t in summary.trials):
        parts += ["", f"A pruned trial's {summary.metric} is its last reported (validation) value."]
    failed = [t for t in summary.trials if t.state == "failed"]
    if failed:
        parts += ["", "## Failed trials", ""]
        parts += [f"- trial {t.number}: {t.error or 'no error message'} ({t.run_dir})" for t in failed]
    unread = [(f"trial {t.number}", p) for t in summary.trials for p in t.problems]
    unread += [("search", n) for n in summary.notes]
    if unread:
        parts += ["", "## Could not read", ""] + [f"- {name}: {problem}" for name, problem in unread]
    return "\n".join(parts) + "\n"


def render_search_csv(summary: SearchSummary) -> str:
    """One row per trial, in the table's order; a column per searched key."""
    keys = list(summary.params) or list(dict.fromkeys(k for t in summary.trials for k in t.params))
    columns = ["number", "state", "objective", "objective_source", "metric", *keys]
    columns += ["epochs", "run_dir", "worker", "error", "unreadable"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for t in summary.trials:
        source = "final" if t.state == "complete" and t.value is not None else ""
        if t.pruned_value:
            source = f"last reported (epoch {t.value_epoch + 1})"
        cells = {
            "number": t.number,
            "state": t.state,
            "objective": "" if t.value is None else repr(t.value),
            "objective_source": source,
            "metric": summary.metric,
            **{k: t.params.get(k, "") for k in keys},
            "epochs": "" if t.epochs is None else t.epochs,
            "run_dir": t.run_dir,
            "worker": "" if t.worker is None else t.worker,
            "error": t.error,
            "unreadable": "; ".join(t.problems),
        }
        writer.writerow(cells)
    return buffer.getvalue()


def _param_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# ---- best.yaml ---------------------------------------------------------------------------


def best_command(root: Path) -> str:
    """The command that trains best.yaml in `root` again."""
    return f"python train.py --config-dir {Path(root).resolve()} --config-name best"


def render_best_yaml(summary: SearchSummary, out: Path | None = None) -> str:
    """best.yaml of the best complete trial; SearchError naming the file when its run folder cannot
    give it (no trial complete, no .hydra/config.yaml, no record of the config groups)."""
    best = summary.best
    if best is None:
        raise SearchError(f"{summary.root}: no complete trial yet, so no best.yaml")
    run = summary.root / best.run_dir
    config_file = run / HYDRA / "config.yaml"
    try:
        config_text = config_file.read_text()
        config = yaml.safe_load(config_text)
    except (OSError, yaml.YAMLError) as err:
        raise SearchError(f"{config_file}: unreadable ({type(err).__name__}), so no best.yaml") from None
    if not isinstance(config, dict) or "defaults" in config:
        raise SearchError(f"{config_file}: not a composed config (hand-edited?), so no best.yaml")
    overrides = best.overrides or quiet(lambda: read_yaml(run / HYDRA / "overrides.yaml")) or []
    defaults = ["train", *group_overrides(run, [str(o) for o in overrides]), "_self_"]
    header = [
        f"# The best trial of the search in {Path(summary.root).resolve()} (study {STUDY_NAME!r}, "
        f"written by bionn-report):",
        f"# trial {best.number}, {summary.metric} = {best.value!r} ({summary.direction}), "
        f"run folder {best.run_dir}",
        f"# its overrides: {' '.join(str(o) for o in overrides)}",
        f"# Train it again: {best_command(out or summary.root)} [more overrides]",
        "# Below the defaults: the trial's composed config (its .hydra/config.yaml, unresolved).",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump({"defaults": defaults}, sort_keys=False) + config_text


def group_overrides(run: Path, overrides: list[str]) -> list[str | dict]:
    """`override <group>: <option>` entries for the trial's config-group choices: its own group
    overrides, then the other groups its Hydra config chose (e.g. model: TR, chosen by the search's
    config), except hparams_search, Hydra's own groups and groups left empty (optional, null)."""
    hydra_file = run / HYDRA / "hydra.yaml"
    try:
        hydra_cfg = read_yaml(hydra_file) or {}
    except RunFolderError as err:
        raise SearchError(f"{err}, so the trial's config groups are unknown; no best.yaml") from None
    runtime = ((hydra_cfg.get("hydra") or {}) if isinstance(hydra_cfg, dict) else {}).get("runtime")
    choices = runtime.get("choices") if isinstance(runtime, dict) else None
    if not isinstance(choices, dict):
        raise SearchError(
            f"{hydra_file}: no hydra.runtime.choices, so the trial's config groups are unknown; no best.yaml"
        )
    chosen = {str(k): v for k, v in choices.items()}
    appended = set()  # +group=option: a group train.yaml does not list is appended, not overridden
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") in chosen and not key.startswith("~"):
            chosen[key.lstrip("+")] = value
            if key.startswith("+"):
                appended.add(key.lstrip("+"))
    return [
        {group if group in appended else f"override {group}": option}
        for group, option in chosen.items()
        if group != SEARCH_GROUP and not group.startswith("hydra/") and option not in (None, "null")
    ]


# ---- search.png --------------------------------------------------------------------------

COLORS = {"complete": "tab:blue", "pruned": "tab:orange", "failed": "tab:red", "running": "tab:green"}


def write_search_png(summary: SearchSummary, path: Path) -> None:
    """search.png at `path`: the objective over trial number (points per state, best so far as a line) and
    against each searched parameter (log x-axis for a log-scale one, one position per choice)."""
    params = summary.params or {k: None for t in summary.trials for k in t.params}
    panels = 1 + len(params)
    cols = min(panels, 3)
    rows = math.ceil(panels / cols)
    fig, axes = figure(nrows=rows, ncols=cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    flat = list(axes.flat)
    valued = [t for t in summary.trials if t.value is not None and math.isfinite(t.value)]
    _over_trials_panel(flat[0], summary, valued)
    for ax, (key, param) in zip(flat[1:], params.items(), strict=False):
        _param_panel(ax, key, param, valued, summary.metric)
    for ax in flat[panels:]:
        ax.set_visible(False)
    fig.tight_layout()
    write_figure(fig, path)


def _over_trials_panel(over: Any, summary: SearchSummary, valued: list[TrialRow]) -> None:
    """The objective over trial number: a point per trial with a value, the best so far as a step line."""
    from matplotlib.ticker import MaxNLocator

    for state, color in COLORS.items():
        points = [t for t in valued if t.state == state]
        if points:
            label = state + (" (last reported)" if state == "pruned" else "")
            over.scatter(
                [t.number for t in points], [t.value for t in points], color=color, label=label, s=25
            )
    complete = sorted((t for t in valued if t.state == "complete"), key=lambda t: t.number)
    if complete:
        pick = max if summary.direction == "maximize" else min
        best, xs, ys = None, [], []
        for t in complete:
            best = t.value if best is None else pick(best, t.value)
            xs.append(t.number)
            ys.append(best)
        last = max(t.number for t in summary.trials)
        if last > xs[-1]:  # the best so far holds up to the newest trial
            xs, ys = [*xs, last], [*ys, ys[-1]]
        over.step(xs, ys, where="post", color="black", linewidth=1, label="best so far")
    over.xaxis.set_major_locator(MaxNLocator(integer=True))
    over.set_xlabel("trial")
    over.set_ylabel(summary.metric)
    over.set_title(f"{summary.metric} over trials ({summary.direction})")
    over.grid(alpha=0.3)
    if valued:
        over.legend(fontsize=7)


def _param_panel(ax: Any, key: str, param: Param | None, trials: list[TrialRow], metric: str) -> None:
    points = [t for t in trials if key in t.params]
    choices = list(param.choices) if param is not None and param.kind == "choice" else None
    if choices is None and any(isinstance(t.params[key], str | bool) for t in points):
        choices = list(dict.fromkeys(t.params[key] for t in points))
    for state, color in COLORS.items():
        mine = [t for t in points if t.state == state]
        if not mine:
            continue
        xs = [choices.index(t.params[key]) if choices else t.params[key] for t in mine]
        ax.scatter(xs, [t.value for t in mine], color=color, s=25)
    if choices:
        ax.set_xticks(range(len(choices)), [str(c) for c in choices])
        ax.set_xlim(-0.5, len(choices) - 0.5)
    elif param is not None and param.log:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap on a short range
    elif param is not None and param.kind == "int":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(key.rsplit(".", 1)[-1] if len(key) > 28 else key)
    ax.set_ylabel(metric)
    ax.set_title(key, fontsize=9)
    ax.grid(alpha=0.3)


def write_search(root: Path, out: Path) -> str:
    """search.csv, best.yaml and search.png of the search in `root`, written into `out`; returns the
    markdown of the trials. A plot or best.yaml that cannot be made becomes a note, never an error."""
    summary = read_search(root)
    try:
        write_search_png(summary, out / "search.png")
    except Exception as err:  # a plot must not hide the table
        summary.notes.append(f"search.png not written ({type(err).__name__}: {err})")
    best_written = False
    if summary.best is not None:
        try:
            atomic_write_bytes(out / "best.yaml", render_best_yaml(summary, out).encode())
            best_written = True
        except SearchError as err:
            summary.notes.append(str(err))
    atomic_write_bytes(out / "search.csv", render_search_csv(summary).encode())
    return render_search_markdown(summary, out if best_written else None)
