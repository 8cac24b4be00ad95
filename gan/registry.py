"""One small registry for every kind of component the suite lets a user add: generators, discriminators,
metrics.

Each kind is a `Registry` of named records with the check that kind needs, run when a record is
registered (so a typo is refused where it was written, naming the file, not later in another job); an
optional discovery that collects the records the first time anything asks; and one wording for an
unknown name. A Registry reads as a mapping (`name in METRICS`, `METRICS[name]`, iteration in its order).
Plain Python: no Keras, no config.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from gan.errors import UserError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Records of one kind, by their `name`.

    `check(record)` raises ValueError naming what is wrong with a record; `discover(registry)` registers the
    records found the first time the registry is read; `order(record)` sorts `names()` (default: the order
    of registration); `hint` ends the unknown-name line (where more of the kind come from)."""

    def __init__(self, kind: str, *, check: Callable[[T], None] = lambda record: None,
                 discover: Callable[["Registry[T]"], None] | None = None,
                 order: Callable[[T], object] | None = None, hint: str = ""):
        self.kind, self._check, self._discover, self._order, self._hint = kind, check, discover, order, hint
        self._records: dict[str, T] = {}
        self._where: dict[str, str] = {}
        self._discovered = discover is None

    def _ready(self) -> None:
        if not self._discovered:
            self._discovered = True  # first: a discovery that reads the registry must not start another
            self._discover(self)

    def register(self, record: T, where: str = "") -> T:
        """Add `record` (ValueError naming what is wrong with it, or the file that registered its name first)."""
        self._ready()
        self._check(record)
        name = record.name
        if name in self._records and self._records[name] is not record:
            first = self._where.get(name)
            raise ValueError(f"{self.kind} {name!r} is already registered" + (f" (by {first})" if first else ""))
        self._records[name] = record
        if where:
            self._where[name] = where
        return record

    def unregister(self, name: str) -> None:
        self._records.pop(name, None)
        self._where.pop(name, None)

    def names(self) -> tuple[str, ...]:
        self._ready()
        records = list(self._records.values())
        if self._order is not None:
            records.sort(key=self._order)
        return tuple(r.name for r in records)

    def where(self, name: str) -> str:
        """The file that registered `name` ('' when registered in code)."""
        return self._where.get(name, "")

    def lookup(self, name: str) -> T:
        """The record, or a UserError naming the registered ones."""
        self._ready()
        if name not in self._records:
            raise UserError(f"unknown {self.kind} {name!r} (registered: {', '.join(self.names())}"
                            + (f"; {self._hint}" if self._hint else "") + ")")
        return self._records[name]

    # Mapping: what the callers of a plain dict registry read.
    def __getitem__(self, name: str) -> T:
        self._ready()
        return self._records[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._ready()
        return len(self._records)
