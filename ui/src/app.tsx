// The shell: sign-in with an API key (kept for the browser session only), the navigation, and
// the view the route names. With SWARM_AUTH=off the gateway answers without a key and the
// sign-in is skipped.
import { useEffect, useState } from "preact/hooks";
import { ApiError, call, saveKey, savedKey } from "./api";
import { href, useRoute } from "./router";
import { AgentView, AgentsView } from "./views/agents";
import { KeysView } from "./views/keys";
import { OverviewView } from "./views/overview";
import { SchedulesView } from "./views/schedules";
import { SignIn } from "./views/signin";
import { TaskView } from "./views/task";
import { TasksView } from "./views/tasks";
import { WorkflowsView, WorkflowView } from "./views/workflows";

/** Who is signed in: whether the gateway checks keys, and whether the key is an admin's. */
export interface Session {
  admin: boolean;
  keyed: boolean;
}

interface CurrentKey {
  name: string;
  role: "admin" | "client" | "agent";
  auth: boolean;
}

/**
 * Learns what the signed-in key (or no key, where the gateway checks none) may do; "refused"
 * when the page must ask for a key. Without a key it asks the gateway nothing but whether it
 * checks keys, so a first visit makes no refused call.
 */
async function probe(): Promise<Session | "refused"> {
  const settings = await call<{ auth: boolean }>("GET", "/ui/settings.json");
  if (settings.auth && savedKey() === null) return "refused";
  try {
    const current = await call<CurrentKey>("GET", "/api/keys/current");
    if (current.role === "agent") return "refused";
    return { admin: current.role === "admin", keyed: current.auth };
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) return "refused";
    throw error;
  }
}

export function App() {
  const [session, setSession] = useState<Session | "refused" | null>(null);
  const [rejected, setRejected] = useState(false);
  const [failure, setFailure] = useState<string | null>(null);
  const check = () => {
    setFailure(null);
    probe().then(
      (found) => {
        setSession(found);
        setRejected(found === "refused" && savedKey() !== null);
      },
      (error: unknown) => setFailure(String((error as Error).message)),
    );
  };
  useEffect(check, []);
  const signOut = () => {
    saveKey(null);
    check();
  };
  if (failure) return <main class="centered"><p role="alert">{failure}</p></main>;
  if (session === null) return <main class="centered"><p>Loading…</p></main>;
  if (session === "refused") return <SignIn onSignedIn={check} rejected={rejected} />;
  return <Shell session={session} onSignOut={signOut} />;
}

const SECTIONS: [string, string, boolean][] = [
  ["", "Overview", false],
  ["tasks", "Tasks", false],
  ["workflows", "Workflows", false],
  ["schedules", "Schedules", false],
  ["agents", "Agents", true],
  ["keys", "Keys", true],
];

function Shell({ session, onSignOut }: { session: Session; onSignOut: () => void }) {
  const route = useRoute();
  const [section = "", id] = route;
  return (
    <>
      <header class="bar">
        <a class="brand" href={href()}>Swarm</a>
        <nav aria-label="Sections">
          {SECTIONS.filter(([, , adminOnly]) => session.admin || !adminOnly).map(([path, label]) => (
            <a key={path} href={href(...(path ? [path] : []))} aria-current={section === path ? "page" : undefined}>
              {label}
            </a>
          ))}
        </nav>
        {session.keyed && (
          <button type="button" class="quiet" onClick={onSignOut}>
            Sign out
          </button>
        )}
      </header>
      <main>
        {section === "" && <OverviewView admin={session.admin} />}
        {section === "tasks" && (id ? <TaskView id={id} /> : <TasksView />)}
        {section === "workflows" && (id ? <WorkflowView id={id} /> : <WorkflowsView />)}
        {section === "schedules" && <SchedulesView />}
        {section === "agents" && (id ? <AgentView id={id} /> : <AgentsView />)}
        {section === "keys" && <KeysView />}
      </main>
    </>
  );
}
