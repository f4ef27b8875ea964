"""VectorFind on a tiny generator and a stand-in property CNN: shards (batch size, resume, 2-process torchrun),
the evaluation protocol's files and correlations, one-line errors.

The stand-in scorer reads 8 fixed linear functionals of the image, so a property is a smooth function of w and
the SVM's direction must move it monotonically."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common.errors import PipelineError  # noqa: E402
from stylegan.stylegan_generator import StyleGANGenerator, TruncationModule  # noqa: E402
from vectorfind.directions import GROUP_NAMES, SCORE_NAMES, TARGET_PROPERTIES, direction_path, save_direction  # noqa: E402
from vectorfind.evaluation import RESULT_COLUMNS, TEST_RESULT_COLUMNS, edit_grid  # noqa: E402
from vectorfind.models import choose_generator, module_scorer, property_cnn_scorer  # noqa: E402
from vectorfind.sampling import load_samples, sample_shards, shard_path, shard_ranges  # noqa: E402
from vectorfind.settings import VectorFindConfig  # noqa: E402
from vectorfind.context import Context  # noqa: E402
from vectorfind.stage import median_fingerprint, run_phases  # noqa: E402

FINGERPRINT = '{"test": 1}'


def tiny_generator(label_size=7):
    torch.manual_seed(0)
    generator = StyleGANGenerator(resolution=8, label_size=label_size, mapping_layers=2, mapping_fmaps=32,
                                  fmaps_base=64, fmaps_max=16).eval()
    with torch.no_grad():  # a lively synthesis: the default-initialised one makes nearly flat images
        for name, p in generator.synthesis.named_parameters():
            if name.endswith("style.weight"):
                p.mul_(3.0)
    return generator


class PlantedGenerator(torch.nn.Module):
    """A generator with StyleGAN's interface whose 8 x 8 image has 8 blocks of 24 pixels; block k's value is
    0.15 (w . D_k), D_k orthonormal planted directions. With the block-mean scorer below, score k is linear in w
    along D_k, so D_eyes, D_mouth, D_pose are the true directions."""

    def __init__(self, label_size=7, num_layers=10):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.z_space_dim, self.label_size, self.num_layers, self.resolution = 512, label_size, num_layers, 8
        q, _ = torch.linalg.qr(torch.randn(512, 8, generator=g))
        self.register_buffer("planted", q.T.contiguous())  # [8, 512]
        self.register_buffer("label_mix", 0.1 * torch.randn(label_size, 512, generator=g))
        self.truncation = TruncationModule(512, num_layers)

    def mapping(self, z, label=None):
        return 0.5 * z + (label @ self.label_mix if self.label_size else 0.0)

    def synthesis(self, wp):
        blocks = 0.15 * wp.mean(dim=1) @ self.planted.T  # [N, 8]
        return blocks.repeat_interleave(24, dim=1).view(-1, 3, 8, 8)


class BlockMeanCNN(torch.nn.Module):
    """uint8 NCHW images -> 8 scores: the mean of each 24-pixel block in [-1, 1] units, times 10."""

    def forward(self, images):
        x = images.float().flatten(1) / 127.5 - 1.0
        return 10.0 * x.view(len(x), 8, 24).mean(dim=2)


class StandInCNN(torch.nn.Module):
    """uint8 NCHW images -> 8 scores, each a fixed random linear functional of the pixels."""

    def __init__(self, resolution=8):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.register_buffer("pattern", torch.randn(8, 3 * resolution * resolution, generator=g))

    def forward(self, images):
        x = images.float().flatten(1) / 127.5 - 1.0
        return x @ self.pattern.T / 10.0


def stand_in_scorer(calls=None, fail_after=None):
    score = module_scorer(StandInCNN().eval(), batch_size=64)

    def scorer(images):
        if calls is not None:
            calls.append(len(images))
            if fail_after is not None and len(calls) > fail_after:
                raise KeyboardInterrupt("simulated kill")
        return score(images)

    return scorer


def shard_arrays(directory, n, size):
    return [dict(np.load(shard_path(directory, a, b))) for a, b in shard_ranges(n, size)]


def test_shards_do_not_depend_on_batch_size_and_resume_equals_uninterrupted(tmp_path, one_torch_thread):
    generator = tiny_generator()
    sample_shards(generator, stand_in_scorer(), tmp_path / "a", 30, 10, 5, 7, FINGERPRINT, "cpu", progress=False)
    sample_shards(generator, stand_in_scorer(), tmp_path / "b", 30, 10, 5, 3, FINGERPRINT, "cpu", progress=False)
    calls = []
    with pytest.raises(KeyboardInterrupt):  # killed in the middle of the second shard
        sample_shards(generator, stand_in_scorer(calls, fail_after=3), tmp_path / "c", 30, 10, 5, 4, FINGERPRINT,
                      "cpu", progress=False)
    assert shard_path(tmp_path / "c", 0, 10).is_file() and not shard_path(tmp_path / "c", 10, 20).is_file()
    resumed = sample_shards(generator, stand_in_scorer(), tmp_path / "c", 30, 10, 5, 4, FINGERPRINT, "cpu",
                            progress=False)
    assert resumed == 20  # the finished shard was skipped
    assert sample_shards(generator, stand_in_scorer(), tmp_path / "c", 30, 10, 5, 4, FINGERPRINT, "cpu",
                         progress=False) == 0
    a, b, c = (shard_arrays(tmp_path / d, 30, 10) for d in "abc")
    for x, y, z in zip(a, b, c):
        for key in ("w", "scores"):
            np.testing.assert_array_equal(x[key], y[key])
            np.testing.assert_array_equal(x[key], z[key])
    samples = load_samples(tmp_path / "a", 30, 10, FINGERPRINT)
    assert samples.w.shape == (30, 512) and samples.scores.shape == (30, 8) and samples.seed == 5
    assert np.std(samples.scores[:, 0]) > 0
    with pytest.raises(PipelineError, match="another run"):
        load_samples(tmp_path / "a", 30, 10, '{"other": 1}')


def _torchrun_worker(out_dir: str) -> None:
    from vectorfind.sampling import distributed_rank_world, wait_for_all

    torch.set_num_threads(1)
    rank, world = distributed_rank_world()
    sample_shards(tiny_generator(), stand_in_scorer(), Path(out_dir), 25, 5, 3, 4, FINGERPRINT, "cpu",
                  rank=rank, world=world, progress=False)
    wait_for_all()
    (Path(out_dir) / f"done_{rank}_of_{world}").write_text("ok")


def test_two_process_torchrun_equals_one_process(tmp_path, one_torch_thread):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    command = [str(torchrun), "--standalone", "--nproc-per-node", "2", __file__, str(tmp_path / "multi")]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert {p.name for p in (tmp_path / "multi").glob("done_*")} == {"done_0_of_2", "done_1_of_2"}
    sample_shards(tiny_generator(), stand_in_scorer(), tmp_path / "single", 25, 5, 3, 4, FINGERPRINT, "cpu",
                  progress=False)
    for x, y in zip(shard_arrays(tmp_path / "multi", 25, 5), shard_arrays(tmp_path / "single", 25, 5)):
        np.testing.assert_array_equal(x["w"], y["w"])
        np.testing.assert_array_equal(x["scores"], y["scores"])


def make_context(tmp_path, **overrides):
    settings = dict(output_dir=str(tmp_path / "v8"), medians_dir=str(tmp_path / "medians"), num_samples=3200,
                    shard_size=1600, batch_size=400, eval_cases=4, eval_batch_size=100, png_check_cases=2,
                    compare_cases=2, strip_weights=5, landmark_cases=0,
                    # the original's recipe these tests were written against (the config's defaults are the
                    # embedded profile's since)
                    num_threads=0, label_source="cnn", landmark_workers=1, direction_method="svm",
                    direction_kind="plain", eyes_edit_scale=1.0, edit_layers="")
    config = replace(VectorFindConfig(), **(settings | overrides))
    config.validate()
    return Context(config, PlantedGenerator(), module_scorer(BlockMeanCNN(), 256), "planted test generator",
                   FINGERPRINT, torch.device("cpu"), progress=False)


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp_path = tmp_path_factory.mktemp("vectorfind")
    ctx = make_context(tmp_path)
    results = run_phases(ctx, ("sample", "directions", "evaluate", "compare"))
    torch.set_num_threads(before)
    return ctx, results


def test_pipeline_files_in_the_original_format(pipeline_run):
    ctx, results = pipeline_run
    out = ctx.out
    for prop in TARGET_PROPERTIES:
        for group in GROUP_NAMES:
            frame = pd.read_csv(direction_path(out / "property_score_vectors", prop, group), index_col=0)
            assert frame.shape == (1, 512)
            assert abs(np.linalg.norm(frame.to_numpy()) - 1) < 1e-5
    accuracy = pd.read_csv(out / "svm_accuracy.csv")
    assert len(accuracy[accuracy.group.isin(GROUP_NAMES)]) == 48 and set(accuracy.property) >= set(TARGET_PROPERTIES)
    medians = pd.read_csv(ctx.medians_dir / "property_scores_mean_and_median.csv")
    assert list(medians.columns) == ["value_type", "hair_color", "hair_length", "background_score", "hairstyle"]
    report = out / "image_generation_report"
    result = pd.read_csv(report / "test_0002" / "case_002_000_result.csv")
    assert tuple(result.columns) == RESULT_COLUMNS and len(result) == 50
    np.testing.assert_allclose(result[["eyes_pm", "mouth_pm", "pose_pm"]].to_numpy(), edit_grid())
    assert (report / "test_0002" / "case_002_000_pm_049.png").is_file()
    tests = pd.read_csv(report / "test_result.csv")
    assert tuple(tests.columns) == TEST_RESULT_COLUMNS and len(tests) == 4 and set(tests.passed) <= {"O", "X"}
    stats = pd.read_csv(report / "test_statistics.csv", index_col=0)
    assert list(stats.columns) == ["eyes_corr_mean", "mouth_corr_mean", "pose_corr_mean", "sum_abs_corr_mean",
                                   "passed", "passed_ratio"]
    part1 = pd.read_csv(report / "latent_codes_part1.csv")
    everything = pd.read_csv(report / "latent_codes_all.csv")
    assert part1.shape == (4, 512) and everything.shape == (4, 519)
    assert list(everything.columns) == [str(i) for i in range(519)]
    # the saved PNGs score exactly as the in-memory images
    assert results["evaluate"]["png_check"]["max_abs_score_diff"] == 0.0


def test_evaluation_correlation_follows_the_found_directions(pipeline_run):
    ctx, results = pipeline_run
    mean_abs = results["evaluate"]["mean_abs_corr"]
    assert min(mean_abs.values()) > 0.9, mean_abs
    # oriented towards more: positive r for the symmetric eyes and mouth grids
    assert results["evaluate"]["mean_corr"]["eyes"] > 0.9 and results["evaluate"]["mean_corr"]["mouth"] > 0.9
    planted = ctx.generator.planted.numpy()
    for prop, row in (("eyes", 0), ("mouth", 3), ("pose", 4)):
        for group in GROUP_NAMES:
            found = pd.read_csv(direction_path(ctx.out / "property_score_vectors", prop, group), index_col=0)
            assert float(found.to_numpy()[0] @ planted[row]) > 0.3  # 64 training points in 512 dims


def test_evaluation_of_the_planted_directions_passes_every_case(pipeline_run, tmp_path):
    ctx, _ = pipeline_run
    planted = ctx.generator.planted.numpy()
    run = make_context(tmp_path, eval_cases=3, save_images=False)
    for prop, row in (("eyes", 0), ("mouth", 3), ("pose", 4)):
        for group in GROUP_NAMES:
            save_direction(direction_path(run.out / "property_score_vectors", prop, group), planted[row])
    os.symlink(ctx.medians_dir, run.medians_dir)
    summary = run_phases(run, ("evaluate",))["evaluate"]
    assert summary["passed"] == 3 and min(summary["mean_corr"].values()) > 0.99, summary


def test_compare_reports_leakage_drift_strips_and_summary(pipeline_run):
    ctx, results = pipeline_run
    table = pd.read_csv(ctx.out / "variant_comparison.csv")
    assert list(table.variant) == ["plain_all", "plain_0-5", "conditional_all", "conditional_0-5"]
    assert (table[[f"{p}_self_effect_sd" for p in TARGET_PROPERTIES]] > 0).all().all()
    # the planted synthesis averages the layers: editing 6 of 10 layers gives 6/10 of the effect
    ratio = table.set_index("variant").eyes_self_effect_sd
    assert abs(ratio["plain_0-5"] / ratio["plain_all"] - 0.6) < 0.05
    leakage = pd.read_csv(ctx.out / "leakage.csv")
    assert len(leakage) == 4 * 3 * 8
    assert (ctx.out / "summary.png").stat().st_size > 10_000
    assert (ctx.out / "strips" / "strip_mouth.png").is_file()
    assert results["compare"]["best_variant"] in set(table.variant)


def test_separate_median_run_feeds_the_grouping(tmp_path):
    ctx = make_context(tmp_path, num_samples=320, shard_size=160, median_source="separate", median_samples=480)
    run_phases(ctx, ("sample",))
    separate = load_samples(ctx.medians_dir / "samples", 480, 160, median_fingerprint(ctx)).scores
    own = load_samples(ctx.samples_dir, 320, 160, FINGERPRINT).scores
    table = pd.read_csv(ctx.medians_dir / "property_scores_mean_and_median.csv").set_index("value_type")
    hair_color = SCORE_NAMES.index("hair_color")
    assert table.loc["median", "hair_color"] == pytest.approx(float(np.median(separate[:, hair_color])))
    assert table.loc["median", "hair_color"] != pytest.approx(float(np.median(own[:, hair_color])))
    assert len(pd.read_csv(ctx.medians_dir / "property_scores_sampled.csv")) == 480


def test_original_orientation_writes_the_negated_vectors(pipeline_run, tmp_path):
    ctx, _ = pipeline_run
    flipped = make_context(tmp_path, orientation="original")
    flipped.out.mkdir(parents=True)
    os.symlink(ctx.samples_dir, flipped.samples_dir)  # the module run's samples and medians
    os.symlink(ctx.medians_dir, flipped.medians_dir)
    out = run_phases(flipped, ("directions",))
    assert out["directions"]["orientation_note"].startswith("the original's sign")
    for prop in TARGET_PROPERTIES:
        for group in ("hhhh", "lhlh"):
            ours = pd.read_csv(direction_path(ctx.out / "property_score_vectors", prop, group), index_col=0)
            theirs = pd.read_csv(direction_path(flipped.out / "property_score_vectors", prop, group), index_col=0)
            np.testing.assert_array_equal(theirs.to_numpy(), -ours.to_numpy())


def test_one_line_errors_for_missing_files(tmp_path, pipeline_run):
    with pytest.raises(PipelineError, match="generator checkpoint not found"):
        choose_generator(str(tmp_path / "nope.pth"), "embedded")
    with pytest.raises(PipelineError, match="property CNN not found"):
        property_cnn_scorer(tmp_path / "nope.pth", 64, 8, torch.device("cpu"))
    ctx = make_context(tmp_path)
    os.symlink(pipeline_run[0].medians_dir, ctx.medians_dir)
    with pytest.raises(PipelineError, match="run_vectorfind.py"):
        run_phases(ctx, ("evaluate",))
    done = subprocess.run([sys.executable, "run_vectorfind.py", "--property-cnn", str(tmp_path / "missing.pth"),
                           "--output-dir", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing.pth" in lines[0] and "property CNN" in lines[0], done.stderr


if __name__ == "__main__":
    _torchrun_worker(sys.argv[1])
