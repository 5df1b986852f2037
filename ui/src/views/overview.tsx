// The overview: tasks per status, throughput and latency over the last minutes, queue wait,
// agents by status, the cache hit rate and the alerts in force. Admins see the metrics
// service's summary (every tenant); clients see their own tasks' counts.
import { useEffect, useState } from "preact/hooks";
import { call, type MetricsSummary, type Page, TASK_STATUSES, type Task } from "../api";
import { Chart } from "../chart";
import { ago, figure, percent } from "../format";
import { usePolled } from "../hooks";
import { href } from "../router";

const REFRESH_MS = 2000;
const HISTORY_POINTS = 150; // five minutes at one point per two seconds

async function countsOf(path: string, values: readonly string[], key: string): Promise<Record<string, number>> {
  const totals = await Promise.all(
    values.map((value) => call<Page<unknown>>("GET", `${path}?${key}=${value}&per_page=1`).then((page) => page.total)),
  );
  return Object.fromEntries(values.map((value, i) => [value, totals[i]]));
}

export function OverviewView({ admin }: { admin: boolean }) {
  const metrics = usePolled(() => (admin ? call<MetricsSummary>("GET", "/api/metrics") : Promise.resolve(null)), [admin], REFRESH_MS);
  const ownCounts = usePolled(
    () => (admin ? Promise.resolve(null) : countsOf("/api/tasks", TASK_STATUSES, "status")),
    [admin],
    REFRESH_MS,
  );
  const agents = usePolled(
    () => (admin ? countsOf("/api/agents", ["idle", "busy", "offline"], "status") : Promise.resolve(null)),
    [admin],
    REFRESH_MS,
  );
  const recent = usePolled(() => call<Page<Task>>("GET", "/api/tasks?per_page=5&status=failed"), [], REFRESH_MS);
  const history = useHistory(metrics.data);
  const summary = metrics.data;
  const counts = summary?.tasks ?? ownCounts.data ?? {};
  return (
    <>
      <h1>Overview</h1>
      {metrics.error && <p role="alert" class="error">{metrics.error.message}</p>}
      <section aria-labelledby="tasks-heading">
        <h2 id="tasks-heading">Tasks</h2>
        <ul class="tiles">
          {TASK_STATUSES.map((status) => (
            <li key={status} class={`tile status-${status}`}>
              <a href={`${href("tasks")}?status=${status}`}>
                <span class="tile-figure" data-testid={`count-${status}`}>{figure(counts[status] ?? 0, 0)}</span>
                <span class="tile-label">{status}</span>
              </a>
            </li>
          ))}
        </ul>
      </section>
      {summary && (
        <>
          <section aria-labelledby="traffic-heading" class="grid two">
            <h2 id="traffic-heading" class="span">Traffic, last {summary.window_seconds} s</h2>
            <Chart
              title="Requests per second"
              unit="req/s"
              series={[{ label: "req/s", color: "#2f6fde" }]}
              data={[history.times, history.throughput]}
            />
            <Chart
              title="Latency"
              unit="ms"
              series={[
                { label: "p50", color: "#2f9e44" },
                { label: "p95", color: "#e8890c" },
                { label: "p99", color: "#d6336c" },
              ]}
              data={[history.times, history.p50, history.p95, history.p99]}
            />
          </section>
          <section aria-labelledby="figures-heading">
            <h2 id="figures-heading">Now</h2>
            <dl class="figures">
              <Figure label="Requests/s" value={figure((summary.requests?.total ?? 0) / Math.max(1, summary.window_seconds))} />
              <Figure label="Error rate" value={percent(summary.requests?.error_rate)} />
              <Figure label="p50 / p95 / p99" value={latency(summary.requests?.latency_ms)} />
              <Figure label="Queue wait p50 / p95" value={summary.queue_wait_ms ? `${figure(summary.queue_wait_ms.p50)} / ${figure(summary.queue_wait_ms.p95)} ms` : "—"} />
              <Figure label="Cache hit rate" value={percent(summary.cache?.hit_rate)} />
              {agents.data && (
                <Figure
                  label="Agents idle / busy / offline"
                  value={`${agents.data.idle} / ${agents.data.busy} / ${agents.data.offline}`}
                />
              )}
            </dl>
          </section>
          <section aria-labelledby="alerts-heading">
            <h2 id="alerts-heading">Alerts</h2>
            {summary.alerts.length === 0 ? (
              <p class="ok">Every target holds.</p>
            ) : (
              <ul class="alerts">
                {summary.alerts.map((alert) => (
                  <li key={alert.name}>
                    <strong>{alert.name}</strong> {alert.message}{" "}
                    <span class="muted">
                      (target {figure(alert.target, 2)}, since {ago(alert.since)})
                    </span>
                  </li>
                ))}
              </ul>
            )}
          </section>
        </>
      )}
      <section aria-labelledby="failed-heading">
        <h2 id="failed-heading">Recent failures</h2>
        {recent.data?.items.length ? (
          <ul class="plain">
            {recent.data.items.map((task) => (
              <li key={task.id}>
                <a href={href("tasks", task.id)}>{task.title}</a> <span class="muted">{task.error}</span>
              </li>
            ))}
          </ul>
        ) : (
          <p class="muted">None.</p>
        )}
      </section>
    </>
  );
}

function Figure({ label, value }: { label: string; value: string }) {
  return (
    <div class="figure">
      <dt>{label}</dt>
      <dd>{value}</dd>
    </div>
  );
}

function latency(ms: { p50: number; p95: number; p99: number } | null | undefined): string {
  return ms ? `${figure(ms.p50)} / ${figure(ms.p95)} / ${figure(ms.p99)} ms` : "—";
}

interface History {
  times: number[];
  throughput: number[];
  p50: number[];
  p95: number[];
  p99: number[];
}

/** Keeps the last few minutes of the summaries seen, as series for the charts. */
function useHistory(summary: MetricsSummary | null): History {
  const [history, setHistory] = useState<History>({ times: [], throughput: [], p50: [], p95: [], p99: [] });
  useEffect(() => {
    if (!summary) return;
    const keep = <T,>(series: T[], value: T) => [...series, value].slice(-HISTORY_POINTS);
    const latencyMs = summary.requests?.latency_ms;
    setHistory((old) => ({
      times: keep(old.times, Date.now() / 1000),
      throughput: keep(old.throughput, (summary.requests?.total ?? 0) / Math.max(1, summary.window_seconds)),
      p50: keep(old.p50, latencyMs?.p50 ?? 0),
      p95: keep(old.p95, latencyMs?.p95 ?? 0),
      p99: keep(old.p99, latencyMs?.p99 ?? 0),
    }));
  }, [summary]);
  return history;
}
