"""The images of one tenant: one record object per image, its thumbnail, and the PNG it describes.

Layout under the artifact root (the PNG of a run's image stays in its run's folder):

    <tenant>/library/images/<image_name>.json        the record (InvokeAI's image record fields, see `new_record`)
    <tenant>/library/thumbnails/<uuid>.webp           at most 256 px, made once when the image is saved
    <tenant>/uploads/<image_name>                     an uploaded image's PNG
    <tenant>/runs/<dag_id>/<run_id>/images/<image_name>   a run's image's PNG

One object per record, never a shared file: writers in many processes (tasks on several workers, uploads)
cannot lose each other's records. The record is written last, so a record always has its PNG and thumbnail.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterator, Optional

from invokeai_provider.errors import ArtifactNotFoundError, InvokeAIProviderError
from invokeai_provider.storage.base import ArtifactBackend, check_key, tenant_segment
from invokeai_provider.storage.library.names import IMAGE_NAME_PATTERN, is_image_name, new_image_name

if TYPE_CHECKING:
    from PIL.Image import Image

THUMBNAIL_SIZE = 256  # InvokeAI's: the longer side, in pixels
IMAGE_CATEGORIES = ("general", "mask", "control", "user", "other")
# InvokeAI's PNG text chunks: what made the image, read back to recall it; an upload keeps them
METADATA_CHUNK = "invokeai_metadata"
GRAPH_CHUNK = "invokeai_graph"
WORKFLOW_CHUNK = "invokeai_workflow"
KEPT_CHUNKS = (METADATA_CHUNK, WORKFLOW_CHUNK, GRAPH_CHUNK)


class ImageNotFoundError(ArtifactNotFoundError):
    """No image of that name in the tenant's library (another tenant's images are never found)."""


class ImageLibraryError(InvokeAIProviderError):
    """A library request that cannot be done: not an image, a bad category, too many pixels."""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat()


def new_record(*, image_name: str, key: str, width: int, height: int, origin: str, category: str,
               is_intermediate: bool, has_workflow: bool, board_id: Optional[str] = None,
               created_at: Optional[str] = None, **made_by: Any) -> dict[str, Any]:
    """An image record: InvokeAI's fields (``image_name``, ``image_origin``, ``image_category``, size,
    ``session_id``, ``node_id``, ``is_intermediate``, ``starred``, ``has_workflow``, times, ``board_id``), the
    object's ``key``, and what made it (``made_by``: tenant, dag_id, run_id, task_id, map_index, item_index,
    session_id, node_id; None for an upload)."""
    if category not in IMAGE_CATEGORIES:
        raise ImageLibraryError(f"image_category {category!r}: expected one of {', '.join(IMAGE_CATEGORIES)}")
    now = created_at or utc_now()
    return {"image_name": image_name, "image_origin": origin, "image_category": category, "width": width,
            "height": height, "is_intermediate": is_intermediate, "starred": False, "has_workflow": has_workflow,
            "created_at": now, "updated_at": now, "board_id": board_id, "key": key,
            **{k: made_by.get(k) for k in ("tenant", "dag_id", "run_id", "task_id", "map_index", "item_index",
                                           "session_id", "node_id")}}


class ImageLibrary:
    """One tenant's images in an artifact store."""

    def __init__(self, backend: ArtifactBackend, tenant: str) -> None:
        self.backend = backend
        self.tenant = tenant_segment(tenant)
        self.prefix = f"{self.tenant}/library"

    # --- keys -----------------------------------------------------------------------------------------------------

    def _checked(self, image_name: str) -> str:
        if not is_image_name(image_name):
            raise ImageNotFoundError(f"image {image_name!r} is not an image name of this library (expected "
                                     f"{IMAGE_NAME_PATTERN}, as InvokeAI names images)")
        return image_name

    def record_key(self, image_name: str) -> str:
        return f"{self.prefix}/images/{self._checked(image_name)}.json"

    def thumbnail_key(self, image_name: str) -> str:
        return f"{self.prefix}/thumbnails/{self._checked(image_name).removesuffix('.png')}.webp"

    def upload_key(self, image_name: str) -> str:
        return f"{self.tenant}/uploads/{self._checked(image_name)}"

    # --- reading --------------------------------------------------------------------------------------------------

    def find(self, image_name: str) -> Optional[dict[str, Any]]:
        """The image's record, or None when the tenant has no image of that name."""
        if not is_image_name(image_name):
            return None
        try:
            return json.loads(self.backend.read_bytes(self.record_key(image_name)))
        except ArtifactNotFoundError:
            return None

    def get(self, image_name: str) -> dict[str, Any]:
        record = self.find(image_name)
        if record is None:
            raise ImageNotFoundError(f"image {image_name!r} not found in tenant {self.tenant!r}'s library")
        return record

    def image_key(self, record: dict[str, Any]) -> str:
        """The PNG's key, which must be the tenant's own (a record is data: it never points elsewhere)."""
        key = check_key(str(record.get("key") or ""))
        if not key.startswith(f"{self.tenant}/"):
            raise ImageNotFoundError(f"image {record.get('image_name')!r}: its record points outside tenant "
                                     f"{self.tenant!r}")
        return key

    def read_image(self, image_name: str, record: Optional[dict[str, Any]] = None) -> bytes:
        """The PNG; ``record``: the image's record when the caller has already read it (no second read)."""
        return self.backend.read_bytes(self.image_key(record if record is not None else self.get(image_name)))

    def read_thumbnail(self, image_name: str) -> bytes:
        """The WebP thumbnail, read straight from its key (one read: a gallery page asks for a hundred)."""
        try:
            return self.backend.read_bytes(self.thumbnail_key(image_name))
        except ArtifactNotFoundError:
            raise ImageNotFoundError(f"image {image_name!r} not found in tenant {self.tenant!r}'s library") from None

    def record_versions(self) -> Iterator[tuple[str, str]]:
        """(image_name, version) of every record, from one listing: what an index compares to know what changed."""
        for key, version in self.backend.list_versions(f"{self.prefix}/images"):
            name = key.rsplit("/", 1)[-1].removesuffix(".json")
            if is_image_name(name):
                yield name, version

    # --- writing --------------------------------------------------------------------------------------------------

    def add(self, record: dict[str, Any], image: "Image") -> dict[str, Any]:
        """Makes the image's thumbnail, then writes its record (the PNG is already at ``record["key"]``)."""
        self.image_key(record)
        self.backend.write_bytes(self.thumbnail_key(record["image_name"]), thumbnail_webp(image))
        self._write(record)
        return record

    def _write(self, record: dict[str, Any]) -> None:
        self.backend.write_bytes(self.record_key(record["image_name"]),
                                 json.dumps(record, sort_keys=True, default=str).encode())

    def upload(self, data: bytes, *, board_id: Optional[str] = None, category: str = "user",
               is_intermediate: bool = False) -> dict[str, Any]:
        """Stores an uploaded image as a PNG (InvokeAI's metadata chunks kept) with a new name; its record."""
        image, chunks = _decode_upload(data)
        png = png_bytes(image, chunks)
        name = new_image_name()
        key = self.upload_key(name)
        self.backend.write_bytes(key, png)
        record = new_record(image_name=name, key=key, width=image.width, height=image.height, origin="external",
                            category=category, is_intermediate=is_intermediate, has_workflow=bool(
                                {WORKFLOW_CHUNK, GRAPH_CHUNK} & chunks.keys()),
                            board_id=board_id, tenant=self.tenant)
        return self.add(record, image)

    def update(self, image_name: str, **changes: Any) -> dict[str, Any]:
        """Sets ``starred``, ``board_id`` (None: no board), ``image_category`` or ``is_intermediate``.

        A read-modify-write of the one record: two people changing the same image at the same moment keep the
        later change (as two InvokeAI tabs would)."""
        allowed = {"starred", "board_id", "image_category", "is_intermediate"}
        unknown = sorted(set(changes) - allowed)
        if unknown:
            raise ImageLibraryError(f"cannot change {', '.join(unknown)} of an image (only {', '.join(sorted(allowed))})")
        if "image_category" in changes and changes["image_category"] not in IMAGE_CATEGORIES:
            raise ImageLibraryError(f"image_category {changes['image_category']!r}: expected one of "
                                    f"{', '.join(IMAGE_CATEGORIES)}")
        record = self.get(image_name)
        record.update(changes, updated_at=utc_now())
        self._write(record)
        return record

    def delete(self, image_name: str) -> None:
        """Removes the record first (the image leaves every listing), then the thumbnail and the PNG."""
        record = self.get(image_name)
        key = self.image_key(record)
        self.backend.delete(self.record_key(image_name))
        self.backend.delete(self.thumbnail_key(image_name))
        self.backend.delete(key)


