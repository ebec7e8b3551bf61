"""Property-based fuzzing of policy validation (1,150 generated documents, < 20 s).

Valid documents are generated from the documented fields; invalid ones by mutating valid ones.
Invariants: ``parse_policy`` returns an ``AnalysisPolicy`` or raises ``PolicyError`` (nothing
else), every error is one line that starts with the source and names a field path, valid
documents round-trip, and the CLI answers an invalid file with exit 2 and one ``error:`` line.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from canaryctl.cli import app
from canaryctl.errors import PolicyError
from canaryctl.policy import (
    API_VERSION,
    BUILTIN_METRICS,
    KIND,
    TEMPLATE_VARIABLES,
    AnalysisPolicy,
    Metadata,
    MetricSpec,
    PolicySpec,
    PrometheusSpec,
    parse_duration,
    parse_policy,
    parse_policy_text,
)

SRC = "fuzz.yaml"
ROOTS = ("apiVersion", "kind", "metadata", "spec", "policy")
FIELDS = {
    "": set(AnalysisPolicy.model_fields),
    "metadata": set(Metadata.model_fields),
    "spec": set(PolicySpec.model_fields),
    "spec.prometheus": set(PrometheusSpec.model_fields),
    "metric": set(MetricSpec.model_fields),
}
# a DNS-1123 label, as documented (fullmatch: no trailing newline)
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")

# libyaml's dumper when available: writing big documents must not dominate the runtime
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump(doc: Any) -> str:
    return yaml.dump(doc, Dumper=DUMPER, allow_unicode=True)


# documents generated per test: 1,150 in all
VALID_EXAMPLES = 300
INVALID_EXAMPLES = 400
ARBITRARY_EXAMPLES = 250
TEXT_EXAMPLES = 150
CLI_EXAMPLES = 50

FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)

# --- strategies: valid documents -------------------------------------------------------------


UNITS = ("h", "m", "s", "ms")


def _duration(at_least_1s: bool = False) -> st.SearchStrategy[str]:
    """Durations as documented: h, m, s, ms in that order, each used at most once."""

    def text(parts: list[tuple[str, int]]) -> str:
        out = "".join(f"{v}{u}" for u, v in sorted(parts, key=lambda p: UNITS.index(p[0])))
        return "1s" + out if at_least_1s and [u for u, _ in parts] == ["ms"] else out

    return st.lists(
        st.tuples(st.sampled_from(UNITS), st.integers(1, 90)),
        min_size=1,
        max_size=4,
        unique_by=lambda p: p[0],
    ).map(text)


_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
labels = st.lists(st.text(_ALNUM, min_size=1, max_size=6), min_size=1, max_size=3).map("-".join)
custom_names = labels.filter(lambda n: n not in BUILTIN_METRICS)
finite = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(-1e9, 1e9, allow_nan=False, allow_infinity=False),
)
plain_promql = st.text(
    alphabet=st.characters(blacklist_characters="{}", blacklist_categories=("Cs",)), max_size=15
)
template = st.builds(
    lambda var, a, b: "{{" + a + var + b + "}}",
    st.sampled_from(TEMPLATE_VARIABLES),
    st.sampled_from(["", " ", "  "]),
    st.sampled_from(["", " "]),
)
queries = st.lists(
    st.one_of(plain_promql, template, st.just('x{a="b"}'), st.just("[5m]")), max_size=6
).map(lambda ps: "sum(" + "".join(ps) + ")")


positive_ratio = st.floats(1e-6, 1e6)
ordered_pair = st.tuples(finite, finite).map(sorted)
thresholds = (
    st.one_of(
        st.builds(lambda lo_hi: {"min": lo_hi[0], "max": lo_hi[1]}, ordered_pair),
        st.fixed_dictionaries({"min": finite}),
        st.fixed_dictionaries({"max": finite}),
        st.just({}),
    )
    .flatmap(
        lambda absolute: st.fixed_dictionaries(
            {}, optional={"maxIncrease": finite, "maxRatio": positive_ratio}
        ).map(lambda relative: {**absolute, **relative})
    )
    .filter(bool)
)
INTERVALS = _duration(at_least_1s=True)
DURATIONS = _duration()
windows = st.fixed_dictionaries({}, optional={"window": DURATIONS})
builtin_metric = st.builds(
    lambda name, th, w: {"name": name, **th, **w},
    st.sampled_from(BUILTIN_METRICS),
    thresholds,
    windows,
)
custom_metric = st.builds(
    lambda name, q, th, w: {"name": name, "query": q, **th, **w},
    custom_names,
    queries,
    thresholds,
    windows,
)
metric_lists = st.lists(
    builtin_metric | custom_metric, min_size=1, max_size=5, unique_by=lambda m: m["name"]
)

urls = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
    st.sampled_from(["http", "https"]),
    st.lists(labels, min_size=1, max_size=3).map(".".join),
    st.sampled_from(["", ":9090", ":80"]),
    st.sampled_from(["", "/", "/prometheus", "/prometheus/"]),
)


@st.composite
def _step_weight(draw: st.DrawFn) -> dict[str, Any]:
    sw = draw(st.integers(1, 100))
    if draw(st.booleans()):
        return {"stepWeight": sw, "maxWeight": draw(st.integers(sw, 100))}
    return {"stepWeight": sw}


step_fields = st.one_of(
    st.just({}),
    st.lists(st.integers(1, 99), unique=True, max_size=20).map(
        lambda ws: {"steps": [*sorted(ws), 100]}
    ),
    _step_weight(),
)
other_spec_fields = st.fixed_dictionaries(
    {},
    optional={
        "interval": INTERVALS,
        "failureLimit": st.integers(0, 10**6),
        "minRequests": st.integers(1, 10**9),
        "inconclusiveLimit": st.integers(0, 100),
        "judge": st.sampled_from(["threshold", "sequential"]),
        "alpha": st.floats(0, 1, exclude_min=True, exclude_max=True),
        "psi0": st.floats(1, 100),
        "prometheus": st.fixed_dictionaries(
            {}, optional={"url": urls, "timeout": DURATIONS, "retryBudget": DURATIONS}
        ),
        "metrics": metric_lists,
    },
)
specs = st.builds(lambda a, b: {**a, **b}, step_fields, other_spec_fields)
valid_policies = st.fixed_dictionaries(
    {},
    optional={
        "apiVersion": st.just(API_VERSION),
        "kind": st.just(KIND),
        "metadata": st.fixed_dictionaries({}, optional={"name": st.text(max_size=30)}),
        "spec": specs,
    },
)


# --- strategies: invalid documents (mutations of valid ones) ----------------------------------

NASTY = [
    "a\nb",
    "line\r\nbreak",
    'say "hi"',
    "it's",
    "{{ app }}",
    "{{",
    "}}",
    "{{ nope }}",
    "ünïcödé",
    "😀",
    "\t",
    "",
    " ",
    "\x00",
    "a: b",
    "- x",
    "UPPER",
    "-lead",
    "trail-",
    "abc\n",
    "x" * 300,
]
nasty_text = st.sampled_from(NASTY) | st.text(max_size=40)
# text no int/float/duration parser accepts (no digits, none of the letters of nan/inf/true)
junk_text = st.text(alphabet="xqwz!#{}\"' \né😀", max_size=12)
wrong_scalar = st.one_of(
    junk_text,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
wrong_int = wrong_scalar | st.floats(0.01, 0.99).map(lambda f: 7 + f) | st.none()
wrong_duration = st.one_of(
    st.integers(-5, 10**6),
    st.floats(allow_nan=False),
    st.lists(st.just("1m"), min_size=1, max_size=2),
    nasty_text.filter(lambda s: not _parses_as_duration(s)),
)
bad_urls = st.one_of(
    st.sampled_from(
        ["ftp://p:9090", "prometheus:9090", "http//p", "http://", "https:///x", "//p", ""]
    ),
    nasty_text.filter(lambda s: not s.startswith(("http://", "https://"))),
    st.integers(),
    st.lists(st.just("http://p"), max_size=2),
)


def _parses_as_duration(s: str) -> bool:
    try:
        parse_duration(s)
    except ValueError:
        return False
    return True


def _nest(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


def _metrics_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.setdefault("spec", {})
    if "metrics" not in spec:
        spec["metrics"] = [
            {"name": "request-success-rate", "min": 99},
            {"name": "request-duration", "max": 500},
        ]
    return spec["metrics"]


@st.composite
def invalid_policies(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A document that must be rejected, and the path its error must be reported at."""
    doc = copy.deepcopy(draw(valid_policies))
    spec = doc.setdefault("spec", {})
    what = draw(
        st.sampled_from(
            [
                "unknown-key",
                "int-field",
                "int-range",
                "float-range",
                "duration",
                "url",
                "judge",
                "identity",
                "steps",
                "steps-and-weight",
                "huge-steps",
                "metrics-list",
                "metric-name",
                "metric-query",
                "metric-thresholds",
                "nesting",
                "odd-keys",
                "not-a-mapping",
            ]
        )
    )
    if what == "unknown-key":
        where = draw(st.sampled_from(["", "metadata", "spec", "spec.prometheus", "metric"]))
        key = draw(
            nasty_text | st.integers() | st.sampled_from(["minRequest", "threshold", "Steps"])
        )
        if where == "metric":
            target = draw(st.sampled_from(_metrics_of(doc)))
            path = "spec.metrics["
        elif where == "spec.prometheus":
            target = spec.setdefault("prometheus", {})
            path = where
        elif where:
            target = doc.setdefault(where, {})
            path = where
        else:
            target, path = doc, ""
        if key in FIELDS[where]:
            key = f"{key}X"
        target[key] = draw(st.integers() | nasty_text)
        return doc, path
    if what == "int-field":
        field = draw(st.sampled_from(["failureLimit", "minRequests", "inconclusiveLimit"]))
        spec[field] = draw(wrong_int)
        return doc, f"spec.{field}"
    if what == "int-range":
        field, lo = draw(
            st.sampled_from([("failureLimit", 0), ("minRequests", 1), ("inconclusiveLimit", 0)])
        )
        spec[field] = draw(st.integers(-(10**12), lo - 1))
        return doc, f"spec.{field}"
    if what == "float-range":
        field = draw(st.sampled_from(["alpha", "psi0"]))
        if field == "alpha":
            spec["alpha"] = draw(st.floats(max_value=0) | st.floats(min_value=1) | junk_text)
        else:
            spec["psi0"] = draw(st.floats(max_value=1, exclude_max=True) | junk_text)
        return doc, f"spec.{field}"
    if what == "duration":
        field = draw(st.sampled_from(["interval", "timeout", "retryBudget", "window"]))
        value = draw(wrong_duration | st.sampled_from(["0s", "0ms", "0h0m"]))
        if field == "interval":
            spec["interval"] = draw(st.just(value) | st.sampled_from(["999ms", "500ms"]))
            return doc, "spec.interval"
        if field == "window":
            i = draw(st.integers(0, len(_metrics_of(doc)) - 1))
            spec["metrics"][i]["window"] = value
            return doc, f"spec.metrics[{i}].window"
        spec.setdefault("prometheus", {})[field] = value
        return doc, f"spec.prometheus.{field}"
    if what == "url":
        spec.setdefault("prometheus", {})["url"] = draw(bad_urls)
        return doc, "spec.prometheus.url"
    if what == "judge":
        spec["judge"] = draw(
            nasty_text.filter(lambda s: s not in ("threshold", "sequential")) | st.integers()
        )
        return doc, "spec.judge"
    if what == "identity":
        field, good = draw(st.sampled_from([("apiVersion", API_VERSION), ("kind", KIND)]))
        doc[field] = draw(nasty_text.filter(lambda s: s != good) | st.integers() | st.none())
        return doc, field
    if what == "steps":
        for k in ("stepWeight", "maxWeight"):
            spec.pop(k, None)
        spec["steps"] = draw(
            st.one_of(
                st.lists(st.integers(1, 99), min_size=1, max_size=10)
                .filter(lambda ws: ws != sorted(set(ws)))
                .map(lambda ws: [*ws, 100]),  # not strictly increasing
                st.lists(st.integers(1, 99), unique=True, max_size=10).map(sorted),  # no 100
                st.lists(
                    st.integers(-(10**6), 0) | st.integers(101, 10**6), min_size=1, max_size=3
                ).map(lambda ws: [*ws, 100]),  # out of range
                junk_text,
                st.lists(junk_text, min_size=1, max_size=3),
            )
        )
        return doc, "spec.steps"
    if what == "steps-and-weight":
        spec.pop("maxWeight", None)
        spec["steps"] = [50, 100]
        spec["stepWeight"] = draw(st.integers(1, 100))
        return doc, "spec"
    if what == "huge-steps":
        for k in ("stepWeight", "maxWeight"):
            spec.pop(k, None)
        n = draw(st.integers(101, 1000))
        spec["steps"] = [*range(1, n), 100]  # n >= 101 weights
        return doc, "spec.steps"
    if what == "metrics-list":
        ms = _metrics_of(doc)
        choice = draw(st.sampled_from(["empty", "dupe", "many-dupes", "not-a-list"]))
        if choice == "empty":
            spec["metrics"] = []
        elif choice == "dupe":
            ms.insert(draw(st.integers(0, len(ms))), copy.deepcopy(draw(st.sampled_from(ms))))
        elif choice == "many-dupes":
            spec["metrics"] = ms * draw(st.integers(2, 50))
        else:
            spec["metrics"] = draw(
                junk_text | st.integers() | st.just({"name": "request-duration"})
            )
        return doc, "spec.metrics"
    if what == "metric-name":
        ms = _metrics_of(doc)
        i = draw(st.integers(0, len(ms) - 1))
        ms[i]["name"] = draw(
            nasty_text.filter(lambda s: not DNS_LABEL.fullmatch(s)) | st.integers() | st.none()
        )
        return doc, f"spec.metrics[{i}]"
    if what == "metric-query":
        ms = _metrics_of(doc)
        i = draw(st.integers(0, len(ms) - 1))
        if ms[i]["name"] in BUILTIN_METRICS:
            ms[i]["query"] = draw(queries)  # built-ins take no query
        else:
            bad = draw(
                st.one_of(
                    nasty_text.map(lambda s: s + "{{"),  # unbalanced
                    st.builds(
                        lambda a, v, b: f"{a}{{{{ {v} }}}}{b}",
                        nasty_text,
                        st.text(
                            alphabet="abcdefghijklmnopqrstuvwxyz_ ", min_size=1, max_size=10
                        ).filter(lambda v: v.strip() not in TEMPLATE_VARIABLES),
                        nasty_text,
                    ),  # unknown variable
                    st.sampled_from(["", "   ", "\n"]),
                    st.integers(),
                )
            )
            ms[i]["query"] = bad
        return doc, f"spec.metrics[{i}]"
    if what == "metric-thresholds":
        ms = _metrics_of(doc)
        i = draw(st.integers(0, len(ms) - 1))
        m = ms[i]
        choice = draw(st.sampled_from(["none", "min>max", "ratio", "nan", "type"]))
        if choice == "none":
            for k in ("min", "max", "maxIncrease", "maxRatio"):
                m.pop(k, None)
        elif choice == "min>max":
            lo = draw(st.floats(-1e9, 1e9))
            m["max"], m["min"] = lo, lo + draw(st.floats(1e-3, 1e6))
        elif choice == "ratio":
            m["maxRatio"] = draw(st.floats(max_value=0, allow_nan=False))
        elif choice == "nan":
            m[draw(st.sampled_from(["min", "max", "maxIncrease", "maxRatio"]))] = math.nan
        else:
            m[draw(st.sampled_from(["min", "max", "maxIncrease", "maxRatio"]))] = draw(junk_text)
        return doc, f"spec.metrics[{i}]"
    if what == "nesting":
        depth = draw(st.integers(1, 200))
        field = draw(st.sampled_from(["failureLimit", "steps", "interval", "metrics", "metadata"]))
        if field == "metadata":
            doc["metadata"] = _nest(doc.get("metadata", {"name": "x"}), depth)
            return doc, "metadata"
        if field == "steps":
            for k in ("stepWeight", "maxWeight"):
                spec.pop(k, None)
            spec["steps"] = _nest([20, 100], depth)
            return doc, "spec.steps"
        spec[field] = _nest(spec.get(field, _metrics_of(doc) if field == "metrics" else 1), depth)
        return doc, f"spec.{field}"
    if what == "odd-keys":
        # a wrong-typed value holding a mapping whose keys YAML made dates, bytes or numbers
        key = draw(
            st.sampled_from([datetime.date(2020, 1, 1), b"raw", 1.5, None, True]) | st.datetimes()
        )
        field = draw(st.sampled_from(["metadata", "spec.steps", "spec.prometheus"]))
        value = [{key: 1}]
        if field == "metadata":
            doc["metadata"] = value
        elif field == "spec.steps":
            for k in ("stepWeight", "maxWeight"):
                spec.pop(k, None)
            spec["steps"] = value if draw(st.booleans()) else [value]
        else:
            spec["prometheus"] = value
        return doc, field
    # not-a-mapping
    field = draw(st.sampled_from(["spec", "metadata", "spec.prometheus"]))
    value = draw(junk_text | st.integers() | st.lists(st.integers(), max_size=3))
    if field == "spec.prometheus":
        spec["prometheus"] = value
    else:
        doc[field] = value
    return doc, field


