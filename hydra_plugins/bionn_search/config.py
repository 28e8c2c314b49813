"""The Hydra registration of `hydra/sweeper=bionn_search`: bionn.search.schema's SearchConf with the
sweeper's `_target_` (the keys and defaults are stated there once; docs/search.md)."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from bionn.search.schema import SearchConf


@dataclass
class SearchSweeperConf(SearchConf):
    """SearchConf with the sweeper Hydra instantiates."""

    _target_: str = "hydra_plugins.bionn_search.sweeper.SearchSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="bionn_search", node=SearchSweeperConf)
