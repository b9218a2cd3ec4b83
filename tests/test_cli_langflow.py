"""`flowfleet import langflow`: output, options, warnings, and every error path with its exit code."""

from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cluster.langflow import convert
from control.cli import main

DATA = Path(__file__).parent / "data" / "langflow"
BASIC = str(DATA / "basic_prompting.json")


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["import", "langflow", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_prints_the_converted_document(capsys):
    code, out, err = cli(capsys, BASIC)
    assert (code, err) == (0, "flowfleet: the flow needs secret OPENAI_API_KEY: set it on the replicas\n")
    assert json.loads(out) == convert(json.loads(Path(BASIC).read_text()))


def test_echo_conversion_needs_no_secret(capsys):
    code, _, err = cli(capsys, BASIC, "--provider", "echo")
    assert (code, err) == (0, "")


def test_writes_the_output_file_with_options(capsys, tmp_path):
    target = tmp_path / "flow.json"
    code, out, err = cli(
        capsys,
        str(DATA / "two_edges_notes.json"),
        "-o",
        str(target),
        "--name",
        "hello-world",
        "--provider",
        "echo",
        "--keep-notes",
    )
    assert (code, out, err) == (0, "", "")
    flow = json.loads(target.read_text())
    assert flow["name"] == "hello-world"
    assert {n["params"]["provider"] for n in flow["nodes"] if n["type"] == "LLM"} == {"echo"}
    assert "Quick Start" in flow["description"]


def test_reads_stdin(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(Path(BASIC).read_bytes())))
    code, out, _ = cli(capsys, "-")
    assert code == 0
    assert json.loads(out)["name"] == "basic_prompting"


def test_warnings_go_to_stderr_and_the_document_to_stdout(capsys):
    code, out, err = cli(capsys, str(DATA / "embedded_code.json"))
    assert code == 0
    assert err.startswith("flowfleet: warning: node LanguageModelComponent-c0De3: the API key")
    assert "sk-live" not in out + err
    assert json.loads(out)["name"] == "code_everywhere"


def test_unsupported_components_fail_with_one_line(capsys):
    code, out, err = cli(capsys, str(DATA / "unsupported.json"))
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert err.startswith("flowfleet: cannot import LangFlow export: 3 unsupported LangFlow components:")
    for node_id in ("CustomComponent-Qd9zT", "Prompt-eD1t3", "LanguageModelComponent-An7hr"):
        assert node_id in err
    assert "Agent-kx2Lm (" not in err  # no model set: it gets the default model instead


def _write(tmp_path: Path, doc: Any) -> str:
    path = tmp_path / "export.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_a_result_that_does_not_validate_fails(capsys, tmp_path):
    export = json.loads(Path(BASIC).read_text())
    stray = copy.deepcopy(export["data"]["nodes"][0])
    stray["id"] = stray["data"]["id"] = "ChatInput-stray"
    export["data"]["nodes"].append(stray)
    code, out, err = cli(capsys, _write(tmp_path, export))
    assert (code, out) == (1, "")
    # The stray input feeds no output: flowfleet's validation refuses it, located at its node.
    assert err.startswith("flowfleet: /nodes/4: ") and "ChatInput-stray" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "is not valid JSON"),
        (b'{"nodes": [{"id": "a", "type": "LLM", "params": {}}]}', "not a LangFlow export"),
    ],
)
def test_bad_files_fail_with_the_reason(capsys, tmp_path, content, message):
    path = tmp_path / "export.json"
    path.write_bytes(content)
    code, out, err = cli(capsys, str(path))
    assert (code, out) == (1, "")
    assert message in err and err.count("\n") == 1


def test_missing_file_fails_clearly(capsys, tmp_path):
    code, _, err = cli(capsys, str(tmp_path / "nope.json"))
    assert code == 1
    assert err.startswith(f"flowfleet: cannot read {tmp_path / 'nope.json'}: ")


def test_unwritable_output_fails_clearly(capsys, tmp_path):
    code, _, err = cli(capsys, BASIC, "-o", str(tmp_path / "missing-dir" / "out.json"))
    assert code == 1
    assert "cannot write" in err


def _without_model(tmp_path: Path) -> str:
    doc = json.loads(Path(BASIC).read_text())
    for node in doc["data"]["nodes"]:
        template = node["data"]["node"]["template"]
        if "model_name" in template:
            template["model_name"]["value"] = ""
    path = tmp_path / "no_model.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_an_empty_model_gets_the_default_or_the_model_option_with_a_warning(capsys, tmp_path):
    export = _without_model(tmp_path)
    code, out, err = cli(capsys, export)
    assert code == 0
    [llm] = [n for n in json.loads(out)["nodes"] if n["type"] == "LLM"]
    assert llm["params"]["model"] == "gpt-4o-mini"
    assert f"flowfleet: warning: node {llm['id']}: no model is set" in err
    assert "using 'gpt-4o-mini'" in err
    code, out, err = cli(capsys, export, "--model", "gpt-4.1")
    assert code == 0
    assert [n["params"]["model"] for n in json.loads(out)["nodes"] if n["type"] == "LLM"] == ["gpt-4.1"]
    assert "using 'gpt-4.1'" in err


def test_a_set_model_is_kept_whatever_the_model_option(capsys):
    code, out, err = cli(capsys, BASIC, "--model", "gpt-4.1")
    assert code == 0 and "no model is set" not in err
    assert [n["params"]["model"] for n in json.loads(out)["nodes"] if n["type"] == "LLM"] != ["gpt-4.1"]


def test_an_empty_model_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["import", "langflow", BASIC, "--model", " "])
    assert caught.value.code == 2


def test_the_web_search_provider_is_named_with_the_secrets(capsys, tmp_path):
    from tests.langflow_starters import starter_projects

    path = tmp_path / "simple_agent.json"
    path.write_text(json.dumps(starter_projects()["Simple Agent"]))
    code, _, err = cli(capsys, str(path))
    assert code == 0
    assert err.endswith(
        "flowfleet: the flow needs secret OPENAI_API_KEY and a web search provider "
        "(FLOWFLEET_SEARCH_PROVIDER): set them on the replicas\n"
    )


def test_invalid_name_is_a_usage_error(capsys):
    code, out, err = cli(capsys, BASIC, "--name", "not a name")
    assert (code, out) == (2, "")
    assert "invalid flow name" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["import"],
        ["import", "langflow"],
        ["import", "langflow", BASIC, "--provider", "anthropic"],
        ["import", "yaml", BASIC],
    ],
)
def test_bad_usage_exits_2(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2


def test_imported_flow_runs_with_flowfleet_run(tmp_path):
    """End to end through the console entry point: import, then run the result offline."""
    target = tmp_path / "flow.json"
    entry = "import sys; from control.cli import main; sys.exit(main())"
    imported = subprocess.run(
        [sys.executable, "-c", entry, "import", "langflow", BASIC, "--provider", "echo", "-o", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (imported.returncode, imported.stderr) == (0, "")
    ran = subprocess.run(
        [
            sys.executable,
            "-c",
            entry,
            "run",
            str(target),
            "--input",
            "input=Where is my order?",
            "--input",
            "tone=few",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    reply = json.loads(ran.stdout)["ChatOutput-7q74v"]
    assert reply.startswith("[gpt-4o-mini] You are a support assistant for flowfleet.")
    assert "Question: Where is my order?" in reply and "in few words" in reply
