// Starts the stack the browser tests drive: `swarm up` (SWARM_BIN, default the debug build) on
// free loopback ports over a fresh SQLite file, with a known admin key and a short agent TTL.
// Its address and key reach the tests through SWARM_UI_URL and SWARM_UI_KEY.
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

/** Seconds an agent stays online after a heartbeat, in the stack the tests use. */
export const AGENT_TTL_SECONDS = 3;

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => done(typeof address === "object" && address ? address.port : 0));
    });
  });
}

async function healthy(url: string): Promise<boolean> {
  try {
    return (await fetch(`${url}/health`)).ok;
  } catch {
    return false;
  }
}

/** A running `swarm up`: its gateway's address, its admin key, and how to stop it. */
export interface Swarm {
  url: string;
  key: string;
  stop: () => Promise<void>;
}

/** Starts `swarm up` with `env` added to its environment. */
export async function startSwarm(env: Record<string, string> = {}): Promise<Swarm> {
  const binary = process.env.SWARM_BIN ?? resolve(import.meta.dirname, "../../target/debug/swarm");
  const [gateway, tasks, agents, cache, metrics] = await Promise.all([1, 2, 3, 4, 5].map(freePort));
  const key = `swarm_ui_${randomBytes(20).toString("hex")}`;
  const database = join(mkdtempSync(join(tmpdir(), "swarm-ui-")), "swarm.db");
  const swarm: ChildProcess = spawn(
    binary,
    [
      "up",
      ["--database-url", `sqlite://${database}`],
      ["--gateway-addr", `127.0.0.1:${gateway}`],
      ["--tasks-addr", `127.0.0.1:${tasks}`],
      ["--agents-addr", `127.0.0.1:${agents}`],
      ["--cache-addr", `127.0.0.1:${cache}`],
      ["--metrics-addr", `127.0.0.1:${metrics}`],
    ].flat(),
    {
      env: {
        ...process.env,
        SWARM_ADMIN_KEY: key,
        SWARM_AGENT_TTL_SECONDS: String(AGENT_TTL_SECONDS),
        SWARM_RATE_LIMIT_PER_SECOND: "0",
        RUST_LOG: "warn",
        ...env,
      },
      stdio: ["ignore", "inherit", "inherit"],
    },
  );
  const url = `http://127.0.0.1:${gateway}`;
  for (let tries = 0; !(await healthy(url)); tries++) {
    if (tries > 150 || swarm.exitCode !== null) throw new Error("swarm did not start");
    await new Promise((pause) => setTimeout(pause, 100));
  }
  return {
    url,
    key,
    stop: async () => {
      swarm.kill("SIGTERM");
      await new Promise((exited) => swarm.once("exit", exited));
    },
  };
}

/** The global setup: one stack every test shares, reached through SWARM_UI_URL and SWARM_UI_KEY. */
export default async function start(): Promise<() => Promise<void>> {
  const swarm = await startSwarm();
  process.env.SWARM_UI_URL = `${swarm.url}/ui/`;
  process.env.SWARM_UI_KEY = swarm.key;
  return swarm.stop;
}
