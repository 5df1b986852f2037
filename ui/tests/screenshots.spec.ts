// Captures every view at a laptop's and a phone's size into $SCREENSHOTS (`make screenshots`),
// over a little fleet at work: agents idle, busy and offline, tasks in every state.
import { expect, type Page, test } from "@playwright/test";

const OUT = process.env.SCREENSHOTS;
const KEY = process.env.SWARM_UI_KEY ?? "";
const API = (process.env.SWARM_UI_URL ?? "").replace(/\/ui\/$/, "");
const SIZES = { desktop: { width: 1280, height: 800 }, phone: { width: 390, height: 844 } };

test.skip(!OUT, "set SCREENSHOTS to the folder the pictures go to");

async function api<T = { id: string }>(method: string, path: string, body?: unknown): Promise<T> {
  const response = await fetch(`${API}${path}`, {
    method,
    headers: { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  expect(response.ok, `${method} ${path}`).toBe(true);
  const text = await response.text();
  return (text ? JSON.parse(text) : null) as T;
}

/**
 * Puts a fleet to work (kept online by heartbeats until `stop`) and returns the id of a task in
 * the middle of its run.
 */
async function seed(): Promise<{ working: string; flow: string; stop: () => void }> {
  const writer = await api("POST", "/api/agents", { name: "writer-1", capabilities: ["llm"], max_concurrency: 4 });
  const crawler = await api("POST", "/api/agents", { name: "crawler-7", capabilities: ["http"], max_concurrency: 8 });
  await api("POST", "/api/agents", { name: "retired-2", capabilities: ["llm"] });
  const beat = () =>
    Promise.all([writer, crawler].map((agent) => api("POST", `/api/agents/${agent.id}/heartbeat`))).catch(() => undefined);
  await beat();
  const heartbeats = setInterval(beat, 1000);
  const titles = ["summarise Q3 report", "translate release notes", "draft reply to ticket 4411", "classify inbox"];
  for (const title of titles) {
    await api("POST", "/api/tasks", { title, kind: "llm", required_capabilities: ["llm"], payload: { title } });
  }
  await api("POST", "/api/tasks", { title: "crawl docs site", kind: "crawl", required_capabilities: ["http"] });
  const claimed = await api<{ tasks: { id: string }[] }>("POST", "/api/tasks/claim", { agent_id: writer.id, max_tasks: 3 });
  const [working, done, broken] = claimed.tasks.map((task) => task.id);
  await api("POST", `/api/tasks/${working}/progress`, { agent_id: writer.id, percent: 60, message: "section 3 of 5" });
  await api("POST", `/api/tasks/${working}/messages`, { sender: "ops", content: "Keep it under a page, please." });
  await api("POST", `/api/tasks/${done}/complete`, { agent_id: writer.id, result: { words: 412 } });
  await api("POST", `/api/tasks/${broken}/fail`, { agent_id: writer.id, error: "model quota exceeded", retryable: false });
  await api("POST", "/api/keys", { name: "ci-producer", role: "client" });
  const step = (key: string, depends_on: string[] = []) => ({ key, title: key, kind: "llm", depends_on, required_capabilities: ["etl"] });
  const flow = await api("POST", "/api/workflows", {
    name: "quarterly report",
    tasks: [step("fetch"), step("clean", ["fetch"]), step("chart", ["clean"]), step("write", ["clean"]), step("publish", ["chart", "write"])],
  });
  await api("POST", "/api/schedules", {
    name: "nightly digest",
    cron: "0 3 * * *",
    timezone: "Europe/Paris",
    task: { title: "send the digest", kind: "mail" },
  });
  return { working, flow: flow.id, stop: () => clearInterval(heartbeats) };
}

async function signIn(page: Page): Promise<void> {
  await page.goto("./");
  await page.getByLabel("API key").fill(KEY);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("heading", { name: "Overview" })).toBeVisible();
}

test("every view, at a laptop's and a phone's size", async ({ browser }) => {
  test.setTimeout(120_000);
  const { working, flow, stop } = await seed();
  for (const [size, viewport] of Object.entries(SIZES)) {
    const page = await browser.newPage({ viewport });
    await page.goto("./");
    await page.screenshot({ path: `${OUT}/signin-${size}.png` });
    await signIn(page);
    await page.waitForTimeout(10_000); // a few points on the charts, and fresh task counts
    await page.screenshot({ path: `${OUT}/overview-${size}.png`, fullPage: true });
    const views: [string, string, string][] = [
      ["tasks", "./#/tasks", "Tasks"],
      ["task", `./#/tasks/${working}`, "summarise Q3 report"],
      ["workflows", "./#/workflows", "Workflows"],
      ["workflow", `./#/workflows/${flow}`, "quarterly report"],
      ["schedules", "./#/schedules", "Schedules"],
      ["agents", "./#/agents", "Agents"],
      ["keys", "./#/keys", "Keys"],
    ];
    for (const [name, path, heading] of views) {
      await page.goto(path);
      await expect(page.getByRole("heading", { name: heading, level: 1 })).toBeVisible();
      await page.waitForTimeout(500);
      await page.screenshot({ path: `${OUT}/${name}-${size}.png`, fullPage: true });
    }
    await page.close();
  }
  stop();
});
