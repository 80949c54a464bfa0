"""Files the user names for output (``-o``, ``--save-plan``): checked, then written atomically.

The rules every command follows (README, "Command line"):

- an existing file is kept unless the command is given ``--force``: the check runs
  before any work, so a long solve never ends in a refusal;
- a path that exists and is not a regular file (a directory, device, FIFO or socket)
  is refused, with or without ``--force``, and so is one in a folder where no file can
  be created (a read-only folder), before the work too;
- a symlink is written through: its target gets the new contents and the link stays;
- the contents go to a uniquely named temporary file in the target's directory that
  is then renamed over the target, so an interrupted write (even ``kill -9``) leaves
  the old file or the new one, never half of one. The temporary file is removed on
  any exception.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterable

from model_ir.errors import FormatError


def check_output(path: str | os.PathLike[str], *, force: bool = False,
                 inputs: Iterable[str | os.PathLike[str]] = (), flag: str = "", force_name: str = "--force") -> str:
    """Raise :class:`FormatError` unless ``path`` may be written; return the file to write.

    ``force`` allows replacing an existing regular file. ``inputs`` are files the
    command reads: writing over one of them is refused even with ``force``. ``flag``
    names the option in messages, ``force_name`` what the caller passes for ``force``
    (the CLI's ``--force``, a function's ``overwrite=True``). The returned path is
    ``path`` with symlinks resolved.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise FormatError(f"{flag or 'output path'}: expected a file path, got {type(path).__name__}")
    text = os.fspath(path)
    if not text:
        raise FormatError(f"{flag or 'output path'}: the path is empty; name an output file")
    label = f"{flag} {text}" if flag else text
    target = os.path.realpath(text)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        parent = os.path.dirname(target)
        if not os.path.isdir(parent):
            raise FormatError(f"{label}: cannot write: no such directory {parent!r}") from None
        check_writable(parent, label)
        return target
    except OSError as e:
        raise FormatError(f"{label}: cannot check the path: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise FormatError(f"{label}: is a directory; name an output file")
    if not stat.S_ISREG(st.st_mode):
        raise FormatError(f"{label}: is not a regular file (a device, FIFO or socket); "
                          "name a regular file")
    for source in inputs:
        try:
            same = os.path.samefile(target, source)
        except (OSError, TypeError, ValueError):
            same = False
        if same:
            raise FormatError(f"{label}: is the input file {os.fspath(source)!r}; choose another path")
    if not force:
        raise FormatError(f"{label}: file exists; pass {force_name} to replace it")
    check_writable(os.path.dirname(target), label)
    return target


def check_writable(directory: str, label: str) -> None:
    """Raise :class:`FormatError` (``label: cannot write: why``) unless a file can be
    created in ``directory``: found before the work, not after (a read-only folder,
    ``/proc``)."""
    try:
        tmp, fd = _create_temp(directory, "check")
    except OSError as e:
        raise FormatError(f"{label}: cannot write: {e.strerror or e}") from None
    os.close(fd)
    os.unlink(tmp)


def write_output(path: str | os.PathLike[str], data: str | bytes, *, overwrite: bool = True,
                 flag: str = "") -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically, following :func:`check_output`.

    ``overwrite`` False refuses an existing file (the CLI without ``--force``). The refusal
    says ``--force`` for a path given with a command-line ``flag``, else ``overwrite=True``
    (``save_plan``, ``save_graph``, ... called from Python).
    """
    target = check_output(path, force=overwrite, flag=flag, force_name="--force" if flag else "overwrite=True")
    directory, name = os.path.split(target)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    mode = None
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)  # a replaced file keeps its permissions
    except FileNotFoundError:
        pass
    try:
        tmp, fd = _create_temp(directory, name)
    except OSError as e:
        raise FormatError(f"{os.fspath(path)}: cannot write: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as e:
        # Any failure, Ctrl-C included, leaves no temporary file behind.
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise FormatError(f"{os.fspath(path)}: cannot write: {e.strerror or e}") from None
        raise


def _create_temp(directory: str, name: str) -> tuple[str, int]:
    """A new file ``.NAME.<random>.tmp`` in ``directory``, opened for writing.

    Created with mode 0o666 so that the umask applies as for any new file
    (``tempfile.mkstemp`` would make it private to the user).
    """
    for _ in range(100):
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name for {name!r} in {directory!r}")
