"""The training loop: per-step seeding, AdamW, EMA, checkpoints, resume, validation, loss log.

A run folder holds ``config.json``, ``noise_bank.safetensors``, ``loss.csv``, ``val.jsonl``,
``loss.png``, ``checkpoints/step_NNNNNNN/`` (``model``, ``ema`` and ``optim`` safetensors plus
``state.json``: no pickles) and ``best/`` (the EMA weights with the best validation score,
ready to ship). Every step draws its data and noise from generators seeded by (seed, step), so
a resumed run continues the same trajectory as an uninterrupted one.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from warpcore.errors import InvalidInput
from warpcore.progress import ShouldStop, never_stop
from warpcore.training.batches import make_batch, validation_batches
from warpcore.training.builtin_backend import lr_at
from warpcore.training.config import TrainConfig
from warpcore.training.data import Photo, ensure_debian_packages, load_photos, split

Log = Callable[[str], None]


def make_backend(cfg: TrainConfig) -> Any:
    """The model side of training: the built-in UNet or an SDXL UNet fine-tune."""
    if cfg.model == "builtin":
        from warpcore.training.builtin_backend import BuiltinBackend

        return BuiltinBackend(cfg)
    from warpcore.training.sdxl import SDXLBackend

    return SDXLBackend(cfg)


class EMA:
    """Exponential moving average of a module's floating-point state, with a warm-up."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in module.state_dict().items():
            if v.is_floating_point():
                self.state[k].lerp_(v.detach(), 1.0 - d)
            else:
                self.state[k].copy_(v)


def _optim_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            tensors[f"{idx}.{key}"] = torch.as_tensor(value).contiguous()
    return tensors, {"param_groups": sd["param_groups"]}


def _load_optim(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    run: Path,
    step: int,
    model: torch.nn.Module,
    ema: EMA | None,
    opt: torch.optim.Optimizer,
    extra: dict[str, Any],
    keep: int,
) -> Path:
    """Write ``checkpoints/step_N`` atomically (temp folder, then rename) and prune old ones."""
    root = run / "checkpoints"
    final, tmp = root / f"step_{step:07d}", root / f".tmp_step_{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"))
    if ema is not None:
        save_file({k: v.contiguous() for k, v in ema.state.items()}, str(tmp / "ema.safetensors"))
    tensors, meta = _optim_tensors(opt)
    save_file(tensors, str(tmp / "optim.safetensors"))
    state = {"step": step, "optimizer": meta, **extra}
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(root.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run: Path) -> Path | None:
    done = [p for p in sorted((run / "checkpoints").glob("step_*")) if (p / "state.json").is_file()]
    return done[-1] if done else None


def _restore(
    ckpt: Path, model: torch.nn.Module, ema: EMA | None, opt: torch.optim.Optimizer
) -> dict:
    state = json.loads((ckpt / "state.json").read_text())
    model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
    if ema is not None and (ckpt / "ema.safetensors").is_file():
        ema.state = load_file(str(ckpt / "ema.safetensors"))
    _load_optim(opt, load_file(str(ckpt / "optim.safetensors")), state["optimizer"])
    return state


def _truncate_logs(run: Path, step: int) -> None:
    """Drop log rows written after ``step`` (a resumed run rewrites them identically)."""
    loss_csv = run / "loss.csv"
    if loss_csv.is_file():
        rows = list(csv.reader(loss_csv.open()))
        keep = [rows[0]] + [r for r in rows[1:] if int(r[0]) < step]
        with loss_csv.open("w", newline="") as f:
            csv.writer(f).writerows(keep)
    val = run / "val.jsonl"
    if val.is_file():
        lines = [ln for ln in val.read_text().splitlines() if json.loads(ln)["step"] <= step]
        val.write_text("".join(ln + "\n" for ln in lines))


def _prepare_run(
    cfg: TrainConfig, resume: bool, log: Log, photos: list[Photo] | None
) -> tuple[Path, Any, list, dict]:
    run = Path(cfg.run_dir)
    if not resume and latest_checkpoint(run) is not None:
        raise InvalidInput(f"run_dir: {run} already has checkpoints; pass --resume or a new folder")
    run.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    if photos is None:
        ensure_debian_packages(log)
        photos = load_photos(cfg.max_side, cfg.extra_data, log=log, videos=cfg.videos)
    train_photos, val_photos = split(photos)
    log(
        f"data: {len(train_photos)} training images, {len(val_photos)} held out: "
        + ", ".join(p.name for p in val_photos)
    )
    backend = make_backend(cfg)
    bank_file = run / "noise_bank.safetensors"
    if bank_file.is_file():
        backend.bank.load(load_file(str(bank_file)))
    elif backend.bank.state():
        save_file(backend.bank.state(), str(bank_file))
    val = validation_batches(val_photos or train_photos, cfg.val_crops, cfg.crop)
    cfg.save(run / "config.json")
    return run, backend, train_photos, val


