"""Helpers of the usage and capacity tests: a price list with round numbers."""

from __future__ import annotations

import datetime
from decimal import Decimal

from portal.usage.models import GpuPrice, PriceList


def price_list(
    valid_from: datetime.date = datetime.date(2000, 1, 1),
    cpu: str = "10",
    memory: str = "2",
    storage: str = "72",
    gpu: dict | None = None,
) -> PriceList:
    """Prices per core-hour, GiB-hour, GiB-month (72 = 0.10 per GiB-hour) and GPU-hour."""
    prices = PriceList.objects.create(
        valid_from=valid_from,
        cpu_hour=Decimal(cpu),
        memory_gib_hour=Decimal(memory),
        storage_gib_month=Decimal(storage),
    )
    for gpu_type, amount in (gpu or {}).items():
        GpuPrice.objects.create(price_list=prices, gpu_type=gpu_type, gpu_hour=Decimal(amount))
    return prices
