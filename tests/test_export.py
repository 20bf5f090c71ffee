"""Export of predictions: QuPath GeoJSON, label TIFFs and the course layout, each read back.

GeoJSON polygons are rasterised back with the convention they are written in (pixel corners:
a pixel is inside when its centre is, even-odd rule), label TIFFs with
``seg_project.data.image_io.read_mask`` and the course layout with the project's reader.
"""

import json
import uuid

import numpy as np
import pycocotools.mask as mask_util
import pytest
import tifffile

from seg_project.data.image_io import read_mask
from seg_project.data.reader import load_annotated_split
from seg_project.data.rle import decode, encode_crop
from seg_project.export.geojson import (
    feature_id,
    geojson_path,
    mask_to_geometry,
    predictions_to_geojson,
    write_geojson,
)
from seg_project.export.label_tiff import (
    class_instance_masks,
    course_layout_folder,
    label_dtype,
    label_sidecar_path,
    label_tiff_paths,
    paint_label_maps,
    write_course_layout,
    write_label_tiffs,
)
from seg_project.utils.errors import DatasetError

CLASS_NAMES = ["epithelial", "lymphocyte", "macrophage", "neutrophil"]
COLORS = [[255, 200, 0], [0, 200, 83], [0, 160, 255], [255, 110, 0]]
H, W = 96, 120


# ------------------------------------------------------------------------ helpers


def disk(height, width, cx, cy, radius):
    yy, xx = np.mgrid[:height, :width]
    return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= radius ** 2


def entry(mask, category=1, score=0.9, image_id=7):
    """A COCO result entry of a full-size mask, its RLE encoded from its tight box."""
    ys, xs = np.nonzero(mask)
    if ys.size:
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        rle = encode_crop(mask[y0:y1, x0:x1], int(x0), int(y0), *mask.shape)
    else:
        rle = encode_crop(np.zeros((0, 0), bool), 0, 0, *mask.shape)
    bbox = mask_util.toBbox({"size": rle["size"], "counts": rle["counts"].encode()}).tolist()
    return {"image_id": image_id, "category_id": category, "score": score, "bbox": bbox,
            "segmentation": rle}


def iou(a, b):
    union = np.logical_or(a, b).sum()
    return np.logical_and(a, b).sum() / union if union else 1.0


def polygons_of(geometry):
    return [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]


def rasterize(geometry, height, width):
    """The pixels whose centres lie inside the geometry (even-odd rule) for the rectilinear,
    integer-vertex polygons of the pixel-corner convention: every vertical edge from
    ``(x, ya)`` to ``(x, yb)`` flips the pixels of rows ``min..max - 1`` at columns ``>= x``."""
    mask = np.zeros((height, width), bool)
    for polygon in polygons_of(geometry):
        for ring in polygon:
            for (xa, ya), (xb, yb) in zip(ring[:-1], ring[1:]):
                assert xa == xb or ya == yb, "edges of the pixel-corner outline are axis-aligned"
                if xa == xb and ya != yb:
                    lo, hi = sorted((ya, yb))
                    mask[lo:hi, xa:] ^= True
    return mask


def shoelace2(ring):
    return sum(xa * yb - xb * ya for (xa, ya), (xb, yb) in zip(ring[:-1], ring[1:]))


def validate_ring(ring, where):
    assert isinstance(ring, list) and len(ring) >= 4, f"{where}: a ring needs >= 4 positions"
    for point in ring:
        assert isinstance(point, list) and len(point) == 2, f"{where}: position {point!r}"
        assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point)
    assert ring[0] == ring[-1], f"{where}: ring not closed"
    assert len({tuple(p) for p in ring[:-1]}) == len(ring) - 1, f"{where}: repeated vertex"


