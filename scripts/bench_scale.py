"""`make bench`'s rows about scale: onboarding with two API processes and two workers against one of each,
the worker's memory with many customers waiting for KYC, and the `customers` page over 100,000 rows."""

from __future__ import annotations

import os
import time
from pathlib import Path

import asyncpg
import httpx

from api.service import encode_cursor
from db.customers import CustomerKey
from dev.stack import DevStack
from scripts.bench_api import portal_token
from scripts.bench_customers import register_many, wait_for_stage

# Waiting customers are registered in chunks, each chunk's customers waiting for KYC before the next starts.
CHUNK = 500
PAGE_FIELDS = "edges { node { id status onboarding { stage } } } pageInfo { endCursor hasNextPage }"
PAGE_LUA = """
local body, token
init = function(args)
  local file = io.open(args[1]); body = file:read("*a"); file:close()
  token = args[2]
end
request = function()
  return wrk.format("POST", "/graphql", {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token}, body)
end
"""


def rss_mb(pid: int) -> float:
    """The process's resident set, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(stack: DevStack, others: dict[str, int] | None = None) -> dict[str, float]:
    """CPU seconds (user + system) each of the stack's processes has used so far, with all its descendants
    (PostgreSQL's backends, live or ended, the emulators' threads), this process's own (the load client, a bare
    worker), and those of `others` (name: pid, e.g. the ceiling app)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        pid = int(stat.parent.name)
        # utime + stime, and cutime + cstime: the children it has reaped (PostgreSQL's ended backends)
        parents[pid], used[pid] = int(fields[1]), sum(int(f) for f in fields[11:15]) / tick

    def tree(root: int) -> float:
        return used.get(root, 0.0) + sum(tree(pid) for pid, parent in parents.items() if parent == root)

    roots = {name: root for name in stack.child_names() if (root := stack.pid(name)) is not None} | (others or {})
    seconds = {name: tree(root) for name, root in roots.items()}
    seconds["load client"] = time.process_time()
    return seconds


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Per process, the CPU seconds between two `cpu_seconds` readings (largest first)."""
    spent = {name: round(after[name] - before.get(name, 0.0), 1) for name in after}
    return dict(sorted(spent.items(), key=lambda item: -item[1]))


TOKEN_BATCH = 100


async def register_waiting(
    pool: asyncpg.Pool, stack: DevStack, *, run_id: str, count: int, worker_pid: int | None = None
) -> tuple[float, list[tuple[int, float]]]:
    """Registers `count` customers and waits until every one waits for KYC; the seconds it took, and the
    worker's RSS (MB) after each chunk: it grows by the cache's share until the cache is full, then levels."""
    started = time.perf_counter()
    samples: list[tuple[int, float]] = []
    for first in range(0, count, CHUNK):
        ids = []
        # A token lives 300 s; a chunk of 500 on a busy worker has taken longer: a fresh one per hundred.
        for start in range(first, min(first + CHUNK, count), TOKEN_BATCH):
            token = await portal_token(stack.keycloak_url, "customers", "portal", "portal-dev-secret")
            ids += await register_many(
                [stack.api_url],
                token,
                run_id=run_id,
                label=f"waiting{start}",
                count=min(TOKEN_BATCH, first + CHUNK - start, count - start),
            )
        await wait_for_stage(pool, ids, "AWAITING_KYC", timeout=900)
        rss = rss_mb(worker_pid) if worker_pid is not None else float("nan")
        samples.append((first + len(ids), rss))
        print(
            f"  {first + len(ids)} waiting after {time.perf_counter() - started:.0f} s, worker RSS {rss:.0f} MB",
            flush=True,
        )
    return time.perf_counter() - started, samples


async def fill_customers(pool: asyncpg.Pool, *, template_id: str, count: int, run_id: str) -> None:
    """`count` projection rows copied from a real customer's, each with its own id and email, a second apart
    (older than it), their stages taking turns (a quarter KYC_IN_REVIEW): what the `customers` page reads."""
    await pool.execute(
        """
        INSERT INTO customers (id, state, workflow_id, run_id, created_at, updated_at)
        SELECT u.id,
               jsonb_set(jsonb_set(jsonb_set(jsonb_set(t.state,
                   '{registration,customer_id}', to_jsonb(u.id::text)),
                   '{registration,email}', to_jsonb('page-' || $3 || '-' || g || '@example.com')),
                   '{stage}', to_jsonb((ARRAY['AWAITING_KYC', 'KYC_IN_REVIEW', 'ONBOARDED', 'EXPIRED'])[1 + g % 4])),
                   '{created_at}', to_jsonb(t.created_at - make_interval(secs => g))),
               'customer-' || u.id, NULL, t.created_at - make_interval(secs => g), t.updated_at
        FROM generate_series(1, $2) AS g
        CROSS JOIN LATERAL (SELECT gen_random_uuid() AS id, g AS n) AS u
        CROSS JOIN (SELECT state, created_at, updated_at FROM customers WHERE id = $1::uuid) AS t
        """,
        template_id,
        count,
        run_id,
    )
    await pool.execute("ANALYZE customers")


async def page_queries(pool: asyncpg.Pool, *, deep: int) -> dict[str, str]:
    """The pages measured: the newest 50, 50 of one stage, and 50 from `deep` places down (by cursor)."""
    row = await pool.fetchrow(
        "SELECT created_at, id::text FROM customers ORDER BY created_at DESC, id DESC OFFSET $1 LIMIT 1", deep
    )
    assert row is not None
    cursor = encode_cursor(CustomerKey(created_at=row["created_at"], customer_id=row["id"]))
    return {
        "first page": f"{{ customers(first: 50) {{ {PAGE_FIELDS} }} }}",
        "one stage": f"{{ customers(first: 50, filter: {{stage: KYC_IN_REVIEW}}) {{ {PAGE_FIELDS} }} }}",
        f"{deep:,} down": f'{{ customers(first: 50, after: "{cursor}") {{ {PAGE_FIELDS} }} }}',
    }


async def check_page(api_url: str, token: str, query: str) -> None:
    """wrk counts answers, not their content: each page once, checked to hold 50 customers."""
    async with httpx.AsyncClient(base_url=api_url, timeout=10, headers={"Authorization": f"Bearer {token}"}) as http:
        body = (await http.post("/graphql", json={"query": query})).json()
    if body.get("errors") or len(body["data"]["customers"]["edges"]) != 50:
        raise RuntimeError(f"the customers page does not answer as the benchmark expects: {str(body)[:500]}")
