"""The definition language refuses bad definitions, naming the object and the fix.

One test per mistake a user can make in a feature repo. Each asserts the
message names what is wrong (the object, the field) and says how to fix it,
since that message is all a user sees when ``loopline plan`` fails.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from loopline.contracts.definitions import (
    Aggregate,
    Entity,
    EventSource,
    FeatureView,
    Field,
    Filter,
    Model,
    Outcomes,
    RequestField,
)
from loopline.contracts.errors import ConfigError, DefinitionError
from loopline.featurecore.features import FeatureSet
from loopline.featurecore.project import Project
from loopline.featurerepo.loader import load_project

USER = Entity("user", key="user_id")
CLICKS = EventSource(
    "clicks",
    topic="clicks",
    fields=(
        Field("click_id", "string"),
        Field("user_id", "string"),
        Field("shop_id", "int"),
        Field("page", "string", allowed=("home", "cart")),
        Field("price", "float", ge=0),
        Field("ts", "timestamp"),
    ),
    event_id="click_id",
    event_time="ts",
)
REGRESSION = Outcomes("purchases", task="regression", on_timeout="drop")


def compile_view(
    *aggregates: Aggregate,
    entity: Entity = USER,
    features: tuple[Any, ...] = (),
    request: tuple[RequestField, ...] = (),
    scores: EventSource = CLICKS,
) -> FeatureSet:
    """A one-view project over CLICKS, compiled: cross-object checks run here."""
    view = FeatureView("user", entities=(entity,), source=CLICKS, features=aggregates)
    model = Model(
        "spend", features=features or (view,), scores=scores, outcomes=REGRESSION, request=request
    )
    return Project.of("shop", [view, model]).feature_set()


def refused(*fragments: str) -> Any:
    """``pytest.raises(DefinitionError)`` whose message holds every fragment."""
    return pytest.raises(DefinitionError, match=".*".join(map(re.escape, fragments)))


COUNT = Aggregate("clicks_1h", "count", window="1h")


def test_a_valid_definition_compiles() -> None:
    fs = compile_view(COUNT, Aggregate("spend_1h", "sum", "price", window="1h"))
    assert fs.model_features == ("user.clicks_1h", "user.spend_1h")


def test_unknown_field_in_an_aggregate() -> None:
    with refused("FeatureView 'user', Aggregate 'spend_1h'", "'prize'", "fix the name"):
        compile_view(Aggregate("spend_1h", "sum", "prize", window="1h"))


@pytest.mark.parametrize("window", ["0s", 0, "0h", -60])
def test_window_of_zero(window: Any) -> None:
    with refused("Aggregate 'clicks'", "must be a positive duration such as '10m'"):
        Aggregate("clicks", "count", window=window)


def test_window_in_milliseconds() -> None:
    with refused("Aggregate 'clicks'", "'500ms'", "duration such as '10m'"):
        Aggregate("clicks", "count", window="500ms")


def test_windowed_kind_without_a_window() -> None:
    with refused("Aggregate 'pages'", "distinct needs window=", "window='1h'"):
        Aggregate("pages", "distinct", "page")


def test_duplicate_feature_names_in_a_view() -> None:
    with refused("FeatureView 'user'", "feature 'clicks_1h' is declared twice"):
        FeatureView(
            "user",
            entities=(USER,),
            source=CLICKS,
            features=(COUNT, Aggregate("clicks_1h", "count", window="2h")),
        )


def test_two_different_event_sources_named_alike() -> None:
    other = EventSource(
        "clicks", topic="clicks-v2", fields=CLICKS.fields, event_id="click_id", event_time="ts"
    )
    with refused("two different EventSource objects are named 'clicks'", "rename one"):
        Project.of("shop", [CLICKS, other])


def test_the_same_object_twice_is_fine() -> None:
    project = Project.of("shop", [CLICKS, CLICKS, USER])
    assert [s.name for s in project.sources] == ["clicks"]


def test_two_sources_on_one_topic() -> None:
    twin = EventSource(
        "clicks_copy", topic="clicks", fields=CLICKS.fields, event_id="click_id", event_time="ts"
    )
    with refused("'clicks' and 'clicks_copy' both read topic 'clicks'", "its own topic"):
        Project.of("shop", [CLICKS, twin])


@pytest.mark.parametrize("kind", ["sum", "mean", "min", "max", "std", "last"])
def test_numeric_aggregation_on_a_string_field(kind: str) -> None:
    window = None if kind == "last" else "1h"
    with refused("Aggregate 'x'", f"{kind} needs a numeric field", "'page' is string", "distinct"):
        compile_view(Aggregate("x", kind, "page", window=window))


def test_distinct_on_a_string_field_is_fine() -> None:
    fs = compile_view(Aggregate("pages_1h", "distinct", "page", window="1h"))
    assert fs.model_features == ("user.pages_1h",)


def test_regression_label_cannot_default_to_negative() -> None:
    with refused("Outcomes 'outcomes'", "regression label has no default", "on_timeout='drop'"):
        Outcomes("purchases", task="regression", on_timeout="negative")


def test_binary_model_cannot_gate_on_rmse() -> None:
    with refused("Model 'fraud'", "gate_metric 'rmse' does not fit task 'binary'", "'auc'"):
        Model(
            "fraud",
            features=("price",),
            scores=CLICKS,
            outcomes=Outcomes("chargebacks"),
            gate_metric="rmse",
        )


def test_regression_model_cannot_gate_on_auc() -> None:
    with refused("Model 'spend'", "gate_metric 'auc'", "'regression'", "'rmse', 'mae'"):
        Model("spend", features=("price",), scores=CLICKS, outcomes=REGRESSION, gate_metric="auc")


def test_unknown_task() -> None:
    with refused("Outcomes 'outcomes'", "task 'classification' must be one of"):
        Outcomes("o", task="classification")


def test_outcome_label_field_must_be_named() -> None:
    with refused("Outcomes 'outcomes'", "label must name a field"):
        Outcomes("o", label="", task="regression", on_timeout="drop")
    with refused("Outcomes 'outcomes'", "must be three fields"):
        Outcomes("o", label="event_id", task="regression", on_timeout="drop")


def test_outcomes_need_their_own_topic() -> None:
    model = Model(
        "spend",
        features=("price",),
        scores=CLICKS,
        request=(RequestField("price"),),
        outcomes=Outcomes("clicks", task="regression", on_timeout="drop"),
    )
    with refused("Model 'spend'", "outcomes topic 'clicks'", "EventSource 'clicks'", "own"):
        Project.of("shop", [model])


def test_unknown_model_feature() -> None:
    with refused("Model 'spend'", "'user.spend_1h' is not an aggregate", "it has: clicks_1h"):
        compile_view(COUNT, features=("user.spend_1h",))


def test_unknown_bare_model_feature() -> None:
    with refused("Model 'spend'", "feature 'amount'", "RequestField in request=", "declare it"):
        compile_view(COUNT, features=("user.clicks_1h", "amount"))


def test_key_field_missing_from_the_source() -> None:
    account = Entity("account", key="account_id")
    with refused("FeatureView 'user'", "'account_id'", "Field('account_id', 'string')"):
        compile_view(COUNT, entity=account)


def test_entity_key_type_must_match_the_source_field() -> None:
    by_int = Entity("user", key="user_id", key_type="int")
    with refused("entity 'user' has key_type 'int'", "'user_id' as string", "make them agree"):
        compile_view(COUNT, entity=by_int)
    shop = Entity("shop", key="shop_id", key_type="int")  # an int key declared as int: fine
    assert compile_view(COUNT, entity=shop).views[0].key_field == "shop_id"


def test_scored_source_must_carry_every_view_key() -> None:
    orders = EventSource(
        "orders",
        topic="orders",
        fields=(Field("order_id", "string"), Field("price", "float"), Field("ts", "timestamp")),
        event_id="order_id",
        event_time="ts",
    )
    with refused("scores EventSource 'orders' lacks key field 'user_id'", "FeatureView 'user'"):
        compile_view(COUNT, scores=orders)


def test_request_field_missing_from_the_scored_source() -> None:
    with refused("request field 'amount'", "not a field of EventSource 'clicks'", "declare it"):
        compile_view(
            COUNT, features=("user.clicks_1h", "amount"), request=(RequestField("amount"),)
        )


def test_request_field_must_be_numeric() -> None:
    with refused("request field 'page' is string", "number or a bool", "where="):
        compile_view(COUNT, features=("user.clicks_1h", "page"), request=(RequestField("page"),))


def test_filter_on_an_undeclared_field() -> None:
    flt = Filter("status", "==", "paid")
    with refused("Aggregate 'paid_1h'", "where= filters on 'status'", "does not declare"):
        compile_view(Aggregate("paid_1h", "count", window="1h", where=flt))


def test_filter_value_of_the_wrong_type() -> None:
    flt = Filter("price", ">", "100")
    with refused("Aggregate 'big_1h'", "compares 'price' (float) with '100'", "float value"):
        compile_view(Aggregate("big_1h", "count", window="1h", where=flt))


def test_filter_value_outside_the_allowed_values() -> None:
    flt = Filter("page", "in", ("home", "checkout"))
    with refused("Aggregate 'x'", "'checkout', which is not one of its allowed", "fix the value"):
        compile_view(Aggregate("x", "count", window="1h", where=flt))


def test_filter_with_an_unknown_operator() -> None:
    with refused("Filter on 'price'", "op '=~'"):
        Filter("price", "=~", 1)


def test_filter_on_an_unwindowed_aggregate() -> None:
    with refused("Aggregate 'last_price'", "where= applies to windowed aggregates only"):
        Aggregate("last_price", "last", "price", where=Filter("page", "==", "home"))


def test_bad_names_are_refused() -> None:
    with refused("Entity name 'User'", "lowercase letters"):
        Entity("User", key="user_id")
    with refused("FeatureView name 'class'"):
        FeatureView("class", entities=(USER,), source=CLICKS, features=(COUNT,))


# -- loading a repo ---------------------------------------------------------------


def write_repo(root: Path, definitions: str | None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "loopline.yaml").write_text("project: shop\ndefinitions: shop_defs.py\n")
    if definitions is not None:
        (root / "shop_defs.py").write_text(definitions)
    return root


def test_repo_whose_definitions_module_raises(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "raises", "import math\nrate = 1 / 0\n")
    with pytest.raises(DefinitionError, match=r"shop_defs\.py failed to import: ZeroDivision"):
        load_project(root)


def test_repo_whose_definitions_break_a_rule(tmp_path: Path) -> None:
    text = (
        "from loopline.contracts.definitions import Aggregate\n"
        "bad = Aggregate('n', 'count', window='0s')\n"
    )
    with pytest.raises(DefinitionError, match=r"^shop_defs\.py: Aggregate 'n': window '0s'"):
        load_project(write_repo(tmp_path / "rule", text))


def test_repo_whose_definitions_module_is_missing(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "missing", None)
    with pytest.raises(DefinitionError, match=r"definitions file shop_defs\.py does not exist"):
        load_project(root)


def test_folder_without_loopline_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no loopline\.yaml; create one with `loopline init"):
        load_project(tmp_path)


def test_repo_declaring_no_model(tmp_path: Path) -> None:
    text = "from loopline.contracts.definitions import Entity\nuser = Entity('user', 'user_id')\n"
    project = load_project(write_repo(tmp_path / "nomodel", text))
    with refused("shop_defs.py: declares no Model; add one"):
        project.model()
