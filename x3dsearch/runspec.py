"""A run resolved once: the options as the CLI parses them (:class:`ExpandSettings`, which names the search space
and the schedules) become a frozen :class:`RunSpec` of objects (the space fitted to the data, the proxy policy,
the final training's recipe, the data, where trials run, the cost) that the runner and the strategies take.

This module and the CLI's handlers are the only places that read a space or a schedule by name
(tests/test_imports.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from .config import X3DConfig
from .cost import FLOPS, Cost
from .errors import DataError, UserError
from .proxy_policy import ProxyPolicy
from .recipe import Recipe
from .rundir import RunDir
from .schedule import DEFAULT_FULL, DEFAULT_PROXY, load_schedule
from .search import CEILING_FACTOR, LAND_WITHIN
from .space import SearchSpace, load_space
from .trial import Init
from .workers import DispatchOptions, WorkerOptions

__all__ = ["ExpandSettings", "Budget", "RunData", "RunSpec", "resolve", "as_spec", "ceiling_of"]


@dataclass(frozen=True)
class ExpandSettings:
    """A run's options as given (the space and schedules by name); ``run.yaml`` records them first."""

    target_gflops: float | None  # None when the budget is latency (target_ms)
    out: str
    space: str = "x3d_kinetics"
    data: str | None = None
    proxy_schedule: str = DEFAULT_PROXY
    full_schedule: str = DEFAULT_FULL
    proxy_init: str = Init.INHERIT.value
    final_init: str = Init.SCRATCH.value  # inherit: the final training starts from the proxy weights
    seed: int = 0
    ceiling_gflops: float | None = None
    evaluate_contractions: bool = False
    land_within: float = LAND_WITHIN
    final_training: bool = True
    address: str | None = None
    storage: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    max_failures: int = 2
    full_workers: int = 1
    max_window: float | None = None  # seconds a clip may span; None: the shortest video the data lists
    target_ms: float | None = None  # a latency budget instead: ms per clip, measured as latency_* say
    latency_device: str = "cpu"
    latency_batch: int = 1
    latency_threads: int = 1
    latency_node: str | None = None  # a Ray custom resource: time on the node offering it (the deployment device)

    def __post_init__(self) -> None:
        if self.target_ms is not None and (self.target_gflops is not None or self.ceiling_gflops is not None):
            raise UserError("a latency target (target_ms) comes alone: no target_gflops, and no ceiling_gflops "
                            "(its ceiling is 2x the target in ms)")
        if None not in (self.ceiling_gflops, self.target_gflops) and not self.ceiling_gflops >= self.target_gflops:
            raise UserError(f"the ceiling (ceiling_gflops, --ceiling-gflops) {self.ceiling_gflops:g} must be at least "
                            f"the target ({self.target_gflops:g} GFLOPs)")

    @property
    def budget(self) -> "Budget":
        """The cost options of these settings."""
        return Budget(self.target_gflops, self.target_ms, self.ceiling_gflops, self.latency_device,
                      self.latency_batch, self.latency_threads, self.latency_node, self.address)


@dataclass(frozen=True)
class Budget:
    """What a run's cost is and how much it may spend: GFLOPs, or with ``target_ms`` latency timed as ``latency_*``
    say, and the ceiling above which candidates are skipped."""

    target_gflops: float | None
    target_ms: float | None = None
    ceiling_gflops: float | None = None
    latency_device: str = "cpu"
    latency_batch: int = 1
    latency_threads: int = 1
    latency_node: str | None = None  # time on the Ray node offering this resource
    address: str | None = None  # of the Ray cluster that node is in

    @property
    def target(self) -> float:
        """The budget in its cost's unit: ms per clip when latency-costed, else GFLOPs."""
        target = self.target_gflops if self.target_ms is None else self.target_ms
        if target is None:
            raise UserError("a run needs a target: --target-gflops or --target-ms")
        return target

    @property
    def unit_suffix(self) -> str:
        """``g`` or ``ms``: how run-directory and study names spell the target's unit."""
        return "g" if self.target_ms is None else "ms"

    def ceiling(self) -> float:
        """The ceiling in the target's unit (:func:`ceiling_of`)."""
        return ceiling_of(self.target, self.ceiling_gflops)

    def cost(self, run_dir: str | Path | None) -> Cost:
        """C(X) of the run: exact FLOPs, or with ``target_ms`` latency timed into ``run_dir``'s table and the
        cache's."""
        if self.target_ms is None:
            return FLOPS
        from .latency import RayNode, latency_cost

        node = RayNode(self.latency_node, self.address) if self.latency_node else None
        return latency_cost(run_dir, self.latency_device, self.latency_batch, self.latency_threads, node)

    def text(self) -> str:
        """The target as words, e.g. ``6 GFLOPs`` or ``40 ms per clip (cpu, batch 1, 1 thread)``."""
        if self.target_ms is None:
            return f"{self.target:g} GFLOPs"
        from .latency import thread_count

        node = f" on the Ray node offering {self.latency_node!r}" if self.latency_node else ""
        return (f"{self.target_ms:g} ms per clip ({self.latency_device}{node}, batch {self.latency_batch}, "
                f"{thread_count(self.latency_threads)})")

    def check(self, space: SearchSpace, cost: Cost) -> None:
        """Refuse a target that is not above the cost of the space's start."""
        if cost.estimate(space.start) >= self.target * cost.per_unit:
            raise UserError(f"target {self.target:g} {cost.unit} is not above the start's cost "
                            f"({cost.estimate(space.start) / cost.per_unit:.4f} {cost.unit})")


