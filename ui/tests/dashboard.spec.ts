// The dashboard driven in headless Chromium against a real stack, as an operator uses it while
// agents work: sign in, watch tasks appear and progress live, cancel, retry, see an agent go
// offline; with no console error and no serious accessibility violation on any view.
import AxeBuilder from "@axe-core/playwright";
import { expect, type Page, test as base } from "@playwright/test";
import { AGENT_TTL_SECONDS, startSwarm } from "./stack";

const KEY = process.env.SWARM_UI_KEY ?? "";
const API = (process.env.SWARM_UI_URL ?? "").replace(/\/ui\/$/, "");

/** Calls the API as the admin, as producers and agents do beside the dashboard. */
async function api<T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<T> {
  const response = await fetch(`${API}${path}`, {
    method,
    headers: { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return (text ? JSON.parse(text) : null) as T;
}

interface Created {
  id: string;
}

/** An agent registered for one capability, kept online by a heartbeat every second. */
interface Agent {
  id: string;
  /** Stops its heartbeats: it goes offline after the TTL. */
  stop: () => void;
}

async function agent(name: string, capability: string): Promise<Agent> {
  const { id } = await api<Created>("POST", "/api/agents", { name, capabilities: [capability] });
  const beat = () => api("POST", `/api/agents/${id}/heartbeat`).catch(() => undefined);
  await beat();
  const timer = setInterval(beat, 1000);
  return { id, stop: () => clearInterval(timer) };
}

/** Claims the one task of `capability` waiting for agent `agentId`. */
async function claim(agentId: string): Promise<{ id: string; lease_id: string }> {
  const claimed = await api<{ tasks: { id: string; lease_id: string }[] }>("POST", "/api/tasks/claim", {
    agent_id: agentId,
    wait_seconds: 5,
  });
  expect(claimed.tasks).toHaveLength(1);
  return claimed.tasks[0];
}

/** The console errors and uncaught exceptions of a test's page. */
class ConsoleErrors {
  private readonly seen: string[] = [];
  private readonly expected: RegExp[] = [];

  constructor(page: Page) {
    page.on("console", (message) => {
      if (message.type() === "error") this.seen.push(message.text());
    });
    page.on("pageerror", (error) => this.seen.push(error.message));
  }

  /** Declares an error the test provokes on purpose (the browser's report of a refused key). */
  expect(pattern: RegExp): void {
    this.expected.push(pattern);
  }

  unexpected(): string[] {
    return this.seen.filter((error) => !this.expected.some((pattern) => pattern.test(error)));
  }
}

/** Every test fails on a console error or uncaught exception it did not declare. */
const test = base.extend<{ consoleErrors: ConsoleErrors }>({
  consoleErrors: [
    async ({ page }, use) => {
      const errors = new ConsoleErrors(page);
      await use(errors);
      expect(errors.unexpected(), "console errors").toEqual([]);
    },
    { auto: true },
  ],
});

async function signIn(page: Page): Promise<void> {
  await page.goto("./");
  await page.getByLabel("API key").fill(KEY);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("heading", { name: "Overview" })).toBeVisible();
}

async function noSeriousViolations(page: Page): Promise<void> {
  const results = await new AxeBuilder({ page }).analyze();
  const serious = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  expect(serious.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`)).toEqual([]);
}

test("a wrong key is refused and the right one signs in for this tab only", async ({ page, consoleErrors }) => {
  await page.goto("./");
  await noSeriousViolations(page);
  consoleErrors.expect(/status of 401/);
  await page.getByLabel("API key").fill("swarm_not_a_key_at_all_000000000000");
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("alert")).toContainText("refused");
  await signIn(page);
  await page.reload();
  await expect(page.getByRole("heading", { name: "Overview" })).toBeVisible();
  await page.getByRole("button", { name: "Sign out" }).click();
  await expect(page.getByLabel("API key")).toBeVisible();
});

test("a task created through the API appears live and its progress moves as an agent works", async ({ page }) => {
  await signIn(page);
  await page.getByRole("link", { name: "Tasks", exact: true }).click();
  await expect(page.getByRole("heading", { name: "Tasks" })).toBeVisible();
  const worker = await agent("ui-worker", "ui-live");
  const task = await api<Created>("POST", "/api/tasks", {
    title: "summarise the report",
    required_capabilities: ["ui-live"],
    payload: { pages: 12 },
  });
  const row = page.getByRole("link", { name: "summarise the report" });
  await expect(row).toBeVisible();
  await noSeriousViolations(page);
  const search = page.getByLabel("Title contains");
  await search.fill("no such title");
  await search.press("Enter");
  await expect(row).toHaveCount(0);
  await search.fill("SUMMARISE");
  await search.press("Enter");
  await expect(row).toBeVisible();
  await row.click();
  await expect(page.getByRole("heading", { name: "summarise the report" })).toBeVisible();
  await expect(page.getByText("queued", { exact: true })).toBeVisible();
  await noSeriousViolations(page);

  const held = await claim(worker.id);
  expect(held.id).toBe(task.id);
  const progress = page.getByRole("progressbar", { name: "progress", exact: true });
  await api("POST", `/api/tasks/${task.id}/progress`, { agent_id: worker.id, percent: 40, message: "reading" });
  await expect(progress).toHaveAttribute("value", "40");
  await expect(page.getByText("reading")).toBeVisible();
  await api("POST", `/api/tasks/${task.id}/progress`, { agent_id: worker.id, percent: 80 });
  await expect(progress).toHaveAttribute("value", "80");
  await api("POST", `/api/tasks/${task.id}/complete`, { agent_id: worker.id, result: { summary: "short" } });
  await expect(page.getByText("completed", { exact: true }).first()).toBeVisible();
  await expect(page.getByText('"summary": "short"')).toBeVisible();

  await page.getByLabel("Message", { exact: true }).fill("thanks, looks right");
  await page.getByRole("button", { name: "Post" }).click();
  await expect(page.getByText("thanks, looks right")).toBeVisible();
  worker.stop();
});

test("an operator cancels a queued task and retries a failed one", async ({ page }) => {
  await signIn(page);
  const doomed = await api<Created>("POST", "/api/tasks", { title: "not needed after all", required_capabilities: ["ui-none"] });
  await page.goto(`./#/tasks/${doomed.id}`);
  await page.getByRole("button", { name: "Cancel" }).click();
  await expect(page.getByText("cancelled", { exact: true }).first()).toBeVisible();
  await expect(page.getByRole("button", { name: "Cancel" })).toHaveCount(0);

  const worker = await agent("ui-failer", "ui-fail");
  const flaky = await api<Created>("POST", "/api/tasks", {
    title: "flaky import",
    required_capabilities: ["ui-fail"],
    max_attempts: 1,
  });
  await claim(worker.id);
  await api("POST", `/api/tasks/${flaky.id}/fail`, { agent_id: worker.id, error: "upstream timed out", retryable: false });
  worker.stop();
  await page.goto(`./#/tasks/${flaky.id}`);
  await expect(page.getByText("upstream timed out").first()).toBeVisible();
  await page.getByRole("button", { name: "Retry" }).click();
  await expect(page.getByText("queued", { exact: true })).toBeVisible();
  const retried = await api<{ status: string; attempts: number }>("GET", `/api/tasks/${flaky.id}`);
  expect(retried.status).toBe("queued");
});

test("the agents view shows an agent go offline when its heartbeats stop", async ({ page }) => {
  await signIn(page);
  const fleeting = await agent("ui-fleeting", "ui-gone");
  await page.getByRole("link", { name: "Agents", exact: true }).click();
  const row = page.locator('tr[data-agent="ui-fleeting"]');
  await expect(row.getByText("idle")).toBeVisible();
  await noSeriousViolations(page);
  fleeting.stop();
  await expect(row.getByText("offline")).toBeVisible({ timeout: (AGENT_TTL_SECONDS + 5) * 1000 });
  await row.getByRole("link", { name: "ui-fleeting" }).click();
  await expect(page.getByRole("heading", { name: "ui-fleeting" })).toBeVisible();
});

test("the overview counts tasks by status and draws the traffic", async ({ page }) => {
  const worker = await agent("ui-counted", "ui-count");
  const task = await api<Created>("POST", "/api/tasks", { title: "counted", required_capabilities: ["ui-count"] });
  await claim(worker.id);
  await api("POST", `/api/tasks/${task.id}/complete`, { agent_id: worker.id });
  worker.stop();
  await signIn(page);
  await expect(page.getByTestId("count-completed")).not.toHaveText("0");
  await expect(page.getByRole("img", { name: "Latency" })).toBeVisible();
  await noSeriousViolations(page);
});

test("keys are issued with the secret shown once, and revoked", async ({ page }) => {
  await signIn(page);
  await page.getByRole("link", { name: "Keys", exact: true }).click();
  await page.getByLabel("Name").fill("ui-client");
  await page.getByRole("button", { name: "Issue" }).click();
  const secret = page.getByRole("status");
  await expect(secret).toContainText("shown this once");
  await noSeriousViolations(page);
  page.once("dialog", (dialog) => dialog.accept());
  await page.getByRole("row", { name: /ui-client/ }).getByRole("button", { name: "Revoke" }).click();
  await expect(page.getByRole("row", { name: /ui-client/ })).toContainText("revoked");
});

test("a workflow's graph shows each task's status as it runs", async ({ page }) => {
  await signIn(page);
  const worker = await agent("ui-flow", "ui-flow");
  const needs = { required_capabilities: ["ui-flow"] };
  const flow = await api<Created>("POST", "/api/workflows", {
    name: "quarterly report",
    tasks: [
      { key: "fetch", title: "fetch figures", ...needs },
      { key: "chart", title: "draw charts", depends_on: ["fetch"], ...needs },
      { key: "write", title: "write summary", depends_on: ["fetch"], ...needs },
      { key: "publish", title: "publish", depends_on: ["chart", "write"], ...needs },
    ],
  });
  await page.getByRole("link", { name: "Workflows", exact: true }).click();
  await page.getByRole("link", { name: "quarterly report" }).click();
  const graph = page.getByRole("group", { name: "The workflow's tasks and what each waits for" });
  await expect(graph).toBeVisible();
  await expect(graph.locator("a.dag-node")).toHaveCount(4);
  await expect(graph.locator("path.dag-edge")).toHaveCount(4);
  await expect(graph.locator("a.dag-node.status-queued")).toHaveCount(1);
  await expect(graph.locator("a.dag-node.status-waiting")).toHaveCount(3);
  await noSeriousViolations(page);

  const fetch = await claim(worker.id);
  await api("POST", `/api/tasks/${fetch.id}/complete`, { agent_id: worker.id, result: { rows: 3 } });
  await expect(graph.locator("a.dag-node.status-completed")).toHaveCount(1);
  await expect(graph.locator("a.dag-node.status-queued")).toHaveCount(2);
  await page.getByRole("button", { name: "Cancel workflow" }).click();
  await expect(graph.locator("a.dag-node.status-cancelled")).toHaveCount(3);
  await expect(page.getByText("cancelled", { exact: true }).first()).toBeVisible();
  worker.stop();
  expect(flow.id).toBeTruthy();
});

test("schedules show their next run and pause and resume", async ({ page }) => {
  await api("POST", "/api/schedules", {
    name: "nightly digest",
    cron: "0 3 * * *",
    timezone: "Europe/Paris",
    task: { title: "send the digest", kind: "mail", required_capabilities: ["ui-never"] },
  });
  await signIn(page);
  await page.getByRole("link", { name: "Schedules", exact: true }).click();
  const row = page.locator('tr[data-schedule="nightly digest"]');
  await expect(row).toContainText("Europe/Paris");
  await expect(row).toContainText("send the digest");
  await noSeriousViolations(page);
  await row.getByRole("button", { name: "Pause" }).click();
  await expect(row).toContainText("paused");
  await row.getByRole("button", { name: "Resume" }).click();
  await expect(row.getByRole("button", { name: "Pause" })).toBeVisible();
  await expect(row).not.toContainText("paused");
});

test("a client key sees its own tasks only, and no admin views", async ({ page }) => {
  await api("POST", "/api/tasks", { title: "an admin's secret task" });
  const client = await api<{ key: string }>("POST", "/api/keys", { name: "ui-tenant", role: "client" });
  const response = await fetch(`${API}/api/tasks`, {
    method: "POST",
    headers: { Authorization: `Bearer ${client.key}`, "Content-Type": "application/json" },
    body: JSON.stringify({ title: "the tenant's own task" }),
  });
  expect(response.status).toBe(201);
  await page.goto("./");
  await page.getByLabel("API key").fill(client.key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("heading", { name: "Overview" })).toBeVisible();
  await expect(page.getByRole("link", { name: "Keys", exact: true })).toHaveCount(0);
  await expect(page.getByRole("link", { name: "Agents", exact: true })).toHaveCount(0);
  await expect(page.getByTestId("count-queued")).toHaveText("1");
  await page.getByRole("link", { name: "Tasks", exact: true }).click();
  await expect(page.getByRole("link", { name: "the tenant's own task" })).toBeVisible();
  await expect(page.getByRole("link", { name: "an admin's secret task" })).toHaveCount(0);
  await noSeriousViolations(page);
});

test("with SWARM_AUTH=off the dashboard asks for no key", async ({ page }) => {
  const open = await startSwarm({ SWARM_AUTH: "off" });
  try {
    await page.goto(`${open.url}/ui/`);
    await expect(page.getByRole("heading", { name: "Overview" })).toBeVisible();
    await expect(page.getByLabel("API key")).toHaveCount(0);
    await expect(page.getByRole("button", { name: "Sign out" })).toHaveCount(0);
    await page.getByRole("link", { name: "Tasks", exact: true }).click();
    await expect(page.getByRole("heading", { name: "Tasks" })).toBeVisible();
  } finally {
    // Leave the dashboard first: its polls would otherwise reach a stopped gateway.
    await page.goto("about:blank");
    await open.stop();
  }
});
