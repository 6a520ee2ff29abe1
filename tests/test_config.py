"""params.yaml validation: bad input fails before work starts, naming the key and the fix."""

import copy

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdcore.config import ConfigError, load_params, parse_params
from tests.conftest import REPO, TINY_PARAMS


def base() -> dict:
    return yaml.safe_load(TINY_PARAMS)


def test_repository_params_are_valid():
    p = load_params(REPO / "params.yaml")
    assert "earthquake" in p.datasets and "vmf" in p.datasets


def test_unknown_key_is_named():
    raw = base()
    raw["train"]["learning_rate"] = 0.1
    with pytest.raises(ConfigError, match=r"train\.learning_rate: unknown key"):
        parse_params(raw)


def test_out_of_range_value_names_key_value_and_rule():
    raw = base()
    raw["train"]["lr"] = -1.0
    with pytest.raises(ConfigError) as e:
        parse_params(raw)
    msg = str(e.value)
    assert "train.lr = -1.0" in msg and "greater than 0" in msg


def test_cross_field_rules():
    raw = base()
    raw["schedule"].update(sigma_min=2.0, sigma_max=1.0)
    with pytest.raises(ConfigError, match="sigma_max"):
        parse_params(raw)
    raw = base()
    raw["split"] = {"train": 0.8, "val": 0.3, "test": 0.1}
    with pytest.raises(ConfigError, match="must be 1"):
        parse_params(raw)



def test_unstable_explicit_landing_is_refused_with_the_bound_to_use():
    """α σ² Δt ≥ 2 amplifies the residual: refused at load time, with the α that would be stable."""
    raw = base()
    raw["schedule"].update(kind="constant", sigma_min=1.0, sigma_max=1.0, T=1.0, N=10)  # σ²Δt = 0.1 on every step
    raw["dynamics"] = {"landing": "explicit", "alpha": 25.0}                           # rate 2.5
    with pytest.raises(ConfigError) as e:
        parse_params(raw)
    text = str(e.value)
    assert "dynamics: explicit landing is unstable" in text and "on 10 of 10 steps" in text
    assert "lower alpha below 20" in text and "landing: implicit" in text and "{" not in text
    raw["dynamics"]["alpha"] = 19.0                                                    # rate 1.9: contracting
    assert parse_params(raw).dynamics.alpha == 19.0
    raw["dynamics"]["landing"] = "implicit"
    raw["dynamics"]["alpha"] = 1e4                                                     # implicit is always stable
    parse_params(raw)

def test_unknown_constraint_lists_the_library():
    raw = base()
    raw["datasets"]["volcano"]["constraint"] = "klein_bottle"
    with pytest.raises(ConfigError, match="available: .*sphere"):
        parse_params(raw)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


# paths into the config and values that are wrong there (type or range)
INVALID = {
    ("seed",): [-1, "zero", 2.5, None],
    ("train", "steps"): [0, -5, "many", 1.5],
    ("train", "lr"): [0, -0.1, 2.0, "fast"],
    ("train", "batch_size"): [0, "big"],
    ("train", "ema"): [1.0, -0.1],
    ("schedule", "N"): [0, 10**6, "a"],
    ("schedule", "kind"): ["cosine", 3],
    ("schedule", "T"): [0, -1],
    ("dynamics", "landing"): ["semi", None],
    ("dynamics", "alpha"): [0, -3],
    ("model", "hidden"): [0, 4, 10**6],
    ("sample", "samplers"): [[], ["landing", "landing"], ["magic"]],
    ("sample", "n_samples"): [0],
    ("datasets",): [{}, [], "vmf"],
    ("datasets", "vmf", "kind"): ["gaussian"],
    ("datasets", "vmf", "n"): [5],
    ("method",): ["diffusion"],
    ("evaluate", "bins"): [1],
    ("tracking", "model_name"): ["has space", ""],
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(INVALID.items())).flatmap(lambda kv: st.tuples(st.just(kv[0]), st.sampled_from(kv[1]))),
       st.text(alphabet="abcdefghij_", min_size=1, max_size=8))
