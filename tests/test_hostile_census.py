"""Hostile-input census (issue 25): three named sets of hostile inputs, each run in-process through
``cli.main``: run folders (``evaluate`` and ``predict``), data (``evaluate`` non-strict and
``--strict``) and CLI arguments (every subcommand). Each case must end with exit 0 (only where the
input is legitimately acceptable; the case says why) or exit 2 with one ``error:`` line, never a
traceback, a hang or 30 s. ``pytest tests/test_hostile_census.py -s`` prints one JSON line per set:
the cases tried, how many gave a traceback (target 0) and the slowest case; docs/reliability.md
quotes them."""
import io
import json
import math
import os
import shutil
import signal
import struct
import time
import traceback
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_archive_hardening import _overlapping_bomb
from test_data import BAD_ROWS
from test_ids import OUT_OF_RANGE
from test_nonfinite import TINY_FLAGS
from test_reliability import HOSTILE, SHIPPED, _edit_json

from nram_core.cli import main

MEMORY = 24 << 30  # the budget the run-folder cases see (CI's machine), whatever this machine has
CASE_SECONDS = 30  # per case, on a loaded 2-core machine; a hang or a 10^9 allocation takes far longer
CENSUS: dict[str, list[dict]] = {"run_folders": [], "data": [], "cli": []}


# ---- running one case ------------------------------------------------------------------------------
class Hung(BaseException):
    """Raised by SIGALRM inside a case that ran past CASE_SECONDS (a blocked open() of a FIFO
    included: PEP 475 lets a handler's exception end the wait). Not an Exception, so no handler of
    the code under test swallows it."""


@dataclass
class Outcome:
    argv: list[str]
    code: object
    out: str
    err: str
    seconds: float
    traceback: str | None  # an exception that escaped main(), a hang ("HANG: ..."), or 'Traceback' on stderr

    @property
    def hung(self) -> bool:
        return self.traceback is not None and self.traceback.startswith("HANG")

    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]


def invoke(capsys, argv) -> Outcome:
    argv = [str(a) for a in argv]

    def on_alarm(signum, frame):
        raise Hung(f"still running after {CASE_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    escaped, code = None, None
    start = time.perf_counter()
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's refusals exit from the parser (``_Parser.error``)
        code = stop.code
    except Hung:
        escaped = f"HANG: {' '.join(argv)} ran past {CASE_SECONDS} s\n" + traceback.format_exc(limit=-4)
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: B036 - a MemoryError or RecursionError is exactly what the census counts
        escaped = traceback.format_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    seconds = time.perf_counter() - start
    out, err = capsys.readouterr()
    if escaped is None and "Traceback" in err:
        escaped = err
    return Outcome(argv, code, out, err, seconds, escaped)


def check(census_set: str, name: str, outcome: Outcome, expect: int, *words: str) -> None:
    """Record the case, then: no traceback, under CASE_SECONDS, and the expected exit. ``expect`` 2:
    nothing on stdout, one ``error:`` line on stderr (its last line) holding every one of ``words``.
    ``expect`` 0: the input is acceptable and the command did its job."""
    CENSUS[census_set].append({"name": name, "seconds": round(outcome.seconds, 3), "exit": outcome.code,
                               "traceback": outcome.traceback is not None, "hang": outcome.hung,
                               "error": (outcome.error_lines() or [""])[-1][:300]})
    if outcome.traceback is not None:
        what = f"hang (past {CASE_SECONDS} s)" if outcome.hung else "traceback"
        pytest.fail(f"{name}: {what} from {outcome.argv}\n" + "\n".join(outcome.traceback.splitlines()[-8:]),
                    pytrace=False)
    assert outcome.seconds < CASE_SECONDS, (name, outcome.seconds)
    assert outcome.code == expect, (name, outcome.code, outcome.out[-500:], outcome.err[-1500:])
    if expect == 2:
        errors = outcome.error_lines()
        assert not outcome.out and len(errors) == 1 and outcome.err.splitlines()[-1] == errors[0], \
            (name, outcome.out[-500:], outcome.err[-1500:])
        assert all(w in errors[0] for w in words), (name, words, errors[0])
    else:
        assert not outcome.error_lines(), (name, outcome.err[-1500:])


@pytest.fixture(scope="module")
def census_home(tmp_path_factory):
    return tmp_path_factory.mktemp("census_home")


@pytest.fixture
def shared_home(isolated_nram_home, census_home, monkeypatch):
    """One NRAM_HOME for the whole module (set after conftest's per-test one): the parsed demo split
    is cached once instead of once per case. A hostile file is a new cache key, so nothing is masked."""
    monkeypatch.setenv("NRAM_HOME", str(census_home))
    return census_home


# ---- set 1: hostile run folders ----------------------------------------------------------------------
def _json(path: Path, value) -> None:
    path.write_text(json.dumps(value))


def _model(**fields):
    return lambda d: _edit_json(d / "config.json", lambda c: c["model"].update(fields))


def _raw_model_field(field: str, literal: str):
    """config.json with ``field`` set to a literal JSON json.dumps would never write (NaN, 1e999, 10^400)."""
    def edit(d: Path) -> None:
        config = json.loads((d / "config.json").read_text())
        config["model"][field] = "@@VALUE@@"
        (d / "config.json").write_text(json.dumps(config).replace('"@@VALUE@@"', literal))
    return edit


def _replace(name: str, make):
    def edit(d: Path) -> None:
        path = d / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        make(path)
    return edit


def _nested(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def _safetensors(path: Path) -> tuple[dict, bytes]:
    blob = path.read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + length]), blob[8 + length:]


def _write_safetensors(path: Path, header: dict | bytes, data: bytes) -> None:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def _header_edit(edit):
    """model.safetensors with its JSON header changed in place by ``edit(header)``, or replaced by the
    bytes it returns (the data bytes kept)."""
    def apply(d: Path) -> None:
        header, data = _safetensors(d / "model.safetensors")
        new = edit(header)
        _write_safetensors(d / "model.safetensors", new if isinstance(new, bytes) else header, data)
    return apply


def _header_literal(field: str, literal: str):
    """The first tensor's ``field`` set to a JSON literal json.dumps would never write."""
    def edit(header: dict) -> bytes:
        _first_tensor(header)[field] = "@@VALUE@@"
        return json.dumps(header).replace('"@@VALUE@@"', literal).encode()
    return _header_edit(edit)


def _first_tensor(header: dict) -> dict:
    return header[sorted(k for k in header if k != "__metadata__")[0]]


