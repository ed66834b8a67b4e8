"""Training loop: learning, determinism, divergence and failures, resume, multi-view testing, schedules."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from x3dsearch.config import preset
from x3dsearch.errors import ConfigError
from x3dsearch.faults import nan_loss_at
from x3dsearch.model import X3D
from x3dsearch.proxy_policy import ProxyPolicy
from x3dsearch.recipe import Recipe
from x3dsearch.schedule import load_schedule, schedule_names
from x3dsearch import train as train_module
from x3dsearch.train import TrainResult, resolve_threads, train

CLASSES = 3
CONFIG = preset("X2D", num_classes=CLASSES, crop=32, head_width=64)
SCHEDULE = Recipe(name="tiny", epochs=4, batch_size=16, base_lr=0.2, ref_batch_size=16, warmup_epochs=1,
                    eval_views=(1, 1))
# Fields that measure the machine, not the training.
TIMING = ("seconds", "cpu_seconds", "clips_per_s", "peak_memory_mb")


class ColourClips(Dataset):
    """Noise clips whose label is the colour channel that is brighter: learnable in a few epochs."""

    def __init__(self, n: int, seed: int, frames: int = 1, crop: int = 32, views: int | None = None) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, CLASSES, (n,), generator=g)
        self.clips = torch.randn(n, 3, frames, crop, crop, generator=g) * 0.5
        self.clips[torch.arange(n), self.labels] += 1.0
        self.views = views

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        clip = self.clips[i]
        if self.views is not None:
            clip = clip.expand(self.views, *clip.shape).clone()
        return clip, int(self.labels[i])


class Broken(ColourClips):
    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        raise RuntimeError("disk on fire")


@pytest.fixture(scope="module")
def data() -> tuple[Dataset, Dataset]:
    return ColourClips(96, seed=0), ColourClips(48, seed=1)


def _measured(result: TrainResult) -> dict:
    return {k: v for k, v in result.to_dict().items() if k not in TIMING}


def test_tiny_model_learns(data: tuple[Dataset, Dataset]) -> None:
    result = train(CONFIG, data, SCHEDULE, seed=0, threads=1)
    assert result.status == "ok", result.reason
    assert result.top1 > 0.75  # chance is 1/3
    assert result.top5 == 1.0  # 3 classes: top-5 holds them all
    assert result.epoch_losses[-1] < result.epoch_losses[0]
    assert result.clips_seen == 4 * 96 and result.clips_per_s > 0
    assert 0 < result.cpu_seconds < 2 * result.seconds  # one thread: about its wall time, less under other load
    assert result.threads == 1 and result.device == "cpu" and result.train_crop == 32
    assert TrainResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_result_carries_per_class_scores_and_test_only_when_asked(data: tuple[Dataset, Dataset]) -> None:
    test_set = ColourClips(30, seed=2)
    schedule = SCHEDULE.replace(epochs=2)
    asked = train(CONFIG, (*data, test_set), schedule, seed=0, threads=1, test_split=True)
    assert asked.status == "ok", asked.reason
    val, test = asked.val, asked.test
    assert val is not None and test is not None
    assert (val.split, val.videos, test.split, test.videos) == ("val", 48, "test", 30)
    assert val.classes == ("0", "1", "2") and val.groups == {}  # in-memory data: no names, no groups
    assert (val.top1, val.top5) == (asked.top1, asked.top5)
    assert [sum(row) for row in val.confusion] == [int((data[1].labels == c).sum()) for c in range(CLASSES)]
    per_class = val.per_class()
    assert sum(per_class[str(c)] * int((data[1].labels == c).sum()) for c in range(CLASSES)) == \
        pytest.approx(val.top1 * 48)
    unasked = train(CONFIG, (*data, test_set), schedule, seed=0, threads=1)
    assert unasked.test is None and unasked.val == val  # the test split changes nothing else
    assert TrainResult.from_dict(json.loads(json.dumps(asked.to_dict()))) == asked


def test_metrics_written_before_per_class_results_still_load() -> None:
    old = {"status": "ok", "top1": 0.5, "top5": 0.9, "epoch_losses": [1.0], "skipped": [], "seed": 3}
    result = TrainResult.from_dict(old)
    assert (result.top1, result.val, result.test, result.seed) == (0.5, None, None, 3)


@pytest.mark.usefixtures("fused_at_any_size")
def test_adamw_with_precise_bn_learns(data: tuple[Dataset, Dataset]) -> None:
    # AdamW moves weights faster than BatchNorm's running averages follow: precise BN recalibrates them
    schedule = SCHEDULE.replace(optimizer="adamw", base_lr=0.003, precise_bn_clips=96)
    result = train(CONFIG, data, schedule, seed=0, threads=1)
    assert result.status == "ok", result.reason
    assert result.top1 > 0.75  # chance is 1/3
    assert result.epoch_losses[-1] < result.epoch_losses[0]


@pytest.mark.skipif(not train_module._native_cpu_bf16(), reason="no native bf16 on this CPU")
def test_bf16_precision_learns(data: tuple[Dataset, Dataset]) -> None:
    result = train(CONFIG, data, SCHEDULE.replace(precision="bf16"), seed=0, threads=1)
    assert result.status == "ok", result.reason
    assert result.top1 > 0.75  # chance is 1/3
    assert result.epoch_losses != train(CONFIG, data, SCHEDULE, seed=0, threads=1).epoch_losses  # bf16 ran


def test_bf16_without_native_support_trains_fp32_after_a_warning(data: tuple[Dataset, Dataset],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    schedule = SCHEDULE.replace(epochs=1)
    fp32 = train(CONFIG, data, schedule, seed=0, threads=1)
    monkeypatch.setattr(train_module, "_native_cpu_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="no native bf16, training in fp32"):
        fallback = train(CONFIG, data, schedule.replace(precision="bf16"), seed=0, threads=1)
    assert _measured(fallback) == _measured(fp32)


@pytest.mark.usefixtures("fused_at_any_size")
def test_same_seed_gives_identical_metrics(data: tuple[Dataset, Dataset]) -> None:
    schedule = SCHEDULE.replace(epochs=2)
    first, second = (train(CONFIG, data, schedule, seed=3, threads=1) for _ in range(2))
    assert _measured(first) == _measured(second)
    other = train(CONFIG, data, schedule, seed=4, threads=1)
    assert other.epoch_losses != first.epoch_losses


def _reference_training(schedule: Recipe, data: tuple[Dataset, Dataset], seed: int) -> tuple[float, list[float]]:
    """The recipe the module docstring states, written out with PyTorch's own pieces: fused SGD (or AdamW), decay
    off BN and biases, linear warm-up then per-step cosine, cross-entropy, optional precise BN, then testing."""
    from x3dsearch.evaluate import SEED_STRIDE, Feed, evaluate_views, precise_bn
    from x3dsearch.model import build_model

    torch.manual_seed(seed)
    model = build_model(CONFIG).to(memory_format=torch.channels_last_3d)
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": schedule.weight_decay},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    if schedule.optimizer == "adamw":  # fused: PyTorch's CPU kernel for the whole update
        optimizer = torch.optim.AdamW(groups, lr=schedule.base_lr, betas=(schedule.momentum, 0.999), fused=True)
    else:
        optimizer = torch.optim.SGD(groups, lr=schedule.base_lr, momentum=schedule.momentum, fused=True)
    per_epoch = -(-len(data[0]) // schedule.batch_size)
    total, warmup = per_epoch * schedule.epochs, round(schedule.warmup_epochs * per_epoch)
    lr = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + np.cos(np.pi * step / total))
                                           * min(1.0, (step + 1) / warmup))
    losses = []
    for epoch in range(schedule.epochs):
        model.train()
        order = torch.utils.data.DataLoader(data[0], batch_size=schedule.batch_size, shuffle=True,
                                            generator=torch.Generator().manual_seed(seed * SEED_STRIDE + epoch))
        batch_losses = []
        for clips, labels in order:
            if epoch < schedule.coarse_epochs:
                clips = torch.nn.functional.avg_pool2d(clips.flatten(0, 2), schedule.coarse_factor).unflatten(
                    0, clips.shape[:3])
            loss = torch.nn.functional.cross_entropy(model(clips.contiguous(memory_format=torch.channels_last_3d)),
                                                     labels, label_smoothing=schedule.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr.step()
            batch_losses.append(loss.item())
        losses.append(sum(batch_losses) / len(batch_losses))
    feed = Feed(seed, 0, torch.device("cpu"), True, contextlib.nullcontext())
    if schedule.precise_bn_clips:
        precise_bn(model, data[0], feed, schedule.batch_size, schedule.precise_bn_clips, schedule.epochs)
    top1, _ = evaluate_views(model, data[1], feed, schedule.batch_size, 1)
    return top1, losses


@pytest.mark.parametrize("name", ["sgd", "adamw_pbn", "coarse"])
def test_train_is_the_stated_recipe(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same process, same seed: ``train`` gives the numbers of the recipe written out plainly (no float trace
    pinned across CPUs). The fused BatchNorm kernel is bypassed: tests/test_fastnorm.py checks it on its own."""
    monkeypatch.setattr("x3dsearch.fastnorm._applies", lambda *args: False)
    data = (ColourClips(96, seed=0), ColourClips(48, seed=1))
    schedule = {"sgd": SCHEDULE, "coarse": SCHEDULE.replace(coarse_epochs=2),
                "adamw_pbn": SCHEDULE.replace(optimizer="adamw", base_lr=0.003, precise_bn_clips=96,
                                              label_smoothing=0.1)}[name]
    result = train(CONFIG, data, schedule, seed=3, threads=1)
    with train_module._torch_settings(1, torch.device("cpu")):
        top1, losses = _reference_training(schedule, data, seed=3)
    assert result.status == "ok" and len(losses) == schedule.epochs
    assert list(result.epoch_losses) == losses
    assert result.top1 == top1


