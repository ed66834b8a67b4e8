"""Export found architectures to other tools: what to export from a run, and writing it.

Formats: ``x3dsearch`` (our YAML, rebuilds the same network, plus trained weights),
``pyslowfast`` (:mod:`x3dsearch.pyslowfast_format`) and ``pytorchvideo``
(:mod:`x3dsearch.pytorchvideo_format`). Both other generators hard-code parts of the network that our
config makes free: such a config is refused with a one-line error naming the fields, unless ``force``
writes the nearest expressible network and returns the differences as warnings.

A config exported from a run carries the search's provenance (:func:`run_provenance`): the
proxy schedule, weight inheritance, rungs and seed repeats, and for the final model where its
trained weights started. Our YAML holds it as a ``search:`` mapping beside ``model:``, the
pytorchvideo JSON as ``search``, and the PySlowFast file (whose loader rejects unknown keys)
as header comments.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Mapping

import yaml

from .config import X3DConfig, preset
from .cost import count_flops
from .errors import UserError
from .latency import latency_provenance, thread_count
from .pyslowfast_format import to_pyslowfast
from .pytorchvideo_format import to_pytorchvideo
from .report import describe_provenance
from .rundir import RunDir
from .runview import RunView

__all__ = ["FORMATS", "select_config", "export_config", "run_provenance", "describe", "export"]

FORMATS = ("x3dsearch", "pyslowfast", "pytorchvideo")


# -- choosing what to export ----------------------------------------------------------
def select_config(run_dir: str | Path, *, step: int | None = None,
                  best_under_gflops: float | None = None) -> X3DConfig:
    """The config of a run's path step, its best proxy result under a cost, or its final model (default)."""
    view = RunView(run_dir)
    path = view.path
    if step is not None:
        steps = {s["step"]: s for s in path.get("steps", [])}
        if step not in steps:
            raise UserError(f"{run_dir} has no path step {step}; steps: {', '.join(map(str, steps)) or 'none'}")
        return X3DConfig.from_dict(steps[step]["config"])
    if best_under_gflops is not None:
        scores = view.scores  # each config once, scored at its highest rung
        ok = scores[scores["gflops"] <= best_under_gflops]
        if ok.empty or "config" not in ok:
            raise UserError(f"no trained config at or under {best_under_gflops:g} GFLOPs in {run_dir}")
        best = ok.sort_values(["top1", "gflops"], ascending=[False, True]).iloc[0]
        return X3DConfig.from_dict(best["config"])
    if not path.get("final"):
        raise UserError(f"{run_dir} has no final model yet (the search has not finished); "
                        f"use --step N or --best-under-gflops G")
    return X3DConfig.from_dict(path["final"]["config"])


def run_provenance(run_dir: str | Path, *, step: int | None = None,
                   best_under_gflops: float | None = None) -> dict[str, Any]:
    """How the run found the config :func:`select_config` picks: its proxy mechanism and, for the final
    model, where its trained weights started; unknown fields left out."""
    final = step is None and best_under_gflops is None
    exported = ("the final model" if final else f"path step {step}" if step is not None
                else f"the best proxy top-1 at or under {best_under_gflops:g} GFLOPs")
    prov = {"run": str(Path(run_dir).resolve()), "exported": exported, **RunView(run_dir).provenance()}
    return {k: v for k, v in prov.items() if v is not None and (final or not k.startswith("final_"))}


# -- writing --------------------------------------------------------------------------
def _header(config: X3DConfig, warnings: list[str], search: Mapping[str, Any] | None) -> str:
    """Comment lines naming the export, the search that found it (when from a run) and the warnings."""
    lines = [f"# exported by x3dsearch: {config.short}, {count_flops(config) / 1e9:.4g} GFLOPs"]
    if search and "latency_ms" in search:
        lines[0] += (f", {search['latency_ms']:.4g} ms per clip measured on {search['latency_device_name']} "
                     f"({search['latency_device']}, batch {search['latency_batch']}, "
                     f"{thread_count(search['latency_threads'])})")
    if search:
        lines += [f"# from {search['exported']} of the search in {search['run']}"]
        lines += [f"# {line}" for line in describe_provenance(search)]
    lines += [f"# WARNING: {w}" for w in warnings]
    return "\n".join(lines) + "\n"


