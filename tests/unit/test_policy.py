"""The AnalysisPolicy contract: the documented fields, defaults, expansion and error messages."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from canaryctl.errors import EXIT_INVALID, InputError, PolicyError
from canaryctl.policy import (
    API_VERSION,
    KIND,
    MAX_POLICY_BYTES,
    MAX_STEPS,
    TEMPLATE_VARIABLES,
    AnalysisPolicy,
    format_duration,
    json_schema,
    load_policy,
    parse_duration,
    parse_policy,
    parse_policy_text,
    render_query,
)

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted((ROOT / "policies").glob("*.yaml"))
SCHEMA_FILE = ROOT / "policies" / "analysispolicy.schema.json"

EXAMPLE_YAML = """\
apiVersion: canaryctl.io/v1alpha1
kind: AnalysisPolicy
metadata: {name: default}
spec:
  steps: [20, 40, 60, 80, 100]
  interval: 1m
  failureLimit: 0
  minRequests: 50
  inconclusiveLimit: 3
  prometheus: {url: http://prometheus.istio-system:9090, timeout: 10s}
  metrics:
    - name: request-success-rate
      min: 99
    - name: request-duration
      max: 500
    - name: my-custom
      query: 'sum(rate(my_errors_total{workload="{{ canary_workload }}"}[{{ window }}]))'
      max: 0.5
"""

SRC = "f.yaml"


def doc(**spec: Any) -> dict[str, Any]:
    """A policy document with the given spec fields."""
    return {"apiVersion": API_VERSION, "kind": KIND, "spec": spec}


def error_of(data: Any) -> str:
    """The PolicyError message parse_policy raises for ``data`` (fails if it does not raise)."""
    with pytest.raises(PolicyError) as info:
        parse_policy(data, source=SRC)
    return str(info.value)


def custom(name: str = "errs", query: str = "sum(x)", **fields: Any) -> dict[str, Any]:
    """A custom metric; ``max: 1`` unless a threshold is given."""
    thresholds = {"min", "max", "maxIncrease", "maxRatio"}
    default = {} if thresholds & fields.keys() else {"max": 1}
    return {"name": name, "query": query, **default, **fields}


# --- the documented example and the shipped presets ------------------------------------------


def test_documented_example_policy_validates_with_every_field_as_written() -> None:
    pol = parse_policy_text(EXAMPLE_YAML, source="example.yaml")
    spec = pol.spec
    assert pol.apiVersion == API_VERSION
    assert pol.kind == KIND
    assert pol.metadata.name == "default"
    assert spec.weights == [20, 40, 60, 80, 100]
    assert spec.interval == "1m"
    assert spec.interval_seconds == 60
    assert (spec.failureLimit, spec.minRequests, spec.inconclusiveLimit) == (0, 50, 3)
    assert spec.prometheus.url == "http://prometheus.istio-system:9090"
    assert spec.prometheus.timeout == "10s"
    assert [m.name for m in spec.metrics] == [
        "request-success-rate",
        "request-duration",
        "my-custom",
    ]
    sr, dur, mine = spec.metrics
    assert (sr.min, sr.max, sr.builtin) == (99, None, True)
    assert (dur.min, dur.max, dur.builtin) == (None, 500, True)
    assert mine.builtin is False
    assert mine.max == 0.5
    assert (
        mine.query == 'sum(rate(my_errors_total{workload="{{ canary_workload }}"}[{{ window }}]))'
    )


def test_three_presets_are_shipped() -> None:
    """policies/ holds exactly the three documented presets."""
    assert [p.name for p in PRESETS] == ["conservative.yaml", "default.yaml", "sequential.yaml"]


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_shipped_preset_validates_and_is_named_after_its_file(path: Path) -> None:
    pol = load_policy(path)
    assert pol.metadata.name == path.stem
    assert pol.spec.weights[-1] == 100


def test_conservative_preset_expands_step_weight_to_ten_steps() -> None:
    spec = load_policy(ROOT / "policies" / "conservative.yaml").spec
    assert spec.weights == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert (spec.failureLimit, spec.minRequests, spec.inconclusiveLimit) == (1, 200, None)
    assert (spec.maxWindow, spec.whenNoEvidence) == ("1h", "rollback")
    assert spec.interval_seconds == 300


def test_sequential_preset_uses_the_sequential_judge() -> None:
    spec = load_policy(ROOT / "policies" / "sequential.yaml").spec
    assert spec.judge == "sequential"
    assert (spec.alpha, spec.psi0) == (0.01, 1.2)
    assert spec.weights == [10, 25, 50, 75, 100]


def test_builtin_default_policy_equals_the_shipped_default_yaml() -> None:
    """`promote` without --policy behaves exactly as policies/default.yaml says."""
    assert (
        load_policy(None).snapshot() == load_policy(ROOT / "policies" / "default.yaml").snapshot()
    )


def test_defaults_fill_every_omitted_field() -> None:
    spec = parse_policy({}, source=SRC).spec
    assert spec.weights == [20, 40, 60, 80, 100]
    assert spec.interval == "1m"
    assert (spec.failureLimit, spec.minRequests, spec.inconclusiveLimit) == (0, 50, None)
    assert (spec.maxWindow, spec.whenNoEvidence) == ("30m", "pause")
    assert spec.judge == "threshold"
    assert spec.prometheus.url == "http://prometheus.istio-system:9090"
    assert (spec.prometheus.timeout, spec.prometheus.retryBudget) == ("10s", "60s")
    assert [(m.name, m.min, m.max) for m in spec.metrics] == [
        ("request-success-rate", 99, None),
        ("request-duration", None, 500),
    ]


def test_empty_document_is_the_default_policy() -> None:
    """An empty YAML file (None) is the default policy, like no --policy at all."""
    assert parse_policy(None).snapshot() == AnalysisPolicy().snapshot()


# --- stepWeight / maxWeight ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "top", "expected"),
    [
        (25, None, [25, 50, 75, 100]),
        (30, None, [30, 60, 90, 100]),
        (10, 50, [10, 20, 30, 40, 50, 100]),
        (20, 100, [20, 40, 60, 80, 100]),
        (33, None, [33, 66, 99, 100]),
        (100, None, [100]),
        (50, 50, [50, 100]),
        (1, None, list(range(1, 101))),
    ],
)
def test_step_weight_expands_to_steps(step: int, top: int | None, expected: list[int]) -> None:
    fields: dict[str, Any] = {"stepWeight": step}
    if top is not None:
        fields["maxWeight"] = top
    pol = parse_policy(doc(**fields), source=SRC)
    assert pol.spec.weights == expected
    snap = pol.snapshot()
    assert snap["spec"]["steps"] == expected
    assert "stepWeight" not in snap["spec"]
    assert "maxWeight" not in snap["spec"]


def test_weights_returns_a_copy_that_cannot_change_the_policy() -> None:
    pol = parse_policy(doc(steps=[50, 100]))
    pol.spec.weights.append(7)
    assert pol.spec.weights == [50, 100]


# --- error messages: one line, source, field path, value -------------------------------------

EXACT_ERRORS = [
    (
        "steps-not-increasing",
        doc(steps=[40, 20, 100]),
        "spec.steps: must be strictly increasing and end at 100, got [40, 20, 100]",
    ),
    (
        "steps-not-ending-at-100",
        doc(steps=[20, 40]),
        "spec.steps: must be strictly increasing and end at 100, got [20, 40]",
    ),
    (
        "steps-out-of-range",
        doc(steps=[0, 100]),
        "spec.steps: weights must be in 1..100, got [0, 100]",
    ),
    (
        "steps-over-100",
        doc(steps=[50, 150]),
        "spec.steps: weights must be in 1..100, got [50, 150]",
    ),
    ("steps-empty", doc(steps=[]), f"spec.steps: must have 1 to {MAX_STEPS} weights, got []"),
    (
        "steps-too-many",
        doc(steps=[*range(1, 101), 100]),
        f"spec.steps: must have 1 to {MAX_STEPS} weights, got [1, 2, 3, 4, 5, 6]... (101 steps)",
    ),
    ("unknown-spec-field", doc(minRequest=5), "spec.minRequest: unknown field"),
    ("unknown-top-field", {"specs": {}}, "specs: unknown field"),
    ("unknown-metadata-field", {"metadata": {"nam": "x"}}, "metadata.nam: unknown field"),
    (
        "unknown-metric-field",
        doc(metrics=[{"name": "request-duration", "max": 1, "treshold": 2}]),
        "spec.metrics[0].treshold: unknown field",
    ),
    (
        "unknown-prometheus-field",
        doc(prometheus={"uri": "http://p:9090"}),
        "spec.prometheus.uri: unknown field",
    ),
    (
        "bad-interval",
        doc(interval="1x"),
        "spec.interval: must be a duration like 30s, 1m, 1h or 1m30s, got '1x'",
    ),
    ("interval-below-1s", doc(interval="500ms"), "spec.interval: must be at least 1s, got '500ms'"),
    (
        "bad-timeout",
        doc(prometheus={"timeout": "ten seconds"}),
        "spec.prometheus.timeout: must be a duration like 30s, 1m, 1h or 1m30s, got 'ten seconds'",
    ),
    (
        "zero-timeout",
        doc(prometheus={"timeout": "0s"}),
        "spec.prometheus.timeout: must be positive, got '0s'",
    ),
    (
        "bad-url",
        doc(prometheus={"url": "ftp://prometheus:9090"}),
        "spec.prometheus.url: must be an http(s) URL, got 'ftp://prometheus:9090'",
    ),
    (
        "builtin-with-query",
        doc(metrics=[{"name": "request-duration", "query": "sum(x)", "max": 1}]),
        "spec.metrics[0]: built-in metric request-duration takes no query",
    ),
    (
        "custom-without-query",
        doc(metrics=[{"name": "request-duration", "max": 1}, {"name": "errs", "max": 1}]),
        "spec.metrics[1]: metric errs needs a query (built-ins: request-success-rate, "
        "request-duration)",
    ),
    (
        "metric-without-thresholds",
        doc(metrics=[{"name": "request-duration"}]),
        "spec.metrics[0]: metric request-duration needs at least one of min, max, maxIncrease, "
        "maxRatio",
    ),
    (
        "duplicate-metric-names",
        doc(
            metrics=[{"name": "request-duration", "max": 1}, {"name": "request-duration", "max": 2}]
        ),
        "spec.metrics: metric names must be unique, got duplicates ['request-duration']",
    ),
    (
        "min-greater-than-max",
        doc(metrics=[{"name": "request-duration", "min": 2, "max": 1}]),
        "spec.metrics[0]: min 2.0 is greater than max 1.0",
    ),
    (
        "empty-metrics",
        doc(metrics=[]),
        "spec.metrics: must list at least one metric (never promote without evidence), got []",
    ),
    (
        "wrong-kind",
        {"apiVersion": API_VERSION, "kind": "Rollout"},
        "kind: Input should be 'AnalysisPolicy', got 'Rollout'",
    ),
    (
        "wrong-api-version",
        {"apiVersion": "v1", "kind": KIND},
        "apiVersion: Input should be 'canaryctl.io/v1alpha1', got 'v1'",
    ),
    (
        "steps-and-step-weight",
        doc(steps=[50, 100], stepWeight=10),
        "spec: give either steps or stepWeight/maxWeight, not both",
    ),
    ("max-weight-alone", doc(maxWeight=50), "spec: maxWeight needs stepWeight"),
    (
        "bad-metric-name",
        doc(metrics=[custom(name="My_Errors")]),
        "spec.metrics[0].name: must be a DNS-1123 label (a-z, 0-9, '-'), got 'My_Errors'",
    ),
    (
        "max-ratio-zero",
        doc(metrics=[{"name": "request-duration", "maxRatio": 0}]),
        "spec.metrics[0].maxRatio: must be > 0, got 0.0",
    ),
    (
        "zero-window",
        doc(metrics=[{"name": "request-duration", "max": 1, "window": "0s"}]),
        "spec.metrics[0].window: must be positive, got '0s'",
    ),
    (
        "unknown-judge",
        doc(judge="bayes"),
        "spec.judge: Input should be 'threshold' or 'sequential', got 'bayes'",
    ),
]


@pytest.mark.parametrize(
    ("data", "expected"), [c[1:] for c in EXACT_ERRORS], ids=[c[0] for c in EXACT_ERRORS]
)
def test_error_message_names_field_path_and_value_exactly(data: Any, expected: str) -> None:
    assert error_of(data) == f"{SRC}: {expected}"


PREFIX_ERRORS = [
    (
        "metric-min-not-a-number",
        doc(
            metrics=[
                {"name": "request-duration", "max": 1},
                {"name": "request-success-rate", "min": "abc"},
            ]
        ),
        "spec.metrics[1].min: ",
        ['"abc"'],
    ),
    ("negative-failure-limit", doc(failureLimit=-1), "spec.failureLimit: ", ["-1"]),
    ("zero-min-requests", doc(minRequests=0), "spec.minRequests: ", ["got 0"]),
    ("alpha-one", doc(alpha=1), "spec.alpha: ", ["got 1"]),
    ("psi0-below-one", doc(psi0=0.5), "spec.psi0: ", ["got 0.5"]),
    ("steps-not-a-list", doc(steps="abc"), "spec.steps: ", ['"abc"']),
    ("interval-not-a-string", doc(interval=60), "spec.interval: ", ["got 60"]),
    ("spec-not-a-mapping", {"spec": [1]}, "spec: ", ["got [1]"]),
    ("metadata-name-not-a-string", {"metadata": {"name": 5}}, "metadata.name: ", ["got 5"]),
    (
        "unknown-template-variable",
        doc(metrics=[custom(query="sum(x{a='{{ pod }}'})")]),
        "spec.metrics[0].query: unknown template variable {{ pod }} (known: "
        + ", ".join(TEMPLATE_VARIABLES)
        + ")",
        ["sum(x{a='{{ pod }}'})"],
    ),
    (
        "unbalanced-template-braces",
        doc(metrics=[custom(query="sum(x[{{ window }])")]),
        "spec.metrics[0].query: unbalanced template braces in ",
        ["sum(x[{{ window }])"],
    ),
    (
        "empty-query",
        doc(metrics=[custom(query="  ")]),
        "spec.metrics[0].query: must not be empty",
        [],
    ),
]


@pytest.mark.parametrize(
    ("data", "prefix", "fragments"),
    [c[1:] for c in PREFIX_ERRORS],
    ids=[c[0] for c in PREFIX_ERRORS],
)
def test_error_message_starts_with_field_path_and_shows_value(
    data: Any, prefix: str, fragments: list[str]
) -> None:
    msg = error_of(data)
    assert msg.startswith(f"{SRC}: {prefix}"), msg
    for fragment in fragments:
        assert fragment in msg, msg
    assert "\n" not in msg


def test_several_errors_report_the_first_and_count_the_rest() -> None:
    msg = error_of(doc(interval="x", minRequests=0, failureLimit=-1))
    assert msg.startswith(f"{SRC}: spec.interval: must be a duration like")
    assert msg.endswith("(and 2 more)")


def test_non_mapping_document_is_rejected_naming_the_source() -> None:
    for data in (["a", "b"], "just text", 42):
        assert error_of(data) == f"{SRC}: must be a mapping with apiVersion, kind and spec"


def test_policy_error_is_an_input_error_with_exit_code_2() -> None:
    with pytest.raises(InputError) as info:
        parse_policy(doc(steps=[40, 20, 100]))
    assert info.value.exit_code == EXIT_INVALID


def test_source_defaults_to_policy() -> None:
    with pytest.raises(PolicyError, match=r"^policy: spec\.minRequest: unknown field$"):
        parse_policy(doc(minRequest=1))


# --- bugs found while writing these tests (each test states the contract) --------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"stepWeight": 0}, "spec.stepWeight: must be in 1..100, got 0"),
        ({"stepWeight": 150}, "spec.stepWeight: must be in 1..100, got 150"),
        ({"stepWeight": 30, "maxWeight": 20}, "spec.maxWeight: must be in stepWeight..100, got 20"),
    ],
)
def test_step_weight_errors_name_the_field_path_like_steps_errors(
    fields: dict[str, Any], expected: str
) -> None:
    """stepWeight/maxWeight errors are reported at spec.stepWeight / spec.maxWeight."""
    assert error_of(doc(**fields)) == f"{SRC}: {expected}"


def test_fractional_step_error_shows_the_value() -> None:
    """'every error names the field path and the value': steps [12.5, 100] must show 12.5."""
    msg = error_of(doc(steps=[12.5, 100]))
    assert msg.startswith(f"{SRC}: spec.steps[0]: ")
    assert "12.5" in msg


@pytest.mark.parametrize("threshold", ["min", "max", "maxIncrease", "maxRatio"])
def test_nan_threshold_is_rejected(threshold: str) -> None:
    """A NaN threshold compares False with everything, so the metric could never fail."""
    msg = error_of(doc(metrics=[{"name": "request-duration", threshold: math.nan}]))
    assert msg.startswith(f"{SRC}: spec.metrics[0]")


def test_nan_threshold_in_yaml_is_rejected() -> None:
    text = "spec:\n  metrics:\n    - name: request-duration\n      max: .nan\n"
    with pytest.raises(PolicyError, match=r"^f\.yaml: spec\.metrics\[0\]"):
        parse_policy_text(text, source=SRC)


@pytest.mark.parametrize("name", ["errs\n", "errs\nmore"])
def test_metric_name_with_newline_is_not_a_dns_label(name: str) -> None:
    msg = error_of(doc(metrics=[custom(name=name)]))
    assert msg.startswith(f"{SRC}: spec.metrics[0].name: must be a DNS-1123 label")
    assert "\n" not in msg


@pytest.mark.parametrize("url", ["http://prometheus 9090", "http://prom:9090/api v1", "http://p\n"])
def test_prometheus_url_with_whitespace_is_rejected(url: str) -> None:
    msg = error_of(doc(prometheus={"url": url}))
    assert msg.startswith(f"{SRC}: spec.prometheus.url: must be an http(s) URL")


@pytest.mark.parametrize(
    "text",
    [
        "metadata: [{2020-01-01: 1}]\n",
        "metadata: [{!!binary aGk=: 1}]\n",
        "spec:\n  steps: [{2020-01-01: 1}, 100]\n",
    ],
)
def test_non_string_keys_inside_a_wrong_typed_value_give_policy_error(text: str) -> None:
    """YAML keys may be dates or bytes; the error path must still be a PolicyError."""
    with pytest.raises(PolicyError) as info:
        parse_policy_text(text, source=SRC)
    assert str(info.value).startswith(f"{SRC}: ")


def test_deeply_nested_value_gives_policy_error() -> None:
    """parse_policy promises PolicyError for any data, including absurd nesting."""
    value: Any = 1
    for _ in range(5000):
        value = [value]
    with pytest.raises(PolicyError) as info:
        parse_policy({"spec": {"steps": value}}, source=SRC)
    assert str(info.value).startswith(f"{SRC}: spec.steps")


def test_unknown_key_with_a_newline_gives_a_one_line_error() -> None:
    msg = error_of(doc(**{"min\nRequests": 5}))
    assert msg.startswith(f"{SRC}: spec.")
    assert "\n" not in msg


def test_top_level_non_string_key_is_reported_at_a_named_path() -> None:
    """YAML `1: x` at the top level: the path must not look like a list index ``[1]``."""
    msg = error_of({1: "x"})
    assert not msg.startswith(f"{SRC}: [1]"), msg
    assert msg.startswith(f"{SRC}: policy"), msg


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("4s", 4),
        ("30s", 30),
        ("1m", 60),
        ("1h", 3600),
        ("1m30s", 90),
        ("1h2m3s", 3723),
        ("1s500ms", 1.5),
        ("2h30m", 9000),
        ("90s", 90),
        ("0s", 0),
        (" 4s ", 4),
    ],
)
def test_parse_duration_reads_h_m_s_ms(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", " ", "1", "1x", "m", "1.5s", "-1s", "1s1m", "30 s", "1d", "1M", "ms"]
)
def test_parse_duration_rejects_malformed_text_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match=r"must be a duration like 30s, 1m, 1h or 1m30s, got "):
        parse_duration(text)


@pytest.mark.parametrize("value", [None, 30, 1.5, ["1m"]])
def test_parse_duration_rejects_non_strings_with_value_error(value: Any) -> None:
    with pytest.raises(ValueError, match=r"must be a duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (60, "60s"),
        (60.0, "60s"),
        (1, "1s"),
        (1.5, "1500ms"),
        (0.25, "250ms"),
        (90.0, "90s"),
        (3600, "3600s"),
    ],
)
def test_format_duration_gives_whole_seconds_or_ms(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["500ms", "4s", "1m", "1h", "1m30s", "1s500ms", "2h30m"])
def test_format_duration_round_trips_parse_duration(text: str) -> None:
    seconds = parse_duration(text)
    assert parse_duration(format_duration(seconds)) == seconds


def test_metric_window_defaults_to_the_interval() -> None:
    pol = parse_policy(
        doc(interval="2m", metrics=[{"name": "request-duration", "max": 1}, custom(window="5m")])
    )
    dur, errs = pol.spec.metrics
    assert pol.spec.window_seconds(dur) == 120
    assert pol.spec.window_seconds(errs) == 300


# --- load_policy / parse_policy_text ----------------------------------------------------------


def test_load_policy_without_path_is_the_default_policy() -> None:
    assert load_policy(None) == AnalysisPolicy()


def test_load_policy_reads_a_file_and_names_it_in_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(EXAMPLE_YAML)
    assert load_policy(good).spec.weights == [20, 40, 60, 80, 100]
    assert load_policy(str(good)) == load_policy(good)
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec:\n  steps: [40, 20, 100]\n")
    with pytest.raises(PolicyError) as info:
        load_policy(bad)
    assert str(info.value) == (
        f"{bad}: spec.steps: must be strictly increasing and end at 100, got [40, 20, 100]"
    )


def test_load_policy_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy(missing)
    assert str(info.value) == f"--policy: file not found: {missing}"


def test_load_policy_directory_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"^--policy: cannot read "):
        load_policy(tmp_path)


def test_load_policy_non_utf8_file_is_a_policy_error(tmp_path: Path) -> None:
    p = tmp_path / "latin1.yaml"
    p.write_bytes(b"metadata: {name: caf\xe9}\n")
    with pytest.raises(PolicyError, match=r"^--policy: cannot read .*latin1\.yaml"):
        load_policy(p)


def test_invalid_yaml_message_gives_the_line_number(tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text("apiVersion: canaryctl.io/v1alpha1\nspec:\n  steps: [20, 40\n  interval: 1m\n")
    with pytest.raises(PolicyError) as info:
        load_policy(p)
    msg = str(info.value)
    assert msg.startswith(f"{p}: invalid YAML at line 4: ")
    assert "\n" not in msg


def test_invalid_yaml_tab_indentation_gives_the_line_number() -> None:
    with pytest.raises(PolicyError, match=r"^f\.yaml: invalid YAML at line 2: "):
        parse_policy_text("spec:\n\tsteps: [100]\n", source=SRC)


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    p = tmp_path / "huge.yaml"
    p.write_text(EXAMPLE_YAML + "#" * (MAX_POLICY_BYTES + 1) + "\n")
    with pytest.raises(PolicyError) as info:
        load_policy(p)
    assert str(info.value) == f"{p}: larger than 1024 KiB, refusing"


def test_file_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    p = tmp_path / "limit.yaml"
    body = EXAMPLE_YAML + "#"
    p.write_text(body + "x" * (MAX_POLICY_BYTES - len(body) - 1) + "\n")
    assert p.stat().st_size == MAX_POLICY_BYTES
    assert load_policy(p).spec.weights == [20, 40, 60, 80, 100]


def test_oversized_text_is_refused() -> None:
    with pytest.raises(PolicyError, match=r"^f\.yaml: larger than 1024 KiB, refusing$"):
        parse_policy_text("a: " + "b" * MAX_POLICY_BYTES, source=SRC)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping_yaml_document_is_rejected(tmp_path: Path, text: str) -> None:
    p = tmp_path / "list.yaml"
    p.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(p)
    assert str(info.value) == f"{p}: must be a mapping with apiVersion, kind and spec"


def test_empty_file_is_the_default_policy(tmp_path: Path) -> None:
    p = tmp_path / "empty.yaml"
    p.write_text("# nothing but a comment\n")
    assert load_policy(p).snapshot() == AnalysisPolicy().snapshot()


def test_deeply_nested_yaml_is_a_policy_error() -> None:
    text = "spec:\n  steps: " + "[" * 3000 + "]" * 3000 + "\n"
    with pytest.raises(PolicyError, match=r"^f\.yaml: "):
        parse_policy_text(text, source=SRC)


# --- JSON Schema -----------------------------------------------------------------------------


def test_json_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "https://canaryctl.io/schemas/analysispolicy-v1alpha1.json"
    assert schema["title"] == "canaryctl AnalysisPolicy"
    json.dumps(schema)  # plain JSON data


def test_json_schema_accepts_the_example_and_the_presets() -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    for data in [yaml.safe_load(EXAMPLE_YAML), *(yaml.safe_load(p.read_text()) for p in PRESETS)]:
        assert list(validator.iter_errors(data)) == []


@pytest.mark.parametrize(
    "data",
    [
        doc(minRequest=50),
        {"apiVersion": API_VERSION, "kind": KIND, "specs": {}},
        doc(metrics=[{"name": "request-duration", "max": 1, "treshold": 2}]),
    ],
)
def test_json_schema_rejects_unknown_fields(data: dict[str, Any]) -> None:
    errors = list(jsonschema.Draft202012Validator(json_schema()).iter_errors(data))
    assert errors
    assert any("Additional properties are not allowed" in e.message for e in errors)


def test_json_schema_rejects_wrong_kind() -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    assert not validator.is_valid({"apiVersion": API_VERSION, "kind": "Rollout"})


def test_shipped_schema_file_is_up_to_date() -> None:
    """policies/analysispolicy.schema.json (referenced by the presets) equals json_schema()."""
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema()


def test_policies_shown_in_the_docs_are_valid_and_match_the_schema() -> None:
    """Every ``kind: AnalysisPolicy`` YAML block of README.md and docs/*.md is a policy
    canaryctl accepts and that the published JSON Schema accepts (what users copy must work)."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    text = "".join(page.read_text() for page in pages)
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]
    policies = [b for b in blocks if "kind: AnalysisPolicy" in b]
    assert len(policies) >= 2
    validator = jsonschema.Draft202012Validator(json_schema())
    for block in policies:
        parse_policy_text(block, source="README")
        assert not list(validator.iter_errors(yaml.safe_load(block))), block[:200]


# --- templates -------------------------------------------------------------------------------


def test_render_query_substitutes_every_variable() -> None:
    pol = parse_policy_text(EXAMPLE_YAML)
    query = pol.spec.metrics[2].query
    assert query is not None
    out = render_query(query, {"canary_workload": "web-v2", "window": "60s"})
    assert out == 'sum(rate(my_errors_total{workload="web-v2"}[60s]))'


def test_render_query_accepts_any_spacing_inside_braces() -> None:
    out = render_query(
        "{{app}}/{{  namespace }}/{{ window}}", {"app": "web", "namespace": "prod", "window": "5m"}
    )
    assert out == "web/prod/5m"


def test_render_query_without_templates_is_unchanged() -> None:
    assert render_query('sum(rate(x{a="b"}[5m]))', {}) == 'sum(rate(x{a="b"}[5m]))'


def test_render_query_unknown_variable_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match=r"^query: unknown template variable \{\{ app \}\}$"):
        render_query("sum(x{app='{{ app }}'})", {"window": "1m"})


@pytest.mark.parametrize("var", TEMPLATE_VARIABLES)
def test_every_documented_template_variable_is_accepted(var: str) -> None:
    pol = parse_policy(doc(metrics=[custom(query=f"sum(x{{a='{{{{ {var} }}}}'}})")]))
    assert pol.spec.metrics[0].query == f"sum(x{{a='{{{{ {var} }}}}'}})"


# --- snapshot and overrides ------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [EXAMPLE_YAML, *(p.read_text() for p in PRESETS)],
    ids=["example", *(p.stem for p in PRESETS)],
)
def test_snapshot_round_trips_through_parse_policy(source: str) -> None:
    snap = parse_policy_text(source).snapshot()
    assert parse_policy(snap).snapshot() == snap
    assert parse_policy(json.loads(json.dumps(snap))).snapshot() == snap


def test_snapshot_is_plain_data_with_expanded_steps_and_no_nones() -> None:
    snap = parse_policy(doc(stepWeight=25)).snapshot()
    assert snap["spec"]["steps"] == [25, 50, 75, 100]
    assert json.loads(json.dumps(snap)) == snap

    def nones(value: Any) -> bool:
        if isinstance(value, dict):
            return any(v is None or nones(v) for v in value.values())
        if isinstance(value, list):
            return any(nones(v) for v in value)
        return False

    assert not nones(snap)


def test_with_prometheus_url_overrides_only_the_url() -> None:
    pol = parse_policy_text(EXAMPLE_YAML)
    out = pol.with_prometheus_url("http://localhost:9091/")
    assert out.spec.prometheus.url == "http://localhost:9091"
    assert out.spec.prometheus.timeout == pol.spec.prometheus.timeout
    assert out.spec.metrics == pol.spec.metrics
    assert pol.spec.prometheus.url == "http://prometheus.istio-system:9090"  # not mutated


@pytest.mark.parametrize("url", [None, ""])
def test_with_prometheus_url_without_a_value_keeps_the_policy(url: str | None) -> None:
    pol = parse_policy_text(EXAMPLE_YAML)
    assert pol.with_prometheus_url(url) is pol


@pytest.mark.parametrize("url", ["not a url", "prometheus:9090", "ftp://p:9090"])
def test_with_prometheus_url_rejects_a_non_url_naming_the_flag(url: str) -> None:
    with pytest.raises(PolicyError) as info:
        AnalysisPolicy().with_prometheus_url(url)
    assert str(info.value) == f"--prometheus-url: must be an http(s) URL, got {url!r}"
