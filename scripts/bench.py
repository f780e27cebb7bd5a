"""`make bench`: issue 13's table, measured on a stack of its own, each row beside its ceiling from the same run.

    make bench                                   # needs Debian's wrk (apt-get install -y wrk)
    make bench BENCH_ARGS="--json out.json"      # where the table goes as JSON too
    .venv/bin/python -m scripts.bench --py-spy test-artifacts/profiles   # also profile the registration bursts

Rows:
- registrations at once (100, 200): p50, p99 and errors, each request on its own connection (httpx), against
  as many update-with-starts of a bare workflow (its update answers at once) on the same server. Ratio =
  ceiling p99 / ours.
- Sumsub webhook intake and `customer(id)`: `wrk` (1 thread, 32 and 16 connections, 10 s), ours against a bare
  Starlette + asyncpg endpoint (`scripts/bench_ceiling.py`: the same digest check and an insert; the same
  row read) on the same uvicorn, PostgreSQL and generator. Ratio = ours / ceiling in requests per second.
- onboarding throughput: N customers from registration to ACTIVE (the WebSDK's submit and approve pressed
  as soon as each is possible), against N bare Temporal workflows with as many no-op activities as one of
  our onboardings scheduled (counted from its history), on the same Temporal server.
- the same onboarding with two API processes (registrations alternate) and two workers, against one of each.
- worker RSS once `--waiting` (10,000) more customers wait for KYC; goal < 500 MB.
- the ops `customers` page (first 50, 50 of one stage, 50 from half-way down by cursor) after `--page-rows`
  (100,000) projection rows are added; wrk, 16 connections; goal p99 < 50 ms.

Everything (generator, stack, ceiling) shares this machine's CPUs: read the ratios, not the absolute numbers.
A benchmark, not a test: nothing here passes or fails on time; exit status 1 only on wrong answers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from temporalio.api.enums.v1 import EventType, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from dev.extra import extra_api, second_worker
from dev.stack import REPO_ROOT, DevStack, free_port
from domain.customer import workflow_id_for
from integrations.sumsub.webhooks import DEFAULT_WEBHOOK_DIGEST_ALG, webhook_digest
from kit.temporal import connect
from scripts.bench_api import GET_CUSTOMER, REGISTER, portal_token
from scripts.bench_bare_workflow import BareOnboarding, BareOnboardingWorkflow, BareRegistrationWorkflow, bare_step
from scripts.bench_customers import onboard_all, register_many, wait_for_stage
from scripts.bench_scale import (
    PAGE_LUA,
    check_page,
    cpu_seconds,
    cpu_used,
    fill_customers,
    page_queries,
    register_waiting,
    rss_mb,
)
from scripts.own_stack import own_stack

DEV_WEBHOOK_SECRET = "dev-sumsub-webhook-secret"
WRK_BODIES = 30_000
ROWS = ("registrations", "webhooks", "reads", "onboarding", "scale", "waiting", "page")


@dataclass
class Row:
    """One line of the table: our figure, the ceiling's (when there is one), the goal."""

    name: str
    ours: str
    ceiling: str = "-"
    ratio: float | None = None
    goal: str = ""
    details: dict[str, Any] | None = None


def percentile(values: list[float], q: float) -> float:
    """Nearest rank."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# --- wrk ----------------------------------------------------------------------------------------------

WEBHOOK_LUA = """
local bodies, digests, i = {}, {}, 0
local path
init = function(args)
  path = args[1]
  for line in io.lines(args[2]) do
    local tab = line:find("\\t", 1, true)
    digests[#digests + 1] = line:sub(1, tab - 1)
    bodies[#bodies + 1] = line:sub(tab + 1)
  end
end
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", path, {["Content-Type"] = "application/json", ["X-Payload-Digest"] = digests[i],
    ["X-Payload-Digest-Alg"] = "@ALG@"}, bodies[i])
