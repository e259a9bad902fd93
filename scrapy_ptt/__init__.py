"""ptt-faces crawler: a Scrapy project (``scrapy crawl ptt_beauty``), its parsing helpers and an offline PTT mirror.

Example::

    from scrapy_ptt.parsing import parse_index
    from scrapy_ptt.mirror import serve_mirror
"""