def test_injected_nan_diverges_without_accuracy(data: tuple[Dataset, Dataset]) -> None:
    with nan_loss_at(7):
        result = train(CONFIG, data, SCHEDULE, seed=0, threads=1)
    assert result.status == "diverged"
    assert result.diverged_step == 7
    assert result.top1 is None and result.top5 is None
    assert "nan" in result.reason


def test_exploding_learning_rate_diverges(data: tuple[Dataset, Dataset]) -> None:
    result = train(CONFIG, data, SCHEDULE.replace(base_lr=1e6, warmup_epochs=0), seed=0, threads=1)
    assert result.status == "diverged" and result.top1 is None and result.diverged_step is not None


def test_exception_is_reported_as_failed(data: tuple[Dataset, Dataset]) -> None:
    result = train(CONFIG, (Broken(8, 0), data[1]), SCHEDULE, seed=0, threads=1)
    assert result.status == "failed"
    assert result.reason == "RuntimeError: disk on fire"
    assert result.top1 is None and result.top5 is None


@pytest.mark.usefixtures("fused_at_any_size")
def test_keyboard_interrupt_propagates_and_resume_matches(data: tuple[Dataset, Dataset], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    schedule = SCHEDULE.replace(epochs=3)
    whole = train(CONFIG, data, schedule, seed=0, threads=1, out_dir=tmp_path / "whole")

    def stop_after_first(epoch: int, metrics: dict) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(CONFIG, data, schedule, seed=0, threads=1, out_dir=tmp_path / "cut", on_epoch=stop_after_first)
    assert (tmp_path / "cut" / "checkpoint.pt").is_file()
    first = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)["state"]["cpu_seconds"]
    monkeypatch.setattr(train_module, "cpu_time", lambda: 100.0)  # the resumed part adds no CPU time
    resumed = train(CONFIG, data, schedule, seed=0, threads=1, out_dir=tmp_path / "cut", resume=True)
    assert _measured(resumed) == _measured(whole)
    assert first > 0 and resumed.cpu_seconds == pytest.approx(first)  # the first part's, carried over
    saved = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert saved["top1"] == whole.top1
    assert {"model.pt", "config.yaml"} <= {p.name for p in (tmp_path / "cut").iterdir()}


