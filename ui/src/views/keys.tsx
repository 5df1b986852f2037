// API keys (admin): the list, issuing one (its secret is shown once), and revoking.
import { useState } from "preact/hooks";
import { ApiError, call, type Key, type Page } from "../api";
import { when } from "../format";
import { usePolled } from "../hooks";
import { Refusal, Table } from "./common";

export function KeysView() {
  const keys = usePolled(() => call<Page<Key>>("GET", "/api/keys?per_page=100"), []);
  const [name, setName] = useState("");
  const [role, setRole] = useState("client");
  const [agentId, setAgentId] = useState("");
  const [issued, setIssued] = useState<Key | null>(null);
  const [refusal, setRefusal] = useState<ApiError | null>(null);
  const issue = (event: Event) => {
    event.preventDefault();
    const body = role === "agent" ? { name, role, agent_id: agentId } : { name, role };
    call<Key>("POST", "/api/keys", body).then(
      (key) => {
        setIssued(key);
        setRefusal(null);
        setName("");
        keys.reload();
      },
      (error: ApiError) => setRefusal(error),
    );
  };
  const revoke = (key: Key) => {
    if (!confirm(`Revoke ${key.name}? Whoever holds it loses access at once.`)) return;
    call("DELETE", `/api/keys/${key.id}`).then(keys.reload, (error: ApiError) => setRefusal(error));
  };
  return (
    <>
      <h1>Keys</h1>
      <form class="filters" onSubmit={issue}>
        <label>
          Name
          <input required value={name} onInput={(event) => setName((event.target as HTMLInputElement).value)} />
        </label>
        <label>
          Role
          <select value={role} onChange={(event) => setRole((event.target as HTMLSelectElement).value)}>
            <option value="client">client</option>
            <option value="agent">agent</option>
            <option value="admin">admin</option>
          </select>
        </label>
        {role === "agent" && (
          <label>
            Agent id
            <input required value={agentId} onInput={(event) => setAgentId((event.target as HTMLInputElement).value)} />
          </label>
        )}
        <button type="submit">Issue</button>
      </form>
      {issued?.key && (
        <p role="status" class="card secret">
          The key <strong>{issued.name}</strong>, shown this once: <code>{issued.key}</code>
        </p>
      )}
      <Refusal error={refusal ?? keys.error} />
      <Table columns={["Name", "Role", "Prefix", { label: "Created", wide: true }, "State"]}>
            {keys.data?.items.map((key) => (
              <tr key={key.id}>
                <td>{key.name}</td>
                <td>{key.role}</td>
                <td>
                  <code>{key.prefix}</code>
                </td>
                <td class="wide">{when(key.created_at)}</td>
                <td>
                  {key.revoked_at ? (
                    `revoked ${when(key.revoked_at)}`
                  ) : (
                    <button type="button" class="quiet" onClick={() => revoke(key)}>
                      Revoke
                    </button>
                  )}
                </td>
              </tr>
            ))}
      </Table>
    </>
  );
}
