"""Fault suite, params as DVC reads them: the stages read params.yaml with DVC's own parser (YAML 1.2), so a stage
runs with the values DVC records and `dvc exp run -S` writes: 010 is 10 (PyYAML: 8), yes is text (PyYAML: True),
1e-05 a float (PyYAML: text, which the config refused). Strict types still refuse text for a bool, duplicate keys
are refused with their line, and the README's `dvc exp run -S` examples run."""

import ast
import json
import re
import shlex
import subprocess
import zipfile

import dvc.api
import pytest
from dvc.utils.serialize import loads_yaml

from flows.overrides import write_overrides
from pipeline.config import ConfigError, load_config, load_params
from tests.helpers import REPO
from tests.helpers.images import make_dataset
from tests.helpers.params import params_text, tiny_params, write_params
from tests.helpers.processes import env
from tests.helpers.project import copy_repo, git

RAW = "RAW_YAML_VALUE"  # stands for a value as a user types it into params.yaml
BOOL_HINT = "only true and false are booleans"
STAGE = "train_dense@tiny"  # the cheapest stage that reads a float, an int and a bool (dense.*)


def _write_raw(path, section, key, text):
    """Tiny params with `section.key` written as the YAML `text`."""
    path.write_text(params_text(tiny_params({section: {key: RAW}})).replace(RAW, text))
    return path


def _exact(value):
    return type(value), value


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("dvc_repo")
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=root, env=env(), check=True)
    return root


@pytest.mark.parametrize(
    "section, key, text, dvc_value, kept",
    [
        ("dense", "units", "010", 10, True),  # PyYAML: 8 units while DVC recorded 10
        ("dense", "learning_rate", "1e-5", 1e-5, True),  # PyYAML: the text '1e-5', refused
        ("dense", "learning_rate", "1e-05", 1e-5, True),  # as `dvc exp run -S dense.learning_rate=1e-5` writes it
        ("split", "seed", "0o17", 15, True),  # PyYAML: the text '0o17'
        ("dense", "flip", "True", True, True),
        ("evaluate", "tta_flip", "yes", "yes", False),  # PyYAML: True, silently
        ("dense", "flip", "on", "on", False),
        ("finetune", "multi_gpu", "No", "No", False),
    ],
)
def test_params_are_read_as_dvc_reads_them(dvc_repo, section, key, text, dvc_value, kept):
    params = _write_raw(dvc_repo / "params.yaml", section, key, text)
    recorded = dvc.api.params_show(repo=str(dvc_repo))[section][key]  # what DVC records and compares
    assert _exact(load_params(params)[section][key]) == _exact(recorded) == _exact(dvc_value)
    if kept:
        assert _exact(getattr(getattr(load_config(params), section), key)) == _exact(dvc_value)
    else:  # text where a bool belongs: refused, saying why, never read as True or False
        with pytest.raises(ConfigError) as err:
            load_config(params)
        assert f"{section}.{key}: Input should be a valid boolean" in str(err.value), err.value
        assert BOOL_HINT in str(err.value) and f"got {text!r}" in str(err.value)


def test_duplicate_keys_are_refused_naming_key_and_line(dvc_repo):
    text = params_text(tiny_params())
    line = text.splitlines().index("  units: 16") + 1  # a second `units` right after the first
    (dvc_repo / "params.yaml").write_text(text.replace("  units: 16\n", "  units: 16\n  units: 32\n"))
    with pytest.raises(ConfigError, match=rf"params.yaml: duplicate key 'units' at line {line + 1}, column 3"):
        load_params(dvc_repo / "params.yaml")
    with pytest.raises(Exception, match="YAML file structure is corrupted"):  # DVC refuses it too
        dvc.api.params_show(repo=str(dvc_repo))


@pytest.mark.parametrize("kind", ["not utf-8", "a folder"])
def test_an_unreadable_params_file_is_one_error(tmp_path, kind):
    path = tmp_path / "params.yaml"
    if kind == "a folder":
        path.mkdir()
    else:
        path.write_bytes(b"dense:\n  units: \xff\n")  # Latin-1, say
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: cannot read the parameters file: "):
        load_params(path)


def test_flow_overrides_reach_the_config_with_their_types(tmp_path):
    """`python -m flows.run_pipeline -S dense.learning_rate=1e-5`: written into the clone's params.yaml with
    DVC's round-trip YAML (1e-05), then read by the stages."""
    params = write_params(tmp_path / "params.yaml", tiny_params())
    write_overrides(params, {"dense.learning_rate": 1e-5, "dense.units": 10, "dense.flip": False})
    dense = load_config(params).dense
    assert (_exact(dense.learning_rate), _exact(dense.units), _exact(dense.flip)) == (
        _exact(1e-5),
        _exact(10),
        _exact(False),
    )