def thumbnail_webp(image: "Image") -> bytes:
    """A WebP of the image, its longer side at most `THUMBNAIL_SIZE` (InvokeAI's thumbnails)."""
    thumbnail = image.copy()
    if thumbnail.mode not in ("RGB", "RGBA"):
        thumbnail = thumbnail.convert("RGBA" if "A" in thumbnail.getbands() else "RGB")
    thumbnail.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    buffer = io.BytesIO()
    thumbnail.save(buffer, format="WEBP", quality=80)
    return buffer.getvalue()


def _decode_upload(data: bytes) -> tuple["Image", dict[str, str]]:
    """The uploaded image, checked (a real image, within ``[invokeai] max_image_pixels``), and its InvokeAI chunks."""
    from PIL import Image, UnidentifiedImageError

    from invokeai_provider.config import settings

    limit = settings().max_image_pixels
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.width * opened.height > limit:
                raise ImageLibraryError(f"uploaded image is {opened.width}x{opened.height}, more than "
                                        f"[invokeai] max_image_pixels ({limit:,} pixels)")
            opened.load()
            chunks = {k: v for k, v in opened.info.items() if k in KEPT_CHUNKS and isinstance(v, str)}
            image = opened.copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageLibraryError(f"the upload is not an image PIL can read ({exc})") from None
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    return image, chunks


def png_bytes(image: "Image", chunks: dict[str, str]) -> bytes:
    """The image as a PNG with these text chunks (InvokeAI's metadata, workflow, graph), at InvokeAI's
    compression level 1 (fast; RLE where it suits the image)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=1)
    return buffer.getvalue()


def read_chunks(png: bytes) -> dict[str, Any]:
    """The InvokeAI ``metadata``, ``graph`` and ``workflow`` a PNG carries (None where it has none)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        info = dict(image.info)
    found: dict[str, Any] = {}
    for field, chunk in (("metadata", METADATA_CHUNK), ("graph", GRAPH_CHUNK), ("workflow", WORKFLOW_CHUNK)):
        try:
            found[field] = json.loads(info[chunk]) if isinstance(info.get(chunk), str) else None
        except json.JSONDecodeError:
            found[field] = None
    return found
