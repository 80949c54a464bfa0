"""model-place installed without its compiled search (no C compiler at install time,
issue 14 item 5): it imports, the heuristics work, ``exact`` is a clear error and
``auto`` falls back to the best heuristic after a one-line warning.

The missing extension is simulated in a fresh interpreter (``sys.modules`` entry
``None``: importing it raises ``ImportError``), since this process has it loaded."""

import json
import subprocess
import sys

SCRIPT = r'''
import json
import sys

sys.modules["model_place._search"] = None  # what a build without a C compiler leaves: no extension

from model_ir import Lifetime
from model_ir.cli import main
from model_place import SearchUnavailableError, place

lts = [Lifetime("a", 0, 2, 512), Lifetime("b", 1, 3, 256), Lifetime("c", 2, 4, 512), Lifetime("d", 3, 5, 256)]
out = {"heuristics": {m: place(lts, method=m).arena_bytes
                      for m in ("none", "greedy-size", "best-fit", "caching-allocator")}}
try:
    place(lts, method="exact")
except SearchUnavailableError as e:
    out["exact"] = str(e)
try:
    place(lts, method="skyline")  # the dives are compiled too
except SearchUnavailableError as e:
    out["skyline"] = str(e)
r = place(lts)
place(lts, method="auto")  # the warning is printed once
out["auto"] = {"method": r.method, "arena": r.arena_bytes, "bound": r.lower_bound_bytes, "optimal": r.optimal}
csv = sys.argv[1]
out["cli_exact"] = main(["place", csv, "-o", csv + ".exact.csv", "--method", "exact"])
out["cli_auto"] = main(["place", csv, "-o", csv + ".auto.csv"])
print(json.dumps(out))
'''


def test_place_works_without_the_compiled_search(tmp_path):
    csv = tmp_path / "in.csv"
    csv.write_text("id,lower,upper,size\na,0,2,512\nb,1,3,512\n")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(csv)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["heuristics"] == {"none": 1536, "greedy-size": 768, "best-fit": 768, "caching-allocator": 2 << 20}
    assert out["exact"] == (
        "placer 'exact' needs model-place's compiled search (model_place._search), which is not installed "
        "(model-place was built without a C compiler): reinstall model-place where gcc or clang and the Python "
        "headers are present, or use a heuristic placer (--method best-fit)")
    assert out["skyline"] == out["exact"].replace("placer 'exact'", "placer 'skyline'")
    assert out["auto"] == {"method": "best-heuristic", "arena": 768, "bound": 768, "optimal": True}
    assert out["cli_exact"] == 2 and out["cli_auto"] == 0
    assert (tmp_path / "in.csv.auto.csv").exists() and not (tmp_path / "in.csv.exact.csv").exists()
    err = proc.stderr.splitlines()
    warnings = [line for line in err if line.startswith("model-opt: warning:")]
    assert warnings == [
        "model-opt: warning: model-place's compiled search is not installed (model-place was built without a C "
        "compiler): placer 'auto' uses the best heuristic (greedy-size or best-fit) instead of the exact search; "
        "reinstall model-place where gcc or clang and the Python headers are present for it"]
    errors = [line for line in err if line.startswith("model-opt: error:")]
    assert errors == [f"model-opt: error: {out['exact']}"], err
    assert len(err) == 2, err