def test_no_params_file_is_read_or_written_with_pyyaml():
    """One reader (pipeline.params_file, DVC's parser) and DVC's writers: a PyYAML call on params is a second one."""
    calls = []
    for folder in ("pipeline", "flows", "benchmarks", "tests"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text()
            for node in ast.walk(ast.parse(text)):
                func = node.func if isinstance(node, ast.Call) else None
                pyyaml = isinstance(func, ast.Attribute) and getattr(func.value, "id", None) == "yaml"
                if pyyaml and "param" in ast.get_source_segment(text, node):
                    calls.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert calls == []


def _dvc(root, *args):
    done = subprocess.run(["dvc", *args], cwd=root, env=env(), capture_output=True, text=True, timeout=600)
    return done, done.stdout + done.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git + DVC copy of the repo on a tiny local folder, run up to extract@tiny and committed: an experiment
    on the dense head then runs `source` and train_dense@tiny only."""
    tmp = tmp_path_factory.mktemp("exp")
    root = copy_repo(tmp / "proj")
    write_params(root / "params.yaml", tiny_params({"data": {"name": "tiny", "url": str(make_dataset(tmp / "src"))}}))
    git(root, "init", "-q")
    done, out = _dvc(root, "repro", "extract@tiny")
    assert done.returncode == 0, out
    git(root, "add", "-A")
    git(root, "commit", "-qm", "tiny, extracted")
    return root


def _numbers(node) -> set:
    if isinstance(node, dict | list):
        return set().union(*map(_numbers, node.values() if isinstance(node, dict) else node))
    return {node} if isinstance(node, int | float) and not isinstance(node, bool) else set()


def _model_numbers(model):
    """(every Dense layer's units, every number in its optimizer's config) of a saved .keras file."""
    config = json.loads(zipfile.ZipFile(model).read("config.json"))
    units = [layer["config"]["units"] for layer in config["config"]["layers"] if layer["class_name"] == "Dense"]
    return units, _numbers(config["compile_config"]["optimizer"])


def test_dvc_exp_run_sets_a_small_float_an_int_and_a_bool(project):
    """`-S ++key=value` in a real `dvc exp run`: the stage runs with the values DVC recorded (before: `1e-05` in
    params.yaml was text to the stage, which refused it)."""
    overrides = {"dense.learning_rate": 1e-5, "dense.units": 10, "dense.flip": False}
    sets = [a for key, value in overrides.items() for a in ("-S", f"++{key}={json.dumps(value)}")]
    done, out = _dvc(project, "exp", "run", *sets, STAGE)
    assert done.returncode == 0 and f"Running stage '{STAGE}'" in out, out
    assert "(plain + mirrored)" not in out  # dense.flip false: the mirrored features were not trained on
    units, optimizer = _model_numbers(project / "data/tiny/models/dense/model.keras")
    assert 10 in units and 1e-5 in optimizer  # the hidden layer's width and the peak learning rate
    done, out = _dvc(project, "params", "diff", "--json")  # what DVC recorded against the commit
    recorded = {key: change["new"] for key, change in json.loads(done.stdout)["params.yaml"].items()}
    dense = load_config(project / "params.yaml").dense
    for key, value in overrides.items():
        assert _exact(recorded[key]) == _exact(getattr(dense, key.split(".")[1])) == _exact(value)


def _readme_examples():
    """The README's `dvc exp run ... -S` commands, but those that add a dataset (test_datasets_side_by_side)."""
    found = re.findall(r"dvc exp run [^`\n#]*", (REPO / "README.md").read_text())
    commands = [shlex.split(c) for c in found if " -S " in c]
    return [c for c in commands if not any(a.lstrip("'+").startswith("datasets.") for a in c)]


def test_the_readme_has_dvc_exp_run_set_examples():
    assert ["dvc", "exp", "run", "-S", "dense.learning_rate=1e-5"] in _readme_examples()


@pytest.mark.parametrize("command", _readme_examples(), ids=" ".join)
def test_each_readme_dvc_exp_run_set_example_runs(project, command):
    """As written, `S` (a seed) filled in, forced on the dense head's stage alone (every stage checks all of
    params.yaml before any work, so the head's run shows what each would read; forced: a value may be the tiny
    project's already)."""
    args = [re.sub(r"=S$", "=43", a) for a in command[1:]]
    done, out = _dvc(project, *args, "--force", "--single-item", STAGE)
    assert done.returncode == 0 and f"Running stage '{STAGE}'" in out, out
    if "--temp" not in args:  # applied to the workspace: the config reads what DVC wrote
        cfg = load_config(project / "params.yaml")
        for key, value in (a.split("=") for a in args if "=" in a):
            section, name = key.split(".")
            assert _exact(getattr(getattr(cfg, section), name)) == _exact(loads_yaml(f"v: {value}")["v"])
