"""The language-neutral contract between the golden store and a port in any runtime (numpy only, no torch).

* `export`: the inputs a port must feed, every golden tensor and a JSON manifest (names, shapes, dtypes,
  layouts, call indices, config, tolerances) as safetensors or npz, plus one replay bundle per module call
  (golden inputs, the module's weight slice, expected outputs) so a port can unit-test one layer.
* `dump`: a port's tensor dump (safetensors, npz or HDF5; a file or a folder) as a check candidate,
  replayed in golden execution order (chained mode).
* `mapping`: the port's name and layout map (TOML): rename rules with regex groups and index arithmetic,
  explicit tables, per-rule transforms (permute, split, reshape, dtype), ignore rules with a reason.
* `blame`: for dumps, the first module whose outputs fail while the producers of its inputs pass.

See docs/porting-guide.md.
"""

from .candidates import CandidateSpec, load_candidate, make_candidate
from .dump import DumpCandidate
from .export import ExportOptions, add_replay_bundles, export, load_bundle, replay_bundle_path
from .manifest import validate_export
from .mapped import MappedCandidate, load_python_map
from .mapping import Mapping, load_mapping, parse_mapping

__all__ = [
    "CandidateSpec",
    "DumpCandidate",
    "ExportOptions",
    "MappedCandidate",
    "Mapping",
    "add_replay_bundles",
    "export",
    "load_bundle",
    "load_candidate",
    "load_mapping",
    "load_python_map",
    "make_candidate",
    "parse_mapping",
    "replay_bundle_path",
    "validate_export",
]