def _agreeing_huge(d: Path) -> None:
    """config.json, vocab.json and the weights header agree on a million-word vocabulary at width 4096
    (a 16 GiB embedding, 32 GiB built and loaded), backed by a sparse file: only the memory budget can
    refuse it (the census runs as on CI's 24 GiB machine: ``MEMORY``)."""
    import torch

    from nram_core.config import ModelConfig, from_dict
    from nram_core.model import NRAM

    words = 1_000_000
    config = json.loads((d / "config.json").read_text())
    config["model"].update(vocab_size=words + 2, word_dim=4096, num_heads=256, head_dim=16, query_dim=64)
    (d / "config.json").write_text(json.dumps(config))
    (d / "vocab.json").write_text(json.dumps({"words": ["<pad>", "<unk>"] + [f"w{i}" for i in range(words)]}))
    with torch.device("meta"):
        shapes = {k: list(t.shape) for k, t in NRAM(from_dict(ModelConfig, config["model"])).state_dict().items()}
    header, offset = {}, 0
    for name, shape in sorted(shapes.items()):
        size = 4 * math.prod(shape)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(d / "model.safetensors", "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        handle.truncate(8 + len(raw) + offset)  # sparse: nothing is written


def _state_names(name: str):
    return lambda d: _edit_json(d / "state.json", lambda s: s["files"]["best"].update(name=name))


def _with_categories(edit):
    """A model that reads categories (config says so), with categories.json then spoiled by ``edit``."""
    def apply(d: Path) -> None:
        _model(use_categories=True, num_categories=3, num_subcategories=4)(d)
        _json(d / "categories.json", {"categories": ["a", "b", "c"], "subcategories": ["w", "x", "y", "z"]})
        edit(d)
    return apply


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _symlink(target: str):
    return lambda path: path.symlink_to(target)


RUN_FOLDERS = {f"reliability_{name}": (edit, 2) for name, edit in HOSTILE.items()}
RUN_FOLDERS.update({
    # nesting: each JSON file of a run, and the safetensors header
    "config_deep_nested": (lambda d: (d / "config.json").write_text(_nested()), 2),
    "config_model_deep_nested": (lambda d: (d / "config.json").write_text('{"model": ' + _nested() + "}"), 2),
    "state_deep_nested": (lambda d: (d / "state.json").write_text('{"files": ' + _nested() + "}"), 2),
    "vocab_deep_nested": (lambda d: (d / "vocab.json").write_text('{"words": ' + _nested() + "}"), 2),
    "categories_deep_nested": (_with_categories(
        lambda d: (d / "categories.json").write_text('{"categories": ' + _nested() + "}")), 2),
    "safetensors_header_deep_nested": (_header_edit(lambda h: _nested().encode()), 2),
    "safetensors_header_deep_object": (_header_edit(lambda h: ('{"a": ' * 50_000 + "1" + "}" * 50_000).encode()),
                                       2),
    # model fields: non-finite, huge, negative, zero, the wrong JSON type
    "embedding_std_nan": (_raw_model_field("embedding_std", "NaN"), 2),
    "embedding_std_infinity": (_raw_model_field("embedding_std", "Infinity"), 2),
    "dropout_minus_infinity": (_raw_model_field("dropout", "-Infinity"), 2),
    "dropout_1e999": (_raw_model_field("dropout", "1e999"), 2),
    "dropout_int_10_pow_400": (_raw_model_field("dropout", "1" + "0" * 400), 2),
    "embedding_std_int_10_pow_400": (_raw_model_field("embedding_std", "1" + "0" * 400), 2),
    "word_dim_10_pow_400": (_raw_model_field("word_dim", "1" + "0" * 400), 2),
    "word_dim_5000_digits": (_raw_model_field("word_dim", "9" * 5000), 2),
    "word_dim_float": (_model(word_dim=64.0), 2),
    "word_dim_nan": (_raw_model_field("word_dim", "NaN"), 2),
    "title_len_10_pow_9": (_model(title_len=10**9), 2),
    "history_len_10_pow_9": (_model(history_len=10**9), 2),
    "history_len_200000": (_model(history_len=200_000), 2),
    "history_len_negative": (_model(history_len=-1), 2),
    "title_len_zero": (_model(title_len=0), 2),
    "num_heads_zero": (_model(num_heads=0), 2),
    "head_dim_negative": (_model(head_dim=-16), 2),
    "query_dim_10_pow_18": (_model(query_dim=10**18), 2),
    "vocab_size_zero": (_model(vocab_size=0), 2),
    "vocab_size_negative": (_model(vocab_size=-593), 2),
    "num_categories_negative_with_categories": (_model(use_categories=True, num_categories=-1,
                                                       num_subcategories=-1), 2),
    "use_categories_without_sizes": (_model(use_categories=True), 2),
    "residual_as_int": (_model(residual=1), 2),
    "self_attention_null": (_model(self_attention=None), 2),
    "dropout_true": (_model(dropout=True), 2),
    "dropout_one": (_model(dropout=1.0), 2),
    "embedding_std_zero": (_model(embedding_std=0.0), 2),
    "init_unknown": (_model(init="evil"), 2),
    "init_null": (_model(init=None), 2),
    "model_section_list": (lambda d: _edit_json(d / "config.json", lambda c: c.update(model=[1, 2])), 2),
    "model_section_missing": (lambda d: _edit_json(d / "config.json", lambda c: c.pop("model")), 2),
    "train_section_missing": (lambda d: _edit_json(d / "config.json", lambda c: c.pop("train")), 2),
    "train_lr_nan": (lambda d: (d / "config.json").write_text(
        (d / "config.json").read_text().replace('"lr": 0.003', '"lr": NaN')), 2),
    "train_negatives_10_pow_9": (lambda d: _edit_json(d / "config.json", lambda c: c["train"].update(
        negatives=10**9)), 2),
    "runtime_eval_batch_size_zero": (lambda d: _edit_json(d / "config.json", lambda c: c.update(
        runtime={"eval_batch_size": 0})), 2),
    # The runtime section records how the run was trained; scoring never reads it (a valid value is kept).
    "runtime_eval_batch_size_10_pow_12": (lambda d: _edit_json(d / "config.json", lambda c: c.update(
        runtime={"eval_batch_size": 10**12})), 0),
    "data_section_string": (lambda d: _edit_json(d / "config.json", lambda c: c.update(data="x")), 2),
    # Unknown keys are ignored by design (config.from_dict: a newer or older version's fields).
    "unknown_model_field": (_model(evil=[1, 2, 3]), 0),
    "config_sparse_300_mb": (lambda d: os.truncate(d / "config.json", 300 << 20), 2),
    "huge_config_and_header_agree": (_agreeing_huge, 2),
    # files missing, directories, empty files, links, FIFOs
    "config_missing": (lambda d: (d / "config.json").unlink(), 2),
    "vocab_missing": (lambda d: (d / "vocab.json").unlink(), 2),
    "weights_missing": (lambda d: (d / "model.safetensors").unlink(), 2),
    # A run without state.json is a run saved before state.json existed: model.safetensors is its model.
    "state_missing": (lambda d: (d / "state.json").unlink(), 0),
    # metrics.jsonl is a record of training; scoring never reads it.
    "metrics_missing": (lambda d: (d / "metrics.jsonl").unlink(), 0),
    "categories_missing_with_categories": (_with_categories(lambda d: (d / "categories.json").unlink()), 2),
    "config_is_a_directory": (_replace("config.json", Path.mkdir), 2),
    "vocab_is_a_directory": (_replace("vocab.json", Path.mkdir), 2),
    "state_is_a_directory": (_replace("state.json", Path.mkdir), 2),
    "weights_is_a_directory": (_replace("model.safetensors", Path.mkdir), 2),
    "categories_is_a_directory": (_with_categories(_replace("categories.json", Path.mkdir)), 2),
    "config_empty": (_replace("config.json", Path.touch), 2),
    "vocab_empty": (_replace("vocab.json", Path.touch), 2),
    "state_empty": (_replace("state.json", Path.touch), 2),
    "weights_empty": (_replace("model.safetensors", Path.touch), 2),
    "categories_empty": (_with_categories(_replace("categories.json", Path.touch)), 2),
    "config_fifo": (_replace("config.json", _fifo), 2),
    "vocab_fifo": (_replace("vocab.json", _fifo), 2),
    "state_fifo": (_replace("state.json", _fifo), 2),
    "weights_fifo": (_replace("model.safetensors", _fifo), 2),
    "categories_fifo": (_with_categories(_replace("categories.json", _fifo)), 2),
    "state_symlink_dev_zero": (_replace("state.json", _symlink("/dev/zero")), 2),
    "weights_symlink_dev_zero": (_replace("model.safetensors", _symlink("/dev/zero")), 2),
    "categories_symlink_dev_zero": (_with_categories(_replace("categories.json", _symlink("/dev/zero"))), 2),
    "config_symlink_loop": (_replace("config.json", _symlink("config.json")), 2),
    "vocab_symlink_to_missing": (_replace("vocab.json", _symlink("/nonexistent/vocab.json")), 2),
    "state_bad_utf8": (lambda d: (d / "state.json").write_bytes(b'{"files": "\xff\xfe"}'), 2),
    "vocab_bad_utf8": (lambda d: (d / "vocab.json").write_bytes(b'{"words": ["\xc3"]}'), 2),
    "state_not_object": (lambda d: (d / "state.json").write_text('"weights-e0004.safetensors"'), 2),
    # state.json's names: a name that is missing, outside the folder or absolute never reaches a path
    # (run_info.named_file); scoring then uses model.safetensors, the run's published best weights.
    "state_names_missing_file": (_state_names("weights-e0009.safetensors"), 0),
    "state_names_outside_file": (_state_names("../../../etc/passwd"), 0),
    "state_names_absolute_file": (_state_names("/etc/passwd"), 0),
    "state_names_non_string": (lambda d: _edit_json(d / "state.json", lambda s: s["files"]["best"].update(
        name=["x"])), 0),
    "state_names_config_json": (_state_names("config.json"), 2),
    "state_names_vocab_json": (_state_names("vocab.json"), 2),
    # The named epoch file exists but its sha256 disagrees with state.json.
    "state_wrong_sha256_of_nan_weights": (lambda d: _nan_epoch_file(d), 2),
    "state_wrong_sha256_of_other_weights": (lambda d: _other_epoch_file(d), 2),
    "vocab_words_a_string": (lambda d: _json(d / "vocab.json", {"words": "<pad> <unk> the"}), 2),
    "vocab_first_word_not_pad": (lambda d: _edit_json(d / "vocab.json", lambda v: v["words"].reverse()), 2),
    "config_utf8_bom": (lambda d: (d / "config.json").write_bytes(b"\xef\xbb\xbf" + (d / "config.json").read_bytes()),
                        2),
    "state_names_symlink_to_etc_passwd": (lambda d: ((d / "evil.safetensors").symlink_to("/etc/passwd"),
                                                     _state_names("evil.safetensors")(d)), 2),
    "weights_symlink_to_etc_passwd": (_replace("model.safetensors", _symlink("/etc/passwd")), 2),
    # The named epoch file is a FIFO: not a regular file, so scoring uses model.safetensors.
    "epoch_file_fifo": (lambda d: os.mkfifo(d / "weights-e0004.safetensors"), 0),
    # safetensors headers that lie
    "header_length_past_end": (lambda d: _patch_bytes(d / "model.safetensors", 0, struct.pack("<Q", 10**12)), 2),
    "header_length_zero": (lambda d: _patch_bytes(d / "model.safetensors", 0, struct.pack("<Q", 0)), 2),
    "header_not_json": (_header_edit(lambda h: b"not json at all"), 2),
    "header_bad_utf8": (_header_edit(lambda h: b'{"\xff": 1}'), 2),
    "header_a_list": (_header_edit(lambda h: b"[1, 2, 3]"), 2),
    "header_entry_not_object": (_header_edit(lambda h: h.update(extra=5)), 2),
    "header_dtype_f64": (_header_edit(lambda h: _first_tensor(h).update(dtype="F64")), 2),
    "header_dtype_unknown": (_header_edit(lambda h: _first_tensor(h).update(dtype="Q7")), 2),
    "header_dtype_i8": (_header_edit(lambda h: _first_tensor(h).update(dtype="I8")), 2),
    "header_offsets_reversed": (_header_edit(lambda h: _first_tensor(h).update(
        data_offsets=_first_tensor(h)["data_offsets"][::-1])), 2),
    "header_offsets_overlap": (_header_edit(lambda h: [e.update(data_offsets=[0, e["data_offsets"][1]])
                                                       for k, e in h.items() if k != "__metadata__"]), 2),
    "header_offsets_strings": (_header_edit(lambda h: _first_tensor(h).update(data_offsets=["a", "b"])), 2),
    "header_offsets_infinity": (_header_literal("data_offsets", "[0, Infinity]"), 2),
    "header_offsets_nan": (_header_literal("data_offsets", "[NaN, 10]"), 2),
    "header_offsets_10_pow_400": (_header_literal("data_offsets", "[0, 1" + "0" * 400 + "]"), 2),
    "header_shape_1e400": (_header_literal("shape", "[1e400, 64]"), 2),
    "header_shape_10_pow_400": (_header_literal("shape", "[1" + "0" * 400 + ", 64]"), 2),
    "header_offsets_negative": (_header_edit(lambda h: _first_tensor(h).update(data_offsets=[-8, 0])), 2),
    "header_shape_huge": (_header_edit(lambda h: _first_tensor(h).update(shape=[10**12, 10**12])), 2),
    "header_shape_negative": (_header_edit(lambda h: _first_tensor(h).update(shape=[-1, 64])), 2),
    "header_shape_bool": (_header_edit(lambda h: _first_tensor(h).update(shape=[True, 64])), 2),
    "header_shape_missing": (_header_edit(lambda h: _first_tensor(h).pop("shape")), 2),
    "header_metadata_not_object": (_header_edit(lambda h: h.update({"__metadata__": [1, 2]})), 2),
    "header_tensor_missing": (_header_edit(lambda h: h.pop(sorted(k for k in h if k != "__metadata__")[-1])), 2),
    "weights_random_bytes": (lambda d: (d / "model.safetensors").write_bytes(os.urandom(4096)), 2),
    "weights_zip_file": (lambda d: _zip_in_place(d / "model.safetensors"), 2),
    "weights_nan": (lambda d: _fill_first_tensor(d / "model.safetensors", float("nan")), 2),
    "weights_minus_inf": (lambda d: _fill_first_tensor(d / "model.safetensors", float("-inf")), 2),
    "weights_float_max": (lambda d: _fill_first_tensor(d / "model.safetensors", 3.4e38), 2),
})


def _rehashed(edit):
    """``edit``, then state.json's recorded sha256 of the best weights set to the spoiled file's, as an
    attacker who edits both would: the case then reaches the header and weight checks behind the hash
    check (the file that ``run_info.committed_weights`` picks; nothing when it is not a regular file)."""
    def apply(d: Path) -> None:
        import hashlib

        edit(d)
        state = json.loads((d / "state.json").read_text())
        best = state["files"]["best"]
        path = d / best["name"] if (d / best["name"]).is_file() else d / "model.safetensors"
        if path.is_file():
            best["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
            (d / "state.json").write_text(json.dumps(state))
    return apply


# Cases that spoil the weights file: also with the hash fixed (the shipped run's state.json records it).
RUN_FOLDERS.update({f"{name}_rehashed": (_rehashed(edit), expect) for name, (edit, expect) in list(RUN_FOLDERS.items())
                    if name.startswith(("header_", "weights_", "safetensors_header_", "reliability_weights_",
                                        "reliability_size_disagrees"))})


def _zip_in_place(path: Path) -> None:
    """``path`` replaced by a zip that holds its old bytes (a torch.save-style archive, not safetensors)."""
    data = path.read_bytes()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data)


def _patch_bytes(path: Path, offset: int, data: bytes) -> None:
    blob = bytearray(path.read_bytes())
    blob[offset:offset + len(data)] = data
    path.write_bytes(bytes(blob))


def _fill_first_tensor(path: Path, value: float) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone().fill_(value)
    save_file(tensors, str(path), metadata={"format": "nram"})


def _nan_epoch_file(d: Path) -> None:
    """state.json names weights-e0004.safetensors; an attacker puts NaN weights there (the hash
    state.json records no longer matches)."""
    shutil.copyfile(d / "model.safetensors", d / "weights-e0004.safetensors")
    _fill_first_tensor(d / "weights-e0004.safetensors", float("nan"))


def _other_epoch_file(d: Path) -> None:
    """Finite weights that are not the run's (every float x3) where state.json names its best epoch file,
    whose recorded sha256 they do not match: scoring them silently would report another model's AUC."""
    from safetensors.torch import load_file, save_file

    tensors = {k: v * 3 if v.is_floating_point() else v for k, v in load_file(str(d / "model.safetensors")).items()}
    save_file(tensors, str(d / "weights-e0004.safetensors"), metadata={"format": "nram"})


@pytest.fixture(scope="module")
def small_dev(demo_corpus, tmp_path_factory):
    """The demo dev split cut to 40 impressions: what ``predict`` ranks in each run-folder case."""
    folder = tmp_path_factory.mktemp("small") / "dev"
    folder.mkdir()
    shutil.copyfile(demo_corpus / "dev" / "news.tsv", folder / "news.tsv")
    rows = (demo_corpus / "dev" / "behaviors.tsv").read_text().splitlines()[:40]
    (folder / "behaviors.tsv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.mark.parametrize("command", ["evaluate", "predict"])
@pytest.mark.parametrize("name", sorted(RUN_FOLDERS))
def test_hostile_run_folder(name, command, demo_corpus, small_dev, shared_home, tmp_path, capsys, monkeypatch):
    from nram_core import memory

    monkeypatch.setattr(memory, "machine_memory", lambda: MEMORY)
    edit, expect = RUN_FOLDERS[name]
    run_dir = tmp_path / "run"
    shutil.copytree(SHIPPED, run_dir)
    edit(run_dir)
    if command == "evaluate":
        argv = ["evaluate", "--run", run_dir, "--data", demo_corpus, "--max-impressions", "10"]
    else:
        argv = ["predict", "--run", run_dir, "--data", small_dev, "--out", tmp_path / "out"]
    outcome = invoke(capsys, argv)
    check("run_folders", f"{name}/{command}", outcome, expect)
    if command == "predict" and expect == 0:
        assert (tmp_path / "out" / "prediction.zip").is_file()


# ---- set 1, resumed: hostile run folders under train --resume ---------------------------------------------
RESUME_FLAGS = [*TINY_FLAGS[:TINY_FLAGS.index("--epochs")], "--epochs", "2",
                *TINY_FLAGS[TINY_FLAGS.index("--epochs") + 2:]]


def _state(edit):
    return lambda d: _edit_json(d / "state.json", edit)


def _raw_state(field: str, literal: str):
    """state.json with ``field`` set to a JSON literal json.dumps would never write."""
    def apply(d: Path) -> None:
        state = json.loads((d / "state.json").read_text())
        state[field] = "@@VALUE@@"
        (d / "state.json").write_text(json.dumps(state).replace('"@@VALUE@@"', literal))
    return apply


def _pop_state(field: str):
    return _state(lambda s: s.pop(field))


# name -> (edit of a one-epoch tiny run, expected exit of ``train --resume`` to 2 epochs)
RESUME = {
    # The control: the run trains its second epoch.
    "resume_untouched": (lambda d: None, 0),
    # An empty state.json object commits nothing ("no epoch", run_info.run_status): a fresh start.
    "resume_state_empty_object": (lambda d: (d / "state.json").write_text("{}"), 0),
    "resume_config_deep_nested": (lambda d: (d / "config.json").write_text(_nested()), 2),
    "resume_state_deep_nested": (lambda d: (d / "state.json").write_text('{"files": ' + _nested() + "}"), 2),
    "resume_vocab_deep_nested": (lambda d: (d / "vocab.json").write_text('{"words": ' + _nested() + "}"), 2),
    "resume_config_fifo": (_replace("config.json", _fifo), 2),
    "resume_state_fifo": (_replace("state.json", _fifo), 2),
    "resume_last_weights_fifo": (_replace("weights-e0001.safetensors", _fifo), 2),
    "resume_optimizer_fifo": (_replace("optimizer-e0001.pt", _fifo), 2),
    "resume_optimizer_random_bytes": (lambda d: (d / "optimizer-e0001.pt").write_bytes(os.urandom(5000)), 2),
    "resume_optimizer_is_a_directory": (_replace("optimizer-e0001.pt", Path.mkdir), 2),
    "resume_lock_is_a_directory": (_replace(".lock", Path.mkdir), 2),
    "resume_lock_fifo": (_replace(".lock", _fifo), 2),
    "resume_lock_symlink_dev_zero": (_replace(".lock", _symlink("/dev/zero")), 2),
    # The lock file is opened for writing: a symlink there must not make the run write outside its folder.
    "resume_lock_symlink_outside": (lambda d: (d / ".lock").unlink() or (d / ".lock").symlink_to(
        d.parent / "outside_the_run.txt"), 2),
    "resume_metrics_is_a_directory": (_replace("metrics.jsonl", Path.mkdir), 2),
    "resume_model_is_a_directory": (_replace("model.safetensors", Path.mkdir), 2),
    "resume_model_config_differs": (_model(word_dim=32, num_heads=4), 2),
    "resume_last_named_outside": (_state(lambda s: s["files"]["last"].update(name="../../etc/passwd")), 2),
    "resume_optimizer_entry_null": (_state(lambda s: s["files"].update(optimizer=None)), 2),
    "resume_last_entry_missing": (_state(lambda s: s["files"].pop("last")), 2),
    "resume_next_epoch_file_is_a_directory": (lambda d: (d / "weights-e0002.safetensors").mkdir(), 2),
    # state.json fields of the wrong type or out of range (hand-edited, or another tool's)
    "resume_files_a_string": (_state(lambda s: s.update(files="x")), 2),
    "resume_files_a_list": (_state(lambda s: s.update(files=[1])), 2),
    "resume_epochs_done_negative": (_state(lambda s: s.update(epochs_done=-5)), 2),
    "resume_epochs_done_10_pow_30": (_state(lambda s: s.update(epochs_done=10**30)), 2),
    "resume_epochs_done_string": (_state(lambda s: s.update(epochs_done="1")), 2),
    "resume_epochs_done_nan": (_raw_state("epochs_done", "NaN"), 2),
    "resume_epochs_done_float": (_state(lambda s: s.update(epochs_done=1.5)), 2),
    "resume_epochs_done_null": (_state(lambda s: s.update(epochs_done=None)), 2),
    "resume_epochs_done_missing": (_pop_state("epochs_done"), 2),
    "resume_global_step_string": (_state(lambda s: s.update(global_step="x")), 2),
    "resume_global_step_missing": (_pop_state("global_step"), 2),
    "resume_history_not_a_list": (_state(lambda s: s.update(history=5)), 2),
    "resume_history_of_numbers": (_state(lambda s: s.update(history=[1, 2])), 2),
    "resume_best_auc_string": (_state(lambda s: s.update(best_auc="x")), 2),
    "resume_best_epoch_10_pow_30": (_state(lambda s: s.update(best_epoch=10**30)), 2),
    "resume_best_epoch_string": (_state(lambda s: s.update(best_epoch="x")), 2),
    "resume_stale_epochs_string": (_state(lambda s: s.update(stale_epochs="x")), 2),
    "resume_final_a_string": (_state(lambda s: s.update(final="x")), 2),
}


@pytest.fixture(scope="module")
def tiny_run(demo_corpus, census_home, tmp_path_factory):
    """A one-epoch tiny run, trained by the CLI once (each resume case spoils a copy)."""
    out = tmp_path_factory.mktemp("tiny_run") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NRAM_HOME", str(census_home))
        assert main(["train", "--data", str(demo_corpus), "--out", str(out), *TINY_FLAGS]) == 0
    return out


@pytest.mark.parametrize("name", sorted(RESUME))
def test_hostile_run_folder_resumed(name, tiny_run, demo_corpus, shared_home, tmp_path, capsys):
    edit, expect = RESUME[name]
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir, symlinks=True)
    edit(run_dir)
    capsys.readouterr()
    outcome = invoke(capsys, ["train", "--resume", "--out", run_dir, "--data", demo_corpus, *RESUME_FLAGS])
    check("run_folders", f"{name}/train --resume", outcome, expect)
    assert not (tmp_path / "outside_the_run.txt").exists(), "the run wrote through a symlink outside its folder"


# ---- set 2: hostile data -------------------------------------------------------------------------------
NEWS = [f"N{i}\t{cat}\t{sub}\t{title}\tabs\turl\t[]\t[]" for i, (cat, sub, title) in enumerate([
    ("sports", "football_nfl", "Quarterback wins the game"), ("news", "newspolitics", "Senate passes the budget"),
    ("sports", "golf", "Golfer sinks a putt"), ("news", "newsworld", "Summit ends as leaders meet"),
    ("finance", "markets", "Stocks rise on the report")], start=1)]
TIME = "11/15/2019 7:11:50 AM"


def row(imp_id: str, user: str = "U1", time_: str = TIME, history: str = "N1 N2",
        impressions: str = "N3-1 N4-0 N5-0") -> str:
    return f"{imp_id}\t{user}\t{time_}\t{history}\t{impressions}"


GOOD = [row("1"), row("3", user="U3", impressions="N4-1 N3-0"), row("4", user="U4", history="N5")]


def _write(folder: Path, news: list[str] | bytes = NEWS, behaviors: list[str] | bytes = GOOD,
           newline: bytes = b"\n") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in (("news.tsv", news), ("behaviors.tsv", behaviors)):
        data = content if isinstance(content, bytes) else newline.join(s.encode() for s in content) + newline
        (folder / name).write_bytes(data)


def _behaviors_with(bad: str | bytes):
    """dev/behaviors.tsv with ``bad`` as line 2, between good rows."""
    bad = bad if isinstance(bad, bytes) else bad.encode()
    return lambda root: _write(root / "dev", behaviors=b"\n".join([GOOD[0].encode(), bad] +
                                                                  [g.encode() for g in GOOD[1:]]) + b"\n")


def _news_with(bad: str | bytes):
    """dev/news.tsv with ``bad`` as line 2."""
    bad = bad if isinstance(bad, bytes) else bad.encode()
    return lambda root: _write(root / "dev", news=b"\n".join([NEWS[0].encode(), bad] +
                                                             [n.encode() for n in NEWS[1:]]) + b"\n")


def _dev_file(name: str, make):
    def apply(root: Path) -> None:
        _replace(name, make)(root / "dev")
    return apply


def _zip(members: dict[str, bytes] | list[tuple[str, bytes]]):
    """``--dev`` is a zip holding ``members`` (names as given: traversal, absolute and duplicate names)."""
    def apply(root: Path) -> tuple[str, Path]:
        path = root.parent / "hostile.zip"
        with zipfile.ZipFile(path, "w") as archive, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about a duplicate name, and writes it
            for name, data in (members.items() if isinstance(members, dict) else members):
                archive.writestr(zipfile.ZipInfo(name), data)
        return "--dev", path
    return apply


def _split_bytes() -> dict[str, bytes]:
    return {"news.tsv": ("\n".join(NEWS) + "\n").encode(), "behaviors.tsv": ("\n".join(GOOD) + "\n").encode()}


def _nested_zip(root: Path) -> tuple[str, Path]:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        for name, data in _split_bytes().items():
            archive.writestr(name, data)
    return _zip({"MINDdemo_dev.zip": inner.getvalue()})(root)


def _file_as_data(make):
    def apply(root: Path) -> Path:
        path = root.parent / "data.bin"
        make(path)
        return path
    return apply


TEN_MB = 10 << 20


def _escaped(*roots: Path) -> list[Path]:
    """What a '../../escaped/...' zip member would have made, extracted under any of ``roots``
    (a --dest, NRAM_HOME/extracted/NAME) up to two levels above them."""
    return [p for root in roots for p in (root / "escaped", root.parent / "escaped", root.parent.parent / "escaped")
            if p.exists()]
# name -> (edit of a good corpus (root/train, root/dev) returning None (--data root), another --data
#          path, or (flag, path) (a zip as --dev),
#          non-strict exit, strict exit, words the strict error line holds)
# Exit 0 in non-strict mode is a counted skip (asserted below: "skipped" on stderr) or, where the
# case says so, input that is legitimately acceptable.
DATA = {f"row_{reason}": (_behaviors_with(bad.replace("\tU", "\tUx")), 0, 2, ("behaviors.tsv:2", f"field '{field}'"))
        for reason, (bad, field) in {**BAD_ROWS, **OUT_OF_RANGE}.items()}
DATA.update({
    "row_too_many_fields": (_behaviors_with(row("2") + "\textra"), 0, 2, ("behaviors.tsv:2", "field 'row'")),
    "row_empty_impressions": (_behaviors_with(row("2", impressions="")), 0, 2,
                              ("behaviors.tsv:2", "field 'impressions'")),
    "row_invalid_utf8": (_behaviors_with(row("2").encode().replace(b"U1", b"U\xff\xfe")), 0, 2,
                         ("behaviors.tsv:2", "field 'row'")),
    "row_nul_in_impression_id": (_behaviors_with(row("2\x00")), 0, 2, ("behaviors.tsv:2", "field 'impression_id'")),
    "row_plus_sign_id": (_behaviors_with(row("+2")), 0, 2, ("behaviors.tsv:2", "field 'impression_id'")),
    "row_arabic_digit_id": (_behaviors_with(row("\u0662")), 0, 2, ("behaviors.tsv:2", "field 'impression_id'")),
    "row_id_5000_digits": (_behaviors_with(row("9" * 5000)), 0, 2, ("behaviors.tsv:2", "field 'impression_id'")),
    "row_time_year_10000": (_behaviors_with(row("2", time_="01/01/10000 12:00:00 AM")), 0, 2,
                            ("behaviors.tsv:2", "field 'time'")),
    "row_time_huge_numbers": (_behaviors_with(row("2", time_="99999999999/1/2019 1:00:00 AM")), 0, 2,
                              ("behaviors.tsv:2", "field 'time'")),
    "row_ten_mb_of_x": (_behaviors_with("x" * TEN_MB), 0, 2, ("behaviors.tsv:2", "field 'row'")),
    "row_ten_mb_label": (_behaviors_with(row("2", impressions="N3-" + "1" * TEN_MB)), 0, 2,
                         ("behaviors.tsv:2", "field 'impressions'")),
    "header_row_first": (lambda root: _write(root / "dev", behaviors=[
        "impression_id\tuser_id\ttime\thistory\timpressions"] + GOOD), 0, 2, ("behaviors.tsv:1",)),
    "binary_garbage_behaviors": (lambda root: _write(root / "dev", behaviors=bytes(range(256)) * 64), 2, 2,
                                 ("behaviors.tsv:1",)),
    "binary_garbage_news": (lambda root: _write(root / "dev", news=bytes(range(256)) * 64), 2, 2, ("news.tsv:1",)),
    "news_field_count": (_news_with("N9\tonly\tthree"), 0, 2, ("news.tsv:2", "field 'row'")),
    "news_invalid_utf8": (_news_with(NEWS[0].encode().replace(b"N1", b"N9").replace(b"wins", b"\xc3\x28")), 0, 2,
                          ("news.tsv:2", "field 'row'")),
    # Legitimately acceptable in both modes: the reader keeps these rows or drops ids it cannot resolve
    # (counted on stderr, never an error).
    "news_ten_mb_title": (_news_with(f"N9\tnews\tx\t{'word ' * (TEN_MB // 5)}\tabs\turl\t[]\t[]"), 0, 0, ()),
    "news_entities_deep_nested": (_news_with(f"N9\tnews\tx\ttitle\tabs\turl\t{_nested()}\t{_nested()}"), 0, 0, ()),
    "row_history_ten_mb_of_ids": (_behaviors_with(row("2", history=" ".join(["N1"] * (TEN_MB // 3)))), 0, 0, ()),
    "row_nul_in_user_id": (_behaviors_with(row("2", user="U\x002")), 0, 0, ()),
    "row_unknown_candidate_ids": (_behaviors_with(row("2", impressions="N3-1 N98-0 N4-0")), 0, 0, ()),
    "row_only_unknown_candidates": (_behaviors_with(row("2", impressions="N98-1 N99-0")), 0, 0, ()),
    # "N3--1" reads as news "N3-" clicked (the label is after the last '-'): an unknown id, dropped.
    "row_negative_label": (_behaviors_with(row("2", impressions="N3--1 N4-0")), 0, 0, ()),
    "row_unknown_history_ids": (_behaviors_with(row("2", history="N97 N1 N96")), 0, 0, ()),
    "news_duplicate_id": (_news_with(NEWS[2].replace("Golfer", "Another")), 0, 0, ()),
    "news_empty_id": (_news_with("\tnews\tx\ttitle\tabs\turl\t[]\t[]"), 0, 2, ("news.tsv:2",)),
    "row_duplicate_impression_id": (_behaviors_with(row("1", user="U9")), 0, 0, ()),
    "crlf_line_endings": (lambda root: _write(root / "dev", newline=b"\r\n"), 0, 0, ()),
    "utf8_bom_first": (lambda root: _write(root / "dev", behaviors=b"\xef\xbb\xbf" + (
        "\n".join(GOOD) + "\n").encode()), 0, 0, ()),
    "blank_lines_between_rows": (_behaviors_with(""), 0, 0, ()),
    # Nothing usable: exit 2 in both modes, one line.
    "behaviors_empty": (_dev_file("behaviors.tsv", Path.touch), 2, 2, ()),
    "news_empty": (_dev_file("news.tsv", Path.touch), 2, 2, ()),
    "cr_only_line_endings": (lambda root: _write(root / "dev", newline=b"\r"), 2, 2, ("news.tsv:1", "field 'row'")),
    "behaviors_missing": (_dev_file("behaviors.tsv", lambda p: None), 2, 2, ()),
    "news_missing": (_dev_file("news.tsv", lambda p: None), 2, 2, ()),
    "news_is_a_directory": (_dev_file("news.tsv", Path.mkdir), 2, 2, ()),
    "behaviors_is_a_fifo": (_dev_file("behaviors.tsv", _fifo), 2, 2, ()),
    "news_symlink_dev_zero": (_dev_file("news.tsv", _symlink("/dev/zero")), 2, 2, ()),
    "behaviors_symlink_dev_urandom": (_dev_file("behaviors.tsv", _symlink("/dev/urandom")), 2, 2, ()),
    "zip_traversal_names": (_zip({f"../../escaped/{k}": v for k, v in _split_bytes().items()}), 2, 2, ()),
    "zip_absolute_names": (_zip({f"/tmp/escaped-census/{k}": v for k, v in _split_bytes().items()}), 2, 2, ()),
    "zip_duplicate_names": (_zip([("news.tsv", b"x"), *_split_bytes().items()]), 2, 2, ()),
    "zip_nested": (_nested_zip, 2, 2, ()),
    "zip_overlapping_entries_bomb": (lambda root: ("--dev", _overlapping_bomb(
        root.parent / "bomb.zip", copies=3000, member_bytes=8 << 20, same_name=False)), 2, 2, ()),
    "zip_of_random_bytes": (lambda root: ("--dev", _file_as_data(lambda p: p.write_bytes(os.urandom(4096)))(
        root).rename(root.parent / "random.zip")), 2, 2, ()),
    "data_random_bytes_file": (_file_as_data(lambda p: p.write_bytes(os.urandom(4096))), 2, 2, ()),
    "data_is_dev_zero": (lambda root: Path("/dev/zero"), 2, 2, ()),
    "data_is_a_fifo": (_file_as_data(_fifo), 2, 2, ()),
    "data_is_an_empty_folder": (lambda root: (root.parent / "empty").mkdir() or root.parent / "empty", 2, 2, ()),
})
# A zip with the good split, as --dev (the control for the zip cases): acceptable.
DATA["zip_of_a_good_split"] = (_zip(_split_bytes()), 0, 0, ())


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
@pytest.mark.parametrize("name", sorted(DATA))
def test_hostile_data(name, strict, shared_home, tmp_path, capsys):
    edit, lenient_exit, strict_exit, words = DATA[name]
    root = tmp_path / "corpus"
    _write(root / "train")
    _write(root / "dev")
    data = edit(root) or root
    flag, data = data if isinstance(data, tuple) else ("--data", data)
    argv = ["evaluate", "--run", SHIPPED, flag, data] + (["--strict"] if strict else [])
    outcome = invoke(capsys, argv)
    expect = strict_exit if strict else lenient_exit
    check("data", f"{name}/{'strict' if strict else 'default'}", outcome, expect, *(words if strict else ()))
    if expect == 0:
        assert json.loads(outcome.out)["impressions"] >= 1
        if not strict and strict_exit == 2:  # a counted skip, named on stderr
            assert "skipped" in outcome.err, (name, outcome.err)
    assert not _escaped(tmp_path, shared_home) and not Path("/tmp/escaped-census").exists()



# ---- set 3: CLI arguments ------------------------------------------------------------------------------
@dataclass
class Places:
    corpus: Path  # a tiny good corpus: root/train, root/dev
    run: Path  # the shipped model
    tmp: Path  # this case's own folder (also the working directory)
    file: Path  # an existing regular file
    suite: Path  # a finished tiny experiment suite (experiment --out), to continue


def _truth_corpus(truth: str):
    """The tiny corpus with a truth.json (what ``attention`` reads from a synthetic corpus) of ``truth``."""
    def make(p: Places) -> Path:
        root = p.tmp / "truth_corpus"
        shutil.copytree(p.corpus, root)
        (root / "truth.json").write_text(truth)
        return root
    return make


def _entity_corpus(p: Places) -> Path:
    """The tiny corpus whose first train news holds a deeply nested title-entities column (MIND's
    JSON column 7, which the DKN baseline of an experiment suite reads)."""
    root = p.tmp / "entity_corpus"
    shutil.copytree(p.corpus, root)
    _write(root / "train", news=[NEWS[0].replace("\t[]\t[]", f"\t{_nested()}\t[]")] + NEWS[1:])
    return root


def _loop(p: Places) -> Path:
    """A symlink that points at itself."""
    path = p.tmp / "loop"
    path.symlink_to("loop")
    return path


def _spoiled_suite(what: str, content: bytes):
    """experiment --out a copy of the tiny suite (``Places.suite``) whose suite.json, or the nram
    model's result.json, holds ``content``."""
    def argv(p: Places) -> list:
        folder = p.tmp / "suite"
        shutil.copytree(p.suite, folder)
        target = folder / "suite.json" if what == "suite.json" else folder / "runs" / "nram" / "seed0" / what
        target.write_bytes(content)
        return ["experiment", "--data", p.corpus, "--epochs", "1", "--seeds", "1", "--out", folder, "--no-progress"]
    return argv


def _glove(p: Places, text: str | None) -> Path:
    """A GloVe-format file of ``text`` for a TINY_FLAGS run (width 16); None: a FIFO. (Given as
    --word-vectors PATH: TINY_FLAGS' --word-vectors none excludes --glove.)"""
    path = p.tmp / "glove.txt"
    if text is None:
        os.mkfifo(path)
    else:
        path.write_text(text)
    return path


def _mirror_with_bomb(p: Places) -> str:
    """A file:// mirror (no network) whose MINDdemo_train.zip is an overlapping-entries bomb."""
    mirror = p.tmp / "mirror"
    mirror.mkdir()
    _overlapping_bomb(mirror / "MINDdemo_train.zip", copies=3000, member_bytes=8 << 20, same_name=False)
    return f"file://{mirror}"


def _good_mirror(p: Places) -> str:
    """A file:// mirror (no network) holding a good MINDdemo_train.zip."""
    mirror = p.tmp / "good_mirror"
    mirror.mkdir()
    with zipfile.ZipFile(mirror / "MINDdemo_train.zip", "w") as archive:
        for name, data in _split_bytes().items():
            archive.writestr(name, data)
    return f"file://{mirror}"


def _dest_holding(name: str, make):
    """A --dest where ``make`` put something at ``name`` before the download."""
    def apply(p: Places) -> Path:
        dest = p.tmp / "dest"
        dest.mkdir()
        make(dest / name)
        return dest
    return apply


def _download(dest, mirror=_good_mirror):
    return lambda p: ["download", "--splits", "train", "--dest", dest(p), "--base-url", mirror(p)]


def _dest_with_traversal_zip(p: Places) -> Path:
    """A --dest that already holds MINDdemo_train.zip (so nothing is downloaded) with a '..' member."""
    dest = p.tmp / "dest"
    dest.mkdir()
    with zipfile.ZipFile(dest / "MINDdemo_train.zip", "w") as archive:
        for name, data in _split_bytes().items():
            archive.writestr(name, data)
        archive.writestr("../../escaped/evil.txt", b"outside")
    return dest


NOWHERE = "http://127.0.0.1:9"  # the discard port: refused at once, never the network
SCORING = ("evaluate", "recommend", "predict", "explain", "attention")


def _train(*flags, data=lambda p: p.corpus):
    """train on the tiny corpus with TINY_FLAGS, then ``flags`` (argparse keeps the last of a flag)."""
    return lambda p: ["train", "--data", data(p), "--out", p.tmp / "run", *TINY_FLAGS, *flags]


def _train_vectors(text: str | None):
    """train with --word-vectors a GloVe-format file of ``text`` (``_glove``)."""
    return lambda p: _train("--word-vectors", _glove(p, text))(p)


def _scoring(command: str, *flags):
    extra = {"recommend": ["--user", "U1"], "explain": ["--user", "U1", "--news", "N3"]}.get(command, [])
    return lambda p: [command, "--run", p.run, "--data", p.corpus, *extra, *flags]


# name -> (argv from the case's Places, expected exit, words the error line holds)
CLI = {
    "no_arguments": (lambda p: [], 2, ()),
    "unknown_command": (lambda p: ["fly"], 2, ()),
    "unknown_flag": (lambda p: ["evaluate", "--run", p.run, "--bogus"], 2, ("--bogus",)),
    # --help is a request, not an error: usage on stdout, exit 0.
    "help": (lambda p: ["--help"], 0, ()),
    # demo-data
    "demo_data_no_folder": (lambda p: ["demo-data"], 2, ()),
    "demo_data_seed_negative": (lambda p: ["demo-data", p.tmp / "d", "--seed", "-1"], 2, ("--seed",)),
    "demo_data_seed_nan": (lambda p: ["demo-data", p.tmp / "d", "--seed", "nan"], 2, ("--seed",)),
    "demo_data_seed_2_pow_32": (lambda p: ["demo-data", p.tmp / "d", "--seed", str(2**32)], 2, ("--seed",)),
    "demo_data_seed_10_pow_5000": (lambda p: ["demo-data", p.tmp / "d", "--seed", "1" + "0" * 5000], 2, ("--seed",)),
    "demo_data_scale_unknown": (lambda p: ["demo-data", p.tmp / "d", "--scale", "huge"], 2, ("--scale",)),
    "demo_data_folder_is_a_file": (lambda p: ["demo-data", p.file], 2, ()),
    "demo_data_folder_under_dev_null": (lambda p: ["demo-data", "/dev/null/corpus"], 2, ()),
    # A folder name in any script is a folder name: the corpus is written there.
    "demo_data_unicode_folder": (lambda p: ["demo-data", p.tmp / "коркус ✓ データ"], 0, ()),
    # download: a refused port, a file:// mirror or a --dest that already holds the zip; never the network
    "download_size_unknown": (lambda p: ["download", "--size", "huge", "--base-url", NOWHERE], 2, ("--size",)),
    "download_split_unknown": (lambda p: ["download", "--splits", "test", "--base-url", NOWHERE], 2, ("--splits",)),
    "download_max_unzipped_nan": (lambda p: ["download", "--max-unzipped-gb", "nan", "--base-url", NOWHERE], 2,
                                  ("--max-unzipped-gb",)),
    "download_max_unzipped_negative": (lambda p: ["download", "--max-unzipped-gb", "-1", "--base-url", NOWHERE],
                                       2, ("--max-unzipped-gb",)),
    "download_max_zip_ratio_inf": (lambda p: ["download", "--max-zip-ratio", "inf", "--base-url", NOWHERE], 2,
                                   ("--max-zip-ratio",)),
    "download_max_zip_ratio_zero": (lambda p: ["download", "--max-zip-ratio", "0", "--base-url", NOWHERE], 2,
                                    ("--max-zip-ratio",)),
    "download_refused_port": (lambda p: ["download", "--dest", p.tmp / "mind", "--base-url", NOWHERE], 2,
                              ("127.0.0.1:9",)),
    "download_dest_is_a_file": (lambda p: ["download", "--dest", p.file, "--base-url", NOWHERE], 2, ()),
    "download_file_mirror_bomb": (lambda p: ["download", "--dest", p.tmp / "mind", "--splits", "train",
                                             "--base-url", _mirror_with_bomb(p)], 2, ("overlapping",)),
    "download_dest_holds_traversal_zip": (lambda p: ["download", "--dest", _dest_with_traversal_zip(p), "--splits",
                                                     "train", "--base-url", NOWHERE], 2, ("..",)),
    # A file:// mirror with a good zip downloads and extracts offline: the control for the cases below.
    "download_file_mirror_good": (_download(lambda p: p.tmp / "dest"), 0, ()),
    "download_dest_zip_is_a_directory": (_download(_dest_holding("MINDdemo_train.zip", Path.mkdir)), 2, ()),
    "download_dest_split_is_a_file": (_download(_dest_holding("MINDdemo_train", Path.touch)), 2, ()),
    "download_dest_part_is_a_fifo": (_download(_dest_holding("MINDdemo_train.zip.part", _fifo)), 2, (".part",)),
    "download_dest_part_is_a_directory": (_download(_dest_holding("MINDdemo_train.zip.part", Path.mkdir)), 2, ()),
    # train: each refused before an epoch starts
    "train_epochs_zero": (_train("--epochs", "0"), 2, ("epochs",)),
    "train_epochs_negative": (_train("--epochs", "-3"), 2, ("epochs",)),
    "train_epochs_non_numeric": (_train("--epochs", "three"), 2, ("--epochs",)),
    "train_lr_nan": (_train("--lr", "nan"), 2, ("lr",)),
    "train_lr_inf": (_train("--lr", "inf"), 2, ("lr",)),
    "train_lr_negative": (_train("--lr", "-0.1"), 2, ("lr",)),
    "train_lr_empty": (_train("--lr", ""), 2, ("--lr",)),
    "train_grad_clip_nan": (_train("--grad-clip", "nan"), 2, ("grad",)),
    "train_weight_decay_minus_inf": (_train("--weight-decay=-inf"), 2, ("weight",)),
    "train_vector_std_inf": (_train("--vector-std", "inf"), 2, ("vector",)),
    "train_embedding_std_nan": (_train("--embedding-std", "nan"), 2, ("embedding",)),
    "train_dropout_one_and_a_half": (_train("--dropout", "1.5"), 2, ("dropout",)),
    "train_batch_size_zero": (_train("--batch-size", "0"), 2, ("batch",)),
    "train_batch_size_10_pow_7": (_train("--batch-size", str(10**7)), 2, ("batch",)),
    "train_negatives_10_pow_6": (_train("--negatives", str(10**6)), 2, ("negatives",)),
    "train_title_len_10_pow_9": (_train("--title-len", str(10**9)), 2, ("title",)),
    "train_history_len_negative": (_train("--history-len", "-1"), 2, ("history",)),
    "train_word_dim_non_numeric": (_train("--word-dim", "abc"), 2, ("--word-dim",)),
    "train_word_dim_float": (_train("--word-dim", "16.5"), 2, ("--word-dim",)),
    "train_word_dim_10_pow_30": (_train("--word-dim", str(10**30)), 2, ("word",)),
    "train_num_heads_zero": (_train("--num-heads", "0"), 2, ("heads",)),
    "train_heads_times_dim_over_cap": (_train("--num-heads", "256", "--head-dim", "4096"), 2, ("head",)),
    "train_init_unknown": (_train("--init", "evil"), 2, ("init",)),
    "train_seed_negative": (_train("--seed", "-1"), 2, ("seed",)),
    "train_seed_2_pow_32": (_train("--seed", str(2**32)), 2, ("seed",)),
    "train_max_impressions_negative": (_train("--max-impressions", "-5"), 2, ("max",)),
    "train_max_steps_negative": (_train("--max-steps", "-1"), 2, ("steps",)),
    "train_warmup_negative": (_train("--warmup-steps", "-1"), 2, ("warmup",)),
    "train_patience_negative": (_train("--patience", "-1"), 2, ("patience",)),
    "train_min_word_count_zero": (_train("--min-word-count", "0"), 2, ("min",)),
    "train_num_workers_negative": (_train("--num-workers", "-1"), 2, ("workers",)),
    "train_eval_batch_size_zero": (_train("--eval-batch-size", "0"), 2, ("eval",)),
    "train_eval_batch_size_10_pow_12": (_train("--eval-batch-size", str(10**12)), 2, ("eval",)),
    "train_title_chunk_negative": (_train("--title-chunk", "-1"), 2, ("chunk",)),
    "train_device_cuda_9": (_train("--device", "cuda:9"), 2, ("cuda:9",)),
    "train_device_tpu": (_train("--device", "tpu"), 2, ("tpu",)),
    "train_device_empty": (_train("--device", ""), 2, ("--device",)),
    "train_preset_unknown": (_train("--preset", "giant"), 2, ("--preset",)),
    "train_no_data": (lambda p: ["train", "--out", p.tmp / "run", *TINY_FLAGS], 2, ("--data",)),
    "train_data_missing": (_train(data=lambda p: p.tmp / "missing"), 2, ("--data",)),
    "train_data_is_a_file": (_train(data=lambda p: p.file), 2, ("--data",)),
    "train_data_empty_string": (_train(data=lambda p: ""), 2, ("--data",)),
    "train_out_is_a_file": (lambda p: ["train", "--data", p.corpus, "--out", p.file, *TINY_FLAGS], 2, ()),
    "train_out_under_dev_null": (lambda p: ["train", "--data", p.corpus, "--out", "/dev/null/run", *TINY_FLAGS], 2,
                                 ()),
    "train_resume_missing_folder": (_train("--resume"), 2, ("--resume",)),
    "train_word_vectors_missing_file": (_train("--word-vectors", "/nonexistent/glove.txt"), 2, ("word vectors",)),
    "train_word_vectors_dev_zero": (_train("--word-vectors", "/dev/zero"), 2, ("word vectors",)),
    "train_glove_corpus": (_train("--glove", "corpus"), 2, ("--glove",)),
    "train_vectors_file_wrong_width": (_train_vectors("the 0.1 0.2\n"), 2, ("glove.txt:1",)),
    "train_vectors_file_not_numeric": (_train_vectors("the" + " x" * 16 + "\n"), 2, ("glove.txt:1",)),
    "train_vectors_file_ten_mb_line": (_train_vectors("the" + " 0.1" * (10 << 18) + "\n"), 2, ("glove.txt:1",)),
    # A vector of NaNs is refused as it is read, naming its line (training from it would diverge).
    "train_vectors_file_nan_vectors": (_train_vectors("the" + " nan" * 16 + "\n"), 2, ("glove.txt:1",)),
    "train_vectors_file_is_a_fifo": (_train_vectors(None), 2, ("glove.txt",)),
    "train_vectors_file_is_a_directory": (lambda p: _train("--word-vectors", p.tmp)(p), 2, ()),
    # truth.json is optional metadata of a synthetic corpus (synth.read_truth: an unreadable one is
    # none); a hostile one must not stop a run: the tiny run trains (one epoch on 5 impressions).
    "train_truth_deep_nested": (_train(data=lambda p: _truth_corpus(_nested())(p)), 0, ()),
    "train_truth_a_list": (_train(data=lambda p: _truth_corpus('["scale", "seed"]')(p)), 0, ()),
    # experiment
    "experiment_suite_unknown": (lambda p: ["experiment", "--data", p.corpus, "--suite", "everything",
                                            "--out", p.tmp / "x"], 2, ("everything",)),
    "experiment_seeds_zero": (lambda p: ["experiment", "--data", p.corpus, "--seeds", "0"], 2, ("--seeds",)),
    "experiment_epochs_negative": (lambda p: ["experiment", "--data", p.corpus, "--epochs", "-1", "--out",
                                              p.tmp / "x"], 2, ("epochs",)),
    "experiment_lr_nan": (lambda p: ["experiment", "--data", p.corpus, "--lr", "nan", "--out", p.tmp / "x"], 2,
                          ("lr",)),
    "experiment_batch_size_zero": (lambda p: ["experiment", "--data", p.corpus, "--batch-size", "0", "--out",
                                              p.tmp / "x"], 2, ("batch",)),
    "experiment_max_impressions_negative": (lambda p: ["experiment", "--data", p.corpus, "--max-impressions", "-1",
                                                       "--out", p.tmp / "x"], 2, ("max",)),
    "experiment_device_cuda_9": (lambda p: ["experiment", "--data", p.corpus, "--device", "cuda:9"], 2, ("cuda:9",)),
    "experiment_no_data": (lambda p: ["experiment", "--out", p.tmp / "x"], 2, ("--data",)),
    # A malformed entities column is no entities (data.entities.parse_title_entities): the suite runs
    # (one epoch per model on 5 impressions).
    "experiment_entities_deep_nested": (lambda p: ["experiment", "--data", _entity_corpus(p), "--epochs", "1",
                                                   "--seeds", "1", "--out", p.tmp / "x", "--no-progress"], 0, ()),
    # paths: a symlink to itself, a name longer than NAME_MAX
    "evaluate_run_symlink_loop": (lambda p: ["evaluate", "--run", _loop(p), "--data", p.corpus], 2, ()),
    "evaluate_data_symlink_loop": (lambda p: ["evaluate", "--run", p.run, "--data", _loop(p)], 2, ("--data",)),
    "evaluate_dev_symlink_loop": (lambda p: ["evaluate", "--run", p.run, "--dev", _loop(p)], 2, ("--dev",)),
    "predict_out_symlink_loop": (lambda p: _scoring("predict", "--out", _loop(p))(p), 2, ()),
    "train_out_symlink_loop": (lambda p: ["train", "--data", p.corpus, "--out", _loop(p), *TINY_FLAGS], 2, ()),
    "download_dest_symlink_loop": (lambda p: ["download", "--dest", _loop(p), "--base-url", NOWHERE], 2, ()),
    "evaluate_run_name_too_long": (lambda p: ["evaluate", "--run", p.tmp / ("r" * 300), "--data", p.corpus], 2, ()),
    "evaluate_data_name_too_long": (lambda p: ["evaluate", "--run", p.run, "--data", p.tmp / ("d" * 300)], 2, ()),
    "demo_data_name_too_long": (lambda p: ["demo-data", p.tmp / ("c" * 300)], 2, ()),
    "predict_out_name_too_long": (lambda p: _scoring("predict", "--out", p.tmp / ("o" * 300))(p), 2, ()),
    # experiment continuing a suite folder (--out of a finished tiny suite) whose files were spoiled
    **{f"experiment_continue_{what}_{name}": (_spoiled_suite(what, content), 2,
                                               ("suite.json",) if what == "suite.json" else ("seed0",))
       for what in ("suite.json", "result.json")
       for name, content in (("deep_nested", _nested().encode()), ("a_list", b"[1]"),
                             ("bad_utf8", b'{"\xff": 1}'), ("settings_not_object", b'{"settings": 5}'))},
    # evaluate, recommend, predict, explain, attention
    **{f"{c}_run_missing": (lambda p, c=c: _scoring(c)(p)[:2] + [p.tmp / "missing"] + _scoring(c)(p)[3:], 2,
                            ("missing",)) for c in SCORING},
    **{f"{c}_no_run": (lambda p, c=c: [c, "--data", p.corpus], 2, ("--run",)) for c in SCORING},
    **{f"{c}_device_cuda_9": (lambda p, c=c: _scoring(c, "--device", "cuda:9")(p), 2, ("cuda:9",))
       for c in SCORING},
    "evaluate_run_is_a_file": (lambda p: ["evaluate", "--run", p.file, "--data", p.corpus], 2, ()),
    "evaluate_run_empty_string": (lambda p: ["evaluate", "--run", "", "--data", p.corpus], 2, ()),
    "evaluate_run_is_dev_null": (lambda p: ["evaluate", "--run", "/dev/null", "--data", p.corpus], 2, ()),
    "evaluate_no_data": (lambda p: ["evaluate", "--run", p.run], 2, ("--data",)),
    "evaluate_data_empty_string": (lambda p: ["evaluate", "--run", p.run, "--data", ""], 2, ("--data",)),
    "evaluate_max_impressions_negative": (_scoring("evaluate", "--max-impressions", "-1"), 2, ("--max-impressions",)),
    "evaluate_max_impressions_nan": (_scoring("evaluate", "--max-impressions", "nan"), 2, ("--max-impressions",)),
    # A cap larger than the split is no cap.
    "evaluate_max_impressions_10_pow_30": (_scoring("evaluate", "--max-impressions", str(10**30)), 0, ()),
    "evaluate_split_unknown": (_scoring("evaluate", "--split", "test"), 2, ("--split",)),
    "evaluate_device_mps_or_unknown": (_scoring("evaluate", "--device", "mps"), 2, ("mps",)),
    "evaluate_device_gpu": (_scoring("evaluate", "--device", "gpu"), 2, ("gpu",)),
    "recommend_no_user": (lambda p: ["recommend", "--run", p.run, "--data", p.corpus], 2, ("--user",)),
    "recommend_top_zero": (_scoring("recommend", "--top", "0"), 2, ("--top",)),
    "recommend_top_negative": (_scoring("recommend", "--top", "-5"), 2, ("--top",)),
    "recommend_top_nan": (_scoring("recommend", "--top", "nan"), 2, ("--top",)),
    # More than the catalog holds: the whole catalog, ranked.
    "recommend_top_10_pow_12": (_scoring("recommend", "--top", str(10**12)), 0, ()),
    "recommend_user_unknown": (lambda p: _scoring("recommend")(p)[:-1] + ["U404"], 2, ("U404",)),
    "recommend_user_empty": (lambda p: _scoring("recommend")(p)[:-1] + [""], 2, ()),
    "recommend_user_unicode": (lambda p: _scoring("recommend")(p)[:-1] + ["Ü\u202e\u0663"], 2, ()),
    "recommend_category_unknown": (_scoring("recommend", "--category", "no-such-category"), 2, ("no-such-category",)),
    "predict_out_is_a_file": (_scoring("predict", "--out", "@FILE"), 2, ()),
    "predict_out_under_dev_null": (_scoring("predict", "--out", "/dev/null/out"), 2, ()),
    # Any folder name is a folder name.
    "predict_out_unicode": (lambda p: _scoring("predict", "--out", p.tmp / "выход ✓")(p), 0, ()),
    "explain_no_news": (lambda p: ["explain", "--run", p.run, "--data", p.corpus, "--user", "U1"], 2, ("--news",)),
    "explain_news_unknown": (lambda p: _scoring("explain")(p)[:-1] + ["N404"], 2, ("N404",)),
    "explain_news_empty": (lambda p: _scoring("explain")(p)[:-1] + [""], 2, ()),
    "explain_user_unknown": (lambda p: ["explain", "--run", p.run, "--data", p.corpus, "--user", "U404", "--news",
                                        "N3"], 2, ("U404",)),
    "attention_max_news_zero": (_scoring("attention", "--max-news", "0"), 2, ("--max-news",)),
    "attention_max_impressions_negative": (_scoring("attention", "--max-impressions", "-1"), 2,
                                           ("--max-impressions",)),
    # Caps larger than the split are no caps.
    "attention_max_news_10_pow_12": (_scoring("attention", "--max-news", str(10**12)), 0, ()),
    # truth.json is optional (synth.read_truth: an unreadable one is no truth); a hostile one must not
    # break the command.
    "attention_truth_deep_nested": (lambda p: ["attention", "--run", p.run, "--data",
                                               _truth_corpus(_nested())(p)], 0, ()),
    "attention_truth_a_list": (lambda p: ["attention", "--run", p.run, "--data",
                                          _truth_corpus('["topical_words", "common_words"]')(p)], 0, ()),
    "attention_truth_wrong_types": (lambda p: ["attention", "--run", p.run, "--data",
                                               _truth_corpus('{"topical_words": 5, "common_words": null}')(p)], 0, ()),
    "attention_truth_bad_utf8": (lambda p: ["attention", "--run", p.run, "--data", _bad_utf8_truth(p)], 0, ()),
}


def _bad_utf8_truth(p: Places) -> Path:
    root = _truth_corpus("{}")(p)
    (root / "truth.json").write_bytes(b'{"topical_words": "\xff"}')
    return root


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny") / "corpus"
    _write(root / "train", behaviors=GOOD + [row("5", user="U5", impressions="N5-1 N1-0")])
    _write(root / "dev")
    return root


@pytest.fixture(scope="module")
def tiny_suite(tiny_corpus, census_home, tmp_path_factory):
    """The paper suite, one epoch and one seed per model on the tiny corpus (a few seconds)."""
    out = tmp_path_factory.mktemp("tiny_suite") / "suite"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NRAM_HOME", str(census_home))
        assert main(["experiment", "--data", str(tiny_corpus), "--epochs", "1", "--seeds", "1", "--out", str(out),
                     "--no-progress"]) == 0
    return out


@pytest.mark.parametrize("name", sorted(CLI))
def test_hostile_cli_arguments(name, tiny_corpus, tiny_suite, shared_home, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty-string path means the working directory: never the repository
    file = tmp_path / "a_file.txt"
    file.write_text("not a folder\n")
    places = Places(corpus=tiny_corpus, run=SHIPPED, tmp=tmp_path, file=file, suite=tiny_suite)
    make, expect, words = CLI[name]
    argv = [file if a == "@FILE" else a for a in make(places)]
    outcome = invoke(capsys, argv)
    check("cli", name, outcome, expect, *words)
    if name.startswith("train_") and expect == 2:
        assert not (tmp_path / "run" / "state.json").exists(), "an epoch was committed: the refusal came too late"
    assert not _escaped(tmp_path, shared_home)



# ---- the census lines ----------------------------------------------------------------------------------
DEFINED = {"run_folders": 2 * len(RUN_FOLDERS) + len(RESUME), "data": 2 * len(DATA), "cli": len(CLI)}


@pytest.mark.parametrize("census_set", list(CENSUS))
def test_census_line(census_set):
    """One strict JSON line per set (after its cases: pytest runs a file's tests in order). A partial
    run (-k) prints what it ran; the target is 0 tracebacks (hangs counted among them) either way."""
    records = CENSUS[census_set]
    if not records:
        pytest.skip(f"no {census_set} case ran")
    line = {"set": census_set, "cases": len(records), "defined": DEFINED[census_set],
            "tracebacks": sum(r["traceback"] for r in records), "hangs": sum(r["hang"] for r in records),
            "refused": sum(r["exit"] == 2 for r in records), "accepted": sum(r["exit"] == 0 for r in records),
            "slowest_s": max(r["seconds"] for r in records),
            "slowest": max(records, key=lambda r: r["seconds"])["name"]}
    print("\n" + json.dumps(line, allow_nan=False))
    if os.environ.get("CENSUS_DUMP"):  # every case, for a reader who wants the refusal lines
        with open(os.environ["CENSUS_DUMP"], "a", encoding="utf-8") as dump:
            dump.write(json.dumps({census_set: records}) + "\n")
    assert line["tracebacks"] == 0, [r["name"] for r in records if r["traceback"]]
