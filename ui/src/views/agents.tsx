// The agents: what each can do, its status, how busy it is and when it was last heard from;
// one agent's page lists the tasks it holds and has held.
import { type Agent, call, type Page, query, type Task } from "../api";
import { ago, when } from "../format";
import { usePolled } from "../hooks";
import { go, href, useQuery } from "../router";
import { Pager, ProgressBar, Refusal, Status, StatusSelect, Table } from "./common";

const AGENT_STATUSES = ["idle", "busy", "offline"];

export function AgentsView() {
  const params = useQuery();
  const status = params.get("status") ?? "";
  const page = Number(params.get("page") ?? "1");
  const path = `/api/agents${query({ status, page, per_page: 20 })}`;
  const agents = usePolled(() => call<Page<Agent>>("GET", path), [path], 2000);
  return (
    <>
      <h1>Agents</h1>
      <form class="filters" onSubmit={(event) => event.preventDefault()}>
        <StatusSelect value={status} statuses={AGENT_STATUSES} onChange={(next) => go(["agents"], { status: next })} />
      </form>
      <Refusal error={agents.error} />
      {agents.data && (
        <>
          <Table columns={["Name", "Status", "Tasks", { label: "Capabilities", wide: true }, "Heard from"]}>
                {agents.data.items.map((agent) => (
                  <tr key={agent.id} data-agent={agent.name}>
                    <td>
                      <a href={href("agents", agent.id)}>{agent.name}</a>
                    </td>
                    <td>
                      <Status status={agent.status} />
                    </td>
                    <td>
                      {agent.active_tasks} / {agent.max_concurrency}
                    </td>
                    <td class="wide">{agent.capabilities.join(", ") || "—"}</td>
                    <td>{ago(agent.last_heartbeat_at)}</td>
                  </tr>
                ))}
          </Table>
          {agents.data.items.length === 0 && <p class="muted">No agents yet.</p>}
          <Pager page={agents.data} onPage={(next) => go(["agents"], { status, page: next })} />
        </>
      )}
    </>
  );
}

export function AgentView({ id }: { id: string }) {
  const agent = usePolled(() => call<Agent>("GET", `/api/agents/${id}`), [id], 2000);
  const tasks = usePolled(() => call<Page<Task>>("GET", `/api/tasks?agent_id=${id}&per_page=20`), [id], 2000);
  if (!agent.data) return <Refusal error={agent.error} />;
  const shown = agent.data;
  return (
    <>
      <p class="crumbs">
        <a href={href("agents")}>Agents</a> /
      </p>
      <h1>{shown.name}</h1>
      <div class="actions">
        <Status status={shown.status} />
        <span>
          {shown.active_tasks} of {shown.max_concurrency} slots busy
        </span>
      </div>
      <dl class="fields">
        <div>
          <dt>Id</dt>
          <dd>{shown.id}</dd>
        </div>
        <div>
          <dt>Kind</dt>
          <dd>{shown.kind}</dd>
        </div>
        <div>
          <dt>Capabilities</dt>
          <dd>{shown.capabilities.join(", ") || "—"}</dd>
        </div>
        <div>
          <dt>Last heartbeat</dt>
          <dd>
            {ago(shown.last_heartbeat_at)} ({when(shown.last_heartbeat_at)})
          </dd>
        </div>
      </dl>
      <h2>Its tasks</h2>
      <ul class="plain">
        {tasks.data?.items.map((task) => (
          <li key={task.id}>
            <a href={href("tasks", task.id)}>{task.title}</a> <Status status={task.status} />{" "}
            <ProgressBar percent={task.progress.percent} label={`progress of ${task.title}`} />
          </li>
        ))}
      </ul>
    </>
  );
}
