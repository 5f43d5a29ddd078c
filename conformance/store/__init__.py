"""HDF5 golden store: schema, streaming writer, lazy reader. Imports numpy and h5py only."""

from . import manifest
from .reader import Case, GoldenStore, ObjectValue, open_store
from .schema import FORMAT, SCHEMA_VERSION, CallRecord, LeafRecord, OracleRecord, split_name
from .writer import CaseWriter, GoldenWriter, StoragePolicy

__all__ = [
    "FORMAT",
    "SCHEMA_VERSION",
    "CallRecord",
    "Case",
    "CaseWriter",
    "GoldenStore",
    "GoldenWriter",
    "LeafRecord",
    "ObjectValue",
    "OracleRecord",
    "StoragePolicy",
    "manifest",
    "open_store",
    "split_name",
]