def validate_qupath_geojson(data, class_names=CLASS_NAMES, colors=COLORS,
                            object_type="detection"):
    """The structure QuPath's GeoJSON reader (0.4 / 0.5) relies on, checked strictly."""
    assert data["type"] == "FeatureCollection"
    assert isinstance(data["features"], list)
    ids = set()
    for index, feature in enumerate(data["features"]):
        where = f"feature {index}"
        assert feature["type"] == "Feature", where
        uuid.UUID(feature["id"])  # QuPath reads ids as UUIDs
        ids.add(feature["id"])
        geometry = feature["geometry"]
        assert geometry["type"] in ("Polygon", "MultiPolygon"), where
        coordinates = geometry["coordinates"]
        assert isinstance(coordinates, list) and coordinates, where
        # Nesting depth: Polygon = rings of positions (3 levels), MultiPolygon one more.
        polygons = [coordinates] if geometry["type"] == "Polygon" else coordinates
        if geometry["type"] == "MultiPolygon":
            assert len(polygons) >= 2, f"{where}: MultiPolygon of one part"
        for p, polygon in enumerate(polygons):
            assert isinstance(polygon, list) and polygon, where
            for r, ring in enumerate(polygon):
                validate_ring(ring, f"{where} polygon {p} ring {r}")
                area2 = shoelace2(ring)
                assert (area2 > 0) if r == 0 else (area2 < 0), f"{where}: RFC 7946 orientation"
        properties = feature["properties"]
        assert properties["objectType"] == object_type, where
        classification = properties["classification"]
        assert classification["name"] in class_names, where
        color = classification["color"]
        assert color == colors[class_names.index(classification["name"])], where
        assert len(color) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in color)
        measurements = properties["measurements"]
        assert isinstance(measurements, dict), f"{where}: QuPath >= 0.4 measurements map"
        assert isinstance(measurements["score"], float) and 0 <= measurements["score"] <= 1
        assert properties["isLocked"] is False, where
    assert len(ids) == len(data["features"]), "feature ids must be unique"


def mixed_masks():
    """Disks of 10..30 px diameter at fractional centres, a ring cell and a cell in two parts."""
    masks = [disk(H, W, 12.3, 14.7, 5.0), disk(H, W, 40.5, 20.0, 7.5),
             disk(H, W, 80.2, 30.9, 15.0), disk(H, W, 20.0, 70.0, 6.2)]
    ring = disk(H, W, 60.0, 70.0, 10.0) & ~disk(H, W, 60.0, 70.0, 4.0)
    two_parts = disk(H, W, 100.0, 75.0, 5.0) | disk(H, W, 100.0, 90.0, 4.0)
    return masks + [ring, two_parts]


@pytest.fixture
def entries():
    masks = mixed_masks()
    return [entry(m, category=i % 4 + 1, score=0.95 - 0.1 * i) for i, m in enumerate(masks)]


# ------------------------------------------------------------------------ GeoJSON


@pytest.mark.parametrize("diameter", [10, 11, 14, 20, 33])
@pytest.mark.parametrize("centre", [(30.0, 30.0), (30.5, 29.25), (31.7, 30.3)])
def test_disk_round_trips_through_polygon(diameter, centre):
    mask = disk(64, 64, *centre, diameter / 2)
    geometry = mask_to_geometry(mask)
    assert geometry["type"] == "Polygon" and len(geometry["coordinates"]) == 1
    back = rasterize(geometry, 64, 64)
    assert iou(back, mask) >= 0.98
    assert np.array_equal(back, mask)  # the pixel-corner outline is exact


