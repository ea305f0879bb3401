"""A CPU stand-in for CUDA graphs, so that the static engine's captured decode step is tested where CI runs.

A CUDA graph records the kernels of one captured call with the addresses of every tensor they read and write,
and each replay runs those kernels again on whatever those addresses hold then. So a step replays correctly
only if everything that changes between steps reaches it through tensors it reads in place (the cache, the
attention mask, positions, next tokens, the steering mask), never through a Python number or a tensor made
afresh by the host; and capture fails on anything that makes the host wait for the device (``.item()``,
``bool(t)``, ``nonzero``).

:class:`Graph` does the same with PyTorch's dispatcher on a CPU: :func:`capture` records every operator call
(operator, arguments, outputs) made inside it, and then fills what the step made with NaN (CUDA records the
kernels without running them, so a result read before a replay is garbage); :meth:`Graph.replay` calls the same operators again on the same
tensor objects and writes each result into the output recorded at capture, as the kernels write into their
fixed addresses. Python numbers are kept as captured (as the kernels' arguments are); a tensor that the step
reads but did not make is held by a weak reference, and replay fails if it is gone (on a GPU its memory may hold
something else by then). An operator that needs the device's answer on the host fails the capture, as on CUDA.

:func:`install` puts it in place of ``torch.cuda``'s graph, stream and capture functions (with ``monkeypatch``);
:func:`capture_on_cpu` also makes ``vaxis.generate``'s static engine capture its decode step on a CPU.
"""

from __future__ import annotations

import contextlib
import types
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

HOST_WAITS = {
    torch.ops.aten._local_scalar_dense.default,  # .item(), int(t), float(t), bool(t)
    torch.ops.aten.is_nonzero.default,
    torch.ops.aten.nonzero.default,
    torch.ops.aten.equal.default,
    torch.ops.aten.lift_fresh.default,  # torch.tensor(data) inside the step: a copy from the host
}


class _Weak:
    """A tensor the step reads but did not make (weights, cache, buffers): replay reads it as it is then."""

    def __init__(self, tensor: torch.Tensor):
        self.ref, self.shape = weakref.ref(tensor), tuple(tensor.shape)

    def get(self) -> torch.Tensor:
        tensor = self.ref()
        if tensor is None:
            raise RuntimeError(f"the captured step reads a tensor of shape {self.shape} that no longer exists")
        return tensor


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls: list = []
        self.made: set[int] = set()  # ids of the tensors made inside the capture (kept alive by self.calls)

    def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in HOST_WAITS:
            raise RuntimeError(f"operation not permitted when stream is capturing: {func} waits on the device")
        out = func(*args, **kwargs)

        def hold(x):
            if not isinstance(x, torch.Tensor) or id(x) in self.made or x.dim() == 0:
                return x  # made here (the graph's own memory), a number, or a scalar baked in as the kernel's
            return _Weak(x)

        self.calls.append((func, tree_map(hold, (args, kwargs)), out))
        self.made.update(id(t) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
        return out


class Graph:
    """``torch.cuda.CUDAGraph`` on a CPU (see the module docstring)."""

    def __init__(self):
        self.calls: list | None = None
        self.replays = 0

    @contextlib.contextmanager
    def capture(self):
        recorder = _Recorder()
        with recorder:
            yield
        self.calls = recorder.calls
        self._forget_results()

    def _forget_results(self) -> None:
        """CUDA only records a captured call, so what it made holds nothing until a replay: fill with NaN every
        floating tensor made in the capture that is not a view of a tensor it read (the cache written in place)."""
        read = {t.get().untyped_storage().data_ptr() for _, held, _ in self.calls for t in tree_flatten(held)[0]
                if isinstance(t, _Weak)}  # fmt: skip
        for _, _, out in self.calls:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.is_floating_point() and t.untyped_storage().data_ptr() not in read:
                    t.fill_(float("nan"))

    def replay(self) -> None:
        assert self.calls is not None, "replay before capture"
        for func, held, out in self.calls:
            args, kwargs = tree_map(lambda x: x.get() if isinstance(x, _Weak) else x, held)
            result = func(*args, **kwargs)
            for mine, new in zip(tree_flatten(out)[0], tree_flatten(result)[0]):
                if isinstance(mine, torch.Tensor) and not _same_memory(mine, new):
                    mine.copy_(new)
        self.replays += 1


def _same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.untyped_storage().data_ptr(), a.storage_offset(), a.stride()) == (
        b.untyped_storage().data_ptr(), b.storage_offset(), b.stride())  # fmt: skip


class _Stream:
    def wait_stream(self, other) -> None:
        pass


def install(monkeypatch) -> list[Graph]:
    """Replace ``torch.cuda``'s graphs and streams by the CPU stand-ins; returns the list of graphs made."""
    graphs: list[Graph] = []

    class CUDAGraph(Graph):  # a class, as annotations such as `torch.cuda.CUDAGraph | None` need
        def __init__(self):
            super().__init__()
            graphs.append(self)

    cuda = types.SimpleNamespace(
        CUDAGraph=CUDAGraph,
        graph=lambda g, **kw: g.capture(),
        Stream=_Stream,
        stream=lambda s: contextlib.nullcontext(),
        current_stream=_Stream,
    )
    for name, value in vars(cuda).items():
        monkeypatch.setattr(torch.cuda, name, value)
    return graphs


def capture_on_cpu(monkeypatch) -> list[Graph]:
    """:func:`install`, and every static decoder that ``vaxis.generate`` makes asks for graphs (on a CPU it asks for
    none): ``generate(..., engine="static")`` then captures its decode step and replays it. Returns the graphs."""
    import importlib

    from vaxis.core.engine_static import StaticDecoder

    graphs = install(monkeypatch)
    gen = importlib.import_module("vaxis.core.generate")  # the module (vaxis.core.generate is also the function)
    real = gen._decoder

    def wants_graphs(*args):
        decoder = real(*args)
        decoder.graphs = isinstance(decoder, StaticDecoder)
        return decoder

    monkeypatch.setattr(gen, "_decoder", wants_graphs)
    return graphs