def ceiling_of(target: float, ceiling: float | None) -> float:
    """A search's ceiling in its target's unit: the one given, by default ``CEILING_FACTOR`` times the target."""
    return ceiling if ceiling is not None else CEILING_FACTOR * target


@dataclass(frozen=True)
class RunData:
    """What a run reads of its data: the folder (None: the synthetic benchmark, which a dry run does not render),
    its classes and listed train videos (None when not read), lines saying what was found, whether training
    may mirror its clips (``augment.json``) and its content's fingerprint (both None when not read)."""

    root: Path | None
    classes: int
    train_videos: int | None
    text: str
    window_text: str
    horizontal_flip: bool | None = None
    fingerprint: str | None = None

    def train_clips(self, recipe: Recipe) -> int:
        """Training clips per epoch of ``recipe``: the train split, or the recipe's subset of it."""
        if self.train_videos is None:
            raise DataError("the train split was not read")
        return min(self.train_videos, recipe.train_videos) if recipe.train_videos else self.train_videos


@dataclass(frozen=True)
class RunSpec:
    """A run resolved once: the ``request`` as given, the space fitted to the data's classes and window, the proxy
    policy, the final training's schedule entry (``full.recipe`` trains), and the data."""

    request: ExpandSettings
    space: SearchSpace
    proxy: ProxyPolicy
    full: ProxyPolicy
    data: RunData

    @property
    def budget(self) -> Budget:
        """The cost options."""
        return self.request.budget

    @property
    def proxy_init(self) -> Init:
        """Where a candidate's proxy training starts."""
        return Init(self.request.proxy_init)

    @property
    def final_inherits(self) -> bool:
        """Whether the final training starts from the proxy weights (both inits ``inherit``)."""
        return self.proxy_init == Init.INHERIT and Init(self.request.final_init) == Init.INHERIT

    @property
    def dispatch(self) -> DispatchOptions:
        """Where and how the proxy trials run."""
        s = self.request
        return DispatchOptions(address=s.address, cpus_per_trial=s.cpus_per_trial, gpus_per_trial=s.gpus_per_trial,
                               max_concurrent=s.max_concurrent, storage=s.storage, max_failures=s.max_failures)

    @property
    def workers(self) -> WorkerOptions:
        """Where the final training runs (``full_workers`` Ray Train workers when more than one)."""
        s = self.request
        return WorkerOptions(s.full_workers, s.address, s.cpus_per_trial, s.gpus_per_trial, s.storage, s.max_failures)

    def starting_at(self, start: X3DConfig) -> "RunSpec":
        """This run with ``start`` in place of the space's start (``step --from``), classifier sized to the data."""
        return replace(self, space=_with_classes(replace(self.space, start=start), self.space.start.num_classes))

    def to_dict(self, extra: Mapping[str, Any] | None = None, cost: str = FLOPS.name) -> dict[str, Any]:
        """What ``run.yaml`` records: the request, a strategy's ``extra`` fields, the cost kind, then what was
        resolved (``--resume`` compares it)."""
        data = {key: value for key, value in (("horizontal_flip", self.data.horizontal_flip),
                                              ("data_fingerprint", self.data.fingerprint)) if value is not None}
        return dict(asdict(self.request), **(extra or {}), cost=cost, space_resolved=self.space.to_dict(),
                    proxy=self.proxy.to_dict(), full=self.full.to_dict(), **data)

    def describe(self, resume: bool = False, expansion: bool = True) -> list[str]:
        """What a dry run found: the data, the window, the schedules, the run directory; refuses what a run would.
        Only ``expansion`` has proxy weights for its final training to start from."""
        s = self.request
        self.budget.check(self.space, self.budget.cost(None))
        run = RunDir(s.out)
        if run.exists() and not resume:
            raise UserError(f"{run.path} already holds a run; pass --resume to continue it or choose another "
                            f"-o/--output")
        if run.exists() and resume:  # what a run would refuse, but the data's fingerprint (a dry run reads no video)
            run.check_resume(self.to_dict(cost=self.budget.cost(None).name))
        state = f"resuming its {sum(1 for _ in run.records())} journal records" if run.exists() else "new"
        return [self.data.text, self.data.window_text,
                f"schedules: proxy {_describe_schedule(s.proxy_schedule, self.proxy)}, "
                f"final {_describe_schedule(s.full_schedule, self.full)} "
                f"{'from the proxy weights' if expansion and self.final_inherits else 'from scratch'}"
                f"{'' if s.final_training else ' (not run: --no-final-training)'}; seed {s.seed}",
                f"run directory: {run.path} ({state})"]


