"""Read and check a bundle: the folder `python -m export` writes and the robot runs.

`manifest.json` is the whole contract: with it, numpy and onnxruntime a reader can run the model (see
export/BUNDLE.md). Loading checks the format version, every required field, and every file's sha256;
any problem is a `BundleError` that says what is wrong and how to fix it.

    bundle = Bundle.load("bundles/student-int8")
    bundle.path("vision")                    # Path to vision.onnx, verified
    bundle.manifest["action"]["token_ids"]   # the 256 action ids
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.atomic_io import sha256_file
from runtime.errors import UserError

BUNDLE_FORMAT = "vla-edge-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
# Top-level manifest fields a runtime needs, and the keys each must hold.
REQUIRED = {
    "model": ("name", "parameters"),
    "precision": (),
    "files": (),
    "graphs": ("vision", "decoder_action"),
    "decoder": ("layers", "heads", "kv_heads", "head_size", "hidden_size", "vocab_size", "max_positions"),
    "embedding": ("file", "shape", "dtype"),
    "tokenizer": ("bos_id", "eos_id", "pad_id"),
    "prompt": ("layout", "action_template", "image_tokens", "prompts"),
    "image": ("height", "width", "channel_order", "layout", "scale", "mean", "std"),
    "action": ("names", "units", "low", "high", "n_bins", "token_ids", "vocab_size"),
    "safety": (),
}
# Fields of the optional `tensorrt` section (engines built by `python -m export tensorrt`).
TENSORRT_REQUIRED = ("tensorrt", "gpu", "compute_capability", "precision", "max_length", "engines")


class BundleError(UserError):
    """A bundle folder that cannot be run as it is."""



@dataclass
class Bundle:
    root: Path
    manifest: dict

    @classmethod
    def load(cls, root: str | os.PathLike, verify_files: bool = True) -> "Bundle":
        root = Path(root)
        path = root / MANIFEST
        if not root.is_dir():
            raise BundleError(f"bundle folder {root} does not exist: export one with `python -m export CHECKPOINT --out {root}`")
        if not path.is_file():
            raise BundleError(f"{root} has no {MANIFEST}: it is not a bundle (export one with `python -m export`)")
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise BundleError(f"{path} is not valid JSON ({err}): copy the bundle again") from None
        if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{path} is not a vla-edge bundle manifest (format should be '{BUNDLE_FORMAT}')")
        if manifest.get("version") != BUNDLE_VERSION:
            raise BundleError(f"{path} is bundle version {manifest.get('version')}; this runtime reads version "
                              f"{BUNDLE_VERSION}: export the bundle again with this vla-edge")
        for field, keys in REQUIRED.items():
            if field not in manifest:
                raise BundleError(f"{path} lacks the field '{field}': the manifest is incomplete; export the bundle again")
            missing = [k for k in keys if k not in manifest[field]]
            if missing:
                raise BundleError(f"{path}: '{field}' lacks {', '.join(missing)}: export the bundle again")
        bundle = cls(root, manifest)
        if verify_files:
            bundle.verify_files()
        bundle.check_consistency()
        return bundle

    def verify_files(self) -> None:
        """Every file listed in the manifest exists and matches its sha256."""
        for key, entry in self.manifest["files"].items():
            path = self.root / entry["path"]
            if not path.is_file():
                raise BundleError(f"bundle file {path} ({key}) is missing: copy the whole bundle folder again")
            if sha256_file(path) != entry["sha256"]:
                raise BundleError(f"bundle file {path} ({key}) does not match its sha256 in the manifest: it was "
                                  f"modified or damaged; copy the bundle again or re-export it")

    def check_consistency(self) -> None:
        """Cross-field checks: the action table, the image spec and the decoder sizes agree."""
        m = self.manifest
        action, decoder = m["action"], m["decoder"]
        ids = action["token_ids"]
        if len(ids) != action["n_bins"] or len(set(ids)) != len(ids) or not all(0 <= i < decoder["vocab_size"] for i in ids):
            raise BundleError(f"{self.root}: action token_ids must be {action['n_bins']} distinct ids below "
                              f"{decoder['vocab_size']}: the manifest is damaged; export the bundle again")
        dims = len(action["names"])
        if not (len(action["low"]) == len(action["high"]) == len(action["units"]) == dims):
            raise BundleError(f"{self.root}: action names, units, low and high differ in length: export the bundle again")
        if any(hi <= lo for lo, hi in zip(action["low"], action["high"])):
            raise BundleError(f"{self.root}: an action range has high <= low: export the bundle again")
        image = m["image"]
        if image["channel_order"] not in ("RGB", "BGR") or len(image["mean"]) != 3 or len(image["std"]) != 3:
            raise BundleError(f"{self.root}: image spec needs channel_order RGB or BGR and 3 means and stds")
        if "tensorrt" in m:
            self.check_tensorrt()

    def check_tensorrt(self) -> None:
        """The optional `tensorrt` section: its fields, and every engine listed under `files` (whose sha256
        `verify_files` checks). Whether the engines suit this machine is the TensorRT engine's check."""
        section, fix = self.manifest["tensorrt"], f"rebuild the engines with `python -m export tensorrt {self.root}`"
        missing = [k for k in TENSORRT_REQUIRED if k not in section]
        if missing:
            raise BundleError(f"{self.root}: the tensorrt section lacks {', '.join(missing)}: {fix}")
        if section["precision"] not in ("fp32", "fp16", "int8"):
            raise BundleError(f"{self.root}: tensorrt precision {section['precision']!r} is not fp32, fp16 or int8: {fix}")
        if not isinstance(section["max_length"], int) or not 1 <= section["max_length"] <= self.manifest["decoder"]["max_positions"]:
            raise BundleError(f"{self.root}: tensorrt max_length {section['max_length']!r} is not within the decoder's "
                              f"{self.manifest['decoder']['max_positions']} positions: {fix}")
        for graph in ("vision", "decoder_action"):
            engine = section["engines"].get(graph)
            if not engine or engine.get("file") not in self.manifest["files"] or not engine.get("profiles"):
                raise BundleError(f"{self.root}: the tensorrt section has no {graph} engine listed under files, "
                                  f"with its profiles: {fix}")

    def path(self, key: str) -> Path:
        """The file of `files[key]` (already verified when the bundle was loaded)."""
        try:
            return self.root / self.manifest["files"][key]["path"]
        except KeyError:
            raise BundleError(f"{self.root}: the manifest lists no file '{key}': export the bundle again") from None

    def embedding_table(self) -> np.ndarray:
        """(vocab, hidden) the decoder's input embeddings."""
        table = np.load(self.path(self.manifest["embedding"]["file"]), allow_pickle=False)
        if list(table.shape) != list(self.manifest["embedding"]["shape"]):
            raise BundleError(f"{self.root}: embedding table is {list(table.shape)}, the manifest says "
                              f"{self.manifest['embedding']['shape']}: export the bundle again")
        return table
