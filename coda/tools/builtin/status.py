"""`system_status`: every component's gRPC health and the bus's log position."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coda.runtime.component import COMPONENTS
from coda.tools.api import NO_ARGUMENTS, Tool, ToolContext
from coda.v1 import bus_pb2, bus_pb2_grpc

#: Seconds each health check or Describe may take.
CHECK_TIMEOUT_SECONDS = 1.0


def service_names(component: str) -> list[str]:
    """The gRPC services a component serves: those of its proto file, coda/v1/<component>.proto."""
    module = importlib.import_module(f"coda.v1.{component}_pb2")
    return [service.full_name for service in module.DESCRIPTOR.services_by_name.values()]


async def _check(ctx: ToolContext, component: str) -> str:
    stub = health_pb2_grpc.HealthStub(ctx.channel(component))
    worst = "SERVING"
    for service in service_names(component):
        try:
            # types-grpcio-health-checking declares HealthStub without its methods.
            check = stub.Check  # type: ignore[attr-defined]
            response = await check(health_pb2.HealthCheckRequest(service=service), timeout=CHECK_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return "NOT_HOSTED"
            return "UNREACHABLE"
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        if status != "SERVING":
            worst = status
    return worst


async def _describe_bus(ctx: ToolContext) -> dict[str, Any]:
    try:
        response = await bus_pb2_grpc.EventBusStub(ctx.channel("bus")).Describe(
            bus_pb2.DescribeRequest(), timeout=CHECK_TIMEOUT_SECONDS
        )
    except grpc.aio.AioRpcError as exc:
        return {"error": f"{exc.code().name}: {exc.details()}"}
    return {field.name: getattr(response, field.name) for field in response.DESCRIPTOR.fields}


async def _system_status(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    names = list(COMPONENTS)
    ctx.progress("checking component health", 0.0)
    statuses, bus = await asyncio.gather(asyncio.gather(*(_check(ctx, name) for name in names)), _describe_bus(ctx))
    return {"components": dict(zip(names, statuses, strict=True)), "bus": bus}


SYSTEM_STATUS = Tool(
    name="system_status",
    description="Health of every Coda component and the event bus position.",
    parameters=NO_ARGUMENTS,
    run=_system_status,
)
