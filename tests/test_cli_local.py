"""`flowfleet validate` and `flowfleet run` on files, through main() and once through the console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from control.cli import main

FLOW = {
    "name": "summary",
    "nodes": [
        {"id": "prompt_1", "type": "PromptTemplate", "params": {"template": "Summarise: {input}"}},
        {"id": "llm_1", "type": "LLM", "params": {"provider": "echo", "model": "echo-1"}},
    ],
    "edges": [{"source": "prompt_1", "target": "llm_1"}],
}


def write(tmp_path: Path, name: str, content: Any) -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else orjson.dumps(content))
    return str(path)


def test_validate_valid_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = write(tmp_path, "one.json", FLOW)
    two = write(tmp_path, "two.json", {**FLOW, "name": "other"})
    assert main(["validate", one, two]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{one}: ok (2 nodes; needs no secrets)",
        f"{two}: ok (2 nodes; needs no secrets)",
    ]
    assert main(["validate", "--quiet", one]) == 0
    assert capsys.readouterr().out == ""


def test_validate_prints_every_problem_of_every_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path, "good.json", FLOW)
    bad = dict(
        FLOW,
        nodes=[
            FLOW["nodes"][0],
            {"id": "llm_1", "type": "LMM"},
            {"id": "p", "type": "PromptTemplate", "params": {"template": "{x.__class__}"}},
        ],
    )
    bad_path = write(tmp_path, "bad.json", bad)
    broken = write(tmp_path, "broken.json", b'{"nodes": [')
    missing = str(tmp_path / "missing.json")
    assert main(["validate", good, bad_path, broken, missing]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{good}: ok (2 nodes; needs no secrets)"
    assert lines[1] == f"{bad_path}: /nodes/1/type: unknown component type 'LMM'; did you mean 'LLM'?"
    assert lines[2].startswith(f"{bad_path}: /nodes/2/params/template: attribute access in {{x.__class__}}")
    assert lines[3].startswith(f"{broken}: /: not valid JSON: ")
    assert lines[4] == f"{missing}: /: cannot read file: No such file or directory"
    assert len(lines) == 5


def test_validate_a_directory_is_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(tmp_path)]) == 1
    assert capsys.readouterr().out.startswith(f"{tmp_path}: /: cannot read file: ")


def test_validate_needs_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate"])
    assert info.value.code == 2


def test_run_prints_outputs_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "flow.json", FLOW)
    assert main(["run", path, "--input", "input=hello world"]) == 0
    assert orjson.loads(capsys.readouterr().out) == {"llm_1": "[echo-1] Summarise: hello world"}


def test_run_with_json_inputs_and_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "flow.json", FLOW)
    assert main(["run", path, "--input-json", '{"input": {"a": 1}}', "--trace", "--timeout", "30"]) == 0
    body = orjson.loads(capsys.readouterr().out)
    assert body["outputs"] == {"llm_1": '[echo-1] Summarise: {"a":1}'}
    assert [entry["node"] for entry in body["trace"]] == ["prompt_1", "llm_1"]
    assert all(entry["status"] == "ok" and entry["duration_ms"] >= 0 for entry in body["trace"])
    assert body["duration_ms"] >= 0


def test_input_flag_wins_over_input_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "flow.json", FLOW)
    assert main(["run", path, "--input-json", '{"input": "json"}', "-i", "input=flag"]) == 0
    assert orjson.loads(capsys.readouterr().out) == {"llm_1": "[echo-1] Summarise: flag"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "novalue"], "--input expects KEY=VALUE, got 'novalue'"),
        (["--input", "=x"], "--input expects KEY=VALUE, got '=x'"),
        (["--input-json", "[1]"], "--input-json must be a JSON object"),
        (["--input-json", "{"], "--input-json is not valid JSON"),
    ],
)
def test_run_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    path = write(tmp_path, "flow.json", FLOW)
    assert main(["run", path, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowfleet: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_run_bad_timeout_is_a_usage_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", write(tmp_path, "flow.json", FLOW), "--timeout", value])
    assert info.value.code == 2


def test_run_missing_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", write(tmp_path, "flow.json", FLOW)]) == 1
    assert capsys.readouterr().err == (
        "flowfleet: missing required input(s): input; "
        "this flow takes input (any, required), system (any, optional)\n"
    )


def test_run_invalid_flow_prints_its_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "flow.json", {"nodes": [{"id": "a", "type": "Nope"}, {"id": "a", "type": "LLM"}]})
    assert main(["run", path, "-i", "input=x"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{path}: /nodes/1/id: node id 'a' is already used by /nodes/0",
        f"{path}: /nodes/0/type: unknown component type 'Nope' (is the package that provides it installed?)",
    ]


def test_console_script_validate(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.json", {"nodes": []})
    script = Path(sys.executable).with_name("flowfleet")
    done = subprocess.run(
        [str(script), "validate", bad], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert done.stdout == f"{bad}: /nodes: a flow needs at least one node\n"


def test_example_flows_validate() -> None:
    flows = sorted(str(p) for p in Path(__file__).parent.parent.joinpath("flows").glob("*.json"))
    assert flows, "the example flows are missing"
    assert main(["validate", "--quiet", *flows]) == 0


LANGFLOW = Path(__file__).parent / "data" / "langflow"


def test_validate_reads_langflow_exports_like_publish_does(capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = str(LANGFLOW / "basic_prompting.json"), str(LANGFLOW / "unsupported.json")
    assert main(["validate", good, bad]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{good}: ok (4 nodes; needs secret OPENAI_API_KEY)"
    assert lines[1].startswith(f"{bad}: /: cannot import LangFlow export: 3 unsupported LangFlow components")
    assert len(lines) == 2


def test_a_reader_that_goes_away_is_exit_141_without_a_traceback(tmp_path: Path) -> None:
    """`flowfleet ... | head`: the pipe's reader is gone before anything is written (EPIPE for sure)."""
    script = Path(sys.executable).with_name("flowfleet")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [str(script), "validate", str(LANGFLOW / "basic_prompting.json")],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 141
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr


@pytest.mark.parametrize(
    ("command", "code"),
    [(["validate"], 1), (["run"], 1), (["publish"], 2), (["sync"], 1), (["import", "langflow"], 1)],
)
def test_a_malformed_json_file_is_reported_once(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    code: int,
) -> None:
    # Nothing reaches a control plane: the file is refused first.
    monkeypatch.setenv("FLOWFLEET_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("FLOWFLEET_TOKEN", "unused")
    broken = write(tmp_path, "broken.json", b'{"nodes": [')
    target = str(tmp_path) if command == ["sync"] else broken
    assert main([*command, target]) == code
    captured = capsys.readouterr()
    said = captured.out + captured.err
    assert said.count("not valid JSON") == 1 and "broken.json" in said, said