# anything YAML can produce, for the "never another exception" invariant
yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**20, max_value=10**40),
    st.floats(),
    nasty_text,
    st.dates(),
    st.datetimes(),
    st.binary(max_size=8),
)
yaml_keys = st.one_of(
    nasty_text,
    st.integers(),
    st.booleans(),
    st.none(),
    st.dates(),
    st.binary(max_size=4),
    st.floats(allow_nan=False),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(yaml_keys, children, max_size=4)
    ),
    max_leaves=12,
)
PATHS = [
    (),
    ("apiVersion",),
    ("kind",),
    ("metadata",),
    ("metadata", "name"),
    ("spec",),
    ("spec", "steps"),
    ("spec", "stepWeight"),
    ("spec", "maxWeight"),
    ("spec", "interval"),
    ("spec", "failureLimit"),
    ("spec", "minRequests"),
    ("spec", "inconclusiveLimit"),
    ("spec", "judge"),
    ("spec", "alpha"),
    ("spec", "psi0"),
    ("spec", "prometheus"),
    ("spec", "prometheus", "url"),
    ("spec", "prometheus", "timeout"),
    ("spec", "metrics"),
    ("spec", "metrics", 0),
    ("spec", "metrics", 0, "name"),
    ("spec", "metrics", 0, "query"),
    ("spec", "metrics", 0, "min"),
    ("spec", "metrics", 0, "max"),
    ("spec", "metrics", 0, "maxIncrease"),
    ("spec", "metrics", 0, "maxRatio"),
    ("spec", "metrics", 0, "window"),
]