def export_config(config: X3DConfig, fmt: str, out: str | Path, *, schedule: Mapping[str, Any] | None = None,
                  weights: str | Path | None = None, force: bool = False,
                  search: Mapping[str, Any] | None = None) -> list[str]:
    """Write ``config`` in format ``fmt`` to ``out`` (weights beside it for ``x3dsearch``); return warnings.

    ``search`` (:func:`run_provenance`) records how a run found the config; our YAML then nests the
    config under ``model:``, which :meth:`X3DConfig.from_yaml` reads.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    out = Path(out)
    if fmt == "x3dsearch" and weights is not None and not Path(weights).is_file():
        raise UserError(f"cannot copy the weights: {weights} is not a file")
    try:
        return _write(config, out, fmt, schedule, weights, search, force)
    except OSError as err:
        raise UserError(f"cannot write {out}: {err.strerror or err}") from None


def _write(config: X3DConfig, out: Path, fmt: str, schedule: Mapping[str, Any] | None, weights: str | Path | None,
           search: Mapping[str, Any] | None, force: bool) -> list[str]:
    """:func:`export_config`'s writing."""
    out.parent.mkdir(parents=True, exist_ok=True)
    warnings: list[str] = []
    if fmt == "x3dsearch" and search:
        out.write_text(_header(config, warnings, search)
                       + yaml.safe_dump({"model": config.to_dict(), "search": dict(search)}, sort_keys=False))
    elif fmt == "x3dsearch":
        config.to_yaml(out)
    elif fmt == "pyslowfast":
        data, warnings = to_pyslowfast(config, schedule, force)
        out.write_text(_header(config, warnings, search) + yaml.safe_dump(data, sort_keys=False))
    else:
        data, warnings = to_pytorchvideo(config, force)
        out.write_text(json.dumps(dict(data, **({"search": dict(search)} if search else {})), indent=2) + "\n")
    if fmt == "x3dsearch" and weights is not None:
        try:
            shutil.copyfile(weights, out.with_suffix(".pt"))
        except OSError as err:
            raise UserError(f"cannot copy the weights {weights} to {out.with_suffix('.pt')}: "
                            f"{err.strerror or err}") from None
    return warnings


def _is_preset(config: X3DConfig) -> str | None:
    """Name of the preset ``config`` equals, if any (for messages)."""
    from .config import preset_names

    return next((n for n in preset_names() if preset(n) == config), None)


def describe(config: X3DConfig) -> str:
    """One line naming what was exported (preset name when it is one)."""
    name = _is_preset(config)
    return f"{name + ' ' if name else ''}{config.short} ({count_flops(config) / 1e9:.4g} GFLOPs)"


def export(fmt: str, out: str | Path, *, run_dir: str | Path | None = None, model: X3DConfig | None = None,
           step: int | None = None, best_under_gflops: float | None = None, force: bool = False,
           recipe: Mapping[str, Any] | None = None) -> tuple[X3DConfig, list[str], Path | None]:
    """Export a run's chosen config (final by default, with the run's full schedule) or a given model (a preset or a
    config file, with ``recipe`` as its training). Returns (config, warnings, weights copied)."""
    if (run_dir is None) == (model is None):
        raise UserError("give either a RUN_DIR or a model (--preset NAME or --config FILE)")
    weights: Path | None = None
    search: dict[str, Any] | None = None
    if model is not None:
        if step is not None or best_under_gflops is not None:
            raise UserError("--step and --best-under-gflops choose from a RUN_DIR, not a --preset or --config")
        config, schedule = model, recipe
    else:
        assert run_dir is not None
        config = select_config(run_dir, step=step, best_under_gflops=best_under_gflops)
        schedule = RunDir(run_dir).settings().get("full")
        trained = RunDir(run_dir).final_dir / "model.pt"
        if fmt == "x3dsearch" and step is None and best_under_gflops is None and trained.is_file():
            weights = trained
        search = {**run_provenance(run_dir, step=step, best_under_gflops=best_under_gflops),
                  **latency_provenance(run_dir, config)}
    warnings = export_config(config, fmt, out, schedule=schedule, weights=weights, force=force, search=search)
    return config, warnings, Path(out).with_suffix(".pt") if weights else None
