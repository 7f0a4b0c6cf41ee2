"""Speakers and the speaker table: name <-> integer id, plus metadata, as plain JSON data.

The table is what a checkpoint stores so that decode/convert can map ``--speaker p225`` to
the embedding row the model was trained with. Ids are the positions of the names sorted
as strings, so the same set of speakers always gets the same ids. This module imports no
torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from vqspeech.errors import DataError


@dataclass(frozen=True)
class Speaker:
    """One speaker: ``name`` (e.g. ``p225``) and optional metadata from the corpus.

    ``gender`` is ``"M"``, ``"F"`` or None; ``age`` in years or None.
    """

    name: str
    age: int | None = None
    gender: str | None = None
    accent: str | None = None
    region: str | None = None
    comment: str | None = None


_FIELDS = ("name", "age", "gender", "accent", "region", "comment")


class SpeakerTable(Sequence[Speaker]):
    """An immutable, ordered list of speakers; a speaker's id is its index.

    ``table.id("p225") -> 0``, ``table[0].name -> "p225"``, ``len(table)`` is the number of
    speakers (the model's ``n_speakers`` must be at least that). :meth:`to_list` and
    :meth:`from_list` convert to and from a JSON-safe list of dicts.
    """

    def __init__(self, speakers: Iterable[Speaker]) -> None:
        self._speakers = tuple(speakers)
        self._ids = {s.name: i for i, s in enumerate(self._speakers)}
        if len(self._ids) != len(self._speakers):
            raise DataError("speaker table lists a speaker twice; speaker names must be unique")

    @classmethod
    def from_speakers(cls, speakers: Iterable[Speaker]) -> SpeakerTable:
        """A table of ``speakers`` sorted by name (the canonical order)."""
        return cls(sorted(speakers, key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._speakers)

    def __getitem__(self, index: int) -> Speaker:  # type: ignore[override]
        return self._speakers[index]

    def __iter__(self) -> Iterator[Speaker]:
        return iter(self._speakers)

    def __contains__(self, name: object) -> bool:
        return name in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SpeakerTable) and self._speakers == other._speakers

    def __hash__(self) -> int:
        return hash(self._speakers)

    def __repr__(self) -> str:
        return f"SpeakerTable({[s.name for s in self._speakers]})"

    @property
    def names(self) -> list[str]:
        """Speaker names in id order."""
        return [s.name for s in self._speakers]

    def id(self, name: str) -> int:
        """The integer id of speaker ``name``; DataError naming the known speakers if absent."""
        try:
            return self._ids[name]
        except KeyError:
            known = ", ".join(self.names[:20]) + (" ..." if len(self) > 20 else "")
            raise DataError(f"unknown speaker {name!r}; known speakers: {known}") from None

    def get(self, name: str) -> Speaker:
        """The :class:`Speaker` called ``name``."""
        return self._speakers[self.id(name)]

    def to_list(self) -> list[dict[str, Any]]:
        """JSON-safe ``[{"id": 0, "name": "p225", "age": 23, "gender": "F", ...}, ...]``."""
        return [{"id": i, **asdict(s)} for i, s in enumerate(self._speakers)]

    @classmethod
    def from_list(cls, data: Any) -> SpeakerTable:
        """Rebuild a table saved with :meth:`to_list`; DataError if it is malformed."""
        if not isinstance(data, list):
            raise DataError("speaker table must be a list of {id, name, ...} records")
        speakers: list[Speaker] = []
        for i, row in enumerate(data):
            if not isinstance(row, dict) or not isinstance(row.get("name"), str):
                raise DataError(f"speaker table row {i} has no name; the table is corrupt")
            if row.get("id", i) != i:
                raise DataError(
                    f"speaker table row {i} has id {row.get('id')!r}; ids must be 0..N-1 in order"
                )
            unknown = set(row) - set(_FIELDS) - {"id"}
            if unknown:
                raise DataError(f"speaker table row {i} has unknown fields {sorted(unknown)}")
            age = row.get("age")
            speakers.append(
                Speaker(
                    name=row["name"],
                    age=int(age) if isinstance(age, (int, float)) else None,
                    gender=_opt_str(row.get("gender")),
                    accent=_opt_str(row.get("accent")),
                    region=_opt_str(row.get("region")),
                    comment=_opt_str(row.get("comment")),
                )
            )
        return cls(speakers)


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
