"""Cache files that several processes can create at once: a lock per entry, per-process temporary names,
atomic publication, and content digests of model weights to key them on.

    with file_lock(path):                     # one process computes, the others wait and then read
        if not path.exists():
            with atomic_path(path) as tmp:    # written under a per-process name, moved in on success
                torch.save(obj, tmp)

    weights_digest(bridge, up_to_layer=3)     # "3f0c…": embeddings + blocks 0..3 as loaded
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.model.weights import base_weights

# id(tensor) -> (weak reference to it, its in-place version counter, sha1 of its bytes): a weight is re-hashed
# only after it changed. (A WeakKeyDictionary would compare tensors with ==, which is elementwise.)
_TENSOR_DIGESTS: dict[int, tuple[weakref.ref, int, bytes]] = {}
_LAYER_INDEX = re.compile(r"\.(\d+)\.")


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive advisory lock on `<path>.lock` (created if needed) for the block's duration."""
    lock = Path(str(path) + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A per-process temporary file name beside `path`, moved onto `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def publish_folder(out: str | os.PathLike, build: Callable[[Path], None]) -> Path:
    """Create folder `out` once: `build(tmp)` fills a per-process temporary folder that is then renamed to
    `out`. Concurrent callers wait on a lock; whoever comes second finds `out` complete and returns it."""
    out = Path(out)
    with file_lock(out):
        if out.exists() and any(out.iterdir()):
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
        try:
            build(tmp)
            if out.exists():
                out.rmdir()  # empty (checked above)
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _tensor_digest(t: Tensor) -> bytes:
    seen = _TENSOR_DIGESTS.get(id(t))
    if seen is not None and seen[0]() is t and seen[1] == t._version:
        return seen[2]
    data = t.detach().to("cpu").contiguous()
    if data.dtype == torch.bfloat16:  # numpy has no bfloat16: hash its raw 16-bit words
        data = data.view(torch.int16)
    digest = hashlib.sha1(data.numpy().tobytes()).digest()
    for key in [k for k, (ref, _, _) in _TENSOR_DIGESTS.items() if ref() is None]:
        del _TENSOR_DIGESTS[key]  # tensors since freed
    _TENSOR_DIGESTS[id(t)] = (weakref.ref(t), t._version, digest)
    return digest


def weights_digest(bridge: TransformerBridge, up_to_layer: int | None = None) -> str:
    """sha1 over the model's weights as loaded (before live edits): every parameter outside the blocks
    (embeddings, norms, head) and those of blocks 0..up_to_layer (all blocks when None). Statistics of layer
    l's FFN keys depend on exactly these, so a different model saved over the same folder gets a new digest."""
    h = hashlib.sha1()
    for name, t in sorted(base_weights(bridge).items()):
        m = _LAYER_INDEX.search(name)
        if up_to_layer is not None and m is not None and int(m.group(1)) > up_to_layer:
            continue
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(_tensor_digest(t))
    return h.hexdigest()[:16]