def test_random_masks_round_trip_exactly():
    """Noise masks (holes, islands in holes, pixels touching at corners, one-pixel lines)
    come back pixel for pixel, with simple rings, at any offset."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 16, 2))
        mask = rng.random((h, w)) < rng.uniform(0.2, 0.8)
        x0, y0 = (int(v) for v in rng.integers(0, 50, 2))
        geometry = mask_to_geometry(mask, x0, y0)
        if not mask.any():
            assert geometry is None
            continue
        for polygon in polygons_of(geometry):
            for ring in polygon:
                validate_ring(ring, "random mask")
        full = np.zeros((y0 + h, x0 + w), bool)
        full[y0:, x0:] = mask
        assert np.array_equal(rasterize(geometry, y0 + h, x0 + w), full)


def test_ring_shaped_cell_keeps_its_hole():
    mask = disk(H, W, 50.0, 50.0, 12.0) & ~disk(H, W, 50.0, 50.0, 5.0)
    geometry = mask_to_geometry(mask)
    assert geometry["type"] == "Polygon"
    outer, hole = geometry["coordinates"]  # exactly one inner ring
    assert shoelace2(outer) > 0 > shoelace2(hole)
    back = rasterize(geometry, H, W)
    assert iou(back, mask) >= 0.98
    assert not back[50, 50] and back[50, 40]  # the hole stays empty


def test_mask_in_two_parts_becomes_multipolygon():
    mask = disk(H, W, 30.0, 30.0, 6.0) | disk(H, W, 60.0, 30.0, 5.0)
    geometry = mask_to_geometry(mask)
    assert geometry["type"] == "MultiPolygon" and len(geometry["coordinates"]) == 2
    assert all(len(polygon) == 1 for polygon in geometry["coordinates"])
    assert iou(rasterize(geometry, H, W), mask) >= 0.98
    # Pixels touching only at a corner are separate parts (4-connectivity).
    diagonal = np.array([[1, 0], [0, 1]], bool)
    geometry = mask_to_geometry(diagonal, 5, 7)
    assert geometry["type"] == "MultiPolygon"
    squares = [sorted(map(tuple, polygon[0][:-1])) for polygon in geometry["coordinates"]]
    assert squares == [[(5, 7), (5, 8), (6, 7), (6, 8)], [(6, 8), (6, 9), (7, 8), (7, 9)]]


def test_single_pixel_is_its_square():
    geometry = mask_to_geometry(np.ones((1, 1), bool), 3, 4)
    ring = geometry["coordinates"][0]
    assert sorted(map(tuple, ring[:-1])) == [(3, 4), (3, 5), (4, 4), (4, 5)]
    assert ring[0] == ring[-1] and shoelace2(ring) == 2


def test_geojson_structure_is_what_qupath_reads(entries):
    masks = mixed_masks()
    data = predictions_to_geojson(entries, CLASS_NAMES, COLORS, image_name="img_a")
    json.loads(json.dumps(data))  # JSON-ready
    validate_qupath_geojson(data)
    assert len(data["features"]) == len(entries)
    for index, (feature, mask, e) in enumerate(zip(data["features"], masks, entries)):
        assert feature["id"] == feature_id("img_a", index)
        assert feature["properties"]["measurements"] == {"score": e["score"]}
        assert feature["properties"]["classification"]["name"] == \
            CLASS_NAMES[e["category_id"] - 1]
        assert iou(rasterize(feature["geometry"], H, W), mask) >= 0.98
    types = [f["geometry"]["type"] for f in data["features"]]
    assert types == ["Polygon"] * 5 + ["MultiPolygon"]
    assert len(data["features"][4]["geometry"]["coordinates"]) == 2  # the ring keeps its hole
    # Deterministic ids: the same image gives the same file, another image other ids.
    assert predictions_to_geojson(entries, CLASS_NAMES, COLORS, image_name="img_a") == data
    other = predictions_to_geojson(entries, CLASS_NAMES, COLORS, image_name="img_b")
    assert not {f["id"] for f in other["features"]} & {f["id"] for f in data["features"]}


def test_write_geojson_file(tmp_path, entries):
    path = geojson_path(tmp_path / "geojson", "img_a")
    assert path.name == "img_a.geojson"
    assert write_geojson(path, entries, CLASS_NAMES, COLORS) == path
    data = json.loads(path.read_text(encoding="utf-8"))
    validate_qupath_geojson(data)
    assert data == predictions_to_geojson(entries, CLASS_NAMES, COLORS, image_name="img_a")
    assert [p.name for p in path.parent.iterdir()] == ["img_a.geojson"]  # no temporary left


def test_geojson_objects_are_detections_or_editable_annotations(tmp_path, entries):
    detections = predictions_to_geojson(entries, CLASS_NAMES, COLORS, image_name="img_a")
    annotations = predictions_to_geojson(entries, CLASS_NAMES, COLORS, image_name="img_a",
                                         object_type="annotation")
    validate_qupath_geojson(detections)  # the default: detections
    validate_qupath_geojson(annotations, object_type="annotation")
    for feature in annotations["features"]:  # nothing else changes
        feature["properties"]["objectType"] = "detection"
    assert annotations == detections
    path = write_geojson(tmp_path / "a.geojson", entries, CLASS_NAMES, COLORS,
                         object_type="annotation")
    validate_qupath_geojson(json.loads(path.read_text()), object_type="annotation")
    with pytest.raises(ValueError, match="object type"):
        predictions_to_geojson(entries, CLASS_NAMES, COLORS, object_type="cell")


def test_default_colors_are_the_catalog_colors(entries):
    from seg_project.data.catalog import distinct_colors

    data = predictions_to_geojson(entries[:2], CLASS_NAMES)
    validate_qupath_geojson(data, colors=distinct_colors(4))


def test_empty_mask_entry_has_no_feature():
    entries = [entry(np.zeros((H, W), bool)), entry(disk(H, W, 20, 20, 6))]
    data = predictions_to_geojson(entries, CLASS_NAMES, COLORS, image_name="x")
    assert [f["id"] for f in data["features"]] == [feature_id("x", 1)]


# ------------------------------------------------------------------------ label TIFFs


def test_label_tiffs_round_trip(tmp_path, entries):
    masks = mixed_masks()
    written = write_label_tiffs(tmp_path, "img_a", entries, H, W)
    assert written == list(label_tiff_paths(tmp_path, "img_a"))
    assert [p.name for p in written] == ["img_a_instances.tif", "img_a_classes.tif"]
    for path in written:
        with tifffile.TiffFile(path) as tif:
            assert len(tif.pages) == 1 and tif.pages[0].compression == 8  # zlib (deflate)
    assert tifffile.imread(written[0]).dtype == np.uint16
    assert tifffile.imread(written[1]).dtype == np.uint8
    instances, classes = read_mask(written[0]), read_mask(written[1])
    assert instances.shape == (H, W) and int(instances.max()) == len(entries)
    # The masks do not overlap and scores decrease with the entry index: id = index + 1.
    for index, (mask, e) in enumerate(zip(masks, entries)):
        assert iou(instances == index + 1, mask) >= 0.98
        assert np.all(classes[instances == index + 1] == e["category_id"])
    assert np.array_equal(classes > 0, instances > 0)


def test_label_tiffs_sidecar_names_classes_and_instances(tmp_path, entries):
    written = write_label_tiffs(tmp_path, "img_a", entries, H, W, CLASS_NAMES, COLORS)
    sidecar = label_sidecar_path(tmp_path, "img_a")
    assert written == [*label_tiff_paths(tmp_path, "img_a"), sidecar]
    assert sidecar.name == "img_a_labels.json"
    labels = json.loads(sidecar.read_text(encoding="utf-8"))
    assert labels["instances_file"] == "img_a_instances.tif"
    assert labels["classes_file"] == "img_a_classes.tif" and labels["background"] == 0
    assert labels["classes"] == [{"id": n, "name": name, "color": color} for n, (name, color)
                                 in enumerate(zip(CLASS_NAMES, COLORS), start=1)]
    instances, classes = read_mask(written[0]), read_mask(written[1])
    assert [i["id"] for i in labels["instances"]] == list(range(1, int(instances.max()) + 1))
    for instance in labels["instances"]:  # each id's class is the class TIFF's there
        assert set(np.unique(classes[instances == instance["id"]])) == {instance["class_id"]}
    order = paint_label_maps(entries, H, W, return_order=True)[2]
    assert [i["score"] for i in labels["instances"]] == [entries[k]["score"] for k in order]
    assert [i["class_id"] for i in labels["instances"]] == [entries[k]["category_id"]
                                                           for k in order]
    # A class outside the names is refused before anything is written.
    with pytest.raises(DatasetError, match="category_id 5"):
        write_label_tiffs(tmp_path / "bad", "img", [dict(entries[0], category_id=5)], H, W,
                          CLASS_NAMES, COLORS)
    assert not (tmp_path / "bad").exists()


def test_overlap_higher_score_wins():
    low = disk(H, W, 40.0, 40.0, 10.0)
    high = disk(H, W, 50.0, 40.0, 10.0)
    hidden = disk(H, W, 52.0, 40.0, 3.0)  # inside `high`, lower score: keeps no pixel
    entries = [entry(low, 1, 0.5), entry(hidden, 3, 0.2), entry(high, 2, 0.8)]
    instances, classes, order = paint_label_maps(entries, H, W, return_order=True)
    assert order.tolist() == [2, 0]  # ids 1..n in descending score, the hidden one has none
    assert int(instances.max()) == 2
    contested = low & high
    assert contested.any() and np.all(instances[contested] == 1) and np.all(classes[contested] == 2)
    assert np.array_equal(instances == 1, high)
    assert np.array_equal(instances == 2, low & ~high)
    # Entry order does not matter, only scores do.
    again, _ = paint_label_maps(entries[::-1], H, W)
    assert np.array_equal(again, instances)


def test_empty_entries(tmp_path):
    instances, classes = paint_label_maps([], H, W)
    assert instances.shape == classes.shape == (H, W)
    assert not instances.any() and not classes.any()
    assert predictions_to_geojson([], CLASS_NAMES, COLORS) == {"type": "FeatureCollection",
                                                               "features": []}
    paths = write_label_tiffs(tmp_path / "labels", "empty", [], H, W)
    assert all(not read_mask(p).any() and read_mask(p).shape == (H, W) for p in paths)
    written = write_course_layout(tmp_path / "course", "empty", [], H, W)
    assert written == []
    assert list(course_layout_folder(tmp_path / "course", "empty").iterdir()) == []
    path = write_geojson(tmp_path / "empty.geojson", [], CLASS_NAMES, COLORS)
    validate_qupath_geojson(json.loads(path.read_text()))


def test_label_dtypes():
    assert label_dtype(0) == np.uint16 and label_dtype(65535) == np.uint16
    assert label_dtype(65536) == np.uint32
    assert label_dtype(255, small=np.uint8) == np.uint8
    assert label_dtype(256, small=np.uint8) == np.uint16


def test_class_instance_masks_number_each_class_from_one():
    instances = np.array([[1, 2, 3], [4, 0, 5]])
    classes = np.array([[2, 1, 2], [4, 0, 2]])
    masks = class_instance_masks(instances, classes)
    assert sorted(masks) == [1, 2, 4]
    assert masks[2].tolist() == [[1, 0, 2], [0, 0, 3]]
    assert masks[1].tolist() == [[0, 1, 0], [0, 0, 0]]
    assert masks[4].tolist() == [[0, 0, 0], [1, 0, 0]]


# ------------------------------------------------------------------------ course layout


def test_course_layout_reads_back_as_a_dataset(tmp_path, entries):
    masks = mixed_masks()
    image = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    source = tmp_path / "source.tif"
    tifffile.imwrite(source, image)
    out = tmp_path / "predictions"
    written = write_course_layout(out, "img_a", entries, H, W, image_path=source)
    folder = course_layout_folder(out, "img_a")
    assert [p.name for p in written] == ["image.tif", "class1.tif", "class2.tif", "class3.tif",
                                         "class4.tif"]
    assert (folder / "image.tif").read_bytes() == source.read_bytes()
    # Per class, ids 1..n in descending score order.
    assert read_mask(folder / "class1.tif").max() == 2  # entries 0 and 4
    (record,) = load_annotated_split(out, len(CLASS_NAMES), cache_dir=False)
    assert (record["height"], record["width"]) == (H, W)
    annotations = record["annotations"]
    assert len(annotations) == len(entries)
    recovered = [decode(a["segmentation"]).astype(bool) for a in annotations]
    for mask, e in zip(masks, entries):
        best = max(range(len(recovered)), key=lambda k: iou(recovered[k], mask))
        assert iou(recovered[best], mask) >= 0.98
        assert annotations[best]["category_id"] == e["category_id"] - 1  # the reader's 0-based


def test_course_layout_converts_other_image_formats_and_replaces_stale_classes(tmp_path):
    import cv2

    image = np.zeros((H, W, 3), np.uint8)
    image[..., 0] = 200  # red, stored as BGR by OpenCV
    source = tmp_path / "source.png"
    cv2.imwrite(str(source), image[..., ::-1])
    out = tmp_path / "predictions"
    first = [entry(disk(H, W, 30, 30, 8), 3, 0.9)]
    write_course_layout(out, "img", first, H, W)
    folder = course_layout_folder(out, "img")
    assert sorted(p.name for p in folder.iterdir()) == ["class3.tif"]  # no image unless given
    second = [entry(disk(H, W, 60, 40, 8), 1, 0.7)]
    write_course_layout(out, "img", second, H, W, image_path=source)
    assert sorted(p.name for p in folder.iterdir()) == ["class1.tif", "image.tif"]
    assert np.array_equal(tifffile.imread(folder / "image.tif"), image)
    (record,) = load_annotated_split(out, 4, cache_dir=False)
    assert [a["category_id"] for a in record["annotations"]] == [0]


def test_course_layout_refuses_an_image_of_another_size(tmp_path):
    source = tmp_path / "small.tif"
    tifffile.imwrite(source, np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(DatasetError, match="10x10"):
        write_course_layout(tmp_path / "out", "img", [], H, W, image_path=source)
    assert not (tmp_path / "out" / "img").exists()


# ------------------------------------------------------------------------ bad input


def test_bad_entries_are_named(tmp_path):
    good = entry(disk(H, W, 30, 30, 8), 2, 0.9)
    with pytest.raises(DatasetError, match="img: entry 0: category_id 5"):
        predictions_to_geojson([dict(good, category_id=5)], CLASS_NAMES, COLORS,
                               image_name="img")
    with pytest.raises(DatasetError, match="entry 1: score"):
        paint_label_maps([good, dict(good, score=float("nan"))], H, W)
    with pytest.raises(DatasetError, match="is 96x120"):
        paint_label_maps([good], H + 1, W)
    truncated = dict(good, segmentation={"size": [H, W],
                                         "counts": good["segmentation"]["counts"][:-3]})
    with pytest.raises(DatasetError, match="entry 0: segmentation"):
        write_label_tiffs(tmp_path, "img", [truncated], H, W)
    with pytest.raises(DatasetError, match="no RLE segmentation"):
        predictions_to_geojson([{"category_id": 1, "score": 0.5}], CLASS_NAMES, COLORS)
    with pytest.raises(ValueError, match="colors"):
        predictions_to_geojson([good], CLASS_NAMES, COLORS[:2])
    for name in ("", "..", "a/b"):
        with pytest.raises(ValueError, match="cannot name"):
            label_tiff_paths(tmp_path, name)
    assert not list(tmp_path.iterdir())  # nothing was written
