"""One intensity rule per dataset: 16-bit and float images map to uint8 the same way in every
image of a dataset (training and prediction alike), and the rule travels with the run."""

import json

import numpy as np
import pytest
import tifffile
from conftest import QUICK_CONFIG, SHARED_DATA

from seg_project.config import get_seg_project_cfg, load_config
from seg_project.data import image_io, intensity
from seg_project.data.image_io import DatasetError, read_image
from seg_project.data.intensity import (
    IntensityRule,
    read_intensity_rule_file,
    resolve_intensity_rule,
    write_intensity_rule_file,
)
from seg_project.data.stats import compute_intensity_rule
from seg_project.utils.run_files import INTENSITY_RULE_FILE

TISSUE = 3000  # the same stain intensity in both images


def _two_16bit_images(tmp_path):
    """Two uint16 images of one dataset: the same tissue value (3000), different backgrounds
    and brightest pixels, as two fields of view of one slide."""
    rng = np.random.default_rng(0)
    a = rng.integers(800, 1200, (40, 50)).astype(np.uint16)
    a[10:30, 10:30] = TISSUE
    a[0, :5] = 60000  # a few saturated pixels
    b = rng.integers(200, 600, (40, 50)).astype(np.uint16)
    b[5:35, 20:45] = TISSUE
    b[39, 40:] = 12000
    paths = [tmp_path / "a.tif", tmp_path / "b.tif"]
    for path, image in zip(paths, (a, b)):
        tifffile.imwrite(path, image)
    return paths


def test_the_same_16bit_value_gets_the_same_uint8_in_every_image_of_a_dataset(tmp_path):
    paths = _two_16bit_images(tmp_path)
    rule = compute_intensity_rule(paths)
    assert rule is not None
    a, b = (read_image(p, rule) for p in paths)
    assert a[20, 20, 0] == b[20, 30, 0]
    assert 0 < a[20, 20, 0] < 255 and (a[..., 0] == a[..., 2]).all()
    # Each image stretched on its own (the reader's old behaviour, still what a lone file read
    # without a rule gets) gives the same tissue two different colors: what the rule fixes.
    alone_a, alone_b = (read_image(p) for p in paths)
    assert alone_a[20, 20, 0] != alone_b[20, 30, 0]


def test_the_mapper_reads_images_with_the_configured_rule(tmp_path):
    from seg_project.data.mapper import CellsDatasetMapper

    paths = _two_16bit_images(tmp_path)
    rule = compute_intensity_rule(paths)
    cfg = load_config(QUICK_CONFIG)
    cfg.INPUT.INTENSITY_RANGE = rule.to_config()
    cfg.INPUT.MIN_SIZE_TEST = 0  # no resize
    mapper = CellsDatasetMapper(cfg, is_train=False)
    assert mapper.intensity_rule == rule
    images = [mapper({"file_name": str(p), "height": 40, "width": 50, "image_id": i})["image"]
              for i, p in enumerate(paths)]
    assert images[0][:, 20, 20].tolist() == images[1][:, 20, 30].tolist()
    np.testing.assert_array_equal(images[0][0].numpy(), read_image(paths[0], rule)[..., 2])


def test_the_rule_maps_every_wide_image_of_the_dataset_even_one_within_0_255(tmp_path):
    paths = _two_16bit_images(tmp_path)
    dark = np.full((40, 50), 200, np.uint16)
    dark[:20] = TISSUE // 20  # 150
    tifffile.imwrite(tmp_path / "dark.tif", dark)
    rule = compute_intensity_rule([*paths, tmp_path / "dark.tif"])
    image = read_image(tmp_path / "dark.tif", rule)
    np.testing.assert_array_equal(image[..., 0], rule.apply(dark))
    assert image.max() < 150  # mapped by the rule, not cast as it is read alone
    np.testing.assert_array_equal(read_image(tmp_path / "dark.tif")[..., 0], dark)


