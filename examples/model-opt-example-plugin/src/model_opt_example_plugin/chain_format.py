"""The ``chain`` frontend: a graph from a text file, one op per line.

``NAME BYTES [INPUT ...]``: op ``NAME`` writes a buffer of ``BYTES`` bytes and reads
the outputs of the ops ``INPUT ...`` (default: the op on the line above). Blank
lines and ``#`` comments are ignored; the last op's buffer is the graph's output.
"""

from __future__ import annotations

from pathlib import Path

from model_ir import Buffer, FormatError, Graph, Op


def read_chain(path: str) -> Graph:
    """The graph of the ``.chain`` file ``path`` (sizes in bytes)."""
    buffers, ops = [], []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split("#")[0].split()
        if not fields:
            continue
        if len(fields) < 2 or not fields[1].isdigit():
            raise FormatError(f"{path}:{number}: expected NAME BYTES [INPUT ...], got {line.strip()!r}")
        name, size, inputs = fields[0], int(fields[1]), fields[2:] or [op.id for op in ops[-1:]]
        buffers.append(Buffer(f"{name}.out", size))
        ops.append(Op(name, inputs=[f"{x}.out" for x in inputs], outputs=[f"{name}.out"]))
    if buffers:
        buffers[-1] = Buffer(buffers[-1].id, buffers[-1].size, output=True)
    return Graph(buffers, ops, name=Path(path).stem)


class ChainFrontend:
    name = "chain"
    suffixes = (".chain",)  # files model-opt reads with this frontend when no --frontend is given

    def load(self, source, **options) -> Graph:
        return read_chain(source)
