"""HTTP front end: validates input, stores uploads, enqueues work, reads results.

It never imports torch, timm, open_clip or rembg.
"""
