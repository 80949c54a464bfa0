"""Output files (issue 14, item 7): special files refused, existing files kept without
--force, symlinks written through, atomic writes with unique temporary names."""

import json
import os
import stat

import pytest

from model_ir import FormatError
from model_ir.cli import main
from model_ir.output_files import check_output, write_output

CSV = "id,lower,upper,size\na,0,2,4\nb,1,3,4\n"


def test_new_file_is_written_and_no_temp_file_is_left(tmp_path):
    write_output(tmp_path / "out.txt", "hello")
    assert (tmp_path / "out.txt").read_text() == "hello"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_new_file_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_output(tmp_path / "out.txt", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o644


def test_existing_file_is_kept_without_overwrite_and_replaced_with_it(tmp_path):
    p = tmp_path / "out.txt"
    p.write_text("old")
    p.chmod(0o640)
    with pytest.raises(FormatError, match=r"file exists; pass overwrite=True to replace it"):
        write_output(p, "new", overwrite=False)
    with pytest.raises(FormatError, match="^--out .*: file exists; pass --force"):  # a script's option
        write_output(p, "new", overwrite=False, flag="--out")
    assert p.read_text() == "old"
    write_output(p, "new")
    assert p.read_text() == "new" and stat.S_IMODE(p.stat().st_mode) == 0o640


def test_fifo_is_refused_and_kept(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(FormatError, match="not a regular file"):
        write_output(fifo, "x")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_device_node_is_refused(tmp_path):
    with pytest.raises(FormatError, match="not a regular file"):
        check_output("/dev/null", force=True)


def test_symlink_is_written_through_and_stays_a_link(tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    write_output(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


def test_failed_write_removes_its_temp_file(tmp_path, monkeypatch):
    def boom(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        write_output(tmp_path / "out.txt", "x")
    assert os.listdir(tmp_path) == []


def test_stale_temp_file_of_a_killed_write_does_not_block_the_next(tmp_path):
    (tmp_path / ".out.txt.tmp").mkdir()  # the fixed name the old writer used
    write_output(tmp_path / "out.txt", "x")
    assert (tmp_path / "out.txt").read_text() == "x"


def test_empty_path_is_refused():
    with pytest.raises(FormatError, match="path is empty"):
        check_output("", flag="-o")


@pytest.mark.needs("model_place")
@pytest.mark.parametrize("argv", [
    ["place", "{src}", "-o", "{out}"],
    ["place", "{src}", "-o", "{out}", "--method", "best-fit"],
])
def test_place_refuses_an_existing_output_without_force(argv, tmp_path, capsys):
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_text(CSV)
    out.write_text("keep me")
    args = [a.format(src=src, out=out) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("model-opt: error: -o") and "pass --force" in err and err.count("\n") == 1
    assert out.read_text() == "keep me"
    assert main([*args, "--force"]) == 0
    assert out.read_text().startswith("id,lower,upper,size")


@pytest.mark.needs("model_place")
def test_place_refuses_a_fifo_and_an_empty_path(tmp_path, capsys):
    src, fifo = tmp_path / "in.csv", tmp_path / "fifo"
    src.write_text(CSV)
    os.mkfifo(fifo)
    assert main(["place", str(src), "-o", str(fifo), "--force"]) == 2
    assert "not a regular file" in capsys.readouterr().err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert main(["place", str(src), "-o", ""]) == 2
    err = capsys.readouterr().err
    assert err.startswith("model-opt: error: -o: the path is empty") and err.count("\n") == 1


@pytest.mark.needs("model_sched")
def test_schedule_refuses_empty_and_existing_output(tmp_path, capsys):
    from model_ir import save_graph
    from model_ir.json_format import graph_from_dict
    from model_ir.testing.examples import diamond_json

    src, out = tmp_path / "g.json", tmp_path / "plan.json"
    save_graph(graph_from_dict(diamond_json()), src)
    assert main(["schedule", str(src), "-o", "", "--quiet"]) == 2
    assert "the path is empty" in capsys.readouterr().err
    out.write_text("keep me")
    assert main(["schedule", str(src), "-o", str(out), "--quiet"]) == 2
    assert "pass --force" in capsys.readouterr().err and out.read_text() == "keep me"
    assert main(["schedule", str(src), "-o", str(out), "--quiet", "--force"]) == 0
    assert '"model-plan/1"' in out.read_text()


@pytest.mark.needs("model_sched", "model_bench")
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc, where no file can be created")
def test_a_folder_where_no_file_can_be_created_is_refused_before_the_work(capsys, tmp_path):
    """Before: found only when writing, after a capture or a solve of up to a minute."""
    with pytest.raises(FormatError, match=r"^-o /proc/model-opt-test.json: cannot write: "):
        check_output("/proc/model-opt-test.json", flag="-o")
    from model_ir.testing.examples import diamond_json

    graph = tmp_path / "g.json"
    graph.write_text(json.dumps(diamond_json()))
    assert main(["schedule", str(graph), "-o", "/proc/model-opt-test.json", "--quiet"]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert main(["bench", "--graph", str(graph), "--out", "/proc/model-opt-test", "--quiet"]) == 2
    assert "--out /proc/model-opt-test: cannot write" in capsys.readouterr().err