def test_rule_is_a_fixed_percentile_range_of_the_pooled_values(tmp_path):
    values = np.arange(100 * 100, dtype=np.uint16).reshape(100, 100)
    tifffile.imwrite(tmp_path / "ramp.tif", values)
    rule = compute_intensity_rule([tmp_path / "ramp.tif"])
    low, high = np.percentile(values.astype(np.float32), intensity.INTENSITY_PERCENTILES)
    assert rule == IntensityRule(pytest.approx(low), pytest.approx(high))
    again = compute_intensity_rule([tmp_path / "ramp.tif"], samples_per_image=500)
    assert again == compute_intensity_rule([tmp_path / "ramp.tif"], samples_per_image=500)
    assert again.low == pytest.approx(low, abs=200) and again.high == pytest.approx(high, abs=200)


def test_uint8_input_is_untouched_by_a_rule(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb)
    rgba = np.concatenate([rgb, np.full((12, 16, 1), 255, np.uint8)], axis=2)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, compression="lzw")
    rule = IntensityRule(1000.0, 5000.0)
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.tif", rule), rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.tif", rule), rgb)


def test_uint8_datasets_need_no_rule_and_are_not_decoded(tmp_path, monkeypatch):
    rgb = np.full((12, 16, 3), 7, np.uint8)
    paths = [tmp_path / "a.tif", tmp_path / "b.tif"]
    for path in paths:
        tifffile.imwrite(path, rgb)

    def must_not_decode(path):
        raise AssertionError(f"{path} was decoded")

    monkeypatch.setattr(image_io, "read_array", must_not_decode)
    assert compute_intensity_rule(paths) is None


@pytest.mark.parametrize("array", [
    np.arange(12 * 16, dtype=np.uint16).reshape(12, 16) % 256,  # 16-bit data within 0..255
    np.linspace(0, 1, 12 * 16).reshape(12, 16),  # floats within 0..1
])
def test_data_within_the_fixed_mappings_needs_no_rule(tmp_path, array):
    tifffile.imwrite(tmp_path / "a.tif", array)
    assert compute_intensity_rule([tmp_path / "a.tif"]) is None


def test_floats_within_0_1_are_scaled_by_255_in_every_image(tmp_path):
    """A fixed mapping, not a stretch: 0.5 is 128 whatever the image's own range."""
    a = np.full((10, 10), 0.5)
    a[0, 0] = 0.6
    b = np.full((10, 10), 0.5)
    b[0, 0], b[0, 1] = 0.0, 1.0
    for name, image in (("a.tif", a), ("b.tif", b)):
        tifffile.imwrite(tmp_path / name, image)
        assert read_image(tmp_path / name)[5, 5].tolist() == [128, 128, 128]


@pytest.mark.skipif(not (SHARED_DATA / "consep").is_dir(), reason="CoNSeP data not found")
def test_the_real_uint8_datasets_need_no_rule():
    paths = sorted((SHARED_DATA / "consep" / "train").glob("*/image.tif"))
    paths += sorted((SHARED_DATA / "hw3-sample" / "train").glob("*/image.tif"))
    assert paths and compute_intensity_rule(paths) is None


# -- the rule travels with the run ------------------------------------------------------------


def test_rule_round_trips_through_its_dict_config_and_file_forms(tmp_path):
    rule = IntensityRule(412.25, 61234.5)
    assert IntensityRule.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule
    assert IntensityRule.from_config(rule.to_config()) == rule
    assert IntensityRule.from_config(tuple(rule.to_config())) == rule
    assert IntensityRule.from_config(()) is None and IntensityRule.from_config([]) is None
    path = write_intensity_rule_file(tmp_path, rule)
    assert path == tmp_path / INTENSITY_RULE_FILE
    assert read_intensity_rule_file(tmp_path / "model_final.pth") == rule
    assert read_intensity_rule_file(tmp_path) == rule
    write_intensity_rule_file(tmp_path, None)
    assert read_intensity_rule_file(tmp_path) is None
    assert read_intensity_rule_file(tmp_path / "elsewhere" / "model.pth") is None
    assert read_intensity_rule_file("detectron2://ImageNetPretrained/MSRA/R-50.pkl") is None


