// The task list: filtered by text in the title, status, kind, agent and user, paginated,
// refreshed every two seconds so new tasks and their progress show as they happen.
import { call, type Page, query, TASK_STATUSES, type Task } from "../api";
import { ago } from "../format";
import { usePolled } from "../hooks";
import { go, href, useQuery } from "../router";
import { Pager, ProgressBar, Refusal, Status, StatusSelect, Table } from "./common";

const FILTERS = ["q", "status", "kind", "agent_id", "user_id"] as const;

export function TasksView() {
  const params = useQuery();
  const filters = Object.fromEntries(FILTERS.map((name) => [name, params.get(name) ?? ""]));
  const page = Number(params.get("page") ?? "1");
  const path = `/api/tasks${query({ ...filters, page, per_page: 20 })}`;
  const tasks = usePolled(() => call<Page<Task>>("GET", path), [path], 2000);
  const filter = (name: string, value: string) => go(["tasks"], { ...filters, [name]: value });
  return (
    <>
      <h1>Tasks</h1>
      <form class="filters" onSubmit={(event) => event.preventDefault()}>
        <label>
          Title contains
          <input
            type="search"
            value={filters.q}
            placeholder="any"
            onChange={(event) => filter("q", (event.target as HTMLInputElement).value.trim())}
          />
        </label>
        <StatusSelect value={filters.status} statuses={TASK_STATUSES} onChange={(next) => filter("status", next)} />
        {(["kind", "agent_id", "user_id"] as const).map((name) => (
          <label key={name}>
            {name.replace("_id", "")}
            <input
              value={filters[name]}
              placeholder="any"
              onChange={(event) => filter(name, (event.target as HTMLInputElement).value.trim())}
            />
          </label>
        ))}
      </form>
      <Refusal error={tasks.error} />
      {tasks.data && (
        <>
          <Table columns={["Title", "Kind", "Status", "Progress", { label: "Attempts", wide: true }, { label: "Created", wide: true }]}>
                {tasks.data.items.map((task) => (
                  <tr key={task.id}>
                    <td>
                      <a href={href("tasks", task.id)}>{task.title}</a>
                    </td>
                    <td>{task.kind}</td>
                    <td>
                      <Status status={task.status} />
                    </td>
                    <td>
                      <ProgressBar percent={task.progress.percent} label={`progress of ${task.title}`} />
                    </td>
                    <td class="wide">
                      {task.attempts} / {task.max_attempts}
                    </td>
                    <td class="wide">{ago(task.created_at)}</td>
                  </tr>
                ))}
          </Table>
          {tasks.data.items.length === 0 && <p class="muted">No tasks match.</p>}
          <Pager page={tasks.data} onPage={(next) => go(["tasks"], { ...filters, page: next })} />
        </>
      )}
    </>
  );
}
