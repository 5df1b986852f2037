// One task: its fields, payload, result and error, a live progress bar fed by the events
// stream, its attempts, its conversation (with a form to post to it), and cancel and retry
// where its status allows them.
import { useEffect, useState } from "preact/hooks";
import { ApiError, type Attempt, call, followTask, type Message, type Page, type Task } from "../api";
import { json, when } from "../format";
import { usePolled } from "../hooks";
import { href } from "../router";
import { ProgressBar, Refusal, Status, Table } from "./common";

const CANCELLABLE = ["waiting", "scheduled", "queued", "active"];
const RETRYABLE = ["failed", "cancelled"];

export function TaskView({ id }: { id: string }) {
  const loaded = usePolled(() => call<Task>("GET", `/api/tasks/${id}`), [id]);
  const [live, setLive] = useState<Task | null>(null);
  const [refusal, setRefusal] = useState<ApiError | null>(null);
  const attempts = usePolled(() => call<Page<Attempt>>("GET", `/api/tasks/${id}/attempts?per_page=100`), [id], 3000);
  useEffect(() => {
    setLive(null);
    const stop = new AbortController();
    followTask(id, setLive, stop.signal);
    return () => stop.abort();
  }, [id, loaded.data?.status === "completed" || loaded.data?.status === "failed" || loaded.data?.status === "cancelled"]);
  const task = newest(live, loaded.data);
  const act = (action: "cancel" | "retry") => {
    setRefusal(null);
    call<Task>("POST", `/api/tasks/${id}/${action}`).then(
      (changed) => {
        setLive(changed);
        loaded.reload();
        attempts.reload();
      },
      (error: ApiError) => setRefusal(error),
    );
  };
  if (!task) return <Refusal error={loaded.error} />;
  return (
    <>
      <p class="crumbs">
        <a href={href("tasks")}>Tasks</a> /
      </p>
      <h1>{task.title}</h1>
      <div class="actions">
        <Status status={task.status} />
        <ProgressBar percent={task.progress.percent} label="progress" />
        {task.progress.message && <span class="muted">{task.progress.message}</span>}
        {CANCELLABLE.includes(task.status) && (
          <button type="button" onClick={() => act("cancel")}>
            Cancel
          </button>
        )}
        {RETRYABLE.includes(task.status) && (
          <button type="button" onClick={() => act("retry")}>
            Retry
          </button>
        )}
      </div>
      <Refusal error={refusal} />
      <dl class="fields">
        <Field label="Id" value={task.id} />
        <Field label="Kind" value={task.kind} />
        <Field label="Priority" value={String(task.priority)} />
        <Field label="Needs" value={task.required_capabilities.join(", ") || "—"} />
        <Field
          label="Agent"
          value={task.agent_id ? <a href={href("agents", task.agent_id)}>{task.agent_id}</a> : "—"}
        />
        <Field label="User" value={task.user_id ?? "—"} />
        <Field label="Attempts" value={`${task.attempts} of ${task.max_attempts}`} />
        <Field label="Lease" value={`${task.timeout_seconds} s`} />
        <Field label="Created" value={when(task.created_at)} />
        <Field label="Started" value={when(task.started_at)} />
        <Field label="Finished" value={when(task.finished_at)} />
        {task.workflow_id && <Field label="Workflow" value={task.workflow_id} />}
      </dl>
      <div class="grid two">
        <Block title="Payload" text={json(task.payload)} />
        {task.error ? <Block title="Error" text={task.error} /> : <Block title="Result" text={json(task.result)} />}
      </div>
      <section aria-labelledby="attempts-heading">
        <h2 id="attempts-heading">Attempts</h2>
        {attempts.data?.items.length ? (
          <Table columns={["#", "Outcome", "Agent", "Started", "Error"]}>
                {attempts.data.items.map((attempt) => (
                  <tr key={attempt.attempt}>
                    <td>{attempt.attempt}</td>
                    <td>
                      <Status status={attempt.outcome} />
                    </td>
                    <td>{attempt.agent_id ? <a href={href("agents", attempt.agent_id)}>{attempt.agent_id.slice(0, 8)}</a> : "—"}</td>
                    <td>{when(attempt.started_at)}</td>
                    <td>{attempt.error ?? ""}</td>
                  </tr>
                ))}
          </Table>
        ) : (
          <p class="muted">Not started yet.</p>
        )}
      </section>
      <Conversation id={id} />
    </>
  );
}

/** The later of the streamed and the loaded state (an action's answer may be newer). */
function newest(live: Task | null, loaded: Task | null): Task | null {
  if (!live || !loaded) return live ?? loaded;
  return Date.parse(live.updated_at ?? "") >= Date.parse(loaded.updated_at ?? "") ? live : loaded;
}

function Field({ label, value }: { label: string; value: preact.ComponentChildren }) {
  return (
    <div>
      <dt>{label}</dt>
      <dd>{value}</dd>
    </div>
  );
}

function Block({ title, text }: { title: string; text: string }) {
  return (
    <figure class="block">
      <figcaption>{title}</figcaption>
      <pre tabIndex={0}>{text || "—"}</pre>
    </figure>
  );
}

function Conversation({ id }: { id: string }) {
  const messages = usePolled(() => call<Page<Message>>("GET", `/api/tasks/${id}/messages?per_page=100`), [id], 3000);
  const [content, setContent] = useState("");
  const [refusal, setRefusal] = useState<ApiError | null>(null);
  const post = (event: Event) => {
    event.preventDefault();
    call("POST", `/api/tasks/${id}/messages`, { sender: "dashboard", content }).then(
      () => {
        setContent("");
        setRefusal(null);
        messages.reload();
      },
      (error: ApiError) => setRefusal(error),
    );
  };
  return (
    <section aria-labelledby="messages-heading">
      <h2 id="messages-heading">Messages</h2>
      <ol class="messages">
        {messages.data?.items.map((message) => (
          <li key={message.id} class={`message role-${message.role}`}>
            <span class="muted">
              {message.sender} ({message.role}) · {when(message.created_at)}
            </span>
            <p>{message.content}</p>
          </li>
        ))}
      </ol>
      <form class="post" onSubmit={post}>
        <label for="message">Message</label>
        <textarea
          id="message"
          required
          rows={2}
          value={content}
          onInput={(event) => setContent((event.target as HTMLTextAreaElement).value)}
        />
        <button type="submit">Post</button>
      </form>
      <Refusal error={refusal} />
    </section>
  );
}
