"""InvokeAI's boards for one tenant: ``<tenant>/library/boards/<board_id>.json``, one object per board.

An image is on at most one board, named by its record's ``board_id`` (InvokeAI's ``board_images`` link), so
adding an image to a board is one write of its record. Deleting a board keeps its images (they go back to no
board) or deletes them with it, as InvokeAI's ``DELETE /boards/{id}?include_images=`` does.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Optional

from invokeai_provider.errors import ArtifactNotFoundError, InvokeAIProviderError
from invokeai_provider.storage.library.images import ImageLibrary, utc_now
from invokeai_provider.storage.library.index import ImageIndex, ImageQuery

MAX_BOARD_NAME = 300


class BoardNotFoundError(ArtifactNotFoundError):
    """No board of that id in the tenant."""


class BoardError(InvokeAIProviderError):
    """A board request that cannot be done (an empty name)."""


class Boards:
    """The boards of the tenant of ``library``; ``index`` finds a board's images."""

    def __init__(self, library: ImageLibrary, index: Optional[ImageIndex] = None) -> None:
        self.library = library
        self._index = index
        self.prefix = f"{library.prefix}/boards"

    @property
    def index(self) -> ImageIndex:
        if self._index is None:
            self._index = ImageIndex(self.library)
        return self._index

    def _key(self, board_id: str) -> str:
        try:
            uuid.UUID(board_id)
        except (ValueError, TypeError, AttributeError):
            raise BoardNotFoundError(f"board {board_id!r} not found in tenant {self.library.tenant!r}") from None
        return f"{self.prefix}/{board_id}.json"

    def _write(self, board: dict[str, Any]) -> dict[str, Any]:
        self.library.backend.write_bytes(self._key(board["board_id"]), json.dumps(board, sort_keys=True).encode())
        return board

    def create(self, board_name: str) -> dict[str, Any]:
        """A new board (InvokeAI's board record: ``board_id``, ``board_name``, times, ``archived``, cover)."""
        now = utc_now()
        return self._write({"board_id": str(uuid.uuid4()), "board_name": _checked_name(board_name),
                            "created_at": now, "updated_at": now, "archived": False, "cover_image_name": None})

    def get(self, board_id: str) -> dict[str, Any]:
        try:
            return json.loads(self.library.backend.read_bytes(self._key(board_id)))
        except ArtifactNotFoundError:
            raise BoardNotFoundError(f"board {board_id!r} not found in tenant {self.library.tenant!r}") from None

    def all(self) -> list[dict[str, Any]]:
        """Every board of the tenant, by name."""
        boards = [json.loads(self.library.backend.read_bytes(key))
                  for key in self.library.backend.list(self.prefix) if key.endswith(".json")]
        return sorted(boards, key=lambda b: (b["board_name"].lower(), b["board_id"]))

    def rename(self, board_id: str, board_name: str) -> dict[str, Any]:
        board = self.get(board_id)
        board.update(board_name=_checked_name(board_name), updated_at=utc_now())
        return self._write(board)

    def add_image(self, board_id: str, image_name: str) -> dict[str, Any]:
        """Puts the image on the board (off any other); its record."""
        self.get(board_id)
        return self.library.update(image_name, board_id=board_id)

    def remove_image(self, image_name: str) -> dict[str, Any]:
        return self.library.update(image_name, board_id=None)

    def image_names(self, board_id: str) -> list[str]:
        """The board's images (the index brought up to date first: a board's images must all be found)."""
        self.get(board_id)
        self.index.sync(force=True)
        return self.index.names(ImageQuery(board_id=board_id, include_intermediate=True), sync=False)

    def delete(self, board_id: str, *, include_images: bool = False) -> list[str]:
        """Deletes the board; its images go back to no board, or are deleted too. The names of its images."""
        names = self.image_names(board_id)
        for name in names:
            try:
                if include_images:
                    self.library.delete(name)
                else:
                    self.library.update(name, board_id=None)
            except ArtifactNotFoundError:  # deleted meanwhile
                continue
        self.library.backend.delete(self._key(board_id))
        return names


def _checked_name(board_name: str) -> str:
    name = (board_name or "").strip() if isinstance(board_name, str) else ""
    if not name or len(name) > MAX_BOARD_NAME:
        raise BoardError(f"board_name: expected 1-{MAX_BOARD_NAME} characters, got {board_name!r}")
    return name