def resolve(request: ExpandSettings, *, dry_run: bool = False, space: SearchSpace | None = None) -> RunSpec:
    """Read every input of ``request`` once: the space (unless given), the data and the schedules.

    A run renders the default benchmark on first use and reads the train split; a ``dry_run`` renders nothing
    and reads every split of a given data folder. Raises the one-line UserError of the first unusable input.
    """
    space = load_space(request.space) if space is None else space
    root, classes, videos, text, flip, fingerprint = (_probe_data(request.data) if dry_run
                                                      else _read_data(request.data))
    proxy, full = load_schedule(request.proxy_schedule), load_schedule(request.full_schedule)
    seconds, window_text = _window_limit(request.max_window, root, (proxy.recipe, full.recipe), space.max_window)
    data = RunData(root, classes, videos, text, window_text, flip, fingerprint)
    return RunSpec(request, _fit_window(_with_classes(space, classes), seconds), proxy, full, data)


def as_spec(spec: RunSpec | ExpandSettings) -> RunSpec:
    """A run's spec: ``spec`` itself, or settings resolved here (a library caller's boundary, as the CLI's)."""
    return spec if isinstance(spec, RunSpec) else resolve(spec)


def _read_data(data: str | None) -> tuple[Path, int, int, str, bool, str]:
    """A run's data folder (the benchmark, rendered on first use, when None), its classes and train videos, a line
    naming it, whether training may mirror its clips and its fingerprint."""
    from .data import fingerprint, read_split

    if data is None:
        from .data import default_dataset

        root = Path(default_dataset()).resolve()
    else:
        root = Path(data).expanduser().resolve()
        _check_data(root)
    split = read_split(root, "train")
    return (root, len(split.class_names), len(split.videos), f"data: {root}{_flip_note(split.horizontal_flip)}",
            split.horizontal_flip, fingerprint(root))


def _probe_data(data: str | None) -> tuple[Path | None, int, int | None, str, bool | None, None]:
    """A dry run's data: every split of a given folder read and checked, the default benchmark not rendered, no
    fingerprint taken."""
    if data is None:
        from .data.synthetic import CLASSES

        return None, len(CLASSES), None, (f"data: the synthetic benchmark, {len(CLASSES)} classes "
                                          f"(default; rendered on first use, then cached)"), None, None
    return *_describe_data(Path(data).expanduser().resolve()), None


def _check_data(root: Path) -> None:
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    missing = [name for name in ("train.csv", "val.csv") if not (root / name).is_file()]
    if missing:
        raise DataError(f"{root} is not in the Kinetics layout: missing {', '.join(missing)} "
                        f"(one 'path label' line per video)")


