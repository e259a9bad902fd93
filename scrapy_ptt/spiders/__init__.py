"""Spiders of the ptt-faces Scrapy project (``scrapy list`` shows them)."""
