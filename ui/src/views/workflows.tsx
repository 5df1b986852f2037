// Workflows: the list by status, and one workflow's graph with each task's status, its tasks,
// and a button that cancels what has not run.
import { useState } from "preact/hooks";
import { type ApiError, call, type Page, query, type Workflow } from "../api";
import { Dag } from "../dag";
import { ago, when } from "../format";
import { usePolled } from "../hooks";
import { go, href, useQuery } from "../router";
import { Pager, ProgressBar, Refusal, Status, StatusSelect, Table } from "./common";

const STATUSES = ["running", "completed", "failed", "cancelled"];

export function WorkflowsView() {
  const params = useQuery();
  const status = params.get("status") ?? "";
  const page = Number(params.get("page") ?? "1");
  const path = `/api/workflows${query({ status, page, per_page: 20 })}`;
  const workflows = usePolled(() => call<Page<Workflow>>("GET", path), [path], 2000);
  return (
    <>
      <h1>Workflows</h1>
      <form class="filters" onSubmit={(event) => event.preventDefault()}>
        <StatusSelect value={status} statuses={STATUSES} onChange={(next) => go(["workflows"], { status: next })} />
      </form>
      <Refusal error={workflows.error} />
      {workflows.data && (
        <>
          <Table columns={["Name", "Status", "Created", { label: "Finished", wide: true }]}>
                {workflows.data.items.map((workflow) => (
                  <tr key={workflow.id}>
                    <td>
                      <a href={href("workflows", workflow.id)}>{workflow.name}</a>
                    </td>
                    <td>
                      <Status status={workflow.status} />
                    </td>
                    <td>{ago(workflow.created_at)}</td>
                    <td class="wide">{when(workflow.finished_at)}</td>
                  </tr>
                ))}
          </Table>
          {workflows.data.items.length === 0 && <p class="muted">No workflows yet.</p>}
          <Pager page={workflows.data} onPage={(next) => go(["workflows"], { status, page: next })} />
        </>
      )}
    </>
  );
}

export function WorkflowView({ id }: { id: string }) {
  const workflow = usePolled(() => call<Workflow>("GET", `/api/workflows/${id}`), [id], 2000);
  const [refusal, setRefusal] = useState<ApiError | null>(null);
  if (!workflow.data) return <Refusal error={workflow.error} />;
  const shown = workflow.data;
  const tasks = shown.tasks ?? {};
  const cancel = () =>
    call("POST", `/api/workflows/${id}/cancel`).then(workflow.reload, (error: ApiError) => setRefusal(error));
  return (
    <>
      <p class="crumbs">
        <a href={href("workflows")}>Workflows</a> /
      </p>
      <h1>{shown.name}</h1>
      <div class="actions">
        <Status status={shown.status} />
        <span class="muted">created {ago(shown.created_at)}</span>
        {shown.status === "running" && (
          <button type="button" onClick={cancel}>
            Cancel workflow
          </button>
        )}
      </div>
      <Refusal error={refusal} />
      <Dag tasks={tasks} dependencies={shown.dependencies ?? {}} />
      <h2>Tasks</h2>
      <Table columns={["Key", "Status", "Progress", { label: "Waits for", wide: true }]}>
            {Object.entries(tasks).map(([key, task]) => (
              <tr key={key}>
                <td>
                  <a href={href("tasks", task.id)}>{key}</a>
                </td>
                <td>
                  <Status status={task.status} />
                </td>
                <td>
                  <ProgressBar percent={task.progress.percent} label={`progress of ${key}`} />
                </td>
                <td class="wide">{(shown.dependencies?.[key] ?? []).join(", ") || "—"}</td>
              </tr>
            ))}
      </Table>
    </>
  );
}
