"""``voicefleet plan -f pool.yaml``: the capacity plan of each VoiceAgentPool, no cluster needed.

Reads the same manifest a user would apply (multi-document YAML; other kinds are skipped),
validates it with the CRD's rules, and prints the plan as a table, JSON or YAML. JSON and
YAML use the keys of ``status.plan``. Exit codes: 0 planned, 2 bad input (the message names
the field and what to change).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from voicefleet import catalog, constants, yamlout
from voicefleet.api.manifest import Document, ManifestError, documents, parse_pool
from voicefleet.api.pool import VoiceAgentPool
from voicefleet.api.status import PlanStatus
from voicefleet.catalog import Catalog, CatalogError, PriceTable
from voicefleet.operator.planner import PlanError, plan

EXIT_BAD_INPUT = 2
DENSITIES = (constants.DensityModel.BATCHED, constants.DensityModel.REPLICATED)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "plan",
        help="print how many GPU pods a VoiceAgentPool needs, and what it costs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-f", "--filename", required=True, help="manifest file (YAML, may hold several), or -"
    )
    parser.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="show the batched plan beside the replicated one (one model copy per session)",
    )
    parser.add_argument(
        "--prices", type=Path, help="price file laid over the defaults (shape of prices.yaml)"
    )
    parser.add_argument(
        "--gpu-catalog",
        type=Path,
        help="GPU products laid over the built-in catalog (shape of gpus.yaml)",
    )
    parser.set_defaults(func=run)


def _read(filename: str) -> str:
    if filename == "-":
        return sys.stdin.read()
    try:
        return Path(filename).read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(filename, [f"cannot read: {exc.strerror}"]) from exc


def _pools(filename: str) -> tuple[list[VoiceAgentPool], list[Document]]:
    """The pools of the file, and its other documents (a price ConfigMap may be one)."""
    docs = list(documents(_read(filename), filename))
    pools_docs = [d for d in docs if d.is_pool]
    if not pools_docs:
        kinds = ", ".join(sorted({str(d.body.get("kind", "?")) for d in docs})) or "nothing"
        raise ManifestError(
            filename,
            [
                f"no {constants.KIND} ({constants.API_VERSION}) found; the file holds: {kinds}",
            ],
        )
    return [parse_pool(d) for d in pools_docs], [d for d in docs if not d.is_pool]


def _pool_prices(pool: VoiceAgentPool, others: list[Document], base: PriceTable) -> PriceTable:
    """``base`` with the pool's price ConfigMap laid over it, when the file holds that map.

    The operator reads the same ConfigMap from the cluster; offline, the manifest file that
    applies it is the only place it can be.
    """
    wanted = pool.spec.capacity.pricing.config_map_name
    if wanted is None:
        return base
    for doc in others:
        meta = doc.body.get("metadata") or {}
        if doc.body.get("kind") == "ConfigMap" and meta.get("name") == wanted:
            text = (doc.body.get("data") or {}).get(constants.PRICES_CONFIGMAP_KEY, "")
            table = catalog.parse_prices(str(text), f"ConfigMap/{wanted}")
            return table.merged_over(base)
    print(
        f"note: {pool.metadata.name}: ConfigMap/{wanted} is not in this file; "
        "planning with the default prices",
        file=sys.stderr,
    )
    return base


def _plans(
    pool: VoiceAgentPool, tables: Catalog, prices: PriceTable, compare: bool
) -> dict[str, PlanStatus | PlanError]:
    out: dict[str, PlanStatus | PlanError] = {}
    for density in DENSITIES if compare else DENSITIES[:1]:
        try:
            out[density] = plan(pool.spec, tables, prices, model=density)
        except PlanError as exc:
            # The batched plan is the one that matters; a replicated comparison that cannot
            # be built (e.g. it needs more than maxReplicas) is shown, not fatal.
            if density == constants.DensityModel.BATCHED:
                raise
            out[density] = exc
    return out


def _money(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


COLUMNS = (
    "POOL",
    "DENSITY",
    "MODEL",
    "GPU",
    "SESSIONS/POD",
    "LIMITED BY",
    "PODS",
    "ON-DEMAND",
    "SPOT",
    "CAPACITY",
    "FRAME P95 MS",
    "$/HOUR",
    "$/SESSION-H",
)


def _row(pool: VoiceAgentPool, density: str, result: PlanStatus | PlanError) -> list[str]:
    model = pool.spec.model
    name = f"{model.name}/{model.variant}" if model.variant else model.name
    if model.kv_cache_dtype != constants.KvCacheDtype.BF16:
        name += f" kv:{model.kv_cache_dtype}"
    if isinstance(result, PlanError):
        return [pool.metadata.name, density, name, "-", "-", result.message]
    return [
        pool.metadata.name,
        density,
        name,
        result.gpu + ("*" if result.estimate else ""),
        str(result.sessions_per_pod),
        result.limited_by,
        str(result.replicas),
        str(result.on_demand_replicas),
        str(result.spot_replicas),
        str(result.session_capacity),
        _money(result.frame_ms_at_capacity, 1),
        _money(result.cost_per_hour, 2),
        _money(result.cost_per_session_hour, 4),
    ]


def format_table(rows: list[list[str]]) -> str:
    widths = [len(c) for c in COLUMNS]
    for row in rows:
        for i, cell in enumerate(row[: len(COLUMNS) - 1]):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(COLUMNS), *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[: len(COLUMNS) - 1])]
        cells += row[len(COLUMNS) - 1 :]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        tables = catalog.load(gpus_file=args.gpu_catalog, prices_file=args.prices)
        pools, others = _pools(args.filename)
        results = [
            (pool, _plans(pool, tables, _pool_prices(pool, others, tables.prices), args.compare))
            for pool in pools
        ]
    except (ManifestError, CatalogError, PlanError) as exc:
        problems = exc.problems if isinstance(exc, ManifestError) else [str(exc)]
        where = exc.name if isinstance(exc, ManifestError) else args.filename
        print(f"error: {where}:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT

    if args.output == "table":
        rows = [_row(pool, d, r) for pool, plans in results for d, r in plans.items()]
        print(format_table(rows))
        if any(isinstance(r, PlanStatus) and r.estimate for _, p in results for r in p.values()):
            print("* estimated: this GPU or model variant was not measured (see models.yaml)")
        return 0

    def shape(plans: dict[str, PlanStatus | PlanError]) -> dict[str, Any]:
        wired = {
            d: r.wire() if isinstance(r, PlanStatus) else {"error": str(r)}
            for d, r in plans.items()
        }
        return wired if args.compare else wired[constants.DensityModel.BATCHED]

    data: Any = (
        shape(results[0][1])
        if len(results) == 1
        else {pool.metadata.name: shape(plans) for pool, plans in results}
    )
    if args.output == "json":
        print(json.dumps(data, indent=2))
    else:
        print(yamlout.dump(data, sort_keys=False), end="")
    return 0
