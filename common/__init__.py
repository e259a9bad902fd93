"""The small base every stage stands on: atomic file writes, JSONL reading, typed configs, the Hub's offline switch.

It knows no stage: nothing here imports ``scrapy_ptt``, ``curation``, ``evaluation`` or ``training``.
"""