def train(
    cfg: TrainConfig,
    resume: bool = False,
    should_stop: ShouldStop = never_stop,
    log: Log = print,
    photos: list[Photo] | None = None,
) -> dict[str, Any]:
    """Train to ``cfg.steps`` (or until ``should_stop()``), checkpointing; returns a summary."""
    run, backend, photos, val = _prepare_run(cfg, resume, log, photos)
    model = backend.model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        params, lr=float(cfg.lr), betas=cfg.betas, weight_decay=float(cfg.weight_decay)
    )
    ema = EMA(model, float(cfg.ema_decay)) if cfg.ema_decay else None
    step, best = 0, {"score": -float("inf"), "step": -1}
    ckpt = latest_checkpoint(run) if resume else None
    if ckpt is not None:
        state = _restore(ckpt, model, ema, opt)
        step, best = state["step"], state.get("best", best)
        _truncate_logs(run, step)
        log(f"resumed from {ckpt} at step {step}")
    extra = lambda: {"best": best}  # noqa: E731
    t0, last_loss = time.time(), float("nan")
    while step < cfg.steps:
        if should_stop():
            break
        last_loss = _train_step(backend, opt, ema, cfg, photos, step)
        _log_loss(run, step, last_loss, lr_at(step, cfg), time.time() - t0)
        step += 1
        if cfg.validate_every and (step % cfg.validate_every == 0 or step == cfg.steps):
            best = _validate(run, backend, ema, val, step, best, log)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint(run, step, model, ema, opt, extra(), cfg.keep_checkpoints)
            log(f"step {step}/{cfg.steps} loss {last_loss:.4f} ({time.time() - t0:.0f} s)")
    if step < cfg.steps:
        save_checkpoint(run, step, model, ema, opt, extra(), cfg.keep_checkpoints)
        log(f"stopped at step {step}; continue with --resume {run}")
    plot_logs(run)
    return {"step": step, "loss": last_loss, "best": best, "run_dir": str(run)}


def _train_step(
    backend: Any,
    opt: torch.optim.Optimizer,
    ema: EMA | None,
    cfg: TrainConfig,
    photos: list,
    step: int,
) -> float:
    """One optimiser step whose data and noise depend only on (seed, step)."""
    rng = np.random.default_rng([cfg.seed, step])
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    batch = make_batch(rng, photos, cfg.batch, cfg.crop, cfg.tasks, cfg.scales, cfg.scale_weights)
    for group in opt.param_groups:
        group["lr"] = lr_at(step, cfg)
    loss = backend.loss(batch, gen)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(backend.model.parameters(), cfg.grad_clip)
    opt.step()
    if ema is not None:
        ema.update(backend.model, step)
    return float(loss.detach())


def _log_loss(run: Path, step: int, loss: float, lr: float, seconds: float) -> None:
    path = run / "loss.csv"
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["step", "loss", "lr", "seconds"])
        writer.writerow([step, f"{loss:.6f}", f"{lr:.3e}", f"{seconds:.1f}"])


def _validate(
    run: Path, backend: Any, ema: EMA | None, val: dict, step: int, best: dict, log: Log
) -> dict:
    """Score the EMA (or raw) weights; keep the best as ``best/``; append to ``val.jsonl``."""
    state = ema.state if ema is not None else backend.model.state_dict()
    metrics = backend.validate(val, ema.state if ema is not None else None)
    if "score" in metrics:
        score = float(metrics["score"])
    else:
        psnrs = [v for k, v in metrics.items() if k.endswith("_psnr") and "baseline" not in k]
        score = float(np.mean(psnrs))
    record = {"step": step, "score": score, **metrics}
    with (run / "val.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")
    log(
        "val "
        + " ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
        )
    )
    if score > best["score"]:
        backend.export(run / "best", {k: v.detach().clone() for k, v in state.items()})
        (run / "best" / "metrics.json").write_text(json.dumps(record, indent=1) + "\n")
        best = {"score": score, "step": step}
    plot_logs(run)
    return best


def plot_logs(run: Path) -> Path | None:
    """``loss.png``: smoothed training loss, and validation PSNR vs the classical baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not (run / "loss.csv").is_file():
        return None
    rows = list(csv.DictReader((run / "loss.csv").open()))
    steps = np.array([int(r["step"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    k = max(1, len(loss) // 50)
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    axes[0].plot(steps, loss, alpha=0.25, label="loss")
    axes[0].plot(steps[k - 1 :], smooth, label=f"mean of {k}")
    axes[0].set(xlabel="step", ylabel="training loss", yscale="log", title=run.name)
    axes[0].legend()
    val_file = run / "val.jsonl"
    lines = val_file.read_text().splitlines() if val_file.is_file() else []
    records = [json.loads(ln) for ln in lines]
    keys = sorted({k for r in records for k in r if k.endswith("_psnr")})
    for key in keys:
        xs = [r["step"] for r in records if key in r]
        axes[1].plot(
            xs,
            [r[key] for r in records if key in r],
            "--" if "baseline" in key else "-",
            marker="o",
            label=key,
        )
    axes[1].set(xlabel="step", ylabel="validation PSNR (dB)", title="held-out crops")
    if keys:
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run / "loss.png", dpi=90)
    plt.close(fig)
    return run / "loss.png"
