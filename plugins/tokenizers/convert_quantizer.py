"""``diffuspeech convert-quantizer INPUT --out centroids.safetensors --trust-pickle``.

Turns a textlesslib/fairseq k-means quantizer (a scikit-learn ``KMeans`` or
``MiniBatchKMeans`` pickled with joblib) into a plain centroids file. Loading a pickle can
run arbitrary code, so it happens only with ``--trust-pickle``. A torch checkpoint holding a
``cluster_centers`` tensor is read weights-only and needs no flag.
"""

from __future__ import annotations

import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffuspeech.errors import ConfigError

EXIT_REFUSED = 2

REFUSAL = (
    "refusing to load {path}: it is a pickle, and loading a pickle can run arbitrary code on this machine. "
    "Convert it only if you trust where the file came from, by rerunning with --trust-pickle."
)


DESCRIPTION = __doc__.split("\n\n", 1)[1]


def configure(p) -> None:
    p.description = DESCRIPTION  # the module's usage notes
    p.add_argument("input", help="k-means pickle (.pkl, .bin, .joblib) or torch checkpoint with cluster_centers")
    p.add_argument("--out", required=True, help="centroids file to write (.safetensors)")
    p.add_argument("--trust-pickle", action="store_true", help="allow unpickling INPUT (runs code it contains)")
    p.set_defaults(func=run)


def _weights_only(path: Path) -> Any | None:
    """A torch checkpoint loadable without unpickling code, else None."""
    try:
        with warnings.catch_warnings():  # plain pickles trigger a protocol warning before failing
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not a safe torch file: fall through to the pickle route
        return None


def _unpickle(path: Path) -> Any:
    """Load a (trusted) pickle: joblib when installed (it also reads plain pickles), else pickle, else torch."""
    try:
        import joblib  # noqa: PLC0415 - optional, comes with scikit-learn
    except ImportError:
        joblib = None
    try:
        if joblib is not None:
            return joblib.load(str(path))
        with open(path, "rb") as f:
            return pickle.load(f)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"{path}: unpickling needs a module that is not installed ({exc}); e.g. pip install scikit-learn") from None
    except Exception as first:  # noqa: BLE001 - maybe a full torch checkpoint instead
        try:
            return torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001
            raise ConfigError(f"{path}: cannot be read as a pickle, joblib or torch file ({first})") from None


def extract_centroids(obj: Any, source: str) -> torch.Tensor:
    """``cluster_centers_`` (scikit-learn), ``cluster_centers`` (dict) or a 2-D array -> ``[K, D]``."""
    if hasattr(obj, "cluster_centers_"):
        centers = obj.cluster_centers_
    elif isinstance(obj, dict) and "cluster_centers" in obj:
        centers = obj["cluster_centers"]
    elif isinstance(obj, (np.ndarray, torch.Tensor)):
        centers = obj
    else:
        raise ConfigError(
            f"{source}: no k-means centroids found in a {type(obj).__name__}; expected a scikit-learn KMeans "
            f"(cluster_centers_), a dict with 'cluster_centers', or a [K, D] array"
        )
    t = torch.as_tensor(np.asarray(centers) if not isinstance(centers, torch.Tensor) else centers).float()
    if t.dim() != 2 or t.shape[0] < 1:
        raise ConfigError(f"{source}: centroids must have shape [K, D], got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ConfigError(f"{source}: centroids contain NaN or infinite values")
    return t


def run(args) -> int:
    path, out = Path(args.input), Path(args.out)
    if not path.is_file():
        raise ConfigError(f"quantizer file not found: {path}")
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out {out}: the centroids file must end in .safetensors")
    obj = _weights_only(path)
    if obj is None:
        if not args.trust_pickle:
            print(REFUSAL.format(path=path), file=sys.stderr)
            return EXIT_REFUSED
        obj = _unpickle(path)
    centroids = extract_centroids(obj, str(path))

    from diffuspeech.quantizers import save_centroids  # noqa: PLC0415 - plugin module

    save_centroids(out, centroids, "kmeans", {"converted_from": path.name})
    print(f"wrote {out}: {centroids.shape[0]} centroids of dimension {centroids.shape[1]}", file=sys.stderr)
    return 0
