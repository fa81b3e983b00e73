"""Where the base model comes from: `package:NAME/SUB` folders, GGUF files and their cache; chat data rendered
with the tokenizer's template. Errors are one line naming the field. (The real GGUF conversion, on
SmolLM2-135M: tests/test_real_model.py.)"""

import json

import pytest

from conftest import demo_raw, run_cli, write_spec
from tunelog.errors import SpecError
from tunelog.spec import load_spec
from tunelog.training.data import read_texts, tokenize
from tunelog.training.model import load_tokenizer
from tunelog.training.model_source import converted_folder, named_source, package_folder


def gguf_spec(tmp_path, name, gguf="m.gguf"):
    raw = demo_raw(max_steps=2)
    raw["model"] = {"name": name, "gguf_file": gguf}
    return load_spec(write_spec(tmp_path / "g.yaml", raw))


def test_a_package_folder_is_found_without_importing_the_package(tmp_path):
    import tunelog

    assert package_folder("package:tunelog/trainers").parent.samefile(tunelog.__path__[0])
    with pytest.raises(Exception) as missing:
        package_folder("package:no_such_model_pkg", "s.yaml")
    assert "s.yaml: model.name: 'package:no_such_model_pkg': no installed Python package" in str(missing.value)
    spec = gguf_spec(tmp_path, "package:tunelog")
    assert named_source(spec) == tunelog.__path__[0]


def test_a_gguf_file_missing_from_its_folder_is_one_line_and_nothing_is_cached(tmp_path, monkeypatch, store):
    monkeypatch.setenv("TUNELOG_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "weights").mkdir()
    path = write_spec(
        tmp_path / "g.yaml", {**demo_raw(max_steps=2), "model": {"name": "weights", "gguf_file": "x.gguf"}}
    )
    proc = run_cli("train", path)
    assert proc.returncode == 2 and "model.gguf_file: 'x.gguf' is not a file in" in proc.stderr, proc.stderr
    assert not any((tmp_path / "cache").rglob("config.json"))


def test_the_cache_folder_follows_the_file_and_the_dtype(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELOG_CACHE_DIR", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF v1")
    first = converted_folder(str(tmp_path), "m.gguf", "float32")
    assert first.parent == tmp_path / "cache" / "gguf" and first == converted_folder(str(tmp_path), "m.gguf", "float32")
    assert converted_folder(str(tmp_path), "m.gguf", "bfloat16") != first
    gguf.write_bytes(b"GGUF v2, another file")  # replaced: a new folder, never the old conversion
    assert converted_folder(str(tmp_path), "m.gguf", "float32") != first


def test_chat_records_go_through_the_chat_template_and_a_bad_one_names_its_line(tmp_path):
    raw = demo_raw(max_steps=2)
    chats = [
        {"messages": [{"role": "user", "content": "Hei"}, {"role": "assistant", "content": "Hei, hei"}]},
        {"text": "Det var en gang"},  # plain text beside chats still reads
    ]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    raw["data"]["train"] = str(tmp_path / "chat.jsonl")
    spec = load_spec(write_spec(tmp_path / "c.yaml", raw))
    samples = read_texts(spec, spec.data.train, "data.train")
    assert samples[0][1] == {"role": "assistant", "content": "Hei, hei"} and samples[1] == "Det var en gang"
    tok = load_tokenizer(spec)
    with pytest.raises(SpecError, match="need a tokenizer with a chat template"):
        tokenize(samples, tok, 48)
    tok.chat_template = "{% for m in messages %}<s>{{ m.role }}: {{ m.content }}</s>{% endfor %}"
    data = tokenize(samples, tok, 48)
    as_rendered = tok("<s>user: Hei</s><s>assistant: Hei, hei</s>", add_special_tokens=False)["input_ids"]
    assert data.samples[0] == as_rendered  # the template's own <s>, not one more in front
    assert data.samples[1] == tok("Det var en gang")["input_ids"]  # plain text keeps its special tokens
    (tmp_path / "chat.jsonl").write_text('{"messages": "hello"}\n')
    with pytest.raises(SpecError, match=r"chat.jsonl:1: `messages` must be a non-empty list"):
        read_texts(spec, spec.data.train, "data.train")