def _describe_data(root: Path) -> tuple[Path, int, int, str, bool]:
    """Read a data folder's split CSVs: the folder, its classes, its train videos, a one-line summary and whether
    training may mirror its clips.

    Raises DataError for a missing folder or CSV, a bad line, or a split none of whose videos exist.
    """
    from .data import read_split

    _check_data(root)
    names = ("train", "val", "test") if (root / "test.csv").is_file() else ("train", "val")
    splits = {name: read_split(root, name) for name in names}
    missing = 0
    for split in splits.values():
        absent = [video for video in split.videos if not video.is_file()]
        if len(absent) == len(split.videos):
            raise DataError(f"{split.csv}: none of its {len(absent)} videos exist (e.g. {absent[0]})")
        missing += len(absent)
    classes = len(splits["train"].class_names)
    counts = " / ".join(f"{len(split.videos)} {name}" for name, split in splits.items())
    note = f"; {missing} listed video{'s' if missing > 1 else ''} missing (a run skips them)" if missing else ""
    held = "" if "test" in splits else "; no test.csv: the final top-1 will be on val, the split the search selects on"
    train = splits["train"]
    return (root, classes, len(train.videos),
            f"data: {root}, {classes} classes, {counts} videos{note}{held}{_flip_note(train.horizontal_flip)}",
            train.horizontal_flip)


def _flip_note(horizontal_flip: bool) -> str:
    """The data line's note when the data forbids mirrored training clips."""
    return "" if horizontal_flip else "; training clips not mirrored (augment.json)"


def _with_classes(space: SearchSpace, classes: int) -> SearchSpace:
    """The space with its start's classifier sized to ``classes`` (every candidate inherits it)."""
    if classes == space.start.num_classes:
        return space
    return replace(space, start=space.start.replace(num_classes=classes))


def _window_limit(max_window: float | None, root: Path | None,
                  recipes: Sequence[Recipe], space_window: float | None = None) -> tuple[float | None, str]:
    """The longest clip window in seconds and a line saying where it comes from: ``max_window``, else the
    shortest video (``root`` None: the default benchmark's length), at most what the clip cache keeps and the
    search space's own ``space_window`` (source frames), if it sets one."""
    from .data import shortest_video
    from .data.kinetics import CACHED_SECONDS, REFERENCE_FPS
    from .data.synthetic import SECONDS

    if max_window is not None:
        seconds, source = max_window, "--max-window"
    else:
        probed = (SECONDS, "the benchmark's video length") if root is None else shortest_video(root)
        if probed is None and space_window is None:
            return None, "window limit: none (no video of the data could be probed)"
        seconds, source = (None, "") if probed is None else (
            probed[0], probed[1] if root is None else f"the shortest video, {probed[1]}")
        if seconds is not None and any(r.cache for r in recipes) and CACHED_SECONDS < seconds:
            seconds, source = CACHED_SECONDS, "what the clip cache keeps of a video"
    if space_window is not None and (seconds is None or space_window / REFERENCE_FPS < seconds):
        seconds, source = space_window / REFERENCE_FPS, "the search space's max_window"
    return seconds, (f"window limit: {seconds:g} s = {seconds * REFERENCE_FPS:g} source frames at "
                     f"{REFERENCE_FPS:g} fps ({source})")


def _fit_window(space: SearchSpace, seconds: float | None) -> SearchSpace:
    """The space whose windows (frames x stride, source frames at the reference rate) fit ``seconds``."""
    from .data.kinetics import REFERENCE_FPS

    return replace(space, max_window=None if seconds is None else seconds * REFERENCE_FPS)


def _describe_schedule(arg: str, schedule: ProxyPolicy) -> str:
    """A schedule as the dry run shows it: where it came from, its length, optimiser and tie-break."""
    recipe = schedule.recipe
    videos = "all" if recipe.train_videos is None else recipe.train_videos
    low, high = schedule.epoch_range()
    epochs = f"{low}-{high} epochs by step cost" if high > low else f"{recipe.epochs} epochs"
    ties = (f", near-ties within {schedule.fewer_params_within:g} top-1 to the fewest parameters"
            + (", then the longer window" if schedule.longer_window_ties else "")
            if schedule.fewer_params_within else "")
    ahead = ", the best two of each step looked one step ahead" if schedule.lookahead else ""
    coarse = (f", the first {recipe.coarse_epochs} pooled up to {recipe.coarse_factor}x per side"
              if recipe.coarse_epochs else "")
    return f"{arg} ({epochs}{coarse} over {videos} train videos, {recipe.optimizer}{ties}{ahead})"