def test_random_invalid_configurations_give_config_errors(case, junk_key):
    """Any single bad value, or an extra unknown key anywhere, is a ConfigError naming that key."""
    path, value = case
    raw = copy.deepcopy(base())
    node = raw
    for p in path[:-1]:
        node = node.setdefault(p, {})
    node[path[-1]] = value
    with pytest.raises(ConfigError) as e:
        parse_params(raw)
    assert path[0] in str(e.value)
    raw2 = copy.deepcopy(base())
    raw2["train"][f"zz_{junk_key}"] = 1
    with pytest.raises(ConfigError, match=f"train.zz_{junk_key}: unknown key"):
        parse_params(raw2)


def test_schema_knows_the_constraint_library_and_imports_nothing_else_of_cdcore():
    """config/ is the lowest layer: its list of library names must match the library, and its modules import
    no other cdcore module (an import would bring back the config <-> benchmarks <-> method circles)."""
    import ast

    from cdcore.config.landing import LIBRARY_CONSTRAINTS
    from cdcore.constraints.library import available

    assert sorted(LIBRARY_CONSTRAINTS) == available()
    for path in (REPO / "cdcore" / "config").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cdcore"):
                assert node.module.startswith("cdcore.config"), f"{path.name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("cdcore") and not a.name.startswith("cdcore.config")
                               for a in node.names), path.name


def test_benchmarks_return_reports_and_write_no_file():
    """cdcore/benchmarks returns rows and reports; choosing their paths and writing them is flows.bench's job, and
    drawing the figures cdcore/report's: no module under cdcore/benchmarks writes a file, by any of these means."""
    import ast

    writers = {"write_text_atomic", "atomic_path", "write_text", "write_bytes", "savefig", "mkdir"}
    paths = sorted((REPO / "cdcore" / "benchmarks").glob("*.py"))
    assert len(paths) > 5
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not writers & {a.name for a in node.names}, f"{path.name}:{node.lineno} imports a writer"
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            assert name not in writers, f"{path.name}:{node.lineno} calls {name}"
            if name == "open":   # open(path, mode) or Path.open(mode): reading only
                modes = (node.args[1:2] if isinstance(f, ast.Name) else node.args[:1])
                modes += [k.value for k in node.keywords if k.arg == "mode"]
                assert all(isinstance(m, ast.Constant) and not set(str(m.value)) & set("wax+") for m in modes), \
                    f"{path.name}:{node.lineno} opens a file to write"


@pytest.mark.parametrize("key", [("evaluate", "feasibility_tol"), ("dynamics", "alpha"), ("train", "grad_clip"),
                                 ("dual", "resilience"), ("split", "train")])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_a_non_finite_number_is_refused_where_it_would_switch_a_guard_off(key, value):
    """issue 28, 4: ``feasibility_tol: .inf`` turned promotion's feasibility gate off without a word."""
    raw = base()
    raw.setdefault(key[0], {})[key[1]] = value
    with pytest.raises(ConfigError, match=rf"{key[0]}\.{key[1]} = {value!r}: .*finite"):
        parse_params(raw)


def test_a_duplicate_key_is_refused_with_its_line(tmp_path):
    """issue 28, 4: two ``vmf:`` entries were accepted, the last one winning without a word."""
    p = tmp_path / "params.yaml"
    text = (REPO / "params.yaml").read_text()
    p.write_text(text.replace("datasets:", "datasets:\n  vmf: {kind: vmf, n: 50}", 1))
    with pytest.raises(ConfigError, match=r"line \d+: key 'vmf' appears twice in 'datasets'"):
        load_params(p)


def test_yaml_aliases_are_refused_so_an_alias_bomb_cannot_exhaust_memory(tmp_path):
    """issue 28, 6: nine nested aliases expand to 10⁹ entries; params.yaml has no use for aliases at all."""
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi"))
    p = tmp_path / "params.yaml"
    p.write_text(bomb + (REPO / "params.yaml").read_text())
    with pytest.raises(ConfigError, match=r"line 2: YAML aliases \(\*a\) are not accepted"):
        load_params(p)


def test_params_that_are_not_utf8_get_one_line(tmp_path):
    """issue 28, 10: a non-UTF-8 params.yaml ended in a traceback."""
    p = tmp_path / "params.yaml"
    p.write_bytes((REPO / "params.yaml").read_bytes().replace(b"# cdcore", "# cdcöre".encode("latin-1"), 1))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_params(p)
