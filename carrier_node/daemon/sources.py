"""The node's data source and the engine over it.

Opened (and validated) off the event loop. Unusable data does not stop the daemon: the error is
kept, requests are refused with it, and the source is tried again at the next request, so
fixed files (or a warehouse back up) need no restart.
"""

from __future__ import annotations

import asyncio
import logging

from carrier_node.config import NodeConfig
from carrier_node.data.control_totals import ControlTotals
from carrier_node.data.source import DataSource
from carrier_node.query.engine import Engine
from fedoversight.errors import DataSourceError

log = logging.getLogger(__name__)


class DataAccess:
    def __init__(
        self,
        config: NodeConfig,
        *,
        record_secret: str,
        clamped: bool,
        source: DataSource | None = None,
        control_totals: ControlTotals | None = None,
    ) -> None:
        """``record_secret``: the node's secret for record keys; ``clamped``: statistics come
        with clamped sums too (differential privacy); ``source``: a source to use instead of
        the configured one; ``control_totals``: the carrier's declared totals."""
        self.config = config
        self.source = source
        self.engine: Engine | None = None
        #: Why the source is unusable (None while it is usable or not yet opened).
        self.error: DataSourceError | None = None
        self._record_secret = record_secret
        self._clamped = clamped
        self._control_totals = control_totals
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Open the data source (validating it) unless it is open already; an unusable one is
        logged and kept as :attr:`error`."""
        async with self._lock:
            if self.engine is not None:
                return
            try:
                await self._open()
            except DataSourceError as exc:
                log.error("data source unusable: %s", exc.detail)
                self.error = exc
            else:
                if self.error is not None:
                    log.info("data source usable again")
                self.error = None

    async def _open(self) -> None:
        if self.source is None and self.config.warehouse is not None:
            from carrier_node.data.warehouse import PostgresSource

            warehouse = PostgresSource(self.config.warehouse)
            await asyncio.to_thread(warehouse.open)
            self.source = warehouse
        if self.source is None:
            from carrier_node.data.files import FileSource

            assert self.config.data_dir is not None
            files = FileSource(
                self.config.data_dir,
                threads=self.config.engine_threads,
                memory_limit=self.config.engine_memory_limit,
                temp_directory=self.config.state_dir / "engine-spill",
                csv_encoding=self.config.csv_encoding,
            )
            await asyncio.to_thread(files.open)  # logs every located problem itself
            self.source = files
        self.engine = Engine(
            self.source,
            self.config.carrier_id,
            record_secret=self._record_secret,
            clamped=self._clamped,
            control_totals=self._control_totals,
        )

    def snapshot(self) -> str:
        """The data source's description (stats its files: taken once per result)."""
        assert self.source is not None
        return self.source.snapshot()
