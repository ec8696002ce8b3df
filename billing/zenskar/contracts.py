"""Zenskar's contracts (`/contract_v2`: phases, phase pricing, expire, pause, resume, amendments) over
billing.contracts and billing.selectors.

Dates may come as Zenskar sends them (ISO dates, ISO date-times, Unix seconds): each is read as its UTC
day before the service sees it. `PUT` edits the contract's terms; its `phases` may echo the contract's
own phases (by `id`, as a client that read the contract sends them back), and new phases are added with
`POST /contract_v2/{id}/phases` (a 400 naming `phases` says so).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from billing.api.contracts import ContractOutput, PhaseOutput, PhasePricingOutput
from billing.catalogue import PRICING_FIELDS, PRODUCT_FIELDS
from billing.contracts import (
    CONTRACT_FIELDS,
    PHASE_FIELDS,
    PHASE_PRICING_FIELDS,
    contract_create,
    contract_delete,
    contract_expire,
    contract_pause,
    contract_phase_create,
    contract_phase_pricing_add,
    contract_resume,
    contract_update,
)
from billing.models import Contract, ContractStatus
from billing.selectors import contract_amendments, contract_get, contract_phase_get, contracts_list
from billing.zenskar.common import (
    ZenskarApi,
    body_object,
    choice_filter,
    date_filter,
    dates_normalised,
    datetime_filter,
    filters_apply,
    ordering_from,
    picked,
    text_filter,
    uuid_filter,
    zenskar_page,
)
from zenskar_site.accounts.api import AuditEntryOutput
from zenskar_site.accounts.permissions import request_actor
from zenskar_site.lib.errors import ValidationFailed

CONTRACT_FILTERS = {
    "id": uuid_filter("id"),
    "customer_id": uuid_filter("customer_id"),
    "name": text_filter("name"),
    "start_date": date_filter("start_date"),
    "end_date": date_filter("end_date"),
    "created_at": datetime_filter("created_at"),
    "status": choice_filter("status", ContractStatus.values),
}
CONTRACT_SORT_KEYS = {"created_at": "created_at", "start_date": "start_date", "name": "name"}
CONTRACT_DATES = ("start_date", "end_date", "anchor_date")
PHASE_DATES = ("start_date", "end_date")
PHASE_PRICING_DATES = ("start_date", "end_date", "anchor_date")
REQUIRED = ("name", "status", "currency", "start_date", "customer_id")
# The contract's terms PUT may change: the service's fields without phases and plan.
PUT_FIELDS = tuple(name for name in CONTRACT_FIELDS if name not in ("phases", "plan_id"))


def phase_pricing_read(raw: Any, *, prefix: str, errors: dict[str, list[str]]) -> Any:
    """A phase pricing in the service's shape: Zenskar's unlisted keys dropped (also inside an inline
    pricing or product), its dates as days."""
    if not isinstance(raw, dict):
        return raw  # the service names it: "Expected a JSON object."
    clean = dates_normalised(picked(raw, PHASE_PRICING_FIELDS), PHASE_PRICING_DATES, prefix=prefix, errors=errors)
    if isinstance(clean.get("pricing"), dict):
        clean["pricing"] = picked(clean["pricing"], PRICING_FIELDS)
    if isinstance(clean.get("product"), dict):
        clean["product"] = picked(clean["product"], PRODUCT_FIELDS)
    return clean


def phase_read(raw: Any, *, prefix: str, errors: dict[str, list[str]]) -> Any:
    if not isinstance(raw, dict):
        return raw
    clean = dates_normalised(picked(raw, PHASE_FIELDS), PHASE_DATES, prefix=prefix, errors=errors)
    if isinstance(clean.get("pricings"), list):
        clean["pricings"] = [
            phase_pricing_read(item, prefix=f"{prefix}.pricings[{index}]", errors=errors)
            for index, item in enumerate(clean["pricings"])
        ]
    return clean


def required_present(body: dict[str, Any], names: tuple[str, ...]) -> None:
    missing = {name: ["This field is required."] for name in names if body.get(name) in (None, "")}
    if missing:
        raise ValidationFailed(missing)


def contract_output(request: Request, contract_id: Any) -> dict[str, Any]:
    return dict(
        ContractOutput(contract_get(organisation=request_actor(request).organisation, contract_id=contract_id)).data
    )


class ContractsApi(ZenskarApi):
    def get(self, request: Request) -> Response:
        params = request.query_params
        contracts: QuerySet[Contract] = contracts_list(organisation=request_actor(request).organisation)
        contracts = filters_apply(contracts, params, CONTRACT_FILTERS)
        return zenskar_page(
            request=request,
            view=self,
            queryset=contracts,
            serialize=lambda page: ContractOutput(page, many=True).data,
            ordering=ordering_from(params, allowed=CONTRACT_SORT_KEYS, default="-created_at"),
        )

    def post(self, request: Request) -> Response:
        body = body_object(request)
        required_present(body, REQUIRED)
        errors: dict[str, list[str]] = {}
        data = dates_normalised(picked(body, CONTRACT_FIELDS), CONTRACT_DATES, errors=errors)
        if isinstance(data.get("phases"), list):
            data["phases"] = [
                phase_read(item, prefix=f"phases[{index}]", errors=errors) for index, item in enumerate(data["phases"])
            ]
        if errors:
            raise ValidationFailed(errors)
        contract = contract_create(actor=request_actor(request), data=data)
        return Response(contract_output(request, contract.id), status=status.HTTP_201_CREATED)


class ContractApi(ZenskarApi):
    def get(self, request: Request, contract_id: str) -> Response:
        return Response(contract_output(request, contract_id))

    def put(self, request: Request, contract_id: str) -> Response:
        actor = request_actor(request)
        contract = contract_get(organisation=actor.organisation, contract_id=contract_id)
        body = body_object(request)
        required_present(body, REQUIRED)
        phases = body.get("phases")
        if phases not in (None, []):
            own = {str(phase.id) for phase in contract.phases.all()}
            if not isinstance(phases, list) or any(
                not isinstance(item, dict) or str(item.get("id")) not in own for item in phases
            ):
                raise ValidationFailed(
                    {"phases": ["PUT keeps the contract's phases; add a phase with POST /contract_v2/{id}/phases."]}
                )
        errors: dict[str, list[str]] = {}
        changes = dates_normalised(picked(body, PUT_FIELDS), CONTRACT_DATES, errors=errors)
        if errors:
            raise ValidationFailed(errors)
        contract_update(actor=actor, contract_id=contract_id, changes=changes)
        return Response(contract_output(request, contract_id))

    def delete(self, request: Request, contract_id: str) -> Response:
        """Deletes a draft contract (any other is refused, 409) and answers `{"id", "deleted": true}`."""
        contract = contract_get(organisation=request_actor(request).organisation, contract_id=contract_id)
        contract_delete(actor=request_actor(request), contract_id=contract_id)
        return Response({"id": str(contract.id), "deleted": True})


class ContractAmendmentsApi(ZenskarApi):
    def get(self, request: Request, contract_id: str) -> Response:
        contract = contract_get(organisation=request_actor(request).organisation, contract_id=contract_id)
        return zenskar_page(
            request=request,
            view=self,
            queryset=contract_amendments(contract=contract),
            serialize=lambda page: AuditEntryOutput(page, many=True).data,
            ordering="id",
        )


class ContractPhasesApi(ZenskarApi):
    def post(self, request: Request, contract_id: str) -> Response:
        actor = request_actor(request)
        contract_get(organisation=actor.organisation, contract_id=contract_id)
        errors: dict[str, list[str]] = {}
        data = phase_read(body_object(request), prefix="", errors=errors)
        if errors:
            raise ValidationFailed(errors)
        phase = contract_phase_create(actor=actor, contract_id=contract_id, data=data)
        return Response(PhaseOutput(phase).data, status=status.HTTP_201_CREATED)


class ContractPhasePricingApi(ZenskarApi):
    def post(self, request: Request, contract_id: str, phase_id: str) -> Response:
        actor = request_actor(request)
        contract_phase_get(
            contract=contract_get(organisation=actor.organisation, contract_id=contract_id), phase_id=phase_id
        )
        errors: dict[str, list[str]] = {}
        data = phase_pricing_read(body_object(request), prefix="", errors=errors)
        if errors:
            raise ValidationFailed(errors)
        link = contract_phase_pricing_add(actor=actor, contract_id=contract_id, phase_id=phase_id, data=data)
        return Response(PhasePricingOutput(link).data, status=status.HTTP_201_CREATED)


def _dates_only(request: Request, names: tuple[str, ...]) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    body = dates_normalised(picked(body_object(request, optional=True), names), names, errors=errors)
    if errors:
        raise ValidationFailed(errors)
    return body


class ContractExpireApi(ZenskarApi):
    def patch(self, request: Request, contract_id: str) -> Response:
        contract_get(organisation=request_actor(request).organisation, contract_id=contract_id)
        body = _dates_only(request, ("expiry_date",))
        contract_expire(actor=request_actor(request), contract_id=contract_id, expiry_date=body.get("expiry_date"))
        return Response(contract_output(request, contract_id))


class ContractPauseApi(ZenskarApi):
    def post(self, request: Request, contract_id: str) -> Response:
        contract_get(organisation=request_actor(request).organisation, contract_id=contract_id)
        raw = body_object(request)
        required_present(raw, ("start_date", "unpause_extension_policy"))
        body = _dates_only(request, ("start_date", "end_date"))
        contract_pause(
            actor=request_actor(request),
            contract_id=contract_id,
            start_date=body.get("start_date"),
            end_date=body.get("end_date"),
            unpause_extension_policy=raw.get("unpause_extension_policy"),
        )
        return Response(contract_output(request, contract_id))


class ContractResumeApi(ZenskarApi):
    def patch(self, request: Request, contract_id: str) -> Response:
        contract_get(organisation=request_actor(request).organisation, contract_id=contract_id)
        # Zenskar sends no body; `resume_date` (today if absent) is this project's extension.
        body = _dates_only(request, ("resume_date",))
        contract_resume(actor=request_actor(request), contract_id=contract_id, resume_date=body.get("resume_date"))
        return Response(contract_output(request, contract_id))
