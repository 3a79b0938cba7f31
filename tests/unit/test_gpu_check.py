"""benchmarks/gpu/check.py, the budgeted GPU run, driven here with tiny fake parts (no GPU, no torch).

No test asserts a duration: caps are a few seconds so a killed part ends the test quickly, and every check is on
what the driver reported and wrote.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu" / "check.py")
check = importlib.util.module_from_spec(_spec)
sys.modules["gpu_check"] = check  # dataclasses look their module up by name
_spec.loader.exec_module(check)


def python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", textwrap.dedent(code))


def env() -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie waits for its parent to read its status; it runs nothing


def test_a_part_past_its_cap_is_killed_with_its_whole_group(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    hang = check.Part("hang", python(f"""
        import subprocess, sys, time
        from pathlib import Path
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        Path({str(pid_file)!r}).write_text(str(child.pid))
        print("started", flush=True)
        time.sleep(120)
    """), cap_s=5, result="hang.json", read=lambda: {"never": "read"})
    after = check.Part("after", python("print('after')"), cap_s=5)

    summary = check.run_check([hang, after], tmp_path / "out", budget_s=60, env=env())

    parts = {part["name"]: part for part in summary["parts"]}
    assert parts["hang"]["status"] == "timed_out" and "cap of 5 s" in parts["hang"]["reason"]
    assert not is_running(int(pid_file.read_text()))  # the grandchild went with the group
    assert parts["after"]["status"] == "ok"  # the check goes on after a hang
    assert "[hang] started" in (tmp_path / "out" / "log.txt").read_text()


def test_later_parts_are_skipped_when_the_budget_is_short(tmp_path):
    """The driver itself, once, with a budget of 30 s: a part whose cap no longer fits is skipped, a smaller one
    after it still runs."""
    parts = [
        check.Part("first", python("print('first')"), cap_s=10),
        check.Part("too-big", python("print('never')"), cap_s=40),
        check.Part("small", python("print('small')"), cap_s=5),
    ]

    summary = check.run_check(parts, tmp_path, budget_s=30, env=env())

    statuses = {part["name"]: part["status"] for part in summary["parts"]}
    assert statuses == {"first": "ok", "too-big": "skipped", "small": "ok"}
    skipped = summary["parts"][1]
    assert "cap of 40 s does not fit" in skipped["reason"] and "seconds" not in skipped
    assert summary["finished"] and summary["budget_s"] == 30
    assert "[too-big] never" not in (tmp_path / "log.txt").read_text()


def test_a_stretching_part_gets_what_the_earlier_parts_left_short_of_the_later_caps(tmp_path):
    quick = check.Part("quick", python("print('done')"), cap_s=20)
    compile_like = check.Part("compile", python("print('compiling')"), cap_s=5, stretch=True)
    last = check.Part("last", python("print('last')"), cap_s=10)

    summary = check.run_check([quick, compile_like, last], tmp_path / "out", budget_s=60, env=env())

    caps = {part["name"]: part["cap_s"] for part in summary["parts"]}
    assert caps["quick"] == 20 and caps["last"] == 10
    assert 40 <= caps["compile"] <= 50  # 60 s less what "quick" took, less the 10 s kept for "last"
    assert all(part["status"] == "ok" for part in summary["parts"])


def test_each_part_result_and_the_summary_exist_as_soon_as_it_ends(tmp_path):
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    writer = check.Part("writer", python(f"open({str(scratch / 'raw.json')!r}, 'w').write('{{\"value\": 7}}')"),
                        cap_s=10, result="shared.json", key="first", read=lambda: check.read_json(scratch / "raw.json"))
    # the next part, while it runs, finds the first part's result and its status in the summary
    reader = check.Part("reader", python(f"""
        import json, sys
        shared = json.load(open({str(out / 'shared.json')!r}))
        summary = json.load(open({str(out / 'gpu-check.json')!r}))
        status = {{part["name"]: part["status"] for part in summary["parts"]}}
        expected = {{"writer": "ok", "reader": "pending", "broken": "pending"}}
        sys.exit(0 if shared == {{"first": {{"value": 7}}}} and status == expected else 1)
    """), cap_s=10, result="shared.json", key="second", read=lambda: {"value": 8})
    broken = check.Part("broken", python("raise SystemExit(3)"), cap_s=10, result="broken.json",
                        read=lambda: check.read_json(scratch / "missing.json"))

    summary = check.run_check([writer, reader, broken], out, budget_s=60, env=env())

    assert [part["status"] for part in summary["parts"]] == ["ok", "ok", "failed"]
    assert json.loads((out / "shared.json").read_text()) == {"first": {"value": 7}, "second": {"value": 8}}
    assert summary["parts"][2]["exit_code"] == 3 and "FileNotFoundError" in summary["parts"][2]["result_error"]
    assert json.loads((out / "gpu-check.json").read_text()) == json.loads(json.dumps(summary, default=str))
    assert sorted(path.name for path in out.iterdir()) == ["gpu-check.json", "log.txt", "shared.json"]


def test_the_plan_fits_the_budget_and_the_files_that_come_back():
    wheels = (Path(".whl/diffusers-0.42.1-py3-none-any.whl"),)
    parts = check.gpu_parts(Path("/scratch"), "python3", wheels)
    names = [part.name for part in parts]
    assert names[:3] == ["setup", "probe", "a-tests"] and names[-1] == "e-compile-tests"
    assert sum(part.cap_s for part in parts) <= check.DEFAULT_BUDGET_S
    files = check.planned_files(parts)
    assert len(files) <= check.MAX_FILES and all(check.FILE_NAME.match(name) for name in files)
    check.check_plan(parts)


def test_the_dit_suite_fits_the_budget_and_the_files_that_come_back():
    wheels = (Path(".whl/diffusers-0.42.1-py3-none-any.whl"),)
    parts = check.gpu_parts(Path("/scratch"), "python3", wheels, suite="dit")
    names = [part.name for part in parts]
    assert names[:4] == ["setup", "probe", "g-tests", "g-flux-eager"] and names[-1] == "g-schnell"
    assert sum(part.cap_s for part in parts) <= check.DEFAULT_BUDGET_S
    assert len(check.planned_files(parts)) <= check.MAX_FILES
    check.check_plan(parts)
    flux = next(part for part in parts if part.name == "g-flux-eager")
    assert "flux-dev-random" in flux.argv and "--no-reference" in flux.argv and "1024x1024" in flux.argv


def test_a_plan_of_more_files_than_come_back_is_refused():
    parts = [check.Part(f"p{i}", ("true",), cap_s=1, result=f"p{i}.json") for i in range(7)]
    with pytest.raises(ValueError, match="writes 9 files but only 8 come back"):
        check.check_plan(parts)
    with pytest.raises(ValueError, match="plain file name"):
        check.check_plan([check.Part("deep", ("true",), cap_s=1, result="a/b.json")])


def test_without_cuda_it_prints_the_plan_and_exits_0(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(check, "cuda_present", lambda: False)
    monkeypatch.delenv("OUT", raising=False)
    out = tmp_path / "results"

    assert check.main(["--out", str(out)]) == 0

    printed = capsys.readouterr().out
    for name in ("probe", "a-tests", "b-syncs", "c-serve-eager", "c-serve-graphs", "d-sdxl", "e-compile-bench"):
        assert name in printed
    assert "dry run: no CUDA" in printed and "of the 540 s budget" in printed and "*" not in printed.split("\n")[2]
    assert not out.exists()  # a dry run writes nothing


def test_options_select_and_resize_parts(monkeypatch, capsys):
    monkeypatch.setenv("OUT", "/from/env")
    assert check.main(["--dry-run", "--parts", "e", "--cap", "e-compile-bench=400", "--budget", "500"]) == 0
    printed = capsys.readouterr().out
    assert "/from/env" in printed and "a-tests" not in printed and "probe" in printed
    assert " e-compile-bench   400 s" in printed
    assert check.main(["--dry-run", "--cap", "nope=3"]) == 2


def test_junit_is_cut_down_to_counts_and_failures(tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text("""<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="4" time="12.5">
  <testcase classname="tests.gpu.test_cuda" name="test_ok" time="1.0"/>
  <testcase classname="tests.gpu.test_cuda" name="test_bad" time="1.0">
    <failure message="AssertionError: max abs difference 0.2">long traceback</failure></testcase>
  <testcase classname="tests.gpu.test_cuda" name="test_broken" time="1.0"><error message="boom"/></testcase>
  <testcase classname="tests.gpu.test_cuda" name="test_skip" time="0"><skipped message="needs CUDA"/></testcase>
</testsuite></testsuites>""")

    summary = check.junit_summary(junit)

    assert {key: summary[key] for key in ("passed", "failed", "errors", "skipped")} == {
        "passed": 1, "failed": 1, "errors": 1, "skipped": 1}
    assert summary["failures"][0] == {"name": "tests.gpu.test_cuda::test_bad", "kind": "failure",
                                      "message": "AssertionError: max abs difference 0.2",
                                      "details": "long traceback"}
    assert summary["skipped_tests"] == [{"name": "tests.gpu.test_cuda::test_skip", "reason": "needs CUDA"}]
    assert summary["seconds"] == 12.5
