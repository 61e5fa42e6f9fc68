"""Every example runs as a script: fast with the hash embedder, and once with the real model (slow)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_example(name: str, *args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "integrations")])}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        env=env,
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, f"{name} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_langchain_rag_hash(tmp_path: Path) -> None:
    question = "How do honeybees tell the direction of flowers?"
    out = run_example("langchain_rag.py", "--embedder", "hash", "--k", "2", "--path", str(tmp_path), question)
    assert "indexed 12 chunks" in out
    first = out.splitlines()[2]
    assert first.startswith("1. [honeybees.txt #1") and "waggle dance" in first
    again = run_example(
        "langchain_rag.py", "--embedder", "hash", "--k", "2", "--path", str(tmp_path), question
    )
    assert again == out  # stable ids: the second run replaces, it does not duplicate


def test_llamaindex_pipeline_hash(tmp_path: Path) -> None:
    out = run_example(
        "llamaindex_pipeline.py",
        "--embedder",
        "hash",
        "--path",
        str(tmp_path),
        "Who made the first ascent of Everest?",
    )
    assert "indexed 4 documents" in out and "1. [everest.txt" in out and "Tenzing Norgay" in out
    reused = run_example(
        "llamaindex_pipeline.py",
        "--embedder",
        "hash",
        "--path",
        str(tmp_path),
        "--reuse",
        "--file",
        "tea.txt",
        "--k",
        "1",
        "green tea water temperature",
    )
    assert "indexed" not in reused and "1. [tea.txt" in reused and "80 degrees" in reused


def test_autogen_memory_hash() -> None:
    out = run_example("autogen_memory.py", "--embedder", "hash", "Am I allergic to peanuts?")
    assert "recalled 1: The user is vegetarian and allergic to peanuts." in out
    assert "the model was given:" in out and "1. The user is vegetarian and allergic to peanuts." in out
    assert "'embedder': 'hash'" in out


@pytest.mark.slow
def test_examples_with_minilm() -> None:
    rag = run_example("langchain_rag.py", "Which mountain is the highest and how tall is it?")
    assert rag.splitlines()[2].startswith("1. [everest.txt #0")
    pipeline = run_example("llamaindex_pipeline.py", "--k", "1", "Which insects communicate by dancing?")
    assert "1. [honeybees.txt" in pipeline
    memory = run_example("autogen_memory.py")
    assert "recalled 1: The user is vegetarian and allergic to peanuts." in memory
