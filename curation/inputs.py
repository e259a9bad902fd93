"""What a curation run reads: the crawl feed's photo references, the image store (and which paths are inside it),
and the review decisions. Bad input is a :class:`CurationError`, one line naming the path and the fix.

Example::

    from pathlib import Path
    from curation.inputs import read_feed, store_relative
    refs, posts = read_feed(Path("demo_out/feed.jsonl"))
    print(posts, refs[0].rel_path, store_relative(refs[0].rel_path, Path("demo_out/images").resolve()))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from curation.config import CurationConfig
from scrapy_ptt.items import FeedError, read_posts

__all__ = ["CurationError", "PhotoRef", "read_feed", "store_relative", "load_review", "read_inputs"]


class CurationError(RuntimeError):
    """Bad input for the run; a one-line message naming the path and the fix."""


@dataclass
class PhotoRef:
    """One downloaded image of one post."""

    article_id: str
    image_url: str
    published_at: str
    rel_path: str
    order: int


def read_feed(feed: Path) -> tuple[list[PhotoRef], int]:
    """Photo references of a crawl feed, and the number of posts read."""
    hint = f"run the crawl first (scrapy crawl ptt_beauty -s IMAGES_STORE=<images> -O {feed}) or pass feed=<path>"
    try:
        records = read_posts(feed, missing_hint=hint)
    except FeedError as exc:
        raise CurationError(str(exc)) from None
    refs: list[PhotoRef] = []
    posts = 0
    for rec in records:
        posts += 1
        images = rec.get("images") or []
        if not isinstance(images, list):
            raise CurationError(
                f'{feed}: post {rec["article_id"]}: "images" is {images!r}, not a list of {{url, path}}; '
                "is this a ptt_beauty feed (docs/contracts.md section 1)? crawl it again"
            )
        for img in images:
            if not isinstance(img, dict) or not img.get("path"):
                continue
            refs.append(
                PhotoRef(
                    article_id=str(rec["article_id"]),
                    image_url=str(img.get("url", "")),
                    published_at=str(rec.get("published_at") or ""),
                    rel_path=str(img["path"]),
                    order=len(refs),
                )
            )
    return refs, posts


def store_relative(rel_path: str, store: Path) -> bool:
    """True when ``rel_path`` (a feed's ``images[].path``) names a file inside the resolved image store ``store``:
    relative, no ``..`` climbing out, no symlink leading out."""
    if not rel_path or Path(rel_path).is_absolute() or rel_path.startswith(("/", "\\")) or ":" in rel_path[:3]:
        return False
    try:
        return (store / rel_path).resolve().is_relative_to(store)
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        return False


def load_review(path: Path) -> set[str]:
    """Face ids rejected on the review page (empty when the file does not exist), through the review file's
    one reader (``curation.review.read_review_file``)."""
    from curation.review import ReviewError, read_review_file

    if path.is_dir():
        raise CurationError(
            f"{path}: a folder, not a review file; pass review_path= the review.json exported from the review page "
            "(or move the folder away)"
        )
    if not path.is_file():
        return set()
    try:
        return set(read_review_file(path))
    except ReviewError as exc:
        raise CurationError(str(exc)) from None


def read_inputs(cfg: CurationConfig) -> tuple[Path, Path, Path, list[PhotoRef], int]:
    """``(feed, images, out, photo refs, posts)`` after checking that the feed and the image store are there."""
    for key in ("feed", "images", "out"):
        if not getattr(cfg, key):
            raise CurationError(f"{key} is not set; pass {key}=<path> on the command line or in the config")
    feed, images, out = Path(cfg.feed), Path(cfg.images), Path(cfg.out)
    refs, posts = read_feed(feed)
    if not images.is_dir():
        raise CurationError(
            f"{images}: image store not found; run the crawl with downloads on "
            f"(scrapy crawl ptt_beauty -s IMAGES_STORE={images} ...) or pass images=<IMAGES_STORE>"
        )
    if not refs:
        raise CurationError(
            f"{feed}: no downloaded images in {posts} posts (no images[].path); crawl again with "
            "-s IMAGES_STORE=... so that images are downloaded"
        )
    return feed, images, out, refs, posts
