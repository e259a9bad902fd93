"""Template files of the review page (page.html, review.css, review.js), inlined by `curation.review.render_page`.

Example: ``python -c "from importlib import resources; print(resources.files('curation.review_assets'))"``
"""
