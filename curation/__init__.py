"""Curation stage of ptt-faces: downloaded PTT photos -> aligned 64x64 face ``datasets`` folder.

Modules: ``record`` (the face record: every field of a curated face and where it goes), ``run`` (the run: feed ->
cache -> filters -> ``save_to_disk``, over its steps in ``inputs``, ``photos``, ``workers``, ``faces`` and
``report``), ``images`` (robust decoding), ``detect`` (face detectors and the gender model, the only place that
imports onnxruntime or insightface), ``align`` (pure geometry), ``filters`` (pure quality metrics, hashes and the
reject decision), ``store`` (the dataset folder's writer and reader), ``generations`` (the run's outputs published
as one set), ``previews`` (contact sheets and histograms), ``config`` (typed config), ``push`` (Hub upload),
``cli`` (``ptt-curate``), ``review`` (the review page) and ``download_filter`` (the crawler's optional photo
filter)::

    ptt-curate --config configs/curation.yaml feed=demo_out/feed.jsonl images=demo_out/images out=demo_out/curated
"""

import os

# onnxruntime >= 1.30 starts Microsoft's telemetry SDK when it is imported, which leaves files behind in $TMPDIR in
# every process (1.30: an empty mat-debug-<pid>.log and .ses; 1.32: .ses). Its own switch,
# read at import: set here, before any curation module imports onnxruntime or insightface.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
