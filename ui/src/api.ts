// The gateway's REST API as the dashboard uses it: the signed-in key (kept for the browser
// session only), calls that raise the API's error envelope, and the shapes of its answers.
import { fetchEventSource } from "@microsoft/fetch-event-source";

const KEY_STORAGE = "swarm.key";

export interface Progress {
  percent: number;
  message: string | null;
}

export interface Task {
  id: string;
  title: string;
  kind: string;
  payload: unknown;
  status: string;
  priority: number;
  required_capabilities: string[];
  agent_id: string | null;
  user_id: string | null;
  attempts: number;
  max_attempts: number;
  timeout_seconds: number;
  progress: Progress;
  result: unknown;
  error: string | null;
  created_at: string | null;
  updated_at: string | null;
  started_at: string | null;
  finished_at: string | null;
  workflow_id: string | null;
  schedule_id: string | null;
}

export interface Agent {
  id: string;
  name: string;
  kind: string;
  capabilities: string[];
  status: "idle" | "busy" | "offline";
  max_concurrency: number;
  active_tasks: number;
  last_heartbeat_at: string | null;
  created_at: string | null;
}

export interface Attempt {
  attempt: number;
  agent_id: string | null;
  started_at: string | null;
  finished_at: string | null;
  outcome: string;
  error: string | null;
}

export interface Message {
  id: string;
  sender: string;
  role: string;
  content: string;
  created_at: string | null;
}

export interface Key {
  id: string;
  name: string;
  role: string;
  agent_id: string | null;
  prefix: string;
  created_at: string | null;
  revoked_at: string | null;
  key?: string;
}

export interface Workflow {
  id: string;
  name: string;
  user_id: string | null;
  status: string;
  /** Its tasks by key (not in lists). */
  tasks?: Record<string, Task>;
  /** The keys each task waits for, by key (not in lists). */
  dependencies?: Record<string, string[]>;
  created_at: string | null;
  updated_at: string | null;
  finished_at: string | null;
}

export interface Schedule {
  id: string;
  name: string;
  cron: string;
  timezone: string;
  task: { title: string; kind: string } | null;
  paused: boolean;
  next_run_at: string | null;
  last_run_at: string | null;
  created_at: string | null;
}

export interface Page<T> {
  items: T[];
  page: number;
  per_page: number;
  total: number;
  pages: number;
}

export interface Latency {
  p50: number;
  p95: number;
  p99: number;
}

export interface Alert {
  name: string;
  value: number;
  target: number;
  message: string;
  since: string | null;
}

export interface MetricsSummary {
  /** The sliding window that request counts and latencies cover. */
  window_seconds: number;
  requests: {
    total: number;
    errors: number;
    error_rate: number;
    latency_ms: Latency | null;
  } | null;
  queue_wait_ms: Latency | null;
  cache: { hits: number; misses: number; hit_rate: number; entries: number } | null;
  tasks: Record<string, number>;
  alerts: Alert[];
}

/** The task statuses, in the order a task moves through them. */
export const TASK_STATUSES = [
  "waiting",
  "scheduled",
  "queued",
  "active",
  "completed",
  "failed",
  "cancelled",
] as const;

/** A refusal of the API: its HTTP status, error code and message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Returns the key the browser session signed in with, if any. */
export function savedKey(): string | null {
  return sessionStorage.getItem(KEY_STORAGE);
}

/** Keeps `key` for this browser session (or forgets it, given null). */
export function saveKey(key: string | null): void {
  if (key === null) sessionStorage.removeItem(KEY_STORAGE);
  else sessionStorage.setItem(KEY_STORAGE, key);
}

function headers(): Record<string, string> {
  const key = savedKey();
  const base: Record<string, string> = { "Content-Type": "application/json" };
  return key ? { ...base, Authorization: `Bearer ${key}` } : base;
}

/** Sends one call and returns its JSON answer (null for an empty one); raises `ApiError`. */
export async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers: headers(),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "unavailable", "the gateway cannot be reached");
  }
  const text = await response.text();
  const answer = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = answer?.error ?? {};
    throw new ApiError(response.status, error.code ?? "unknown", error.message ?? text);
  }
  return answer as T;
}

/** Builds a query string from the set values of `params`. */
export function query(params: Record<string, string | number | undefined>): string {
  const set = Object.entries(params).filter(([, value]) => value !== undefined && value !== "");
  return set.length ? `?${new URLSearchParams(set.map(([k, v]) => [k, String(v)]))}` : "";
}

/**
 * Follows a task's events (Server-Sent Events, read with fetch so the key travels in a header)
 * and calls `onTask` with each state until the stream ends or `signal` aborts.
 */
export function followTask(id: string, onTask: (task: Task) => void, signal: AbortSignal): void {
  fetchEventSource(`/api/tasks/${id}/events`, {
    headers: headers(),
    signal,
    openWhenHidden: true,
    onmessage(event) {
      if (event.data) onTask(JSON.parse(event.data) as Task);
    },
    onclose() {
      // The stream ends after a final status: nothing more will come.
      throw new Error("closed");
    },
    onerror(error) {
      throw error; // no automatic reconnect: the page reloads the task instead
    },
  }).catch(() => undefined);
}