@st.composite
def arbitrary_policies(draw: st.DrawFn) -> Any:
    """A valid document with any YAML-producible value put at one documented path."""
    doc: Any = copy.deepcopy(draw(valid_policies))
    path = draw(st.sampled_from(PATHS))
    value = draw(yaml_values)
    if not path:
        return value
    target = doc
    for part in path[:-1]:
        if isinstance(part, int):
            if not target:
                target.append({"name": "request-duration", "max": 1})
            target = target[part]
        else:
            if part == "metrics":
                _metrics_of(doc)
            target = target.setdefault(part, {})
    if isinstance(path[-1], int):
        if not target:
            target.append({})
        target[path[-1]] = value
    else:
        target[path[-1]] = value
    return doc


# --- invariants -------------------------------------------------------------------------------


def check_message(msg: str, source: str = SRC) -> None:
    """One line, starts with the source, names a field path."""
    assert "\n" not in msg and "\r" not in msg, f"multi-line error: {msg!r}"
    assert msg.startswith(f"{source}: "), msg
    rest = re.sub(r" \(and \d+ more\)$", "", msg[len(source) + 2 :])
    if rest in ("must be a mapping with apiVersion, kind and spec", "YAML nested too deeply"):
        return
    if rest.startswith("invalid YAML") or rest.endswith(": unknown field"):
        return  # a YAML error has no field; an unknown field's path is the field itself
    assert re.match(rf"^({'|'.join(ROOTS)})(\.|\[|:)", rest), f"no field path in {msg!r}"


