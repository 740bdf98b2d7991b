"""Prices in force on a day, and the cost of measured amounts (Decimal, rounded to the cent)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings

from portal.usage.models import PriceList

CENT = Decimal("0.01")
# Units the amounts are stored in, per unit the prices are given in.
MILLICORE_SECONDS_PER_CORE_HOUR = Decimal(1000 * 3600)
MIB_SECONDS_PER_GIB_HOUR = Decimal(1024 * 3600)
SECONDS_PER_HOUR = Decimal(3600)
# A month of storage is 30 days.
MIB_SECONDS_PER_GIB_MONTH = Decimal(1024 * 30 * 24 * 3600)
ZERO = Decimal(0)


def cents(amount: Decimal) -> Decimal:
    """Round money to the cent, half up."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def currency() -> str:
    """The currency prices and costs are in (USAGE_CURRENCY)."""
    return settings.USAGE_CURRENCY


@dataclass(frozen=True)
class Prices:
    """One price list in plain numbers; GPU prices by node product label."""

    valid_from: date
    cpu_hour: Decimal = ZERO
    memory_gib_hour: Decimal = ZERO
    storage_gib_month: Decimal = ZERO
    gpu_hour: dict[str, Decimal] = field(default_factory=dict)


NO_PRICES = Prices(valid_from=date.min)


@dataclass
class Cost:
    """Cost by resource, unrounded until `rounded()`; `gpu_by_type` splits `gpu` by GPU type
    (the reports key it by catalogue name, as their GPU hours)."""

    cpu: Decimal = ZERO
    memory: Decimal = ZERO
    gpu: Decimal = ZERO
    storage: Decimal = ZERO
    gpu_by_type: dict[str, Decimal] = field(default_factory=dict)

    @property
    def total(self) -> Decimal:
        return self.cpu + self.memory + self.gpu + self.storage

    def add(self, other: Cost) -> None:
        """Add another cost to this one."""
        self.cpu += other.cpu
        self.memory += other.memory
        self.gpu += other.gpu
        self.storage += other.storage
        for name, amount in other.gpu_by_type.items():
            self.gpu_by_type[name] = self.gpu_by_type.get(name, ZERO) + amount

    def rounded(self) -> dict[str, Decimal]:
        """Each part and the total rounded to the cent (the total from the exact parts)."""
        return {
            "cpu": cents(self.cpu),
            "memory": cents(self.memory),
            "gpu": cents(self.gpu),
            "storage": cents(self.storage),
            "total": cents(self.total),
        }


class PriceBook:
    """All price lists, to look up the one in force on a day (the latest valid_from <= day)."""

    def __init__(self, lists: list[Prices]):
        self.lists = sorted(lists, key=lambda p: p.valid_from)
        self.starts = [p.valid_from for p in self.lists]

    @classmethod
    def load(cls) -> PriceBook:
        """Read every price list with its GPU prices (two queries)."""
        lists = []
        for row in PriceList.objects.prefetch_related("gpu_prices__gpu_type"):
            gpu = {}
            for price in row.gpu_prices.all():
                gpu.setdefault(price.gpu_type.node_label_value, price.gpu_hour)
            lists.append(
                Prices(
                    valid_from=row.valid_from,
                    cpu_hour=row.cpu_hour,
                    memory_gib_hour=row.memory_gib_hour,
                    storage_gib_month=row.storage_gib_month,
                    gpu_hour=gpu,
                )
            )
        return cls(lists)

    def on(self, day: date) -> Prices:
        """The prices in force on `day`; nothing costs anything before the first list."""
        index = bisect.bisect_right(self.starts, day) - 1
        return self.lists[index] if index >= 0 else NO_PRICES

    def cost(
        self,
        day: date,
        *,
        cpu_millicore_seconds: int = 0,
        memory_mib_seconds: int = 0,
        gpu_seconds: int = 0,
        gpu_product: str = "",
        storage_mib_seconds: int = 0,
    ) -> Cost:
        """The exact cost of amounts used on `day`, by the prices in force that day."""
        prices = self.on(day)
        gpu_price = prices.gpu_hour.get(gpu_product, ZERO) if gpu_seconds else ZERO
        return Cost(
            cpu=Decimal(cpu_millicore_seconds) * prices.cpu_hour / MILLICORE_SECONDS_PER_CORE_HOUR,
            memory=Decimal(memory_mib_seconds) * prices.memory_gib_hour / MIB_SECONDS_PER_GIB_HOUR,
            gpu=Decimal(gpu_seconds) * gpu_price / SECONDS_PER_HOUR,
            storage=(
                Decimal(storage_mib_seconds) * prices.storage_gib_month / MIB_SECONDS_PER_GIB_MONTH
            ),
        )
