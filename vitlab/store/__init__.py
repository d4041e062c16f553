"""The embedding store: the only path from (backbone, source) to embeddings."""

from vitlab._io import ENV_VAR
from vitlab.store.bags import Bags, make_bags
from vitlab.store.embeddings import Embeddings
from vitlab.store.fingerprint import SCHEMA_VERSION, EmbeddingKey
from vitlab.store.store import EmbeddingStore, default_cache_dir

__all__ = ["Bags", "make_bags", "Embeddings", "EmbeddingKey", "EmbeddingStore", "default_cache_dir", "ENV_VAR", "SCHEMA_VERSION"]
