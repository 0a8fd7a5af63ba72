"""An upload's photos: repeated ``image_file`` parts and ``image_url`` fields, checked one by one
and put in one job (``batcher.queue.photos``).

The photos are numbered files first, then URLs, each kind in the order sent (multipart keeps
the order of the parts, but an order across two field names is not something forms promise).
Errors name the photo (``photo 2 (image_file #3): ...``) when there are several; one photo's
answers read as they did before photos existed.
"""
from __future__ import annotations

import hashlib

from api.errors import ApiError
from api.validation import check_image, check_url
from batcher.queue import photos as photo_list
from batcher.queue.photos import UPLOAD, Photo


def check_size(data: bytes, max_bytes: int) -> bytes:
    if len(data) > max_bytes:
        raise ApiError(413, "payload_too_large", f"the image is over the limit of {max_bytes} bytes", "image_file")
    return data


def count(files: list[bytes], urls: list[str], max_photos: int) -> None:
    """At least one photo, at most ``max_photos`` (MAX_PHOTOS_PER_PRODUCT)."""
    if not files and not urls:
        raise ApiError(422, "missing_field", "give image_file (a photo) or image_url (where to fetch it)",
                       "image_file")
    if len(files) + len(urls) > max_photos:
        raise ApiError(413, "too_many_photos", f"the upload has {len(files) + len(urls)} photos; the limit is "
                       f"MAX_PHOTOS_PER_PRODUCT={max_photos}", "image_file" if files else "image_url")


def photos(files: list[bytes], urls: list[str], max_bytes: int, max_pixels: int) -> tuple[list[Photo], bytes]:
    """Each photo checked (size, type, pixels; a URL's form), and the image key's value."""
    listed = [Photo(i, "", UPLOAD) for i in range(len(files))] + \
             [Photo(len(files) + i, "", url) for i, url in enumerate(urls)]
    several = len(listed) > 1
    checked = []
    for photo in listed:
        try:
            checked.append(_checked(photo, files, max_bytes, max_pixels))
        except ApiError as exc:
            if several:
                exc.message = f"{photo_list.label(listed, photo.index)}: {exc.message}"
            raise
    return checked, photo_list.pack(files)


def _checked(photo: Photo, files: list[bytes], max_bytes: int, max_pixels: int) -> Photo:
    if photo.url:
        check_url(photo.url)
        return photo
    data = check_size(files[photo.index], max_bytes)
    content_type = check_image(data, max_pixels)
    return Photo(photo.index, hashlib.sha256(data).hexdigest(), UPLOAD, content_type)
