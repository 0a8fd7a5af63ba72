"""Public error messages are short reasons: internal details stay in the workers' logs.

Workers store a job's error in its Redis record, and some of those errors carry raw exception
text (Pillow's, the vector store client's, the model's: internal host names, paths, library
internals). Every message the API shows passes through ``short_reason``: a message of a known
safe form is shown as it is, one with a known prefix is cut to that prefix's short reason, and
anything else becomes a generic reason. The ``(gave up after N attempts)`` suffix is kept.
"""
from __future__ import annotations

import re

# Messages the worker builds from our own words and numbers only: shown as they are.
SAFE = re.compile(
    r"cannot decode image: not a readable JPEG, PNG or WebP file"
    r"|cannot decode image: the image is empty or missing"
    r"|image has no pixels \(\d+x\d+\)"
    r"|image is \d+x\d+, over the limit of \d+ pixels"
    r"|worker died while processing this job \(\d+ attempts\)"
    r"|image needs \d+ MiB to decode, over the limit of \d+ MiB"
    r"|vector store refused this product"
    r"|cannot fetch image_url: [A-Za-z0-9 ,.'()_-]{1,160}")  # batcher.fetch: our words, no URL or host
# Messages that go on with raw exception text: the prefix decides the short reason.
BY_PREFIX = (
    ("cannot decode image", "cannot decode image: the file is corrupt, truncated or not a supported image"),
    ("device out of memory", "device out of memory even for one image"),
    ("inference failed", "inference failed"),
    ("vector store unavailable", "vector store unavailable"),
)
GENERIC = "processing failed (the details are in the worker's logs)"
GAVE_UP = re.compile(r"^(?P<head>.*?)(?P<tail> \(gave up after \d+ attempts\))$", re.S)
PHOTO = re.compile(r"^photo \d+ \(image_(file|url) #\d+\): ")  # batcher.stages.photos names the photo: kept


def short_reason(message: str | None) -> str | None:
    if not message:
        return None
    m = GAVE_UP.match(message)
    head, tail = (m["head"], m["tail"]) if m else (message, "")
    photo = p[0] if (p := PHOTO.match(head)) else ""
    head = head[len(photo):]
    if SAFE.fullmatch(head):
        return photo + head + tail
    for prefix, reason in BY_PREFIX:
        if head.startswith(prefix):
            return photo + reason + tail
    return photo + GENERIC + tail
