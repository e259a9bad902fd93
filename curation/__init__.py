"""Curation stage of ptt-faces: downloaded PTT photos -> aligned 64x64 face ``datasets`` folder.

Modules: ``images`` (robust decoding), ``detect`` (face detectors and the gender model, the only place that
imports onnxruntime or insightface), ``align`` (pure geometry), ``filters`` (pure quality metrics and hashes),
``dataset`` (the run: feed -> cache -> filters -> ``save_to_disk``), ``previews`` (contact sheets and
histograms), ``config`` (typed config), ``push`` (Hub upload), ``cli`` (``ptt-curate``), ``synth`` (offline
test photos and constructed bad cases) and ``review`` (the review page)::

    ptt-curate --config configs/curation.yaml feed=demo_out/feed.jsonl images=demo_out/images out=demo_out/curated
"""

import os

# onnxruntime >= 1.30 starts Microsoft's telemetry SDK when it is imported, which leaves an empty
# $TMPDIR/mat-debug-<pid>.log behind in every process (two per curation run with two workers). Its own switch,
# read at import: set here, before any curation module imports onnxruntime or insightface.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
