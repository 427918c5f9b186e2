"""The documentation stays true to the code: README.md and docs/*.md.

- every relative Markdown link points at a file that exists (and at a heading there, for `#anchor` links);
- every `.py` file a code span or block names exists;
- every command-line flag they name exists on the command that takes it: run.py's flags are checked against
  the parser `python run.py --help` prints (training/flags.py; inference/cli.py for `run.py predict|export`),
  a project script's flags against that script's own argparse calls, torchrun's against torch's parser;
- README.md is at most README_MAX_LINES lines;
- docs/command-line.md is what `python -m training.flags --markdown` writes now.

Where a flag is named alone (`--lr-max` in a sentence) it is taken as run.py's, unless OTHER_FLAGS says which
other command it belongs to (each such entry is itself checked against that command).
"""
from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOC_FILES = [README, *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 300

# Flags named alone in a sentence that belong to another command than `python run.py` (training).
OTHER_FLAGS = {
    "run.py predict": {"--top-k", "--csv", "--json"},
    "run.py export": {"--onnx", "--opset"},
    "bench/gpu_report.py": {"--part", "--steps", "--merge", "--out", "--archive", "--work", "--seeds",
                            "--time-limit", "--budget", "--dry-run", "--fail-step", "--lr-maxes"},
    "bench/bench_throughput.py": {"--skip-seed-style"},
    "torchrun": {"--standalone", "--nnodes", "--nproc_per_node", "--node_rank", "--master_addr", "--master_port"},
}
# Flags of outside tools named alone in a sentence; no parser here to check them against.
OUTSIDE_FLAGS = {"sbatch": {"--requeue"}}
# Names of .py files the docs use as examples of the user's own files, not files of this repository.
ILLUSTRATIVE_FILES = {"my_handlers.py", "path/to/file.py"}

FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
SCRIPT = re.compile(r"^(?:[\w.-]+/)*[\w-]+\.py$")
SEPARATORS = re.compile(r"&&|\|\||;|(?<!\\)\|")


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


# ---- reading the Markdown

def split_markdown(text: str):
    """(prose with code blocks blanked out, [(first line number, language, code)] of the fenced blocks)."""
    prose, blocks, block = [], [], None
    for number, line in enumerate(text.splitlines(), start=1):
        fence = FENCE.match(line)
        if block is None and fence:
            block = (number + 1, fence.group(2).lower(), fence.group(1), [])
            prose.append("")
        elif block is not None and fence and fence.group(1).startswith(block[2][0]) and not fence.group(2):
            blocks.append((block[0], block[1], "\n".join(block[3])))
            block = None
            prose.append("")
        elif block is not None:
            block[3].append(line)
            prose.append("")
        else:
            prose.append(line)
    return "\n".join(prose), blocks


def inline_spans(prose: str):
    """(line number, text) of every inline code span."""
    for m in INLINE_CODE.finditer(prose):
        yield prose.count("\n", 0, m.start()) + 1, m.group(2).replace("\\|", "|")


def block_commands(code: str):
    """(line offset, command) of each command in a shell block: continuations joined, comments dropped."""
    joined, start, pending = [], 0, ""
    for offset, line in enumerate(code.splitlines()):
        if not pending:
            start = offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append((start, pending + line))
        pending = ""
    if pending:
        joined.append((start, pending))
    for offset, line in joined:
        line = re.sub(r"(^|\s)#.*$", "", line)  # a comment (also #SBATCH lines: flags of sbatch, not ours)
        for command in SEPARATORS.split(line):
            if command.strip():
                yield offset, command


# ---- which command a flag belongs to

# Commands of other tools, whose flags are not checked (torchrun's are: "torchrun" below).
OUTSIDE_TOOLS = {"pip", "pip3", "tensorboard", "tar", "mkdir", "git", "sbatch", "export", "ls", "cp", "cd", "sleep"}


def command_of(text: str) -> list[tuple[str, str]]:
    """[(command, the text holding its flags)] of one shell command; [] when it runs none of interest.

    `python run.py ...` -> "run.py" (or "run.py predict" / "run.py export"); `python bench/x.py` -> "bench/x.py";
    `python -m package.module` -> its file when it is the project's, else "outside" (pytest, pip);
    `torchrun ... run.py ...` -> torchrun's flags before the script, run.py's after it.
    """
    tokens, launcher = text.split(), None
    for i, token in enumerate(tokens):
        if token.split("/")[-1] == "torchrun":
            launcher = i + 1
        elif token == "-m" and i > 0 and tokens[i - 1].split("/")[-1].startswith("python") and i + 1 < len(tokens):
            module = tokens[i + 1]
            if module == "torch.distributed.run":
                launcher = i + 2
                continue
            path = module.replace(".", "/") + ".py"
            return [(path if (REPO / path).is_file() else "outside", " ".join(tokens[i + 2:]))]
        elif SCRIPT.match(token):
            found = [("torchrun", " ".join(tokens[launcher:i]))] if launcher is not None else []
            rest = tokens[i + 1:]
            if token == "run.py" and rest and rest[0] in ("predict", "export"):
                return found + [(f"run.py {rest[0]}", " ".join(rest[1:]))]
            return found + [(token, " ".join(rest))]
    return [("torchrun", " ".join(tokens[launcher:]))] if launcher is not None else []


def flags_in(text: str) -> list[str]:
    return [f.split("=")[0] for f in FLAG.findall(text)]


def first_word(text: str) -> str:
    """The command word of a shell line, past any VAR=value assignments."""
    words = [w for w in text.split() if not re.match(r"^[A-Z_][A-Z0-9_]*=", w)]
    return words[0].split("/")[-1] if words else ""


def named_flags(path: Path):
    """(line, command, flag, where) for every flag the file names in code, with the command it belongs to."""
    prose, blocks = split_markdown(path.read_text(encoding="utf-8"))
    for line, span in inline_spans(prose):
        commands = command_of(span)
        if commands:
            for command, rest in commands:
                yield from ((line, c, f, span) for c, f in command_flags(command, rest))
        elif first_word(span) not in OUTSIDE_TOOLS:
            for flag in flags_in(span):  # a flag named alone, or with its value: run.py's unless OTHER_FLAGS says
                owner = next((c for c, fs in OTHER_FLAGS.items() if flag in fs), "run.py")
                if not any(flag in fs for fs in OUTSIDE_FLAGS.values()):
                    yield line, owner, flag, span
    for first, language, code in blocks:
        if language in ("python", "py", "json", "yaml", "text"):
            continue
        for offset, shell_command in block_commands(code):
            for command, rest in command_of(shell_command):
                yield from ((first + offset, c, f, shell_command.strip()) for c, f in command_flags(command, rest))


def command_flags(command: str, rest: str):
    """(command, flag) pairs; after a bare `--`, bench/bench_accuracy.py passes the flags on to run.py."""
    if command == "outside":
        return
    head, sep, tail = f" {rest} ".partition(" -- ")
    yield from ((command, f) for f in flags_in(head))
    if sep:
        yield from (("run.py", f) for f in flags_in(tail))


# ---- what each command accepts

@lru_cache(maxsize=None)
def accepted(command: str) -> frozenset[str]:
    """The long flags `command` accepts, read from its own parser (or, for a script, its argparse calls)."""
    if command == "run.py":
        from training.flags import build_parser

        return option_strings(build_parser())
    if command.startswith("run.py "):
        from inference.cli import parser

        subparsers = next(a for a in parser()._actions if a.__class__.__name__ == "_SubParsersAction")
        return option_strings(subparsers.choices[command.split()[1]])
    if command == "torchrun":
        from torch.distributed.run import get_args_parser

        return option_strings(get_args_parser())
    return script_flags(REPO / command)


def option_strings(parser) -> frozenset[str]:
    return frozenset(s for action in parser._actions for s in action.option_strings if s.startswith("--"))


def script_flags(path: Path) -> frozenset[str]:
    """Every `--flag` string constant in a script (its add_argument calls, or a hand-read sys.argv); a flag
    declared with argparse.BooleanOptionalAction also gives --no-flag."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and FLAG.fullmatch(node.value):
            found.add(node.value)
        if isinstance(node, ast.Call) and any(k.arg == "action" and "BooleanOptionalAction" in ast.unparse(k.value)
                                              for k in node.keywords):
            found |= {f"--no-{a.value[2:]}" for a in node.args if isinstance(a, ast.Constant)
                      and isinstance(a.value, str) and a.value.startswith("--")}
    return frozenset(found)


def run_py_choices() -> dict[str, tuple[str, ...]]:
    from training.flags import build_parser

    return {s: tuple(a.choices) for a in build_parser()._actions if a.choices for s in a.option_strings}


# ---- the tests

def test_every_relative_link_points_at_a_file_and_heading_that_exist():
    bad = []
    for path in DOC_FILES:
        prose, _ = split_markdown(path.read_text(encoding="utf-8"))
        prose = INLINE_CODE.sub(lambda m: " " * len(m.group(0)), prose)  # `[a](b)` in code is not a link
        for m in LINK.finditer(prose):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:, ...
                continue
            where = f"{rel(path)}:{prose.count(chr(10), 0, m.start()) + 1}"
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                bad.append(f"{where}: ({target}): {linked} does not exist")
            elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked):
                bad.append(f"{where}: ({target}): no heading with anchor #{anchor} in {rel(linked)}")
    assert not bad, "broken links in the docs:\n" + "\n".join(bad)


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    anchors, seen = set(), {}
    for line in prose.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).replace("`", "").lower()).replace(" ", "-")
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_every_python_file_named_in_code_exists():
    missing = []
    for path in DOC_FILES:
        prose, blocks = split_markdown(path.read_text(encoding="utf-8"))
        named = [(line, span) for line, span in inline_spans(prose)]
        named += [(first, code) for first, language, code in blocks if language not in ("python", "py")]
        for line, text in named:
            for token in re.findall(r"(?<![\w./-])(?:[\w-]+/)*[\w-]+\.py(?![\w])", text):
                # a bare name (`flags.py` in a list of training/'s files) may be any package's module
                exists = (REPO / token).is_file() or ("/" not in token and any(REPO.glob(f"*/{token}")))
                if token not in ILLUSTRATIVE_FILES and not exists:
                    missing.append(f"{rel(path)}:{line}: {token}")
    assert not missing, "the docs name .py files this repository does not have:\n" + "\n".join(missing)


def test_every_flag_the_docs_name_exists_on_its_command():
    bad = []
    for path in DOC_FILES:
        for line, command, flag, where in named_flags(path):
            if flag not in accepted(command):
                bad.append(f"{rel(path)}:{line}: {flag} is not a flag of {command}  (in: {where[:100]})")
    assert not bad, ("the docs name flags their command does not take (python run.py --help lists run.py's):\n"
                     + "\n".join(bad))


def run_py_arguments(path: Path):
    """(line, text) of what the file gives run.py (training) as flags: its commands' arguments, and the flags
    named alone in a sentence."""
    prose, blocks = split_markdown(path.read_text(encoding="utf-8"))
    for line, span in inline_spans(prose):
        commands = command_of(span)
        if not commands and span.lstrip().startswith("--"):
            yield line, span
        yield from ((line, rest) for command, rest in commands if command == "run.py")
    for first, language, code in blocks:
        if language not in ("python", "py", "json", "yaml", "text"):
            for offset, shell_command in block_commands(code):
                yield from ((first + offset, rest) for command, rest in command_of(shell_command)
                            if command == "run.py")


def test_flag_values_the_docs_give_are_among_the_choices():
    choices, bad = run_py_choices(), []
    for path in DOC_FILES:
        for line, text in run_py_arguments(path):
            for flag, value in re.findall(r"(?<![\w-])(--[\w-]+)[ =]([\w|.-]+)", text):
                if flag in choices and not value.startswith("-") and not value.isupper():
                    wrong = [v for v in value.split("|") if v not in choices[flag]]
                    if wrong:
                        bad.append(f"{rel(path)}:{line}: {flag} {value}: {wrong} not among {choices[flag]}")
    assert not bad, "the docs give run.py values it does not accept:\n" + "\n".join(bad)


@pytest.mark.parametrize("command", sorted(OTHER_FLAGS))
def test_flags_named_for_other_commands_are_theirs(command):
    unknown = sorted(OTHER_FLAGS[command] - accepted(command))
    assert not unknown, f"OTHER_FLAGS lists {unknown} for {command}, which does not take them"


def test_the_flag_reader_attributes_flags_to_their_command():
    assert command_of("torchrun --standalone --nproc_per_node=N run.py --epochs 2") == [
        ("torchrun", "--standalone --nproc_per_node=N"), ("run.py", "--epochs 2")]
    assert command_of(".venv/bin/python run.py predict M.pt x/ --top-k 3") == [("run.py predict", "M.pt x/ --top-k 3")]
    assert command_of("python -m pytest -q --lf") == [("outside", "-q --lf")]
    assert command_of("python -m training.flags --markdown") == [("training/flags.py", "--markdown")]
    assert command_of("tensorboard --logdir runs/") == [] and first_word("A=1 pip install -e .") == "pip"
    assert list(command_flags("bench/bench_accuracy.py", "--seeds 0 -- --weight-decay 1e-4")) == [
        ("bench/bench_accuracy.py", "--seeds"), ("run.py", "--weight-decay")]
    assert "--no-amp" in accepted("run.py") and "--no-amp" in accepted("bench/bench_throughput.py")
    assert "--lr-maxx" not in accepted("run.py")


def test_readme_is_short():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, (f"README.md has {lines} lines, more than {README_MAX_LINES}: move the detail "
                                       f"to a page under docs/ and link it")


def test_command_line_reference_is_current():
    from training.flags import markdown_reference

    written = (REPO / "docs" / "command-line.md").read_text(encoding="utf-8")
    assert written == markdown_reference(), ("docs/command-line.md is out of date: regenerate it with "
                                             "python -m training.flags --markdown > docs/command-line.md")
