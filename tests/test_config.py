"""cotgen.toml: the written template parses; errors name the key and what was expected."""

import pytest

from cotgen.app.workspace import render_config
from schemas.config import parse_config
from schemas.errors import CotgenError


@pytest.mark.parametrize("example", [True, False])
def test_template_is_valid(example):
    config = parse_config(render_config(example))
    assert config.index.embedder == "bundled:all-minilm-l6-v2"
    assert bool(config.sources) is example


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[teacher]\nn = 'many'", "teacher.n: Input should be a valid integer"),
        ("[teacher]\ntemprature = 0.5", "teacher.temprature: unknown key"),
        ("[teacher]\nbackend = 'llama'", "teacher.backend: Input should be 'openai', 'transformers' or 'vllm'"),
        ("[curation]\nsplit = { train = 0.9, test = 0.2 }", "curation.split: Value error, split fractions must sum to 1"),
        ("[[sources]]\nname = 'a'\npath = 'x.csv'\nscheme = 'nope'", "sources.a.scheme: unknown scheme 'nope'"),
        ("[store\n", "not valid TOML"),
    ],
)
def test_config_errors_name_the_key(text, message):
    with pytest.raises(CotgenError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        parse_config(text, origin="ws/cotgen.toml")
    assert str(e.value).startswith("ws/cotgen.toml: ")


def test_user_scheme_from_config():
    config = parse_config(
        """
[schemes.binary]
grades = [{ id = "R", name = "Relevant", meaning = "serves" }, { id = "N", name = "Not relevant", meaning = "no" }]
relevant = ["R"]
mapping = { "Relevant" = "R", "Not relevant" = "N" }

[[sources]]
name = "wands"
path = "w.csv"
scheme = "binary"
"""
    )
    assert config.scheme("binary").raw_lookup()["not relevant"] == "N"
    with pytest.raises(CotgenError, match="unknown label scheme 'x'"):
        config.scheme("x")


def test_model_paths_resolve_against_the_workspace(tmp_path):
    from schemas.workspace import Workspace

    ws = Workspace(tmp_path, parse_config(render_config(False)))
    (tmp_path / "runs" / "sft").mkdir(parents=True)
    assert ws.model("runs/sft") == str(tmp_path / "runs" / "sft"), "a training run in the workspace, from any cwd"
    assert ws.model("bundled:smollm2-135m-instruct") == "bundled:smollm2-135m-instruct"
    assert ws.model("Qwen/Qwen3-32B") == "Qwen/Qwen3-32B", "not a workspace path: a hub id or a path from cwd"
