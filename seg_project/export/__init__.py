"""Predictions in formats other than the COCO results JSON, one file (or folder) per image.

- :mod:`seg_project.export.geojson`: QuPath-compatible GeoJSON (a ``FeatureCollection`` of
  detections, or editable annotations, whose polygons trace the pixel corners of each mask,
  holes kept).
- :mod:`seg_project.export.label_tiff`: instance-id and class-id label TIFFs (non-overlapping,
  the higher score wins a contested pixel) with a JSON sidecar naming their numbers, and the
  course layout (``<name>/classN.tif``) so that predictions can be re-read by
  :mod:`seg_project.data.reader` and corrected by hand.
- :mod:`seg_project.export.formats`: the output formats of ``tools/predict.py --format``
  and where each writes;
- :mod:`seg_project.export.from_results`: the same from an existing results file
  (``tools/export.py``).

The two writers take the COCO result entries of one image as given (``category_id`` 1..K,
``score``, compressed RLE ``segmentation``) and paint them into one instance map
(:mod:`seg_project.data.instance_map`, under the overlap rule they are given); thresholds and
caps are the caller's business (:func:`seg_project.export.formats.write_exports` applies one).
Nothing is imported here, so that importing one format does not import the other's
dependencies.
"""