def test_a_checkpoint_identity_compares_fields_left_out_at_their_defaults() -> None:
    coarse = SCHEDULE.replace(coarse_epochs=2)
    before = {"config": CONFIG.to_dict(), "schedule": SCHEDULE.to_dict(), "seed": 0}  # written before the fields
    train_module.check_identity(before, train_module.checkpoint_identity(CONFIG, SCHEDULE, 0), "ckpt",
                                train_module.IDENTITY_OMITTED)
    written = train_module.checkpoint_identity(CONFIG, coarse, 0)
    for other in (SCHEDULE, coarse.replace(coarse_factor=3)):  # the coarse start switched off, or pooled otherwise
        with pytest.raises(ConfigError, match="ckpt was written for a different schedule"):
            train_module.check_identity(written, train_module.checkpoint_identity(CONFIG, other, 0), "ckpt",
                                        train_module.IDENTITY_OMITTED)


def test_resume_refuses_another_config(data: tuple[Dataset, Dataset], tmp_path: Path) -> None:
    train(CONFIG, data, SCHEDULE.replace(epochs=1), seed=0, threads=1, out_dir=tmp_path)
    with pytest.raises(ConfigError, match="different config"):
        train(CONFIG.replace(width=2.0), data, SCHEDULE.replace(epochs=1), seed=0, threads=1, out_dir=tmp_path,
              resume=True)


