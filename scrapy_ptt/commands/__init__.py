"""Scrapy commands of the project (``COMMANDS_MODULE``): ``crawl`` checks ``ptt_beauty``'s arguments first."""
