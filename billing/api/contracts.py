"""Management API for contracts (SPEC §8): phases, pricings, pause, resume, expire and amendments."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.api.catalogue import PricingOutput
from billing.api.common import FilteredListApi, body_object, reason_of
from billing.contracts import (
    contract_create,
    contract_delete,
    contract_expire,
    contract_pause,
    contract_phase_create,
    contract_phase_pricing_add,
    contract_resume,
    contract_update,
)
from billing.models import (
    Contract,
    ContractPause,
    ContractPhase,
    ContractStatus,
    PhasePricing,
    PhaseType,
    RenewalPolicy,
    UnpausePolicy,
)
from billing.selectors import contract_amendments, contract_get, contract_phase_get, contracts_list
from zenskar_site.accounts.api import AuditEntryOutput
from zenskar_site.accounts.permissions import request_actor
from zenskar_site.lib.errors import ValidationFailed
from zenskar_site.lib.openapi import error_response
from zenskar_site.lib.pagination import paginated_response

EXPIRED = error_response("The contract has expired: it can no longer change.")


class PhasePricingOutput(serializers.ModelSerializer[PhasePricing]):
    pricing_id = serializers.UUIDField(read_only=True)
    product_id = serializers.SerializerMethodField()
    pricing = serializers.SerializerMethodField()

    class Meta:
        model = PhasePricing
        fields = [
            "id",
            "pricing_id",
            "product_id",
            "pricing",
            "start_date",
            "end_date",
            "anchor_date",
            "external_id",
            "description",
            "custom_data",
        ]

    def get_product_id(self, obj: PhasePricing) -> str:
        return str(obj.pricing.product_id)

    def get_pricing(self, obj: PhasePricing) -> dict[str, Any]:
        return dict(PricingOutput(obj.pricing).data)


class PhaseOutput(serializers.ModelSerializer[ContractPhase]):
    pricings = PhasePricingOutput(many=True, source="phase_pricings")

    class Meta:
        model = ContractPhase
        fields = ["id", "name", "description", "phase_type", "start_date", "end_date", "phase_metadata", "pricings"]


class PauseOutput(serializers.ModelSerializer[ContractPause]):
    class Meta:
        model = ContractPause
        fields = ["start_date", "end_date", "unpause_extension_policy"]


class ContractOutput(serializers.ModelSerializer[Contract]):
    customer_id = serializers.UUIDField(read_only=True)
    plan_id = serializers.UUIDField(read_only=True, allow_null=True)
    phases = PhaseOutput(many=True)
    pauses = PauseOutput(many=True)

    class Meta:
        model = Contract
        fields = [
            "id",
            "name",
            "description",
            "customer_id",
            "status",
            "currency",
            "start_date",
            "end_date",
            "anchor_date",
            "renewal_policy",
            "expiry_date",
            "plan_id",
            "custom_attributes",
            "phases",
            "pauses",
            "created_at",
            "updated_at",
        ]


class PhasePricingInput(serializers.Serializer[Any]):
    pricing_id = serializers.UUIDField(required=False, help_text="A product pricing; or an inline pricing below.")
    product_id = serializers.UUIDField(required=False, help_text="The product of an inline pricing.")
    pricing = serializers.JSONField(required=False, help_text="An inline pricing (as POST .../pricings/).")
    product = serializers.JSONField(required=False, help_text="An inline product (as POST /products/).")
    start_date = serializers.DateField(required=False)
    end_date = serializers.DateField(required=False)
    anchor_date = serializers.DateField(required=False)
    external_id = serializers.CharField(required=False)
    description = serializers.CharField(required=False)
    custom_data = serializers.JSONField(required=False)


class PhaseInput(serializers.Serializer[Any]):
    name = serializers.CharField()
    description = serializers.CharField(required=False)
    phase_type = serializers.ChoiceField(choices=PhaseType.choices, default=PhaseType.ACTIVE)
    start_date = serializers.DateField(required=False)
    end_date = serializers.DateField(required=False)
    phase_metadata = serializers.JSONField(required=False)
    pricings = PhasePricingInput(many=True, required=False)


class ContractInput(serializers.Serializer[Any]):
    name = serializers.CharField()
    description = serializers.CharField(required=False)
    customer_id = serializers.UUIDField()
    status = serializers.ChoiceField(
        choices=ContractStatus.choices,
        default=ContractStatus.DRAFT,
        help_text="draft, active or disputed; paused and expired come from the pause and expire actions.",
    )
    currency = serializers.CharField(help_text="ISO 4217")
    start_date = serializers.DateField()
    end_date = serializers.DateField(required=False, help_text="Exclusive.")
    anchor_date = serializers.DateField(required=False, help_text="Billing periods step from it; start_date if absent.")
    renewal_policy = serializers.ChoiceField(choices=RenewalPolicy.choices, required=False)
    custom_attributes = serializers.JSONField(required=False)
    plan_id = serializers.UUIDField(required=False, help_text="Copy the plan's pricings into the first phase.")
    phases = PhaseInput(many=True, required=False)


class PauseInput(serializers.Serializer[Any]):
    start_date = serializers.DateField()
    end_date = serializers.DateField(required=False)
    unpause_extension_policy = serializers.ChoiceField(choices=UnpausePolicy.choices)
    reason = serializers.CharField(required=False)


class ResumeInput(serializers.Serializer[Any]):
    resume_date = serializers.DateField(required=False, help_text="Today if absent.")
    reason = serializers.CharField(required=False)


class ExpireInput(serializers.Serializer[Any]):
    expiry_date = serializers.DateField(required=False, help_text="Today if absent.")
    reason = serializers.CharField(required=False)


class ContractFilter(django_filters.FilterSet):
    customer_id = django_filters.UUIDFilter()
    status = django_filters.ChoiceFilter(choices=ContractStatus.choices)
    currency = django_filters.CharFilter()
    name = django_filters.CharFilter(lookup_expr="icontains")
    start_date_after = django_filters.DateFilter(field_name="start_date", lookup_expr="gte")
    start_date_before = django_filters.DateFilter(field_name="start_date", lookup_expr="lt")
    end_date_after = django_filters.DateFilter(field_name="end_date", lookup_expr="gte")
    end_date_before = django_filters.DateFilter(field_name="end_date", lookup_expr="lt")

    class Meta:
        model = Contract
        fields = ["customer_id", "status", "currency", "name"]


def contract_body(request: Request, contract_id: Any) -> dict[str, Any]:
    contract = contract_get(organisation=request_actor(request).organisation, contract_id=contract_id)
    return dict(ContractOutput(contract).data)


class ContractListApi(FilteredListApi):
    filterset_class = ContractFilter

    def get_queryset(self) -> QuerySet[Contract]:
        if getattr(self, "swagger_fake_view", False):
            return Contract.objects.none()
        return contracts_list(organisation=request_actor(self.request).organisation)

    @extend_schema(responses=ContractOutput(many=True))
    def get(self, request: Request) -> Response:
        return self.list_response(request, lambda page: ContractOutput(page, many=True).data)

    @extend_schema(request=ContractInput, responses={201: ContractOutput})
    def post(self, request: Request) -> Response:
        contract = contract_create(actor=request_actor(request), data=body_object(request))
        return Response(contract_body(request, contract.id), status=status.HTTP_201_CREATED)


class ContractDetailApi(APIView):
    @extend_schema(responses=ContractOutput)
    def get(self, request: Request, contract_id: str) -> Response:
        return Response(contract_body(request, contract_id))

    @extend_schema(request=ContractInput, responses={200: ContractOutput, 409: EXPIRED})
    def patch(self, request: Request, contract_id: str) -> Response:
        body = body_object(request)
        reason = reason_of(body)
        contract = contract_update(actor=request_actor(request), contract_id=contract_id, changes=body, reason=reason)
        return Response(contract_body(request, contract.id))

    @extend_schema(
        parameters=[OpenApiParameter("reason", str, description="Why (kept in the audit trail).")],
        responses={204: None, 409: error_response("Only a draft contract can be deleted; expire it instead.")},
    )
    def delete(self, request: Request, contract_id: str) -> Response:
        reason = reason_of({"reason": request.query_params.get("reason", "")})
        contract_delete(actor=request_actor(request), contract_id=contract_id, reason=reason)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ContractPhaseListApi(APIView):
    @extend_schema(responses=PhaseOutput(many=True))
    def get(self, request: Request, contract_id: str) -> Response:
        contract = contract_get(organisation=request_actor(request).organisation, contract_id=contract_id)
        return paginated_response(
            request=request,
            view=self,
            queryset=contract.phases.prefetch_related(
                "phase_pricings__pricing__product", "phase_pricings__pricing__metric"
            ),
            serialize=lambda page: PhaseOutput(page, many=True).data,
            ordering="created_at",
        )

    @extend_schema(request=PhaseInput, responses={201: PhaseOutput, 409: EXPIRED})
    def post(self, request: Request, contract_id: str) -> Response:
        body = body_object(request)
        reason = reason_of(body)
        phase = contract_phase_create(actor=request_actor(request), contract_id=contract_id, data=body, reason=reason)
        return Response(PhaseOutput(phase).data, status=status.HTTP_201_CREATED)


class ContractPhasePricingApi(APIView):
    @extend_schema(request=PhasePricingInput, responses={201: PhasePricingOutput, 409: EXPIRED})
    def post(self, request: Request, contract_id: str, phase_id: str) -> Response:
        actor = request_actor(request)
        contract_phase_get(
            contract=contract_get(organisation=actor.organisation, contract_id=contract_id), phase_id=phase_id
        )
        body = body_object(request)
        reason = reason_of(body)
        link = contract_phase_pricing_add(
            actor=actor, contract_id=contract_id, phase_id=phase_id, data=body, reason=reason
        )
        return Response(PhasePricingOutput(link).data, status=status.HTTP_201_CREATED)


class ContractPauseApi(APIView):
    @extend_schema(
        request=PauseInput,
        responses={200: ContractOutput, 409: error_response("Only an active contract can be paused.")},
    )
    def post(self, request: Request, contract_id: str) -> Response:
        body = body_object(request)
        reason = reason_of(body)
        unknown = body.keys() - {"start_date", "end_date", "unpause_extension_policy"}
        if unknown:
            raise ValidationFailed({key: ["Unknown field."] for key in sorted(unknown)})
        contract_pause(
            actor=request_actor(request),
            contract_id=contract_id,
            start_date=body.get("start_date"),
            end_date=body.get("end_date"),
            unpause_extension_policy=body.get("unpause_extension_policy"),
            reason=reason,
        )
        return Response(contract_body(request, contract_id))


class ContractResumeApi(APIView):
    @extend_schema(
        request=ResumeInput,
        responses={200: ContractOutput, 409: error_response("Only a paused contract can be resumed.")},
    )
    def post(self, request: Request, contract_id: str) -> Response:
        body = body_object(request) if request.data else {}
        reason = reason_of(body)
        contract_resume(
            actor=request_actor(request), contract_id=contract_id, resume_date=body.get("resume_date"), reason=reason
        )
        return Response(contract_body(request, contract_id))


class ContractExpireApi(APIView):
    @extend_schema(request=ExpireInput, responses={200: ContractOutput, 409: EXPIRED})
    def post(self, request: Request, contract_id: str) -> Response:
        body = body_object(request) if request.data else {}
        reason = reason_of(body)
        contract_expire(
            actor=request_actor(request), contract_id=contract_id, expiry_date=body.get("expiry_date"), reason=reason
        )
        return Response(contract_body(request, contract_id))


class ContractAmendmentListApi(APIView):
    @extend_schema(responses=AuditEntryOutput(many=True))
    def get(self, request: Request, contract_id: str) -> Response:
        contract = contract_get(organisation=request_actor(request).organisation, contract_id=contract_id)
        return paginated_response(
            request=request,
            view=self,
            queryset=contract_amendments(contract=contract),
            serialize=lambda page: AuditEntryOutput(page, many=True).data,
            ordering="id",
        )
