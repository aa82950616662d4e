"""The AssetStore port on Cassandra (see store.py)."""

from core.metadata.stores.cassandra.rows import parent_dir
from core.metadata.stores.cassandra.store import CassandraAssetStore

__all__ = ["CassandraAssetStore", "parent_dir"]
