"""Ledger lines as FinOps FOCUS 1.0 rows, so tenants can load rainier bills next to their clouds.

Mapping: the tenant is the billing account, the contract the sub-account, a job or deployment
the resource, a flavor or model the SKU. Usage is billed at the contract rate (ContractedCost =
BilledCost = EffectiveCost; nothing is amortized), ListCost is the same quantity at list price.
A reservation line is the unused part of a commitment (CommitmentDiscountStatus ``Unused``), a
true-up an ``Adjustment``, a correction carries ChargeClass ``Correction``. Columns beyond the
specification are prefixed ``x_`` as FOCUS asks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from rainier.metering.ledger import UsageLine
from rainier.metering.periods import month_bounds

FOCUS_COLUMNS: tuple[str, ...] = (
    "AvailabilityZone",
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountStatus",
    "CommitmentDiscountType",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "ContractedUnitPrice",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "SkuId",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "Tags",
    "x_IdempotencyKey",
    "x_LineKind",
    "x_Corrects",
    "x_PriceBookVersion",
)

_CONSUMED_UNIT = {"chip_second": "Chip-Seconds", "token": "Tokens", "usd": "USD"}
_PRICING_UNIT = {"chip_hour": "Chip-Hours", "million_tokens": "Million Tokens", "usd": "USD"}


def _ts(at: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, as FOCUS date-time columns ask."""
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if at.microsecond else "%Y-%m-%dT%H:%M:%SZ")


def _num(value: Decimal) -> str:
    return format(value.normalize() if value == value.to_integral() else value, "f")


def focus_row(line: UsageLine, provider: str = "rainier", currency: str = "USD") -> dict[str, str]:
    kind = line.charge_kind
    usage = kind in ("chip_seconds", "input_tokens", "output_tokens")
    reserved = kind == "reserved_chip_seconds"
    tokens = kind in ("input_tokens", "output_tokens")
    billing_start, billing_end = month_bounds(line.period_start.year, line.period_start.month)
    measured = usage or reserved
    resource_type = "Deployment" if tokens else "Job" if kind == "chip_seconds" else "Contract"
    return {
        "AvailabilityZone": "",
        "BilledCost": _num(line.amount_usd),
        "BillingAccountId": line.tenant,
        "BillingAccountName": line.tenant,
        "BillingCurrency": currency,
        "BillingPeriodEnd": _ts(billing_end),
        "BillingPeriodStart": _ts(billing_start),
        "ChargeCategory": "Usage" if measured else "Adjustment",
        "ChargeClass": "Correction" if line.kind == "correction" else "",
        "ChargeDescription": line.description,
        "ChargeFrequency": "Usage-Based" if usage else "Recurring" if reserved else "One-Time",
        "ChargePeriodEnd": _ts(line.period_end),
        "ChargePeriodStart": _ts(line.period_start),
        "CommitmentDiscountCategory": "Usage" if reserved else "",
        "CommitmentDiscountId": f"{line.contract}/{line.sku}" if reserved else "",
        "CommitmentDiscountName": f"{line.sku} chips reserved by {line.contract}"
        if reserved
        else "",
        "CommitmentDiscountStatus": "Unused" if reserved else "",
        "CommitmentDiscountType": "Reserved Chips" if reserved else "",
        "ConsumedQuantity": _num(line.quantity) if measured else "",
        "ConsumedUnit": _CONSUMED_UNIT[line.unit] if measured else "",
        "ContractedCost": _num(line.amount_usd),
        "ContractedUnitPrice": _num(line.rate_usd) if measured else "",
        "EffectiveCost": _num(line.amount_usd),
        "InvoiceIssuerName": provider,
        "ListCost": _num(line.list_amount_usd),
        "ListUnitPrice": _num(line.list_rate_usd) if measured else "",
        "PricingCategory": ("Committed" if reserved else "Standard") if measured else "",
        "PricingQuantity": _num(line.pricing_quantity) if measured else "",
        "PricingUnit": _PRICING_UNIT[line.pricing_unit] if measured else "",
        "ProviderName": provider,
        "PublisherName": provider,
        "RegionId": "",
        "RegionName": "",
        "ResourceId": line.resource,
        "ResourceName": line.source,
        "ResourceType": resource_type,
        "ServiceCategory": "AI and Machine Learning" if tokens else "Compute",
        "ServiceName": f"{provider} inference" if tokens else f"{provider} compute",
        "SkuId": line.sku,
        "SkuPriceId": f"{line.sku}@v{line.price_book_version}" if measured else "",
        "SubAccountId": line.contract,
        "SubAccountName": line.contract,
        "Tags": json.dumps({"rainier.contract": line.contract}, sort_keys=True),
        "x_IdempotencyKey": line.key,
        "x_LineKind": line.kind,
        "x_Corrects": line.corrects or "",
        "x_PriceBookVersion": str(line.price_book_version),
    }


def focus_rows(
    lines: Iterable[UsageLine], provider: str = "rainier", currency: str = "USD"
) -> list[dict[str, str]]:
    return [focus_row(line, provider, currency) for line in lines]
