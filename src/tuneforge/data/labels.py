"""The label vocabulary: label strings <-> class ids, in one fixed (sorted) order."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from tuneforge.errors import InputError, Problem


@dataclass(frozen=True)
class LabelMap:
    """The classes of a model, in the order of its output units.

    Attributes:
        names: Unique label strings; builders sort them so that the same labels always
            give the same ids.
    """

    names: tuple[str, ...]
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(self.names)
        if not all(isinstance(name, str) and name for name in names):
            raise ValueError("label names must be non-empty strings")
        if len(set(names)) != len(names):
            raise ValueError("label names must be unique")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "_ids", {name: i for i, name in enumerate(names)})

    @classmethod
    def from_labels(cls, labels: Iterable[Sequence[str]]) -> LabelMap:
        """Build the map of every label in ``labels`` (one tuple of labels per record)."""
        return cls(tuple(sorted({name for record in labels for name in record})))

    @classmethod
    def from_tables(cls, *label_lists: Iterable[Sequence[str]]) -> LabelMap:
        """Build the map of the labels of several lists (or ``Table`` objects) together."""
        lists = [getattr(item, "labels", item) for item in label_lists]
        return cls.from_labels(record for labels in lists for record in labels)

    @classmethod
    def from_json(cls, data: Sequence[str] | str) -> LabelMap:
        """Rebuild a map from ``to_json()``'s list (or that list as JSON text), order kept."""
        names = json.loads(data) if isinstance(data, str) else data
        return cls(tuple(names))

    def to_json(self) -> list[str]:
        """The names as a JSON-serialisable list, in id order."""
        return list(self.names)

    def index(self, name: str) -> int:
        """The class id of ``name``.

        Raises:
            KeyError: ``name`` is not one of the labels.
        """
        return self._ids[name]

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._ids

    def encode_single(self, labels: Sequence[Sequence[str]]) -> np.ndarray:
        """Class ids of single-label records.

        Args:
            labels: One tuple holding exactly one label per record.

        Returns:
            An int64 array of shape ``(n,)``.

        Raises:
            InputError: A label is unknown, or a record does not have exactly one label.
        """
        self._check_known(labels)
        bad = next((i for i, record in enumerate(labels) if len(record) != 1), None)
        if bad is not None:
            raise InputError(
                f"record {bad + 1} has {len(labels[bad])} labels; single-label data needs one",
                [Problem("", "a record does not have exactly one label", "pass --multi-label")],
            )
        return np.fromiter((self._ids[r[0]] for r in labels), dtype=np.int64, count=len(labels))

    def encode_multi(self, labels: Sequence[Sequence[str]]) -> np.ndarray:
        """Multi-hot rows of multi-label records.

        Args:
            labels: One tuple of labels per record.

        Returns:
            A float32 array of shape ``(n, len(self))`` with 1.0 where a record has a label.

        Raises:
            InputError: A label is unknown.
        """
        self._check_known(labels)
        out = np.zeros((len(labels), len(self.names)), dtype=np.float32)
        for row, record in enumerate(labels):
            out[row, [self._ids[name] for name in record]] = 1.0
        return out

    def _check_known(self, labels: Iterable[Sequence[str]]) -> None:
        unknown = sorted({name for record in labels for name in record} - self._ids.keys())
        if unknown:
            shown = ", ".join(repr(name) for name in unknown[:10])
            raise InputError(
                f"{len(unknown)} unknown label(s): {shown}",
                [
                    Problem(
                        "",
                        f"labels not in the label map: {shown}",
                        "use only the labels of the training data: " + ", ".join(self.names[:10]),
                    )
                ],
            )
