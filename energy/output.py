"""Power samples as compact columns and as the ``power.parquet`` table (PowerSample schema)."""
from __future__ import annotations

import dataclasses
import typing
from array import array
from typing import Any, Iterable

from energy.records import PowerSample

_ARROW_TYPES = {int: "int64", float: "float64", str: "string"}


def power_schema() -> Any:
    """The pyarrow schema of ``PowerSample`` (same as the run directory's ``power.parquet``)."""
    import pyarrow as pa

    hints = typing.get_type_hints(PowerSample)
    return pa.schema([(f.name, getattr(pa, _ARROW_TYPES[hints[f.name]])())
                      for f in dataclasses.fields(PowerSample)])


class SampleColumns:
    """Samples kept as two float arrays plus a small table of distinct series.

    A long monitored command at 10 Hz produces millions of samples; stored as objects they would
    cost hundreds of bytes each, as columns about 20.
    """

    def __init__(self) -> None:
        self.t_s = array("d")
        self.watts = array("d")
        self.series_index = array("I")
        self._series: dict[tuple, int] = {}          # (rank, node, domain, device, source) -> index

    def extend(self, samples: Iterable[PowerSample]) -> None:
        for s in samples:
            key = (s.rank, s.node, s.domain, s.device, s.source)
            index = self._series.setdefault(key, len(self._series))
            self.t_s.append(s.t_s)
            self.watts.append(s.watts)
            self.series_index.append(index)

    def __len__(self) -> int:
        return len(self.t_s)

    def to_table(self) -> Any:
        import pyarrow as pa

        keys = list(self._series)
        cols: dict[str, list] = {"rank": [], "node": [], "domain": [], "device": [], "source": []}
        for i in self.series_index:
            for name, value in zip(cols, keys[i]):
                cols[name].append(value)
        data = {"rank": cols["rank"], "node": cols["node"], "t_s": list(self.t_s), "domain": cols["domain"],
                "device": cols["device"], "watts": list(self.watts), "source": cols["source"],
                "attempt": [0] * len(self.t_s)}     # one monitored command: a single attempt
        schema = power_schema()
        return pa.table({name: data[name] for name in schema.names}, schema=schema)