def test_a_rule_through_yaml_maps_pixels_exactly_as_before(tmp_path):
    """config.yaml carries the rule; the reloaded rule gives the same uint8 image."""
    paths = _two_16bit_images(tmp_path)
    rule = compute_intensity_rule(paths)
    cfg = get_seg_project_cfg()
    cfg.INPUT.INTENSITY_RANGE = rule.to_config()
    (tmp_path / "config.yaml").write_text(cfg.dump())
    loaded = load_config(tmp_path / "config.yaml")
    again = resolve_intensity_rule(loaded, weights="")
    assert again == rule
    np.testing.assert_array_equal(read_image(paths[0], again), read_image(paths[0], rule))


def test_prediction_finds_the_rule_of_the_weights_run(tmp_path):
    rule = IntensityRule(100.0, 4000.0)
    write_intensity_rule_file(tmp_path, rule)
    cfg = get_seg_project_cfg()
    cfg.MODEL.WEIGHTS = str(tmp_path / "model_best.pth")
    cfg.INPUT.INTENSITY_RANGE = ()
    assert resolve_intensity_rule(cfg) == rule  # beside the weights
    assert resolve_intensity_rule(cfg, weights=str(tmp_path / "x" / "m.pth")) is None
    cfg.INPUT.INTENSITY_RANGE = [0.0, 255.0]  # an explicit key wins
    assert resolve_intensity_rule(cfg) == IntensityRule(0.0, 255.0)


@pytest.mark.parametrize("value", [[1.0], [5.0, 5.0], [9.0, 1.0], [0.0, float("nan")],
                                   ["a", "b"]])
def test_invalid_rules_are_refused(value):
    with pytest.raises(ValueError):
        IntensityRule.from_config(value)


def test_a_broken_rule_file_is_named(tmp_path):
    (tmp_path / INTENSITY_RULE_FILE).write_text('{"intensity_rule": {"low": 3}}')
    with pytest.raises(DatasetError, match=INTENSITY_RULE_FILE):
        read_intensity_rule_file(tmp_path / "model_final.pth")


def test_a_run_on_16bit_data_stores_its_rule_and_prediction_uses_it(synthetic_root, tmp_path):
    """Setting up a training run on 16-bit images computes the dataset's rule once, puts it in
    config.yaml and intensity_rule.json; a Predictor given only the original config and the
    run's weights finds it; --eval-only finds it too."""
    import shutil

    from conftest import load_tool, tiny_opts
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from seg_project.engine.setup import plan_run, start_run
    from seg_project.inference.predictor import Predictor

    root = tmp_path / "wide"
    shutil.copytree(synthetic_root, root)
    for image in sorted(root.glob("train/*/image.tif")):
        rgb = tifffile.imread(image)[..., :3].astype(np.uint16) * 200 + 1000  # beyond 0..255
        tifffile.imwrite(image, rgb)
    out = tmp_path / "run"
    parser = load_tool("train_net").build_parser()
    args = parser.parse_args(["--config-file", str(QUICK_CONFIG),
                              *tiny_opts(root, out, epochs=1)])
    plan = plan_run(args)
    low, high = plan.cfg.INPUT.INTENSITY_RANGE
    assert 1000 <= low < high <= 255 * 200 + 1000
    cfg = start_run(plan, args)
    assert json.loads((out / INTENSITY_RULE_FILE).read_text())["intensity_rule"] == {
        "low": low, "high": high}
    assert "INTENSITY_RANGE" in (out / "config.yaml").read_text()
    DetectionCheckpointer(build_model(cfg), save_dir=str(out)).save("model_final")
    original = load_config(QUICK_CONFIG)
    predictor = Predictor(original, weights=str(out / "model_final.pth"))
    assert predictor.intensity_rule == IntensityRule(low, high)
    eval_args = parser.parse_args(["--config-file", str(QUICK_CONFIG), "--eval-only",
                                   *tiny_opts(root, tmp_path / "eval", epochs=1),
                                   "MODEL.WEIGHTS", str(out / "model_final.pth")])
    assert list(plan_run(eval_args).cfg.INPUT.INTENSITY_RANGE) == [low, high]
