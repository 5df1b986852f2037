// The sign-in form: an API key, kept for this browser session only.
import { useState } from "preact/hooks";
import { saveKey } from "../api";

export function SignIn({ onSignedIn, rejected }: { onSignedIn: () => void; rejected: boolean }) {
  const [key, setKey] = useState("");
  const submit = (event: Event) => {
    event.preventDefault();
    saveKey(key.trim());
    onSignedIn();
  };
  return (
    <main class="centered">
      <form class="card signin" onSubmit={submit}>
        <h1>Swarm</h1>
        <label for="key">API key</label>
        <input
          id="key"
          type="password"
          autocomplete="off"
          required
          value={key}
          onInput={(event) => setKey((event.target as HTMLInputElement).value)}
        />
        {rejected && (
          <p role="alert" class="error">
            That key was refused: it is unknown, revoked, or an agent's.
          </p>
        )}
        <button type="submit">Sign in</button>
        <p class="hint">The key stays in this tab only, and goes when you close it.</p>
      </form>
    </main>
  );
}
