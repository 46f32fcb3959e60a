"""The request parameter models build their JSON schema once, and hand out copies."""

from __future__ import annotations

from pydantic import BaseModel

from api.models import DriftQuery, ResultsQuery, SubmitHeaders


def test_the_cached_schema_is_pydantics_and_each_caller_gets_a_copy() -> None:
    for model in (ResultsQuery, SubmitHeaders, DriftQuery):
        fresh = BaseModel.model_json_schema.__func__(model, by_alias=True)  # type: ignore[attr-defined]
        assert model.model_json_schema(by_alias=True) == fresh

    first = ResultsQuery.model_json_schema()
    first["properties"]["format"]["default"] = "csv"  # a caller may edit its copy
    assert ResultsQuery.model_json_schema()["properties"]["format"]["default"] == "json"
    # Different arguments, different schemas: the alias is the header's name.
    assert "Prefer" in SubmitHeaders.model_json_schema(by_alias=True)["properties"]
    assert "prefer" in SubmitHeaders.model_json_schema(by_alias=False)["properties"]
