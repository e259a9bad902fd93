"""Curation stage of ptt-faces: downloaded PTT photos -> aligned 64x64 face ``datasets`` folder.

Modules: ``images`` (robust decoding), ``detect`` (face detectors and the gender model, the only place that
imports onnxruntime or insightface), ``align`` (pure geometry), ``filters`` (pure quality metrics and hashes),
``dataset`` (the run: feed -> cache -> filters -> ``save_to_disk``), ``previews`` (contact sheets and
histograms), ``config`` (typed config), ``push`` (Hub upload), ``cli`` (``ptt-curate``), ``synth`` (offline
test photos and constructed bad cases) and ``review`` (the review page)::

    ptt-curate --config configs/curation.yaml feed=demo_out/feed.jsonl images=demo_out/images out=demo_out/curated
"""