def test_views_are_averaged_per_video(data: tuple[Dataset, Dataset]) -> None:
    """Five identical views of each video score exactly like one clip per video."""
    schedule = SCHEDULE.replace(epochs=2)
    single = train(CONFIG, data, schedule, seed=0, threads=1)
    multi = train(CONFIG, (data[0], ColourClips(48, seed=1, views=5)), schedule.replace(eval_views=(5, 1)),
                  seed=0, threads=1)
    assert multi.status == "ok"
    assert (multi.top1, multi.top5) == (single.top1, single.top5)


def test_time_budget_stops_early(data: tuple[Dataset, Dataset]) -> None:
    result = train(CONFIG, data, SCHEDULE.replace(epochs=50, time_budget_s=0.5), seed=0, threads=1)
    assert result.status == "ok" and result.stopped_early
    assert result.clips_seen < 50 * 96 and result.top1 is not None


def test_spatial_scale_trains_at_a_smaller_crop() -> None:
    schedule = SCHEDULE.replace(spatial_scale=0.25, epochs=1)
    config = CONFIG.replace(crop=128)
    result = train(config, (ColourClips(16, 0, crop=32), ColourClips(8, 1, crop=32)), schedule, seed=0, threads=1)
    assert result.status == "ok" and result.train_crop == 32 and result.config["crop"] == 128
    assert load_schedule("cpu_proxy").recipe.train_crop(preset("XS")) == 40
    assert load_schedule("cpu_proxy").recipe.train_crop(preset("X2D", crop=48)) == 16  # never below 16


