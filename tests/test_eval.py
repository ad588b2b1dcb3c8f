"""Evaluation end to end on a tiny suite with the analytic Gaussian model: JSON, Markdown, PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from warpcore.cli import main
from warpcore.errors import InvalidInput
from warpcore.evaluate import (
    METHODS,
    EvalConfig,
    ExactFlowScorer,
    evaluate,
    resolve_methods,
    score_truth,
)
from warpcore.metrics import WARP_KEYS
from warpcore.models.gaussian import GaussianDenoiser
from warpcore.report import diagnose, markdown_table, ordering_checks, write_report
from warpcore.suites import SuiteConfig, suite_clips

TINY = SuiteConfig(clips=1, frames=3, size=(32, 32))
METHODS_SMALL = ("fixed", "resample", "gp", "integral", "warped", "telea", "bicubic")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _fast_gaussian() -> dict[str, GaussianDenoiser]:
    """The analytic model in its pointwise (exact, cheapest) form, for both tasks."""
    model = GaussianDenoiser(data_lengthscale=1.0, noise_lengthscale=1.0)
    return {"inpaint": model, "upscale": model}


@pytest.fixture(scope="module")
def tiny_result() -> dict:
    clips = suite_clips("shift-inpaint", TINY) + suite_clips("motion-sr", TINY)
    config = EvalConfig(model="gaussian", steps=2, methods=METHODS_SMALL)
    return evaluate(clips, config, denoisers=_fast_gaussian())


def test_evaluation_writes_json_markdown_and_plots(tiny_result: dict, tmp_path: Path) -> None:
    paths = write_report(tiny_result, tmp_path, title="tiny")
    report = json.loads(paths["json"].read_text())
    assert not report["partial"]
    groups = {(g["suite"], g["task"], g["scale"]): g for g in report["groups"]}
    assert set(groups) == {("shift-inpaint", "inpaint", 1), ("motion-sr", "upscale", 4)}
    inpaint, sr = groups[("shift-inpaint", "inpaint", 1)], groups[("motion-sr", "upscale", 4)]
    # Classical baselines only where they apply.
    assert set(inpaint["methods"]) == {"fixed", "resample", "gp", "integral", "warped", "telea"}
    assert set(sr["methods"]) == {"fixed", "resample", "gp", "integral", "warped", "bicubic"}
    for group in (inpaint, sr):
        for stats in group["methods"].values():
            for key in (*WARP_KEYS, "e_warp", "psnr", "ssim", "mse"):
                assert key in stats["mean"] and key in stats["std"]
                assert stats["mean"][key] is not None and np.isfinite(stats["mean"][key])
            assert len(stats["per_frame"]["warp_pixel_first"]) == 3
            assert stats["seconds_per_frame"] >= 0
        assert group["truth"]["mean"]["warp_pixel_prev"] is not None
        assert group["checks"], "ordering checks are computed for every group"
    assert "lpips" in report["optional_metrics"] and "fid" in report["optional_metrics"]
    md = paths["markdown"].read_text()
    assert "| Method | Warp. err. pixel, first ↓" in md
    assert "**Warped Diffusion (GP + guidance)**" in md and "Bicubic upscaling" in md
    assert "*Ground truth (its own error)*" in md
    assert "LPIPS skipped" in md or "LPIPS" in md
    pngs = sorted(tmp_path.glob("warp_*.png"))
    assert len(pngs) == 2 and all(p.read_bytes()[:8] == PNG_MAGIC for p in pngs)


def test_integer_shift_ground_truth_scores_zero_with_exact_flows() -> None:
    clip = suite_clips("shift-inpaint", TINY)[0]
    truth = score_truth(clip, EvalConfig(model="gaussian"))
    assert truth["flow"] == "exact"
    for key in ("warp_pixel_prev", "warp_pixel_first", "e_warp"):
        assert truth["mean"][key] < 1e-12


def test_exact_flow_scorer_sees_a_flicker() -> None:
    clip = suite_clips("shift-inpaint", TINY)[0]
    scorer = ExactFlowScorer(clip.forward, clip.backward)
    for t, frame in enumerate(clip.truth):
        scorer.add(np.clip(frame + (0.1 if t == 1 else 0.0), 0, 1), clip.inputs[t])
    prev = scorer.summary()["per_frame"]["warp_pixel_prev"]
    assert prev[1] > 1e-3 and prev[1] == pytest.approx(prev[2], rel=0.5)


def test_same_seed_same_outputs_for_every_method() -> None:
    clip = suite_clips("shift-inpaint", TINY)[0]
    config = EvalConfig(model="gaussian", steps=2, methods=("gp", "warped"))
    a = evaluate([clip], config, denoisers=_fast_gaussian())
    b = evaluate([clip], config, denoisers=_fast_gaussian())
    for ra, rb in zip(a["runs"], b["runs"], strict=True):
        assert ra["per_frame"]["warp_pixel_prev"] == rb["per_frame"]["warp_pixel_prev"]
        assert ra["mean"]["psnr"] == rb["mean"]["psnr"]


def test_cancel_keeps_finished_runs() -> None:
    clip = suite_clips("shift-inpaint", TINY)[0]
    config = EvalConfig(model="gaussian", steps=2, methods=("telea", "fixed", "gp"))
    seen = []

    def stop() -> bool:
        return len(seen) >= 1  # the first run finished: stop during the second

    def on_event(event) -> None:
        if event.kind == "progress" and "finished_run" in event.data:
            seen.append(event)

    result = evaluate(
        [clip], config, on_event=on_event, should_stop=stop, denoisers=_fast_gaussian()
    )
    assert result["partial"] and [r["method"] for r in result["runs"]] == ["telea"]
    assert result["groups"][0]["methods"].keys() == {"telea"}


def test_methods_are_validated() -> None:
    assert {m.name for m in resolve_methods(["all"])} == set(METHODS)
    assert resolve_methods(["gp", "gp"])[0].name == "gp"
    with pytest.raises(InvalidInput, match="accepted"):
        resolve_methods(["gp", "nope"])
    with pytest.raises(InvalidInput, match="steps"):
        EvalConfig(steps=0)


def test_ordering_checks_follow_the_numbers() -> None:
    def group(values: dict[str, float]) -> dict:
        return {
            "methods": {
                n: {"mean": {"warp_pixel_first": v}, "std": {}, "seconds_per_frame": 1.0}
                for n, v in values.items()
            }
        }

    good = ordering_checks(group({"fixed": 0.05, "resample": 0.06, "gp": 0.02, "integral": 0.03,
                                  "warped": 0.001}))  # fmt: skip
    assert [c["passed"] for c in good] == [True, True, True, True]
    bad = ordering_checks(group({"fixed": 0.01, "resample": 0.06, "gp": 0.02, "warped": 0.015}))
    assert [c["passed"] for c in bad] == [False, False, False]
    assert "0.015" in bad[0]["detail"] and "0.01" in bad[2]["detail"]
    table = markdown_table({**group({"warped": 0.001}), "truth": None})
    assert "0.001" in table


def test_a_run_whose_noise_cannot_matter_says_so() -> None:
    """When GP, fixed and resampled noise give the same frames (every step at sigma_min, where
    the sampler drops the noise) the failed noise ordering is explained, and only then."""

    def group(values: dict[str, float]) -> dict:
        methods = {
            n: {"mean": {"warp_pixel_first": v}, "per_frame": {}, "seconds_per_frame": 1.0}
            for n, v in values.items()
        }
        return {"methods": methods}

    same = diagnose(group({"fixed": 5e-4, "resample": 5e-4, "gp": 5e-4, "warped": 4e-4}))
    assert any("cannot be ordered" in n for n in same)
    apart = diagnose(group({"fixed": 5e-4, "resample": 6e-4, "gp": 5e-4, "warped": 4e-4}))
    assert not any("cannot be ordered" in n for n in apart)


def test_eval_command_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "report"
    code = main([
        "eval", "--suite", "shift-inpaint", "--model", "gaussian", "--clips", "1", "--frames",
        "2", "--size", "32", "32", "--steps", "1", "--methods", "fixed", "warped", "telea",
        "--out", str(out), "--json", "--quiet",
    ])  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    (group,) = summary["groups"]
    assert set(group["methods"]) == {"fixed", "warped", "telea"}
    assert group["methods"]["warped"]["mean"]["warp_pixel_first"] is not None
    assert (out / "report.md").is_file() and (out / "report.json").is_file()
    assert list(out.glob("warp_*.png"))
    assert main(["eval", "--suite", "nope", "--out", str(out), "--quiet"]) == 2