def parse(data: Any) -> AnalysisPolicy | PolicyError:
    """parse_policy's outcome; any other exception fails the test."""
    try:
        return parse_policy(data, source=SRC)
    except PolicyError as exc:
        check_message(str(exc))
        return exc


def check_round_trip(pol: AnalysisPolicy) -> None:
    snap = pol.snapshot()
    assert parse_policy(snap, source=SRC).snapshot() == snap
    assert parse_policy(json.loads(json.dumps(snap)), source=SRC).snapshot() == snap


@settings(FUZZ, max_examples=VALID_EXAMPLES)
@given(doc=valid_policies)
def test_valid_documents_validate_and_round_trip(doc: dict[str, Any]) -> None:
    out = parse(doc)
    assert isinstance(out, AnalysisPolicy), f"valid document rejected: {out}"
    spec = doc.get("spec", {})
    if "steps" in spec:
        assert out.spec.weights == spec["steps"]
    elif "stepWeight" in spec:
        sw, top = spec["stepWeight"], spec.get("maxWeight", 100)
        expected = [sw * k for k in range(1, top // sw + 1)]
        assert out.spec.weights == (expected if expected[-1] == 100 else [*expected, 100])
    else:
        assert out.spec.weights == [20, 40, 60, 80, 100]
    if "metrics" in spec:
        assert [m.name for m in out.spec.metrics] == [m["name"] for m in spec["metrics"]]
    check_round_trip(out)
    from_yaml = parse_policy_text(dump(doc), source=SRC)
    assert from_yaml.snapshot() == out.snapshot()


@settings(FUZZ, max_examples=INVALID_EXAMPLES)
@given(case=invalid_policies())
def test_invalid_documents_are_rejected_at_the_mutated_path(
    case: tuple[dict[str, Any], str],
) -> None:
    doc, path = case
    out = parse(doc)
    assert isinstance(out, PolicyError), f"invalid document accepted: {doc!r}"
    assert str(out).startswith(f"{SRC}: {path}"), f"expected the error at {path!r}: {out}"


@settings(FUZZ, max_examples=ARBITRARY_EXAMPLES)
@given(data=arbitrary_policies())
def test_any_yaml_value_anywhere_gives_a_policy_or_a_policy_error(data: Any) -> None:
    out = parse(data)
    if isinstance(out, AnalysisPolicy):
        check_round_trip(out)


yaml_fragments = st.lists(
    st.sampled_from(
        [
            "spec:",
            "\n",
            "  ",
            "- ",
            "steps: [20, 100]",
            "metrics:",
            "name: x",
            "{",
            "}",
            "[",
            "]",
            ": ",
            "'",
            '"',
            "&a ",
            "*a",
            "!!binary ",
            "!!set ",
            "? ",
            "2020-01-01",
            ".nan",
            "1e400",
            "\t",
            "#",
            "---\n",
            "%YAML 1.1\n",
            "ü",
        ]
    )
    | nasty_text,
    max_size=30,
).map("".join)


@settings(FUZZ, max_examples=TEXT_EXAMPLES)
@given(text=yaml_fragments)
@example(text="!!binary spec:")
@example(text="metadata: [{2020-01-01: 1}]")
@example(text='"a\\nb": 1')
@example(text="spec: {metrics: [{name: request-duration, max: .nan}]}")
@example(text="[" * 3000)
def test_any_text_gives_a_policy_or_a_one_line_policy_error(text: str) -> None:
    try:
        pol = parse_policy_text(text, source=SRC)
    except PolicyError as exc:
        check_message(str(exc))
    else:
        check_round_trip(pol)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(FUZZ, max_examples=CLI_EXAMPLES)
@given(case=invalid_policies())
def test_cli_validate_answers_invalid_files_with_exit_2_and_one_error_line(
    fuzz_dir: Path, case: tuple[dict[str, Any], str]
) -> None:
    doc, _path = case
    path = fuzz_dir / "policy.yaml"
    path.write_text(dump(doc), encoding="utf-8")
    saved = structlog.get_config()
    try:
        result = CliRunner().invoke(app, ["policy", "validate", str(path)])
    finally:
        structlog.configure(**saved)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {path}: ")
    assert result.stderr.endswith("\n")
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""