def test_coarse_epochs_train_on_pooled_clips_then_the_full_side() -> None:
    sides: list[tuple[bool, int]] = []  # (training?, input side) of every forward pass of the network

    def record(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if isinstance(module, X3D):
            sides.append((module.training, inputs[0].shape[-1]))

    schedule = SCHEDULE.replace(epochs=3, coarse_epochs=2, batch_size=8)
    with torch.nn.modules.module.register_module_forward_pre_hook(record):
        result = train(CONFIG, (ColourClips(16, 0), ColourClips(8, 1)), schedule, seed=0, threads=1)
    assert result.status == "ok" and result.train_crop == 32
    assert sides == [(True, 16)] * 4 + [(True, 32)] * 2 + [(False, 32)]  # two batches an epoch, then the test
    # never under 16 px: a 3x pool of 32 px becomes 2x, and a side under 32 px is not pooled at all
    assert schedule.replace(coarse_factor=3).coarse_pool(CONFIG) == 2
    assert schedule.coarse_pool(CONFIG.replace(crop=24)) == 1 and SCHEDULE.coarse_pool(CONFIG) == 1  # or off
    sides.clear()
    with torch.nn.modules.module.register_module_forward_pre_hook(record):
        small = train(CONFIG.replace(crop=24), (ColourClips(16, 0, crop=24), ColourClips(8, 1, crop=24)), schedule,
                      seed=0, threads=1)
    assert small.status == "ok" and {side for _, side in sides} == {24}
    assert SCHEDULE.replace(epochs=16, coarse_epochs=8).with_epochs(4).coarse_epochs == 2  # train --epochs
    stretched = load_schedule("cpu_coarse_full").recipe.stretched(32)
    assert (stretched.coarse_epochs, stretched.epochs) == (16, 32)
    assert SCHEDULE.replace(epochs=2, coarse_epochs=1).stretched(1).coarse_epochs == 0
    short = load_schedule("kinetics_full").recipe.stretched(20)  # shorter than its 30-epoch warm-up: scaled with it
    assert (short.epochs, short.warmup_epochs) == (20, pytest.approx(30 * 20 / 256))
    coarse = load_schedule("cpu_coarse_full").recipe
    assert Recipe.from_dict(coarse.to_dict()) == coarse and coarse.to_dict()["coarse_epochs"] == 8
    # off, the fields stay unwritten: checkpoints, run.yaml files and trial digests recorded before them match
    assert not {"coarse_epochs", "coarse_factor"} & set(load_schedule("cpu_long_full").to_dict())
    assert coarse.replace(coarse_epochs=0, coarse_factor=2, name="cpu_long_full",
                          description=load_schedule("cpu_long_full").recipe.description) == \
        load_schedule("cpu_long_full").recipe


def test_threads_follow_argument_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert resolve_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert resolve_threads() == os.cpu_count()
    with pytest.raises(ConfigError):
        resolve_threads(0)


def test_shipped_schedules_load_and_scale_the_learning_rate() -> None:
    assert {"cpu_proxy", "cpu_full", "kinetics_proxy", "kinetics_full"} <= set(schedule_names())
    full = load_schedule("kinetics_full").recipe
    assert (full.base_lr, full.batch_size, full.eval_views) == (1.6, 1024, (10, 3))
    assert full.replace(batch_size=256).lr() == pytest.approx(0.4)
    assert Recipe.from_dict(full.to_dict()) == full


@pytest.mark.parametrize("field, value, message", [
    ("epochs", 0, "epochs must be a positive integer"),
    ("batch_size", 2.5, "batch_size must be a positive integer"),
    ("base_lr", -1, "base_lr must be > 0"),
    ("momentum", 1.0, "momentum must be in [0, 1)"),
    ("spatial_scale", 1.5, "spatial_scale must be in (0, 1]"),
    ("warmup_epochs", 9, "warmup_epochs (9) exceeds epochs"),
    ("eval_views", [3], "eval_views must be [temporal, spatial]"),
    ("eval_views", [1, 2], "spatial crops must be 1 (center) or 3"),
    ("precision", "fp8", "precision must be one of"),
    ("time_budget_s", 0, "time_budget_s must be positive or null"),
    ("train_videos", 0, "train_videos must be a positive integer or null"),
    ("cache", "yes", "cache must be true or false"),
    ("optimizer", "lion", "optimizer must be one of sgd, adamw"),
    ("precise_bn_clips", -1, "precise_bn_clips must be a non-negative integer"),
    ("coarse_epochs", 2, "coarse_epochs (2) must leave at least one of the 2 epochs at the full side"),
    ("coarse_factor", 0, "coarse_factor must be a positive integer"),
])
def test_schedule_validation_errors(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        ProxyPolicy.from_dict({"name": "bad", "epochs": 2, field: value})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_schedule_files_and_names(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("epochs: 2\nbatch_size: 8\neval_views: [2, 3]\n")
    mine = load_schedule(path).recipe
    assert (mine.name, mine.epochs, mine.eval_views) == ("mine", 2, (2, 3))
    path.write_text("epochs: 2\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown key.*learning_rate"):
        load_schedule(path)
    with pytest.raises(ConfigError, match="unknown schedule 'nope'"):
        load_schedule("nope")
    with pytest.raises(ConfigError, match="not found"):
        load_schedule(tmp_path / "missing.yaml")


# -- the CLI on a real video folder, killed and resumed ------------------------------------------

def _write_video(path: Path, colour: int, seed: int, frames: int = 12, side: int = 32) -> None:
    import av

    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            image = rng.integers(40, 120, (side, side, 3), dtype=np.uint8)
            image[..., colour] = 220
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for split, count in (("train", 24), ("val", 9)):
        lines = []
        for i in range(count):
            name = f"{split}_{i}.mp4"
            _write_video(root / name, i % CLASSES, seed=i + 100 * (split == "val"))
            lines.append(f"{name} {i % CLASSES}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def test_video_dataset_views_feed_multiview_testing(video_folder: Path) -> None:
    from x3dsearch.data import VideoDataset

    schedule = SCHEDULE.replace(epochs=1, eval_views=(2, 3), spatial_scale=0.5)
    config = CONFIG.replace(crop=64, frames=2)
    val = VideoDataset(video_folder, config.replace(crop=schedule.train_crop(config)), split="val", views=(2, 3))
    assert val[0][0].shape == (6, 3, 2, 32, 32)
    assert schedule.scored_views() == (2, 3) and schedule.replace(cache=True).scored_views() == (2, 1)
    result = train(config, video_folder, schedule, seed=0, threads=1)
    assert result.status == "ok", result.reason
    assert result.train_crop == 32 and 0.0 <= result.top1 <= result.top5 <= 1.0


def _cli(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "x3dsearch.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli_killed_and_rerun_ends_like_an_uninterrupted_run(video_folder: Path, tmp_path: Path) -> None:
    config = tmp_path / "found.yaml"
    CONFIG.replace(crop=32, frames=2).to_yaml(config)
    schedule = tmp_path / "sched.yaml"
    schedule.write_text("epochs: 6\nbatch_size: 4\nbase_lr: 0.05\nref_batch_size: 4\neval_views: [2, 1]\n")
    args = ["train", "--config", str(config), "--data", str(video_folder), "--schedule", str(schedule)]
    whole = _cli([*args, "--output", str(tmp_path / "whole")])
    cut_dir = tmp_path / "cut"
    cut = _cli([*args, "--out", str(cut_dir)])  # the old spelling of --output
    deadline = time.monotonic() + 30
    while not (cut_dir / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cut.poll() is None, "the run ended before it could be killed"
    os.kill(cut.pid, signal.SIGKILL)
    cut.wait()
    assert not (cut_dir / "metrics.json").exists()
    assert whole.wait(timeout=60) == 0, whole.stderr.read()
    rerun = _cli([*args, "-o", str(cut_dir)])
    out, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    assert "resuming from" in err
    assert "\r" not in err and "epoch 6/6 | " in err  # stderr is a pipe: plain progress lines, no bar frames
    first = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    second = json.loads((cut_dir / "metrics.json").read_text())
    assert first["status"] == "ok" and first["epoch_losses"] and len(first["epoch_losses"]) == 6
    assert {k: v for k, v in first.items() if k not in TIMING} == {k: v for k, v in second.items() if k not in TIMING}
    assert "top1" in out


def test_stopping_at_a_rung_and_continuing_ends_like_a_straight_run(data: tuple[Dataset, Dataset],
                                                                   tmp_path: Path) -> None:
    schedule = SCHEDULE.replace(epochs=3)
    straight = train(CONFIG, data, schedule, seed=0, threads=1)
    rung = train(CONFIG, data, schedule, seed=0, threads=1, out_dir=tmp_path, stop_after_epochs=1)
    assert rung.status == "ok" and len(rung.epoch_losses) == 1 and rung.top1 is not None
    assert rung.epoch_losses[0] == straight.epoch_losses[0]
    resumed = train(CONFIG, data, schedule, seed=0, threads=1, out_dir=tmp_path, resume=True, stop_after_epochs=3)
    assert _measured(resumed) == _measured(straight)


def test_init_state_starts_from_given_weights_and_weights_out_keeps_the_result(
        data: tuple[Dataset, Dataset], tmp_path: Path) -> None:
    first = train(CONFIG, data, SCHEDULE, seed=0, threads=1, weights_out=tmp_path / "w.pt")
    weights = torch.load(tmp_path / "w.pt", weights_only=True)
    no_training = SCHEDULE.replace(base_lr=1e-12, epochs=1, warmup_epochs=0)
    again = train(CONFIG, data, no_training, seed=5, threads=1, init_state=weights)
    scratch = train(CONFIG, data, no_training, seed=5, threads=1)
    # an epoch at a vanishing learning rate moves only BatchNorm's running statistics
    assert first.top1 > 0.9 and again.top1 > 0.9 and scratch.top1 < 0.6, (first.top1, again.top1, scratch.top1)