end
""".replace("@ALG@", DEFAULT_WEBHOOK_DIGEST_ALG)

READ_LUA = """
local ids, i = {}, 0
local mode, token
init = function(args)
  mode, token = args[1], args[2]
  for line in io.lines(args[3]) do ids[#ids + 1] = line end
end
request = function()
  i = i % #ids + 1
  if mode == "ceiling" then return wrk.format("GET", "/customer/" .. ids[i]) end
  local body = '{"query":"@QUERY@","variables":{"id":"' .. ids[i] .. '"}}'
  return wrk.format("POST", "/graphql", {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token}, body)
end
""".replace("@QUERY@", json.dumps(" ".join(GET_CUSTOMER.split()))[1:-1].replace("\\", "\\\\"))


@dataclass
class WrkResult:
    requests: int
    per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> WrkResult:
    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output)
        if match is None:
            raise RuntimeError(f"unexpected wrk output:\n{output}")
        return match

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        requests=int(find(r"(\d+) requests in").group(1)),
        per_second=float(find(r"Requests/sec:\s+([\d.]+)").group(1)),
        p50_ms=_ms(find(r"(?m)^\s+50%\s+(\S+)$").group(1)),
        p99_ms=_ms(find(r"(?m)^\s+99%\s+(\S+)$").group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


async def run_wrk(wrk: str, url: str, script: Path, args: list[str], *, connections: int, seconds: int) -> WrkResult:
    command = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url, "--", *args]
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {out.decode(errors='replace')}")
    return parse_wrk(out.decode())


def write_webhook_bodies(path: Path, *, run_id: str, label: str, customers: list[str]) -> None:
    """Validly signed bodies with unique correlationIds; half for known customers, half for unknown ids
    (both are accepted intake). `applicantCreated` changes no customer's state."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    with path.open("w") as out:
        for i in range(WRK_BODIES):
            customer_id = customers[(i // 2) % len(customers)] if i % 2 == 0 else str(uuid.uuid4())
            body = json.dumps(
                {
                    "applicantId": f"bench{run_id}{label}{i:06d}",
                    "inspectionId": f"bench{run_id}{label}{i:06d}",
                    "applicantType": "individual",
                    "correlationId": f"bench-{run_id}-{label}-{i}",
                    "levelName": "basic-kyc-level",
                    "sandboxMode": True,
                    "externalUserId": customer_id,
                    "type": "applicantCreated",
                    "reviewStatus": "init",
                    "createdAtMs": stamp,
                    "clientId": "bench",
                },
                separators=(",", ":"),
            ).encode()
            out.write(f"{webhook_digest(body, DEV_WEBHOOK_SECRET)}\t{body.decode()}\n")


# --- registrations --------------------------------------------------------------------------------------


async def registration_burst(api_url: str, token: str, *, run_id: str, count: int) -> Row:
    """`count` registrations sent at once, each on a connection of its own (opened beforehand)."""
    headers = {"Authorization": f"Bearer {token}"}
    clients = [httpx.AsyncClient(base_url=api_url, timeout=30, headers=headers) for _ in range(count)]
    try:
        await asyncio.gather(*(http.get("/healthz") for http in clients))  # connections open before the burst
        latencies: list[float] = []
        errors: dict[str, int] = {}

        async def one(http: httpx.AsyncClient, i: int) -> None:
            variables = {"input": {"email": f"burst-{run_id}-{count}-{i}@example.com", "customerType": "INDIVIDUAL"}}
            started = time.perf_counter()
            try:
                response = await http.post("/graphql", json={"query": REGISTER, "variables": variables})
                body = response.json()
                outcome = (
                    "ok"
                    if response.status_code == 200 and not body.get("errors")
                    else str((body.get("errors") or [{}])[0].get("extensions", {}).get("code", response.status_code))
                )
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            if outcome == "ok":
                latencies.append(time.perf_counter() - started)
            else:
                errors[outcome] = errors.get(outcome, 0) + 1

        await asyncio.gather(*(one(http, i) for i, http in enumerate(clients)))
    finally:
        await asyncio.gather(*(http.aclose() for http in clients))
    p50, p99 = 1000 * percentile(latencies, 0.5), 1000 * percentile(latencies, 0.99)
    return Row(
        f"{count} registrations at once",
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, {sum(errors.values())} errors",
        goal="0 errors, p99 < 1000 ms",
        details={"p50_ms": p50, "p99_ms": p99, "errors": errors, "ok": len(latencies)},
    )


async def history_events(temporal: Client, customer_ids: list[str]) -> Counter[str]:
    """History events of every run of these customers' workflows, by type."""
    counts: Counter[str] = Counter()
    for customer_id in customer_ids:
        workflow_id = workflow_id_for(customer_id)
        async for execution in temporal.list_workflows(f'WorkflowId = "{workflow_id}"'):
            history = await temporal.get_workflow_handle(workflow_id, run_id=execution.run_id).fetch_history()
            counts.update(EventType.Name(event.event_type).removeprefix("EVENT_TYPE_") for event in history.events)
    return counts


async def bare_registrations(temporal_address: str, *, count: int) -> tuple[list[float], int]:
    """Seconds each of `count` update-with-starts of a bare workflow took, sent at once, on their own worker,
    and how many failed (past a 10 s RPC timeout, our API's REGISTER_TIMEOUT)."""
    client = await Client.connect(temporal_address)
    task_queue = f"bench-bare-{uuid.uuid4().hex[:8]}"
    worker = Worker(
        client, task_queue=task_queue, workflows=[BareRegistrationWorkflow], workflow_runner=UnsandboxedWorkflowRunner()
    )
    async with worker:

        async def one(i: int) -> float | None:
            start = WithStartWorkflowOperation(
                BareRegistrationWorkflow.run,
                f"bare-{i}@example.com",
                id=f"{task_queue}-{i}",
                task_queue=task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )
            started = time.perf_counter()
            try:
                await client.execute_update_with_start_workflow(
                    BareRegistrationWorkflow.register,
                    f"bare-{i}@example.com",
                    start_workflow_operation=start,
                    rpc_timeout=timedelta(seconds=10),
                )
            except (WorkflowUpdateRPCTimeoutOrCancelledError, RPCError):
                with contextlib.suppress(Exception):  # the start's own outcome, so asyncio does not log it
                    await start.workflow_handle()
                return None
            return time.perf_counter() - started

        results = await asyncio.gather(*(one(i) for i in range(count)))
        await asyncio.gather(
            *(
                client.get_workflow_handle(f"{task_queue}-{i}").signal(BareRegistrationWorkflow.close)
                for i in range(count)
            ),
            return_exceptions=True,
        )
    latencies = [r for r in results if r is not None]
    return latencies, len(results) - len(latencies)


async def bare_temporal(temporal_address: str, *, count: int, plan: BareOnboarding) -> float:
    """Seconds for `count` bare workflows of `plan.steps` activities each, started at once, on their own worker."""
    client = await Client.connect(temporal_address)
    task_queue = f"bench-bare-{uuid.uuid4().hex[:8]}"
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[BareOnboardingWorkflow],
        activities=[bare_step],
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    async with worker:
        started = time.perf_counter()
        handles = await asyncio.gather(
            *(
                client.start_workflow(BareOnboardingWorkflow.run, plan, id=f"{task_queue}-{i}", task_queue=task_queue)
                for i in range(count)
            )
        )
        await asyncio.gather(*(handle.result() for handle in handles))
        return time.perf_counter() - started


# --- the run --------------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, stack: DevStack, wrk: str, work: Path) -> list[Row]:
    run_id = uuid.uuid4().hex[:8]
    rows: list[Row] = []
    try:
        return await _rows(args, stack, wrk, work, run_id, rows)
    except BaseException:
        _print_so_far(rows)
        raise


async def _rows(
    args: argparse.Namespace, stack: DevStack, wrk: str, work: Path, run_id: str, rows: list[Row]
) -> list[Row]:
    api = stack.api_url
    pool = await asyncpg.create_pool(stack.child_env["DATABASE_URL"], min_size=1, max_size=4)
    assert pool is not None
    ceiling_port = free_port()
    ceiling = subprocess.Popen(
        [sys.executable, "-m", "scripts.bench_ceiling"],
        env={**stack.child_env, "BENCH_CEILING_PORT": str(ceiling_port), "SUMSUB_WEBHOOK_SECRET": DEV_WEBHOOK_SECRET},
        cwd=REPO_ROOT,
    )
    ceiling_url = f"http://127.0.0.1:{ceiling_port}"
    try:
        await _wait_until_up(f"{ceiling_url}/customer/{uuid.uuid4()}", ceiling, expect=404)
        token = await portal_token(stack.keycloak_url, "customers", "portal", "portal-dev-secret")
        await _worker_polling(stack)

        # Registrations at once, before anything else loads the worker.
        profilers = _start_py_spy(args, stack, row="registrations")
        for count in (100, 200) if "registrations" in args.rows else ():
            print(f"{count} registrations at once ...", flush=True)
            before = cpu_seconds(stack)
            row = await registration_burst(api, token, run_id=run_id, count=count)
            cpu_ours = cpu_used(before, cpu_seconds(stack))  # the burst's, with the onboarding it started meanwhile
            await asyncio.sleep(args.settle_seconds)  # their onboarding (Keycloak, Sumsub) settles
            before = cpu_seconds(stack)
            bare_latencies, bare_errors = await bare_registrations(stack.temporal_address, count=count)
            cpu_bare = cpu_used(before, cpu_seconds(stack))  # its worker runs in this process: "load client"
            print(f"  CPU seconds during the burst, ours: {cpu_ours}; bare: {cpu_bare}", flush=True)
            p50, p99 = 1000 * percentile(bare_latencies, 0.5), 1000 * percentile(bare_latencies, 0.99)
            row.ceiling = f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, {bare_errors} errors (bare update-with-start)"
            assert row.details is not None
            row.ratio = p99 / row.details["p99_ms"] if row.details["p99_ms"] else None
            row.details["ceiling"] = {"p50_ms": p50, "p99_ms": p99, "errors": bare_errors}
            row.details["cpu_seconds"] = {"ours": cpu_ours, "bare": cpu_bare}
            rows.append(row)
            print(f"  ours: {row.ours}; ceiling: {row.ceiling}", flush=True)
        _stop_py_spy(profilers)

        if set(args.rows) == {"registrations"}:
            return rows
        customers = await register_many([api], token, run_id=run_id, label="reads", count=20)
        await wait_for_stage(pool, customers, "AWAITING_KYC")

        # customer(id) before the webhook storm, whose relay backlog would share the API process with the reads.
        token = await portal_token(stack.keycloak_url, "customers", "portal", "portal-dev-secret")
        if "reads" in args.rows:
            ids = work / "ids.txt"
            ids.write_text("\n".join(customers) + "\n")
            script = work / "read.lua"
            script.write_text(READ_LUA)
            await _check_read(api, token, customers[0])
            reads: dict[str, WrkResult] = {}
            for label, url in (("ceiling", ceiling_url), ("ours", api)):
                print(f"customer(id) ({label}) with wrk ...", flush=True)
                reads[label] = await run_wrk(
                    wrk, url, script, [label, token, str(ids)], connections=16, seconds=args.seconds
                )
            rows.append(_versus("customer(id), 16 connections", reads, goal="ratio >= 0.5, p99 < 20 ms"))

        # Webhook intake: the ceiling first, then ours, same generator and body shapes.
        temporal = await _temporal_client(stack)
        events_before = await history_events(temporal, customers)
        script = work / "webhook.lua"
        script.write_text(WEBHOOK_LUA)
        intake: dict[str, WrkResult] = {}
        intake_cpu: dict[str, dict[str, float]] = {}
        for label, url, path in (
            (("ceiling", ceiling_url, "/webhook"), ("ours", api, "/webhooks/sumsub")) if "webhooks" in args.rows else ()
        ):
            bodies = work / f"bodies-{label}.tsv"
            write_webhook_bodies(bodies, run_id=run_id, label=label, customers=customers)
            print(f"webhook intake ({label}) with wrk ...", flush=True)
            before = cpu_seconds(stack, {"ceiling app": ceiling.pid})
            profilers = _start_py_spy(args, stack, row="webhooks") if label == "ours" else []
            intake[label] = await run_wrk(wrk, url, script, [path, str(bodies)], connections=32, seconds=args.seconds)
            _stop_py_spy(profilers)
            intake_cpu[label] = cpu_used(before, cpu_seconds(stack, {"ceiling app": ceiling.pid}))
            print(f"  CPU seconds ({label}, wrk not counted): {intake_cpu[label]}", flush=True)
        if intake:
            row = _versus("Sumsub webhook intake, 32 connections", intake, goal="ratio >= 0.8, p99 < 50 ms")
            assert row.details is not None
            row.details["cpu_seconds"] = intake_cpu
            rows.append(row)
            drained, applied = await _drain_inbox(pool, customers, timeout=args.drain_seconds)
            row.details["storm_seconds"] = {"delivered": drained, "applied": applied}
            print(f"webhook backlog delivered in {drained:.1f} s, applied in {applied:.1f} s", flush=True)
            to_them = await pool.fetchval(
                "SELECT count(*) FROM sumsub_webhook_inbox WHERE outcome = 'delivered' AND external_user_id = ANY($1)",
                customers,
            )
            storm_events = await history_events(temporal, customers) - events_before
            per_webhook = storm_events.total() / max(to_them, 1)
            row.details["history_events_per_delivered_webhook"] = per_webhook
            row.details["storm_history_events"] = dict(storm_events)
            print(f"{to_them} delivered to the {len(customers)} customers: {per_webhook:.2f} history events each")
            print(f"  their history events by type: {dict(storm_events.most_common())}", flush=True)
            rows.append(
                await _intake_worker_paused(
                    args, stack, pool, wrk, work, script, customers=customers, run_id=run_id, ceiling=intake["ceiling"]
                )
            )

        if {"onboarding", "scale"} & set(args.rows):
            profilers = _start_py_spy(args, stack, row="onboarding")
            onboarding = await _onboarding(args, stack, pool, token, run_id=run_id)
            _stop_py_spy(profilers)
            rows.append(onboarding)
            if "scale" in args.rows:
                rows.extend(
                    await _two_of_each(
                        args,
                        stack,
                        pool,
                        token,
                        run_id=run_id,
                        one_of_each=onboarding,
                        intake_one=intake.get("ours"),
                        webhooks=(wrk, work, customers),
                    )
                )
        if "waiting" in args.rows:
            rows.append(await _waiting(args, stack, pool, token, run_id=run_id))
        if "page" in args.rows:
            rows.extend(await _pages(args, stack, pool, wrk, work, template_id=customers[0], run_id=run_id))
    finally:
        ceiling.terminate()
        ceiling.wait(timeout=15)
        await pool.close()
    return rows


async def _onboarding(args: argparse.Namespace, stack: DevStack, pool: asyncpg.Pool, token: str, *, run_id: str) -> Row:
    """Onboarding throughput against bare Temporal workflows with as many activities, on the same server."""
    print(f"onboarding {args.onboard} customers ...", flush=True)
    cpu_before = cpu_seconds(stack)
    ours = await onboard_all([stack.api_url], token, pool, run_id=run_id, count=args.onboard)
    cpu_ours = cpu_used(cpu_before, cpu_seconds(stack))
    temporal = await _temporal_client(stack)
    one = await pool.fetchval(
        "SELECT id::text FROM customers WHERE onboarding_stage = 'ONBOARDED' AND email LIKE $1 LIMIT 1",
        f"onboard-{run_id}-%",
    )
    events = await history_events(temporal, [one])
    print(f"  one onboarding's history events by type: {dict(events.most_common())}", flush=True)
    plan = BareOnboarding(steps=events["ACTIVITY_TASK_SCHEDULED"])
    print(f"{args.onboard} bare workflows of {plan.steps} activities ...", flush=True)
    cpu_before = cpu_seconds(stack)
    bare = await bare_temporal(stack.temporal_address, count=args.onboard, plan=plan)
    cpu_bare = cpu_used(cpu_before, cpu_seconds(stack))  # its worker runs in this process: "load client"
    print(f"  CPU seconds, ours: {cpu_ours}; bare: {cpu_bare}", flush=True)
    # The same bare with ours' search-attribute upserts (the SDK's TemporalChangeVersion ones for patches too):
    # how much of the server's extra work for ours is what ops see in the Temporal UI.
    upserting = BareOnboarding(steps=plan.steps, upserts=events["UPSERT_WORKFLOW_SEARCH_ATTRIBUTES"])
    cpu_before = cpu_seconds(stack)
    bare_upserting = await bare_temporal(stack.temporal_address, count=args.onboard, plan=upserting)
    cpu_upserting = cpu_used(cpu_before, cpu_seconds(stack))
    print(
        f"  bare with {upserting.upserts} upserts each: {args.onboard / bare_upserting:.2f}/s "
        f"({bare_upserting:.1f} s); CPU seconds: {cpu_upserting}",
        flush=True,
    )
    return Row(
        f"onboarding throughput ({args.onboard} customers, {plan.steps} activities each)",
        f"{args.onboard / ours:.2f}/s ({ours:.1f} s)",
        f"{args.onboard / bare:.2f}/s ({bare:.1f} s)",
        bare / ours,
        "ratio >= 1.0",
        {
            "ours_seconds": ours,
            "bare_seconds": bare,
            "activities": plan.steps,
            "customers": args.onboard,
            "cpu_seconds": {"ours": cpu_ours, "bare": cpu_bare, "bare_upserting": cpu_upserting},
            "history_events": dict(events),
            "bare_upserting": {"upserts": upserting.upserts, "seconds": bare_upserting},
        },
    )


async def _two_of_each(
    args: argparse.Namespace,
    stack: DevStack,
    pool: asyncpg.Pool,
    token: str,
    *,
    run_id: str,
    one_of_each: Row,
    intake_one: WrkResult | None,
    webhooks: tuple[str, Path, list[str]],
) -> list[Row]:
    """The same onboarding with a second API process (registrations alternate between them) and a second worker;
    and, when the webhook row ran, the same intake split over both APIs (two `wrk` of 16 connections at once,
    one per API, against the one API's 32)."""
    assert one_of_each.details is not None
    rows: list[Row] = []
    print(f"onboarding {args.onboard} customers with two API processes and two workers ...", flush=True)
    async with second_worker(stack), extra_api(stack, {}) as second_api:
        two = await onboard_all(
            [stack.api_url, second_api], token, pool, run_id=run_id, count=args.onboard, label="onboard-two"
        )
        if intake_one is not None:
            wrk, work, customers = webhooks
            script = work / "webhook.lua"
            print("webhook intake through two API processes (two wrk) ...", flush=True)
            halves = []
            for i in range(2):
                bodies = work / f"bodies-two-{i}.tsv"
                write_webhook_bodies(bodies, run_id=run_id, label=f"two{i}", customers=customers)
                halves.append((bodies, (stack.api_url, second_api)[i]))
            results = await asyncio.gather(
                *(
                    run_wrk(wrk, url, script, ["/webhooks/sumsub", str(bodies)], connections=16, seconds=args.seconds)
                    for bodies, url in halves
                )
            )
            drained, applied = await _drain_inbox(pool, customers, timeout=args.drain_seconds)
            print(f"webhook backlog delivered in {drained:.1f} s, applied in {applied:.1f} s (two workers)", flush=True)
            per_second = sum(r.per_second for r in results)
            p99 = max(r.p99_ms for r in results)
            if any(r.non_2xx or r.socket_errors for r in results):
                print(f"warning: intake through two APIs: {[(r.non_2xx, r.socket_errors) for r in results]}")
            rows.append(
                Row(
                    "Sumsub webhook intake, two API processes and two workers (2 x 16 connections)",
                    f"{per_second:.0f}/s, p99 {p99:.1f} ms (the worse API's)",
                    f"{intake_one.per_second:.0f}/s, p99 {intake_one.p99_ms:.1f} ms with one of each",
                    per_second / intake_one.per_second if intake_one.per_second else None,
                    "shown (one machine of 2 cores)",
                    {
                        "two": [asdict(r) for r in results],
                        "one": asdict(intake_one),
                        "storm_seconds": {"delivered": drained, "applied": applied},
                    },
                )
            )
    one = one_of_each.details["ours_seconds"]
    rows.insert(
        0,
        Row(
            f"onboarding throughput, two API processes and two workers ({args.onboard} customers)",
            f"{args.onboard / two:.2f}/s ({two:.1f} s)",
            f"{args.onboard / one:.2f}/s ({one:.1f} s) with one of each",
            one / two,
            "shown (one machine of 2 cores)",
            {"two_seconds": two, "one_seconds": one, "customers": args.onboard},
        ),
    )
    return rows


async def _waiting(args: argparse.Namespace, stack: DevStack, pool: asyncpg.Pool, token: str, *, run_id: str) -> Row:
    """The worker's resident memory once `--waiting` more customers wait for KYC (their workflows open)."""
    pid = stack.pid("worker")
    assert pid is not None
    before = rss_mb(pid)
    print(f"{args.waiting:,} customers to wait for KYC (worker RSS {before:.0f} MB) ...", flush=True)
    seconds, samples = await register_waiting(pool, stack, run_id=run_id, count=args.waiting, worker_pid=pid)
    after = rss_mb(pid)
    waiting = await pool.fetchval("SELECT count(*) FROM customers WHERE onboarding_stage = 'AWAITING_KYC'")
    return Row(
        f"worker RSS, {waiting:,} customers waiting for KYC",
        f"{after:.0f} MB ({before:.0f} MB before these {args.waiting:,})",
        goal="< 500 MB at 10,000",
        details={
            "rss_mb": after,
            "rss_before_mb": before,
            "waiting": waiting,
            "registered_in_seconds": seconds,
            "rss_mb_after_each_chunk": samples,
            "worker_max_cached_workflows": stack.child_env.get("WORKER_MAX_CACHED_WORKFLOWS", "default"),
        },
    )


async def _pages(
    args: argparse.Namespace,
    stack: DevStack,
    pool: asyncpg.Pool,
    wrk: str,
    work: Path,
    *,
    template_id: str,
    run_id: str,
) -> list[Row]:
    """The ops `customers` page over `--page-rows` more projection rows: wrk with 1 and 16 connections, per page."""
    print(f"{args.page_rows:,} projection rows ...", flush=True)
    await fill_customers(pool, template_id=template_id, count=args.page_rows, run_id=run_id)
    total = await pool.fetchval("SELECT count(*) FROM customers")
    token = await portal_token(stack.keycloak_url, "customers", "ops", "ops-dev-secret")
    script = work / "page.lua"
    script.write_text(PAGE_LUA)
    rows: list[Row] = []
    for name, query in (await page_queries(pool, deep=args.page_rows // 2)).items():
        await check_page(stack.api_url, token, query)
        body = work / f"page-{len(rows)}.json"
        body.write_text(json.dumps({"query": query}))
        print(f"customers page ({name}) with wrk ...", flush=True)
        # One connection: an ops console paging; sixteen: many at once on one API process.
        one, many = [
            await run_wrk(wrk, stack.api_url, script, [str(body), token], connections=c, seconds=args.seconds)
            for c in (1, 16)
        ]
        rows.append(
            Row(
                f"customers page, {name}, {total:,} rows",
                f"1 connection: p50 {one.p50_ms:.1f} ms, p99 {one.p99_ms:.1f} ms; "
                f"16: {many.per_second:.0f}/s, p99 {many.p99_ms:.1f} ms",
                goal="p99 < 50 ms",
                details={"rows": total, "one_connection": asdict(one), "sixteen_connections": asdict(many)},
            )
        )
    return rows


async def _intake_worker_paused(
    args: argparse.Namespace,
    stack: DevStack,
    pool: asyncpg.Pool,
    wrk: str,
    work: Path,
    script: Path,
    *,
    customers: list[str],
    run_id: str,
    ceiling: WrkResult,
) -> Row:
    """Intake again with the worker stopped (SIGSTOP), so nothing applies the storm while it arrives: what the API
    and PostgreSQL alone take against the same ceiling, and so what the work after the answer costs intake when
    both share two cores. The storm is applied once the worker goes on."""
    worker = stack.pid("worker")
    assert worker is not None
    bodies = work / "bodies-paused.tsv"
    write_webhook_bodies(bodies, run_id=run_id, label="paused", customers=customers)
    print("webhook intake (ours, worker paused) with wrk ...", flush=True)
    before = cpu_seconds(stack)
    os.kill(worker, signal.SIGSTOP)
    try:
        paused = await run_wrk(
            wrk, stack.api_url, script, ["/webhooks/sumsub", str(bodies)], connections=32, seconds=args.seconds
        )
    finally:
        os.kill(worker, signal.SIGCONT)
    cpu = cpu_used(before, cpu_seconds(stack))
    print(f"  CPU seconds (ours, worker paused, wrk not counted): {cpu}", flush=True)
    drained, applied = await _drain_inbox(pool, customers, timeout=args.drain_seconds)
    print(f"  that storm delivered in {drained:.1f} s, applied in {applied:.1f} s once the worker went on", flush=True)
    paused_row = _versus(
        "Sumsub webhook intake, worker paused (the API alone)", {"ours": paused, "ceiling": ceiling}, goal="shown"
    )
    assert paused_row.details is not None
    paused_row.details |= {"cpu_seconds": cpu, "storm_seconds": {"delivered": drained, "applied": applied}}
    return paused_row


def _versus(name: str, results: dict[str, WrkResult], *, goal: str) -> Row:
    ours, ceiling = results["ours"], results["ceiling"]
    for label, result in results.items():
        if result.non_2xx or result.socket_errors:
            print(f"warning: {name} ({label}): {result.non_2xx} non-2xx, {result.socket_errors} socket errors")
    return Row(
        name,
        f"{ours.per_second:.0f}/s, p50 {ours.p50_ms:.1f} ms, p99 {ours.p99_ms:.1f} ms",
        f"{ceiling.per_second:.0f}/s, p50 {ceiling.p50_ms:.1f} ms, p99 {ceiling.p99_ms:.1f} ms",
        ours.per_second / ceiling.per_second if ceiling.per_second else None,
        goal,
        {label: asdict(result) for label, result in results.items()},
    )


async def _check_read(api: str, token: str, customer_id: str) -> None:
    """wrk counts answers, not their content: one read through the same query, checked."""
    async with httpx.AsyncClient(base_url=api, timeout=10, headers={"Authorization": f"Bearer {token}"}) as http:
        body = (await http.post("/graphql", json={"query": GET_CUSTOMER, "variables": {"id": customer_id}})).json()
    if body.get("errors") or not body["data"]["customer"]:
        raise RuntimeError(f"customer(id) does not answer as the benchmark expects: {body}")


async def _drain_inbox(pool: asyncpg.Pool, customers: list[str], *, timeout: float) -> tuple[float, float]:
    """Seconds until every stored webhook is delivered (the worker took their signals), and until the customers'
    workflows applied every one delivered to them (an audit row by Sumsub each), at most `timeout` in all: the
    next row should not share the machine with this storm."""
    started = time.perf_counter()
    while await pool.fetchval("SELECT count(*) FROM sumsub_webhook_inbox WHERE delivered_at IS NULL"):
        if time.perf_counter() - started > timeout:
            break
        await asyncio.sleep(0.5)
    delivered = time.perf_counter() - started
    unapplied = """
        SELECT (SELECT count(*) FROM sumsub_webhook_inbox
                 WHERE outcome = 'delivered' AND external_user_id = ANY($1::text[]))
             - (SELECT count(*) FROM customer_events
                 WHERE actor = 'sumsub' AND details ? 'sumsub_type' AND customer_id = ANY($1::uuid[]))
    """
    while await pool.fetchval(unapplied, customers) > 0:
        if time.perf_counter() - started > timeout:
            print("warning: the storm was not applied in time; the next rows share the machine with it", flush=True)
            break
        await asyncio.sleep(0.5)
    return delivered, time.perf_counter() - started


async def _temporal_client(stack: DevStack) -> Client:
    """A client as the stack's processes have it (their codec: payloads are encrypted)."""
    return await connect(stack.settings())


async def _worker_polling(stack: DevStack, *, timeout: float = 60.0) -> None:
    """The stack is up once the API is ready; the worker may still be starting. The first row waits until it
    polls the customers' task queue, as the bare ceilings' workers do before they are measured."""
    settings = stack.settings()
    temporal = await connect(settings)
    request = DescribeTaskQueueRequest(
        namespace=settings.temporal_namespace,
        task_queue=TaskQueue(name=settings.temporal_task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    deadline = time.monotonic() + timeout
    while not (await temporal.workflow_service.describe_task_queue(request)).pollers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no worker polls {settings.temporal_task_queue} after {timeout:.0f} s")
        await asyncio.sleep(0.2)


async def _wait_until_up(url: str, proc: subprocess.Popen[bytes], *, expect: int) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            try:
                if (await http.get(url)).status_code == expect:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the ceiling app did not start")
            await asyncio.sleep(0.1)


def _start_py_spy(args: argparse.Namespace, stack: DevStack, *, row: str) -> list[subprocess.Popen[bytes]]:
    """py-spy (from PyPI, on PATH or beside this Python) on the worker and the API during one row."""
    if not args.py_spy:
        return []
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("--py-spy needs py-spy on PATH (pip install py-spy)")
    args.py_spy.mkdir(parents=True, exist_ok=True)
    procs = []
    for name in ("worker", "api"):
        pid = stack.pid(name)
        assert pid is not None
        out = args.py_spy / f"{row}-{name}.speedscope.json"
        procs.append(
            subprocess.Popen(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    "200",
                    "--subprocesses",
                    "--format",
                    "speedscope",
                    "-o",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
            )
        )
    time.sleep(1)  # attached before the burst
    return procs


def _stop_py_spy(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(2)  # SIGINT: py-spy writes its profile and exits
        proc.wait(timeout=60)


def table(rows: list[Row]) -> str:
    header = ("row", "ours", "ceiling", "ratio", "goal")
    cells = [header] + [(r.name, r.ours, r.ceiling, "-" if r.ratio is None else f"{r.ratio:.2f}", r.goal) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


async def _with_own_stack(args: argparse.Namespace, wrk: str) -> list[Row]:
    env = {"API_WORKERS": str(args.api_workers)} | dict(setting.split("=", 1) for setting in args.env)
    async with own_stack("bench-", env) as (stack, root):
        return await bench(args, stack, wrk, root)


def _print_so_far(rows: list[Row]) -> None:
    """A failing row must not lose the rows measured before it."""
    if rows:
        print("rows measured before the failure:", file=sys.stderr)
        print(table(rows), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=Path("test-artifacts/bench.json"), help="the table as JSON")
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--onboard", type=int, default=50, help="customers onboarded for the throughput row")
    parser.add_argument("--api-workers", type=int, default=1, help="API_WORKERS of the stack's API")
    parser.add_argument("--waiting", type=int, default=10_000, help="customers left waiting for KYC (RSS row)")
    parser.add_argument("--page-rows", type=int, default=100_000, help="projection rows added for the page rows")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="a setting for the stack (repeatable)"
    )
    parser.add_argument("--settle-seconds", type=float, default=10.0, help="pause after each registration burst")
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=600.0,
        help="most to wait for a webhook storm to be delivered and applied",
    )
    parser.add_argument(
        "--rows",
        type=lambda text: text.split(","),
        default=list(ROWS),
        help=f"which rows, comma-separated (default all: {','.join(ROWS)})",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        help="profile worker and API during the registration, intake and onboarding rows, into DIR",
    )
    args = parser.parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        print("make bench needs Debian's wrk on PATH: apt-get install -y wrk", file=sys.stderr)
        return 2
    started = datetime.now(UTC)
    rows = asyncio.run(_with_own_stack(args, wrk))
    machine = f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load {os.getloadavg()}"
    print()
    print(f"make bench, {started:%Y-%m-%d %H:%M} UTC, {machine}; generator, stack and ceiling on one machine")
    print(table(rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "started": started.isoformat(),
                "machine": machine,
                "api_workers": args.api_workers,
                "rows": [asdict(r) for r in rows],
            },
            indent=2,
        )
    )
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
